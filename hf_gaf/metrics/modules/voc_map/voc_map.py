"""VOC mAP (VOC07 11-point, VOC12 area) and COCO mAP as an `evaluate` metric, loadable offline:

    evaluate.load(hf_gaf.metrics.metric_path("voc_map"))

predictions: {"boxes": [[x0, y0, x1, y1], ...], "scores": [...], "labels": [...]} per image;
references: {"boxes": ..., "labels": ..., "difficult": ...} per image; boxes are 0-based xyxy.
compute(..., class_names=[...], iou_threshold=0.5, compat="devkit", coco=True).
"""

import datasets
import evaluate

from hf_gaf.metrics.detection import DetectionEvaluator


class VocMap(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Everingham et al., The PASCAL Visual Object Classes (VOC) Challenge, IJCV 2010.",
            inputs_description=__doc__,
            features=datasets.Features({
                "predictions": {
                    "boxes": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=4)),
                    "scores": datasets.Sequence(datasets.Value("float32")),
                    "labels": datasets.Sequence(datasets.Value("int32")),
                },
                "references": {
                    "boxes": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=4)),
                    "labels": datasets.Sequence(datasets.Value("int32")),
                    "difficult": datasets.Sequence(datasets.Value("bool")),
                },
            }),
        )

    def _compute(self, predictions, references, class_names=None, iou_threshold=0.5, compat="devkit", coco=True):
        if class_names is None:
            raise ValueError("voc_map needs class_names=[...] (label i names class_names[i])")
        evaluator = DetectionEvaluator(class_names, iou_threshold=iou_threshold, compat=compat, coco=coco)
        evaluator.update([{**p, "image_id": i} for i, p in enumerate(predictions)],
                         [{**r, "image_id": i} for i, r in enumerate(references)])
        return evaluator.compute()

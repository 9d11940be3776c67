"""COCO-style mAP@[.5:.95], AP50 and AP75 of VOC-style inputs, through pycocotools.

Same inputs as :func:`hf_gaf.metrics.voc.voc_eval`. Difficult VOC boxes become ``iscrowd=1``
annotations: a detection on one is neither rewarded nor punished, the nearest COCO analogue of VOC's
"ignore". COCO numbers differ from VOC ones by design: they average ten IoU thresholds (0.5..0.95),
interpolate precision at 101 recall points, keep the top 100 detections per image, and let a crowd
box absorb several detections.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .voc import check_inputs


def coco_eval(detections: Sequence[Mapping], ground_truths: Sequence[Mapping], class_names: Sequence[str]) -> dict:
    """``{"coco_map", "ap50", "ap75"}`` (NaN when there is no ground truth at all); inputs are checked
    as :func:`hf_gaf.metrics.voc.check_inputs` does (errors for malformed ones, non-finite detections
    dropped)."""
    detections, ground_truths, _ = check_inputs(detections, ground_truths, len(class_names))
    image_ids: dict = {}

    def image_index(key):
        return image_ids.setdefault(key, len(image_ids) + 1)

    annotations = []
    for gt in ground_truths:
        img = image_index(gt["image_id"])
        for box, label, hard in zip(gt["boxes"], gt["labels"], gt["difficult"]):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append({"id": len(annotations) + 1, "image_id": img, "category_id": int(label) + 1,
                                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": int(hard)})
    results = []
    for det in detections:
        img = image_index(det["image_id"])
        for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
            results.append({"image_id": img, "category_id": int(label) + 1, "score": float(score),
                            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]})
    if not annotations:
        return {"coco_map": float("nan"), "ap50": float("nan"), "ap75": float("nan")}
    if not results:
        return {"coco_map": 0.0, "ap50": 0.0, "ap75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt_api = COCO()
        gt_api.dataset = {"images": [{"id": i} for i in image_ids.values()], "annotations": annotations,
                          "categories": [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]}
        gt_api.createIndex()
        dt_api = gt_api.loadRes(results)
        evaluator = COCOeval(gt_api, dt_api, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {k: float(max(v, 0.0)) for k, v in zip(("coco_map", "ap50", "ap75"), stats[:3])}

"""A streaming detection evaluator: update per batch, compute once at the end.

It keeps only compact numpy copies of boxes, scores and labels (float32/int), so evaluation memory
grows with the detections kept, not with model outputs; use it as a Trainer ``compute_metrics`` with
``batch_eval_metrics=True`` through :func:`make_compute_metrics`.

Example:
    >>> import numpy as np
    >>> ev = DetectionEvaluator(["thing"])
    >>> gt = {"image_id": 0, "boxes": np.array([[0, 0, 10, 10.]]), "labels": np.array([0]), "difficult": np.array([0])}
    >>> ev.update([{"image_id": 0, "boxes": gt["boxes"], "scores": np.array([0.9]), "labels": gt["labels"]}], [gt])
    >>> round(ev.compute()["voc07_map"], 6)
    1.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .coco import coco_eval
from .voc import COMPAT_MODES, to_numpy, voc_eval

METRIC_KEYS = ("voc07_map", "voc12_map", "coco_map", "coco_ap50", "coco_ap75")


@dataclass
class EvaluationArguments:
    """The evaluator's flag (for ``HfArgumentParser``): the VOC AP convention."""

    compat: str = field(default="devkit", metadata={
        "help": "VOC AP convention: devkit (the MATLAB devkit's) or py-faster-rcnn.", "choices": list(COMPAT_MODES)})


class DetectionEvaluator:
    """Accumulates detections and ground truth; :meth:`compute` returns VOC07, VOC12 and COCO numbers,
    ``ap_<class>`` (VOC07 AP per class, the classic table), ``n_images`` (images scored) and
    ``n_dropped_detections`` (detections with a NaN/inf box or score, left out of every metric)."""

    def __init__(self, class_names: Sequence[str], iou_threshold: float = 0.5, compat: str = "devkit",
                 coco: bool = True) -> None:
        self.class_names = list(class_names)
        self.iou_threshold = iou_threshold
        self.compat = compat
        self.coco = coco
        self.reset()

    def reset(self) -> None:
        self.detections: list[dict] = []
        self.ground_truths: list[dict] = []

    def update(self, detections: Sequence[Mapping], ground_truths: Sequence[Mapping]) -> None:
        """Add one batch: per-image dicts as in :func:`~hf_gaf.metrics.voc.voc_eval`."""
        for d in detections:
            self.detections.append(
                {
                    "image_id": d["image_id"],
                    "boxes": to_numpy(d["boxes"], np.float32).reshape(-1, 4),
                    "scores": to_numpy(d["scores"], np.float32).reshape(-1),
                    "labels": to_numpy(d["labels"], np.int32).reshape(-1),
                }
            )
        for g in ground_truths:
            labels = to_numpy(g["labels"], np.int32).reshape(-1)
            self.ground_truths.append(
                {
                    "image_id": g["image_id"],
                    "boxes": to_numpy(g["boxes"], np.float32).reshape(-1, 4),
                    "labels": labels,
                    "difficult": to_numpy(g.get("difficult", np.zeros(len(labels), bool)), bool).reshape(-1),
                }
            )

    def compute(self) -> dict[str, float]:
        args = (self.detections, self.ground_truths, self.class_names)
        voc07 = voc_eval(*args, iou_threshold=self.iou_threshold, metric="voc07", compat=self.compat)
        voc12 = voc_eval(*args, iou_threshold=self.iou_threshold, metric="voc12", compat=self.compat)
        out = {"voc07_map": voc07["map"], "voc12_map": voc12["map"]}
        out["n_dropped_detections"] = voc07["n_dropped_detections"]  # NaN/inf boxes or scores, left out
        if self.coco:
            coco = coco_eval(*args)
            out.update(coco_map=coco["coco_map"], coco_ap50=coco["ap50"], coco_ap75=coco["ap75"])
        out.update({f"ap_{name}": value for name, value in voc07["ap"].items()})
        out["n_images"] = len(self.ground_truths)  # images scored: a check that nothing was dropped or doubled
        return out


def make_compute_metrics(evaluator: DetectionEvaluator, to_detections: Callable) -> Callable:
    """A Trainer ``compute_metrics`` for ``batch_eval_metrics=True``: ``to_detections(eval_pred)``
    turns one batch's ``EvalPrediction`` into ``(detections, ground_truths)``."""

    def compute_metrics(eval_pred, compute_result: bool = False) -> dict[str, float]:
        detections, ground_truths = to_detections(eval_pred)
        evaluator.update(detections, ground_truths)
        if not compute_result:
            return {}
        result = evaluator.compute()
        evaluator.reset()
        return result

    return compute_metrics

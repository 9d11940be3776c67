"""Faster R-CNN data path for the VOC recipe: canvas transforms to ``{"pixel_values", "labels"}`` and
detections back to original pixels (the model's labels are already data-set classes)."""

from __future__ import annotations

import torch

from .data import evaluation_fields
from .transforms import DetectionTransform, canvas_to_original


class FasterRCNNCollator:
    def __init__(self, transform: DetectionTransform) -> None:
        self.transform = transform

    def __call__(self, examples: list[dict]) -> dict:
        images, labels = [], []
        for ex in examples:
            sample = self.transform.apply(ex)
            images.append(sample.image.float() / 255.0)
            labels.append({"boxes": sample.boxes.reshape(-1, 4), "labels": sample.labels, **evaluation_fields(ex, sample)})
        return {"pixel_values": torch.stack(images), "labels": labels}


def faster_rcnn_postprocess(outputs: dict, labels: list[dict]) -> list[dict]:
    """``postprocess`` for :class:`~hf_gaf.detection.trainer.DetectionTrainer`."""
    out = []
    for d, t in zip(outputs["detections"], labels):
        scale = tuple(float(v) for v in t["scale"])
        size = tuple(int(v) for v in t["orig_size"])
        out.append({"boxes": canvas_to_original(d["boxes"].float(), scale, size), "scores": d["scores"], "labels": d["labels"]})
    return out

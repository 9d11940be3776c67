"""Faster R-CNN data path for the VOC recipe: canvas transforms to ``{"pixel_values", "labels"}`` and
detections back to original pixels (the model's labels are already data-set classes)."""

from __future__ import annotations

import torch

from .data import detections_to_original, evaluation_fields
from .transforms import DetectionTransform


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
    return detections_to_original(outputs["detections"], labels)

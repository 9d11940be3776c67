"""Box-consistent image transforms for the detection recipes (torchvision.transforms.v2).

Every image ends on a square ``size`` x ``size`` canvas, so batches need no further padding and the
map back to the original image is one scale factor per axis:

- ``mode="letterbox"`` keeps the aspect ratio: the longer side becomes ``size`` and the image is
  padded at the bottom/right;
- ``mode="stretch"`` resizes both sides to ``size``.

With ``canvas_by_processor=True`` (the DETR family) the model's image processor finishes the canvas, as it
does inside ``pipeline("object-detection")``: training images are resized (longer side ``size``, or
``size`` x ``size`` for stretch) but not padded, evaluation images are left at their original size, and
the processor saved with the model resizes (evaluation) and pads at the bottom/right (letterbox).

Training adds a horizontal flip, scale jitter (zoom out with padding, up to ``max_zoom_out``) and
an optional IoU crop. Boxes are ``tv_tensors.BoundingBoxes`` throughout, so every step moves them
with the pixels. A box that an augmentation pushes out of the canvas is dropped.

``canvas_to_original(boxes, scale)`` undoes the resize: original = canvas / scale, per axis.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

MODES = ("letterbox", "stretch")


@dataclass
class CanvasSample:
    """One image on its canvas: ``image`` (uint8 CHW), ``boxes`` (xyxy on the canvas), ``labels``,
    ``scale`` = (sx, sy) from original to canvas, ``orig_size`` = (h, w)."""

    image: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    scale: tuple[float, float]
    orig_size: tuple[int, int]


class DetectionTransform:
    """The canvas transform (module docstring); with ``sample_rng`` (any object with ``seeded(index)``, as the
    recipes' :class:`hf_gaf.harness.sample_rng.SampleRNG`),
    :meth:`apply` draws each row's augmentation from (seed, epoch, the row's ``index``)."""

    def __init__(self, size: int, train: bool, mode: str = "letterbox", hflip: float = 0.5,
                 max_zoom_out: float = 1.5, iou_crop: bool = False, sample_rng=None,
                 canvas_by_processor: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"--resize_mode {mode!r}: expected one of {', '.join(MODES)}")
        self.size, self.train, self.mode, self.sample_rng = size, train, mode, sample_rng
        self.canvas_by_processor = canvas_by_processor
        steps = []
        if train:
            if iou_crop:
                steps.append(v2.RandomIoUCrop())
            if max_zoom_out > 1:
                steps.append(v2.RandomZoomOut(fill=114, side_range=(1.0, max_zoom_out), p=0.5))
            steps.append(v2.RandomHorizontalFlip(hflip))
        self.augment = v2.Compose(steps) if steps else None

    def __call__(self, image, boxes: np.ndarray, labels: np.ndarray) -> CanvasSample:
        img = F.pil_to_tensor(image.convert("RGB")) if not isinstance(image, torch.Tensor) else image
        h, w = img.shape[-2:]
        bbs = tv_tensors.BoundingBoxes(torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4)),
                                       format="XYXY", canvas_size=(h, w))
        lab = torch.as_tensor(np.asarray(labels, np.int64).reshape(-1))
        if self.augment is not None:
            # labels stay outside the transform (v2 would treat a plain tensor as an image); no step
            # reorders boxes, so they stay aligned
            img, bbs = self.augment(tv_tensors.Image(img), bbs)
            bbs, lab = self._drop_empty(bbs, lab)
        ah, aw = img.shape[-2:]  # size after augmentation, before the canvas resize
        if self.canvas_by_processor and not self.train:
            new_h, new_w = ah, aw  # the processor resizes, as in pipeline()
        elif self.mode == "stretch":
            new_h, new_w = self.size, self.size
        else:
            ratio = self.size / max(ah, aw)
            new_h, new_w = max(1, round(ah * ratio)), max(1, round(aw * ratio))
        if (new_h, new_w) != (ah, aw):
            img, bbs = F.resize(tv_tensors.Image(img), [new_h, new_w], antialias=True), F.resize(bbs, [new_h, new_w])
        if (new_h, new_w) != (self.size, self.size) and not self.canvas_by_processor:
            img = F.pad(img, [0, 0, self.size - new_w, self.size - new_h], fill=114)
            bbs = tv_tensors.BoundingBoxes(
                bbs.as_subclass(torch.Tensor), format="XYXY", canvas_size=(self.size, self.size)
            )
        # scale from the ORIGINAL image to the canvas (augmentation only applies to training, where
        # the original coordinates are never needed again)
        scale = (new_w / w, new_h / h) if self.augment is None else (new_w / aw, new_h / ah)
        return CanvasSample(torch.as_tensor(img), bbs.as_subclass(torch.Tensor).float(), lab, scale, (int(h), int(w)))

    def apply(self, example: dict) -> CanvasSample:
        """The transform of a data-set row (``image`` and ``objects`` as :func:`~hf_gaf.detection.voc.load_voc` gives,
        and ``index`` when a ``sample_rng`` seeds the augmentation)."""
        seeded = self.sample_rng.seeded(example["index"]) if self.sample_rng is not None else contextlib.nullcontext()
        with seeded:
            return self(example["image"], example["objects"]["bbox"], example["objects"]["category"])

    @staticmethod
    def _drop_empty(bbs, labels):
        bbs = v2.functional.clamp_bounding_boxes(bbs)
        keep = ((bbs[:, 2] - bbs[:, 0]) > 1) & ((bbs[:, 3] - bbs[:, 1]) > 1)
        return tv_tensors.wrap(bbs[keep], like=bbs), labels[keep]


def canvas_to_original(boxes: torch.Tensor, scale: tuple[float, float], orig_size: tuple[int, int]) -> torch.Tensor:
    """Boxes on the canvas back to original-image pixels, clamped to the image."""
    sx, sy = scale
    out = boxes / torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype, device=boxes.device)
    h, w = orig_size
    return torch.stack([out[:, 0].clamp(0, w), out[:, 1].clamp(0, h), out[:, 2].clamp(0, w), out[:, 3].clamp(0, h)], 1)

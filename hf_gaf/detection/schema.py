"""The detection evaluation contract, in one place.

Each label dict a collator builds carries, beside the model's own targets, an :class:`EvalTarget`
under :data:`EVAL_KEY`: the ORIGINAL ground truth (boxes in original pixels, classes, difficult), the
image index, and the canvas geometry (per-axis ``scale`` original → canvas, ``orig_size`` (h, w)).

For the Trainer's cross-process gather, a batch travels as two padded float tensors
(:mod:`hf_gaf.metrics.packed`); :func:`pack_ground_truth` packs the original ground truth of label dicts.

Example:
    >>> import torch
    >>> from hf_gaf.metrics.packed import unpack
    >>> target = EvalTarget(torch.tensor([[1., 2., 3., 4.]]), torch.tensor([0]), torch.tensor([False]), 7,
    ...                     (0.5, 0.5), (20, 20))
    >>> dets = torch.tensor([[[1., 2., 3., 4., 0.9, 0., 7.]]])  # one image, one detection (x0..y1, score, label, id)
    >>> d, t = unpack(dets, pack_ground_truth([{EVAL_KEY: target}]))
    >>> d[0]["image_id"], t[0]["labels"].tolist()
    (7, [0])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..metrics.packed import pack_truths
from .transforms import CanvasSample, DetectionTransform, canvas_to_original

EVAL_KEY = "eval_target"


@dataclass
class EvalTarget:
    """What evaluation needs of one image besides the model's targets (module docstring)."""

    boxes: torch.Tensor  # [n, 4] x0, y0, x1, y1 in original pixels
    labels: torch.Tensor  # [n] data-set classes
    difficult: torch.Tensor  # [n] bool
    image_index: int
    scale: tuple[float, float]  # original -> canvas, per axis (x, y)
    orig_size: tuple[int, int]  # (h, w)

    @classmethod
    def of(cls, example: dict, sample: CanvasSample) -> EvalTarget:
        """From a data-set row (``objects`` as :func:`~hf_gaf.detection.voc.load_voc` gives, ``index``)
        and its canvas sample."""
        o = example["objects"]
        return cls(torch.as_tensor(o["bbox"], dtype=torch.float32).reshape(-1, 4),
                   torch.as_tensor(o["category"], dtype=torch.int64), torch.as_tensor(o["difficult"], dtype=torch.bool),
                   int(example["index"]), tuple(sample.scale), tuple(sample.orig_size))


def eval_target(label: dict) -> EvalTarget:
    """The :class:`EvalTarget` of a label dict (a ``KeyError`` naming :data:`EVAL_KEY` when absent)."""
    try:
        return label[EVAL_KEY]
    except KeyError:
        raise KeyError(f"label dict without {EVAL_KEY!r}: build labels with a hf_gaf detection collator") from None


def detections_to_original(detections: list[dict], labels: list[dict]) -> list[dict]:
    """Per-image ``{boxes, scores, labels}`` on the canvas back to original pixels (clipped to the image)."""
    out = []
    for d, label in zip(detections, labels):
        t = eval_target(label)
        out.append({"boxes": canvas_to_original(d["boxes"].float(), t.scale, t.orig_size), "scores": d["scores"],
                    "labels": d["labels"]})
    return out


def pack_ground_truth(labels: list[dict]) -> torch.Tensor:
    """The original ground truth of a batch of label dicts as a padded ``[B, M, 7]`` tensor."""
    targets = [eval_target(label) for label in labels]
    return pack_truths([t.boxes for t in targets], [t.labels for t in targets], [t.difficult for t in targets],
                       [t.image_index for t in targets])


def with_canvas_transform(dataset, transform: DetectionTransform):
    """``dataset`` (rows with ``image``, ``objects``, ``index``) whose rows come out, on access, as
    ``{"sample": CanvasSample, "eval_target": EvalTarget}``: the training split gets the augmenting
    transform, the evaluation split the plain one, and one collator per model family serves both."""

    def apply(batch: dict) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        samples = [transform.apply(row) for row in rows]
        return {"sample": samples, EVAL_KEY: [EvalTarget.of(row, s) for row, s in zip(rows, samples)]}

    fingerprint_log = logging.getLogger("datasets.fingerprint")  # it warns that a closure "couldn't be hashed":
    level = fingerprint_log.level                                 # harmless for an on-access transform
    fingerprint_log.setLevel(logging.ERROR)
    try:
        return dataset.with_transform(apply)
    finally:
        fingerprint_log.setLevel(level)


@torch.no_grad()
def detect(model: torch.nn.Module, collator, postprocess, rows: list[dict], device) -> list[dict]:
    """The detections (``boxes`` in original pixels, ``scores``, ``labels``) of ``model`` on ``rows`` (as
    :func:`with_canvas_transform` gives them), in eval mode: the one prediction path of ``hf-gaf predict``
    and of the training run's ``predictions.png``."""
    batch = collator(rows)
    model.eval()
    outputs = model(**{k: batch[k].to(device) for k in ("pixel_values", "pixel_mask") if k in batch})
    return postprocess(outputs, batch["labels"])

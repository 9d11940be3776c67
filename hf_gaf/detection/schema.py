"""The detection evaluation contract, in one place.

Each label dict a collator builds carries, beside the model's own targets, an :class:`EvalTarget`
under :data:`EVAL_KEY`: the ORIGINAL ground truth (boxes in original pixels, classes, difficult), the
image index, and the canvas geometry (per-axis ``scale`` original → canvas, ``orig_size`` (h, w)).

For the Trainer's cross-process gather, a batch travels as two padded float tensors whose columns are
named by :data:`DETECTION_COLUMNS` and :data:`GROUND_TRUTH_COLUMNS` (padding rows hold ``PAD``):
:func:`pack_detections` / :func:`pack_ground_truth` build them, :func:`unpack` turns them back into
the per-image dicts of :class:`~hf_gaf.metrics.DetectionEvaluator`.

Example:
    >>> import torch
    >>> target = EvalTarget(torch.tensor([[1., 2., 3., 4.]]), torch.tensor([0]), torch.tensor([False]), 7,
    ...                     (0.5, 0.5), (20, 20))
    >>> dets = [{"boxes": torch.tensor([[1., 2., 3., 4.]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}]
    >>> d, t = unpack(pack_detections(dets, [7]), pack_ground_truth([{EVAL_KEY: target}]))
    >>> d[0]["image_id"], t[0]["labels"].tolist()
    (7, [0])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .transforms import CanvasSample, DetectionTransform, canvas_to_original

EVAL_KEY = "eval_target"
PAD = -1.0
DETECTION_COLUMNS = ("x0", "y0", "x1", "y1", "score", "label", "image_index")
GROUND_TRUTH_COLUMNS = ("x0", "y0", "x1", "y1", "label", "difficult", "image_index")


def _col(columns: tuple[str, ...], name: str) -> int:
    return columns.index(name)


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


def _pad_rows(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """Stack ``[n_i, width]`` tensors into ``[B, max n_i, width]`` padded with ``PAD``."""
    longest = max([len(r) for r in rows] + [1])
    out = torch.full((len(rows), longest, width), PAD)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _rows(columns: tuple[str, ...], image_index: int, boxes: torch.Tensor, **per_box: torch.Tensor) -> torch.Tensor:
    """One image's ``[n, len(columns)]`` float rows, each field put in its named column."""
    boxes = boxes.reshape(-1, 4).float().cpu()
    block = torch.empty(len(boxes), len(columns))
    block[:, :4] = boxes
    for name, values in per_box.items():
        block[:, _col(columns, name)] = values.reshape(-1).float().cpu()
    block[:, _col(columns, "image_index")] = float(image_index)
    return block


def pack_ground_truth(labels: list[dict]) -> torch.Tensor:
    """The original ground truth of a batch of label dicts as a padded ``[B, M, 7]`` tensor."""
    targets = [eval_target(label) for label in labels]
    return _pad_rows([_rows(GROUND_TRUTH_COLUMNS, t.image_index, t.boxes, label=t.labels, difficult=t.difficult)
                      for t in targets], len(GROUND_TRUTH_COLUMNS))


def pack_detections(detections: list[dict], image_indices: list[int]) -> torch.Tensor:
    """Per-image ``{boxes, scores, labels}`` (original pixels) as a padded ``[B, K, 7]`` tensor."""
    return _pad_rows([_rows(DETECTION_COLUMNS, index, d["boxes"], score=d["scores"], label=d["labels"])
                      for d, index in zip(detections, image_indices)], len(DETECTION_COLUMNS))


def unpack(predictions, ground_truth) -> tuple[list[dict], list[dict]]:
    """Padded tensors (or arrays, as the Trainer gathers them) back into the evaluator's per-image
    dicts; padding rows (ours ``PAD``, the Trainer's -100) are dropped."""
    preds = predictions.detach().cpu().numpy() if isinstance(predictions, torch.Tensor) else np.asarray(predictions)
    gts = ground_truth.detach().cpu().numpy() if isinstance(ground_truth, torch.Tensor) else np.asarray(ground_truth)
    d_label, d_index = _col(DETECTION_COLUMNS, "label"), _col(DETECTION_COLUMNS, "image_index")
    g_label, g_index = _col(GROUND_TRUTH_COLUMNS, "label"), _col(GROUND_TRUTH_COLUMNS, "image_index")
    detections, truths = [], []
    for p, g in zip(preds, gts):
        g = g[g[:, g_label] >= 0]
        p = p[(p[:, d_label] >= 0) & (p[:, d_index] >= 0)]
        if len(g) == 0 and len(p) == 0:
            continue
        image_id = int(g[0, g_index]) if len(g) else int(p[0, d_index])
        truths.append({"image_id": image_id, "boxes": g[:, :4], "labels": g[:, g_label].astype(int),
                       "difficult": g[:, _col(GROUND_TRUTH_COLUMNS, "difficult")] > 0.5})
        detections.append({"image_id": image_id, "boxes": p[:, :4], "scores": p[:, _col(DETECTION_COLUMNS, "score")],
                           "labels": p[:, d_label].astype(int)})
    return detections, truths


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

"""Detections and ground truth as padded tensors, so a Trainer can gather them across processes: per image,
rows whose columns :data:`DETECTION_COLUMNS` and :data:`GROUND_TRUTH_COLUMNS` name (padding rows hold ``PAD``;
the Trainer's own padding, -100, is dropped too); :func:`unpack` turns them back into the per-image dicts of
:class:`~hf_gaf.metrics.DetectionEvaluator`.

Example:
    >>> import torch
    >>> dets = [{"boxes": torch.tensor([[1., 2., 3., 4.]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}]
    >>> truth = pack_truths([torch.tensor([[1., 2., 3., 4.]])], [torch.tensor([0])], [torch.tensor([False])], [7])
    >>> d, t = unpack(pack_detections(dets, [7]), truth)
    >>> d[0]["image_id"], t[0]["labels"].tolist()
    (7, [0])
"""

from __future__ import annotations

import numpy as np
import torch

PAD = -1.0
DETECTION_COLUMNS = ("x0", "y0", "x1", "y1", "score", "label", "image_index")
GROUND_TRUTH_COLUMNS = ("x0", "y0", "x1", "y1", "label", "difficult", "image_index")


def _col(columns: tuple[str, ...], name: str) -> int:
    return columns.index(name)


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


def pack_truths(boxes: list[torch.Tensor], labels: list[torch.Tensor], difficult: list[torch.Tensor],
                image_indices: list[int]) -> torch.Tensor:
    """Per-image ground truth (``[n, 4]`` corner boxes, classes, difficult flags) as a padded ``[B, M, 7]``
    tensor."""
    return _pad_rows([_rows(GROUND_TRUTH_COLUMNS, index, b, label=lab, difficult=d)
                      for b, lab, d, index in zip(boxes, labels, difficult, image_indices)], len(GROUND_TRUTH_COLUMNS))


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

r"""PASCAL VOC average precision, as the official devkit and py-faster-rcnn compute it.

Inputs follow torchmetrics' convention, one dict per image (tensors or arrays):
detections ``{image_id, boxes [N,4], scores [N], labels [N]}``, ground truths
``{image_id, boxes [M,4], labels [M], difficult [M]}``; boxes are continuous 0-based ``xyxy`` (as
:func:`~hf_gaf.detection.voc.load_voc` returns them), labels index ``class_names``.

Per class: detections are sorted by descending score (stable); each is matched to the ground truth
of highest IoU in its image, matched or not. IoU >= threshold (``compat="devkit"``) or > threshold
(``compat="py-faster-rcnn"``) on a difficult box: ignored; on an unmatched box: TP (the box is now
matched); on a matched box: FP. Below the threshold: FP. Then recall = TP/npos (npos = number of
non-difficult boxes), precision = TP/(TP+FP), and

- ``voc07``: 11-point AP, the mean over t in {0, 0.1, ..., 1} of max(precision at recall >= t);
  thresholds are k/10 exactly (``devkit``) or ``np.arange(0, 1.1, 0.1)`` (``py-faster-rcnn``, whose
  0.30000000000000004 misses a recall of exactly 0.3);
- ``voc12``: the area under the monotone (right-to-left maximum) precision envelope.

A class with ground truth but no detection has AP 0; a class without any non-difficult ground truth
is left out of the mean (``ap`` is NaN, listed in ``classes_without_positives``).

Matching is vectorised per class (IoU of every detection against the padded ground truth of its
image), with no Python loop over detections.

Example:
    >>> import numpy as np
    >>> gt = [{"image_id": 0, "boxes": np.array([[0, 0, 10, 10.]]), "labels": np.array([0]),
    ...        "difficult": np.array([False])}]
    >>> det = [{"image_id": 0, "boxes": np.array([[0, 0, 10, 10.], [1, 1, 10, 10.]]), "scores": np.array([.9, .8]),
    ...         "labels": np.array([0, 0])}]
    >>> round(voc_eval(det, gt, ["thing"])["map"], 12)  # the 11-point average: 11 x (1/11), up to rounding
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

VOC_METRICS = ("voc07", "voc12")
COMPAT_MODES = ("devkit", "py-faster-rcnn")


def to_numpy(x, dtype=None) -> np.ndarray:
    """A tensor, array or list as a numpy array (no copy for arrays of the right dtype)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a [..., 4]`` and ``b [..., 4]`` (continuous xyxy), broadcast over leading dims."""
    ix = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ix * iy
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


# The devkit's ``for t=0:0.1:1`` as MATLAB's colon operator computes it: a + k·d for the first half,
# b - (n-k)·d for the second. So t(4) = 0.30000000000000004 (a recall of exactly 0.3 does not reach it),
# while 0.6 and 0.7 come out exact; numpy's arange (py-faster-rcnn) is off at 0.3, 0.6 and 0.7.
DEVKIT_THRESHOLDS = np.array([k * 0.1 if k <= 5 else 1.0 - (10 - k) * 0.1 for k in range(11)])


def average_precision(
    recall: np.ndarray, precision: np.ndarray, metric: str = "voc07", compat: str = "devkit"
) -> float:
    """AP from a recall/precision curve (detections in descending score order)."""
    if metric == "voc07":
        thresholds = np.arange(0.0, 1.1, 0.1) if compat == "py-faster-rcnn" else DEVKIT_THRESHOLDS
        ap = 0.0
        for t in thresholds:
            above = recall >= t
            ap += (precision[above].max() if above.any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


class _ClassData:
    """Ground truth and detections of one class, gathered over images."""

    __slots__ = ("gt_boxes", "gt_difficult", "gt_image", "det_boxes", "det_scores", "det_image")

    def __init__(self):
        self.gt_boxes, self.gt_difficult, self.gt_image = [], [], []
        self.det_boxes, self.det_scores, self.det_image = [], [], []


def _scatter_by_class(per_class: list[_ClassData], kind: str, labels: np.ndarray, image: int, arrays: dict) -> None:
    """Append one image's ``arrays`` (``kind`` = "gt" or "det") to the per-class lists."""
    for c in np.unique(labels):
        sel = labels == c
        data = per_class[c]
        for name, array in arrays.items():
            getattr(data, f"{kind}_{name}").append(array[sel])
        getattr(data, f"{kind}_image").append(np.full(int(sel.sum()), image))


def _image_key(image_id):
    return image_id.item() if hasattr(image_id, "item") else image_id


def _rows(entry: Mapping, field: str, width: int | None, dtype, what: str) -> np.ndarray:
    array = to_numpy(entry[field], dtype)
    if width is not None:
        if array.size % width:
            raise ValueError(
                f"{what} of image {_image_key(entry['image_id'])!r}: {field} has {array.size} values, "
                f"not rows of {width}"
            )
        return array.reshape(-1, width)
    return array.reshape(-1)


def check_inputs(detections: Sequence[Mapping], ground_truths: Sequence[Mapping], n_classes: int):
    """Validate evaluator inputs and return them as numpy dicts, with how many detections were dropped.

    Raises ``ValueError`` naming the image and the field for: lengths that disagree (boxes N×4,
    scores N, labels N; ground-truth boxes M×4, labels M, difficult M), a label outside the classes,
    a non-finite ground-truth box, an image with ground truth twice, and a detection whose
    ``image_id`` has no ground truth (ids compare by value and type: ``5`` is not ``"000005"``).
    Detections with a NaN/inf coordinate or score are dropped and counted (a diverged model scores
    what it got right; the count is reported), never ranked.
    """
    clean_gt, seen = [], {}
    for gt in ground_truths:
        key = _image_key(gt["image_id"])
        if key in seen:
            raise ValueError(f"ground truth for image {key!r} is given twice")
        boxes = _rows(gt, "boxes", 4, np.float64, "ground truth")
        labels = _rows(gt, "labels", None, np.int64, "ground truth")
        difficult = to_numpy(gt.get("difficult", np.zeros(len(labels), bool)), bool).reshape(-1)
        if not len(boxes) == len(labels) == len(difficult):
            raise ValueError(
                f"ground truth of image {key!r}: {len(boxes)} boxes, {len(labels)} labels, "
                f"{len(difficult)} difficult flags"
            )
        if not np.isfinite(boxes).all():
            raise ValueError(f"ground truth of image {key!r} has a non-finite box coordinate")
        _check_labels(labels, n_classes, "ground truth")
        seen[key] = type(key)
        clean_gt.append({"image_id": key, "boxes": boxes, "labels": labels, "difficult": difficult})
    clean_det, dropped = [], 0
    for det in detections:
        key = _image_key(det["image_id"])
        if key not in seen:
            example = next(iter(seen), None)
            raise ValueError(
                f"detections for image {key!r} ({type(key).__name__}) have no ground truth; ground-truth "
                f"ids look like {example!r} ({type(example).__name__})"
            )
        boxes = _rows(det, "boxes", 4, np.float64, "detections")
        scores = _rows(det, "scores", None, np.float64, "detections")
        labels = _rows(det, "labels", None, np.int64, "detections")
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"detections of image {key!r}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
            )
        _check_labels(labels, n_classes, "detection")
        finite = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
        dropped += int((~finite).sum())
        clean_det.append({"image_id": key, "boxes": boxes[finite], "scores": scores[finite], "labels": labels[finite]})
    return clean_det, clean_gt, dropped


def _gather(detections, ground_truths, n_classes: int) -> list[_ClassData]:
    """Per-class arrays of checked inputs (:func:`check_inputs`), images numbered in order."""
    image_index: dict = {}
    per_class = [_ClassData() for _ in range(n_classes)]
    for gt in ground_truths:
        _scatter_by_class(
            per_class,
            "gt",
            gt["labels"],
            image_index.setdefault(gt["image_id"], len(image_index)),
            {"boxes": gt["boxes"], "difficult": gt["difficult"]},
        )
    for det in detections:
        _scatter_by_class(
            per_class,
            "det",
            det["labels"],
            image_index[det["image_id"]],
            {"boxes": det["boxes"], "scores": det["scores"]},
        )
    return per_class


def _check_labels(labels: np.ndarray, n_classes: int, what: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"{what} label {int(labels.max() if labels.max() >= n_classes else labels.min())} is "
            f"outside 0..{n_classes - 1} (class_names has {n_classes} entries)"
        )


def _cat(parts: list[np.ndarray], shape_tail=(), dtype=np.float64) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, *shape_tail), dtype)


def match_class(data: _ClassData, iou_threshold: float, compat: str) -> tuple[np.ndarray, np.ndarray, int]:
    """TP and FP flags of one class's detections in descending score order, and npos."""
    gt_boxes = _cat(data.gt_boxes, (4,))
    gt_difficult = _cat(data.gt_difficult, dtype=bool).astype(bool)
    gt_image = _cat(data.gt_image, dtype=np.int64).astype(np.int64)
    det_boxes = _cat(data.det_boxes, (4,))
    det_scores = _cat(data.det_scores)
    det_image = _cat(data.det_image, dtype=np.int64).astype(np.int64)
    npos = int((~gt_difficult).sum())
    order = np.argsort(-det_scores, kind="stable")
    det_boxes, det_image = det_boxes[order], det_image[order]
    n_det = len(order)
    tp = np.zeros(n_det, bool)
    fp = np.zeros(n_det, bool)
    if n_det == 0:
        return tp, fp, npos
    if len(gt_boxes) == 0:
        return tp, np.ones(n_det, bool), npos
    # pad each image's ground truth into a [n_images, max_gt] table
    gt_order = np.argsort(gt_image, kind="stable")
    gt_boxes, gt_difficult, gt_image = gt_boxes[gt_order], gt_difficult[gt_order], gt_image[gt_order]
    n_images = int(max(gt_image.max(), det_image.max())) + 1
    counts = np.bincount(gt_image, minlength=n_images)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    slot = np.arange(len(gt_image)) - starts[gt_image]
    max_gt = int(counts.max())
    table = np.zeros((n_images, max_gt, 4))
    table[gt_image, slot] = gt_boxes
    valid = np.zeros((n_images, max_gt), bool)
    valid[gt_image, slot] = True
    difficult = np.zeros((n_images, max_gt), bool)
    difficult[gt_image, slot] = gt_difficult

    iou = box_iou(det_boxes[:, None, :], table[det_image])  # [n_det, max_gt]
    iou = np.where(valid[det_image], iou, -1.0)
    best = iou.argmax(axis=1)
    best_iou = iou[np.arange(n_det), best]
    hit = best_iou > iou_threshold if compat == "py-faster-rcnn" else best_iou >= iou_threshold
    on_difficult = hit & difficult[det_image, best]
    candidate = hit & ~on_difficult
    # the first candidate (in score order) on each ground-truth box is the TP, later ones are FP
    key = det_image * max_gt + best
    cand_idx = np.flatnonzero(candidate)
    _, first = np.unique(key[cand_idx], return_index=True)
    tp[cand_idx[first]] = True
    fp = ~tp & ~on_difficult
    return tp, fp, npos


def voc_eval(
    detections: Sequence[Mapping],
    ground_truths: Sequence[Mapping],
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
    metric: str = "voc07",
    compat: str = "devkit",
) -> dict:
    """VOC mAP of ``detections`` against ``ground_truths`` (see the module docstring).

    Returns ``{"map", "ap": {class: AP}, "precision": {class: array}, "recall": {class: array},
    "npos": {class: n}, "classes_without_positives": [...], "metric", "compat", "iou_threshold"}``.
    """
    if metric not in VOC_METRICS:
        raise ValueError(f"metric must be one of {VOC_METRICS}, got {metric!r}")
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat must be one of {COMPAT_MODES}, got {compat!r}")
    detections, ground_truths, dropped = check_inputs(detections, ground_truths, len(class_names))
    per_class = _gather(detections, ground_truths, len(class_names))
    ap, precision, recall, npos_by_class, without = {}, {}, {}, {}, []
    for c, name in enumerate(class_names):
        tp, fp, npos = match_class(per_class[c], iou_threshold, compat)
        npos_by_class[name] = npos
        ctp, cfp = np.cumsum(tp), np.cumsum(fp)
        rec = ctp / npos if npos else np.zeros_like(ctp, float)
        prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        precision[name], recall[name] = prec, rec
        if npos == 0:
            ap[name] = float("nan")
            without.append(name)
        else:
            ap[name] = average_precision(rec, prec, metric, compat)
    scored = [v for k, v in ap.items() if k not in without]
    return {
        "map": float(np.mean(scored)) if scored else float("nan"),
        "ap": ap,
        "precision": precision,
        "recall": recall,
        "npos": npos_by_class,
        "classes_without_positives": without,
        "metric": metric,
        "compat": compat,
        "iou_threshold": iou_threshold,
        "n_dropped_detections": dropped,
    }

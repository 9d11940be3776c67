"""VOC and COCO mAP as the ``compute_metrics`` of any ``transformers.Trainer`` that trains a DETR-family model
(``AutoModelForObjectDetection`` whose image processor has ``post_process_object_detection``): on one process or
many, with ``batch_eval_metrics`` on (streaming) or off.

    metrics = DetrComputeMetrics(image_processor, model.config.id2label)
    trainer = Trainer(..., compute_metrics=metrics, preprocess_logits_for_metrics=metrics.preprocess)

Why two hooks: the Trainer gathers, per batch and across processes, whatever ``preprocess_logits_for_metrics``
returns, and drops the samples a distributed sampler repeated to even out the last batch (accelerate's
``gather_for_metrics``); DETR's labels (a list of dicts of per-image lengths) it cannot gather: on several
processes they arrive mixed. So :meth:`DetrComputeMetrics.preprocess` runs on each process's own batch: it
post-processes the outputs (the processor's ``post_process_object_detection`` at ``threshold``, target sizes =
each label's ``orig_size``), reads the ground truth from the same labels (``boxes``, cx cy w h normalised, to
corners in ``orig_size`` pixels; ``class_labels``; ``iscrowd`` boxes are ignored by the metric, as VOC's
difficult ones), and returns both packed as padded tensors (:mod:`hf_gaf.metrics.packed`) of one width on every
process. The Trainer then gathers the batch's labels too (transformers 5's evaluation loop): on several processes
their per-image lengths make gloo abort and NCCL mix them up, so ``preprocess`` leaves in the Trainer's copy of the
label list (made by its ``nested_detach``: the data set's own dicts are untouched) only each image's
``image_id``. The call reads only the packed tensors, keeps compact numpy per image
(:class:`~hf_gaf.metrics.DetectionEvaluator`), never the logits. An image scored twice is an error; ``n_images``
says how many were scored.

Example (a plain ``Trainer``'s evaluation hands over the outputs and labels of each batch like this):
    >>> import torch
    >>> from transformers import RTDetrImageProcessor
    >>> metrics = DetrComputeMetrics(RTDetrImageProcessor(), {0: "thing"})
    >>> labels = [{"image_id": torch.tensor([3]), "orig_size": torch.tensor([100, 200]),
    ...            "class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.4]])}]
    >>> outputs = ({}, torch.tensor([[[4.0], [-4.0]]]), torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1]]]))
    >>> from transformers import EvalPrediction
    >>> result = metrics(EvalPrediction(predictions=metrics.preprocess(outputs, labels), label_ids=labels))
    >>> round(result["voc07_map"], 4), result["n_images"]
    (1.0, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace

import torch
from torchvision.ops import box_convert

from .detection import DetectionEvaluator
from .packed import DETECTION_COLUMNS, PAD, pack_detections, pack_truths, unpack

RAW_OUTPUTS = ("compute_metrics got something other than DetrComputeMetrics.preprocess's packed detections (the "
               "model's raw outputs?): pass preprocess_logits_for_metrics=<this object>.preprocess to the Trainer")


def logits_and_boxes(outputs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [B, Q, C], pred_boxes [B, Q, 4])`` of a DETR-family output: by name from a dict or
    ``ModelOutput``; from the Trainer's tuple (the output's fields without the loss, in order) the first two
    adjacent tensors of those shapes, as every DETR-family output class orders them."""
    if isinstance(outputs, Mapping) and "logits" in outputs and "pred_boxes" in outputs:
        return outputs["logits"], outputs["pred_boxes"]
    items = list(outputs) if isinstance(outputs, (tuple, list)) else []
    for a, b in zip(items, items[1:]):
        if (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.ndim == 3 and b.ndim == 3
                and a.shape[:2] == b.shape[:2] and b.shape[-1] == 4):
            return a, b
    raise ValueError("DetrComputeMetrics.preprocess: no (logits [B, Q, C], pred_boxes [B, Q, 4]) pair among the "
                     f"model's outputs ({type(outputs).__name__}); is this a DETR-family model?")


def _label(label: Mapping, key: str):
    try:
        return label[key]
    except KeyError:
        raise KeyError(f"DetrComputeMetrics: a label dict without {key!r} (it has {', '.join(label)}): build the "
                       "labels with the model's image processor (images=..., annotations=...)") from None


def _pad_to_all_processes(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` padded with ``PAD`` along dim 1 to the widest on any process (a collective: every process calls
    it once per evaluation batch, as the Trainer calls ``preprocess_logits_for_metrics``)."""
    from accelerate.utils import pad_across_processes

    return pad_across_processes(tensor, dim=1, pad_index=PAD)


class DetrComputeMetrics:
    """``compute_metrics`` (and, as :meth:`preprocess`, ``preprocess_logits_for_metrics``) for a Trainer of a
    DETR-family model: VOC07, VOC12 and COCO numbers, per-class VOC07 AP (``ap_<class>``, unless
    ``per_class=False``), ``n_images`` and ``n_dropped_detections`` (module docstring).

    ``id2label``: the model's classes (keys 0..C-1, as ``model.config.id2label``); ``threshold``: of
    ``post_process_object_detection`` (0 keeps every detection: a higher one biases mAP down); ``compat`` and
    ``iou_threshold``: the VOC AP convention of :class:`~hf_gaf.metrics.DetectionEvaluator`."""

    def __init__(self, image_processor, id2label: Mapping, threshold: float = 0.0, per_class: bool = True,
                 compat: str = "devkit", iou_threshold: float = 0.5) -> None:
        if not hasattr(image_processor, "post_process_object_detection"):
            raise TypeError(f"DetrComputeMetrics: {type(image_processor).__name__} has no "
                            "post_process_object_detection; pass the DETR-family model's image processor")
        ids = sorted(int(k) for k in id2label)
        if ids != list(range(len(ids))):
            raise ValueError(f"DetrComputeMetrics: id2label's keys must be the class indices 0..{len(ids) - 1}, "
                             f"got {ids}")
        names = {int(k): v for k, v in id2label.items()}
        self.image_processor, self.threshold, self.per_class = image_processor, threshold, per_class
        self.evaluator = DetectionEvaluator([names[i] for i in ids], iou_threshold=iou_threshold, compat=compat)

    def preprocess(self, outputs, labels: list[Mapping]) -> tuple[torch.Tensor, torch.Tensor]:
        """One process's batch → ``(detections [B, K, 7], ground truth [B, M, 7])`` in ``orig_size`` pixels."""
        logits, boxes = logits_and_boxes(outputs)
        sizes = [tuple(int(v) for v in _label(label, "orig_size")) for label in labels]
        detections = self.image_processor.post_process_object_detection(
            SimpleNamespace(logits=logits, pred_boxes=boxes), threshold=self.threshold, target_sizes=sizes)
        image_ids = [int(torch.as_tensor(_label(label, "image_id")).reshape(-1)[0]) for label in labels]
        truths = []
        for label, (h, w) in zip(labels, sizes):
            boxes = torch.as_tensor(_label(label, "boxes"), dtype=torch.float32).reshape(-1, 4).cpu()
            corners = box_convert(boxes, "cxcywh", "xyxy") * torch.tensor([w, h, w, h], dtype=torch.float32)
            classes = torch.as_tensor(_label(label, "class_labels")).reshape(-1)
            crowd = torch.as_tensor(label.get("iscrowd", torch.zeros(len(classes)))).reshape(-1) > 0
            truths.append((corners, classes, crowd))
        packed = (pack_detections(detections, image_ids), pack_truths(*map(list, zip(*truths)), image_ids))
        if isinstance(labels, list):  # the Trainer's own copy of the batch's labels, which it gathers next
            labels[:] = [{"image_id": torch.tensor([i], device=logits.device)} for i in image_ids]
        return tuple(_pad_to_all_processes(t.to(logits.device)) for t in packed)

    def __call__(self, eval_pred, compute_result: bool = True) -> dict[str, float]:
        """Add a batch (``batch_eval_metrics=True``) or everything at once; with ``compute_result``, return the
        numbers and start afresh."""
        for detections, truths in _packed_batches(eval_pred.predictions):
            self.evaluator.update(*unpack(detections, truths))
        if not compute_result:
            return {}
        result = self.evaluator.compute()
        self.evaluator.reset()
        if not self.per_class:
            result = {k: v for k, v in result.items() if not k.startswith("ap_")}
        return result


def _packed_batches(predictions) -> list[tuple]:
    """``(detections, ground truth)`` pairs: one (a batch, or everything concatenated) or a list of them
    (``eval_do_concat_batches=False``); anything else is :data:`RAW_OUTPUTS`."""
    def is_pair(p) -> bool:
        return (isinstance(p, (tuple, list)) and len(p) == 2
                and all(getattr(t, "ndim", None) == 3 and t.shape[-1] == len(DETECTION_COLUMNS) for t in p))

    if is_pair(predictions):
        return [tuple(predictions)]
    if isinstance(predictions, (tuple, list)) and predictions and all(is_pair(p) for p in predictions):
        return [tuple(p) for p in predictions]
    raise ValueError(RAW_OUTPUTS)

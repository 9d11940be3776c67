"""``DetectionTrainer``: a :class:`~hf_gaf.trainer.GAFTrainer` whose evaluation returns detections.

Its ``prediction_step`` runs the model once, turns the outputs into detections in ORIGINAL image
pixels with the model family's ``postprocess`` and returns them with the original ground truth, both
packed by :mod:`hf_gaf.metrics.packed` into padded tensors (so the Trainer can gather them across
processes). With ``batch_eval_metrics=True`` each batch goes straight into a streaming
:class:`~hf_gaf.metrics.DetectionEvaluator` (:func:`detection_compute_metrics`), so evaluation memory
stays flat.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..metrics import DetectionEvaluator, make_compute_metrics
from ..metrics.packed import pack_detections, unpack
from ..trainer import GAFTrainer
from .module_groups import module_group
from .schema import eval_target, pack_ground_truth


def detection_compute_metrics(class_names, **evaluator_kwargs) -> Callable:
    """A ``compute_metrics`` for ``batch_eval_metrics=True`` over :class:`DetectionTrainer` outputs."""
    evaluator = DetectionEvaluator(class_names, **evaluator_kwargs)
    return make_compute_metrics(evaluator, lambda ep: unpack(ep.predictions, ep.label_ids))


class DetectionTrainer(GAFTrainer):
    """GAFTrainer + ``postprocess(outputs, labels) -> list of {boxes, scores, labels}`` in original pixels."""

    def __init__(self, *args, postprocess: Callable, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.postprocess = postprocess

    def module_group(self, name: str) -> str:
        """The detector part of parameter ``name`` (:func:`~hf_gaf.detection.module_groups.module_group`)."""
        return module_group(name)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        labels = inputs["labels"]
        with torch.no_grad(), self.compute_loss_context_manager():
            outputs = model(**inputs)
        loss = outputs.get("loss") if isinstance(outputs, dict) else None
        loss = loss.detach().mean() if loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        detections = self.postprocess(outputs, labels)
        preds = pack_detections(detections, [eval_target(t).image_index for t in labels])
        gt = pack_ground_truth(labels)
        device = self.args.device
        return loss, preds.to(device), gt.to(device)

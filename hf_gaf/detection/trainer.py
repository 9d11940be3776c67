"""``DetectionTrainer``: a :class:`~hf_gaf.GAFTrainer` whose evaluation returns detections.

Its ``prediction_step`` runs the model once, turns the outputs into detections in ORIGINAL image
pixels with the recipe's ``postprocess`` and returns them with the original ground truth, both as
padded tensors (so the Trainer can gather them across processes):

- detections ``[B, K, 7]``: x0, y0, x1, y1, score, label, image index;
- ground truth ``[B, M, 7]``: x0, y0, x1, y1, label, difficult, image index (padding rows: label < 0).

With ``batch_eval_metrics=True`` each batch goes straight into a streaming
:class:`~hf_gaf.metrics.DetectionEvaluator` (:func:`detection_compute_metrics`), so evaluation memory
stays flat.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from ..metrics import DetectionEvaluator, make_compute_metrics
from ..trainer import GAFTrainer

PAD = -1.0


def pad_rows(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """Stack ``[n_i, width]`` tensors into ``[B, max n_i, width]`` padded with ``PAD``."""
    longest = max([len(r) for r in rows] + [1])
    out = torch.full((len(rows), longest, width), PAD)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def image_rows(boxes: torch.Tensor, first: torch.Tensor, second: torch.Tensor, image_index) -> torch.Tensor:
    """One image's ``[n, 7]`` float rows: x0, y0, x1, y1, two per-box columns, the image index."""
    columns = [boxes.reshape(-1, 4), first.reshape(-1, 1), second.reshape(-1, 1)]
    block = torch.cat([c.float().cpu() for c in columns], 1)
    return torch.cat([block, torch.full((len(block), 1), float(image_index))], 1)


def pack_ground_truth(labels: list[dict]) -> torch.Tensor:
    """Original ground truth of a batch (keys ``orig_boxes``, ``orig_class_labels``, ``difficult``,
    ``image_index`` of each label dict) as a padded ``[B, M, 7]`` tensor."""
    return pad_rows([image_rows(t["orig_boxes"], t["orig_class_labels"], t["difficult"], t["image_index"])
                     for t in labels], 7)


def pack_detections(detections: list[dict], image_indices: list[int]) -> torch.Tensor:
    """Per-image ``{boxes, scores, labels}`` (original pixels) as a padded ``[B, K, 7]`` tensor."""
    return pad_rows([image_rows(d["boxes"], d["scores"], d["labels"], index)
                     for d, index in zip(detections, image_indices)], 7)


def unpack(predictions, ground_truth) -> tuple[list[dict], list[dict]]:
    """Padded tensors (or arrays) back into the evaluator's per-image dicts."""
    preds = predictions.detach().cpu().numpy() if hasattr(predictions, "detach") else np.asarray(predictions)
    gts = ground_truth.detach().cpu().numpy() if hasattr(ground_truth, "detach") else np.asarray(ground_truth)
    detections, truths = [], []
    for p, g in zip(preds, gts):
        g = g[g[:, 4] >= 0]  # padding rows (ours -1, the Trainer's -100)
        p = p[(p[:, 5] >= 0) & (p[:, 6] >= 0)]
        if len(g) == 0 and len(p) == 0:
            continue
        image_id = int(g[0, 6]) if len(g) else int(p[0, 6])
        truths.append({"image_id": image_id, "boxes": g[:, :4], "labels": g[:, 4].astype(int),
                       "difficult": g[:, 5] > 0.5})
        detections.append({"image_id": image_id, "boxes": p[:, :4], "scores": p[:, 4], "labels": p[:, 5].astype(int)})
    return detections, truths


def detection_compute_metrics(class_names, **evaluator_kwargs) -> Callable:
    """A ``compute_metrics`` for ``batch_eval_metrics=True`` over :class:`DetectionTrainer` outputs."""
    evaluator = DetectionEvaluator(class_names, **evaluator_kwargs)
    return make_compute_metrics(evaluator, lambda ep: unpack(ep.predictions, ep.label_ids))


class DetectionTrainer(GAFTrainer):
    """GAFTrainer + ``postprocess(outputs, labels) -> list of {boxes, scores, labels}`` in original
    pixels, and an ``eval_data_collator`` (no augmentation) beside the training ``data_collator``."""

    def __init__(self, *args, postprocess: Callable, eval_data_collator: Callable | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.postprocess = postprocess
        self.eval_data_collator = eval_data_collator

    def get_eval_dataloader(self, eval_dataset=None):
        if self.eval_data_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    @torch.no_grad()
    def draw_predictions(self, dataset, class_names, n_images: int = 8, score_threshold: float = 0.3,
                         path: str | None = None) -> str | None:
        """Write ``OUTPUT_DIR/predictions.png`` (or ``path``): the model's boxes and the ground truth on the
        first ``n_images`` of ``dataset``. Nothing when ``n_images`` is 0 or on non-main processes."""
        from ..plots import plot_detections

        if not n_images or not self.is_world_process_zero():
            return None
        path = path or os.path.join(self.args.output_dir, "predictions.png")
        subset = dataset.select(range(min(n_images, len(dataset))))
        batch = self._prepare_inputs((self.eval_data_collator or self.data_collator)([subset[i] for i in range(len(subset))]))
        model = self.model.eval()
        detections = self.postprocess(model(**batch), batch["labels"])
        truths = [{"boxes": row["objects"]["bbox"]} for row in subset]
        plot_detections([row["image"] for row in subset], [{k: v.cpu().numpy() for k, v in d.items()} for d in detections],
                        truths, class_names, path, score_threshold=score_threshold)
        print(f"drew predictions on {len(subset)} test images: {path}")
        return path

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
        preds = pack_detections(detections, [int(t["image_index"]) for t in labels])
        gt = pack_ground_truth(labels)
        device = self.args.device
        return loss, preds.to(device), gt.to(device)

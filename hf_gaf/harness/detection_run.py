"""The run both detection recipes share once they have a model: per-split canvas transforms, the
trainer, training with ``metrics.json``, and the drawn predictions."""

from __future__ import annotations

import os
import sys

from ..detection.data import VOCDataArguments, class_names, load_detection_splits, with_canvas_transform
from ..detection.trainer import detection_compute_metrics
from ..detection.transforms import DetectionTransform
from ..detection.voc import VOCFormatError
from .experiment import ExperimentArguments, ExperimentDetectionTrainer
from .run import run_training
from .sample_rng import SampleRNG


def load_splits_or_exit(data_args: VOCDataArguments):
    """``(class names, train split, eval split)`` from the data flags; a data error exits in one line."""
    try:
        names = class_names(data_args.classes)
        train_ds, eval_ds = load_detection_splits(
            data_args.voc_root, data_args.years, data_args.train_split, data_args.eval_split, names,
            data_args.max_train_samples, data_args.max_eval_samples, data_args.eval_years, data_args.skip_unknown_classes)
    except (VOCFormatError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    return names, train_ds, eval_ds


def train_detector(model, collator, postprocess, training_args: ExperimentArguments, data_args: VOCDataArguments,
                   names: list[str], train_ds, eval_ds, preset: str, extra: dict) -> dict:
    """Train ``model`` on the raw splits of :func:`load_splits_or_exit` (the training split augmented with
    a per-sample RNG, so a resumed run augments as the uninterrupted one), write ``metrics.json``, draw
    ``--draw_predictions`` evaluation images; returns the report."""
    size = data_args.image_size
    sample_rng = SampleRNG(training_args.seed)
    train_tf = DetectionTransform(size, train=True, mode=data_args.resize_mode, hflip=data_args.hflip,
                                  max_zoom_out=data_args.max_zoom_out, iou_crop=data_args.iou_crop, sample_rng=sample_rng)
    eval_tf = DetectionTransform(size, train=False, mode=data_args.resize_mode)
    trainer = ExperimentDetectionTrainer(
        model=model, args=training_args, train_dataset=with_canvas_transform(train_ds, train_tf),
        eval_dataset=with_canvas_transform(eval_ds, eval_tf), data_collator=collator,
        compute_metrics=detection_compute_metrics(names, compat=data_args.compat), postprocess=postprocess)
    report = run_training(trainer, preset, n_train_images=len(train_ds), sample_rng=sample_rng,
                          extra={**extra, "image_size": size})
    draw_predictions(trainer, eval_ds, eval_tf, collator, names, data_args.draw_predictions)
    return report


def draw_predictions(trainer, dataset, transform: DetectionTransform, collator, names: list[str], n_images: int = 8,
                     score_threshold: float = 0.3, path: str | None = None) -> str | None:
    """Write ``OUTPUT_DIR/predictions.png`` (or ``path``): the model's boxes and the ground truth on the first
    ``n_images`` of the raw ``dataset``. Nothing when ``n_images`` is 0 or on non-main processes."""
    from .plots import plot_detections

    if not n_images or not trainer.is_world_process_zero():
        return None
    path = path or os.path.join(trainer.args.output_dir, "predictions.png")
    subset = dataset.select(range(min(n_images, len(dataset))))
    rows = with_canvas_transform(subset, transform)
    detections = trainer.predict_batch(collator([rows[i] for i in range(len(rows))]))
    truths = [{"boxes": row["objects"]["bbox"]} for row in subset]
    plot_detections([row["image"] for row in subset], [{k: v.cpu().numpy() for k, v in d.items()} for d in detections],
                    truths, names, path, score_threshold=score_threshold)
    print(f"drew predictions on {len(subset)} test images: {path}")
    return path

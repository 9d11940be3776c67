"""The run both detection recipes share once they have a model: per-split canvas transforms, the trainer,
training with ``metrics.json``, the saved final and best models with their model cards, and the drawn
predictions."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, replace

from transformers import TrainerCallback

from ..detection.coco_json import coco_categories
from ..detection.data import (
    DetectionDataArguments,
    evaluation_data,
    evaluation_years,
    load_splits,
    parse_years,
    resolve_classes,
)
from ..detection.families import family
from ..detection.images import DetectionDataError
from ..detection.saved import DetectorInfo, save_detector
from ..detection.schema import detect, with_canvas_transform
from ..detection.trainer import DetectionTrainer, detection_compute_metrics
from ..detection.transforms import DetectionTransform
from ..metrics.detection import METRIC_KEYS, EvaluationArguments
from .experiment_args import ExperimentArguments, ExperimentTrainerMixin
from .sample_rng import SampleRNG
from .training import run_training

FINAL_MODEL, BEST_MODEL = "model", "best-model"


class ExperimentDetectionTrainer(ExperimentTrainerMixin, DetectionTrainer):
    """The detection recipes' trainer: the evaluation of :class:`~hf_gaf.detection.trainer.DetectionTrainer`
    and the experiment flags of :class:`~hf_gaf.harness.experiment_args.ExperimentArguments`."""


@dataclass
class DetectionOutputArguments:
    """What a detection run writes besides ``metrics.json``."""

    draw_predictions: int = field(
        default=8,
        metadata={
            "help": "After training, draw the boxes on this many evaluation images into OUTPUT_DIR/predictions.png "
            "(0: off)."
        },
    )
    save_models: bool = field(
        default=True,
        metadata={
            "help": "Save the final model to OUTPUT_DIR/model and the best one by --metric_for_best_model (default "
            "voc07_map) to OUTPUT_DIR/best-model, each with a model card (README.md)."
        },
    )


SAVED_AT = "saved_at.json"  # the metrics a saved model was saved with


def load_splits_or_exit(data_args: DetectionDataArguments):
    """``(class names, category ids or None, train split, eval split)`` from the data flags; a data error
    exits in one line."""
    try:
        names = resolve_classes(data_args)
        category_ids = None
        if data_args.data_format == "coco":
            by_name = {name: cat_id for cat_id, name in coco_categories(data_args.train_json)}
            absent = [n for n in names if n not in by_name]
            if absent:  # it would have no COCO id to write into detections.json
                raise ValueError(
                    f"--classes names {', '.join(absent)}, which {data_args.train_json} has no category "
                    f"for (its categories: {', '.join(by_name)}); list only those classes"
                )
            category_ids = [by_name[n] for n in names]
        train_ds, eval_ds = load_splits(data_args, names)
    except (DetectionDataError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    return names, category_ids, train_ds, eval_ds


def _metric_key(args) -> str:
    name = args.metric_for_best_model
    return name if name.startswith("eval_") else f"eval_{name}"


class BestModelCallback(TrainerCallback):
    """Saves the detector to ``OUTPUT_DIR/best-model`` whenever ``--metric_for_best_model`` improves; a
    resumed run starts from the value the saved best model records."""

    def __init__(self, save) -> None:
        self.save, self.best = save, None

    def on_train_begin(self, args, state, control, **kwargs):
        path = os.path.join(args.output_dir, BEST_MODEL, SAVED_AT)
        if state.global_step > 0 and os.path.isfile(path):  # resumed from a checkpoint
            with open(path) as f:
                self.best = json.load(f).get(_metric_key(args))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        key = _metric_key(args)
        if not metrics or key not in metrics or not state.is_world_process_zero:
            return
        value = metrics[key]
        if self.best is None or (value > self.best if args.greater_is_better else value < self.best):
            self.best = value
            self.save(BEST_MODEL, {key: value, "epoch": state.epoch, "step": state.global_step})


# At or below these, a detector has learned nothing measurable: an untrained tiny RT-DETR and Faster R-CNN
# score VOC07 mAP 0.000-0.01 on the synthetic sets (README, "Your own data")
CHANCE_LEVELS = {"voc07_map": 0.02, "voc12_map": 0.02, "coco_ap50": 0.02, "coco_map": 0.01}
ADVICE = {
    "detr": "A DETR from random init needs lr 1e-3 (--preset scratch-adamw or scratch-adamw-gaf) and tens of "
            "epochs; the adamw presets (lr 1e-4, backbone 1e-5) are for fine-tuning a checkpoint.",
    "detr-scratch": "A DETR from random init needs thousands of optimizer steps (steps = epochs x images / batch "
                    "size): raise --num_train_epochs, or lower --per_device_train_batch_size on a small data set.",
    "faster_rcnn": "Train longer (--num_train_epochs), and check --anchor_sizes against the objects' sizes on the "
                   "--image_size canvas.",
}


def chance_advice(family_name: str, preset: str) -> str:
    """What to change when a run of family ``family_name`` on ``preset`` stayed at chance: a run already on a
    from-scratch preset is told about its length, not to take the preset it has."""
    scratch_detr = family_name == "detr" and preset.startswith("scratch")
    return ADVICE.get("detr-scratch" if scratch_detr else family_name,
                      "Train longer (--num_train_epochs) or check the learning rate.")


def train_detector(
    model,
    collator,
    postprocess,
    training_args: ExperimentArguments,
    data_args: DetectionDataArguments,
    eval_args: EvaluationArguments,
    output_args: DetectionOutputArguments,
    splits,
    preset: str,
    info: DetectorInfo,
    extra: dict,
    processor=None,
) -> dict:
    """Train ``model`` on ``splits`` (from :func:`load_splits_or_exit`; the training split augmented with a
    per-sample RNG, so a resumed run augments as the uninterrupted one), write ``metrics.json``, save the
    final and best models (``--save_models``), draw ``--draw_predictions`` evaluation images; returns the report."""
    names, _, train_ds, eval_ds = splits
    size = data_args.image_size
    sample_rng = SampleRNG(training_args.seed)
    train_tf = DetectionTransform(
        size,
        train=True,
        mode=data_args.resize_mode,
        hflip=data_args.hflip,
        max_zoom_out=data_args.max_zoom_out,
        iou_crop=data_args.iou_crop,
        sample_rng=sample_rng,
        canvas_by_processor=info.canvas_by_processor,
    )
    eval_tf = info.eval_transform()
    trainer = ExperimentDetectionTrainer(
        model=model,
        args=training_args,
        train_dataset=with_canvas_transform(train_ds, train_tf),
        eval_dataset=with_canvas_transform(eval_ds, eval_tf),
        data_collator=collator,
        compute_metrics=detection_compute_metrics(names, compat=eval_args.compat),
        postprocess=postprocess,
    )

    recorded = replace(info, eval_data=evaluation_data(data_args))  # hf-gaf evaluate's default data

    def save(name: str, metrics: dict) -> None:
        folder = save_detector(os.path.join(training_args.output_dir, name), trainer.model, recorded, processor)
        write_model_card(folder, info, data_args, training_args, preset, metrics)
        with open(os.path.join(folder, SAVED_AT), "w") as f:
            json.dump(metrics, f, indent=2)

    if output_args.save_models:
        trainer.add_callback(BestModelCallback(save))
    metric_names = ["loss", *METRIC_KEYS, *(f"ap_{name}" for name in names)]
    report = run_training(
        trainer,
        preset,
        n_train_images=len(train_ds),
        sample_rng=sample_rng,
        extra={**extra, "image_size": size, "classes": names},
        metric_names=metric_names,
        chance_levels=CHANCE_LEVELS,
        advice=chance_advice(info.family, preset),
    )
    if output_args.save_models and trainer.is_world_process_zero():
        save(FINAL_MODEL, {**report.get("final", {}), "epoch": trainer.state.epoch, "step": trainer.state.global_step})
        print(
            f"saved the final model to {os.path.join(training_args.output_dir, FINAL_MODEL)} and the best "
            f"({training_args.metric_for_best_model}) to {os.path.join(training_args.output_dir, BEST_MODEL)}"
        )
    draw_predictions(trainer, eval_ds, eval_tf, collator, names, output_args.draw_predictions)
    return report


def write_model_card(
    folder: str, info: DetectorInfo, data_args: DetectionDataArguments, training_args, preset: str, metrics: dict
) -> str:
    """``README.md`` of a saved model: data, classes, preset and GAF settings, the metrics it was saved with."""
    data = (
        f"COCO JSON `{data_args.train_json}` (images `{data_args.train_images}`), evaluated on `{data_args.eval_json}`"
        if data_args.data_format == "coco"
        else f"VOC tree `{data_args.voc_root}`, years {'+'.join(parse_years(data_args.years))} "
        f"{data_args.train_split}, evaluated on "
        f"{'+'.join(evaluation_years(data_args))} {data_args.eval_split}"
    )
    gaf = training_args.gaf_config()
    rows = [
        f"| {k.removeprefix('eval_')} | {v:.4f} |"
        for k, v in metrics.items()
        if isinstance(v, float) and k.startswith("eval_") and not k.endswith(("runtime", "per_second"))
    ]
    lines = [
        "---",
        f"library_name: {family(info.family).library_name}",
        "pipeline_tag: object-detection",
        "tags: [hf_gaf, gradient-activation-function]",
        "---",
        "",
        f"# {info.family} trained with hf_gaf (preset `{preset}`)",
        "",
        f"- data: {data}",
        f"- classes ({len(info.class_names)}): {', '.join(info.class_names)}",
        f"- canvas: {info.image_size} px, {info.resize_mode}",
        f"- optimizer: `{getattr(training_args.optim, 'value', training_args.optim)}` "
        f"lr {training_args.learning_rate}, "
        f"weight decay {training_args.weight_decay}, "
        f"max_grad_norm {training_args.max_grad_norm}",
        f"- GAF: {json.dumps(gaf)}",
        f"- saved at: epoch {metrics['epoch']:g}, step {metrics['step']}",
        "",
        "| metric | value |",
        "|---|---:|",
        *rows,
        "",
        "Load: `hf-gaf predict --model THIS_FOLDER --images IMAGES --out OUT`, "
        "`hf-gaf evaluate --model THIS_FOLDER ...`"
        + (', or `pipeline("object-detection", model=THIS_FOLDER)`.' if family(info.family).pipeline else "."),
    ]
    path = os.path.join(folder, "README.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def draw_predictions(
    trainer,
    dataset,
    transform: DetectionTransform,
    collator,
    names: list[str],
    n_images: int = 8,
    score_threshold: float = 0.3,
    path: str | None = None,
) -> str | None:
    """Write ``OUTPUT_DIR/predictions.png`` (or ``path``): the model's boxes and the ground truth on the first
    ``n_images`` of the raw ``dataset``. Nothing when ``n_images`` is 0 or on non-main processes."""
    from .plots import plot_detections

    if not n_images or not trainer.is_world_process_zero():
        return None
    path = path or os.path.join(trainer.args.output_dir, "predictions.png")
    subset = dataset.select(range(min(n_images, len(dataset))))
    rows = with_canvas_transform(subset, transform)
    detections = detect(
        trainer.model, collator, trainer.postprocess, [rows[i] for i in range(len(rows))], trainer.args.device
    )
    truths = [{"boxes": row["objects"]["bbox"]} for row in subset]
    plot_detections(
        [row["image"] for row in subset],
        [{k: v.cpu().numpy() for k, v in d.items()} for d in detections],
        names,
        path,
        ground_truths=truths,
        score_threshold=score_threshold,
    )
    print(f"drew predictions on {len(subset)} test images: {path}")
    return path

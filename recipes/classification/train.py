"""Train a timm image classifier with or without GAF, the paper's classification comparison.

    python recipes/classification/train.py --dataset digits --model resnet10t --preset gaf \
        --num_train_epochs 5 --output_dir runs/digits/gaf
    accelerate launch recipes/classification/train.py --dataset cifar10 --model resnet18 --preset gaf ...

Presets (--preset; hf_gaf.harness.presets, flags override them): sgd, gaf (update placement, alpha 0.1,
beta 20), gaf-grad, clip-norm, clip-value, adamw, adamw-gaf. Writes metrics.json (per-epoch and final
accuracy/loss, wall time, images/s) into --output_dir; TensorBoard logs when it is installed.
Nothing is downloaded: --dataset is `digits` (bundled with scikit-learn), a local image folder, or a
Hugging Face data set already in the local cache; weights come only from --pretrained_path.
"""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # never download at run time: fail fast instead
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys
from dataclasses import dataclass, field

import evaluate
import torch
from timm.data import create_transform, resolve_data_config
from transformers import HfArgumentParser

from hf_gaf.harness.classification_data import DatasetNotAvailableError, load_classification_data
from hf_gaf.harness.experiment_args import ExperimentArguments, ExperimentTrainer
from hf_gaf.harness.presets import PresetArguments, parse_with_preset
from hf_gaf.harness.sample_rng import SampleRNG
from hf_gaf.harness.timm_classifier import TimmClassifier
from hf_gaf.harness.training import prepare_run, recipe_defaults, run_training
from hf_gaf.metrics import metric_path
from hf_gaf.sample_limits import SampleLimitArguments


@dataclass
class ModelArguments:
    model: str = field(
        default="resnet10t", metadata={"help": "Any timm model name (random init unless --pretrained_path)."}
    )
    pretrained_path: str | None = field(default=None, metadata={"help": "Local weights file (.safetensors/.pth)."})
    label_smoothing: float = field(default=0.0)
    cifar_stem: bool = field(
        default=False,
        metadata={
            "help": "ResNets: 3x3 stride-1 stem without max-pool, the CIFAR setting of the paper (32 px inputs)."
        },
    )


@dataclass
class DataArguments(SampleLimitArguments):
    dataset: str = field(
        default="digits",
        metadata={
            "help": "digits (built in), a local image folder, or a cached Hugging Face data set name (e.g. cifar10)."
        },
    )
    train_split: str = field(default="train")
    eval_split: str = field(default="test")
    image_column: str | None = field(default=None)
    label_column: str | None = field(default=None)
    image_size: int = field(default=32, metadata={"help": "Input size (the paper: 32 for CIFAR, 224 for ImageNet)."})
    hflip: float | None = field(
        default=None, metadata={"help": "Horizontal flip probability (default 0.5; 0 for digits)."}
    )
    crop_scale_min: float | None = field(
        default=None,
        metadata={"help": "Smallest RandomResizedCrop area fraction (default 0.08, timm's; 0.8 for digits)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.image_size < 8:
            raise ValueError(f"--image_size {self.image_size}: need at least 8 px")
        if self.hflip is not None and not 0 <= self.hflip <= 1:
            raise ValueError(f"--hflip {self.hflip}: a probability in [0, 1]")
        if self.crop_scale_min is not None and not 0 < self.crop_scale_min <= 1:
            raise ValueError(f"--crop_scale_min {self.crop_scale_min}: an area fraction in (0, 1]")


def chance_accuracy(n_classes: int, n_eval: int) -> float:
    """The accuracy a guess reaches on ``n_eval`` images of ``n_classes`` balanced classes, plus two standard
    errors of that binomial: at or below it a run learned nothing measurable.

    >>> round(chance_accuracy(2, 400), 3), round(chance_accuracy(10, 400), 3)
    (0.55, 0.13)
    """
    p = 1 / n_classes
    return p + 2 * (p * (1 - p) / n_eval) ** 0.5


def build_transforms(model: torch.nn.Module, data: DataArguments):
    """timm's train and eval transforms, from the model's data config at --image_size."""
    config = resolve_data_config({"input_size": (3, data.image_size, data.image_size), "crop_pct": 1.0}, model=model)
    digits = data.dataset == "digits"
    hflip = data.hflip if data.hflip is not None else (0.0 if digits else 0.5)
    scale_min = data.crop_scale_min if data.crop_scale_min is not None else (0.8 if digits else 0.08)
    train = create_transform(
        **config, is_training=True, hflip=hflip, scale=(scale_min, 1.0), color_jitter=0.0 if digits else 0.4
    )
    evaluation = create_transform(**config, is_training=False)
    return train, evaluation


def with_transform(ds, transform, sample_rng: SampleRNG | None = None):
    """Transform images on the fly; with ``sample_rng`` each image's augmentation is drawn from
    (seed, epoch, its row index), so a run resumed mid-epoch augments exactly as the uninterrupted one."""
    if sample_rng is not None:
        ds = ds.add_column("index", list(range(len(ds))))

    def apply(batch):
        images = []
        for i, img in enumerate(batch["image"]):
            with sample_rng.seeded(batch["index"][i]) if sample_rng is not None else contextlib.nullcontext():
                images.append(transform(img.convert("RGB")))
        return {"pixel_values": images, "labels": batch["label"]}

    ds.set_transform(apply)
    return ds


def collate(examples):
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([e["labels"] for e in examples]),
    }


def main(argv=None) -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, PresetArguments, ExperimentArguments))
    parser.set_defaults(**recipe_defaults(output_dir="runs/classification"))
    (model_args, data_args, run_args, training_args), preset = parse_with_preset(parser, "classification", argv)
    prepare_run(training_args, run_args.overwrite_output_dir)

    try:
        train_ds, eval_ds, class_names = load_classification_data(
            data_args.dataset,
            data_args.train_split,
            data_args.eval_split,
            data_args.image_column,
            data_args.label_column,
            data_args.image_size,
        )
    except DatasetNotAvailableError as err:
        sys.exit(f"error: {err}")
    if data_args.max_train_samples:
        train_ds = train_ds.select(range(min(data_args.max_train_samples, len(train_ds))))
    if data_args.max_eval_samples:
        eval_ds = eval_ds.select(range(min(data_args.max_eval_samples, len(eval_ds))))

    model = TimmClassifier(
        model_args.model,
        num_classes=len(class_names),
        pretrained_path=model_args.pretrained_path,
        label_smoothing=model_args.label_smoothing,
        cifar_stem=model_args.cifar_stem,
    )
    train_tf, eval_tf = build_transforms(model.model, data_args)
    sample_rng = SampleRNG(training_args.seed)
    train_ds, eval_ds = with_transform(train_ds, train_tf, sample_rng), with_transform(eval_ds, eval_tf)

    k = min(5, len(class_names))
    accuracy = evaluate.load(metric_path("accuracy_topk"))

    def top_k(logits, labels):
        return logits.topk(k, dim=-1).indices  # keep k indices per image, not all logits

    def compute_metrics(eval_pred):
        return accuracy.compute(predictions=eval_pred.predictions, references=eval_pred.label_ids, k=5 if k == 5 else 1)

    trainer = ExperimentTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collate,
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=top_k,
    )
    run_training(
        trainer,
        preset,
        n_train_images=len(train_ds),
        sample_rng=sample_rng,
        extra={"model": model_args.model, "dataset": data_args.dataset, "image_size": data_args.image_size},
        metric_names=["loss", "accuracy", *(["top5_accuracy"] if k == 5 else [])],
        chance_levels={"accuracy": chance_accuracy(len(class_names), len(eval_ds))},
        advice="Try more epochs or another learning rate (--learning_rate), or check the labels.",
    )


if __name__ == "__main__":
    main()

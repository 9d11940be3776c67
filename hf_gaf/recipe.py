"""Plumbing shared by the recipe scripts: common Trainer defaults and the train/evaluate/report run."""

from __future__ import annotations

import importlib.util
import json
import os

import torch

from .run_metrics import MetricsJsonCallback


def loader_defaults() -> dict:
    """Data-loader defaults: on a CUDA machine, worker processes (up to 8 per GPU, as many as the CPU
    cores allow), pinned memory and persistent workers, so decoding and augmentation keep the GPU fed;
    on CPU, 0 workers (the training itself needs the cores). Explicit flags win, as for every default."""
    if not torch.cuda.is_available():
        return dict(dataloader_num_workers=0)
    workers = max(2, min(8, (os.cpu_count() or 2) // max(1, torch.cuda.device_count())))
    return dict(dataloader_num_workers=workers, dataloader_pin_memory=True, dataloader_persistent_workers=True)


def recipe_defaults(**overrides) -> dict:
    """TrainingArguments defaults of every recipe: evaluate and log each epoch, no checkpoints unless
    asked, keep the raw columns (transforms run on the fly), TensorBoard when it is installed, the
    data-loader settings of :func:`loader_defaults`; ``overrides`` are the recipe's own."""
    return dict(
        eval_strategy="epoch", logging_strategy="epoch", save_strategy="no", remove_unused_columns=False,
        report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else "none",
        num_train_epochs=5, per_device_train_batch_size=64, per_device_eval_batch_size=128,
        lr_scheduler_type="cosine",
    ) | loader_defaults() | overrides


def prepare_run(args) -> None:
    """What every recipe does right after parsing its flags, before anything random is built:

    - seed Python, NumPy and torch from ``--seed`` (transformers' ``set_seed``; with
      ``--full_determinism``, ``enable_full_determinism``, which also asks for deterministic kernels),
      so the model weights, the transforms and the data order follow from the seed;
    - turn the CUDA default ``--dataloader_persistent_workers`` off when ``--dataloader_num_workers 0``
      was asked for (torch refuses persistent workers without workers).
    """
    from transformers import enable_full_determinism, set_seed

    if args.full_determinism:
        enable_full_determinism(args.seed)
    else:
        set_seed(args.seed)
    if args.dataloader_num_workers == 0:
        args.dataloader_persistent_workers = False


def run_training(trainer, recipe: str, n_train_images: int, extra: dict | None = None) -> dict:
    """Train (evaluating each epoch), write ``metrics.json`` and return it."""
    trainer.add_callback(MetricsJsonCallback(recipe, n_train_images, extra))
    trainer.train()
    path = os.path.join(trainer.args.output_dir, "metrics.json")
    if not trainer.is_world_process_zero():
        return {}
    with open(path) as f:
        report = json.load(f)
    final = ", ".join(f"{k}={v:.4f}" for k, v in report["final"].items()
                      if isinstance(v, float) and not k.endswith(("runtime", "_per_second")))
    print(f"[{recipe}] {final} | {report['train_images_per_s']:.0f} images/s | wrote {path}")
    return report

"""Plumbing shared by the recipe scripts: common Trainer defaults and the train/evaluate/report run."""

from __future__ import annotations

import importlib.util
import json
import os

from .run_metrics import MetricsJsonCallback

def recipe_defaults(**overrides) -> dict:
    """TrainingArguments defaults of every recipe: evaluate and log each epoch, no checkpoints unless
    asked, keep the raw columns (transforms run on the fly), TensorBoard when it is installed;
    ``overrides`` are the recipe's own."""
    return dict(
        eval_strategy="epoch", logging_strategy="epoch", save_strategy="no", remove_unused_columns=False,
        report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else "none",
        dataloader_num_workers=0, num_train_epochs=5, per_device_train_batch_size=64, per_device_eval_batch_size=128,
        lr_scheduler_type="cosine",
    ) | overrides


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

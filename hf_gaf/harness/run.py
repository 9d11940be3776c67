"""Running one recipe: common Trainer defaults, the checks before anything is built, and the
train/evaluate/report run that writes ``metrics.json``."""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from .run_metrics import MetricsJsonCallback
from .sample_rng import SampleRNG


def loader_defaults() -> dict:
    """Data-loader defaults: on a CUDA machine, worker processes (up to 8 per GPU, as many as the CPU
    cores allow), pinned memory and persistent workers, so decoding and augmentation keep the GPU fed;
    on CPU, 0 workers (the training itself needs the cores). Explicit flags win, as for every default."""
    if not torch.cuda.is_available():
        return dict(dataloader_num_workers=0, dataloader_pin_memory=False)  # pinning needs an accelerator
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


def check_output_dir(args, overwrite: bool = False) -> None:
    """Fail before training, not after it: ``--output_dir`` must be writable, and must not hold a
    finished run's ``metrics.json`` unless ``overwrite`` or ``--resume_from_checkpoint`` (which
    continues a run in its own folder)."""
    out = args.output_dir
    if os.path.isfile(os.path.join(out, "metrics.json")) and not (overwrite or args.resume_from_checkpoint):
        raise SystemExit(f"error: --output_dir {out} already holds a finished run (metrics.json); choose another "
                         "folder or pass --overwrite_output_dir true")
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise SystemExit(f"error: --output_dir {out} is not writable ({err.strerror}); results could not be saved") from None


def prepare_run(args, overwrite_output_dir: bool = False) -> None:
    """What every recipe does right after parsing its flags, before anything is built:

    - :func:`check_output_dir`;
    - seed Python, NumPy and torch from ``--seed`` (transformers' ``set_seed``; with
      ``--full_determinism``, ``enable_full_determinism``, which also asks for deterministic kernels),
      so the model weights, the transforms and the data order follow from the seed;
    - turn the CUDA default ``--dataloader_persistent_workers`` off when ``--dataloader_num_workers 0``
      was asked for (torch refuses persistent workers without workers).
    """
    from transformers import enable_full_determinism, set_seed

    check_output_dir(args, overwrite_output_dir)
    if args.full_determinism:
        enable_full_determinism(args.seed)
    else:
        set_seed(args.seed)
    if args.dataloader_num_workers == 0:
        args.dataloader_persistent_workers = False


def resolve_checkpoint(args) -> str | None:
    """``--resume_from_checkpoint``: a checkpoint folder, or ``last`` / ``true`` for the newest
    ``checkpoint-*`` in ``--output_dir``; a missing folder is an error before training."""
    wanted = args.resume_from_checkpoint
    if not wanted:
        return None
    if str(wanted).lower() in ("last", "true"):
        found = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        if found is None:
            raise SystemExit(f"error: --resume_from_checkpoint {wanted}: no checkpoint-* folder in {args.output_dir}")
        return found
    if not os.path.isdir(wanted):
        raise SystemExit(f"error: --resume_from_checkpoint {wanted} is not a folder")
    return wanted


class SampleRNGEpochCallback(TrainerCallback):
    """Tells a :class:`~hf_gaf.harness.sample_rng.SampleRNG` the epoch that begins (the floor of the Trainer's
    epoch, so a run resumed mid-epoch continues that epoch's augmentations)."""

    def __init__(self, sample_rng: SampleRNG) -> None:
        self.sample_rng = sample_rng

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sample_rng.set_epoch(int(state.epoch or 0))


def run_training(trainer, preset: str, n_train_images: int, extra: dict | None = None,
                 sample_rng: SampleRNG | None = None) -> dict:
    """Train (evaluating each epoch; from ``--resume_from_checkpoint`` when given, which transformers'
    Trainer does not read by itself), write ``metrics.json`` and return it. ``sample_rng`` (the one
    the training transforms use) is told each epoch."""
    checkpoint = resolve_checkpoint(trainer.args)
    if sample_rng is not None:
        trainer.add_callback(SampleRNGEpochCallback(sample_rng))
    trainer.add_callback(MetricsJsonCallback(preset, n_train_images, extra, resume_from=checkpoint))
    trainer.train(resume_from_checkpoint=checkpoint)
    path = os.path.join(trainer.args.output_dir, "metrics.json")
    if not trainer.is_world_process_zero():
        return {}
    with open(path) as f:
        report = json.load(f)
    final = ", ".join(f"{k}={v:.4f}" for k, v in report["final"].items()
                      if isinstance(v, float) and not k.endswith(("runtime", "_per_second")))
    print(f"[{preset}] {final} | {report['train_images_per_s']:.0f} images/s | wrote {path}")
    if report.get("gaf_stats"):
        from .plots import plot_gaf_stats

        png = os.path.join(trainer.args.output_dir, "gaf_stats.png")
        plot_gaf_stats({preset: [report["gaf_stats"]]}, png, title=f"GAF telemetry of this run ({preset})")
        print(f"[{preset}] GAF telemetry: {png}")
    return report

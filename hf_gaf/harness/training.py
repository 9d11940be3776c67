"""Running one recipe: common Trainer defaults, the checks before anything is built, and the
train/evaluate/report run that writes ``metrics.json``."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import sys
import warnings

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .._outputs import check_writable
from .metrics_json import PARTIAL_NAME, MetricsJsonCallback, chance_check, resume_settings
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
    finished run's ``metrics.json`` unless ``overwrite``.

    A finished run re-queued with ``--resume_from_checkpoint`` (what a job script on a preemptible
    cluster passes every time) is left as it is: one line says so and the process exits 0, since its
    checkpoints may predate the final evaluation and resuming from them would replace the record."""
    out = args.output_dir
    if os.path.isfile(os.path.join(out, "metrics.json")) and not overwrite:
        if args.resume_from_checkpoint:
            print(f"--output_dir {out} holds a finished run (metrics.json): nothing to resume, its results are left "
                  "as they are (pass --overwrite_output_dir true to train it again)")
            raise SystemExit(0)
        raise SystemExit(f"error: --output_dir {out} already holds a finished run (metrics.json); choose another "
                         "folder or pass --overwrite_output_dir true")
    check_writable(out, f"--output_dir {out}")


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


COMPLETE_MARKER = "trainer_state.json"  # the Trainer writes it last: a checkpoint without it was cut short


def resolve_checkpoint(args) -> str | None:
    """``--resume_from_checkpoint``: a checkpoint folder, or ``last`` / ``true`` for the newest complete
    ``checkpoint-*`` in ``--output_dir`` (one cut short by a crash during saving, without
    ``trainer_state.json``, is passed over with a warning naming it); a missing or incomplete folder is an
    error before training."""
    wanted = args.resume_from_checkpoint
    if not wanted:
        return None
    if str(wanted).lower() in ("last", "true"):
        found = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        while found is not None and not os.path.isfile(os.path.join(found, COMPLETE_MARKER)):
            warnings.warn(
                f"{found} has no {COMPLETE_MARKER} (a save that was cut short): resuming from an earlier "
                "checkpoint; delete that folder",
                stacklevel=2,
            )
            complete = [
                c
                for c in glob.glob(os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-*"))
                if os.path.isfile(os.path.join(c, COMPLETE_MARKER)) and _step(c) < _step(found)
            ]
            found = max(complete, key=_step) if complete else None
        if found is None:
            raise SystemExit(
                f"error: --resume_from_checkpoint {wanted}: no checkpoint-* folder in {args.output_dir} "
                "(none that is complete)"
            )
        return found
    if not os.path.isdir(wanted):
        raise SystemExit(f"error: --resume_from_checkpoint {wanted} is not a folder")
    if not os.path.isfile(os.path.join(wanted, COMPLETE_MARKER)):
        raise SystemExit(
            f"error: --resume_from_checkpoint {wanted} has no {COMPLETE_MARKER}: the save was cut short; "
            "resume from an earlier checkpoint and delete this one"
        )
    return wanted


def _step(folder: str) -> int:
    tail = os.path.basename(folder.rstrip(os.sep)).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def check_resumable(checkpoint: str, settings: dict) -> None:
    """Stop before training, in one line naming the flag, when this run's data order or schedule
    (:func:`~hf_gaf.harness.metrics_json.resume_settings`) differs from the checkpoint's: the Trainer would
    otherwise skip a wrong number of batches and could report an unfinished run as finished."""
    path = os.path.join(checkpoint, PARTIAL_NAME)
    if not os.path.isfile(path):
        return  # not written by a recipe: nothing recorded to compare
    with open(path) as f:
        saved = json.load(f).get("resume_settings") or {}
    changed = [k for k in settings if k in saved and saved[k] != settings[k]]
    if changed:
        label = {"world_size": "processes (world size)", "max_train_samples": "training images (--max_train_samples)"}
        differences = "; ".join(f"{label.get(k, '--' + k)} {settings[k]} (checkpoint: {saved[k]})" for k in changed)
        raise SystemExit(
            f"error: --resume_from_checkpoint {checkpoint}: {differences}. The data order and the "
            "schedule cannot continue with other values: resume with the checkpoint's, or start a new "
            "run in another --output_dir"
        )


class SampleRNGEpochCallback(TrainerCallback):
    """Tells a :class:`~hf_gaf.harness.sample_rng.SampleRNG` the epoch that begins (the floor of the Trainer's
    epoch, so a run resumed mid-epoch continues that epoch's augmentations)."""

    def __init__(self, sample_rng: SampleRNG) -> None:
        self.sample_rng = sample_rng

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sample_rng.set_epoch(int(state.epoch or 0))


def check_metric_for_best_model(args, metric_names: list[str]) -> None:
    """``--metric_for_best_model`` must be one of the metrics the evaluation reports (``eval_`` prefix
    optional): checked before training, not after the first evaluation."""
    name = args.metric_for_best_model
    if name and name.removeprefix("eval_") not in metric_names:
        raise SystemExit(
            f"error: --metric_for_best_model {name} is not a metric of this recipe; choose one of "
            f"{', '.join(metric_names)}"
        )


def warn_at_chance_level(final: dict, metric: str | None, chance_levels: dict[str, float], advice: str) -> bool:
    """Print a warning (stderr) when the final ``metric`` is at or below its chance level (:func:`chance_check`);
    True then."""
    chance = chance_check(final, metric, chance_levels)
    if chance is None or not chance["at_chance"]:
        return False
    print(f"warning: {chance['metric']} = {final[chance['metric']]:.4f} stayed at chance level "
          f"(<= {chance['level']:g}): this run learned nothing measurable. {advice}".rstrip(), file=sys.stderr)
    return True


def run_training(
    trainer,
    preset: str,
    n_train_images: int,
    extra: dict | None = None,
    sample_rng: SampleRNG | None = None,
    metric_names: list[str] | None = None,
    chance_levels: dict[str, float] | None = None,
    advice: str = "",
) -> dict:
    """Train (evaluating each epoch; from ``--resume_from_checkpoint`` when given, which transformers'
    Trainer does not read by itself), write ``metrics.json`` and return it. ``sample_rng`` (the one
    the training transforms use) is told each epoch; ``metric_names`` (what evaluation reports, without
    ``eval_``) are checked against ``--metric_for_best_model`` first. ``chance_levels``: metric name (without
    ``eval_``) -> the value at or below which the run learned nothing measurable; when the final value of
    ``--metric_for_best_model`` is there, the run ends with a warning that says so, and ``advice``."""
    if metric_names is not None:
        check_metric_for_best_model(trainer.args, metric_names)
    checkpoint = resolve_checkpoint(trainer.args)
    settings = resume_settings(trainer.args, n_train_images)
    if checkpoint is not None:
        check_resumable(checkpoint, settings)
    if sample_rng is not None:
        trainer.add_callback(SampleRNGEpochCallback(sample_rng))
    deepspeed = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    extra = {**(extra or {}), "zero_stage": None if deepspeed is None else deepspeed.zero_stage}  # None: no DeepSpeed
    trainer.add_callback(
        MetricsJsonCallback(preset, n_train_images, extra, resume_from=checkpoint, resume_settings=settings,
                            chance_levels=chance_levels)
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    path = os.path.join(trainer.args.output_dir, "metrics.json")
    if not trainer.is_world_process_zero():
        return {}
    with open(path) as f:
        report = json.load(f)
    final = ", ".join(
        f"{k}={v:.4f}"
        for k, v in report["final"].items()
        if isinstance(v, float) and not k.endswith(("runtime", "_per_second"))
    )
    print(f"[{preset}] {final} | {report['train_images_per_s']:.3g} images/s | wrote {path}")
    warn_at_chance_level(report["final"], trainer.args.metric_for_best_model, chance_levels or {}, advice)
    if report.get("gaf_stats"):
        from .plots import plot_gaf_stats, plot_gaf_stats_by_part, telemetry_parts

        png = os.path.join(trainer.args.output_dir, "gaf_stats.png")
        plot_gaf_stats({preset: [report["gaf_stats"]]}, png, title=f"GAF telemetry of this run ({preset})")
        print(f"[{preset}] GAF telemetry: {png}")
        if telemetry_parts(report["gaf_stats"]):  # a detector: the same per model part
            png = os.path.join(trainer.args.output_dir, "gaf_stats_by_part.png")
            plot_gaf_stats_by_part(report["gaf_stats"], png, title=f"GAF telemetry per model part ({preset})")
            print(f"[{preset}] GAF telemetry per model part: {png}")
    return report

"""``MetricsJsonCallback``: the ``metrics.json`` every recipe writes into its output folder.

Layout::

    {"preset": ..., "seed": ..., "initial_weights_sha256": ..., "settings": {...optimizer and GAF settings...},
     "epochs": [{"epoch": 1, "train_loss": ..., "epoch_time_s": ..., "train_images_per_s": ...,
                 "eval_<metric>": ...}, ...],
     "final": {"eval_<metric>": ... of the last evaluation},
     "wall_time_s": ..., "train_images_per_s": median over epochs after the first}

``initial_weights_sha256`` fingerprints the model as training starts (every state-dict tensor's bytes,
in order): runs with the same ``--seed`` start from the same weights, which paired-seed comparisons
between presets rely on.

Throughput counts training images over the epoch's training time only (evaluation excluded), on all
processes together. The run's ``train_images_per_s`` is the steady state: the median over epochs
after the first, which also pays start-up costs (``torch.compile`` of GAFSGD's fused step, data-loader
warm-up); with a single epoch it is that epoch's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .runner import PROGRESS

SETTING_KEYS = ("optim", "optim_args", "learning_rate", "weight_decay", "max_grad_norm", "gaf",
                "gaf_alpha", "gaf_beta", "gaf_placement", "num_train_epochs", "per_device_train_batch_size",
                "gradient_accumulation_steps", "lr_scheduler_type", "lr_milestones", "seed", "grad_treatment",
                "grad_treatment_args", "grad_spike_steps", "grad_spike_scale")


def recorded_settings(args) -> dict:
    """The run's :data:`SETTING_KEYS` as they ran, plus the number of processes: with ``lr_milestones`` the
    schedule is the multi-step one (:mod:`~hf_gaf.harness.experiment_args`), whatever ``lr_scheduler_type``
    says."""
    settings = {k: getattr(args, k, None) for k in SETTING_KEYS}
    if settings.get("lr_milestones"):
        settings["lr_scheduler_type"] = "multistep"
    settings["world_size"] = getattr(args, "world_size", None)
    return settings


def chance_check(final: dict, metric: str | None, chance_levels: dict[str, float]) -> dict | None:
    """Whether the final ``metric`` (with or without ``eval_``) stayed at or below its level in
    ``chance_levels`` (a run that learned nothing measurable; a non-finite value counts as at chance):
    ``{"metric", "level", "at_chance"}``, or ``None`` for a metric without a chance level."""
    name = (metric or "").removeprefix("eval_")
    if name not in chance_levels:
        return None
    value = final.get(f"eval_{name}")
    return {"metric": f"eval_{name}", "level": chance_levels[name],
            "at_chance": isinstance(value, (int, float)) and not value > chance_levels[name]}


def progress_line(state, metric: str | None, values: dict, elapsed_s: float) -> str:
    """One line after an evaluation: step and epoch of the total, the latest main metric, elapsed time and ETA."""
    name = f"eval_{(metric or 'loss').removeprefix('eval_')}"
    shown = f" {name.removeprefix('eval_')} {values[name]:.4f}" if isinstance(values.get(name), (int, float)) else ""
    done = state.global_step / state.max_steps if state.max_steps else 0.0
    eta = f", ETA {elapsed_s / done * (1 - done) / 60:.1f} min" if done > 0 else ""
    return (f"{PROGRESS} step {state.global_step}/{state.max_steps}, epoch {state.epoch or 0:.1f}/"
            f"{state.num_train_epochs}{shown}, {elapsed_s / 60:.1f} min{eta}")


def weights_sha256(model) -> str:
    """SHA-256 over the bytes of every tensor of ``model.state_dict()``, in order (any dtype or device)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()


PARTIAL_NAME = "hf_gaf_metrics.json"  # the epochs so far, inside each checkpoint folder

RESUME_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps", "world_size", "num_train_epochs",
               "max_steps", "seed")


def resume_settings(args, n_train_images: int) -> dict:
    """What fixes a run's data order and schedule (:data:`RESUME_KEYS` and the number of training images,
    ``max_train_samples``): a resumed run must have the same."""
    return {k: getattr(args, k, None) for k in RESUME_KEYS} | {"max_train_samples": n_train_images}


class MetricsJsonCallback(TrainerCallback):
    """Collects per-epoch records and writes ``metrics.json`` at the end of training. Each checkpoint
    also holds the records so far (:data:`PARTIAL_NAME`), so a run resumed from ``resume_from``
    continues the same epoch list; an epoch that was only partly trained in this process (a mid-epoch
    resume) gets ``"partial": <fraction>``; its images/s counts only the images it trained, and its
    ``train_loss`` is the mean over the steps trained after the restart. With ``chance_levels`` the report
    records whether the final main metric stayed at chance level (:func:`chance_check`)."""

    def __init__(self, preset: str, n_train_images: int, extra: dict | None = None,
                 resume_from: str | None = None, resume_settings: dict | None = None,
                 chance_levels: dict[str, float] | None = None) -> None:
        self.preset = preset
        self.chance_levels = chance_levels or {}
        self.resume_settings = resume_settings
        self.n_train_images = n_train_images
        self.extra = extra or {}
        self.epochs: list[dict] = []
        self.last_eval: dict = {}
        self._in_epoch: dict | None = None
        self.initial_weights = None
        if resume_from and os.path.isfile(os.path.join(resume_from, PARTIAL_NAME)):
            with open(os.path.join(resume_from, PARTIAL_NAME)) as f:
                saved = json.load(f)
            self.epochs, self.last_eval = saved["epochs"], saved["last_eval"]
            self.initial_weights = saved["initial_weights_sha256"]

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._start = time.perf_counter()
        if self.initial_weights is None and model is not None and state.is_world_process_zero:
            self.initial_weights = weights_sha256(model)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch_start = time.perf_counter()
        self._epoch_progress = state.epoch or 0.0  # > its floor when a run resumes mid-epoch
        self._in_epoch = {}

    def on_epoch_end(self, args, state, control, **kwargs):
        seconds = time.perf_counter() - self._epoch_start
        fraction = max(min(state.epoch - self._epoch_progress, 1.0), 0.0) if state.epoch else 1.0
        record = {"epoch": max(int(math.ceil(state.epoch or 0)), 1), "epoch_time_s": seconds,
                  "train_images_per_s": self.n_train_images * fraction / seconds if seconds > 0 else float("nan")}
        if fraction < 1.0 - 1e-9:
            record["partial"] = fraction
        self.epochs.append(record | self._in_epoch)
        self._in_epoch = None

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(folder):
            with open(os.path.join(folder, PARTIAL_NAME), "w") as f:
                json.dump({"epochs": self.epochs, "last_eval": self.last_eval, "resume_settings": self.resume_settings,
                           "initial_weights_sha256": self.initial_weights}, f, default=str)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        values = {k: v for k, v in (metrics or {}).items() if k != "epoch" and isinstance(v, (int, float))}
        self.last_eval = values
        if state.is_world_process_zero:
            print(progress_line(state, args.metric_for_best_model, values, time.perf_counter() - self._start),
                  flush=True)
        if self._in_epoch is not None:  # evaluated mid-epoch (eval_strategy="steps")
            self._in_epoch.update(values)
        elif self.epochs:
            self.epochs[-1].update(values)

    def on_train_end(self, args, state, control, **kwargs):
        losses = {}
        for entry in state.log_history:  # the loss logged during each epoch, averaged
            if "loss" in entry and "epoch" in entry:
                losses.setdefault(max(int(-(-entry["epoch"] // 1)), 1), []).append(entry["loss"])
        for record in self.epochs:
            if record["epoch"] in losses:
                record["train_loss"] = statistics.fmean(losses[record["epoch"]])
        if not state.is_world_process_zero:
            return
        whole = [e for e in self.epochs if "partial" not in e]
        speeds = [e["train_images_per_s"] for e in whole[1:] or whole or self.epochs]
        report = {
            "preset": self.preset, "seed": args.seed, "initial_weights_sha256": self.initial_weights,
            "settings": recorded_settings(args) | self.extra,
            "epochs": self.epochs,
            "final": {k: v for k, v in self.last_eval.items() if k.startswith("eval_")},
            "wall_time_s": time.perf_counter() - self._start,
            "train_images_per_s": statistics.median(speeds) if speeds else float("nan"),
            "global_step": state.global_step,
        }
        telemetry = [{"step": e["step"], **{k: v for k, v in e.items() if k.startswith("gaf/")}}
                     for e in state.log_history if "gaf/amplified" in e]
        if telemetry:  # --gaf_log_stats: what GAF did on each logging step (hf_gaf.trainer.stats)
            report["gaf_stats"] = telemetry
        chance = chance_check(report["final"], args.metric_for_best_model, self.chance_levels)
        if chance is not None:  # read by the comparisons (hf_gaf.harness.compare)
            report["chance"] = chance
        os.makedirs(args.output_dir, exist_ok=True)
        path = os.path.join(args.output_dir, "metrics.json")
        with open(path + ".tmp", "w") as f:  # whole or not at all: a crash mid-write leaves no half record
            json.dump(report, f, indent=2, default=str)
        os.replace(path + ".tmp", path)

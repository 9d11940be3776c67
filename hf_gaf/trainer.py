"""``GAFTrainingArguments`` and ``GAFTrainer``: GAF in ``transformers.Trainer`` with one flag.

Where GAF runs: inside ``optimizer.step()`` of the innermost torch optimizer, so it sees gradients
that are accumulated over micro-batches, averaged across ranks and unscaled, once per real step:

- ``--optim sgd``: the Trainer builds :class:`~hf_gaf.GAFSGD` (placement ``grad`` or ``update``);
  momentum, dampening and nesterov come from ``--optim_args "momentum=0.9,nesterov=true"``.
- any other ``--optim`` (AdamW, Adafactor, ...): the Trainer's optimizer with :func:`~hf_gaf.attach_gaf`
  (placement ``grad``); ``update`` needs SGD and is refused before training starts.
- an optimizer built elsewhere (a DeepSpeed config with its own "optimizer" section, or one passed
  in ``optimizers=``): a callback attaches the hook at ``on_train_begin``.

Example (``python train.py --gaf atan --gaf_alpha 0.1 --gaf_beta 20 --optim sgd ...``):
    >>> from transformers import HfArgumentParser
    >>> from hf_gaf import GAFTrainingArguments
    >>> (args,) = HfArgumentParser(GAFTrainingArguments).parse_args_into_dataclasses(
    ...     ["--output_dir", "/tmp/out", "--gaf", "atan", "--optim", "sgd", "--report_to", "none"])
    >>> args.gaf, args.gaf_placement, args.max_grad_norm
    ('atan', 'update', 0.0)
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass, field

from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .functional import GAF_KINDS, validate_gaf
from .gaf_sgd import GAFSGD, check_placement
from .hook import attach_gaf, attached_gaf, unwrap_optimizer

logger = logging.getLogger(__name__)

GAF_CONFIG_NAME = "gaf_config.json"
GAF_CHOICES = ("none", *GAF_KINDS)


@dataclass
class GAFTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the GAF settings (see the module docstring for where GAF runs)."""

    gaf: str = field(default="none", metadata={"help": "Gradient activation: none, atan, tanh or log.",
                                               "choices": list(GAF_CHOICES)})
    gaf_alpha: float = field(default=0.1, metadata={"help": "GAF scale alpha (bound alpha*pi/2 for atan)."})
    gaf_beta: float = field(default=20.0, metadata={"help": "GAF slope beta (gain alpha*beta near zero)."})
    gaf_placement: str = field(default="update", metadata={
        "help": "update: f on the SGD momentum update (needs --optim sgd); grad: f on the gradient (any optimizer).",
        "choices": ["update", "grad"]})
    gaf_exclude: list[str] = field(default_factory=list, metadata={
        "help": "Regular expressions; parameters whose name matches one are left untransformed (e.g. bias norm head)."})
    gaf_log_stats: bool = field(default=False, metadata={
        "help": "On logging steps, log gradient norm before/after GAF and the fractions amplified/compressed/saturated."})
    clip_value: float = field(default=0.0, metadata={
        "help": "Clip every gradient coordinate to [-v, v] before the optimizer step (the paper's clip-by-value "
                "baseline), at the same place GAF runs; 0 disables."})
    lr_milestones: list[float] = field(default_factory=list, metadata={
        "help": "Multi-step schedule: fractions of training (e.g. 0.5 0.75) where the lr is multiplied by "
                "--lr_gamma (after --warmup_steps); overrides --lr_scheduler_type."})
    lr_gamma: float = field(default=0.1, metadata={"help": "Factor of the multi-step schedule."})
    backbone_lr: float | None = field(default=None, metadata={
        "help": "Learning rate of the parameters whose name matches --backbone_pattern (DETR's recipe: 1e-5)."})
    backbone_pattern: str = field(default=r"backbone", metadata={"help": "Regular expression for --backbone_lr."})
    max_grad_norm: float | None = field(default=None, metadata={
        "help": "Gradient clipping norm (0 disables). Default: 1.0, or 0 when GAF or --clip_value is on (clipping "
                "before GAF shrinks every coordinate into GAF's linear zone)."})

    def __post_init__(self):
        if self.gaf not in GAF_CHOICES:
            raise ValueError(f"--gaf {self.gaf!r} is not one of {', '.join(GAF_CHOICES)}")
        check_placement(self.gaf_placement)
        if self.gaf_on:
            validate_gaf(self.gaf, self.gaf_alpha, self.gaf_beta)
            if self.gaf_placement == "update" and str(self.optim).split(".")[-1].lower() != "sgd":
                raise ValueError(
                    f"--gaf_placement update applies f to the SGD momentum update and needs --optim sgd "
                    f"(got --optim {self.optim}); use --gaf_placement grad with other optimizers")
            for pattern in self.gaf_exclude:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ValueError(f"--gaf_exclude {pattern!r} is not a valid regular expression: {err}") from None
        if self.clip_value < 0 or (self.clip_value > 0 and self.gaf_on):
            raise ValueError(f"--clip_value {self.clip_value}: must be >= 0, and cannot be combined with --gaf "
                             f"{self.gaf} (both transform each gradient coordinate at the same place)")
        if any(not 0 < m < 1 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"--lr_milestones {self.lr_milestones}: need increasing fractions of training in (0, 1)")
        if self.max_grad_norm is None:
            self.max_grad_norm = 0.0 if self.gaf_on or self.clip_value > 0 else 1.0
        elif self.gaf_on and self.max_grad_norm > 0:
            logger.warning(
                "GAF (%s) and --max_grad_norm %s are both on: gradients are clipped to norm %s FIRST, which shrinks "
                "every coordinate towards GAF's linear zone, so GAF mostly rescales by alpha*beta=%g. "
                "Set --max_grad_norm 0 to run GAF as in the paper.",
                self.gaf, self.max_grad_norm, self.max_grad_norm, self.gaf_alpha * self.gaf_beta)
        super().__post_init__()

    @property
    def gaf_on(self) -> bool:
        return self.gaf != "none"

    def gaf_config(self) -> dict:
        """The GAF settings as written into each checkpoint."""
        return dict(gaf=self.gaf, gaf_alpha=self.gaf_alpha, gaf_beta=self.gaf_beta,
                    gaf_placement=self.gaf_placement, gaf_exclude=list(self.gaf_exclude), clip_value=self.clip_value)


def is_excluded(name: str, patterns: list[str]) -> bool:
    """True when parameter ``name`` matches one of the ``--gaf_exclude`` regular expressions."""
    return any(re.search(p, name) for p in patterns)


def regroup(param_groups: list[dict], overrides_of) -> list[dict]:
    """Split each group by ``overrides_of(param) -> dict`` (settings that param needs on top of its
    group's); parameters with equal overrides stay together, in their original order."""
    groups = []
    for group in param_groups:
        settings = {k: v for k, v in group.items() if k != "params"}
        buckets: dict[tuple, list] = {}
        for p in group["params"]:
            buckets.setdefault(tuple(sorted(overrides_of(p).items())), []).append(p)
        groups += [{**settings, **dict(key), "params": params} for key, params in buckets.items()]
    return groups


class ClipByValue:
    """Elementwise clip to [-v, v]; a GAF ``kind`` callable, so it runs where GAF would."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, x):
        return x.clamp(-self.value, self.value)

    def __repr__(self) -> str:
        return f"ClipByValue({self.value})"


def multistep_with_warmup(optimizer, num_training_steps: int, warmup_steps: int, milestones: list[float], gamma: float):
    """Linear warmup over ``warmup_steps``, then the lr times ``gamma`` at each milestone fraction."""
    from torch.optim.lr_scheduler import LambdaLR

    steps = [int(m * num_training_steps) for m in milestones]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return gamma ** sum(step >= s for s in steps)

    return LambdaLR(optimizer, factor)


class GAFAttachCallback(TrainerCallback):
    """Fallback for optimizers the Trainer did not build through ``create_optimizer`` (a DeepSpeed
    config with its own optimizer, ``optimizers=`` passed in): attach GAF at ``on_train_begin``."""

    def __init__(self, trainer: GAFTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None:
            self.trainer._ensure_gaf(optimizer)


class GAFTrainer(Trainer):
    """``transformers.Trainer`` that applies GAF from :class:`GAFTrainingArguments`.

    The GAF settings are written to ``gaf_config.json`` in every checkpoint; resuming with other
    settings warns loudly, and the current run's settings are used.
    """

    args: GAFTrainingArguments

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, GAFTrainingArguments):
            raise TypeError(f"GAFTrainer needs GAFTrainingArguments, got {type(self.args).__name__}")
        if self.args.gaf_on:
            self.add_callback(GAFAttachCallback(self))
        self.gaf_stats = None
        if self.args.gaf_log_stats and self.args.gaf_on:
            from .stats import GAFStatsCallback

            self.gaf_stats = GAFStatsCallback()
            self.add_callback(self.gaf_stats)

    # --- where the optimizer is built -------------------------------------------------------------
    def _gaf_param_ids(self, model) -> set[int]:
        """ids of the parameters GAF transforms: trainable ones not matched by ``--gaf_exclude``."""
        model = model if model is not None else self.model
        return {id(p) for n, p in model.named_parameters()
                if p.requires_grad and not is_excluded(n, self.args.gaf_exclude)}

    def create_optimizer(self, model=None):
        """The Trainer's optimizer (GAFSGD for ``--optim sgd`` with GAF), regrouped for ``--gaf_exclude``
        and ``--backbone_lr``, then GAF or clip-by-value hooks where the optimizer is not GAFSGD."""
        args = self.args
        if self.optimizer is not None:
            return self.optimizer
        model = model if model is not None else self.model
        if args.gaf_on and args.optim == "sgd":
            _, sgd_kwargs = self.get_optimizer_cls_and_kwargs(args, model)
            gaf_kwargs = dict(gaf=args.gaf, alpha=args.gaf_alpha, beta=args.gaf_beta, placement=args.gaf_placement)
            self.optimizer_cls_and_kwargs = (GAFSGD, {**sgd_kwargs, **gaf_kwargs})
        super().create_optimizer(model)
        gaf_ids = self._gaf_param_ids(model)
        backbone_ids = {id(p) for n, p in model.named_parameters() if re.search(args.backbone_pattern, n)}
        is_gafsgd = isinstance(self.optimizer, GAFSGD)

        def overrides_of(p) -> dict:
            extra = {}
            if is_gafsgd and id(p) not in gaf_ids:
                extra["gaf"] = None
            if args.backbone_lr is not None and id(p) in backbone_ids:
                extra["lr"] = args.backbone_lr
            return extra

        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if any(overrides_of(p) for p in params):  # no state exists yet: rebuild with the finer groups
            cls = type(self.optimizer)
            accepted = inspect.signature(cls.__init__).parameters
            defaults = {k: v for k, v in self.optimizer.defaults.items() if k in accepted}
            self.optimizer = cls(regroup(self.optimizer.param_groups, overrides_of), **defaults)
        if is_gafsgd:
            if self.gaf_stats is not None:
                self.gaf_stats.register(self.optimizer)
        elif args.gaf_on:
            self._ensure_gaf(self.optimizer, model)
        elif args.clip_value > 0:
            attach_gaf(self.optimizer, gaf=ClipByValue(args.clip_value), alpha=1.0, beta=1.0)
        return self.optimizer

    def _ensure_gaf(self, optimizer, model=None) -> None:
        """Attach the GAF hook unless GAF already runs in ``optimizer`` (a GAFSGD or an attached hook)."""
        inner = unwrap_optimizer(optimizer)
        if isinstance(inner, GAFSGD) or attached_gaf(inner) is not None:
            return
        if self.args.gaf_placement == "update":
            raise ValueError(f"--gaf_placement update needs SGD, but the optimizer is {type(inner).__name__}; "
                             "use --gaf_placement grad")
        if self.gaf_stats is not None:
            self.gaf_stats.register(inner)  # ahead of the GAF hook, so it measures the raw gradients
        gaf_ids = self._gaf_param_ids(model)
        all_params = [p for g in inner.param_groups for p in g["params"]]
        selected = [p for p in all_params if id(p) in gaf_ids]
        attach_gaf(inner, gaf=self.args.gaf, alpha=self.args.gaf_alpha, beta=self.args.gaf_beta,
                   params=None if len(selected) == len(all_params) else selected)
        logger.info("GAF %s (alpha=%g, beta=%g) attached to %s", self.args.gaf, self.args.gaf_alpha,
                    self.args.gaf_beta, type(inner).__name__)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.args.lr_milestones:
            self.lr_scheduler = multistep_with_warmup(
                optimizer if optimizer is not None else self.optimizer, num_training_steps,
                self.args.get_warmup_steps(num_training_steps), list(self.args.lr_milestones), self.args.lr_gamma)
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    # --- checkpoints ------------------------------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            with open(os.path.join(folder, GAF_CONFIG_NAME), "w") as f:
                json.dump(self.args.gaf_config(), f, indent=2)

    def _load_optimizer_and_scheduler(self, checkpoint):
        saved = self._saved_gaf_config(checkpoint) if checkpoint is not None else None
        current = self.args.gaf_config()
        if saved is not None and list(saved.get("gaf_exclude", [])) != list(current["gaf_exclude"]):
            raise ValueError(
                f"checkpoint {checkpoint} was trained with --gaf_exclude {saved.get('gaf_exclude')}, this run asks for "
                f"{current['gaf_exclude']}: the exclusions split the optimizer's parameter groups, so its saved state "
                "cannot be matched to the new groups; resume with the checkpoint's --gaf_exclude")
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        if saved != current:
            message = (f"RESUMING WITH DIFFERENT GAF SETTINGS: checkpoint {checkpoint} was trained with "
                       f"{saved if saved is not None else 'no GAF settings recorded'}, this run uses {current}. "
                       "The run's settings apply from here on; the optimizer state (momentum) is kept.")
            logger.warning(message)
            warnings.warn(message, stacklevel=2)
        inner = unwrap_optimizer(self.optimizer) if self.optimizer is not None else None
        if isinstance(inner, GAFSGD):  # the loaded state_dict carried the checkpoint's GAF settings
            for group in inner.param_groups:
                if group["gaf"] is not None:
                    group.update(gaf=self.args.gaf, alpha=self.args.gaf_alpha, beta=self.args.gaf_beta,
                                 placement=self.args.gaf_placement)

    @staticmethod
    def _saved_gaf_config(checkpoint: str) -> dict | None:
        """The checkpoint's ``gaf_config.json`` (None when it has none); a corrupt one is an error naming it."""
        path = os.path.join(checkpoint, GAF_CONFIG_NAME)
        if not os.path.isfile(path):
            return None
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} cannot be read as JSON ({err}); restore it from another checkpoint or "
                             "delete it to resume without recorded GAF settings") from None
        if not isinstance(saved, dict):
            raise ValueError(f"{path} holds {type(saved).__name__}, not the GAF settings object")
        return saved

    # --- logging ----------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self.gaf_stats is not None and "loss" in logs:
            logs.update(self.gaf_stats.pop_stats())
        super().log(logs, *args, **kwargs)

"""What only experiments need on top of the library: the paper's clip-by-value baseline, the multi-step
schedule of torchvision's detection reference, and DETR's separate backbone learning rate.

:class:`ExperimentArguments` adds those flags to :class:`~hf_gaf.trainer.GAFTrainingArguments`;
:class:`ExperimentTrainerMixin` acts on them through the two extension points of
:class:`~hf_gaf.trainer.GAFTrainer` (``elementwise_transform``, ``param_group_overrides``) and its
``create_scheduler``. :class:`ExperimentTrainer` and :class:`ExperimentDetectionTrainer` are what the
recipes train with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch.optim.lr_scheduler import LambdaLR

from ..detection.trainer import DetectionTrainer
from ..functional import GAFSpec
from ..trainer import GAFTrainer, GAFTrainingArguments


@dataclass
class ExperimentArguments(GAFTrainingArguments):
    """:class:`~hf_gaf.trainer.GAFTrainingArguments` plus the experiment-only flags. ``max_grad_norm``
    also defaults to 0 with ``--clip_value`` (one clipping baseline at a time)."""

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

    def __post_init__(self):
        if self.clip_value < 0 or (self.clip_value > 0 and self.gaf != "none"):
            raise ValueError(f"--clip_value {self.clip_value}: must be >= 0, and cannot be combined with --gaf "
                             f"{self.gaf} (both transform each gradient coordinate at the same place)")
        if any(not 0 < m < 1 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"--lr_milestones {self.lr_milestones}: need increasing fractions of training in (0, 1)")
        try:
            re.compile(self.backbone_pattern)
        except re.error as err:
            raise ValueError(f"--backbone_pattern {self.backbone_pattern!r} is not a valid regular expression: {err}") from None
        if self.max_grad_norm is None and self.clip_value > 0:
            self.max_grad_norm = 0.0
        super().__post_init__()

    def gaf_config(self) -> dict:
        """GAF's checkpointed settings plus ``clip_value`` (it runs where GAF runs)."""
        return {**super().gaf_config(), "clip_value": self.clip_value}


class ClipByValue:
    """Elementwise clip to [-v, v]; an elementwise kind for a :class:`~hf_gaf.functional.GAFSpec`, so it
    runs exactly where GAF would."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, x):
        return x.clamp(-self.value, self.value)

    def __repr__(self) -> str:
        return f"ClipByValue({self.value})"


def multistep_with_warmup(optimizer, num_training_steps: int, warmup_steps: int, milestones: list[float], gamma: float):
    """Linear warmup over ``warmup_steps``, then the lr times ``gamma`` at each milestone fraction."""
    steps = [int(m * num_training_steps) for m in milestones]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return gamma ** sum(step >= s for s in steps)

    return LambdaLR(optimizer, factor)


class ExperimentTrainerMixin:
    """Put in front of a :class:`~hf_gaf.trainer.GAFTrainer` subclass; reads :class:`ExperimentArguments`."""

    args: ExperimentArguments

    def elementwise_transform(self) -> GAFSpec | None:
        if self.args.clip_value > 0:
            return GAFSpec(ClipByValue(self.args.clip_value), 1.0, 1.0)
        return super().elementwise_transform()

    @property
    def gaf_placement(self) -> str:
        return "grad" if self.args.clip_value > 0 else super().gaf_placement

    def param_group_overrides(self, name: str, param) -> dict:
        overrides = super().param_group_overrides(name, param)
        if self.args.backbone_lr is not None and re.search(self.args.backbone_pattern, name):
            overrides["lr"] = self.args.backbone_lr
        return overrides

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.args.lr_milestones:
            self.lr_scheduler = multistep_with_warmup(
                optimizer if optimizer is not None else self.optimizer, num_training_steps,
                self.args.get_warmup_steps(num_training_steps), list(self.args.lr_milestones), self.args.lr_gamma)
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)


class ExperimentTrainer(ExperimentTrainerMixin, GAFTrainer):
    """The classification recipe's trainer."""


class ExperimentDetectionTrainer(ExperimentTrainerMixin, DetectionTrainer):
    """The detection recipes' trainer."""

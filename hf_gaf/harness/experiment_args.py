"""What only experiments need on top of the library: the multi-step schedule of torchvision's detection
reference, DETR's separate backbone learning rate and the spike test's injected gradient spikes. (The paper's
clip-by-value baseline is the ``clip`` GAF kind: :func:`hf_gaf.harness.presets.clip_by_value`.)

:class:`ExperimentArguments` adds those flags to :class:`~hf_gaf.trainer.GAFTrainingArguments`;
:class:`ExperimentTrainerMixin` acts on them through :class:`~hf_gaf.trainer.GAFTrainer`'s
``param_group_overrides`` and ``create_scheduler``.
:class:`ExperimentTrainer` is what the classification recipe trains with,
:class:`~hf_gaf.harness.detection_training.ExperimentDetectionTrainer` the detection recipes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from torch.optim.lr_scheduler import LambdaLR

from ..trainer import GAFTrainer, GAFTrainingArguments


@dataclass
class ExperimentArguments(GAFTrainingArguments):
    """:class:`~hf_gaf.trainer.GAFTrainingArguments` plus the experiment-only flags."""

    lr_milestones: list[float] = field(
        default_factory=list,
        metadata={
            "help": "Multi-step schedule: fractions of training (e.g. 0.5 0.75) where the lr is multiplied by "
            "--lr_gamma (after --warmup_steps); overrides --lr_scheduler_type."
        },
    )
    lr_gamma: float = field(default=0.1, metadata={"help": "Factor of the multi-step schedule."})
    backbone_lr: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the parameters whose name matches --backbone_pattern (DETR's recipe: 1e-5)."
        },
    )
    backbone_pattern: str = field(default=r"backbone", metadata={"help": "Regular expression for --backbone_lr."})
    grad_spike_steps: list[int] = field(
        default_factory=list,
        metadata={
            "help": "Spike test: the optimizer steps (counted from 1) whose gradient is multiplied by "
            "--grad_spike_scale where the loss is made, before clipping, GAF or a treatment sees it (the logged "
            "loss keeps its value)."
        },
    )
    grad_spike_scale: float = field(default=100.0, metadata={"help": "Factor of the --grad_spike_steps spikes."})

    def __post_init__(self):
        if not 0 < self.lr_gamma < math.inf:
            raise ValueError(f"--lr_gamma {self.lr_gamma}: need a finite factor > 0")
        if self.backbone_lr is not None and not 0 <= self.backbone_lr < math.inf:
            raise ValueError(f"--backbone_lr {self.backbone_lr}: need a finite learning rate >= 0")
        if any(not 0 < m < 1 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"--lr_milestones {self.lr_milestones}: need increasing fractions of training in (0, 1)")
        if any(step < 1 for step in self.grad_spike_steps) or len(set(self.grad_spike_steps)) != len(
                self.grad_spike_steps):
            raise ValueError(f"--grad_spike_steps {self.grad_spike_steps}: need distinct optimizer steps >= 1")
        if not 0 < self.grad_spike_scale < math.inf:
            raise ValueError(f"--grad_spike_scale {self.grad_spike_scale}: need a finite factor > 0")
        try:
            re.compile(self.backbone_pattern)
        except re.error as err:
            raise ValueError(
                f"--backbone_pattern {self.backbone_pattern!r} is not a valid regular expression: {err}"
            ) from None
        super().__post_init__()


def multistep_with_warmup(optimizer, num_training_steps: int, warmup_steps: int, milestones: list[float], gamma: float):
    """Linear warmup over ``warmup_steps``, then the lr times ``gamma`` at each milestone fraction."""
    steps = [int(m * num_training_steps) for m in milestones]

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return gamma ** sum(step >= s for s in steps)

    return LambdaLR(optimizer, factor)


def spiked(loss, scale: float):
    """``loss`` with its value kept and its gradient multiplied by ``scale``: s·L − (s − 1)·stop_gradient(L)."""
    return loss * scale - loss.detach() * (scale - 1)


class ExperimentTrainerMixin:
    """Put in front of a :class:`~hf_gaf.trainer.GAFTrainer` subclass; reads :class:`ExperimentArguments`."""

    args: ExperimentArguments

    def param_group_overrides(self, name: str, param) -> dict:
        overrides = super().param_group_overrides(name, param)
        if self.args.backbone_lr is not None and re.search(self.args.backbone_pattern, name):
            overrides["lr"] = self.args.backbone_lr
        return overrides

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.args.lr_milestones:
            self.lr_scheduler = multistep_with_warmup(
                optimizer if optimizer is not None else self.optimizer,
                num_training_steps,
                self.args.get_warmup_steps(num_training_steps),
                list(self.args.lr_milestones),
                self.args.lr_gamma,
            )
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        if not (model.training and self.state.global_step + 1 in self.args.grad_spike_steps):
            return result
        if return_outputs:
            return spiked(result[0], self.args.grad_spike_scale), result[1]
        return spiked(result, self.args.grad_spike_scale)


class ExperimentTrainer(ExperimentTrainerMixin, GAFTrainer):
    """The classification recipe's trainer."""

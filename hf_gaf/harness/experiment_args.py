"""What only experiments need on top of the library: the paper's clip-by-value baseline, the multi-step
schedule of torchvision's detection reference, and DETR's separate backbone learning rate.

:class:`ExperimentArguments` adds those flags to :class:`~hf_gaf.trainer.GAFTrainingArguments`;
:class:`ExperimentTrainerMixin` acts on them through :class:`~hf_gaf.trainer.GAFTrainer`'s
``create_optimizer`` (the :class:`ClipByValue` hook), ``param_group_overrides`` and ``create_scheduler``.
:class:`ExperimentTrainer` is what the classification recipe trains with,
:class:`~hf_gaf.harness.detection_training.ExperimentDetectionTrainer` the detection recipes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from torch.optim.lr_scheduler import LambdaLR

from ..hook import unwrap_optimizer
from ..trainer import GAFTrainer, GAFTrainingArguments
from ..trainer.trainer import is_excluded


@dataclass
class ExperimentArguments(GAFTrainingArguments):
    """:class:`~hf_gaf.trainer.GAFTrainingArguments` plus the experiment-only flags. ``max_grad_norm``
    also defaults to 0 with ``--clip_value`` (one clipping baseline at a time)."""

    clip_value: float = field(
        default=0.0,
        metadata={
            "help": "Clip every gradient coordinate to [-v, v] inside the optimizer step (the paper's clip-by-value "
            "baseline), where GAF on the gradient runs; 0 disables."
        },
    )
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

    def __post_init__(self):
        if not 0 <= self.clip_value < math.inf or (self.clip_value > 0 and self.gaf != "none"):
            raise ValueError(
                f"--clip_value {self.clip_value}: must be finite and >= 0, and cannot be combined with --gaf "
                f"{self.gaf} (both transform each gradient coordinate at the same place)"
            )
        if not 0 < self.lr_gamma < math.inf:
            raise ValueError(f"--lr_gamma {self.lr_gamma}: need a finite factor > 0")
        if self.backbone_lr is not None and not 0 <= self.backbone_lr < math.inf:
            raise ValueError(f"--backbone_lr {self.backbone_lr}: need a finite learning rate >= 0")
        if any(not 0 < m < 1 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"--lr_milestones {self.lr_milestones}: need increasing fractions of training in (0, 1)")
        try:
            re.compile(self.backbone_pattern)
        except re.error as err:
            raise ValueError(
                f"--backbone_pattern {self.backbone_pattern!r} is not a valid regular expression: {err}"
            ) from None
        if self.max_grad_norm is None and self.clip_value > 0:
            self.max_grad_norm = 0.0
        super().__post_init__()

    def gaf_config(self) -> dict:
        """GAF's checkpointed settings plus ``clip_value`` (it runs where GAF runs)."""
        return {**super().gaf_config(), "clip_value": self.clip_value}


class ClipByValue:
    """The paper's clip-by-value baseline as a step pre-hook, beside :func:`~hf_gaf.attach_gaf`: inside
    ``optimizer.step()``, where GAF with placement ``grad`` would run, every gradient coordinate of
    ``params`` is clamped to [-v, v] (on final, accumulated, unscaled gradients; under a fused optimizer's
    GradScaler to [-v·s, v·s], and not at all on an overflow step). Only the hook holds the value: the
    optimizer's ``param_groups`` (and so ``optimizer.pt``) stay plain strings and numbers.

    Example:
        >>> import torch
        >>> p = torch.nn.Parameter(torch.zeros(3))
        >>> opt = torch.optim.SGD([p], lr=1.0)
        >>> clip = ClipByValue(opt, 0.1)
        >>> p.grad = torch.tensor([0.05, -2.0, 3.0])
        >>> opt.step()
        >>> p.tolist()
        [-0.05000000074505806, 0.10000000149011612, -0.10000000149011612]
    """

    def __init__(self, optimizer, value: float, params=None) -> None:
        if not value > 0:
            raise ValueError(f"clip value {value}: must be > 0")
        self.value = float(value)
        self.param_ids = None if params is None else {id(p) for p in params}
        self._handle = unwrap_optimizer(optimizer).register_step_pre_hook(self)

    def __call__(self, optimizer, args, kwargs) -> None:
        found_inf = getattr(optimizer, "found_inf", None)
        if found_inf is not None and bool(found_inf.item()):
            return  # the fused optimizer skips this step
        scale = getattr(optimizer, "grad_scale", None)
        bound = self.value * (float(scale.item()) if scale is not None else 1.0)
        grads = [
            p.grad
            for g in optimizer.param_groups
            for p in g["params"]
            if p.grad is not None and (self.param_ids is None or id(p) in self.param_ids)
        ]
        if grads:
            torch._foreach_clamp_min_(grads, -bound)
            torch._foreach_clamp_max_(grads, bound)

    def remove(self) -> None:
        self._handle.remove()


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

    def create_optimizer(self, model=None):
        """The optimizer of :class:`~hf_gaf.trainer.GAFTrainer`, plus the :class:`ClipByValue` hook with
        ``--clip_value`` (on the parameters ``--gaf_exclude`` leaves in, as GAF would be)."""
        had = self.optimizer is not None
        optimizer = super().create_optimizer(model)
        if not had and self.args.clip_value > 0:
            model = model if model is not None else self.model
            params = [
                p for n, p in model.named_parameters() if p.requires_grad and not is_excluded(n, self.gaf_exclude)
            ]
            ClipByValue(optimizer, self.args.clip_value, params)
        return optimizer

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


class ExperimentTrainer(ExperimentTrainerMixin, GAFTrainer):
    """The classification recipe's trainer."""

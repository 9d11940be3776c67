"""GAF statistics on logging steps: what f did to the numbers it was given.

Logged keys (all over the coordinates GAF transforms, on the exact tensors f sees: final, unscaled
gradients for placement ``grad``, the momentum update for placement ``update``):

- ``gaf/norm_before``, ``gaf/norm_after``: the L2 norm of x and of f(x);
- ``gaf/amplified``: fraction of coordinates with |f(x)| > |x|;
- ``gaf/compressed``: fraction with |f(x)| < |x|;
- ``gaf/saturated``: fraction with |f(x)| > 0.9·bound (0 for the unbounded ``log``).

Nothing is computed on other steps, so they pay no extra work and no host sync.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from transformers import TrainerCallback
from transformers.trainer_utils import IntervalStrategy

from ..functional import GAFSpec, foreach_gaf
from ..gaf_sgd import GAFSGD
from ..hook import attached_gaf, unwrap_optimizer


@torch.no_grad()
def gaf_stats(groups: list[tuple[list[Tensor], GAFSpec]], grad_scale: Tensor | None = None) -> dict[str, float]:
    """The statistics above for ``(tensors, spec)`` pairs; ``grad_scale`` divides scaled gradients first."""
    sq_before = sq_after = 0.0
    n = amplified = compressed = saturated = 0
    for tensors, spec in groups:
        if not tensors:
            continue
        xs = [t.float() / grad_scale.to(t.device) if grad_scale is not None else t.float() for t in tensors]
        fs = foreach_gaf(xs, spec.kind, spec.alpha, spec.beta)
        threshold = 0.9 * spec.bound
        for x, fx in zip(xs, fs):
            ax, af = x.abs(), fx.abs()
            sq_before += float(x.double().square().sum())
            sq_after += float(fx.double().square().sum())
            amplified += int((af > ax).sum())
            compressed += int((af < ax).sum())
            saturated += int((af > threshold).sum()) if math.isfinite(threshold) else 0
            n += x.numel()
    n = max(n, 1)
    return {"gaf/norm_before": math.sqrt(sq_before), "gaf/norm_after": math.sqrt(sq_after),
            "gaf/amplified": amplified / n, "gaf/compressed": compressed / n, "gaf/saturated": saturated / n}


def gaf_inputs(optimizer) -> list[tuple[list[Tensor], GAFSpec]]:
    """What GAF will transform on the next step of ``optimizer`` (a GAFSGD, or one with a hook)."""
    inner = unwrap_optimizer(optimizer)
    if isinstance(inner, GAFSGD):
        return inner.gaf_inputs()
    hook = attached_gaf(inner)
    return [] if hook is None else [(hook.gradients(), hook.spec)]


def is_logging_step(args, global_step: int) -> bool:
    """Will the Trainer log after optimizer step number ``global_step`` (1-based)?"""
    if args.logging_first_step and global_step == 1:
        return True
    return args.logging_strategy == IntervalStrategy.STEPS and global_step % max(int(args.logging_steps), 1) == 0


class GAFStatsCallback(TrainerCallback):
    """Collects :func:`gaf_stats` on logging steps; :class:`~hf_gaf.GAFTrainer` adds them to its logs.

    The measurement runs in a step pre-hook on the innermost optimizer, registered ahead of the GAF
    hook, so it sees the final, unscaled gradients before f changes them.
    """

    def __init__(self) -> None:
        self.active = False
        self.pending: dict[str, float] = {}
        self._handle = None

    def register(self, optimizer) -> None:
        """Install the measuring pre-hook on ``optimizer``'s innermost torch optimizer (once)."""
        if self._handle is None:
            self._handle = unwrap_optimizer(optimizer).register_step_pre_hook(self._measure)

    def _measure(self, optimizer, args, kwargs) -> None:
        if not self.active:
            return
        found_inf = getattr(optimizer, "found_inf", None)
        if found_inf is not None and bool(found_inf.item()):
            return
        self.pending = gaf_stats(gaf_inputs(optimizer), getattr(optimizer, "grad_scale", None))
        self.active = False

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None:
            self.register(optimizer)

    def on_step_begin(self, args, state, control, **kwargs):
        self.active = is_logging_step(args, state.global_step + 1)

    def pop_stats(self) -> dict[str, float]:
        """The statistics measured since the last call (empty if none)."""
        stats, self.pending = self.pending, {}
        return stats

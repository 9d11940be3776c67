"""GAF statistics on logging steps: what f did to the numbers it was given.

Logged keys (all over the coordinates GAF transforms, on the exact tensors f sees: final, unscaled
gradients for placement ``grad``, the momentum update for placement ``update``):

- ``gaf/norm_before``, ``gaf/norm_after``: the L2 norm of x and of f(x);
- ``gaf/amplified``: fraction of the nonzero coordinates with |f(x)| > |x|;
- ``gaf/compressed``: fraction with |f(x)| < |x|;
- ``gaf/saturated``: fraction with |f(x)| > 0.9·bound (0 for the unbounded ``log``).

A zero coordinate stays zero and is not counted: so DeepSpeed ZeRO's padding of its flat partitions does not
change the fractions, which then equal those of the same run under DDP.

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

_KEYS = ("sq_before", "sq_after", "n", "amplified", "compressed", "saturated")


@torch.no_grad()
def gaf_stat_sums(groups: list[tuple[list[Tensor], GAFSpec]], grad_scale: Tensor | None = None) -> Tensor:
    """The sums behind the statistics (squared norms before and after f, the number of nonzero coordinates, and
    how many are amplified, compressed, saturated), float64 on the CPU, for ``(tensors, spec)`` pairs; ``grad_scale``
    divides scaled gradients first. Sums add: over the calls of one optimizer step, and over the ranks that
    each hold one partition (DeepSpeed ZeRO)."""
    sums = torch.zeros(len(_KEYS), dtype=torch.float64)
    for tensors, spec in groups:
        if not tensors:
            continue
        xs = [t.float() / grad_scale.to(t.device) if grad_scale is not None else t.float() for t in tensors]
        fs = foreach_gaf(xs, spec.kind, spec.alpha, spec.beta)
        threshold = 0.9 * spec.bound
        for x, fx in zip(xs, fs):
            ax, af = x.abs(), fx.abs()
            saturated = float((af > threshold).sum()) if math.isfinite(threshold) else 0.0
            sums += torch.tensor([float(x.double().square().sum()), float(fx.double().square().sum()),
                                  float((x != 0).sum()),
                                  float((af > ax).sum()), float((af < ax).sum()), saturated], dtype=torch.float64)
    return sums


def stats_of_sums(sums: Tensor) -> dict[str, float]:
    """The logged statistics (module docstring) of :func:`gaf_stat_sums`'s sums."""
    sq_before, sq_after, n, amplified, compressed, saturated = sums.tolist()
    n = max(n, 1.0)
    return {"gaf/norm_before": math.sqrt(sq_before), "gaf/norm_after": math.sqrt(sq_after),
            "gaf/amplified": amplified / n, "gaf/compressed": compressed / n, "gaf/saturated": saturated / n}


def gaf_stats(groups: list[tuple[list[Tensor], GAFSpec]], grad_scale: Tensor | None = None) -> dict[str, float]:
    """The statistics above for ``(tensors, spec)`` pairs; ``grad_scale`` divides scaled gradients first."""
    return stats_of_sums(gaf_stat_sums(groups, grad_scale))


def gaf_inputs(optimizer) -> list[tuple[list[Tensor], list[Tensor], GAFSpec]]:
    """What GAF will transform on the next step of ``optimizer`` (a GAFSGD, or one with a hook), as
    ``(params, inputs, spec)``."""
    inner = unwrap_optimizer(optimizer)
    if isinstance(inner, GAFSGD):
        return inner.gaf_inputs()
    hook = attached_gaf(inner)
    if hook is None:
        return []
    params = hook.selected()
    return [(params, [p.grad for p in params], hook.spec)]


def is_logging_step(args, global_step: int) -> bool:
    """Will the Trainer log after optimizer step number ``global_step`` (1-based)?"""
    if args.logging_first_step and global_step == 1:
        return True
    return args.logging_strategy == IntervalStrategy.STEPS and global_step % max(int(args.logging_steps), 1) == 0


class GAFStatsCallback(TrainerCallback):
    """Collects :func:`gaf_stats` on logging steps; :class:`~hf_gaf.GAFTrainer` adds them to its logs.

    The measurement runs in a step pre-hook on the innermost optimizer, registered ahead of the GAF
    hook, so it sees the final, unscaled gradients before f changes them. It adds up every ``step()`` call
    of the optimizer step (DeepSpeed ZeRO calls it once per parameter group), and with ``partitioned=True``
    (each rank holds a partition: DeepSpeed ZeRO) it adds the ranks' sums, so the numbers are the whole
    model's, as under DDP. With ``groups`` (parameter id -> a group name, e.g. the parts of a detector of
    :mod:`hf_gaf.detection.module_groups`) it also logs each group's statistics as ``gaf/<group>/<key>``
    (not under ZeRO, whose flat partitions mix the groups).
    """

    def __init__(self, partitioned: bool = False, groups: dict[int, str] | None = None) -> None:
        self.partitioned = partitioned
        self.groups = groups or {}
        self.active = False
        self.pending: dict[str, float] = {}
        self._sums: dict[str, Tensor] = {}  # group name ("" without groups) -> its sums over this step
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
        grad_scale = getattr(optimizer, "grad_scale", None)
        for params, inputs, spec in gaf_inputs(optimizer):
            by_group: dict[str, list[Tensor]] = {}
            for p, x in zip(params, inputs):
                by_group.setdefault(self.groups.get(id(p), "other") if self.groups else "", []).append(x)
            for name, tensors in by_group.items():
                sums = gaf_stat_sums([(tensors, spec)], grad_scale)
                self._sums[name] = self._sums[name] + sums if name in self._sums else sums

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None:
            self.register(optimizer)

    def on_step_begin(self, args, state, control, **kwargs):
        self.active = is_logging_step(args, state.global_step + 1)

    def on_step_end(self, args, state, control, **kwargs):
        if not self.active:
            return
        self.active = False
        per_group, self._sums = self._sums, {}
        sums = sum(per_group.values(), torch.zeros(len(_KEYS), dtype=torch.float64))
        if self.partitioned and torch.distributed.is_initialized():  # every rank is on the same logging step
            on_gpu = torch.distributed.get_backend() == "nccl"
            sums = sums.cuda() if on_gpu else sums
            torch.distributed.all_reduce(sums)
            sums = sums.cpu()
        if sums[2] > 0:
            self.pending = stats_of_sums(sums)
            if self.groups and not self.partitioned:
                for name, group_sums in sorted(per_group.items()):
                    self.pending.update({f"gaf/{name}/{k.removeprefix('gaf/')}": v
                                         for k, v in stats_of_sums(group_sums).items()})

    def pop_stats(self) -> dict[str, float]:
        """The statistics measured since the last call (empty if none)."""
        stats, self.pending = self.pending, {}
        return stats

r"""Gradient treatments users compare GAF with, at GAF's place in the step: one table, one hook.

Each :class:`Treatment` runs inside ``optimizer.step()`` of the innermost optimizer through
:func:`attach_treatment` (the step pre-hook machinery of :func:`~hf_gaf.attach_gaf`: final, accumulated,
rank-averaged, unscaled gradients, once per optimizer step; groups with ``no_gaf=True`` are left alone). GAF's
own kinds (:mod:`hf_gaf.kinds`, clip-by-value among them as ``clip``) are elementwise; these are not:

==========  ==========================================================  ==============================
treatment   what it does to each gradient g of weight w                 needs across ranks
==========  ==========================================================  ==============================
``agc``     unit-wise: g·min(1, λ·max(‖w_u‖, ε)/‖g_u‖), a unit being    the shapes (refused on flat
            one output row (the whole tensor for ≤ 1 dim); Brock et     partitions: ZeRO, FSDP1)
            al. 2021, timm's ``adaptive_clip_grad``; λ=``clip_factor``
``gc``      g − mean of g over all dims but the first, for tensors of   the shapes (refused on flat
            ≥ 2 dims (Yong et al. 2020, gradient centralization)        partitions)
``zclip``   z = (‖g‖ − μ)/σ over the global norm ‖g‖; if z > z_thresh   the global norm: DDP and FSDP2
            all g are scaled to norm μ + σ·z_thresh²/z; μ and σ² are    compute it; refused on flat
            EMAs (factor ``alpha``) of the norms after clipping, set     partitions
            from the first ``warmup_steps`` norms (no clipping before).
            arXiv 2504.02507. Its state is optimizer state (saved in
            ``state_dict()``), so a resumed run continues exactly
==========  ==========================================================  ==============================

A new treatment is one :func:`register_treatment` call. ``--grad_treatment`` and the presets read this table.

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(2, 3))
    >>> opt = torch.optim.SGD([w], lr=1.0)
    >>> hook = attach_treatment(opt, "agc", clip_factor=0.01)
    >>> w.grad = torch.tensor([[0.001, 0.0, 0.0], [3.0, 4.0, 0.0]])
    >>> opt.step()              # row 1's norm 5 is clipped to 0.01 * ||w_row|| = 0.01 * sqrt(3)
    >>> [round(v, 5) for v in (1 - w[1]).tolist()]
    [0.01039, 0.01386, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.optim import Optimizer

from .hook import _HANDLE_ATTR, _TREATMENT_ATTR, StepPreHook, check_not_applied_twice, unwrap_optimizer
from .kinds import Registry

__all__ = ["Treatment", "TREATMENTS", "treatment", "register_treatment", "attach_treatment", "attached_treatment",
           "parse_treatment_args", "TreatmentHook"]


@dataclass(frozen=True)
class Treatment:
    """One gradient treatment (module docstring): ``apply(params, grads, settings, state)`` changes ``grads`` in
    place; ``settings`` are its named numbers with their defaults; ``state`` is a dict kept in the optimizer's
    state when ``stateful`` (else ``None``). ``needs_shapes`` (parameter shapes) or ``needs_global_norm`` (the
    norm of the whole step's gradient): refused on flat partitions, where one ``step()`` call sees neither."""

    name: str
    apply: Callable[[list[Tensor], list[Tensor], dict, dict | None], None]
    settings: dict[str, float]
    summary: str
    needs_shapes: bool = False
    needs_global_norm: bool = False
    stateful: bool = False


TREATMENTS = Registry("gradient treatment")
register_treatment = TREATMENTS.register  # add an entry (a name registered twice is an error)
treatment = TREATMENTS.lookup  # the entry for a name; the one "unknown gradient treatment" error otherwise


def parse_treatment_args(name: str, text: str | dict | None) -> dict[str, float]:
    """The settings of treatment ``name``: its defaults, overridden by ``text`` (``"clip_factor=0.02,eps=1e-3"`` or
    a dict). An unknown name, or a value that is not a finite number > 0, is a ``ValueError`` naming it."""
    entry = treatment(name)
    given = dict(text) if isinstance(text, dict) else {}
    if isinstance(text, str) and text.strip():
        for item in text.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--grad_treatment_args {text!r}: expected name=value pairs joined by commas")
            given[key.strip()] = value.strip()
    unknown = sorted(set(given) - set(entry.settings))
    if unknown:
        raise ValueError(f"--grad_treatment_args: {name} has no setting {', '.join(unknown)} "
                         f"(its settings: {', '.join(entry.settings) or 'none'})")
    settings = dict(entry.settings)
    for key, value in given.items():
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not 0 < number < math.inf:
            raise ValueError(f"--grad_treatment_args {key}={value}: need a finite number > 0")
        settings[key] = number
    return settings


def _unitwise_norm(x: Tensor) -> Tensor:
    """‖x‖ per output unit (dim 0) for tensors of ≥ 2 dims, of the whole tensor otherwise (timm's rule)."""
    if x.ndim <= 1:
        return x.norm(2)
    return x.norm(2, dim=tuple(range(1, x.ndim)), keepdim=True)


def _agc(params: list[Tensor], grads: list[Tensor], settings: dict, state: dict | None) -> None:
    for p, g in zip(params, grads):
        max_norm = _unitwise_norm(p.detach()).clamp(min=settings["eps"]) * settings["clip_factor"]
        grad_norm = _unitwise_norm(g)
        clipped = g * (max_norm / grad_norm.clamp(min=1e-6))
        g.copy_(torch.where(grad_norm < max_norm, g, clipped))


def _gc(params: list[Tensor], grads: list[Tensor], settings: dict, state: dict | None) -> None:
    for g in grads:
        if g.ndim >= 2:
            g.sub_(g.mean(dim=tuple(range(1, g.ndim)), keepdim=True))


def _global_norm(grads: list[Tensor]) -> float:
    """‖(all grads)‖₂ as a float; for FSDP2's DTensor gradients the norm of the full gradient."""
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    full = getattr(total, "full_tensor", None)
    return float(full() if full is not None else total)


def _zclip(params: list[Tensor], grads: list[Tensor], settings: dict, state: dict) -> None:
    norm = _global_norm(grads)
    warmup = int(settings["warmup_steps"])
    if not math.isfinite(norm):
        state["skipped_nonfinite"] = state.get("skipped_nonfinite", 0) + 1
        return  # left as it is: the optimizer's own non-finite handling (or the NaN check) sees it
    if state.get("mean") is None:
        norms = state.setdefault("warmup_norms", [])
        norms.append(norm)
        if len(norms) >= warmup:
            mean = sum(norms) / len(norms)
            state["mean"], state["var"] = mean, sum((n - mean) ** 2 for n in norms) / len(norms)
            del state["warmup_norms"]
        return
    mean, std = state["mean"], math.sqrt(state["var"])
    clipped = norm
    z = (norm - mean) / std if std > 0 else 0.0
    if z > settings["z_thresh"]:
        clipped = mean + settings["z_thresh"] ** 2 / z * std
        torch._foreach_mul_(grads, clipped / norm)
        state["clipped_steps"] = state.get("clipped_steps", 0) + 1
    alpha = settings["alpha"]
    state["mean"] = alpha * mean + (1 - alpha) * clipped
    state["var"] = alpha * state["var"] + (1 - alpha) * (clipped - state["mean"]) ** 2


register_treatment(Treatment("agc", _agc, {"clip_factor": 0.01, "eps": 1e-3},
                             "adaptive gradient clipping, unit-wise (Brock et al. 2021)", needs_shapes=True))
register_treatment(Treatment("gc", _gc, {}, "gradient centralization (Yong et al. 2020)", needs_shapes=True))
register_treatment(Treatment("zclip", _zclip, {"z_thresh": 2.5, "alpha": 0.97, "warmup_steps": 25},
                             "z-score clipping of the global norm's spikes (arXiv 2504.02507)",
                             needs_global_norm=True, stateful=True))

class TreatmentHook(StepPreHook):
    """The handle returned by :func:`attach_treatment`: ``entry`` and ``settings`` say what runs; ``calls``
    counts the optimizer steps on which it ran; ``state`` is its state (a dict in the optimizer's
    ``state``, under ``"hf_gaf.<name>"``, so ``state_dict()`` saves it); ``remove()`` detaches it."""

    handle_attr = _TREATMENT_ATTR

    def __init__(self, optimizer: Optimizer, entry: Treatment, settings: dict, params=None) -> None:
        self.entry, self.settings = entry, settings
        self.state_key = f"hf_gaf.{entry.name}"
        super().__init__(optimizer, params)

    @property
    def state(self) -> dict | None:
        return self.optimizer.state.setdefault(self.state_key, {}) if self.entry.stateful else None

    def __call__(self, optimizer: Optimizer, args, kwargs) -> None:
        check_not_applied_twice(optimizer, f"the {self.entry.name} treatment", "two transforms would run")
        self.begins_step(optimizer)
        params = self.selected()
        if not params:
            return
        found_inf = getattr(optimizer, "found_inf", None)
        if found_inf is not None and bool(found_inf.item()):
            return  # the fused optimizer skips this step
        if self.flattened(params) and (self.entry.needs_shapes or self.entry.needs_global_norm):
            raise RuntimeError(
                f"gradient treatment {self.entry.name}: this {type(optimizer).__name__} steps flat partitions of the "
                "parameters (DeepSpeed ZeRO, FSDP1 without use_orig_params), which have no "
                + ("unit shapes" if self.entry.needs_shapes else "global norm within one step() call")
                + f"; {self.entry.name} would silently follow another rule there. Use DDP or FSDP2 (fully_shard), "
                "or a treatment that is elementwise (the GAF kinds, clip-by-value as the clip kind). (Parameters "
                "added with add_param_group after attaching look the same: attach after adding them.)"
            )
        grads = [p.grad for p in params]
        grad_scale = getattr(optimizer, "grad_scale", None)
        if grad_scale is not None:  # a fused optimizer under a GradScaler divides by the scale after us
            torch._foreach_div_(grads, grad_scale.to(grads[0].device))
        self.entry.apply(params, grads, self.settings, self.state)
        if grad_scale is not None:
            torch._foreach_mul_(grads, grad_scale.to(grads[0].device))
        self._count_step()


def attach_treatment(optimizer, name: str, *, params: Iterable[Tensor] | None = None, **settings) -> TreatmentHook:
    """Run treatment ``name`` (:data:`TREATMENTS`) on the final gradients inside every ``optimizer.step()``
    (where :func:`~hf_gaf.attach_gaf` runs f), with ``settings`` over its defaults. One gradient transform per
    optimizer: GAF (hook or a GAFSGD with ``gaf`` set, checked at every step too) and a treatment together are
    refused."""
    values = parse_treatment_args(name, settings)
    inner = unwrap_optimizer(optimizer)
    if getattr(inner, _TREATMENT_ATTR, None) is not None or getattr(inner, _HANDLE_ATTR, None) is not None:
        raise RuntimeError(f"this {type(inner).__name__} already transforms its gradients (GAF or a treatment): "
                           f"one at a time, so that a comparison compares one thing; remove the other first")
    check_not_applied_twice(inner, f"the {name} treatment", "two transforms would run")
    hook = TreatmentHook(inner, treatment(name), values, None if params is None else list(params))
    setattr(inner, _TREATMENT_ATTR, hook)
    return hook


def attached_treatment(optimizer) -> TreatmentHook | None:
    """The :class:`TreatmentHook` attached to ``optimizer`` (or its innermost optimizer), if any."""
    return getattr(unwrap_optimizer(optimizer), _TREATMENT_ATTR, None)

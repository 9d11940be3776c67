"""``attach_gaf``: GAF (placement ``grad``) for any torch optimizer through a step pre-hook.

The hook runs inside ``optimizer.step()``, just before the update, on the innermost torch optimizer.
That is the one place where gradients are final: accumulated over micro-batches, averaged across
ranks by DDP/FSDP, unscaled by a ``GradScaler`` (which unscales before it calls ``step`` and does not
call ``step`` at all on overflow). Tensor hooks and DDP comm hooks see partial or scaled gradients,
which is wrong for a nonlinear f.

Fused optimizers (``fused=True``) let a ``GradScaler`` hand them the scale instead: they expose
``grad_scale`` and ``found_inf`` during ``step`` and divide by the scale themselves. The hook then
writes s·f(g/s), so the optimizer sees f(g) after its division, and does nothing on an overflow step
(the fused kernel skips that step).

Example:
    >>> import torch
    >>> from hf_gaf import attach_gaf
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    >>> handle = attach_gaf(opt, gaf="atan", alpha=0.1, beta=20.0)
    >>> model(torch.randn(8, 4)).square().mean().backward()
    >>> opt.step()          # AdamW now sees 0.1*atan(20*g)
    >>> handle.remove()     # plain AdamW again
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor
from torch.optim import Optimizer

from .functional import GAFKind, GAFSpec, foreach_gaf_, validate_gaf

_HANDLE_ATTR = "_hf_gaf_hook"


def unwrap_optimizer(optimizer) -> Optimizer:
    """The innermost ``torch.optim.Optimizer`` under wrappers that keep it as ``.optimizer``
    (accelerate's ``AcceleratedOptimizer``, DeepSpeed's ZeRO optimizers, SageMaker's wrapper)."""
    found, inner, seen = None, optimizer, set()
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        if isinstance(inner, Optimizer):
            found = inner
        inner = getattr(inner, "optimizer", None)
    if found is None:
        raise TypeError(f"expected a torch.optim.Optimizer or a wrapper of one, got {type(optimizer).__name__}")
    return found


class GAFHook:
    """The handle returned by :func:`attach_gaf`: ``remove()`` detaches it; ``calls`` counts the
    optimizer steps on which f ran; ``spec`` is the GAF setting."""

    def __init__(self, optimizer: Optimizer, spec: GAFSpec, params: Iterable[Tensor] | None) -> None:
        self.optimizer = optimizer
        self.spec = spec
        self.param_ids = None if params is None else {id(p) for p in params}
        self.calls = 0
        self._handle = optimizer.register_step_pre_hook(self)

    def gradients(self) -> list[Tensor]:
        """The gradients f applies to on the next step: those present, of the selected parameters."""
        return [
            p.grad
            for group in self.optimizer.param_groups
            for p in group["params"]
            if p.grad is not None and (self.param_ids is None or id(p) in self.param_ids)
        ]

    def __call__(self, optimizer: Optimizer, args, kwargs) -> None:
        grads = self.gradients()
        if not grads:
            return
        grad_scale = getattr(optimizer, "grad_scale", None)
        found_inf = getattr(optimizer, "found_inf", None)
        if found_inf is not None and bool(found_inf.item()):
            return  # the fused optimizer skips this step; leave the scaled gradients alone
        spec = self.spec
        if grad_scale is None:
            foreach_gaf_(grads, spec.kind, spec.alpha, spec.beta)
        else:
            inv_scale = grad_scale.double().reciprocal().float()
            for g in grads:  # s·f(g/s); grad_scale may live on another device than g
                g.mul_(inv_scale.to(g.device))
            foreach_gaf_(grads, spec.kind, spec.alpha, spec.beta)
            for g in grads:
                g.mul_(grad_scale.to(g.device))
        self.calls += 1

    def remove(self) -> None:
        """Detach the hook: the optimizer behaves as if GAF had never been attached."""
        self._handle.remove()
        if getattr(self.optimizer, _HANDLE_ATTR, None) is self:
            delattr(self.optimizer, _HANDLE_ATTR)


def attach_gaf(
    optimizer,
    *,
    gaf: GAFKind = "atan",
    alpha: float = 0.1,
    beta: float = 20.0,
    params: Iterable[Tensor] | None = None,
) -> GAFHook:
    """Make ``optimizer`` (any torch optimizer, or a wrapper of one) see f(g) instead of g.

    f is applied in place to the final gradients once per ``step()``; ``params`` limits it to some
    parameters (default: all). Raises ``RuntimeError`` if GAF is already attached to this optimizer.
    """
    spec = validate_gaf(gaf, alpha, beta)
    inner = unwrap_optimizer(optimizer)
    if getattr(inner, _HANDLE_ATTR, None) is not None:
        raise RuntimeError(
            f"GAF is already attached to this {type(inner).__name__}; call .remove() on the first handle "
            "before attaching again (two hooks would apply f twice)"
        )
    hook = GAFHook(inner, spec, params)
    setattr(inner, _HANDLE_ATTR, hook)
    return hook


def attached_gaf(optimizer) -> GAFHook | None:
    """The :class:`GAFHook` attached to ``optimizer`` (or its innermost optimizer), if any."""
    return getattr(unwrap_optimizer(optimizer), _HANDLE_ATTR, None)

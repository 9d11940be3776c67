r"""Gradient activation functions (GAF) as pure tensor functions.

GAF (Liu et al., "Activated Gradients for Deep Neural Networks", arXiv 2107.04228) maps every
gradient coordinate through an odd, monotone function ``f`` before the optimizer uses it:

The kinds (``atan``, ``tanh``, ``log``, ``clip``; gain f'(0) = α·β, bound sup|f| = α·π/2, α, unbounded, α)
live in one table, :mod:`hf_gaf.kinds`, which every path reads.

``clip`` is the piecewise-linear twin of the curves: the same gain up to the knee, then flat. With
α' = α·π/2 and β' = 2β/π it has atan's gain α·β and atan's bound α·π/2 and nothing of its curve (the
``clip-gain`` control preset of the experiment harness).

Small coordinates are multiplied by about α·β (enlarged when α·β > 1), large ones are squashed
towards the bound. A user callable may stand in for ``kind``; it must be elementwise.

Non-finite policy: NaN stays NaN, so a loss scaler still sees an overflow after GAF ran; ±inf maps
to ±bound for the bounded kinds (``atan``, ``tanh``, ``clip``) and stays ±inf for ``log``. With
``nan_on_inf=True`` (what :class:`~hf_gaf.GAFSGD` and :func:`~hf_gaf.attach_gaf` use) ±inf gives NaN
instead: an overflowed gradient then makes the parameter NaN, as in torch's optimizers, rather than
a silent bounded step that a momentum buffer would repeat forever.

bf16/fp16 tensors are computed in float32 and rounded once at the end.

Three forms share the math: :func:`gaf` (out of place), :func:`gaf_` (in place) and
:func:`foreach_gaf_` (in place over a list with ``torch._foreach_*`` kernels).

Example:
    >>> import torch
    >>> from hf_gaf.functional import gaf
    >>> g = torch.tensor([1e-4, 0.5, 100.0])
    >>> gaf(g, "atan", alpha=0.1, beta=20.0)  # 1e-4 is doubled, 100 is capped near 0.1*pi/2
    tensor([0.0002, 0.1471, 0.1570])
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from .kinds import kind as kind_entry

GAFKind = Union[str, Callable[[Tensor], Tensor]]  # noqa: UP007 (a runtime alias: `|` needs Python 3.10 objects)
_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class GAFSpec:
    """A GAF setting, validated when it is made (the one place GAF settings are checked): ``kind`` (a
    name of :data:`GAF_KINDS` or an elementwise callable), ``alpha`` and ``beta`` (finite numbers > 0).
    A bad value is a ``ValueError`` naming it; :func:`validate_gaf` also warns about a gain α·β <= 1."""

    kind: GAFKind
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        if not callable(self.kind):
            kind_entry(self.kind)  # the one "unknown kind" error
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy and torch scalars welcome
                raise ValueError(f"GAF {name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"GAF {name} must be finite and > 0, got {name}={value!r}")
            object.__setattr__(self, name, float(value))

    @property
    def gain(self) -> float:
        """Slope at zero, f'(0) = α·β (for the named kinds)."""
        return self.alpha * self.beta

    @property
    def bound(self) -> float:
        """sup |f| (α times the kind's bound; inf for callables)."""
        return gaf_bound(self.kind, self.alpha)


def gaf_bound(gaf_kind: GAFKind, alpha: float) -> float:
    """The supremum of |f| for ``gaf_kind`` with scale ``alpha`` (``inf`` when unbounded or a callable)."""
    return math.inf if callable(gaf_kind) else alpha * kind_entry(gaf_kind).bound


def validate_gaf(kind: GAFKind | GAFSpec, alpha: float = 0.1, beta: float = 20.0, *, warn: bool = True) -> GAFSpec:
    """The :class:`GAFSpec` of a setting given as ``(kind, alpha, beta)``, checked by its constructor;
    a ``GAFSpec`` passed as ``kind`` is returned as it is (checked when it was made).

    Raises ``ValueError`` (naming the offending value) for an unknown kind or an α/β that is not
    a finite number > 0. Warns when α·β < 1 for a named kind: then f shrinks every gradient (α·β = 1 is a pure
    bound, e.g. clip-by-value v as ``clip`` with α = v, β = 1/v).
    """
    if isinstance(kind, GAFSpec):
        return kind
    spec = GAFSpec(kind, alpha, beta)
    if warn and not callable(kind) and alpha * beta < 1:
        warnings.warn(
            f"GAF gain alpha*beta = {alpha}*{beta} = {alpha * beta:g} < 1: {kind} then shrinks every "
            "gradient, tiny ones too (the paper uses alpha*beta = 2, e.g. alpha=0.1, beta=20)",
            stacklevel=2,
        )
    return spec


def _apply_inplace(x: Tensor, gaf_kind: GAFKind, alpha: float, beta: float, nan_on_inf: bool = False) -> Tensor:
    """f applied to ``x`` in place (α·φ(β·x), φ the kind's ``eager_``); ``x`` is float32 or float64."""
    guard = x - x if nan_on_inf else None  # 0 where x is finite, NaN where it is ±inf or NaN
    if callable(gaf_kind):
        x.copy_(gaf_kind(x))
    else:
        phi_ = kind_entry(gaf_kind).eager_  # e.g. param_groups[0]["gaf"] = "atna" after the groups were checked
        phi_(x.mul_(beta)).mul_(alpha)
    return x if guard is None else x.add_(guard)


def gaf_(
    x: Tensor, kind: GAFKind = "atan", alpha: float = 0.1, beta: float = 20.0, *, nan_on_inf: bool = False
) -> Tensor:
    """Apply f to ``x`` in place and return ``x`` (see the module docstring for f and ``nan_on_inf``)."""
    if x.dtype in _LOW_PRECISION:
        return x.copy_(_apply_inplace(x.float(), kind, alpha, beta, nan_on_inf))
    return _apply_inplace(x, kind, alpha, beta, nan_on_inf)


def gaf(
    x: Tensor, kind: GAFKind = "atan", alpha: float = 0.1, beta: float = 20.0, *, nan_on_inf: bool = False
) -> Tensor:
    """Return f(x) as a new tensor of ``x``'s dtype; ``x`` is left unchanged."""
    work = x.float() if x.dtype in _LOW_PRECISION else x.clone()
    return _apply_inplace(work, kind, alpha, beta, nan_on_inf).to(x.dtype)


def _foreach_apply(
    tensors: list[Tensor], gaf_kind: GAFKind, alpha: float, beta: float, inplace: bool, nan_on_inf: bool
) -> list[Tensor]:
    """f over a list of float32/float64 tensors (α·φ(β·x), φ the kind's ``foreach_``), in place or into new
    tensors."""
    guards = torch._foreach_sub(tensors, tensors) if nan_on_inf else None  # 0, or NaN where non-finite
    if callable(gaf_kind):
        out = [t.copy_(gaf_kind(t)) if inplace else gaf_kind(t) for t in tensors]
    else:
        phi_ = kind_entry(gaf_kind).foreach_
        if inplace:
            out = tensors
            torch._foreach_mul_(out, beta)
        else:
            out = torch._foreach_mul(tensors, beta)  # one pass that also makes the new tensors
        phi_(out)
        torch._foreach_mul_(out, alpha)
    if guards is not None:
        torch._foreach_add_(out, guards)
    return out


def _foreach_dispatch(
    tensors: Sequence[Tensor], kind: GAFKind, alpha: float, beta: float, inplace: bool, nan_on_inf: bool
) -> list[Tensor]:
    """List kernels for float32/float64 tensors, the per-tensor path for bf16/fp16; order kept."""
    tensors = list(tensors)
    fast_index = [i for i, t in enumerate(tensors) if t.dtype not in _LOW_PRECISION]
    out = list(tensors)
    for i, t in enumerate(tensors):
        if t.dtype in _LOW_PRECISION:
            out[i] = (gaf_ if inplace else gaf)(t, kind, alpha, beta, nan_on_inf=nan_on_inf)
    if fast_index:
        fast_out = _foreach_apply([tensors[i] for i in fast_index], kind, alpha, beta, inplace, nan_on_inf)
        for i, t in zip(fast_index, fast_out):
            out[i] = t
    return out


def foreach_gaf_(
    tensors: Sequence[Tensor],
    kind: GAFKind = "atan",
    alpha: float = 0.1,
    beta: float = 20.0,
    *,
    nan_on_inf: bool = False,
) -> None:
    """Apply f in place to every tensor of ``tensors`` with ``torch._foreach_*`` list kernels.

    Gives the same numbers as :func:`gaf_` on each tensor (bf16/fp16 tensors take that path).
    """
    _foreach_dispatch(tensors, kind, alpha, beta, True, nan_on_inf)


def foreach_gaf(
    tensors: Sequence[Tensor],
    kind: GAFKind = "atan",
    alpha: float = 0.1,
    beta: float = 20.0,
    *,
    nan_on_inf: bool = False,
) -> list[Tensor]:
    """Return f of every tensor of ``tensors`` as new tensors; the same numbers as :func:`gaf`."""
    return _foreach_dispatch(tensors, kind, alpha, beta, False, nan_on_inf)

r"""The GAF kinds, one table: each :class:`Kind` holds everything every code path needs of f.

A kind is f(x) = α·φ(β·x) for an odd, monotone φ with φ'(0) = 1 (so the gain at zero is α·β). Its entry
gives φ three ways, one per implementation (as timm's ``create_act.py`` keeps one table per implementation
behind one lookup):

- ``eager_``: φ in place on one float32/float64 tensor (torch's in-place ops: the per-tensor paths);
- ``foreach_``: φ in place on a list of float32/float64 tensors (``torch._foreach_*``: the list kernels);
- ``compiled``: φ out of place in plain torch ops, traced by ``torch.compile`` (:mod:`hf_gaf.compiled_step`);

plus ``bound`` (sup|φ|, so sup|f| = α·bound), ``formula`` (for help texts) and ``triton_code``: the number of
its body in :mod:`hf_gaf.triton_kernels`' ``_gaf_f`` (``None``: no Triton body; such a kind runs on the other
paths, on CUDA too). Adding a kind is one :func:`register_kind` call (and, for the Triton path, its body):
the flag choices (:data:`GAF_KINDS` is a live view), the paths and the "unknown kind" error read this table.

=========  ==================================  ================  ==============
kind       f(x)                                gain f'(0)        bound sup|f|
=========  ==================================  ================  ==============
``atan``   α · atan(β·x)                       α·β               α·π/2
``tanh``   α · tanh(β·x)                       α·β               α
``log``    α · sign(x) · log(1 + β·|x|)        α·β               unbounded
``clip``   α · clamp(β·x, -1, 1)               α·β               α
=========  ==================================  ================  ==============

Example:
    >>> import torch
    >>> kind("tanh").bound, "clip" in GAF_KINDS, list(GAF_KINDS)[:2]
    (1.0, True, ['atan', 'tanh'])
    >>> kind("atna")
    Traceback (most recent call last):
    ...
    ValueError: unknown GAF kind 'atna': expected one of atan, tanh, log, clip or a callable
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Kind", "KindNames", "Registry", "GAF_KINDS", "kind", "register_kind", "unregister_kind", "compiled_phi",
           "atan_f32"]


@dataclass(frozen=True)
class Kind:
    """One GAF kind (module docstring): φ as ``eager_``, ``foreach_`` and ``compiled``, sup|φ| as ``bound``."""

    name: str
    formula: str
    eager_: Callable[[Tensor], Tensor]
    foreach_: Callable[[list[Tensor]], None]
    compiled: Callable[[Tensor], Tensor]
    bound: float
    triton_code: int | None = None


class Registry(dict):
    """Named entries of one sort (the GAF kinds here, the gradient treatments of :mod:`hf_gaf.treatments`):
    :meth:`register` refuses a name taken already, :meth:`lookup` raises the one "unknown" error."""

    def __init__(self, what: str, alternative: str = "") -> None:
        super().__init__()
        self.what, self.alternative = what, alternative

    def register(self, entry):
        """Add ``entry`` under ``entry.name`` (a ``ValueError`` if the name is taken); returns it."""
        if entry.name in self:
            raise ValueError(f"{self.what} {entry.name!r} is registered already")
        self[entry.name] = entry
        return entry

    def lookup(self, name: str):
        """The entry ``name``; a ``ValueError`` naming it and the registered names otherwise."""
        try:
            return self[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.what} {name!r}: expected one of {', '.join(self)}"
                             f"{self.alternative}") from None


_KINDS: Registry = Registry("GAF kind", " or a callable")


class KindNames:
    """The names of a registry (``table``: the GAF kinds by default; :data:`hf_gaf.treatments.TREATMENTS`) after
    ``extra`` ones (``"none"`` for a flag), read live (iteration, ``in``, ``len``): an argparse ``choices`` built
    from it takes and shows an entry registered later too."""

    def __init__(self, *extra: str, table: dict | None = None) -> None:
        self.extra = extra
        self.table = _KINDS if table is None else table

    def __iter__(self) -> Iterator[str]:
        return iter([*self.extra, *self.table])

    def __contains__(self, name: object) -> bool:
        return name in self.extra or name in self.table

    def __len__(self) -> int:
        return len(self.extra) + len(self.table)

    def __repr__(self) -> str:
        return repr(tuple(self))


GAF_KINDS = KindNames()


def register_kind(entry: Kind) -> Kind:
    """Add ``entry`` to the table (a ``ValueError`` if its name is taken); returns it."""
    return _KINDS.register(entry)


def unregister_kind(name: str) -> None:
    """Remove kind ``name`` (a test's toy kind)."""
    del _KINDS[name]


def kind(name: str) -> Kind:
    """The entry of kind ``name``; the one "unknown kind" error otherwise."""
    return _KINDS.lookup(name)


def compiled_phi(name: str) -> Callable[[Tensor], Tensor]:
    """The ``compiled`` op of kind ``name``, looked up in a form ``torch.compile`` traces (the bodies of
    :mod:`hf_gaf.compiled_step` call it with a name their callers checked)."""
    return _KINDS[name].compiled


def atan_f32(x: Tensor) -> Tensor:
    """atan(x) by Cephes' ``atanf``, as the Triton kernels compute it: |x| is reduced to
    z ∈ [-tan(π/8), tan(π/8)] (z = -1/|x| above tan(3π/8), (|x|-1)/(|x|+1) above tan(π/8), one division),
    then atan(|x|) = y0 + z + z³·P(z²) with P of degree 3 and y0 ∈ {0, π/4, π/2}; the sign of x is put back.
    Relative error ≤ 2e-7 in float32 (NaN stays NaN, ±inf gives ±π/2). Written for ``torch.compile``, where
    it becomes part of one vector loop; Inductor's own CPU ``atan`` costs about twice as much.

    Example:
        >>> x = torch.tensor([-1e30, -3.0, -0.5, 0.0, 1e-20, 0.3, 1.0, 40.0])
        >>> bool(((atan_f32(x) - torch.atan(x)).abs() <= 2e-7 * torch.atan(x).abs()).all())
        True
    """
    ax = x.abs()
    big = ax > 2.414213562373095  # tan(3π/8)
    mid = ax > 0.41421356237309503  # tan(π/8)
    numerator = torch.where(big, -1.0, torch.where(mid, ax - 1.0, ax))
    denominator = torch.where(big, ax, torch.where(mid, ax + 1.0, 1.0))
    z = numerator / denominator
    y0 = torch.where(big, 1.5707963267948966, torch.where(mid, 0.7853981633974483, 0.0))
    z2 = z * z
    y = y0 + ((((8.05374449538e-2 * z2 - 1.38776856032e-1) * z2 + 1.99777106478e-1) * z2 - 3.33329491539e-1)
              * z2 * z + z)
    return torch.where(x < 0, -y, y)


def _signed_log1p_(x: Tensor) -> Tensor:
    return x.copy_(torch.copysign(x.abs().log1p_(), x))


def _foreach_signed_log1p_(tensors: list[Tensor]) -> None:
    magnitudes = torch._foreach_abs(tensors)
    torch._foreach_log1p_(magnitudes)
    for target, magnitude in zip(tensors, magnitudes):
        torch.copysign(magnitude, target, out=target)


def _foreach_clamp_unit_(tensors: list[Tensor]) -> None:
    torch._foreach_clamp_min_(tensors, -1.0)
    torch._foreach_clamp_max_(tensors, 1.0)


for _entry in (
    Kind("atan", "alpha*atan(beta*x)", Tensor.atan_, torch._foreach_atan_,
         lambda u: atan_f32(u) if u.dtype == torch.float32 else torch.atan(u), math.pi / 2, triton_code=1),
    Kind("tanh", "alpha*tanh(beta*x)", Tensor.tanh_, torch._foreach_tanh_, torch.tanh, 1.0, triton_code=2),
    Kind("log", "alpha*sign(x)*log(1+beta*|x|)", _signed_log1p_, _foreach_signed_log1p_,
         lambda u: torch.copysign(torch.log1p(u.abs()), u), math.inf, triton_code=3),
    Kind("clip", "alpha*clamp(beta*x, -1, 1)", lambda x: x.clamp_(-1.0, 1.0), _foreach_clamp_unit_,
         lambda u: u.clamp(-1.0, 1.0), 1.0, triton_code=4),
):
    register_kind(_entry)

r"""GAFSGD: ``torch.optim.SGD`` with a gradient activation function.

For one parameter ``p`` with gradient ``g`` (``-g`` when ``maximize``), weight decay λ, momentum μ,
dampening τ, learning rate η and ``f`` from :mod:`hf_gaf.functional`:

placement ``"grad"`` (the reference ``SGD_atan``)::

    d = f(g) + λ·p
    b = μ·b + (1-τ)·d            (b = d on the first step)
    u = d + μ·b if nesterov else b
    p = p - η·u

placement ``"update"`` (the reference ``SGD_atanMom``, the paper's ImageNet setting)::

    d = g + λ·p
    b = μ·b + (1-τ)·d            (the buffer stays raw)
    u = d + μ·b if nesterov else b
    p = p - η·f(u)

Non-finite values: f(±inf) is NaN here (``nan_on_inf`` in :mod:`hf_gaf.functional`), on every path.
A gradient with an inf or NaN therefore makes the parameter NaN, as ``torch.optim.SGD`` does, instead
of a bounded step that the momentum buffer (inf forever with placement ``update``) would repeat
silently. Mixed-precision training skips such steps before the optimizer sees them (GradScaler).

With ``gaf=None`` this is exactly ``torch.optim.SGD`` (bit for bit). Every setting, GAF included,
lives in ``param_groups`` (a group may set ``gaf=None`` to leave norms, biases or a head alone) and
is saved by ``state_dict``; the state key is ``momentum_buffer``, so a torch SGD checkpoint loads.
``p.grad`` is never written.

The functional :func:`gaf_sgd` (beside the class, as ``torch.optim.sgd.sgd``; ``GAFSGD.step`` only
gathers each group and calls it) dispatches to three code paths with one keyword signature: a
per-tensor loop (``_single_tensor_gaf_sgd``), ``torch._foreach`` list kernels (``_multi_tensor_gaf_sgd``)
and the fused step (:func:`_fused_gaf_sgd`: one Triton launch per (device, dtype)
bucket on CUDA, one ``torch.compile``-d pass elsewhere). The first two agree bit for bit, the fused step
with them to float rounding. ``fused`` (``None``, ``True``, ``False``, ``"triton"``, ``"compile"``) and
``foreach`` choose among them by the one rule of :func:`~hf_gaf.step_path.choose_path`, which also reads
the ``HF_GAF_FUSED`` default.

Example:
    >>> import torch
    >>> from hf_gaf import GAFSGD
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = GAFSGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4,
    ...              gaf="atan", alpha=0.1, beta=20.0, placement="update", fused=False)
    >>> model(torch.randn(8, 4)).square().mean().backward()
    >>> opt.step()
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torch.optim import Optimizer

from .compiled_step import CompiledStep
from .functional import GAFKind, GAFSpec, foreach_gaf, foreach_gaf_, gaf, gaf_, validate_gaf
from .step_path import check_fused, choose_path, triton_supported

__all__ = ["GAFSGD", "SGDSettings", "gaf_sgd", "gaf_sgd_update", "momentum_direction", "check_placement",
           "PLACEMENTS"]

PLACEMENTS = ("grad", "update")
GAF_GROUP_KEYS = ("gaf", "alpha", "beta", "placement")


def check_placement(placement: str) -> str:
    """Return ``placement`` if it is ``"grad"`` or ``"update"``, else raise ``ValueError``."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown GAF placement {placement!r}: expected 'grad' or 'update'")
    return placement


@dataclass(frozen=True)
class SGDSettings:
    """The settings of one GAFSGD step, written once and built once per group (``from_group``) or per call
    of :func:`gaf_sgd`; every implementation (per-tensor, list kernels, compiled pass, Triton) takes it.
    The names are ``param_groups``' keys: ``gaf`` is the kind (``None``: plain SGD)."""

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    maximize: bool = False
    gaf: GAFKind | None = "atan"
    alpha: float = 0.1
    beta: float = 20.0
    placement: str = "update"

    @classmethod
    def from_group(cls, group: dict) -> SGDSettings:
        """The settings of a ``param_groups`` entry (a tensor learning rate is read as a number)."""
        return cls(**{f.name: group[f.name] for f in fields(cls)} | {"lr": float(group["lr"])})

    @property
    def on_grad(self) -> bool:
        """f runs on the gradient (placement ``grad``)."""
        return self.gaf is not None and self.placement == "grad"

    @property
    def on_update(self) -> bool:
        """f runs on the momentum update (placement ``update``)."""
        return self.gaf is not None and self.placement == "update"

    def f(self, x: Tensor, owned: bool) -> Tensor:
        """f(x) with ``nan_on_inf``, in place when ``x`` is ``owned`` (a temporary of the step)."""
        return (gaf_ if owned else gaf)(x, self.gaf, self.alpha, self.beta, nan_on_inf=True)

    def foreach_f(self, xs: list[Tensor], owned: bool) -> list[Tensor]:
        """f over a list with the list kernels, in place when ``owned``."""
        if owned:
            foreach_gaf_(xs, self.gaf, self.alpha, self.beta, nan_on_inf=True)
            return xs
        return foreach_gaf(xs, self.gaf, self.alpha, self.beta, nan_on_inf=True)


def momentum_direction(param: Tensor, grad: Tensor, momentum_buffer: Tensor | None,
                       s: SGDSettings) -> tuple[Tensor, Tensor | None]:
    """The SGD update direction of one tensor before the ``update`` placement's f, the one place
    this math is written for the eager paths (module docstring): ``d = f(±g) + λ·p`` (f only with placement
    ``grad``), ``b = μ·b + (1-τ)·d`` (in place; ``b = d`` on the first step), ``u = d + μ·b``
    (Nesterov) or ``b``. Returns ``(u, b)``; ``u`` may be the buffer itself, and ``grad`` is never written."""
    d, owned = (-grad, True) if s.maximize else (grad, False)
    if s.on_grad:
        d, owned = s.f(d, owned), True
    if s.weight_decay != 0:
        d, owned = d.add(param, alpha=s.weight_decay), True
    if s.momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = d.detach().clone()
        else:
            momentum_buffer.mul_(s.momentum).add_(d, alpha=1 - s.dampening)
        d = d.add(momentum_buffer, alpha=s.momentum) if s.nesterov else momentum_buffer
    return d, momentum_buffer


def gaf_sgd_update(param: Tensor, grad: Tensor, momentum_buffer: Tensor | None, settings: SGDSettings) -> Tensor | None:
    """One GAFSGD step for one tensor (the math of the module docstring), in place on ``param``.

    Returns the momentum buffer (a new one on the first step, ``None`` without momentum).
    ``grad`` is read, never written.
    """
    d, momentum_buffer = momentum_direction(param, grad, momentum_buffer, settings)
    if settings.on_update:
        d = settings.f(d, owned=d is not momentum_buffer and d is not grad)
    param.add_(d, alpha=-settings.lr)
    return momentum_buffer


def _single_tensor_gaf_sgd(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor | None],
                           settings: SGDSettings) -> None:
    """:func:`gaf_sgd_update` tensor by tensor; new momentum buffers are written into ``momentum_buffers``."""
    for i, (p, g) in enumerate(zip(params, grads)):
        momentum_buffers[i] = gaf_sgd_update(p, g, momentum_buffers[i], settings)


def _multi_tensor_gaf_sgd(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor | None],
                          settings: SGDSettings) -> None:
    """The same update with ``torch._foreach`` kernels, one call per (device, dtype) bucket; new momentum
    buffers are written into ``momentum_buffers``."""
    for (dev_params, dev_grads, dev_bufs), indices in Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, momentum_buffers], with_indices=True
    ).values():
        dev_bufs = list(dev_bufs)
        _foreach_gaf_sgd(list(dev_params), list(dev_grads), dev_bufs, settings)
        for i, b in zip(indices, dev_bufs):
            momentum_buffers[i] = b


def _foreach_gaf_sgd(params, grads, momentum_buffers, s: SGDSettings) -> None:
    """One bucket of :func:`_multi_tensor_gaf_sgd` (same device and dtype)."""
    d, owned = (torch._foreach_neg(grads), True) if s.maximize else (grads, False)
    if s.on_grad:
        d, owned = s.foreach_f(d, owned), True
    if s.weight_decay != 0:
        d, owned = torch._foreach_add(d, params, alpha=s.weight_decay), True
    if s.momentum != 0:
        if all(b is not None for b in momentum_buffers):
            bufs = momentum_buffers
            torch._foreach_mul_(bufs, s.momentum)
            torch._foreach_add_(bufs, d, alpha=1 - s.dampening)
        else:
            bufs = []
            for i, b in enumerate(momentum_buffers):
                if b is None:
                    b = momentum_buffers[i] = d[i].detach().clone()
                else:
                    b.mul_(s.momentum).add_(d[i], alpha=1 - s.dampening)
                bufs.append(b)
        if s.nesterov:
            d, owned = torch._foreach_add(d, bufs, alpha=s.momentum), True
        else:
            d, owned = bufs, False
    if s.on_update:
        d = s.foreach_f(d, owned)
    torch._foreach_add_(params, d, alpha=-s.lr)


def gaf_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    foreach: bool | None = None,
    fused: bool | str | None = None,
    table_cache=None,
    compiled: CompiledStep | None = None,
    step: int | None = None,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    gaf_kind: GAFKind | None = "atan",
    alpha: float = 0.1,
    beta: float = 20.0,
    placement: str = "update",
) -> None:
    """Functional GAFSGD (the module docstring's math), as ``torch.optim.sgd.sgd``: updates ``params`` in
    place and writes new momentum buffers into ``momentum_buffers`` (``None`` entries, or all ``None``
    without momentum). ``fused``/``foreach`` choose the path (module docstring); ``table_cache`` keeps
    the Triton step's address tables between calls and ``compiled`` the compiled pass with its schedule
    (:class:`GAFSGD` holds one of each); ``step`` (1 on the first step) places the call on that schedule
    (:func:`~hf_gaf.step_path.choose_path`; ``None``, or no ``compiled``: the automatic CPU choice is eager).
    Call it under ``torch.no_grad()`` when ``params`` require grad, as ``GAFSGD.step`` does.

    Example:
        >>> import torch
        >>> p, g = torch.zeros(3), torch.tensor([1e-3, 1.0, -100.0])
        >>> bufs = [None]
        >>> gaf_sgd([p], [g], bufs, lr=1.0, momentum=0.9, gaf_kind="atan", alpha=0.1, beta=20.0, fused=False)
        >>> [round(v, 4) for v in p.tolist()], bufs[0] is not None
        ([-0.002, -0.1521, 0.157], True)
    """
    settings = SGDSettings(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                           nesterov=nesterov, maximize=maximize, gaf=gaf_kind, alpha=alpha, beta=beta,
                           placement=placement)
    _step(params, grads, momentum_buffers, settings, foreach=foreach, fused=fused, table_cache=table_cache,
          compiled=compiled, step=step)


def _step(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor | None], settings: SGDSettings,
          *, foreach: bool | None, fused, table_cache, compiled: CompiledStep | None, step: int | None) -> None:
    """:func:`gaf_sgd` on built ``settings`` (what ``GAFSGD.step`` calls per group)."""
    if not params:
        return
    if compiled is None:  # no object to keep a schedule in: the automatic CPU choice stays eager
        compiled, step = CompiledStep(), None
    path = choose_path(params, fused=fused, foreach=foreach, gaf_kind=settings.gaf, step=step,
                       creates_buffers=settings.momentum != 0 and any(b is None for b in momentum_buffers),
                       can_compile=not compiled.failed, schedule=compiled.schedule)
    eager = _multi_tensor_gaf_sgd if path.foreach else _single_tensor_gaf_sgd
    if path.warm:
        compiled.warm("gaf_sgd", params, settings)
    if path.fused is None:
        eager(params, grads, momentum_buffers, settings)
        return
    left = _fused_gaf_sgd(params, grads, momentum_buffers, backend=path.fused, table_cache=table_cache,
                          compiled=compiled, settings=settings)
    if len(left) == len(params):
        eager(params, grads, momentum_buffers, settings)
    elif left:  # small tensors, left by the compiled pass: list kernels (their buffers exist already)
        _multi_tensor_gaf_sgd([params[k] for k in left], [grads[k] for k in left],
                              [momentum_buffers[k] for k in left], settings)


def _fused_gaf_sgd(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor | None], *,
                   backend: str, table_cache, compiled: CompiledStep, settings: SGDSettings) -> list[int]:
    """The fused GAFSGD step: ``backend="triton"`` one Triton launch per (device, dtype) bucket (two on a step
    that creates momentum buffers: new buffers are written as b = d, torch's first step), with address
    tables cached in ``table_cache`` (a :class:`~hf_gaf.triton_kernels.TableCache`); ``"compile"`` the
    compiled body tensor by tensor (:meth:`CompiledStep.run`). Returns the indices of the tensors it left to the
    eager paths: all of them, having changed nothing, when it cannot run (a gradient whose dtype or layout
    differs from its parameter's; a compile error, warned about once); for ``"compile"`` also the tensors
    too small to be worth a call."""
    if backend == "triton":
        return [] if _triton_gaf_sgd(params, grads, momentum_buffers, table_cache, settings) else list(
            range(len(params)))
    lists = [params, grads, momentum_buffers] if settings.momentum != 0 else [params, grads]
    return compiled.run("gaf_sgd", lists, settings, "GAFSGD")


def _triton_gaf_sgd(params, grads, momentum_buffers, table_cache, settings: SGDSettings) -> bool:
    from . import triton_kernels

    table_cache = table_cache if table_cache is not None else triton_kernels.TableCache()
    use_momentum = settings.momentum != 0
    buckets = Optimizer._group_tensors_by_device_and_dtype([params, grads, momentum_buffers], with_indices=True)
    launches, created = [], []
    for (_, dtype), ((dev_params, dev_grads, dev_bufs), indices) in buckets.items():
        old = [k for k, b in enumerate(dev_bufs) if b is not None or not use_momentum]
        new = [k for k, b in enumerate(dev_bufs) if b is None and use_momentum]
        if new and not all(triton_kernels.same_layout(dev_grads[k], dev_params[k]) for k in new):
            return False
        for k in new:  # dense like its parameter (checked above), so the table's layout check holds
            created.append((indices[k], torch.empty_like(dev_params[k], memory_format=torch.preserve_format)))
        new_bufs = dict(created)
        for subset, first in ((old, False), (new, True)):
            if not subset:
                continue
            lists = [[dev_params[k] for k in subset], [dev_grads[k] for k in subset]]
            if use_momentum:
                lists.append([new_bufs[indices[k]] if first else dev_bufs[k] for k in subset])
            table = table_cache.get(lists[0])
            rows = table.addresses(*lists)
            if rows is None:
                return False
            launches.append((table, rows, first, dtype))
    for index, buf in created:
        momentum_buffers[index] = buf
    for table, rows, first, dtype in launches:
        triton_kernels.gaf_sgd_step(table, rows, settings, first_step=first, dtype=dtype)
    return True


class GAFSGD(Optimizer):
    """SGD with momentum and a gradient activation function; see the module docstring for the math.

    Args:
        params: parameters or parameter groups (a group may override any setting below).
        lr, momentum, dampening, weight_decay, nesterov, maximize, foreach: as ``torch.optim.SGD``.
        gaf: ``"atan"``, ``"tanh"``, ``"log"``, an elementwise callable, ``None`` (plain SGD), or a
            :class:`~hf_gaf.functional.GAFSpec` (validated already; it then also gives α and β).
        alpha, beta: f's scale α and slope β; gain at zero α·β, bound α·π/2 for atan.
        placement: ``"update"`` (f on the momentum update) or ``"grad"`` (f on the raw gradient).
        fused: ``None`` automatic, ``True`` a fused step (one Triton launch per dtype on CUDA, a compiled
            pass elsewhere), ``False`` eager kernels, ``"triton"`` or ``"compile"`` that fused step
            (:func:`~hf_gaf.step_path.choose_path` states the rule).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        gaf: GAFKind | GAFSpec | None = "atan",
        alpha: float = 0.1,
        beta: float = 20.0,
        placement: str = "update",
        fused: bool | str | None = None,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: lr={lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: momentum={momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        check_fused(fused)
        if fused and foreach:
            raise ValueError("`fused` and `foreach` cannot both be True")
        if gaf is not None:  # kind, alpha and beta stay separate in param_groups (checkpointed, overridable)
            spec = validate_gaf(gaf, alpha, beta)
            gaf, alpha, beta = spec.kind, spec.alpha, spec.beta
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
            maximize=maximize, foreach=foreach, fused=fused, gaf=gaf, alpha=alpha, beta=beta, placement=placement,
        )
        super().__init__(params, defaults)  # add_param_group checks each group
        self._triton_tables = None  # hf_gaf.triton_kernels.TableCache, made on the first Triton step
        self.compiled = CompiledStep()  # the compiled pass and its CPU schedule (hf_gaf.compiled_step)

    @staticmethod
    def _check_group(group: dict) -> None:
        check_placement(group["placement"])
        if group["gaf"] is not None:
            GAFSpec(group["gaf"], group["alpha"], group["beta"])  # raises on a bad kind, alpha or beta
            if any(torch.is_complex(p) for p in group["params"]):
                raise ValueError("GAF is an elementwise function of real numbers: a complex parameter would get a "
                                 "rotated step; pass torch.view_as_real views, or gaf=None for that group")

    def add_param_group(self, param_group: dict) -> None:
        """torch's ``add_param_group``, then the GAF checks; a group that fails them is not kept."""
        super().add_param_group(param_group)
        try:
            self._check_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("fused", None)
        self.__dict__.setdefault("_triton_tables", None)
        self.__dict__.setdefault("compiled", CompiledStep())

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a GAFSGD or ``torch.optim.SGD`` checkpoint. GAF settings saved in the checkpoint win;
        a torch SGD checkpoint has none, so each group keeps this optimizer's GAF settings."""
        current = [{k: g[k] for k in GAF_GROUP_KEYS} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, settings in zip(self.param_groups, current):
            for key, value in settings.items():
                group.setdefault(key, value)
            self._check_group(group)

    def _init_group(self, group: dict, params: list, grads: list, momentum_buffers: list) -> int:
        """Gather the group's parameters that have a gradient, their gradients and momentum buffers; count
        the step in each one's state (``step``, a python int, checkpointed); return the group's step count."""
        step = 0
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("GAFSGD does not support sparse gradients")
            params.append(p)
            grads.append(p.grad)
            state = self.state[p]
            momentum_buffers.append(state.get("momentum_buffer") if group["momentum"] != 0 else None)
            state["step"] = int(state.get("step", 0)) + 1
            step = max(step, state["step"])
        return step

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            momentum_buffers: list[Tensor | None] = []
            step = self._init_group(group, params, grads, momentum_buffers)
            if self._triton_tables is None and params and triton_supported(params, group["gaf"]):
                from . import triton_kernels

                self._triton_tables = triton_kernels.TableCache()
            _step(params, grads, momentum_buffers, SGDSettings.from_group(group), foreach=group["foreach"],
                  fused=group["fused"], table_cache=self._triton_tables, compiled=self.compiled, step=step)
            if group["momentum"] != 0:
                for p, b in zip(params, momentum_buffers):
                    self.state[p]["momentum_buffer"] = b
        return loss

    @torch.no_grad()
    def gaf_inputs(self) -> list[tuple[list[Tensor], list[Tensor], GAFSpec]]:
        """What f will be applied to on the next ``step()``, per group with GAF on, as ``(params, inputs, spec)``,
        computed without changing any state (:func:`momentum_direction` on a copy of each buffer): the gradient
        (placement ``grad``) or the momentum update (``update``) of each parameter."""
        out = []
        for group in self.param_groups:
            if group["gaf"] is None:
                continue
            spec = GAFSpec(group["gaf"], group["alpha"], group["beta"])
            params, inputs = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                params.append(p)
                if group["placement"] == "grad":
                    inputs.append(-p.grad if group["maximize"] else p.grad)
                    continue
                buf = self.state[p].get("momentum_buffer") if group["momentum"] != 0 else None
                d, _ = momentum_direction(p, p.grad, None if buf is None else buf.clone(),
                                          SGDSettings.from_group(group))
                inputs.append(d)
            out.append((params, inputs, spec))
        return out

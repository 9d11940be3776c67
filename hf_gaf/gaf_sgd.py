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
per-tensor loop (``_single_tensor_gaf_sgd``, ``foreach=False``), ``torch._foreach`` list kernels
(``_multi_tensor_gaf_sgd``, ``foreach=True``) and a fused step (``_fused_gaf_sgd``, ``fused=True``). The first two agree bit for bit.
The fused step is, on CUDA, ONE Triton kernel launch per (device, dtype) bucket of a group
(:mod:`hf_gaf.triton_kernels`: float32/bfloat16/float16 parameters, math in float32) and, elsewhere,
one pass per group compiled with ``torch.compile`` (Inductor C++ on CPU); both agree with the eager
paths to float rounding. ``fused=None`` (default) picks the Triton kernel for CUDA tensors it
supports, the compiled pass for other dense float parameters when ``torch.compile`` works here,
else the list kernels on CUDA and the per-tensor loop on CPU (as ``torch.optim.SGD``); it falls back
to those, with one warning per process, if compiling fails. The environment variable ``HF_GAF_FUSED`` overrides
the automatic choice: ``0`` eager paths only, ``compile`` the compiled pass even on CUDA, ``triton``
the Triton kernel (also for CPU tensors under ``TRITON_INTERPRET=1``, which is how the tests run it).

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

import os
import warnings

import torch
from torch import Tensor
from torch.optim import Optimizer

from .functional import GAFKind, GAFSpec, foreach_gaf, foreach_gaf_, gaf, gaf_, validate_gaf

PLACEMENTS = ("grad", "update")
GAF_GROUP_KEYS = ("gaf", "alpha", "beta", "placement")


def check_placement(placement: str) -> str:
    """Return ``placement`` if it is ``"grad"`` or ``"update"``, else raise ``ValueError``."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown GAF placement {placement!r}: expected 'grad' or 'update'")
    return placement


def momentum_direction(
    param: Tensor,
    grad: Tensor,
    momentum_buffer: Tensor | None,
    *,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    f=None,
) -> tuple[Tensor, Tensor | None]:
    """The SGD update direction of one tensor before the ``update`` placement's f, the one place
    this math is written for the eager paths (module docstring): ``d = f(±g) + λ·p`` (``f`` given:
    placement ``grad``), ``b = μ·b + (1-τ)·d`` (in place; ``b = d`` on the first step), ``u = d + μ·b``
    (Nesterov) or ``b``. Returns ``(u, b)``; ``u`` may be the buffer itself, and ``grad`` is never written."""
    d, owned = (-grad, True) if maximize else (grad, False)
    if f is not None:
        d, owned = f(d, owned), True
    if weight_decay != 0:
        d, owned = d.add(param, alpha=weight_decay), True
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = d.detach().clone()
        else:
            momentum_buffer.mul_(momentum).add_(d, alpha=1 - dampening)
        d = d.add(momentum_buffer, alpha=momentum) if nesterov else momentum_buffer
    return d, momentum_buffer


def gaf_sgd_update(
    param: Tensor,
    grad: Tensor,
    momentum_buffer: Tensor | None,
    *,
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
) -> Tensor | None:
    """One GAFSGD step for one tensor (the math of the module docstring), in place on ``param``.

    Returns the momentum buffer (a new one on the first step, ``None`` without momentum).
    ``grad`` is read, never written.
    """
    def f(x: Tensor, owned: bool) -> Tensor:
        return (gaf_ if owned else gaf)(x, gaf_kind, alpha, beta, nan_on_inf=True)

    on_grad = gaf_kind is not None and placement == "grad"
    d, momentum_buffer = momentum_direction(param, grad, momentum_buffer, momentum=momentum, dampening=dampening,
                                            weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                                            f=f if on_grad else None)
    if gaf_kind is not None and placement == "update":
        d = f(d, owned=d is not momentum_buffer and d is not grad)
    param.add_(d, alpha=-lr)
    return momentum_buffer


def _single_tensor_gaf_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    gaf_kind: GAFKind | None,
    alpha: float,
    beta: float,
    placement: str,
) -> None:
    """:func:`gaf_sgd_update` tensor by tensor; new momentum buffers are written into ``momentum_buffers``."""
    for i, (p, g) in enumerate(zip(params, grads)):
        momentum_buffers[i] = gaf_sgd_update(
            p, g, momentum_buffers[i], lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov, maximize=maximize, gaf_kind=gaf_kind, alpha=alpha, beta=beta, placement=placement)


def _multi_tensor_gaf_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    gaf_kind: GAFKind | None,
    alpha: float,
    beta: float,
    placement: str,
) -> None:
    """The same update with ``torch._foreach`` kernels, one call per (device, dtype) bucket; new momentum
    buffers are written into ``momentum_buffers``."""
    hyper = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                 maximize=maximize, gaf_kind=gaf_kind, alpha=alpha, beta=beta, placement=placement)
    for (dev_params, dev_grads, dev_bufs), indices in Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, momentum_buffers], with_indices=True
    ).values():
        dev_bufs = list(dev_bufs)
        _foreach_gaf_sgd(list(dev_params), list(dev_grads), dev_bufs, **hyper)
        for i, b in zip(indices, dev_bufs):
            momentum_buffers[i] = b


def _foreach_gaf_sgd(params, grads, momentum_buffers, *, lr, momentum, dampening, weight_decay, nesterov, maximize,
                     gaf_kind, alpha, beta, placement) -> None:
    """One bucket of :func:`_multi_tensor_gaf_sgd` (same device and dtype)."""
    d, owned = (torch._foreach_neg(grads), True) if maximize else (grads, False)
    if gaf_kind is not None and placement == "grad":
        if owned:
            foreach_gaf_(d, gaf_kind, alpha, beta, nan_on_inf=True)
        else:
            d = foreach_gaf(d, gaf_kind, alpha, beta, nan_on_inf=True)
        owned = True
    if weight_decay != 0:
        d, owned = torch._foreach_add(d, params, alpha=weight_decay), True
    if momentum != 0:
        if all(b is not None for b in momentum_buffers):
            bufs = momentum_buffers
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, d, alpha=1 - dampening)
        else:
            bufs = []
            for i, b in enumerate(momentum_buffers):
                if b is None:
                    b = momentum_buffers[i] = d[i].detach().clone()
                else:
                    b.mul_(momentum).add_(d[i], alpha=1 - dampening)
                bufs.append(b)
        if nesterov:
            d, owned = torch._foreach_add(d, bufs, alpha=momentum), True
        else:
            d, owned = bufs, False
    if gaf_kind is not None and placement == "update":
        if owned:
            foreach_gaf_(d, gaf_kind, alpha, beta, nan_on_inf=True)
        else:
            d = foreach_gaf(d, gaf_kind, alpha, beta, nan_on_inf=True)
    torch._foreach_add_(params, d, alpha=-lr)


def _fused_body(params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov, maximize, gaf_kind, alpha, beta, placement):
    """The steady-state step (all momentum buffers exist) written for ``torch.compile`` to fuse."""
    for p, g, b in zip(params, grads, bufs):
        d = -g if maximize else g
        if gaf_kind is not None and placement == "grad":
            d = gaf(d, gaf_kind, alpha, beta, nan_on_inf=True)
        if weight_decay != 0:
            d = d + weight_decay * p
        if momentum != 0:
            b.mul_(momentum).add_(d, alpha=1 - dampening)
            d = d + momentum * b if nesterov else b
        if gaf_kind is not None and placement == "update":
            d = gaf(d, gaf_kind, alpha, beta, nan_on_inf=True)
        p.sub_(lr * d.to(p.dtype))


_compiled_fused_body = None
_compile_failed = False  # a toolchain that cannot compile once will not compile later in this process


def _get_compiled_fused_body():
    global _compiled_fused_body
    if _compiled_fused_body is None:
        _compiled_fused_body = torch.compile(_fused_body, fullgraph=True, dynamic=False)
    return _compiled_fused_body


def _triton_supported(params: list[Tensor], gaf_kind) -> bool:
    """The Triton step takes plain float32/bfloat16/float16 tensors on CUDA (on CPU when asked for by
    ``HF_GAF_FUSED=triton`` under ``TRITON_INTERPRET=1``) and the named kinds; the kernel module
    (and Triton) loads on first use."""
    device = params[0].device
    if callable(gaf_kind) or not (device.type == "cuda" or os.environ.get("HF_GAF_FUSED") == "triton"):
        return False
    from . import triton_kernels

    if gaf_kind is not None and gaf_kind not in triton_kernels.KIND_CODES:
        return False  # an unknown kind set after construction: the eager path names it in its error
    return triton_kernels.runs_on(device) and all(
        type(p) in (torch.nn.Parameter, Tensor) and p.device == device and p.dtype in triton_kernels.SUPPORTED_DTYPES
        for p in params
    )


def _compile_supported(params: list[Tensor], gaf_kind) -> bool:
    """The compiled pass takes dense float tensors on CPU or CUDA, plain (not DTensor), named kinds."""
    if callable(gaf_kind) or _compile_failed:
        return False
    if torch.compiler.is_compiling() or not torch._dynamo.is_dynamo_supported():
        return False
    device = params[0].device
    return all(
        type(p) in (torch.nn.Parameter, Tensor) and p.device == device and device.type in ("cpu", "cuda")
        and p.dtype.is_floating_point
        for p in params
    )


def fused_backend(params: list[Tensor], momentum_buffers: list, *, foreach: bool | None, fused: bool | None,
                  gaf_kind, momentum: float) -> str | None:
    """``"triton"``, ``"compile"`` or ``None`` (eager) for one step (module docstring)."""
    if fused is False or foreach:
        return None
    choice = os.environ.get("HF_GAF_FUSED", "auto")
    if choice == "0" and fused is None:
        return None
    if choice != "compile" and _triton_supported(params, gaf_kind):
        return "triton"
    if choice == "triton":
        raise RuntimeError(
            "HF_GAF_FUSED=triton: the Triton step needs triton and float32/bfloat16/float16 CUDA parameters "
            "(CPU parameters only under TRITON_INTERPRET=1) and a named GAF kind")
    if _compile_failed or (momentum != 0 and any(b is None for b in momentum_buffers)):
        return None  # the first step creates buffers eagerly, as torch.optim.SGD does
    if fused is None and not _compile_supported(params, gaf_kind):
        return None
    return "compile"


def _fused_gaf_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    gaf_kind: GAFKind | None,
    alpha: float,
    beta: float,
    placement: str,
    backend: str = "compile",
    table_cache=None,
) -> bool:
    """The fused step: ``backend="triton"`` one Triton launch per (device, dtype) bucket (two on a step
    that creates momentum buffers: new buffers are written as b = d, torch's first step), with address
    tables cached in ``table_cache`` (a :class:`~hf_gaf.triton_kernels.TableCache`); ``"compile"`` one
    ``torch.compile``-d pass. Returns False, having changed nothing, when it cannot run (a gradient
    whose dtype or layout differs from its parameter's; a compile error, warned about once); the
    eager paths then take the step."""
    hyper = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                 maximize=maximize, gaf_kind=gaf_kind, alpha=alpha, beta=beta, placement=placement)
    if backend == "triton":
        return _triton_gaf_sgd(params, grads, momentum_buffers, table_cache, hyper)
    return _compiled_gaf_sgd(params, grads, momentum_buffers, hyper)


def _triton_gaf_sgd(params, grads, momentum_buffers, table_cache, hyper) -> bool:
    from . import triton_kernels

    table_cache = table_cache if table_cache is not None else triton_kernels.TableCache()
    use_momentum = hyper["momentum"] != 0
    buckets = Optimizer._group_tensors_by_device_and_dtype([params, grads, momentum_buffers], with_indices=True)
    launches, created = [], []
    for (device, dtype), ((dev_params, dev_grads, dev_bufs), indices) in buckets.items():
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
        triton_kernels.gaf_sgd_step(table, rows, first_step=first, dtype=dtype, **hyper)
    return True


def _compiled_gaf_sgd(params, grads, momentum_buffers, hyper) -> bool:
    global _compile_failed
    bufs = momentum_buffers if hyper["momentum"] != 0 else [torch.empty(0)] * len(params)
    # lr as a 0-dim tensor: a python float would be baked into the graph and every scheduler
    # step would recompile it
    lr = torch.tensor(hyper["lr"], dtype=torch.float64, device=params[0].device)
    try:
        _get_compiled_fused_body()(
            params, grads, bufs, lr, hyper["momentum"], hyper["dampening"], hyper["weight_decay"],
            hyper["nesterov"], hyper["maximize"], hyper["gaf_kind"], hyper["alpha"], hyper["beta"],
            hyper["placement"],
        )
        return True
    except Exception as err:  # torch.compile can fail for toolchain reasons; eager is always right
        _compile_failed = True
        warnings.warn(f"GAFSGD: the fused (torch.compile) step failed, using the eager kernels instead: {err}")
        return False


def gaf_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    table_cache=None,
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
    the Triton step's address tables between calls (:class:`GAFSGD` holds one). Call it under
    ``torch.no_grad()`` when ``params`` require grad, as ``GAFSGD.step`` does.

    Example:
        >>> import torch
        >>> p, g = torch.zeros(3), torch.tensor([1e-3, 1.0, -100.0])
        >>> bufs = [None]
        >>> gaf_sgd([p], [g], bufs, lr=1.0, momentum=0.9, gaf_kind="atan", alpha=0.1, beta=20.0, fused=False)
        >>> [round(v, 4) for v in p.tolist()], bufs[0] is not None
        ([-0.002, -0.1521, 0.157], True)
    """
    if not params:
        return
    hyper = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                 maximize=maximize, gaf_kind=gaf_kind, alpha=alpha, beta=beta, placement=placement)
    backend = fused_backend(params, momentum_buffers, foreach=foreach, fused=fused, gaf_kind=gaf_kind, momentum=momentum)
    if backend is not None and _fused_gaf_sgd(params, grads, momentum_buffers, backend=backend,
                                              table_cache=table_cache, **hyper):
        return
    if foreach is None:
        # as torch.optim.SGD: list kernels on CUDA; on CPU the per-tensor loop is faster
        foreach = all(p.device.type == "cuda" for p in params) and not callable(gaf_kind)
    (_multi_tensor_gaf_sgd if foreach else _single_tensor_gaf_sgd)(params, grads, momentum_buffers, **hyper)


class GAFSGD(Optimizer):
    """SGD with momentum and a gradient activation function; see the module docstring for the math.

    Args:
        params: parameters or parameter groups (a group may override any setting below).
        lr, momentum, dampening, weight_decay, nesterov, maximize, foreach: as ``torch.optim.SGD``.
        gaf: ``"atan"``, ``"tanh"``, ``"log"``, an elementwise callable, ``None`` (plain SGD), or a
            :class:`~hf_gaf.functional.GAFSpec` (validated already; it then also gives α and β).
        alpha, beta: f's scale α and slope β; gain at zero α·β, bound α·π/2 for atan.
        placement: ``"update"`` (f on the momentum update) or ``"grad"`` (f on the raw gradient).
        fused: ``True`` the fused step (one Triton launch per dtype on CUDA, a compiled pass elsewhere),
            ``False`` eager kernels, ``None`` automatic (module docstring).
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
        fused: bool | None = None,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: lr={lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: momentum={momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
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

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a GAFSGD or ``torch.optim.SGD`` checkpoint. GAF settings saved in the checkpoint win;
        a torch SGD checkpoint has none, so each group keeps this optimizer's GAF settings."""
        current = [{k: g[k] for k in GAF_GROUP_KEYS} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, settings in zip(self.param_groups, current):
            for key, value in settings.items():
                group.setdefault(key, value)
            self._check_group(group)

    def _init_group(self, group: dict, params: list, grads: list, momentum_buffers: list) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("GAFSGD does not support sparse gradients")
            params.append(p)
            grads.append(p.grad)
            momentum_buffers.append(self.state[p].get("momentum_buffer") if group["momentum"] != 0 else None)

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
            self._init_group(group, params, grads, momentum_buffers)
            if self._triton_tables is None and params and _triton_supported(params, group["gaf"]):
                from . import triton_kernels

                self._triton_tables = triton_kernels.TableCache()
            gaf_sgd(params, grads, momentum_buffers, foreach=group["foreach"], fused=group["fused"],
                    table_cache=self._triton_tables, lr=float(group["lr"]), momentum=group["momentum"],
                    dampening=group["dampening"], weight_decay=group["weight_decay"], nesterov=group["nesterov"],
                    maximize=group["maximize"], gaf_kind=group["gaf"], alpha=group["alpha"], beta=group["beta"],
                    placement=group["placement"])
            if group["momentum"] != 0:
                for p, b in zip(params, momentum_buffers):
                    self.state[p]["momentum_buffer"] = b
        return loss

    @torch.no_grad()
    def gaf_inputs(self) -> list[tuple[list[Tensor], GAFSpec]]:
        """What f will be applied to on the next ``step()``, per group with GAF on, computed without
        changing any state (:func:`momentum_direction` on a copy of each buffer): the gradient
        (placement ``grad``) or the momentum update (``update``)."""
        out = []
        for group in self.param_groups:
            if group["gaf"] is None:
                continue
            spec = GAFSpec(group["gaf"], group["alpha"], group["beta"])
            inputs = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["placement"] == "grad":
                    inputs.append(-p.grad if group["maximize"] else p.grad)
                    continue
                buf = self.state[p].get("momentum_buffer") if group["momentum"] != 0 else None
                d, _ = momentum_direction(p, p.grad, None if buf is None else buf.clone(), momentum=group["momentum"],
                                          dampening=group["dampening"], weight_decay=group["weight_decay"],
                                          nesterov=group["nesterov"], maximize=group["maximize"])
                inputs.append(d)
            out.append((inputs, spec))
        return out

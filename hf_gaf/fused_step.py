r"""Which code path runs a GAF step, and the fused GAFSGD step itself.

:func:`choose_path` is the one place that decides, for :class:`~hf_gaf.GAFSGD` and for
:func:`~hf_gaf.attach_gaf`, from the tensors and the ``fused`` / ``foreach`` arguments:

- ``fused``: ``None`` (automatic), ``True`` (a fused path: Triton where it runs, else the compiled
  pass), ``False`` (eager), ``"triton"`` (the Triton kernel, or an error where it cannot run) or
  ``"compile"`` (the compiled pass, even on CUDA). ``foreach=True`` means eager list kernels.
- ``fused=None`` takes its value from the environment variable ``HF_GAF_FUSED`` when it is set, read
  here and nowhere else (:func:`fused_default`): ``auto`` (as unset), ``0`` (eager), ``compile``,
  ``triton``. Any other value is an error naming it.
- Automatic rule, as ``torch.optim``'s ``_default_to_fused_or_foreach``: the Triton kernel for CUDA
  tensors it supports (float32/bfloat16/float16, dense, one device, a named kind; CPU tensors too under
  ``TRITON_INTERPRET=1`` when ``"triton"`` is asked for); else the compiled pass for dense float
  tensors on CPU or CUDA when ``torch.compile`` works here (GAFSGD only); else eager: list kernels on
  CUDA, the per-tensor loop on CPU.
- The compiled pass waits for the momentum buffers: a step that creates them runs eagerly, as
  ``torch.optim.SGD``'s first step. A compile failure is warned about once and the process stays eager.

Example:
    >>> import torch
    >>> choose_path([torch.zeros(3)], fused=False, foreach=None, gaf_kind="atan")
    Path(fused=None, foreach=False)
    >>> choose_path([torch.zeros(3)], fused="compile", foreach=None, gaf_kind="atan").fused
    'compile'
"""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from .functional import GAFKind, gaf

__all__ = ["FUSED_CHOICES", "Path", "check_fused", "choose_path", "fused_default", "triton_supported",
           "fused_gaf_sgd"]

FUSED_CHOICES = (None, True, False, "triton", "compile")
FUSED_ENV = "HF_GAF_FUSED"
_ENV_VALUES = {"auto": None, "": None, "0": False, "compile": "compile", "triton": "triton"}


class Path(NamedTuple):
    """What runs a step: ``fused`` is ``"triton"``, ``"compile"`` or ``None`` (eager), and ``foreach``
    chooses the eager implementation (list kernels or the per-tensor loop), also the fallback of a fused
    path that cannot take a given step."""

    fused: str | None
    foreach: bool


def check_fused(fused) -> None:
    """``fused`` must be one of :data:`FUSED_CHOICES` (a ``ValueError`` naming it otherwise)."""
    if fused not in FUSED_CHOICES or (fused is not None and not isinstance(fused, (bool, str))):
        raise ValueError(f"fused={fused!r}: expected None, True, False, 'triton' or 'compile'")


def fused_default():
    """The value ``fused=None`` takes: ``HF_GAF_FUSED`` (module docstring), ``None`` when unset."""
    value = os.environ.get(FUSED_ENV)
    if value is None:
        return None
    if value.strip().lower() not in _ENV_VALUES:
        raise ValueError(f"{FUSED_ENV}={value!r}: expected auto, 0, compile or triton")
    return _ENV_VALUES[value.strip().lower()]


def triton_supported(tensors: list[Tensor], gaf_kind, allow_cpu: bool = False) -> bool:
    """The Triton kernels take plain float32/bfloat16/float16 tensors on one CUDA device (on CPU when
    ``allow_cpu`` and Triton's interpreter is on) and the named kinds; the kernel module loads on first use."""
    device = tensors[0].device
    if callable(gaf_kind) or not (device.type == "cuda" or allow_cpu):
        return False
    from . import triton_kernels

    if gaf_kind is not None and gaf_kind not in triton_kernels.KIND_CODES:
        return False  # an unknown kind set after construction: the eager path names it in its error
    return triton_kernels.runs_on(device) and all(
        type(t) in (torch.nn.Parameter, Tensor) and t.device == device and t.dtype in triton_kernels.SUPPORTED_DTYPES
        for t in tensors
    )


def _compile_supported(tensors: list[Tensor], gaf_kind) -> bool:
    """The compiled pass takes dense float tensors on one CPU or CUDA device, plain (not DTensor), named kinds."""
    if callable(gaf_kind) or _compile_failed:
        return False
    if torch.compiler.is_compiling() or not torch._dynamo.is_dynamo_supported():
        return False
    device = tensors[0].device
    return all(type(t) in (torch.nn.Parameter, Tensor) and t.device == device and device.type in ("cpu", "cuda")
               and t.dtype.is_floating_point for t in tensors)


def choose_path(tensors: list[Tensor], *, fused, foreach: bool | None, gaf_kind, creates_buffers: bool = False,
                can_compile: bool = True) -> Path:
    """The path of one step over ``tensors`` (the parameters, or the gradients for ``attach_gaf``), by the
    rule of the module docstring. ``creates_buffers``: this step makes the momentum buffers (the compiled
    pass waits); ``can_compile``: the caller has a compiled pass (GAFSGD does, ``attach_gaf`` not yet).
    ``fused="triton"`` where the kernel cannot run is a ``RuntimeError``."""
    check_fused(fused)
    eager = Path(None, foreach if foreach is not None else
                 all(t.device.type == "cuda" for t in tensors) and not callable(gaf_kind))
    if fused is None:
        fused = fused_default()
        automatic = True
    else:
        automatic = False
    if fused is False or foreach or not tensors:
        return eager
    if fused != "compile" and triton_supported(tensors, gaf_kind, allow_cpu=fused == "triton"):
        return Path("triton", eager.foreach)
    if fused == "triton":
        raise RuntimeError("fused='triton' (or HF_GAF_FUSED=triton): the Triton step needs triton and "
                           "float32/bfloat16/float16 CUDA tensors (CPU tensors only under TRITON_INTERPRET=1) and a "
                           "named GAF kind")
    if not can_compile or creates_buffers or _compile_failed:
        return eager
    if (automatic or fused is True) and not _compile_supported(tensors, gaf_kind):
        return eager
    return Path("compile", eager.foreach)


# --- the fused GAFSGD step ------------------------------------------------------------------------------

def _fused_body(params, grads, bufs, *, lr, momentum, dampening, weight_decay, nesterov, maximize, gaf_kind, alpha,
                beta, placement):
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


def fused_gaf_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    backend: str,
    table_cache=None,
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
) -> bool:
    """The fused GAFSGD step: ``backend="triton"`` one Triton launch per (device, dtype) bucket (two on a step
    that creates momentum buffers: new buffers are written as b = d, torch's first step), with address
    tables cached in ``table_cache`` (a :class:`~hf_gaf.triton_kernels.TableCache`); ``"compile"`` one
    ``torch.compile``-d pass. Returns False, having changed nothing, when it cannot run (a gradient
    whose dtype or layout differs from its parameter's; a compile error, warned about once); the
    eager paths then take the step."""
    hyper = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                 maximize=maximize, gaf_kind=gaf_kind, alpha=alpha, beta=beta, placement=placement)
    if backend == "triton":
        return _triton_gaf_sgd(params, grads, momentum_buffers, table_cache, **hyper)
    return _compiled_gaf_sgd(params, grads, momentum_buffers, **hyper)


def _triton_gaf_sgd(params, grads, momentum_buffers, table_cache, **hyper) -> bool:
    from . import triton_kernels

    table_cache = table_cache if table_cache is not None else triton_kernels.TableCache()
    use_momentum = hyper["momentum"] != 0
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
        triton_kernels.gaf_sgd_step(table, rows, first_step=first, dtype=dtype, **hyper)
    return True


def _compiled_gaf_sgd(params, grads, momentum_buffers, *, lr, **hyper) -> bool:
    global _compile_failed
    bufs = momentum_buffers if hyper["momentum"] != 0 else [torch.empty(0)] * len(params)
    # lr as a 0-dim tensor: a python float would be baked into the graph and every scheduler
    # step would recompile it
    lr = torch.tensor(lr, dtype=torch.float64, device=params[0].device)
    try:
        _get_compiled_fused_body()(params, grads, bufs, lr=lr, **hyper)
        return True
    except Exception as err:  # torch.compile can fail for toolchain reasons; eager is always right
        _compile_failed = True
        warnings.warn(f"GAFSGD: the fused (torch.compile) step failed, using the eager kernels instead: {err}",
                      stacklevel=3)
        return False

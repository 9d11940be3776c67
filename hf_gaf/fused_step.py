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
  tensors on CPU or CUDA when ``torch.compile`` works here; else eager: list kernels on CUDA, the
  per-tensor loop on CPU.
- The compiled pass waits for the momentum buffers: a step that creates them runs eagerly, as
  ``torch.optim.SGD``'s first step. A compile failure is warned about once and the process stays eager.
- On CPU, the automatic choice never makes a short run pay for compilation: a group's steps (counted in
  the optimizer's state, so a resumed run counts on) run eagerly; at step :data:`COMPILE_START_STEP` the
  compiled pass starts compiling in a background thread (one log line says so, once per process) while
  the eager steps go on; from step :data:`COMPILE_SWITCH_STEP` the compiled pass runs (waiting for the
  compilation only if it is not done by then). The switch step is fixed, not "when ready", so two runs of
  the same command, and a run and its resumption, take the same path at every step. ``fused=True`` or
  ``"compile"`` compiles at once (blocking, on the second step).

Example:
    >>> import torch
    >>> choose_path([torch.zeros(3)], fused=False, foreach=None, gaf_kind="atan")
    Path(fused=None, foreach=False, warm=False)
    >>> choose_path([torch.zeros(3)], fused="compile", foreach=None, gaf_kind="atan").fused
    'compile'
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from .functional import GAFKind, gaf

__all__ = ["FUSED_CHOICES", "Path", "check_fused", "choose_path", "fused_default", "triton_supported",
           "fused_gaf_sgd", "compile_in_background", "run_compiled", "sgd_compiled_arguments", "COMPILE_START_STEP",
           "COMPILE_SWITCH_STEP"]

logger = logging.getLogger("hf_gaf")
COMPILE_START_STEP = 100  # CPU, fused=None: the background compilation starts at this step of a group
COMPILE_SWITCH_STEP = 3000  # ... and the compiled pass runs from this step on

FUSED_CHOICES = (None, True, False, "triton", "compile")
FUSED_ENV = "HF_GAF_FUSED"
_ENV_VALUES = {"auto": None, "": None, "0": False, "compile": "compile", "triton": "triton"}


class Path(NamedTuple):
    """What runs a step: ``fused`` is ``"triton"``, ``"compile"`` or ``None`` (eager), and ``foreach``
    chooses the eager implementation (list kernels or the per-tensor loop), also the fallback of a fused
    path that cannot take a given step. ``warm``: an eager step that should also start compiling the
    compiled pass in the background (:func:`compile_in_background`)."""

    fused: str | None
    foreach: bool
    warm: bool = False


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
    if not torch._dynamo.is_dynamo_supported():
        return False
    # inside a user's torch.compile of the step, no second compilation; torch's flag is process-wide, so while
    # a background compilation of ours runs it says nothing about this thread
    if torch.compiler.is_compiling() and not any(thread.is_alive() for thread, _ in _warming.values()):
        return False
    device = tensors[0].device
    return all(type(t) in (torch.nn.Parameter, Tensor) and t.device == device and device.type in ("cpu", "cuda")
               and t.dtype.is_floating_point for t in tensors)


def choose_path(tensors: list[Tensor], *, fused, foreach: bool | None, gaf_kind, creates_buffers: bool = False,
                can_compile: bool = True, step: int | None = None) -> Path:
    """The path of one step over ``tensors`` (the parameters, or the gradients for ``attach_gaf``), by the
    rule of the module docstring. ``creates_buffers``: this step makes the momentum buffers (the compiled
    pass waits); ``can_compile``: the caller may use a compiled pass (False: only Triton or eager);
    ``step``: the group's step count (1 on its first step), which schedules the automatic CPU compilation
    (``None``: no schedule, the automatic CPU choice stays eager). ``fused="triton"`` where the kernel cannot
    run is a ``RuntimeError``."""
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
    if automatic and tensors[0].device.type == "cpu":  # the schedule of the module docstring
        if step is None or step < COMPILE_START_STEP:
            return eager
        if step < COMPILE_SWITCH_STEP:
            return eager._replace(warm=True)
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


_compile_failed = False  # a toolchain that cannot compile once will not compile later in this process


_warming: dict[tuple, tuple[threading.Thread, dict]] = {}  # signature -> (thread, {"error": ...} if it failed)
_noted = False


def _gaf_grads_body(grads, *, gaf_kind, alpha, beta):
    """``attach_gaf``'s transform, f applied in place to every gradient, written for ``torch.compile``."""
    for g in grads:
        g.copy_(gaf(g, gaf_kind, alpha, beta, nan_on_inf=True))


_BODIES = {"gaf_sgd": _fused_body, "gaf_grads": _gaf_grads_body}
_compiled_bodies: dict = {}


def _compiled(name: str):
    if name not in _compiled_bodies:
        _compiled_bodies[name] = torch.compile(_BODIES[name], fullgraph=True, dynamic=False)
    return _compiled_bodies[name]


def _signature(name: str, lists, kwargs) -> tuple:
    """What a compiled graph is specialised on: every tensor's type, shape, stride, dtype, device and
    requires_grad, and the scalar settings (tensors among them, such as lr, are arguments, not part of it)."""
    def meta(t):
        return None if t is None else (type(t).__name__, tuple(t.shape), t.stride(), t.dtype, t.device,
                                       t.requires_grad)
    return (name, tuple(tuple(map(meta, tensors)) for tensors in lists),
            tuple(sorted((k, v) for k, v in kwargs.items() if not isinstance(v, Tensor))))


def _like(t: Tensor) -> Tensor:
    c = t.detach().clone()
    return torch.nn.Parameter(c, requires_grad=t.requires_grad) if isinstance(t, torch.nn.Parameter) else c


def compile_in_background(name: str, lists, kwargs: dict) -> None:
    """Start compiling body ``name`` (``"gaf_sgd"`` or ``"gaf_grads"``) for these tensor lists in a daemon
    thread at the lowest CPU priority (nice 19 on Linux), on copies (the training tensors are never touched
    from there), unless it is compiled or compiling already. The first time in a process, one log line says
    what happens and how to turn it off."""
    global _noted
    key = _signature(name, lists, kwargs)
    if key in _warming:
        return
    copies = [[_like(t) if t is not None else None for t in tensors] for tensors in lists]
    result: dict = {}

    def warm() -> None:
        try:  # the lowest CPU priority for this thread and the compiler processes it starts: training comes first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):  # not Linux, or not allowed: compile at normal priority
            pass
        try:
            with torch.no_grad():  # as the optimizer step runs it: grad mode is part of the graph's guards
                _compiled(name)(*copies, **kwargs)
        except Exception as err:  # the step that would switch reports it and stays eager
            result["error"] = err

    thread = threading.Thread(target=warm, name="hf_gaf-compile", daemon=True)
    _warming[key] = (thread, result)
    if not _noted:
        _noted = True
        logger.warning(
            "hf_gaf: compiling GAF's fused CPU step in the background (torch.compile: about a minute per group "
            "of parameters with an empty cache, seconds with a warm one); training goes on with the eager step "
            "and switches at step %d. fused=False (GAFSGD, attach_gaf) or HF_GAF_FUSED=0 keeps the eager step "
            "throughout.", COMPILE_SWITCH_STEP)
    thread.start()


def run_compiled(name: str, lists, kwargs: dict, what: str) -> bool:
    """Body ``name`` compiled, on ``lists``: on its first call, waiting for a background compilation of the same
    tensors (logged when it is not done yet), so this call hits the cache. False, having changed nothing, when
    compiling fails (warned once; the process stays eager)."""
    global _compile_failed
    try:
        # only until the first compiled call: the entry is dropped then, so later steps skip the signature
        entry = _warming.pop(_signature(name, lists, kwargs), None) if _warming else None
        if entry is not None:
            thread, result = entry
            if thread.is_alive():
                logger.warning("hf_gaf: step %d reached before the background compilation finished; waiting for it",
                               COMPILE_SWITCH_STEP)
                thread.join()
            if "error" in result:
                raise result["error"]
        _compiled(name)(*lists, **kwargs)
        return True
    except Exception as err:  # torch.compile can fail for toolchain reasons; eager is always right
        _compile_failed = True
        warnings.warn(f"{what}: the fused (torch.compile) step failed, using the eager kernels instead: {err}",
                      stacklevel=3)
        return False


def sgd_compiled_arguments(params, grads, momentum_buffers, *, lr, **hyper):
    """The compiled GAFSGD body's arguments: buffers (or empty stand-ins without momentum) and lr as a 0-dim
    float64 tensor (a python float would be baked into the graph, and every scheduler step would recompile it)."""
    bufs = momentum_buffers if hyper["momentum"] != 0 else [torch.empty(0)] * len(params)
    lr = torch.tensor(lr, dtype=torch.float64, device=params[0].device)
    return (params, grads, bufs), dict(lr=lr, **hyper)


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


def _compiled_gaf_sgd(params, grads, momentum_buffers, **hyper) -> bool:
    args, kwargs = sgd_compiled_arguments(params, grads, momentum_buffers, **hyper)
    return run_compiled("gaf_sgd", args, kwargs, "GAFSGD")

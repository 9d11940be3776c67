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
- The compiled pass is ONE small graph per setting and dtype (:func:`run_compiled`): the step of one
  tensor, on flat views with dynamic sizes and the scalars as 0-dim tensors, called tensor by tensor for
  tensors of at least :data:`COMPILE_MIN_NUMEL` elements (smaller ones take the list kernels: a call costs
  more than their step). So compiling it costs the same for any model (about 13 s of one core with an
  empty Inductor cache, 2-3 s with a warm one, measured on a 2-core CPU), and a learning-rate change
  never recompiles. atan is :func:`atan_f32` there (Cephes' ``atanf``, as the Triton kernel; float64
  tensors keep ``torch.atan``).
- The compiled pass waits for the momentum buffers: a step that creates them runs eagerly, as
  ``torch.optim.SGD``'s first step. A compile failure is warned about once and the process stays eager.
- On CPU, the automatic choice never makes a short run pay for compilation: a group's steps (counted in
  the optimizer's state, so a resumed run counts on) run eagerly (a group with ``gaf=None`` always: it is
  then ``torch.optim.SGD`` bit for bit); at step :data:`COMPILE_START_STEP` the
  compiled pass starts compiling in a background thread at normal priority (one log line says so, once
  per process) while the eager steps go on; from step :data:`COMPILE_SWITCH_STEP` the compiled pass runs
  (waiting for the compilation only if it is not done by then). The switch step is fixed, not "when
  ready", so two runs of the same command, and a run and its resumption, take the same path at every
  step. ``fused=True`` or ``"compile"`` compiles at once (blocking, on the second step).

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

from .functional import GAFKind

__all__ = ["FUSED_CHOICES", "Path", "check_fused", "choose_path", "fused_default", "triton_supported",
           "atan_f32", "fused_gaf_sgd", "compile_in_background", "run_compiled", "COMPILE_START_STEP",
           "COMPILE_SWITCH_STEP", "COMPILE_MIN_NUMEL"]

logger = logging.getLogger("hf_gaf")
COMPILE_START_STEP = 100  # CPU, fused=None: the background compilation starts at this step of a group
COMPILE_SWITCH_STEP = 3000  # ... and the compiled pass runs from this step on
COMPILE_MIN_NUMEL = 4096  # smaller tensors take the eager kernels beside the compiled pass (a call costs ~25 µs)

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
        if step is None or step < COMPILE_START_STEP or gaf_kind is None:  # gaf=None: torch's SGD bit for bit
            return eager
        if step < COMPILE_SWITCH_STEP:
            return eager._replace(warm=True)
    return Path("compile", eager.foreach)


# --- the compiled pass --------------------------------------------------------------------------------

def _flat(t: Tensor) -> Tensor:
    """The 1-D alias of a tensor that covers its memory densely (``triton_kernels.same_layout``), element k =
    memory k, detached: neither ``requires_grad`` nor a view's base, both of which a compiled graph guards on
    (a parameter's flat view would otherwise not match the graph compiled on stand-in tensors)."""
    return (t.view(-1) if t.is_contiguous() else t.as_strided((t.numel(),), (1,))).detach()


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


def _compiled_f(x: Tensor, alpha: Tensor, beta: Tensor, gaf_kind: str) -> Tensor:
    """f(x) with ``nan_on_inf`` (module :mod:`hf_gaf.functional`) for the compiled bodies: float64 tensors with
    torch's own functions, the others in float32 with :func:`atan_f32` for atan, rounded once to x's dtype."""
    work = x if x.dtype == torch.float64 else x.float()
    u = beta * work
    if gaf_kind == "atan":
        y = atan_f32(u) if work.dtype == torch.float32 else torch.atan(u)
    elif gaf_kind == "tanh":
        y = torch.tanh(u)
    elif gaf_kind == "clip":
        y = u.clamp(-1.0, 1.0)
    else:
        y = torch.copysign(torch.log1p(u.abs()), u)
    # NaN where x is not finite; a select, where the eager kernels add x - x: here that costs a third of the step
    return torch.where(torch.isfinite(work), alpha * y, float("nan")).to(x.dtype)


def _sgd_tensor_body(lr, momentum, dampening, weight_decay, alpha, beta, p, g, b=None, *, gaf_kind, placement,
                     nesterov, maximize, use_momentum, use_weight_decay):
    """One tensor's GAFSGD step (the math of :mod:`hf_gaf.gaf_sgd`, all momentum buffers made), in place on
    flat views; the scalars are 0-dim tensors, so one compiled graph serves every size and every value."""
    d = -g if maximize else g
    if gaf_kind is not None and placement == "grad":
        d = _compiled_f(d, alpha, beta, gaf_kind)
    if use_weight_decay:
        d = d + weight_decay * p
    if use_momentum:
        b.mul_(momentum).add_((1 - dampening) * d)
        d = d + momentum * b if nesterov else b
    if gaf_kind is not None and placement == "update":
        d = _compiled_f(d, alpha, beta, gaf_kind)
    p.sub_(lr * d)


def _grads_tensor_body(alpha, beta, g, *, gaf_kind):
    """``attach_gaf``'s transform for one gradient: g = f(g) in place, on a flat view."""
    g.copy_(_compiled_f(g, alpha, beta, gaf_kind))


_BODIES = {"gaf_sgd": _sgd_tensor_body, "gaf_grads": _grads_tensor_body}
_compiled_bodies: dict = {}
_compile_failed = False  # a toolchain that cannot compile once will not compile later in this process
_warming: dict[tuple, tuple[threading.Thread, dict]] = {}  # graph key -> (thread, {"error": ...} if it failed)
_compiled_keys: set = set()  # graphs that ran once in this process (no background compilation to wait for)
_noted = False


def _compiled(name: str):
    """The ``torch.compile``-d body ``name``: dynamic sizes (every tensor is a flat view), so its graphs are
    one per setting and dtype, never per tensor shape."""
    if name not in _compiled_bodies:
        _compiled_bodies[name] = torch.compile(_BODIES[name], fullgraph=True, dynamic=True)
    return _compiled_bodies[name]


def _scalars(values, dtype: torch.dtype, device) -> list[Tensor]:
    """The bodies' scalar arguments as 0-dim tensors in the compute dtype (float64 for float64 tensors, else
    float32), the type a python float is rounded to by the eager kernels."""
    dtype = torch.float64 if dtype == torch.float64 else torch.float32
    return list(torch.tensor(values, dtype=dtype, device=device).unbind())


def _graph_key(name: str, tensor: Tensor, static: dict) -> tuple:
    """What a compiled graph is specialised on: the body, dtype and device, and the settings that are not
    tensors (kind, placement, the momentum and weight-decay switches)."""
    return (name, tensor.dtype, tensor.device.type, tuple(sorted(static.items())))


def _settings(name: str, hyper: dict) -> tuple[dict, tuple]:
    """Body ``name``'s keyword settings (part of the graph) and its scalar values (0-dim tensor arguments),
    from GAFSGD's keywords (``"gaf_sgd"``) or ``gaf_kind``, ``alpha``, ``beta`` (``"gaf_grads"``)."""
    if name == "gaf_grads":
        return dict(gaf_kind=hyper["gaf_kind"]), (hyper["alpha"], hyper["beta"])
    static = dict(gaf_kind=hyper["gaf_kind"], placement=hyper["placement"], nesterov=hyper["nesterov"],
                  maximize=hyper["maximize"], use_momentum=hyper["momentum"] != 0,
                  use_weight_decay=hyper["weight_decay"] != 0)
    return static, tuple(hyper[k] for k in ("lr", "momentum", "dampening", "weight_decay", "alpha", "beta"))


def compile_in_background(name: str, tensors: list[Tensor], hyper: dict) -> None:
    """Start compiling body ``name`` (``"gaf_sgd"`` with GAFSGD's keywords as ``hyper``, or ``"gaf_grads"``
    with ``gaf_kind``, ``alpha``, ``beta``) for each dtype of ``tensors`` in a daemon thread, on small
    stand-in tensors (the training tensors are never touched from there), unless that graph is compiled or
    compiling already. The first time in a process, one log line says what happens and how to turn it off."""
    global _noted
    static, values = _settings(name, hyper)
    for sample in {t.dtype: t for t in tensors}.values():
        key = _graph_key(name, sample, static)
        if key in _warming or key in _compiled_keys:
            continue
        n_tensors = 1 if name == "gaf_grads" else 3 if static["use_momentum"] else 2
        stand_ins = [torch.zeros(max(COMPILE_MIN_NUMEL, 8192), dtype=sample.dtype, device=sample.device)
                     for _ in range(n_tensors)]
        scalars = _scalars(values, sample.dtype, sample.device)
        result: dict = {}

        def warm(stand_ins=stand_ins, scalars=scalars, result=result) -> None:
            try:
                with torch.no_grad():  # as the optimizer step runs it: grad mode is part of the graph's guards
                    _compiled(name)(*scalars, *stand_ins, **static)
            except Exception as err:  # the step that would switch reports it and stays eager
                result["error"] = err

        thread = threading.Thread(target=warm, name="hf_gaf-compile", daemon=True)
        _warming[key] = (thread, result)
        if not _noted:
            _noted = True
            logger.warning(
                "hf_gaf: compiling GAF's fused CPU step in the background (torch.compile: about 15 s of one "
                "core with an empty cache, 2-3 s with a warm one); training goes on with the eager step and "
                "switches at step %d. fused=False (GAFSGD, attach_gaf) or HF_GAF_FUSED=0 keeps the eager step "
                "throughout.", COMPILE_SWITCH_STEP)
        thread.start()


def _ready(key: tuple) -> None:
    """Before a graph's first compiled call: wait for its background compilation (logged when not done yet),
    re-raising its error."""
    entry = _warming.pop(key, None)
    _compiled_keys.add(key)
    if entry is None:
        return
    thread, result = entry
    if thread.is_alive():
        logger.warning("hf_gaf: step %d reached before the background compilation finished; waiting for it",
                       COMPILE_SWITCH_STEP)
        thread.join()
    if "error" in result:
        raise result["error"]


def run_compiled(name: str, lists: list[list[Tensor]], hyper: dict, what: str) -> list[int]:
    """Body ``name`` compiled, tensor by tensor, on the tensors of ``lists`` (parameters, gradients and
    momentum buffers for ``"gaf_sgd"``; gradients for ``"gaf_grads"``) that have at least
    :data:`COMPILE_MIN_NUMEL` elements, a floating dtype and one dense layout across the lists. Returns the
    indices it left to the eager kernels: the smaller or odd tensors, and, when compiling fails (warned
    once; the process stays eager from then on), every tensor it had not stepped yet."""
    global _compile_failed
    from .triton_kernels import same_layout  # plain torch; the module imports triton only if installed

    first = lists[0]
    chosen = [k for k, t in enumerate(first) if t.numel() >= COMPILE_MIN_NUMEL and t.dtype.is_floating_point
              and all(same_layout(tensors[k], t) for tensors in lists)]
    static, values = _settings(name, hyper)
    compiled = _compiled(name) if chosen else None
    scalars, done = {}, set()
    try:
        with torch.no_grad():  # grad mode is among a graph's guards: as in the background compilation (a hook
            for k in chosen:   # runs before the optimizer's own no_grad)
                t = first[k]
                if t.dtype not in scalars:
                    key = _graph_key(name, t, static)
                    if key not in _compiled_keys:
                        _ready(key)
                    scalars[t.dtype] = _scalars(values, t.dtype, t.device)
                compiled(*scalars[t.dtype], *(_flat(tensors[k]) for tensors in lists), **static)
                done.add(k)
    except Exception as err:  # torch.compile can fail for toolchain reasons; eager is always right
        _compile_failed = True
        warnings.warn(f"{what}: the fused (torch.compile) step failed, using the eager kernels instead: {err}",
                      stacklevel=3)
    return [k for k in range(len(first)) if k not in done]


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
) -> list[int]:
    """The fused GAFSGD step: ``backend="triton"`` one Triton launch per (device, dtype) bucket (two on a step
    that creates momentum buffers: new buffers are written as b = d, torch's first step), with address
    tables cached in ``table_cache`` (a :class:`~hf_gaf.triton_kernels.TableCache`); ``"compile"`` the
    compiled body tensor by tensor (:func:`run_compiled`). Returns the indices of the tensors it left to the
    eager paths: all of them, having changed nothing, when it cannot run (a gradient whose dtype or layout
    differs from its parameter's; a compile error, warned about once); for ``"compile"`` also the tensors
    too small to be worth a call."""
    hyper = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                 maximize=maximize, gaf_kind=gaf_kind, alpha=alpha, beta=beta, placement=placement)
    if backend == "triton":
        return [] if _triton_gaf_sgd(params, grads, momentum_buffers, table_cache, **hyper) else list(
            range(len(params)))
    lists = [params, grads, momentum_buffers] if momentum != 0 else [params, grads]
    return run_compiled("gaf_sgd", lists, hyper, "GAFSGD")


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

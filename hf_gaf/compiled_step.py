r"""The compiled CPU/CUDA pass of a GAF step, owned by an object: :class:`CompiledStep`.

The pass is ONE small graph per setting and dtype: the step of one tensor on flat views with dynamic sizes,
the scalars as 0-dim tensors, called tensor by tensor for tensors of at least ``min_numel`` elements (smaller
ones take the list kernels: a call costs more than their step). So compiling costs the same for any model
(about 16 s of one core with an empty Inductor cache, about 4 s with a warm one, measured on a 2-core CPU),
and a learning-rate change never recompiles. φ is each kind's ``compiled`` op (:mod:`hf_gaf.kinds`; atan is
Cephes' ``atanf`` there, as in the Triton kernel).

The automatic CPU schedule (:class:`CompileSchedule`, chosen by :func:`~hf_gaf.step_path.choose_path`): eager
steps until ``start_step``; there a separate Python process compiles the graph on stand-in tensors, filling
torch's on-disk compile caches, while training goes on eagerly; at ``switch_step`` the training thread
compiles the graph from those caches (waiting for the helper process only if it has not finished) and runs
it from then on. Nothing compiles in a thread of the training process: torch's "compiling" flag
(``torch.compiler.is_compiling()``) is process-wide, and optimizers (the Adam family) and models read it
and take other arithmetic while it is set; so two runs of the same command, and a run and its resumption,
take the same path at every step, and a process can exit at any moment (the helper is ended with it).
A compile failure is warned about once and that :class:`CompiledStep` stays eager.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import subprocess
import sys
import warnings
import weakref
from dataclasses import dataclass

import torch
from torch import Tensor

from .kinds import compiled_phi

__all__ = ["CompileSchedule", "CompiledStep"]

logger = logging.getLogger("hf_gaf")


@dataclass(frozen=True)
class CompileSchedule:
    """When the automatic CPU choice compiles: the helper process starts at a group's step ``start_step``,
    the compiled pass runs from ``switch_step`` on (a fixed step, not "when ready", so the path of a step
    never depends on timing), on tensors of at least ``min_numel`` elements."""

    start_step: int = 100
    switch_step: int = 3000
    min_numel: int = 4096

    def __post_init__(self) -> None:
        if not 1 <= self.start_step <= self.switch_step or self.min_numel < 1:
            raise ValueError(f"CompileSchedule{(self.start_step, self.switch_step, self.min_numel)}: need "
                             "1 <= start_step <= switch_step and min_numel >= 1")


def _flat(t: Tensor) -> Tensor:
    """The 1-D alias of a tensor that covers its memory densely (``triton_kernels.same_layout``), element k =
    memory k, detached: neither ``requires_grad`` nor a view's base, both of which a compiled graph guards on
    (a parameter's flat view would otherwise not match the graph compiled on stand-in tensors)."""
    return (t.view(-1) if t.is_contiguous() else t.as_strided((t.numel(),), (1,))).detach()


def _compiled_f(x: Tensor, alpha: Tensor, beta: Tensor, gaf_kind: str) -> Tensor:
    """f(x) with ``nan_on_inf`` (module :mod:`hf_gaf.functional`) for the compiled bodies: α·φ(β·x), φ the kind's
    ``compiled`` op, in float64 for float64 tensors, else in float32, rounded once to x's dtype."""
    work = x if x.dtype == torch.float64 else x.float()
    y = compiled_phi(gaf_kind)(beta * work)
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



BODIES = {"gaf_sgd": _sgd_tensor_body, "gaf_grads": _grads_tensor_body}


@functools.cache
def compiled_body(name: str):
    """The ``torch.compile``-d body ``name`` (dynamic sizes: every tensor is a flat view, so its graphs are one
    per setting and dtype, never per tensor shape). torch keeps the graphs with the function object."""
    return torch.compile(BODIES[name], fullgraph=True, dynamic=True)


def _scalars(values, dtype: torch.dtype, device) -> list[Tensor]:
    """The bodies' scalar arguments as 0-dim tensors in the compute dtype (float64 for float64 tensors, else
    float32), the type a python float is rounded to by the eager kernels."""
    dtype = torch.float64 if dtype == torch.float64 else torch.float32
    return list(torch.tensor(values, dtype=dtype, device=device).unbind())


def body_settings(name: str, settings) -> tuple[dict, tuple]:
    """Body ``name``'s keyword settings (part of the graph) and its scalar values (0-dim tensor arguments), from
    a :class:`~hf_gaf.gaf_sgd.SGDSettings` (``"gaf_sgd"``) or a :class:`~hf_gaf.functional.GAFSpec`
    (``"gaf_grads"``)."""
    if name == "gaf_grads":
        return dict(gaf_kind=settings.kind), (settings.alpha, settings.beta)
    static = dict(gaf_kind=settings.gaf, placement=settings.placement, nesterov=settings.nesterov,
                  maximize=settings.maximize, use_momentum=settings.momentum != 0,
                  use_weight_decay=settings.weight_decay != 0)
    return static, (settings.lr, settings.momentum, settings.dampening, settings.weight_decay, settings.alpha,
                    settings.beta)


def _stand_ins(name: str, static: dict, dtype: torch.dtype, numel: int) -> list[Tensor]:
    n_tensors = 1 if name == "gaf_grads" else 3 if static["use_momentum"] else 2
    return [torch.zeros(numel, dtype=dtype) for _ in range(n_tensors)]


def _end(processes: dict) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.kill()
            process.wait()


class CompiledStep:
    """The compiled pass of one optimizer (a :class:`~hf_gaf.GAFSGD` or an :func:`~hf_gaf.attach_gaf` hook):
    its ``schedule`` and its state (the helper processes warming the caches, the graphs ready, whether
    compiling failed). Copying or pickling it (an optimizer's ``deepcopy``) keeps the schedule only."""

    def __init__(self, schedule: CompileSchedule | None = None) -> None:
        self.schedule = schedule or CompileSchedule()
        self.failed = False  # a toolchain that cannot compile once will not compile later
        self._helpers: dict[tuple, subprocess.Popen] = {}
        self._ready: set[tuple] = set()
        self._noted = False
        weakref.finalize(self, _end, self._helpers)  # at exit or collection: no helper outlives its owner

    def __getstate__(self) -> dict:
        return {"schedule": self.schedule}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["schedule"])

    def _key(self, name: str, tensor: Tensor, static: dict) -> tuple:
        return (name, tensor.dtype, tensor.device.type, tuple(sorted(static.items())))

    def warm(self, name: str, tensors: list[Tensor], settings) -> None:
        """Start the helper process that compiles body ``name`` (``"gaf_sgd"`` with an ``SGDSettings``, or
        ``"gaf_grads"`` with a ``GAFSpec``: :func:`body_settings`) for each dtype of ``tensors``, unless that
        graph is ready or warming already. The first time, one log line says what happens."""
        static, values = body_settings(name, settings)
        for sample in {t.dtype: t for t in tensors}.values():
            key = self._key(name, sample, static)
            if key in self._helpers or key in self._ready:
                continue
            spec = json.dumps({"name": name, "dtype": str(sample.dtype).removeprefix("torch."), "static": static,
                               "values": list(values), "numel": max(self.schedule.min_numel, 8192)})
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            self._helpers[key] = subprocess.Popen([sys.executable, "-m", __name__, spec], env=env,
                                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL)
            if not self._noted:
                self._noted = True
                logger.warning(
                    "hf_gaf: compiling GAF's fused CPU step in a helper process (torch.compile: about 16 s of one "
                    "core with an empty cache, 4 s with a warm one); training goes on with the eager step and "
                    "switches at step %d. fused=False (GAFSGD, attach_gaf) or HF_GAF_FUSED=0 keeps the eager "
                    "step throughout.", self.schedule.switch_step)

    def _wait_for_helper(self, key: tuple) -> None:
        """Before a graph's first compiled call: wait for its helper (logged when not done yet). Whatever the
        helper did, the call compiles here, from the caches it filled or from scratch."""
        helper = self._helpers.pop(key, None)
        self._ready.add(key)
        if helper is not None and helper.poll() is None:
            logger.warning("hf_gaf: step %d reached before the helper process finished compiling; waiting for it",
                           self.schedule.switch_step)
            helper.wait()

    def run(self, name: str, lists: list[list[Tensor]], settings, what: str) -> list[int]:
        """Body ``name`` compiled, tensor by tensor, on the tensors of ``lists`` (parameters, gradients and
        momentum buffers for ``"gaf_sgd"``; gradients for ``"gaf_grads"``) that have at least
        ``schedule.min_numel`` elements, a floating dtype and one dense layout across the lists. Returns the
        indices it left to the eager kernels: the smaller or odd tensors, and, when compiling fails (warned
        once; this object stays eager from then on), every tensor it had not stepped yet."""
        from .triton_kernels import same_layout  # plain torch; the module imports triton only if installed

        first = lists[0]
        chosen = [k for k, t in enumerate(first) if t.numel() >= self.schedule.min_numel
                  and t.dtype.is_floating_point and all(same_layout(tensors[k], t) for tensors in lists)]
        static, values = body_settings(name, settings)
        compiled = compiled_body(name) if chosen else None
        scalars, done = {}, set()
        try:
            with torch.no_grad(), _quiet_compile_log():  # grad mode is among a graph's guards: as in the
                for k in chosen:                          # helper (a hook runs before the optimizer's no_grad)
                    t = first[k]
                    if t.dtype not in scalars:
                        key = self._key(name, t, static)
                        if key not in self._ready:
                            self._wait_for_helper(key)
                        scalars[t.dtype] = _scalars(values, t.dtype, t.device)
                    compiled(*scalars[t.dtype], *(_flat(tensors[k]) for tensors in lists), **static)
                    done.add(k)
        except Exception as err:  # torch.compile can fail for toolchain reasons; eager is always right
            self.failed = True
            warnings.warn(f"{what}: the fused (torch.compile) step failed, using the eager kernels instead: {err}",
                          stacklevel=3)
        return [k for k in range(len(first)) if k not in done]


@contextlib.contextmanager
def _quiet_compile_log():
    """torch's C++ extension logger says "No CUDA runtime is found" when Inductor compiles on a CPU-only machine:
    a line that reads as an error in a training log. It is silenced while this pass compiles, nothing else."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _warm_from_spec(spec: dict) -> None:
    """The helper process: compile body ``spec["name"]`` on CPU stand-ins, filling torch's on-disk caches."""
    dtype = getattr(torch, spec["dtype"])
    stand_ins = _stand_ins(spec["name"], spec["static"], dtype, spec["numel"])
    with torch.no_grad():  # as the optimizer step runs it: grad mode is part of the graph's guards
        compiled_body(spec["name"])(*_scalars(spec["values"], dtype, "cpu"), *stand_ins, **spec["static"])


if __name__ == "__main__":
    _warm_from_spec(json.loads(sys.argv[1]))

r"""Which code path runs a GAF step: :func:`choose_path`, the one rule for :class:`~hf_gaf.GAFSGD` and
:func:`~hf_gaf.attach_gaf`, a function of its arguments (as ``torch.optim``'s ``_default_to_fused_or_foreach``).

- ``fused``: ``None`` (automatic), ``True`` (a fused path: Triton where it runs, else the compiled
  pass), ``False`` (eager), ``"triton"`` (the Triton kernel, or an error where it cannot run) or
  ``"compile"`` (the compiled pass, even on CUDA). ``foreach=True`` means eager list kernels.
- ``fused=None`` takes its value from the environment variable ``HF_GAF_FUSED`` when it is set
  (:func:`fused_default`, checked when an optimizer or hook is made): ``auto`` (as unset), ``0`` (eager),
  ``compile``, ``triton``. Any other value is an error naming it.
- Automatic rule: the Triton kernel for CUDA tensors it supports (float32/bfloat16/float16, dense, one
  device, a named kind; CPU tensors too under ``TRITON_INTERPRET=1`` when ``"triton"`` is asked for); else
  the compiled pass (:mod:`hf_gaf.compiled_step`) for dense float tensors on CPU or CUDA when
  ``torch.compile`` works here and no compilation of the caller's is running; else eager: list kernels on
  CUDA, the per-tensor loop on CPU.
- The compiled pass waits for the momentum buffers: a step that creates them runs eagerly, as
  ``torch.optim.SGD``'s first step.
- On CPU, the automatic choice never makes a short run pay for compilation: it follows the caller's
  :class:`~hf_gaf.compiled_step.CompileSchedule` by the step count it is given (counted in the optimizer's
  state, so a resumed run counts on): eager before ``start_step`` (a group with ``gaf=None`` always: it is
  then ``torch.optim.SGD`` bit for bit), eager while a helper process compiles (``warm``) until
  ``switch_step``, the compiled pass from then on. ``fused=True`` or ``"compile"`` compiles at once
  (blocking, on the second step).

Example:
    >>> import torch
    >>> choose_path([torch.zeros(3)], fused=False, foreach=None, gaf_kind="atan")
    StepPath(fused=None, foreach=False, warm=False)
    >>> choose_path([torch.zeros(3)], fused="compile", foreach=None, gaf_kind="atan").fused
    'compile'
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import Tensor

from .compiled_step import CompileSchedule
from .kinds import GAF_KINDS, kind

__all__ = ["FUSED_CHOICES", "StepPath", "check_fused", "choose_path", "fused_default", "triton_supported"]

FUSED_CHOICES = (None, True, False, "triton", "compile")
FUSED_ENV = "HF_GAF_FUSED"
_ENV_VALUES = {"auto": None, "": None, "0": False, "compile": "compile", "triton": "triton"}


class StepPath(NamedTuple):
    """What runs a step: ``fused`` is ``"triton"``, ``"compile"`` or ``None`` (eager), and ``foreach``
    chooses the eager implementation (list kernels or the per-tensor loop), also the fallback of a fused
    path that cannot take a given step. ``warm``: an eager step during which the compiled pass should be
    compiling (:meth:`~hf_gaf.compiled_step.CompiledStep.warm`)."""

    fused: str | None
    foreach: bool
    warm: bool = False


def fused_default():
    """The value ``fused=None`` takes: ``HF_GAF_FUSED`` (module docstring), ``None`` when unset."""
    value = os.environ.get(FUSED_ENV)
    if value is None:
        return None
    if value.strip().lower() not in _ENV_VALUES:
        raise ValueError(f"{FUSED_ENV}={value!r}: expected auto, 0, compile or triton")
    return _ENV_VALUES[value.strip().lower()]


def check_fused(fused) -> None:
    """``fused`` must be one of :data:`FUSED_CHOICES`, and with ``None`` a set ``HF_GAF_FUSED`` must be valid
    (a ``ValueError`` naming the value otherwise): checked where an optimizer or a hook is made, before any
    step."""
    if fused not in FUSED_CHOICES or (fused is not None and not isinstance(fused, (bool, str))):
        raise ValueError(f"fused={fused!r}: expected None, True, False, 'triton' or 'compile'")
    if fused is None:
        fused_default()


def triton_supported(tensors: list[Tensor], gaf_kind, allow_cpu: bool = False) -> bool:
    """The Triton kernels take plain float32/bfloat16/float16 tensors on one CUDA device (on CPU when
    ``allow_cpu`` and Triton's interpreter is on) and the named kinds; the kernel module loads on first use."""
    device = tensors[0].device
    if callable(gaf_kind) or not (device.type == "cuda" or allow_cpu):
        return False
    from . import triton_kernels

    if gaf_kind is not None and (gaf_kind not in GAF_KINDS or kind(gaf_kind).triton_code is None):
        return False  # a kind without a Triton body, or an unknown one (the eager path names it in its error)
    return triton_kernels.runs_on(device) and all(
        type(t) in (torch.nn.Parameter, Tensor) and t.device == device and t.dtype in triton_kernels.SUPPORTED_DTYPES
        for t in tensors
    )


def _compile_supported(tensors: list[Tensor], gaf_kind) -> bool:
    """The compiled pass takes dense float tensors on one CPU or CUDA device, plain (not DTensor), named kinds,
    and never inside a caller's own ``torch.compile`` of the step."""
    if callable(gaf_kind) or not torch._dynamo.is_dynamo_supported() or torch.compiler.is_compiling():
        return False
    device = tensors[0].device
    return all(type(t) in (torch.nn.Parameter, Tensor) and t.device == device and device.type in ("cpu", "cuda")
               and t.dtype.is_floating_point for t in tensors)


def choose_path(tensors: list[Tensor], *, fused, foreach: bool | None, gaf_kind, creates_buffers: bool = False,
                can_compile: bool = True, step: int | None = None,
                schedule: CompileSchedule | None = None) -> StepPath:
    """The path of one step over ``tensors`` (the parameters, or the gradients for ``attach_gaf``), by the
    rule of the module docstring. ``creates_buffers``: this step makes the momentum buffers (the compiled
    pass waits); ``can_compile``: the caller may use a compiled pass now (False: only Triton or eager; e.g.
    its compilation failed); ``step``: the group's step count (1 on its first step), which places it on
    ``schedule`` (default :class:`~hf_gaf.compiled_step.CompileSchedule`; ``step=None``: no schedule, the
    automatic CPU choice stays eager). ``fused="triton"`` where the kernel cannot run is a ``RuntimeError``."""
    check_fused(fused)
    eager = StepPath(None, foreach if foreach is not None else
                     all(t.device.type == "cuda" for t in tensors) and not callable(gaf_kind))
    automatic = fused is None
    if automatic:
        fused = fused_default()
    if fused is False or foreach or not tensors:
        return eager
    if fused != "compile" and triton_supported(tensors, gaf_kind, allow_cpu=fused == "triton"):
        return StepPath("triton", eager.foreach)
    if fused == "triton":
        raise RuntimeError("fused='triton' (or HF_GAF_FUSED=triton): the Triton step needs triton and "
                           "float32/bfloat16/float16 CUDA tensors (CPU tensors only under TRITON_INTERPRET=1) and a "
                           "named GAF kind")
    if not can_compile or creates_buffers:
        return eager
    if (automatic or fused is True) and not _compile_supported(tensors, gaf_kind):
        return eager
    if automatic and tensors[0].device.type == "cpu":  # the schedule of the module docstring
        schedule = schedule or CompileSchedule()
        if step is None or step < schedule.start_step or gaf_kind is None:  # gaf=None: torch's SGD bit for bit
            return eager
        if step < schedule.switch_step:
            return eager._replace(warm=True)
    return StepPath("compile", eager.foreach)

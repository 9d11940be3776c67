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

Non-finite gradients: f(±inf) is NaN (``nan_on_inf``), so an overflow that reaches the optimizer
makes its parameters NaN, as without GAF, rather than a silent bounded step.

On CUDA, f runs as ONE Triton kernel launch per (device, dtype) of the gradients
(:mod:`hf_gaf.triton_kernels`), which reads the scale and the overflow flag on the device, so the
hook never synchronises the host; elsewhere it runs ``torch._foreach`` kernels, and on CPU a compiled pass
on the schedule of :mod:`hf_gaf.compiled_step` (eager first, compiled by a helper process, switched at a fixed
step of the optimizer's own step count: the Adam family keeps one; for an optimizer without it the CPU
path stays eager). ``attach_gaf(fused=...)`` chooses by the same rule as GAFSGD, once per step
(:func:`~hf_gaf.step_path.choose_path`): ``False`` keeps the ``_foreach`` kernels everywhere; ``"compile"``
the compiled pass at once; ``"triton"`` with ``TRITON_INTERPRET=1`` runs the Triton kernel on CPU tensors
(the tests).

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

import torch
from torch import Tensor
from torch.optim import Optimizer

from .compiled_step import CompiledStep
from .functional import GAFKind, GAFSpec, foreach_gaf_, validate_gaf
from .step_path import check_fused, choose_path

_HANDLE_ATTR = "_hf_gaf_hook"  # where an optimizer keeps its GAFHook
_TREATMENT_ATTR = "_hf_gaf_treatment"  # ... and its TreatmentHook (hf_gaf.treatments); one of the two at a time
NO_GAF = "no_gaf"  # a parameter group with no_gaf=True is left alone by the hook (it survives flattening wrappers)


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


class StepPreHook:
    """What every gradient hook of hf_gaf shares (:class:`GAFHook`, :class:`~hf_gaf.treatments.TreatmentHook`): a
    step pre-hook on the innermost optimizer, the parameters it treats (:meth:`selected`), and its count of
    optimizer steps (``calls``). ``remove()`` detaches it.

    A wrapper may call ``step()`` several times per optimizer step, each time on a part of the parameters
    (DeepSpeed ZeRO 1/2 once per parameter group, ZeRO-3 once per sub-group, each call seeing other flat
    tensors): a call begins a new optimizer step when it holds a tensor the current step has already held
    (:meth:`begins_step`), so ``calls`` counts optimizer steps under DDP, FSDP and ZeRO alike. The tensors the
    optimizer held when the hook was attached are remembered: :meth:`flattened` tells whether a wrapper steps
    others (flat partitions) in their place."""

    handle_attr = _HANDLE_ATTR  # the optimizer attribute that names this hook

    def __init__(self, optimizer: Optimizer, params: Iterable[Tensor] | None) -> None:
        self.optimizer = optimizer
        self.param_ids = None if params is None else {id(p) for p in params}
        self._attached_ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self._params_checked = False
        self._calls = 0
        self._step_tensors: set[int] = set()  # ids of the tensors the calls of the current optimizer step held
        self._ran_this_step = False
        self._skips_on_device: Tensor | None = None  # overflow steps a device kernel skipped, read lazily
        self._handle = optimizer.register_step_pre_hook(self)

    @property
    def calls(self) -> int:
        """Optimizer steps on which the hook ran (reading it waits for the device when a kernel counted skips)."""
        if self._skips_on_device is None:
            return self._calls
        return self._calls - int(self._skips_on_device.item())

    def selected(self) -> list[Tensor]:
        """The parameters the hook treats on the next step: those with a gradient in the groups without
        ``no_gaf=True``, and among ``params=`` when it was given."""
        self._check_params_present()
        return [
            p
            for group in self.optimizer.param_groups if not group.get(NO_GAF, False)
            for p in group["params"]
            if p.grad is not None and (self.param_ids is None or id(p) in self.param_ids)
        ]

    def flattened(self, params: list[Tensor]) -> bool:
        """True when ``params`` are not the tensors the optimizer held at attach time: a wrapper (DeepSpeed ZeRO,
        FSDP1 without ``use_orig_params``) steps flat partitions of them, with no parameter shapes (a parameter
        added with ``add_param_group`` after attaching counts too: attach after adding)."""
        return any(id(p) not in self._attached_ids for p in params)

    def _check_params_present(self) -> None:
        """``params=`` names tensors by identity: a wrapper that flattens or re-creates the parameters (DeepSpeed
        ZeRO, FSDP1 without ``use_orig_params``) steps other tensors, and the hook would silently apply f to
        none. At the first step with gradients every given parameter must be the optimizer's: a
        ``RuntimeError`` naming the counts otherwise (groups with ``no_gaf=True`` survive such wrappers)."""
        if self.param_ids is None or self._params_checked:
            return
        present = [id(p) for group in self.optimizer.param_groups for p in group["params"]]
        if not any(p.grad is not None for group in self.optimizer.param_groups for p in group["params"]):
            return  # no step yet (ZeRO-3 keeps its groups empty outside step())
        missing = len(self.param_ids - set(present))
        if missing:
            raise RuntimeError(
                f"params=...: {missing} of the {len(self.param_ids)} parameters given are not among the "
                f"{len(present)} tensors this {type(self.optimizer).__name__} steps (a wrapper that flattens or "
                f"re-creates parameters, e.g. DeepSpeed ZeRO or FSDP1 without use_orig_params); put the parameters "
                f"to leave alone in their own parameter group with {NO_GAF}=True instead of passing params="
            )
        self._params_checked = True

    def begins_step(self, optimizer: Optimizer) -> bool:
        """Record this ``step()`` call; True when it begins a new optimizer step (see the class docstring)."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if not held:
            return False
        new = not self._step_tensors or not held.isdisjoint(self._step_tensors)
        self._step_tensors = held if new else self._step_tensors | held
        if new:
            self._ran_this_step = False
        return new

    def _count_step(self, found_inf: Tensor | None = None) -> None:
        """Count the current optimizer step once, however many calls apply f in it (a Triton launch under a
        fused GradScaler step counts when its overflow flag, read later on the device, is 0)."""
        if self._ran_this_step:
            return
        self._ran_this_step = True
        self._calls += 1
        if found_inf is not None:
            skipped = (found_inf != 0).sum()
            self._skips_on_device = skipped if self._skips_on_device is None else self._skips_on_device + skipped

    def gradients(self) -> list[Tensor]:
        """The gradients the hook treats on the next step."""
        return [p.grad for p in self.selected()]

    def remove(self) -> None:
        """Detach the hook: the optimizer behaves as if it had never been attached."""
        self._handle.remove()
        if getattr(self.optimizer, self.handle_attr, None) is self:
            delattr(self.optimizer, self.handle_attr)


class GAFHook(StepPreHook):
    """The handle returned by :func:`attach_gaf`: ``remove()`` detaches it; ``calls`` counts the
    optimizer steps on which f ran (:class:`StepPreHook`); ``spec`` is the GAF setting."""

    def __init__(self, optimizer: Optimizer, spec: GAFSpec, params: Iterable[Tensor] | None, fused=None) -> None:
        check_fused(fused)
        self.spec = spec
        self.fused = fused
        self._tables = None  # hf_gaf.triton_kernels.TableCache, made on the first Triton launch
        self.compiled = CompiledStep()  # the compiled pass and its CPU schedule
        super().__init__(optimizer, params)

    def __call__(self, optimizer: Optimizer, args, kwargs) -> None:
        check_not_applied_twice(optimizer)
        self.begins_step(optimizer)
        params = self.selected()
        if not params:
            return
        grads = [p.grad for p in params]
        if any(g.is_sparse for g in grads):
            raise RuntimeError("attach_gaf does not support sparse gradients (e.g. nn.Embedding(sparse=True)): leave "
                               "those parameters out with params=..., or use dense gradients")
        grad_scale = getattr(optimizer, "grad_scale", None)
        found_inf = getattr(optimizer, "found_inf", None)
        spec, compiled = self.spec, self.compiled
        path = choose_path(grads, fused=self.fused, foreach=None, gaf_kind=spec.kind,
                           can_compile=grad_scale is None and not compiled.failed,
                           step=optimizer_step_count(optimizer, params[0]), schedule=compiled.schedule)
        if path.fused == "triton" and self._triton_apply(params, grads, grad_scale, found_inf):
            self._count_step(found_inf)
            return
        if found_inf is not None and bool(found_inf.item()):
            return  # the fused optimizer skips this step; leave the scaled gradients alone
        if grad_scale is None:
            if path.warm:
                compiled.warm("gaf_grads", grads, spec)
            if path.fused == "compile":  # the compiled pass leaves small tensors to the list kernels
                grads = [grads[k] for k in compiled.run("gaf_grads", [grads], spec, "attach_gaf")]
            if grads:
                foreach_gaf_(grads, spec.kind, spec.alpha, spec.beta, nan_on_inf=True)
        else:
            inv_scale = grad_scale.double().reciprocal().float()
            for g in grads:  # s·f(g/s); grad_scale may live on another device than g
                g.mul_(inv_scale.to(g.device))
            foreach_gaf_(grads, spec.kind, spec.alpha, spec.beta, nan_on_inf=True)
            for g in grads:
                g.mul_(grad_scale.to(g.device))
        self._count_step()

    def _triton_apply(self, params: list[Tensor], grads: list[Tensor], grad_scale: Tensor | None,
                      found_inf: Tensor | None) -> bool:
        """f by the Triton kernel (the step's chosen path), one launch per dtype, when the scale and the
        overflow flag are on the gradients' device; False, having changed nothing, else."""
        device = grads[0].device
        if any(t is not None and (t.device != device or t.dtype != torch.float32) for t in (grad_scale, found_inf)):
            return False
        from . import triton_kernels

        if self._tables is None:
            self._tables = triton_kernels.TableCache()
        launches = []
        for dtype in dict.fromkeys(g.dtype for g in grads):
            bucket = [k for k, g in enumerate(grads) if g.dtype == dtype]
            table = self._tables.get([params[k] for k in bucket])  # keyed by the parameters: they outlive grads
            rows = table.addresses([grads[k] for k in bucket])
            if rows is None:
                return False
            launches.append((table, rows, dtype))
        spec = self.spec
        for table, rows, dtype in launches:
            triton_kernels.gaf_grads_(table, rows, dtype=dtype, gaf_kind=spec.kind, alpha=spec.alpha, beta=spec.beta,
                                      grad_scale=grad_scale, found_inf=found_inf)
        return True



def check_not_applied_twice(optimizer: Optimizer, hook: str = "attach_gaf's hook",
                            effect: str = "f would run twice") -> None:
    """A ``RuntimeError`` when ``optimizer`` applies GAF in its own step (a :class:`~hf_gaf.GAFSGD` with a group
    whose ``gaf`` is set) while ``hook`` transforms its gradients too. Checked at every step, since a group can
    gain a GAF setting after the hook is attached (``load_state_dict``, ``add_param_group``, an edited group)."""
    from .gaf_sgd import GAFSGD

    if isinstance(optimizer, GAFSGD):
        kinds = [group.get("gaf") for group in optimizer.param_groups if group.get("gaf") is not None]
        if kinds:
            raise RuntimeError(
                f"this GAFSGD applies GAF in its step (a group has gaf={kinds[0]!r}) and {hook} is attached too: "
                f"{effect}; set the groups' gaf to None, or remove the hook"
            )


def optimizer_step_count(optimizer: Optimizer, param: Tensor) -> int | None:
    """The number of the step ``optimizer`` is about to take, from its own per-parameter ``step`` state (the
    Adam family keeps one, and checkpoints it, so a resumed run counts on): 1 before the first step, ``None``
    for an optimizer that keeps no step count (its CPU schedule then stays eager)."""
    state = optimizer.state.get(param, {})
    if "step" in state:
        return int(state["step"]) + 1
    return 1 if not state else None


def attach_gaf(
    optimizer,
    *,
    gaf: GAFKind | GAFSpec = "atan",
    alpha: float = 0.1,
    beta: float = 20.0,
    params: Iterable[Tensor] | None = None,
    fused: bool | str | None = None,
) -> GAFHook:
    """Make ``optimizer`` (any torch optimizer, or a wrapper of one) see f(g) instead of g.

    ``gaf`` is a kind with ``alpha`` and ``beta``, or a :class:`~hf_gaf.functional.GAFSpec` that gives all three.
    f is applied in place to the final gradients once per ``step()``; ``params`` limits it to some
    parameters (default: all). ``fused`` chooses the path as for GAFSGD (``None`` automatic, ``True``,
    ``False``, ``"triton"``; the module docstring). Raises ``RuntimeError`` if GAF is already attached to this
    optimizer, or if
    it is a :class:`~hf_gaf.GAFSGD` that applies GAF itself (f would run twice).

    The hook belongs to this optimizer object: a copy made with ``copy.deepcopy`` or ``torch.save`` /
    ``torch.load`` of the whole optimizer has no hook (torch does not copy step pre-hooks); checkpoint the
    ``state_dict()`` and call ``attach_gaf`` again on the optimizer you load it into.
    """
    spec = validate_gaf(gaf, alpha, beta)
    inner = unwrap_optimizer(optimizer)
    if getattr(inner, _HANDLE_ATTR, None) is not None:
        raise RuntimeError(
            f"GAF is already attached to this {type(inner).__name__}; call .remove() on the first handle "
            "before attaching again (two hooks would apply f twice)"
        )
    if getattr(inner, _TREATMENT_ATTR, None) is not None:
        raise RuntimeError(f"a gradient treatment is attached to this {type(inner).__name__}: one gradient transform "
                           "at a time, so that a comparison compares one thing; remove it first")
    check_not_applied_twice(inner)
    params = None if params is None else list(params)
    selected = params if params is not None else [p for g in inner.param_groups for p in g["params"]]
    if any(torch.is_complex(p) for p in selected):
        raise ValueError("GAF is an elementwise function of real numbers: a complex parameter would get a rotated "
                         "step; leave it out with params=..., or optimize torch.view_as_real views")
    hook = GAFHook(inner, spec, params, fused)
    setattr(inner, _HANDLE_ATTR, hook)
    return hook


def attached_gaf(optimizer) -> GAFHook | None:
    """The :class:`GAFHook` attached to ``optimizer`` (or its innermost optimizer), if any."""
    return getattr(unwrap_optimizer(optimizer), _HANDLE_ATTR, None)

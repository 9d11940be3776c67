"""hf_gaf.step_path: the one rule that picks a step's path, from the arguments and HF_GAF_FUSED; and the compiled
pass (hf_gaf.compiled_step): its atan and its fallback."""

import pytest
import torch

from hf_gaf import GAFSGD
from hf_gaf.compiled_step import CompileSchedule
from hf_gaf.step_path import StepPath as Path
from hf_gaf.step_path import choose_path
from tests.helpers.schedules import with_schedule

COMPILE_START_STEP, COMPILE_SWITCH_STEP = CompileSchedule().start_step, CompileSchedule().switch_step


def test_the_path_is_chosen_by_one_rule_from_arguments_and_the_environment(monkeypatch):
    """fused=None on CPU: eager until COMPILE_START_STEP, eager while a helper process compiles until
    COMPILE_SWITCH_STEP, then the compiled pass (never while the momentum buffers are being made); HF_GAF_FUSED
    is the default of fused=None only, and a bad value is an error."""
    cpu = [torch.zeros(3, requires_grad=True)]
    monkeypatch.delenv("HF_GAF_FUSED", raising=False)
    assert choose_path(cpu, fused=None, foreach=None, gaf_kind="atan") == Path(None, False)  # no step: no schedule
    auto = dict(fused=None, foreach=None, gaf_kind="atan")
    assert choose_path(cpu, **auto, step=COMPILE_START_STEP - 1) == Path(None, False)
    assert choose_path(cpu, **auto, step=COMPILE_START_STEP) == Path(None, False, warm=True)
    assert choose_path(cpu, **auto, step=COMPILE_SWITCH_STEP) == Path("compile", False)
    assert choose_path(cpu, fused=None, foreach=None, gaf_kind=None, step=COMPILE_SWITCH_STEP) == Path(None, False)
    assert choose_path(cpu, fused=True, foreach=None, gaf_kind="atan", step=2) == Path("compile", False)  # at once
    assert choose_path(cpu, fused=None, foreach=None, gaf_kind="atan", creates_buffers=True,
                       step=COMPILE_SWITCH_STEP) == Path(None, False)
    assert choose_path(cpu, fused=None, foreach=None, gaf_kind=torch.tanh) == Path(None, False)  # a callable
    assert choose_path(cpu, fused=None, foreach=True, gaf_kind="atan") == Path(None, True)
    assert choose_path(cpu, fused=None, foreach=None, gaf_kind="atan", can_compile=False) == Path(None, False)
    monkeypatch.setenv("HF_GAF_FUSED", "0")
    assert choose_path(cpu, fused=None, foreach=None, gaf_kind="atan") == Path(None, False)
    assert choose_path(cpu, fused="compile", foreach=None, gaf_kind="atan") == Path("compile", False)  # explicit wins
    monkeypatch.setenv("HF_GAF_FUSED", "fast")
    with pytest.raises(ValueError, match="HF_GAF_FUSED='fast': expected auto, 0, compile or triton"):
        choose_path(cpu, fused=None, foreach=None, gaf_kind="atan")
    with pytest.raises(ValueError, match="fused='fast'"):
        GAFSGD(cpu, lr=0.1, fused="fast")
    # a bad HF_GAF_FUSED is refused where the optimizer or the hook is made, not at its first step
    with pytest.raises(ValueError, match="HF_GAF_FUSED='fast'"):
        GAFSGD(cpu, lr=0.1)
    from hf_gaf import attach_gaf

    with pytest.raises(ValueError, match="HF_GAF_FUSED='fast'"):
        attach_gaf(torch.optim.SGD(cpu, lr=0.1))
    monkeypatch.delenv("HF_GAF_FUSED")
    short = CompileSchedule(start_step=3, switch_step=6)  # the schedule is an argument, not a module constant
    assert [choose_path(cpu, **auto, step=s, schedule=short) for s in (2, 3, 6)] == [
        Path(None, False), Path(None, False, warm=True), Path("compile", False)]


def test_atan_f32_is_within_2e7_of_atan_everywhere_and_keeps_the_special_values():
    """The compiled pass's atan (Cephes' atanf in torch ops), eagerly and compiled, against float64 atan on
    a dense grid, both range-reduction seams and 61 decades; ±inf gives ±π/2, NaN stays NaN."""
    from hf_gaf.kinds import atan_f32

    seams = torch.tensor([0.41421356237309503, 2.414213562373095], dtype=torch.float64)
    x = torch.cat([torch.linspace(-60, 60, 400_001, dtype=torch.float64), torch.logspace(-30, 30, 20_001,
                   dtype=torch.float64), (seams[:, None] + torch.linspace(-1e-5, 1e-5, 2001)[None]).flatten()])
    x = torch.cat([x, -x]).float()
    reference = torch.atan(x.double())
    for name, f in (("eager", atan_f32), ("compiled", torch.compile(atan_f32, dynamic=True))):
        relative = ((f(x).double() - reference).abs() / reference.abs().clamp_min(1e-300)).max().item()
        assert relative <= 2e-7, f"{name}: max relative error {relative:.3g}"
        special = f(torch.tensor([float("inf"), -float("inf"), float("nan"), 0.0]))
        torch.testing.assert_close(special[:2], torch.tensor([torch.pi / 2, -torch.pi / 2]))
        assert torch.isnan(special[2]) and special[3].item() == 0.0


def test_a_compile_failure_midway_leaves_only_the_unstepped_tensors_to_the_eager_step(monkeypatch):
    """If the compiled body fails on the third tensor (a recompile limit, a toolchain error), the two it
    stepped are not stepped again and the rest take the eager kernels: the result is the eager step's, and
    the failure is warned about once."""
    from hf_gaf import compiled_step

    body, calls = compiled_step.compiled_body("gaf_sgd"), []

    def fails_on_the_third_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("a compiler that gave up")
        return body(*args, **kwargs)

    monkeypatch.setattr(compiled_step, "compiled_body", lambda name: fails_on_the_third_call)
    g = torch.Generator().manual_seed(3)
    shapes = [(6, 5), (9,), (4, 4), (3, 2, 2), (7,)]
    a = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    settings = dict(lr=0.05, momentum=0.9, weight_decay=1e-3, gaf="atan", alpha=0.1, beta=20.0)
    compiled, eager = with_schedule(GAFSGD(a, **settings, fused="compile")), GAFSGD(b, **settings, fused=False)
    for step in range(3):
        for pa, pb in zip(a, b):
            pa.grad = torch.randn(pa.shape, generator=g)
            pb.grad = pa.grad.clone()
        if step == 1:
            with pytest.warns(UserWarning, match="GAFSGD: the fused .torch.compile. step failed.*gave up"):
                compiled.step()
        else:
            compiled.step()
        eager.step()
    assert len(calls) == 3  # step 1 makes the buffers eagerly; step 2 compiled 2 tensors, then all is eager
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)

"""hf_gaf.fused_step: the one rule that picks a step's path, from the arguments and HF_GAF_FUSED."""

import pytest
import torch

from hf_gaf import GAFSGD
from hf_gaf.fused_step import COMPILE_START_STEP, COMPILE_SWITCH_STEP, Path, choose_path


def test_the_path_is_chosen_by_one_rule_from_arguments_and_the_environment(monkeypatch):
    """fused=None on CPU: eager until COMPILE_START_STEP, eager while compiling in the background until
    COMPILE_SWITCH_STEP, then the compiled pass (never while the momentum buffers are being made); HF_GAF_FUSED
    is the default of fused=None only, and a bad value is an error."""
    cpu = [torch.zeros(3, requires_grad=True)]
    monkeypatch.delenv("HF_GAF_FUSED", raising=False)
    assert choose_path(cpu, fused=None, foreach=None, gaf_kind="atan") == Path(None, False)  # no step: no schedule
    auto = dict(fused=None, foreach=None, gaf_kind="atan")
    assert choose_path(cpu, **auto, step=COMPILE_START_STEP - 1) == Path(None, False)
    assert choose_path(cpu, **auto, step=COMPILE_START_STEP) == Path(None, False, warm=True)
    assert choose_path(cpu, **auto, step=COMPILE_SWITCH_STEP) == Path("compile", False)
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

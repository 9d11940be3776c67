"""Fixtures of the core's tests."""

import pytest
import torch


@pytest.fixture
def short_compile_schedule(monkeypatch):
    """The automatic CPU path with its schedule shortened to start compiling at step 3 and switch at step 6,
    a fresh process state (no compilation noted or warming, no Dynamo cache) and no HF_GAF_FUSED; yields the
    ``hf_gaf.fused_step`` module."""
    from hf_gaf import fused_step

    monkeypatch.delenv("HF_GAF_FUSED", raising=False)
    monkeypatch.setattr(fused_step, "COMPILE_START_STEP", 3)
    monkeypatch.setattr(fused_step, "COMPILE_SWITCH_STEP", 6)
    monkeypatch.setattr(fused_step, "_noted", False)
    monkeypatch.setattr(fused_step, "_warming", {})
    torch._dynamo.reset()
    return fused_step

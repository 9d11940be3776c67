"""Fixtures of the core's tests."""

import pytest
import torch


@pytest.fixture
def short_compile_schedule(monkeypatch):
    """The automatic CPU path with its schedule shortened to start compiling at step 3 and switch at step 6,
    a fresh process state (no compilation noted, warming or run, no Dynamo cache or counters) and no
    HF_GAF_FUSED; yields the ``hf_gaf.fused_step`` module."""
    from hf_gaf import fused_step

    monkeypatch.delenv("HF_GAF_FUSED", raising=False)
    monkeypatch.setattr(fused_step, "COMPILE_START_STEP", 3)
    monkeypatch.setattr(fused_step, "COMPILE_SWITCH_STEP", 6)
    monkeypatch.setattr(fused_step, "_noted", False)
    monkeypatch.setattr(fused_step, "_warming", {})
    monkeypatch.setattr(fused_step, "_compiled_keys", set())
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # the tests count the graphs made
    return fused_step


@pytest.fixture(autouse=True)
def compile_small_tensors(monkeypatch):
    """The compiled pass takes every tensor of two elements or more (the library leaves those under 4096 to
    the list kernels), so the tests' small tensors run through it; a 1-element tensor still takes the list
    kernels beside it."""
    from hf_gaf import fused_step

    monkeypatch.setattr(fused_step, "COMPILE_MIN_NUMEL", 2)

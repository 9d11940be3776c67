"""Fixtures of the core's tests."""

import pytest
import torch


@pytest.fixture
def fresh_compile_state(monkeypatch):
    """The automatic path (no HF_GAF_FUSED) and no Dynamo cache or counters (the tests count the graphs)."""
    monkeypatch.delenv("HF_GAF_FUSED", raising=False)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()

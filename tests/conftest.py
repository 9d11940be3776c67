"""Shared test settings and fixtures: fixed seeds, eager optimizer paths unless a test asks for the fused one,
a free TCP port for multi-process tests."""

import os
import socket

# The compiled (fused) GAFSGD pass costs seconds of compilation per new model; the suite checks it in
# test_gaf_sgd.py with fused=True and runs every other test on the eager paths.
os.environ.setdefault("HF_GAF_FUSED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

# helpers/ holds scripts the tests start (ddp_train.py parses its argv on import): never collected, not even
# by --doctest-modules
collect_ignore_glob = ["helpers/*"]

# Without a GPU the Triton kernels run in Triton's CPU interpreter (tests/test_triton_kernels.py asks for
# them with HF_GAF_FUSED=triton); read by hf_gaf.triton_kernels on import, so it is set here, first.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for accelerate / torchrun rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

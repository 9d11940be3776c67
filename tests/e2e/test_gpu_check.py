"""`make gpu-check` runs the same code on a CPU in --quick mode (numbers meaningless, plumbing real)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_quick_run_on_cpu(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/gpu_check.py"), "--device", "cpu", "--quick",
                           "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    paths = {row["check"] for row in report["correctness"]}
    assert {"GAFSGD per-tensor", "GAFSGD foreach", "GAFSGD compiled pass", "GAFSGD Triton kernel"} <= paths
    assert all("error" not in row and row["max_rel_err"] < 1e-4 for row in report["correctness"]), report["correctness"]
    assert report["step"][0]["ms"] and set(report["training_step_ms"]) == {"torch SGD fused", "GAFSGD default"}
    assert len(report["detection"]) == 4 and all(math.isfinite(r["images_per_s"]) for r in report["detection"])
    headings = [
        line.split(".")[0] for line in (tmp_path / "gpu_check.md").read_text().splitlines() if line.startswith("## ")
    ]
    assert headings == ["## 1", "## 2", "## 3", "## 4"]  # quick mode: one model in section 2


def test_gpu_check_refuses_cuda_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes/gpu_check.py"), "--out", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "sees no GPU" in proc.stderr and "Traceback" not in proc.stderr

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_accelerate_example_trains_with_accumulation(tmp_path):
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "recipes" / "accelerate_example.py"),
            "--steps",
            "60",
            "--grad_accum",
            "2",
            "--out",
            str(tmp_path),
        ],
        check=True,
        cwd=ROOT,
        timeout=300,
        capture_output=True,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 60
    assert metrics["train_accuracy"] > 0.3  # chance is 0.1 on ten digits

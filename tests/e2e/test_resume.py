"""A recipe killed with SIGKILL after a checkpoint and started again with --resume_from_checkpoint continues
where the checkpoint left it: at an epoch boundary and in the middle of an epoch the result equals the
uninterrupted run exactly, and metrics.json keeps one list of epochs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--preset", "gaf", "--max_train_samples", "384", "--max_eval_samples", "100", "--num_train_epochs", "3",
        "--per_device_train_batch_size", "32", "--save_strategy", "epoch", "--report_to", "none",
        "--disable_tqdm", "true", "--seed", "3"]


def recipe(out, *extra):
    return [sys.executable, str(ROOT / "recipes/classification/train.py"), *ARGS, "--output_dir", str(out), *extra]


def numbers(report, partial_epochs=()):
    """metrics.json without timings. In ``partial_epochs`` (begun before the kill, finished after the restart)
    the training loss is left out: the Trainer logs the mean over the steps this process trained. The
    evaluations after them, made with the resulting weights, are compared."""
    timing = ("epoch_time_s", "train_images_per_s", "_runtime", "_per_second", "partial")

    def keep(epoch, key):
        return not key.endswith(timing) and not (epoch["epoch"] in partial_epochs and key == "train_loss")

    return [{k: v for k, v in e.items() if keep(e, k)} for e in report["epochs"]], {
        k: v for k, v in report["final"].items() if not k.endswith(timing)}


@pytest.mark.slow
@pytest.mark.parametrize("where, save, checkpoint", [
    ("epoch boundary", [], "checkpoint-12"),  # 384 images / 32 = 12 steps per epoch
    ("mid-epoch", ["--save_strategy", "steps", "--save_steps", "17"], "checkpoint-17"),  # step 5 of epoch 2
])
def test_kill_after_a_checkpoint_then_resume_equals_the_uninterrupted_run(tmp_path, where, save, checkpoint):
    """Mid-epoch too: augmentations are drawn from (seed, epoch, image index), not from the global RNG that
    accelerate's one-batch look-ahead would have advanced past the checkpoint."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    whole = subprocess.run(recipe(tmp_path / "whole"), env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(recipe(killed, *save), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = killed / checkpoint
    deadline = time.time() + 600
    while not (first / "hf_gaf_metrics.json").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed; make it longer"

    resumed = subprocess.run(recipe(killed, *save, "--resume_from_checkpoint", str(first)), env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert [e["epoch"] for e in b["epochs"]] == [1, 2, 3]
    assert ("partial" in b["epochs"][1]) == (where == "mid-epoch")
    partial = {e["epoch"] for e in b["epochs"] if "partial" in e}
    assert numbers(a, partial) == numbers(b, partial)
    assert a["initial_weights_sha256"] == b["initial_weights_sha256"]


def test_resume_from_a_missing_checkpoint_fails_before_training(tmp_path):
    proc = subprocess.run(recipe(tmp_path / "o", "--resume_from_checkpoint", "last"), capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode != 0 and "no checkpoint-* folder" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_output_dir_holding_a_finished_run_or_unwritable_fails_before_training(tmp_path):
    from hf_gaf.recipes.classification import train as classification

    out = tmp_path / "done"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit, match="already holds a finished run"):
        classification.main(["--output_dir", str(out), "--max_steps", "1", "--report_to", "none"])
    assert (out / "metrics.json").read_text() == "{}"
    blocked = tmp_path / "a-file"  # a folder cannot be made under a file, not even by root
    blocked.write_text("x")
    with pytest.raises(SystemExit, match="not writable"):
        classification.main(["--output_dir", str(blocked / "out"), "--max_steps", "1", "--report_to", "none"])

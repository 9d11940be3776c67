import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
from hf_gaf.recipes.classification import train as classification  # noqa: E402

FAST = ["--max_train_samples", "384", "--max_eval_samples", "200", "--per_device_train_batch_size", "32",
        "--report_to", "none", "--disable_tqdm", "true"]


@pytest.mark.parametrize("recipe", [pytest.param("sgd", marks=pytest.mark.slow), "gaf"])  # sgd: `make test-all`
def test_digits_two_epochs_beat_chance(tmp_path, recipe):
    classification.main(["--preset", recipe, "--num_train_epochs", "2", "--output_dir", str(tmp_path),
                         "--max_eval_samples", "200", "--report_to", "none", "--disable_tqdm", "true"])
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["preset"] == recipe and len(report["epochs"]) == 2
    assert report["final"]["eval_accuracy"] > 0.5, report["final"]  # chance is 0.1
    assert 0 <= report["final"]["eval_top5_accuracy"] <= 1
    assert report["settings"]["gaf"] == ("atan" if recipe == "gaf" else "none")
    assert all(e["train_images_per_s"] > 0 and e["train_loss"] > 0 for e in report["epochs"])


def test_preset_defaults_are_overridden_by_flags(tmp_path):
    classification.main(["--preset", "gaf", "--gaf_beta", "7", "--learning_rate", "0.05", "--max_steps", "1",
                         "--output_dir", str(tmp_path), *FAST])
    settings = json.loads((tmp_path / "metrics.json").read_text())["settings"]
    assert (settings["gaf_beta"], settings["learning_rate"], settings["gaf_alpha"]) == (7.0, 0.05, 0.1)


def test_tiny_imagefolder_trains_one_step(tmp_path):
    for split in ("train", "test"):
        for cls, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
            folder = tmp_path / "data" / split / cls
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (20, 24), colour).save(folder / f"{i}.png")
    out = tmp_path / "out"
    classification.main(["--dataset", str(tmp_path / "data"), "--max_steps", "1", "--per_device_train_batch_size", "4",
                         "--output_dir", str(out), "--report_to", "none", "--disable_tqdm", "true"])
    report = json.loads((out / "metrics.json").read_text())
    assert report["global_step"] == 1 and "eval_accuracy" in report["final"]
    assert "eval_top5_accuracy" not in report["final"]  # two classes: top-5 means nothing


def test_uncached_hub_dataset_fails_fast_with_the_documented_message(tmp_path):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "recipes/classification/train.py"), "--dataset",
                           "no-such-user/no-such-dataset", "--output_dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "is not a local folder and is not in the local Hugging Face cache" in proc.stderr
    assert "--dataset digits" in proc.stderr and "Traceback" not in proc.stderr
    assert time.perf_counter() - start < 60


def test_unknown_recipe_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit):
        classification.main(["--preset", "sgdd", "--output_dir", str(tmp_path)])

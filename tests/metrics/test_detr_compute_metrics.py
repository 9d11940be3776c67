"""hf_gaf.metrics.DetrComputeMetrics inside a plain transformers.Trainer: the same mAP as hf_gaf's evaluator on the
same predictions, streaming or not, on 1 and 2 processes; clear errors for what it cannot use."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import EvalPrediction

from hf_gaf.detection.detr import build_detr_model
from hf_gaf.metrics import DetrComputeMetrics
from tests.helpers import plain_trainer_map as plain

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("voc07_map", "voc12_map", "coco_map", "coco_ap50", "coco_ap75", "ap_circle", "ap_square", "ap_cross",
        "n_images")


@pytest.fixture(scope="module")
def rows():
    return plain.dataset(7, plain.processor())


@pytest.mark.parametrize("setting", plain.SETTINGS)
def test_a_plain_trainer_gives_the_evaluators_map_on_the_same_predictions(rows, tmp_path, setting):
    """7 images in batches of 2 (the last one short), COCO-style labels from the processor: every number equals
    DetectionEvaluator's on the same predictions with the ground truth from the annotations in pixels."""
    expected = plain.reference(plain.OracleDetr(), rows)
    assert 0.2 < expected["voc07_map"] < 0.95 and expected["n_images"] == 7  # a test that can fail
    got = plain.evaluate(plain.OracleDetr(), rows, str(tmp_path), **plain.SETTINGS[setting])
    assert all("boxes" in row["labels"] for row in rows)  # the data set's labels are left as they were
    for key in KEYS:
        assert got[f"eval_{key}"] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key


def test_a_tiny_rt_detr_through_a_plain_trainer(rows, tmp_path):
    """A real (untrained) tiny RT-DETR, streaming: its numbers equal the evaluator's on its own outputs."""
    torch.manual_seed(0)
    model, _ = build_detr_model(list(plain.CLASSES.values()), model_config="tiny-rt-detr")
    expected = plain.reference(model, rows)
    got = plain.evaluate(model, rows, str(tmp_path), batch_eval_metrics=True)
    assert got["eval_n_images"] == 7
    for key in KEYS:
        assert got[f"eval_{key}"] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), key


@pytest.mark.slow  # two `accelerate launch` processes (~40 s); `make test-all`
def test_two_processes_give_the_one_process_numbers(rows, tmp_path, free_port):
    """On 2 CPU processes (the last batch padded by the sampler with a repeated image) each image is scored once
    and every number equals the single-process one, in each setting."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "recipes/accelerate_configs/cpu_2proc.yaml"),
           "--main_process_port", str(free_port), str(ROOT / "tests/helpers/plain_trainer_map.py"), "--out",
           str(tmp_path)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    two = json.loads((tmp_path / "metrics.json").read_text())
    for setting, settings in plain.SETTINGS.items():
        one = plain.evaluate(plain.OracleDetr(), rows, str(tmp_path / "one"), **settings)
        assert two[setting]["eval_n_images"] == 7, setting
        for key in KEYS:
            assert two[setting][f"eval_{key}"] == pytest.approx(one[f"eval_{key}"], rel=1e-6, abs=1e-9), (setting, key)


def test_clear_errors(rows):
    metrics = DetrComputeMetrics(plain.processor(), plain.CLASSES)
    raw = (torch.zeros(1, 8, 3), torch.zeros(1, 8, 4), torch.zeros(1, 8, 3))  # what the example's Trainer hands over
    with pytest.raises(ValueError, match="pass preprocess_logits_for_metrics=<this object>.preprocess"):
        metrics(EvalPrediction(predictions=({"loss_ce": 1.0}, *raw), label_ids=[]))
    with pytest.raises(ValueError, match=r"no \(logits \[B, Q, C\], pred_boxes \[B, Q, 4\]\) pair"):
        metrics.preprocess((torch.zeros(1, 8, 3),), [rows[0]["labels"]])
    unsized = {k: v for k, v in rows[0]["labels"].items() if k != "orig_size"}
    with pytest.raises(KeyError, match="without 'orig_size'"):
        metrics.preprocess(raw[:2], [unsized])
    with pytest.raises(ValueError, match="class indices 0..1"):
        DetrComputeMetrics(plain.processor(), {1: "a", 2: "b"})
    with pytest.raises(TypeError, match="post_process_object_detection"):
        DetrComputeMetrics(object(), plain.CLASSES)
    batch = metrics.preprocess(raw[:2], [rows[0]["labels"]])
    with pytest.raises(ValueError, match="twice"):  # the same image scored twice
        metrics(EvalPrediction(predictions=[batch, batch], label_ids=None))


def test_per_class_ap_is_optional(rows):
    metrics = DetrComputeMetrics(plain.processor(), plain.CLASSES, per_class=False)
    outputs = plain.OracleDetr()(**plain.collate_fn(rows[:2]))
    result = metrics(EvalPrediction(predictions=metrics.preprocess(outputs, [r["labels"] for r in rows[:2]]),
                                    label_ids=None))
    assert not [k for k in result if k.startswith("ap_")] and result["n_images"] == 2

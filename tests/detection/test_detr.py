import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_gaf.detection.data import DetectionDataArguments, load_split
from hf_gaf.detection.detr import DetrCollator, build_detr_model, canvas_processor, detr_postprocess, processor_for
from hf_gaf.detection.schema import EVAL_KEY, EvalTarget, with_canvas_transform
from hf_gaf.detection.synthetic_voc import SHAPE_CLASSES, make_voc
from hf_gaf.detection.trainer import DetectionTrainer, detection_compute_metrics
from hf_gaf.detection.transforms import DetectionTransform
from hf_gaf.recipes.detection import train_detr
from tests.helpers.tiny import tiny_args

ROOT = Path(__file__).resolve().parents[2]


def fake_outputs(labels, model_type, num_classes, queries=10):
    """Model-output form of the canvas ground truth: each box a confident query, the rest hopeless."""
    sigmoid = model_type != "detr"
    width = num_classes if sigmoid else num_classes + 1
    logits = torch.full((len(labels), queries, width), -10.0)
    boxes = torch.full((len(labels), queries, 4), 0.5)
    boxes[..., 2:] = 0.1
    if not sigmoid:
        logits[..., -1] = 10.0  # "no object" wins for unused queries
    for i, t in enumerate(labels):
        n = len(t["class_labels"])
        boxes[i, :n] = t["boxes"]
        logits[i, torch.arange(n), t["class_labels"]] = 10.0
        if not sigmoid:
            logits[i, :n, -1] = -10.0
    return {"logits": logits, "pred_boxes": boxes}


@pytest.mark.parametrize("model_type", ["detr", "conditional_detr", "rt_detr"])
@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_box_round_trip_on_non_square_padded_images(model_type, mode):
    processor = canvas_processor(processor_for(model_type), 128, mode)
    transform = DetectionTransform(128, train=False, mode=mode, canvas_by_processor=True)
    images = [Image.new("RGB", (200, 120), (90, 90, 90)), Image.new("RGB", (90, 160), (10, 90, 90))]
    boxes = [np.array([[30.0, 20.0, 150.0, 100.0], [0.0, 0.0, 200.0, 120.0]]), np.array([[5.5, 100.0, 80.0, 159.0]])]
    examples = [{"image": im, "objects": {"bbox": b.tolist(), "category": [1] * len(b), "difficult": [False] * len(b)},
                 "index": i} for i, (im, b) in enumerate(zip(images, boxes))]
    rows = [{"sample": transform.apply(ex)} for ex in examples]
    for row, ex in zip(rows, examples):
        row[EVAL_KEY] = EvalTarget.of(ex, row["sample"])
    batch = DetrCollator(processor)(rows)
    assert batch["pixel_values"].shape[-2:] == (128, 128)
    detections = detr_postprocess(processor)(fake_outputs(batch["labels"], model_type, 4), batch["labels"])
    for det, expected in zip(detections, boxes):
        top = det["scores"].argsort(descending=True)[: len(expected)]
        got = det["boxes"][top].numpy()
        got = got[np.lexsort(got.T[::-1])]
        expected = expected[np.lexsort(expected.T[::-1])]
        assert np.abs(got - expected).max() < 1.0, (got, expected)


class OracleDetector(torch.nn.Module):
    """Answers with the ground truth of its batch, in DETR output form."""

    def __init__(self, model_type, num_classes):
        super().__init__()
        self.model_type, self.num_classes = model_type, num_classes
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, pixel_values, pixel_mask=None, labels=None):
        return {"loss": self.dummy.sum() + 1.0, **fake_outputs(labels, self.model_type, self.num_classes)}


@pytest.fixture(scope="module")
def synthetic_voc(tmp_path_factory):
    return make_voc(str(tmp_path_factory.mktemp("voc")), n_train=16, n_test=16, image_size=96, seed=5)


@pytest.mark.parametrize("model_type", ["detr", "rt_detr"])
def test_oracle_through_the_recipe_evaluation_path_gives_map_one(tmp_path, synthetic_voc, model_type):
    eval_ds = load_split(DetectionDataArguments(voc_root=synthetic_voc), list(SHAPE_CLASSES), "eval")
    processor = canvas_processor(processor_for(model_type), 128, "letterbox")
    eval_ds = with_canvas_transform(eval_ds, DetectionTransform(128, train=False, canvas_by_processor=True))
    trainer = DetectionTrainer(
        model=OracleDetector(model_type, 4), args=tiny_args(tmp_path, gaf="none", per_device_eval_batch_size=5,
                                                            batch_eval_metrics=True, remove_unused_columns=False),
        eval_dataset=eval_ds, data_collator=DetrCollator(processor),
        compute_metrics=detection_compute_metrics(list(SHAPE_CLASSES)),
        postprocess=detr_postprocess(processor))
    metrics = trainer.evaluate()
    assert metrics["eval_voc07_map"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["eval_voc12_map"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["eval_coco_map"] > 0.85  # COCO's IoU 0.95 bin sees the sub-pixel rounding of the resize


FAST = ["--classes", "shapes", "--model_config", "tiny-rt-detr", "--image_size", "96", "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--max_eval_samples", "8",
        "--report_to", "none", "--disable_tqdm", "true", "--eval_strategy", "steps", "--eval_steps", "2"]


def test_two_steps_and_an_evaluation_write_metrics_json(tmp_path, synthetic_voc, capsys):
    """Two steps of `adamw-gaf` from random init: metrics.json, and the two warnings a newcomer needs: DETR's
    fine-tuning rate from random init (at the start) and a final mAP at chance level (at the end)."""
    train_detr.main(["--voc_root", synthetic_voc, "--output_dir", str(tmp_path), "--preset", "adamw-gaf", *FAST])
    err = capsys.readouterr().err
    assert "tiny-rt-detr from random init at --learning_rate 0.0001" in err and "scratch-adamw-gaf" in err
    assert "eval_voc07_map = " in err and "stayed at chance level (<= 0.02)" in err
    report = json.loads((tmp_path / "metrics.json").read_text())
    final = report["final"]
    for key in ("eval_loss", "eval_voc07_map", "eval_voc12_map", "eval_coco_map", "eval_coco_ap50", "eval_ap_circle"):
        assert key in final and math.isfinite(final[key]), key
    assert report["settings"]["gaf"] == "atan" and report["global_step"] == 2
    assert final["eval_n_images"] == 8



@pytest.mark.slow  # two `accelerate launch` processes (~25 s); `make test-all`
def test_accelerate_launch_two_cpu_processes(tmp_path, synthetic_voc, free_port):
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "recipes/accelerate_configs/cpu_2proc.yaml"),
           "--main_process_port", str(free_port), str(ROOT / "recipes/detection/train_detr.py"),
           "--voc_root", synthetic_voc, "--output_dir", str(tmp_path), "--preset", "adamw", *FAST,
           "--max_eval_samples", "7", "--per_device_eval_batch_size", "2"]  # uneven: the last batch is padded
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = json.loads((tmp_path / "metrics.json").read_text())["final"]
    assert math.isfinite(final["eval_voc07_map"])
    assert final["eval_n_images"] == 7, "evaluation gathered across 2 processes dropped or doubled images"


def test_bad_inputs_are_clear_errors(tmp_path, synthetic_voc):
    with pytest.raises(SystemExit, match="--voc_root is required"):
        train_detr.main(["--output_dir", str(tmp_path), *FAST])
    empty = tmp_path / "empty" / "VOCdevkit" / "VOC2007"
    empty.mkdir(parents=True)
    with pytest.raises(SystemExit, match="trainval.txt not found"):
        train_detr.main(["--voc_root", str(tmp_path / "empty"), "--output_dir", str(tmp_path), *FAST])
    model, processor = build_detr_model([f"c{i}" for i in range(20)], model_config="tiny-rt-detr")
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(SystemExit, match="has 20 classes, the data has 4.*--ignore_mismatched_sizes"):
        train_detr.main(["--voc_root", synthetic_voc, "--model_name_or_path", str(tmp_path / "ckpt"),
                         "--output_dir", str(tmp_path), *FAST])
    model, _ = build_detr_model(list(SHAPE_CLASSES), model_name_or_path=str(tmp_path / "ckpt"),
                                ignore_mismatched_sizes=True)
    assert model.config.num_labels == 4
    with pytest.raises(FileNotFoundError, match="neither a local checkpoint folder nor a cached hub id"):
        build_detr_model(list(SHAPE_CLASSES), model_name_or_path=str(tmp_path / "nothing-here"))


@pytest.mark.parametrize("where, batch", [("epoch boundary", "4"), ("mid-epoch", "2")])
def test_rt_detr_resume_equals_the_uninterrupted_run(tmp_path, synthetic_voc, where, batch):
    """RT-DETR's checkpoints hold some weights under their original names (save_pretrained converts them);
    the resumed run must load them as from_pretrained does, or they restart from their initial values.
    Resumed from checkpoint-2, it ends with the uninterrupted run's weights and metrics."""
    import shutil

    flags = ["--voc_root", synthetic_voc, "--preset", "adamw-gaf", *FAST, "--max_steps", "4",
             "--max_train_samples", "8", "--per_device_train_batch_size", batch, "--save_strategy", "steps",
             "--save_steps", "2", "--save_models", "false", "--draw_predictions", "0", "--seed", "5"]
    train_detr.main([*flags, "--output_dir", str(tmp_path / "whole")])
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp_path / "whole" / "checkpoint-2", resumed / "checkpoint-2")
    train_detr.main([*flags, "--output_dir", str(resumed), "--resume_from_checkpoint", "last"])
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((resumed / "metrics.json").read_text())
    timing = ("_runtime", "_per_second")
    assert {k: v for k, v in a["final"].items() if not k.endswith(timing)} == \
        {k: v for k, v in b["final"].items() if not k.endswith(timing)}
    from safetensors.torch import load_file

    wa = load_file(tmp_path / "whole" / "checkpoint-4" / "model.safetensors")
    wb = load_file(resumed / "checkpoint-4" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa), where

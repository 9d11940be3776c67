"""Same command, same seed, same numbers: each recipe run twice with one seed starts from identical weights
and writes identical metrics.json numbers; another seed starts elsewhere."""

import json
from pathlib import Path

import pytest

from hf_gaf.detection.synthetic_voc import make_voc

ROOT = Path(__file__).resolve().parents[2]
from hf_gaf.recipes.classification import train as classification  # noqa: E402
from hf_gaf.recipes.detection import train_detr, train_faster_rcnn  # noqa: E402

TIMING = ("epoch_time_s", "train_images_per_s", "wall_time_s", "_runtime", "_per_second")
COMMON = ["--max_steps", "3", "--report_to", "none", "--disable_tqdm", "true", "--eval_strategy", "steps",
          "--eval_steps", "3", "--logging_steps", "1"]


def numbers(report: dict) -> dict:
    """metrics.json without its timings: losses, evaluation metrics, settings, step count."""
    def strip(d):
        return {k: v for k, v in d.items() if not k.endswith(TIMING)}

    return dict(epochs=[strip(e) for e in report["epochs"]], final=strip(report["final"]),
                settings=report["settings"], global_step=report["global_step"])


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_voc(str(tmp_path_factory.mktemp("voc")), n_train=16, n_test=6, image_size=96, seed=4)


def classification_args(voc):
    return (classification.main, ["--preset", "gaf", "--max_train_samples", "96", "--max_eval_samples", "40",
                                  "--per_device_train_batch_size", "16", "--model", "resnet10t"])


def detr_args(voc):
    return (train_detr.main, ["--voc_root", voc, "--classes", "shapes", "--model_config", "tiny-rt-detr",
                              "--image_size", "96", "--per_device_train_batch_size", "4", "--max_eval_samples", "6",
                              "--preset", "adamw-gaf", "--hflip", "0.5", "--draw_predictions", "0"])


def frcnn_args(voc):
    return (train_faster_rcnn.main, [
        "--voc_root", voc, "--classes", "shapes", "--backbone", "timm:resnet18", "--image_size", "96",
        "--anchor_sizes", "16", "32", "64", "--timm_out_indices", "2", "3", "--fpn_channels", "32",
        "--rpn_pre_nms_top_n", "200", "--rpn_post_nms_top_n", "100", "--rpn_batch_size_per_image", "64",
        "--box_batch_size_per_image", "64", "--per_device_train_batch_size", "4", "--preset", "gaf",
        "--draw_predictions", "0"])


@pytest.mark.parametrize(
    "recipe", [classification_args, detr_args, frcnn_args], ids=["classification", "detr", "frcnn"]
)
def test_same_seed_same_weights_and_numbers_other_seed_other_weights(tmp_path, voc, recipe):
    main, args = recipe(voc)
    reports = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        main([*args, *COMMON, "--seed", str(seed), "--output_dir", str(tmp_path / name)])
        reports[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    a, b, c = reports["a"], reports["b"], reports["c"]
    assert a["initial_weights_sha256"] and a["initial_weights_sha256"] == b["initial_weights_sha256"]
    assert numbers(a) == numbers(b)
    assert any("loss" in k for e in a["epochs"] for k in e), a["epochs"]  # the comparison saw losses
    assert c["initial_weights_sha256"] != a["initial_weights_sha256"]

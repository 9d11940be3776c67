import json
import math

import pytest
import torch

from hf_gaf.detection.data import DetectionDataArguments, load_split
from hf_gaf.detection.faster_rcnn import (
    FasterRCNNCollator,
    build_faster_rcnn,
    faster_rcnn_postprocess,
    from_model_labels,
    to_model_labels,
)
from hf_gaf.detection.schema import with_canvas_transform
from hf_gaf.detection.synthetic_voc import SHAPE_CLASSES, make_voc
from hf_gaf.detection.trainer import DetectionTrainer, detection_compute_metrics
from hf_gaf.detection.transforms import DetectionTransform
from hf_gaf.recipes.detection import train_faster_rcnn
from tests.helpers.tiny import tiny_args

TINY = dict(backbone="timm:resnet18", image_size=96, anchor_sizes=(16, 32, 64), timm_out_indices=(2, 3),
            fpn_channels=32, rpn_pre_nms_top_n=200, rpn_post_nms_top_n=100, rpn_batch_size_per_image=64,
            box_batch_size_per_image=64)


def test_label_mapping_both_ways():
    labels = torch.tensor([0, 3, 19])
    assert to_model_labels(labels).tolist() == [1, 4, 20]  # 0 is torchvision's background
    assert torch.equal(from_model_labels(to_model_labels(labels)), labels)


def test_empty_image_batch_trains_a_step_with_a_timm_backbone():
    torch.manual_seed(0)
    model = build_faster_rcnn(4, **TINY)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(2, 3, 96, 96)
    labels = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
              {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([3])}]
    out = model(x, labels=labels)
    assert {"loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(out)
    out["loss"].backward()
    opt.step()
    assert math.isfinite(out["loss"].item())
    model.eval()
    with torch.no_grad():
        dets = model(x)["detections"]
    assert len(dets) == 2 and all((d["labels"] >= 0).all() and (d["labels"] < 4).all() for d in dets)


class OracleFasterRCNN(torch.nn.Module):
    """Eval-mode Faster R-CNN output made of the canvas ground truth (data-set labels)."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, pixel_values, labels=None):
        return {"detections": [{"boxes": t["boxes"], "scores": torch.ones(len(t["labels"])), "labels": t["labels"]}
                               for t in labels]}


def test_oracle_through_the_recipe_evaluation_path_gives_map_one(tmp_path):
    root = make_voc(str(tmp_path / "voc"), n_train=4, n_test=16, image_size=96, seed=2)
    eval_ds = load_split(DetectionDataArguments(voc_root=root), list(SHAPE_CLASSES), "eval")
    eval_ds = with_canvas_transform(eval_ds, DetectionTransform(128, train=False))
    trainer = DetectionTrainer(
        model=OracleFasterRCNN(),
        args=tiny_args(
            tmp_path / "o",
            gaf="none",
            batch_eval_metrics=True,
            per_device_eval_batch_size=6,
            remove_unused_columns=False,
        ),
        eval_dataset=eval_ds,
        data_collator=FasterRCNNCollator(),
        postprocess=faster_rcnn_postprocess,
        compute_metrics=detection_compute_metrics(list(SHAPE_CLASSES)),
    )
    metrics = trainer.evaluate()
    assert metrics["eval_voc07_map"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["eval_voc12_map"] == pytest.approx(1.0, abs=1e-9)


def test_two_steps_and_an_evaluation_write_metrics_json(tmp_path):
    root = make_voc(str(tmp_path / "voc"), n_train=16, n_test=8, image_size=96, seed=3)
    train_faster_rcnn.main(
        [
            "--voc_root",
            root,
            "--classes",
            "shapes",
            "--output_dir",
            str(tmp_path / "out"),
            "--preset",
            "gaf",
            "--backbone",
            "timm:resnet18",
            "--image_size",
            "96",
            "--anchor_sizes",
            "16",
            "32",
            "64",
            "--timm_out_indices",
            "2",
            "3",
            "--fpn_channels",
            "32",
            "--rpn_pre_nms_top_n",
            "200",
            "--rpn_post_nms_top_n",
            "100",
            "--rpn_batch_size_per_image",
            "64",
            "--box_batch_size_per_image",
            "64",
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "2",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
        ]
    )
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in ("eval_voc07_map", "eval_voc12_map", "eval_coco_map", "eval_ap_square"):
        assert key in report["final"] and math.isfinite(report["final"][key]), key
    assert report["settings"]["gaf_placement"] == "update" and report["settings"]["lr_milestones"] == [0.67, 0.89]


def test_bad_backbone_is_a_clear_error(tmp_path):
    root = make_voc(str(tmp_path / "voc"), n_train=4, n_test=2, image_size=64, seed=3)
    with pytest.raises(SystemExit, match="--backbone 'vgg'"):
        train_faster_rcnn.main(
            ["--voc_root", root, "--classes", "shapes", "--backbone", "vgg", "--output_dir", str(tmp_path / "o")]
        )

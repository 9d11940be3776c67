"""Train torchvision's Faster R-CNN (ResNet-50-FPN, MobileNetV3-FPN or any timm backbone) on PASCAL VOC
with or without GAF, through the same Trainer, data, evaluator and comparison runner as the DETR recipe.

    # CPU, synthetic VOC
    python recipes/detection/train_faster_rcnn.py --voc_root runs/voc-synth --classes shapes \
        --backbone timm:resnet18 --image_size 128 --preset gaf --output_dir runs/frcnn/gaf
    # GPUs, real VOC 07+12, VOC2007 test
    accelerate launch --config_file recipes/accelerate_configs/multi_gpu_ddp.yaml \
        recipes/detection/train_faster_rcnn.py \
        --voc_root /data --years 2007+2012 --eval_years 2007 --backbone resnet50_fpn --weights_path /ckpt/r50.pth \
        --image_size 800 --preset sgd

Presets (--preset; torchvision's reference: SGD lr 0.02 per 16 images, momentum 0.9, wd 1e-4, warmup, step
decay at 2/3 and 8/9 of training): sgd, gaf, gaf-grad, clip-norm, clip-value.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_gaf.detection.data import DetectionDataArguments
from hf_gaf.detection.faster_rcnn import FasterRCNNCollator, build_faster_rcnn, faster_rcnn_postprocess
from hf_gaf.detection.saved import DetectorInfo
from hf_gaf.harness.detection_training import DetectionOutputArguments, load_splits_or_exit, train_detector
from hf_gaf.harness.experiment_args import ExperimentArguments
from hf_gaf.harness.presets import PresetArguments, parse_with_preset
from hf_gaf.harness.training import prepare_run, recipe_defaults
from hf_gaf.metrics.detection import EvaluationArguments


@dataclass
class ModelArguments:
    backbone: str = field(
        default="resnet50_fpn",
        metadata={"help": "resnet50_fpn, mobilenet_v3_fpn, or timm:<any timm model> (features_only + FPN)."},
    )
    weights_path: str | None = field(default=None, metadata={"help": "Local weights file (random init otherwise)."})
    anchor_sizes: list[int] | None = field(default=None, metadata={"help": "One anchor size per pyramid level."})
    timm_out_indices: list[int] = field(
        default_factory=lambda: [1, 2, 3, 4], metadata={"help": "Feature levels of a timm backbone fed to the FPN."}
    )
    fpn_channels: int = field(default=256)
    rpn_pre_nms_top_n: int = field(default=2000)
    rpn_post_nms_top_n: int = field(default=2000)
    rpn_batch_size_per_image: int = field(default=256)
    box_batch_size_per_image: int = field(default=512)


def main(argv=None) -> None:
    parser = HfArgumentParser(
        (
            ModelArguments,
            DetectionDataArguments,
            EvaluationArguments,
            DetectionOutputArguments,
            PresetArguments,
            ExperimentArguments,
        )
    )
    parser.set_defaults(
        **recipe_defaults(
            output_dir="runs/faster_rcnn",
            per_device_train_batch_size=4,
            per_device_eval_batch_size=8,
            batch_eval_metrics=True,
            eval_do_concat_batches=False,
            image_size=800,
            max_zoom_out=1.0,
            metric_for_best_model="voc07_map",
        )
    )
    parsed, preset = parse_with_preset(parser, "faster_rcnn", argv)
    model_args, data_args, eval_args, output_args, run_args, training_args = parsed
    prepare_run(training_args, run_args.overwrite_output_dir)
    splits = load_splits_or_exit(data_args)
    names = splits[0]
    build = dict(
        num_classes=len(names),
        backbone=model_args.backbone,
        image_size=data_args.image_size,
        anchor_sizes=list(model_args.anchor_sizes) if model_args.anchor_sizes else None,
        rpn_pre_nms_top_n=model_args.rpn_pre_nms_top_n,
        rpn_post_nms_top_n=model_args.rpn_post_nms_top_n,
        rpn_batch_size_per_image=model_args.rpn_batch_size_per_image,
        box_batch_size_per_image=model_args.box_batch_size_per_image,
        fpn_channels=model_args.fpn_channels,
        timm_out_indices=list(model_args.timm_out_indices),
    )
    try:
        model = build_faster_rcnn(**build, weights_path=model_args.weights_path)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    info = DetectorInfo(
        "faster_rcnn", names, data_args.image_size, data_args.resize_mode, category_ids=splits[1], build_kwargs=build
    )
    train_detector(
        model,
        FasterRCNNCollator(),
        faster_rcnn_postprocess,
        training_args,
        data_args,
        eval_args,
        output_args,
        splits,
        preset,
        info,
        extra={"backbone": model_args.backbone},
    )


if __name__ == "__main__":
    main()

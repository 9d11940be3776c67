"""Train a DETR-family detector (AutoModelForObjectDetection) on PASCAL VOC with or without GAF.

    # CPU, synthetic VOC (hf-gaf make-voc runs/voc-synth)
    python recipes/detection/train_detr.py --voc_root runs/voc-synth --classes shapes --model_config tiny-rt-detr \
        --preset adamw-gaf --output_dir runs/detr/adamw-gaf
    # GPUs, real VOC 07+12, tested on VOC2007 test
    accelerate launch --config_file recipes/accelerate_configs/multi_gpu_ddp.yaml recipes/detection/train_detr.py \
        --voc_root /data --years 2007+2012 --eval_years 2007 --model_name_or_path /ckpt/detr-resnet-50 \
        --ignore_mismatched_sizes true --preset adamw --image_size 800

Presets (--preset): adamw (DETR's: lr 1e-4, backbone 1e-5, wd 1e-4, clip 0.1), adamw-gaf (GAF on the
gradient instead of the clipping), sgd, gaf. Each epoch is evaluated (VOC07, VOC12 and COCO mAP,
per-class AP) with a streaming evaluator; metrics.json lands in --output_dir.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights only from local folders or the local cache

import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_gaf.detection.data import DetectionDataArguments
from hf_gaf.detection.detr import (
    CheckpointClassMismatch,
    DetrCollator,
    build_detr_model,
    canvas_processor,
    detr_postprocess,
)
from hf_gaf.detection.saved import DetectorInfo
from hf_gaf.harness.detection_training import DetectionOutputArguments, load_splits_or_exit, train_detector
from hf_gaf.harness.experiment_args import ExperimentArguments
from hf_gaf.harness.presets import PresetArguments, parse_with_preset
from hf_gaf.harness.training import prepare_run, recipe_defaults
from hf_gaf.metrics.detection import EvaluationArguments


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "Local checkpoint folder or cached hub id of any AutoModelForObjectDetection model."})
    model_config: str = field(default="tiny-rt-detr", metadata={
        "help": "Named from-scratch config when no checkpoint is given (see hf_gaf.detection.detr.NAMED_CONFIGS)."})
    ignore_mismatched_sizes: bool = field(default=False, metadata={
        "help": "Load a checkpoint trained on other classes: every weight but the class head is kept."})


def main(argv=None) -> None:
    parser = HfArgumentParser((ModelArguments, DetectionDataArguments, EvaluationArguments, DetectionOutputArguments,
                               PresetArguments, ExperimentArguments))
    parser.set_defaults(**recipe_defaults(output_dir="runs/detr", per_device_train_batch_size=8,
                        per_device_eval_batch_size=16, batch_eval_metrics=True, eval_do_concat_batches=False,
                        lr_scheduler_type="cosine", warmup_steps=0, metric_for_best_model="voc07_map"))
    parsed, preset = parse_with_preset(parser, "detr", argv, default="adamw")
    model_args, data_args, eval_args, output_args, run_args, training_args = parsed
    prepare_run(training_args, run_args.overwrite_output_dir)
    if not model_args.model_name_or_path and training_args.learning_rate < 5e-4:
        print(f"warning: --model_config {model_args.model_config} from random init at --learning_rate "
              f"{training_args.learning_rate:g} (DETR's fine-tuning rate): a small DETR learns little in tens of "
              "epochs at this rate; --preset scratch-adamw or scratch-adamw-gaf train at 1e-3", file=sys.stderr)
    splits = load_splits_or_exit(data_args)
    names = splits[0]
    try:
        model, processor = build_detr_model(names, model_args.model_name_or_path, model_args.model_config,
                                            model_args.ignore_mismatched_sizes)
    except (CheckpointClassMismatch, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    info = DetectorInfo("detr", names, data_args.image_size, data_args.resize_mode, category_ids=splits[1])
    processor = canvas_processor(processor, data_args.image_size, data_args.resize_mode)
    train_detector(model, DetrCollator(processor), detr_postprocess(processor), training_args,
                   data_args, eval_args, output_args, splits, preset, info, processor=processor,
                   extra={"model": model_args.model_name_or_path or model_args.model_config})


if __name__ == "__main__":
    main()

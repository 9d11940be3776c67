"""Train a DETR-family detector (AutoModelForObjectDetection) on PASCAL VOC with or without GAF.

    # CPU, synthetic VOC (hf-gaf make-voc runs/voc-synth)
    python recipes/detection/train_detr.py --voc_root runs/voc-synth --classes shapes --model_config tiny-rt-detr \
        --recipe adamw-gaf --output_dir runs/detr/adamw-gaf
    # GPUs, real VOC 07+12, tested on VOC2007 test
    accelerate launch --config_file recipes/accelerate_configs/multi_gpu_ddp.yaml recipes/detection/train_detr.py \
        --voc_root /data --years 2007+2012 --eval_years 2007 --model_name_or_path /ckpt/detr-resnet-50 \
        --ignore_mismatched_sizes true --recipe adamw --image_size 800

--recipe presets: adamw (DETR's: lr 1e-4, backbone 1e-5, wd 1e-4, clip 0.1), adamw-gaf (GAF on the
gradient instead of the clipping), sgd, gaf. Each epoch is evaluated (VOC07, VOC12 and COCO mAP,
per-class AP) with a streaming evaluator; metrics.json lands in --output_dir.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights only from local folders or the local cache

import sys  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from transformers import HfArgumentParser  # noqa: E402

from hf_gaf import GAFTrainingArguments  # noqa: E402
from hf_gaf.data.voc import VOCFormatError  # noqa: E402
from hf_gaf.detection.data import VOCDataArguments, class_names, load_detection_splits  # noqa: E402
from hf_gaf.detection.detr import CheckpointClassMismatch, DetrCollator, build_detr_model, detr_postprocess  # noqa: E402
from hf_gaf.detection.trainer import DetectionTrainer, detection_compute_metrics  # noqa: E402
from hf_gaf.detection.transforms import DetectionTransform  # noqa: E402
from hf_gaf.presets import PresetArguments, parse_with_preset  # noqa: E402
from hf_gaf.recipe import prepare_run, recipe_defaults, run_training  # noqa: E402
from hf_gaf.sample_rng import SampleRNG  # noqa: E402


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "Local checkpoint folder or cached hub id of any AutoModelForObjectDetection model."})
    model_config: str = field(default="tiny-rt-detr", metadata={
        "help": "Named from-scratch config when no checkpoint is given (see hf_gaf.detection.detr.NAMED_CONFIGS)."})
    ignore_mismatched_sizes: bool = field(default=False, metadata={
        "help": "Load a checkpoint trained on other classes: every weight but the class head is kept."})


def main(argv=None) -> None:
    parser = HfArgumentParser((ModelArguments, VOCDataArguments, PresetArguments, GAFTrainingArguments))
    parser.set_defaults(**recipe_defaults(output_dir="runs/detr", per_device_train_batch_size=8,
                        per_device_eval_batch_size=16, batch_eval_metrics=True, eval_do_concat_batches=False,
                        lr_scheduler_type="cosine", warmup_steps=0))
    (model_args, data_args, run_args, training_args), recipe = parse_with_preset(parser, "detr", argv, default="adamw")
    prepare_run(training_args, run_args.overwrite_output_dir)
    names = class_names(data_args.classes)
    try:
        train_ds, eval_ds = load_detection_splits(
            data_args.voc_root, data_args.years, data_args.train_split, data_args.eval_split, names,
            data_args.max_train_samples, data_args.max_eval_samples, data_args.eval_years, data_args.skip_unknown_classes)
        model, processor = build_detr_model(names, model_args.model_name_or_path, model_args.model_config,
                                            model_args.ignore_mismatched_sizes)
    except (VOCFormatError, CheckpointClassMismatch, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    size = data_args.image_size
    sample_rng = SampleRNG(training_args.seed)  # augmentation = f(seed, epoch, image): exact mid-epoch resume
    train_tf = DetectionTransform(size, train=True, mode=data_args.resize_mode, hflip=data_args.hflip,
                                  max_zoom_out=data_args.max_zoom_out, iou_crop=data_args.iou_crop, sample_rng=sample_rng)
    eval_tf = DetectionTransform(size, train=False, mode=data_args.resize_mode)
    train_collate, eval_collate = DetrCollator(processor, train_tf), DetrCollator(processor, eval_tf)

    trainer = DetectionTrainer(
        model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=train_collate,
        compute_metrics=detection_compute_metrics(names, compat=data_args.compat),
        postprocess=detr_postprocess(processor, size), eval_data_collator=eval_collate)
    run_training(trainer, recipe, n_train_images=len(train_ds), sample_rng=sample_rng,
                 extra={"model": model_args.model_name_or_path or model_args.model_config, "image_size": size})
    trainer.draw_predictions(eval_ds, names, n_images=data_args.draw_predictions)


if __name__ == "__main__":
    main()

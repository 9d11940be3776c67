"""DETR-family models (``AutoModelForObjectDetection``) for the VOC recipe.

- :func:`build_detr_model`: a local checkpoint folder / cached hub id (``--model_name_or_path``) or a
  named from-scratch config (``--model_config``), with the data set's classes.
- :func:`canvas_processor`: the model's image processor set to make the training canvas itself, with
  the settings a stock transformers processor has: letterbox = resize so the longer side is
  ``image_size`` (``size={"max_height", "max_width"}``) and pad at the bottom/right to a square
  (``pad_size``); stretch = resize to ``image_size`` x ``image_size``. It is what the saved folder holds,
  so ``pipeline("object-detection")`` feeds the model what training and ``hf-gaf predict`` feed it.
- :class:`DetrCollator`: images (resized by the training transform, or original for evaluation) through
  that processor; labels are class labels + cx, cy, w, h normalised to the IMAGE (not to the padded
  canvas), as ``post_process_object_detection`` with the original image size expects. The original
  ground truth rides along in each label dict for evaluation.
- :func:`detr_postprocess`: the processor's ``post_process_object_detection`` with ``threshold=0``
  (a higher threshold biases mAP) and each image's own size, the pipeline's call; then mapped back to
  original pixels (a no-op for evaluation images, which keep their size).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModelForObjectDetection

from .schema import EVAL_KEY, detections_to_original

# from-scratch configs; "tiny-*" are the CPU ones (small backbone, few layers, few queries)
NAMED_CONFIGS = {
    "tiny-rt-detr": dict(
        model_type="rt_detr", d_model=64, encoder_hidden_dim=64, encoder_ffn_dim=256, decoder_ffn_dim=256,
        encoder_attention_heads=4, decoder_attention_heads=4, decoder_layers=2, num_queries=30, num_denoising=30,
        decoder_in_channels=[64, 64, 64], encoder_in_channels=[64, 128, 256], feat_strides=[8, 16, 32],
        backbone_config=dict(model_type="rt_detr_resnet", embedding_size=32, hidden_sizes=[32, 64, 128, 256],
                             depths=[1, 1, 1, 1], layer_type="basic", out_features=["stage2", "stage3", "stage4"]),
    ),
    "tiny-conditional-detr": dict(
        model_type="conditional_detr", backbone="resnet18", use_timm_backbone=True, use_pretrained_backbone=False,
        d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=256, decoder_ffn_dim=256, num_queries=20,
    ),
    "detr-r50": dict(model_type="detr", backbone="resnet50", use_timm_backbone=True, use_pretrained_backbone=False),
    "conditional-detr-r50": dict(model_type="conditional_detr", backbone="resnet50", use_timm_backbone=True,
                                 use_pretrained_backbone=False),
    "deformable-detr-r50": dict(model_type="deformable_detr", backbone="resnet50", use_timm_backbone=True,
                                use_pretrained_backbone=False),
    "rt-detr-r50": dict(model_type="rt_detr"),
}


class CheckpointClassMismatch(ValueError):
    """The checkpoint's class head does not fit the data set's classes."""


def build_detr_model(class_names: list[str], model_name_or_path: str | None = None, model_config: str | None = None,
                     ignore_mismatched_sizes: bool = False):
    """The model and its image processor (as the checkpoint has it, or the type's defaults; give it to
    :func:`canvas_processor`), with ``len(class_names)`` labels."""
    id2label = dict(enumerate(class_names))
    label2id = {v: k for k, v in id2label.items()}
    if model_name_or_path:
        try:
            config = AutoConfig.from_pretrained(model_name_or_path)
        except OSError as err:
            raise FileNotFoundError(
                f"--model_name_or_path {model_name_or_path!r} is neither a local checkpoint folder nor a cached hub "
                f"id (nothing is downloaded at run time): {err}") from None
        if config.num_labels != len(class_names) and not ignore_mismatched_sizes:
            raise CheckpointClassMismatch(
                f"checkpoint {model_name_or_path!r} has {config.num_labels} classes, the data has {len(class_names)}; "
                "pass --ignore_mismatched_sizes true to keep every other weight and start the class head afresh")
        model = AutoModelForObjectDetection.from_pretrained(
            model_name_or_path, num_labels=len(class_names), id2label=id2label, label2id=label2id,
            ignore_mismatched_sizes=ignore_mismatched_sizes)
        processor = AutoImageProcessor.from_pretrained(model_name_or_path)
        return model, processor
    if model_config not in NAMED_CONFIGS:
        raise ValueError(f"--model_config {model_config!r}: expected one of {', '.join(NAMED_CONFIGS)} "
                         "(or pass --model_name_or_path)")
    settings = dict(NAMED_CONFIGS[model_config])
    model_type = settings.pop("model_type")
    backbone = settings.pop("backbone_config", None)
    if backbone is not None:
        backbone = AutoConfig.for_model(**backbone)
        settings["backbone_config"] = backbone
    config = AutoConfig.for_model(model_type, num_labels=len(class_names), id2label=id2label, label2id=label2id,
                                  **settings)
    model = AutoModelForObjectDetection.from_config(config)
    return model, processor_for(model_type)


PROCESSORS = {"detr": "DetrImageProcessor", "conditional_detr": "ConditionalDetrImageProcessor",
              "deformable_detr": "DeformableDetrImageProcessor", "rt_detr": "RTDetrImageProcessor"}


def processor_for(model_type: str):
    """The model type's image processor with its defaults (:func:`canvas_processor` sets the canvas)."""
    import transformers

    return getattr(transformers, PROCESSORS[model_type])()


def canvas_processor(processor, image_size: int, resize_mode: str):
    """A copy of ``processor`` that makes the training canvas (module docstring)."""
    if resize_mode == "letterbox":
        canvas = dict(do_resize=True, size={"max_height": image_size, "max_width": image_size}, do_pad=True,
                      pad_size={"height": image_size, "width": image_size})
    else:
        canvas = dict(do_resize=True, size={"height": image_size, "width": image_size}, do_pad=False, pad_size=None)
    return type(processor).from_dict({**processor.to_dict(), **canvas})


class DetrCollator:
    """Rows of :func:`~hf_gaf.detection.data.with_canvas_transform` (``sample``, ``eval_target``) to
    ``{"pixel_values", "pixel_mask" (letterbox), "labels"}`` for a DETR model, through its
    :func:`canvas_processor`; the same collator serves training and evaluation (the split's transform made
    the difference: a training image arrives resized, so the processor's resize leaves it as it is)."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, rows: list[dict]) -> dict:
        samples = [row["sample"] for row in rows]
        batch = self.processor(images=[s.image for s in samples], return_tensors="pt")
        labels = []
        for row, sample in zip(rows, samples):
            h, w = sample.image.shape[-2:]
            x0, y0, x1, y1 = sample.boxes.float().reshape(-1, 4).unbind(1)
            boxes = torch.stack([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h], 1)
            labels.append({"class_labels": sample.labels, "boxes": boxes, "size": torch.tensor([h, w]),
                           EVAL_KEY: row[EVAL_KEY]})
        inputs = {"pixel_values": batch["pixel_values"], "labels": labels}
        if "pixel_mask" in batch:
            inputs["pixel_mask"] = batch["pixel_mask"]
        return inputs


def detr_postprocess(processor):
    """``postprocess(outputs, labels)`` for :class:`~hf_gaf.detection.trainer.DetectionTrainer`: the boxes
    of ``post_process_object_detection`` at each image's size (label ``size``), then in original pixels."""

    def postprocess(outputs, labels):
        view = SimpleNamespace(logits=outputs["logits"], pred_boxes=outputs["pred_boxes"])  # ModelOutput or dict
        sizes = [tuple(int(v) for v in label["size"]) for label in labels]
        results = processor.post_process_object_detection(view, threshold=0.0, target_sizes=sizes)
        return detections_to_original(results, labels)

    return postprocess


def save_files(folder: str, model, info, processor) -> None:
    """The DETR family's files of a saved folder (:mod:`~hf_gaf.detection.saved`): the transformers model and
    the processor that makes the training canvas."""
    model.save_pretrained(folder)
    canvas_processor(processor, info.image_size, info.resize_mode).save_pretrained(folder)


def load_files(folder: str, info):
    """``(model, collator, postprocess, processor)`` of a saved DETR-family folder; a folder of format 1 is
    refused with the reason."""
    from .saved import FORMAT_VERSION

    if info.format_version < FORMAT_VERSION:
        raise ValueError(f"detector folder {folder}: saved by an earlier hf_gaf (format "
                         f"{info.format_version}), whose DETR boxes are relative to a padded canvas its saved "
                         "processor does not make; retrain it with this version (pipeline, predict and "
                         "evaluation then agree on any image shape)")
    try:
        model = AutoModelForObjectDetection.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError) as err:  # safetensors' errors (a file cut short) are among these
        raise ValueError(f"detector folder {folder}: the saved model cannot be loaded "
                         f"({str(err).splitlines()[0]}); is {folder}/model.safetensors complete?") from None
    processor = AutoImageProcessor.from_pretrained(folder)  # as saved: it makes the canvas, as in pipeline()
    return model, DetrCollator(processor), detr_postprocess(processor), processor

"""DETR-family models (``AutoModelForObjectDetection``) for the VOC recipe.

- :func:`build_detr_model`: a local checkpoint folder / cached hub id (``--model_name_or_path``) or a
  named from-scratch config (``--model_config``), with the data set's classes.
- :class:`DetrCollator`: box-consistent transforms onto a square canvas, then the model's own image
  processor (normalisation and its label format: class labels + cx, cy, w, h normalised to the
  canvas). The original ground truth rides along in each label dict for evaluation.
- :func:`detr_postprocess`: the processor's ``post_process_object_detection`` with ``threshold=0``
  (a higher threshold biases mAP), on the canvas, then mapped back to original pixels. Because the
  canvas is square and never padded by the processor, normalised boxes are relative to the canvas;
  the letterbox padding is undone by the per-axis scale, not by ``orig_size``.
"""

from __future__ import annotations

from types import SimpleNamespace

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
    """The model and its image processor, with ``len(class_names)`` labels."""
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
    """The model type's image processor, set to leave resizing and padding to our transforms."""
    import transformers

    return getattr(transformers, PROCESSORS[model_type])(do_resize=False, do_pad=False)


class DetrCollator:
    """Rows of :func:`~hf_gaf.detection.data.with_canvas_transform` (``sample``, ``eval_target``) to
    ``{"pixel_values", "labels"}`` for a DETR model, through the model's own image processor; the same
    collator serves training and evaluation (the split's transform made the difference)."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, rows: list[dict]) -> dict:
        samples = [row["sample"] for row in rows]
        annotations = []
        for row, sample in zip(rows, samples):
            annotations.append(
                {
                    "image_id": row[EVAL_KEY].image_index,
                    "annotations": [
                        {
                            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                            "category_id": int(c),
                            "area": float((b[2] - b[0]) * (b[3] - b[1])),
                            "iscrowd": 0,
                        }
                        for b, c in zip(sample.boxes, sample.labels)
                    ],
                }
            )
        batch = self.processor(images=[s.image for s in samples], annotations=annotations, return_tensors="pt")
        labels = [
            {"class_labels": target["class_labels"], "boxes": target["boxes"], EVAL_KEY: row[EVAL_KEY]}
            for row, target in zip(rows, batch["labels"])
        ]
        return {"pixel_values": batch["pixel_values"], "labels": labels}


def detr_postprocess(processor, canvas: int):
    """``postprocess(outputs, labels)`` for :class:`~hf_gaf.detection.trainer.DetectionTrainer`."""

    def postprocess(outputs, labels):
        view = SimpleNamespace(logits=outputs["logits"], pred_boxes=outputs["pred_boxes"])  # ModelOutput or dict
        results = processor.post_process_object_detection(
            view, threshold=0.0, target_sizes=[(canvas, canvas)] * len(labels)
        )
        return detections_to_original(results, labels)

    return postprocess

"""Faster R-CNN (torchvision) for the detection recipes: the model as a Trainer-compatible module with
any backbone, its collator, and its post-processing.

Training forward returns ``{"loss": sum of the RPN and ROI losses, "loss_classifier", "loss_box_reg",
"loss_objectness", "loss_rpn_box_reg"}``; eval forward returns ``{"detections": [...]}``. Labels:
torchvision reserves 0 for the background, so data-set classes 0..K-1 are 1..K inside the model
(:func:`to_model_labels`, :func:`from_model_labels`). Images without objects train with boxes of shape
(0, 4). Backbones: ``resnet50_fpn``, ``mobilenet_v3_fpn`` (torchvision) or ``timm:<name>`` (any timm
model through ``features_only=True`` plus an FPN). Weights only from a local file.

Example:
    >>> import torch
    >>> model = build_faster_rcnn(4, backbone="timm:resnet18", image_size=128)
    >>> x = torch.rand(2, 3, 128, 128)
    >>> targets = [{"boxes": torch.tensor([[10., 10., 50., 60.]]), "labels": torch.tensor([2])},
    ...            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    >>> sorted(model(x, labels=targets))[:2]
    ['loss', 'loss_box_reg']
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict

import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .schema import EVAL_KEY, detections_to_original
from .weights import load_state_dict_file


def to_model_labels(labels: torch.Tensor) -> torch.Tensor:
    """Data-set classes 0..K-1 to torchvision's 1..K (0 is the background)."""
    return labels + 1


def from_model_labels(labels: torch.Tensor) -> torch.Tensor:
    """torchvision's 1..K back to data-set classes 0..K-1."""
    return labels - 1


class TimmFPN(torch.nn.Module):
    """A timm feature extractor (``features_only``) with a feature pyramid on top."""

    def __init__(self, name: str, out_indices=(1, 2, 3, 4), out_channels: int = 128) -> None:
        super().__init__()
        import timm  # the timm:<name> backbones only

        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=out_indices)
        self.fpn = FeaturePyramidNetwork(
            self.body.feature_info.channels(), out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def make_backbone(backbone: str, fpn_channels: int, timm_out_indices=(1, 2, 3, 4)):
    if backbone == "resnet50_fpn":
        return resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=5)
    if backbone == "mobilenet_v3_fpn":
        return mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True, trainable_layers=6)
    if backbone.startswith("timm:"):
        return TimmFPN(backbone.removeprefix("timm:"), timm_out_indices, fpn_channels)
    raise ValueError(f"--backbone {backbone!r}: expected resnet50_fpn, mobilenet_v3_fpn or timm:<model name>")


class FasterRCNNModule(torch.nn.Module):
    def __init__(self, detector: FasterRCNN) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, pixel_values: torch.Tensor, labels: list[dict] | None = None) -> dict:
        images = list(pixel_values)
        if self.training:
            targets = [{"boxes": t["boxes"], "labels": to_model_labels(t["labels"])} for t in labels]
            losses = self.detector(images, targets)
            return {"loss": sum(losses.values()), **{k: v.detach() for k, v in losses.items()}}
        detections = self.detector(images)
        for d in detections:
            d["labels"] = from_model_labels(d["labels"])
        return {"detections": detections}


def build_faster_rcnn(
    num_classes: int,
    backbone: str = "resnet50_fpn",
    image_size: int = 800,
    anchor_sizes: tuple[int, ...] | None = None,
    rpn_pre_nms_top_n: int = 2000,
    rpn_post_nms_top_n: int = 2000,
    rpn_batch_size_per_image: int = 256,
    box_batch_size_per_image: int = 512,
    fpn_channels: int = 256,
    weights_path: str | None = None,
    timm_out_indices=(1, 2, 3, 4),
) -> FasterRCNNModule:
    """Faster R-CNN for ``num_classes`` data-set classes on square ``image_size`` canvases."""
    body = make_backbone(backbone, fpn_channels, timm_out_indices)
    n_levels = len(timm_out_indices) + 1 if backbone.startswith("timm:") else (5 if backbone == "resnet50_fpn" else 3)
    sizes = anchor_sizes or (32, 64, 128, 256, 512)[:n_levels]
    if len(sizes) != n_levels:
        raise ValueError(f"--anchor_sizes needs {n_levels} sizes for backbone {backbone}, got {list(sizes)}")
    anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * n_levels)
    detector = FasterRCNN(
        body,
        num_classes=num_classes + 1,
        min_size=image_size,
        max_size=image_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n // 2,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n,
        rpn_post_nms_top_n_test=rpn_post_nms_top_n // 2,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        box_batch_size_per_image=box_batch_size_per_image,
        box_score_thresh=0.0,
        box_detections_per_img=100,
    )
    model = FasterRCNNModule(detector)
    if weights_path:
        state = load_state_dict_file(weights_path, "--weights_path")
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
    return model


class FasterRCNNCollator:
    """Rows of :func:`~hf_gaf.detection.data.with_canvas_transform` (``sample``, ``eval_target``) to
    ``{"pixel_values", "labels"}``: canvas images in [0, 1], boxes and data-set classes per image."""

    def __call__(self, rows: list[dict]) -> dict:
        images, labels = [], []
        for row in rows:
            sample = row["sample"]
            images.append(sample.image.float() / 255.0)
            labels.append({"boxes": sample.boxes.reshape(-1, 4), "labels": sample.labels, EVAL_KEY: row[EVAL_KEY]})
        return {"pixel_values": torch.stack(images), "labels": labels}


def faster_rcnn_postprocess(outputs: dict, labels: list[dict]) -> list[dict]:
    """``postprocess`` for :class:`~hf_gaf.detection.trainer.DetectionTrainer` (the model's labels are
    already data-set classes)."""
    return detections_to_original(outputs["detections"], labels)


CONFIG = "faster_rcnn_config.json"  # build_faster_rcnn's arguments, in a saved folder


def save_files(folder: str, model, info, processor=None) -> None:
    """The Faster R-CNN files of a saved folder (:mod:`~hf_gaf.detection.saved`): the state dict as
    ``model.safetensors`` and :func:`build_faster_rcnn`'s arguments."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, CONFIG), "w") as f:
        json.dump(info.build_kwargs, f, indent=2)


def load_files(folder: str, info):
    """``(model, collator, postprocess, processor)`` of a saved Faster R-CNN folder (no processor)."""
    model = build_faster_rcnn(**info.build_kwargs)
    model.load_state_dict(load_state_dict_file(os.path.join(folder, "model.safetensors"), "detector weights"))
    return model, FasterRCNNCollator(), faster_rcnn_postprocess, None

"""The part of a detector each parameter belongs to, from its name: what the per-module GAF statistics are split by.

Groups: ``backbone``, ``neck`` (FPN, input projections, a DETR's encoder), ``rpn`` (Faster R-CNN), ``decoder``
(a DETR's decoder layers, Faster R-CNN's box head MLP), ``class_head``, ``box_head``, ``queries`` (query embeddings
and heads, denoising embeddings); anything else is ``other``. The rules read the names of transformers'
``AutoModelForObjectDetection`` models of the DETR family (DETR, Deformable DETR, Conditional DETR, RT-DETR) and of
torchvision's detectors; the first rule that matches wins.

Example:
    >>> names = ("model.backbone.model.encoder.stages.0.weight", "backbone.fpn.inner_blocks.0.0.weight",
    ...          "model.decoder.class_embed.0.weight", "roi_heads.box_predictor.bbox_pred.bias")
    >>> [module_group(n) for n in names]
    ['backbone', 'neck', 'class_head', 'box_head']
"""

from __future__ import annotations

import re

MODULE_GROUPS = (  # (group, regular expression searched in the parameter's name), in order
    ("class_head", r"class_embed|class_labels_classifier|enc_score_head|box_predictor\.cls_score"),
    ("box_head", r"bbox_embed|bbox_predictor|enc_bbox_head|box_predictor\.bbox_pred"),
    ("queries", r"query|denoising_class_embed|weight_embedding|reference_points"),
    ("neck", r"backbone\.fpn\."),
    ("backbone", r"backbone"),
    ("rpn", r"(^|\.)rpn\."),
    ("neck", r"input_proj|input_projection|(^|\.)encoder\.|enc_output"),
    ("decoder", r"(^|\.)decoder\.|roi_heads\.box_head\."),
)


def module_group(name: str) -> str:
    """The group of parameter ``name`` (module docstring): the first of :data:`MODULE_GROUPS` whose expression
    occurs in it, else ``other``."""
    for group, pattern in MODULE_GROUPS:
        if re.search(pattern, name):
            return group
    return "other"

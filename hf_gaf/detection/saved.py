"""Saved detectors: what a trained detection model is written as, and how it is loaded back.

A saved folder holds ``hf_gaf_detection.json`` (``family``, ``class_names``, ``category_ids`` when the data
were COCO JSON, the canvas ``image_size`` and ``resize_mode``, ``format_version``, the evaluation data) and the
family's own files, which the family's module writes and reads (:mod:`~hf_gaf.detection.families`):

- DETR family: a transformers folder (``config.json`` with ``id2label``, ``model.safetensors`` and the
  image processor), which ``AutoModelForObjectDetection.from_pretrained`` and
  ``pipeline("object-detection")`` load. The saved processor makes the training canvas itself
  (:func:`~hf_gaf.detection.detr.canvas_processor`: letterbox = longer side ``image_size``, padded at the
  bottom/right) and the model's boxes are relative to the image, so the pipeline, ``hf-gaf predict`` and
  the recipe's evaluation give the same detections on any aspect ratio. Folders of format 1 (before this
  layout: boxes relative to a padded canvas the processor did not make) are refused with that reason.
- Faster R-CNN: ``model.safetensors`` (the state dict) and ``faster_rcnn_config.json`` (the arguments of
  :func:`~hf_gaf.detection.faster_rcnn.build_faster_rcnn`), from which :func:`load_detector` rebuilds it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace

import torch

from .families import family
from .transforms import MODES, DetectionTransform

DETECTION_CONFIG = "hf_gaf_detection.json"
FORMAT_VERSION = 2


@dataclass
class DetectorInfo:
    """The contents of ``hf_gaf_detection.json``."""

    family: str
    class_names: list[str]
    image_size: int
    resize_mode: str = "letterbox"
    category_ids: list[int] | None = None  # COCO category id of each label (COCO data only)
    build_kwargs: dict = field(default_factory=dict)  # Faster R-CNN: build_faster_rcnn's arguments
    eval_data: dict | None = None  # the evaluation split's data flags of the training run (detection.data)
    format_version: int = 1  # absent in folders written before version 2 (module docstring); save writes 2

    def __post_init__(self) -> None:
        """A hand-edited file is checked field by field (a ``ValueError`` naming the field)."""
        family(self.family)  # the one "unknown family" error
        if (not isinstance(self.class_names, list) or not self.class_names
                or not all(isinstance(n, str) for n in self.class_names)
                or len(set(self.class_names)) != len(self.class_names)):
            raise ValueError(f"class_names must be a non-empty list of distinct strings, got {self.class_names!r}")
        if type(self.image_size) is not int or self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {self.image_size!r}")
        if self.resize_mode not in MODES:
            raise ValueError(f"resize_mode must be one of {', '.join(MODES)}, got {self.resize_mode!r}")
        if self.category_ids is not None and (
                not isinstance(self.category_ids, list) or len(self.category_ids) != len(self.class_names)
                or not all(type(i) is int for i in self.category_ids)):
            raise ValueError(f"category_ids must be null or one integer per class, got {self.category_ids!r}")
        if not isinstance(self.build_kwargs, dict):
            raise ValueError(f"build_kwargs must be an object, got {self.build_kwargs!r}")
        if self.eval_data is not None and not isinstance(self.eval_data, dict):
            raise ValueError(f"eval_data must be null or an object, got {self.eval_data!r}")
        if type(self.format_version) is not int or self.format_version not in (1, FORMAT_VERSION):
            raise ValueError(f"format_version must be 1 or {FORMAT_VERSION}, got {self.format_version!r}")

    @property
    def canvas_by_processor(self) -> bool:
        """The model's image processor finishes the canvas (the family's rule; see the transforms module)."""
        return family(self.family).canvas_by_processor

    def eval_transform(self) -> DetectionTransform:
        """The transform this detector's evaluation and prediction images go through (no augmentation)."""
        return DetectionTransform(self.image_size, train=False, mode=self.resize_mode,
                                  canvas_by_processor=self.canvas_by_processor)

    def category_id(self, label: int) -> int:
        """The id to write for ``label`` in COCO-style output (the label itself without COCO categories)."""
        return self.category_ids[label] if self.category_ids else int(label)


@dataclass
class SavedDetector:
    """A loaded detector: the module, its ``postprocess`` and collator, and its :class:`DetectorInfo`."""

    info: DetectorInfo
    model: torch.nn.Module
    collator: object
    postprocess: object
    processor: object = None


def save_detector(folder: str, model: torch.nn.Module, info: DetectorInfo, processor=None) -> str:
    """Write ``model`` (module docstring) into ``folder`` (created; files of an earlier save are replaced)."""
    family(info.family)
    os.makedirs(folder, exist_ok=True)
    info = replace(info, format_version=FORMAT_VERSION)
    family(info.family).implementation().save_files(folder, model, info, processor)
    with open(os.path.join(folder, DETECTION_CONFIG), "w") as f:
        json.dump(asdict(info), f, indent=2)
    return folder


def load_detector(folder: str) -> SavedDetector:
    """A detector saved by :func:`save_detector` (a ``ValueError`` naming the folder when it is neither family)."""
    path = os.path.join(folder, DETECTION_CONFIG)
    if not os.path.isdir(folder):
        raise ValueError(f"detector folder {folder}: not a folder")
    if not os.path.isfile(path):
        raise ValueError(f"detector folder {folder}: no {DETECTION_CONFIG}, so it is neither a saved DETR-family "
                         "nor a Faster R-CNN model of hf_gaf (the detection recipes save one: "
                         "python -m hf_gaf.recipes.detection.train_detr or .train_faster_rcnn)")
    try:
        with open(path) as f:
            info = DetectorInfo(**json.load(f))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as err:
        raise ValueError(f"{path} cannot be read ({err})") from None
    weights = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(weights):
        raise ValueError(f"detector folder {folder}: {weights} is missing; copy the whole saved folder")
    model, collator, postprocess, processor = family(info.family).implementation().load_files(folder, info)
    return SavedDetector(info, model, collator, postprocess, processor)

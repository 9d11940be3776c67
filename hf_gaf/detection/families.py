"""The detector families, one record each: what a family's saved folder holds and how it is written and read
back, the canvas rule, and what a model card and a comparison need to know of it.

A family's module defines ``save_files(folder, model, info, processor)`` and ``load_files(folder, info)``
(returning ``(model, collator, postprocess, processor)``) and is named here once: adding a family is its own
module and one :class:`Family` entry (its module is imported only when a folder of that family is saved or
loaded, so a family whose packages are missing costs the others nothing).

Example:
    >>> family("faster_rcnn").canvas_by_processor, family("detr").library_name
    (False, 'transformers')
    >>> family("yolo")
    Traceback (most recent call last):
    ...
    ValueError: family 'yolo': expected one of detr, faster_rcnn
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """One detector family: ``module`` (a dotted module path) saves and loads its folders;
    ``canvas_by_processor``: the model's image processor finishes the canvas (see the transforms module);
    ``library_name``: the model card's; ``recipe``: its training script under ``hf_gaf.recipes.detection``;
    ``pipeline``: its folder loads in ``pipeline("object-detection")``."""

    name: str
    module: str
    canvas_by_processor: bool
    library_name: str
    recipe: str
    pipeline: bool

    def implementation(self):
        """The family's module (``save_files``, ``load_files``)."""
        return importlib.import_module(self.module)


FAMILIES = {f.name: f for f in (
    Family("detr", "hf_gaf.detection.detr", canvas_by_processor=True, library_name="transformers", recipe="train_detr",
           pipeline=True),
    Family("faster_rcnn", "hf_gaf.detection.faster_rcnn", canvas_by_processor=False, library_name="pytorch",
           recipe="train_faster_rcnn", pipeline=False),
)}


def family(name: str) -> Family:
    """The record of family ``name``; one error naming the families otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"family {name!r}: expected one of {', '.join(FAMILIES)}")
    return FAMILIES[name]

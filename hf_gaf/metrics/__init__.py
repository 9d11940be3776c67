"""Metrics: VOC AP (devkit and py-faster-rcnn conventions), COCO AP, a streaming evaluator, the
``compute_metrics`` of any ``transformers.Trainer`` of a DETR-family model (:class:`DetrComputeMetrics`), and
``evaluate`` metric modules shipped inside the package (hub metric scripts cannot be fetched offline).

:func:`metric_path` needs nothing but the standard library (the classification recipe uses it for its
top-k accuracy module); the detection metrics load on first use and need the ``[detection]`` extra.

    >>> import evaluate
    >>> from hf_gaf.metrics import metric_path
    >>> voc_map = evaluate.load(metric_path("voc_map"))  # doctest: +SKIP
"""

from importlib import import_module
from pathlib import Path

from .._extras import require_extra

_LAZY = {"DetectionEvaluator": ".detection", "make_compute_metrics": ".detection", "voc_eval": ".voc",
         "average_precision": ".voc", "box_iou": ".voc", "DetrComputeMetrics": ".detr_compute_metrics"}

_MODULES = Path(__file__).parent / "modules"


def metric_path(name: str) -> str:
    """The local path of a metric module shipped with hf_gaf, for ``evaluate.load(path)``."""
    path = _MODULES / name / f"{name}.py"
    if not path.is_file():
        known = sorted(p.name for p in _MODULES.iterdir() if p.is_dir())
        raise ValueError(f"no metric module {name!r} in hf_gaf; known: {', '.join(known)}")
    return str(path)


__all__ = ["DetectionEvaluator", "DetrComputeMetrics", "make_compute_metrics", "voc_eval", "average_precision",
           "box_iou", "metric_path"]


def __getattr__(name: str):
    if name in _LAZY:
        require_extra("hf_gaf.metrics", "detection")
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'hf_gaf.metrics' has no attribute {name!r}")

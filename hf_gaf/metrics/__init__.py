"""Metrics: VOC AP (devkit and py-faster-rcnn conventions), COCO AP, a streaming evaluator, and
``evaluate`` metric modules shipped inside the package (hub metric scripts cannot be fetched offline).

    >>> import evaluate
    >>> from hf_gaf.metrics import metric_path
    >>> voc_map = evaluate.load(metric_path("voc_map"))  # doctest: +SKIP
"""

from pathlib import Path

from .._extras import require_extra

require_extra("hf_gaf.metrics", "detection")

from .detection import DetectionEvaluator, make_compute_metrics  # noqa: E402
from .voc import average_precision, box_iou, voc_eval  # noqa: E402

_MODULES = Path(__file__).parent / "modules"


def metric_path(name: str) -> str:
    """The local path of a metric module shipped with hf_gaf, for ``evaluate.load(path)``."""
    path = _MODULES / name / f"{name}.py"
    if not path.is_file():
        known = sorted(p.name for p in _MODULES.iterdir() if p.is_dir())
        raise ValueError(f"no metric module {name!r} in hf_gaf; known: {', '.join(known)}")
    return str(path)


__all__ = ["DetectionEvaluator", "make_compute_metrics", "voc_eval", "average_precision", "box_iou", "metric_path"]

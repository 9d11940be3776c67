"""Detection wing (``pip install 'hf_gaf[detection]'``): PASCAL VOC loading (real and synthetic), box-consistent
canvas transforms, the evaluation contract (:mod:`~hf_gaf.detection.schema`), one module per model family
(:mod:`~hf_gaf.detection.detr`, :mod:`~hf_gaf.detection.faster_rcnn`) and, with the ``[hf]`` extra too, a
Trainer whose evaluation streams detections into the VOC/COCO evaluator (:mod:`~hf_gaf.detection.trainer`)."""

from .._extras import require_extra

require_extra("hf_gaf.detection", "detection")

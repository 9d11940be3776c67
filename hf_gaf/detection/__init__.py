"""Detection plumbing shared by the DETR-family and Faster R-CNN recipes: box-consistent transforms,
a Trainer whose evaluation streams detections into the VOC/COCO evaluator, and drawing."""

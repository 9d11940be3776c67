"""``hf-gaf predict`` and ``hf-gaf evaluate``: a saved detector (:mod:`hf_gaf.detection.saved`) on new images, or
re-scored on a labelled split without training.

    hf-gaf predict --model runs/frcnn/model --images photos/ --out preds/ --threshold 0.5
    hf-gaf evaluate --model runs/detr/best-model --out eval/ --voc_root data/voc --eval_split test

``predict`` writes ``detections.json`` (COCO-style results: ``image_id``, ``file_name``, ``category_id``,
``category``, ``bbox`` as [x, y, width, height] in pixels, ``score``) and one PNG per image with the boxes
drawn; ``evaluate`` writes ``metrics.json`` with VOC07/VOC12/COCO mAP and per-class AP, computed by the same
evaluation path as training (:class:`~hf_gaf.detection.trainer.DetectionTrainer`).
"""

from __future__ import annotations

import json
import os
import tempfile

import torch
from PIL import Image, ImageDraw, UnidentifiedImageError
from tqdm.auto import tqdm

from ..detection.data import DetectionDataArguments, load_eval_split, with_canvas_transform
from ..detection.saved import load_detector
from ..detection.schema import EVAL_KEY, EvalTarget
from ..detection.trainer import DetectionTrainer, detection_compute_metrics
from ..detection.transforms import DetectionTransform

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def image_files(sources: list[str]) -> list[str]:
    """The image files of ``sources`` (files, or folders searched one level deep), sorted per folder."""
    files = []
    for source in sources:
        if os.path.isdir(source):
            found = sorted(os.path.join(source, n) for n in os.listdir(source) if n.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise ValueError(f"--images {source}: the folder holds no {'/'.join(IMAGE_SUFFIXES)} file")
            files += found
        elif os.path.isfile(source):
            files.append(source)
        else:
            raise ValueError(f"--images {source}: no such file or folder")
    return files


@torch.no_grad()
def predict(model_dir: str, sources: list[str], out: str, threshold: float = 0.5, batch_size: int = 8,
            device: str | None = None) -> str:
    """Run the detector of ``model_dir`` on the images of ``sources``; write ``out/detections.json`` and one
    PNG per image; return the JSON's path."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"--threshold {threshold}: expected a score in [0, 1]")
    detector = load_detector(model_dir)
    files = image_files(sources)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = detector.model.to(device).eval()
    transform = DetectionTransform(detector.info.image_size, train=False, mode=detector.info.resize_mode)
    os.makedirs(out, exist_ok=True)
    results, names = [], detector.info.class_names
    for start in tqdm(range(0, len(files), batch_size), desc="predict", unit="batch"):
        batch_files = files[start:start + batch_size]
        images, rows = [], []
        for index, file in enumerate(batch_files, start):
            try:
                with Image.open(file) as img:
                    image = img.convert("RGB")
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"--images: {file} is not a readable image ({err})") from None
            sample = transform(image, [], [])
            empty = EvalTarget(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool),
                               index, tuple(sample.scale), tuple(sample.orig_size))
            images.append(image)
            rows.append({"sample": sample, EVAL_KEY: empty})
        batch = detector.collator(rows)
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        detections = detector.postprocess(model(pixel_values=batch["pixel_values"]), batch["labels"])
        for file, image, det in zip(batch_files, images, detections):
            keep = det["scores"] >= threshold
            boxes, scores, labels = det["boxes"][keep].cpu(), det["scores"][keep].cpu(), det["labels"][keep].cpu()
            stem = os.path.splitext(os.path.basename(file))[0]
            for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
                results.append({"image_id": stem, "file_name": file, "category_id": detector.info.category_id(label),
                                "category": names[label], "score": round(score, 5),
                                "bbox": [round(box[0], 2), round(box[1], 2), round(box[2] - box[0], 2),
                                         round(box[3] - box[1], 2)]})
            _draw(image, boxes.tolist(), scores.tolist(), [names[i] for i in labels.tolist()],
                  os.path.join(out, f"{stem}.png"))
    path = os.path.join(out, "detections.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"{len(results)} detections (score >= {threshold}) on {len(files)} images: {path} and {len(files)} PNGs in {out}")
    return path


def _draw(image: Image.Image, boxes, scores, names, path: str) -> None:
    drawn = image.copy()
    pen = ImageDraw.Draw(drawn)
    for (x0, y0, x1, y1), score, name in zip(boxes, scores, names):
        pen.rectangle([x0, y0, x1, y1], outline=(255, 64, 32), width=2)
        pen.text((x0 + 2, y0 + 1), f"{name} {score:.2f}", fill=(255, 255, 255))
    drawn.save(path)


def evaluate_saved(model_dir: str, data: DetectionDataArguments, out: str, batch_size: int = 8) -> dict:
    """Score the detector of ``model_dir`` on the evaluation split of ``data``; write ``out/metrics.json``."""
    detector = load_detector(model_dir)
    names = detector.info.class_names
    evaluation = load_eval_split(data, names)
    transform = DetectionTransform(detector.info.image_size, train=False, mode=detector.info.resize_mode)
    from transformers import TrainingArguments

    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(scratch, per_device_eval_batch_size=batch_size, batch_eval_metrics=True,
                                 eval_do_concat_batches=False, remove_unused_columns=False, report_to="none",
                                 use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)
        trainer = DetectionTrainer(model=detector.model, args=args, eval_dataset=with_canvas_transform(evaluation, transform),
                                   data_collator=detector.collator, postprocess=detector.postprocess,
                                   compute_metrics=detection_compute_metrics(names, compat=data.compat))
        metrics = trainer.evaluate()
    report = {"model": os.path.abspath(model_dir), "family": detector.info.family, "n_images": len(evaluation),
              "classes": names, "metrics": metrics}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2)
    shown = ", ".join(f"{k.removeprefix('eval_')}={v:.4f}" for k, v in metrics.items() if k.endswith("_map"))
    print(f"{shown} on {len(evaluation)} images: {os.path.join(out, 'metrics.json')}")
    return report

"""``hf-gaf predict`` and ``hf-gaf evaluate``: a saved detector (:mod:`hf_gaf.detection.saved`) on new images, or
re-scored on a labelled split without training.

    hf-gaf predict --model runs/frcnn/model --images photos/ --out preds/ --threshold 0.5
    hf-gaf evaluate --model runs/detr/best-model --out eval/ --voc_root data/voc --eval_split test

``predict`` writes ``detections.json`` (COCO-style results: ``image_id`` (the image's path relative to the
folder given, extension included), ``file_name``, ``category_id``, ``category``, ``bbox`` as [x, y, width,
height] in pixels, ``score``) and one PNG per image with the boxes drawn (``drawn/<image id>.png``);
unreadable images are skipped and listed in ``skipped.txt`` (``--strict`` stops instead). ``evaluate`` writes
``eval_results.json`` with VOC07/VOC12/COCO mAP and per-class AP, computed by the same evaluation path as
training (:class:`~hf_gaf.detection.trainer.DetectionTrainer`); its own file name, so ``--out`` may be the
training run's folder without touching its ``metrics.json``. Neither replaces an earlier result without
``--overwrite``, and ``--out`` may not lie inside an ``--images`` folder.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from ..detection.data import DetectionDataArguments, load_split
from ..detection.saved import load_detector
from ..detection.schema import EVAL_KEY, EvalTarget, detect, with_canvas_transform
from ..detection.trainer import DetectionTrainer, detection_compute_metrics
from ..metrics.detection import EvaluationArguments
from .plots import plot_detections

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DRAWN = "drawn"  # the folder of drawn PNGs inside --out


def image_files(sources: list[str]) -> list[tuple[str, str]]:
    """``(path, image id)`` of the images of ``sources`` (files, or folders searched recursively), sorted,
    each file once. The id is the path relative to the sources' common folder, extension included, so
    ``a.jpg`` and ``a.png``, or ``x/f.jpg`` and ``y/f.jpg``, never share an id."""
    files = []
    for source in sources:
        if os.path.isdir(source):
            found = sorted(os.path.join(folder, n) for folder, _, names in os.walk(source) for n in names
                           if n.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise ValueError(f"--images {source}: the folder holds no {'/'.join(IMAGE_SUFFIXES)} file")
            files += found
        elif os.path.isfile(source):
            files.append(source)
        else:
            raise ValueError(f"--images {source}: no such file or folder")
    files = list(dict.fromkeys(os.path.abspath(f) for f in files))
    root = os.path.commonpath([os.path.dirname(f) for f in files])
    return [(f, os.path.relpath(f, root)) for f in files]


def coco_image_files(json_path: str, sources: list[str]) -> list[tuple[str, object]]:
    """``(path, COCO image id)`` of every image a COCO JSON lists, under the one ``--images`` folder: the
    ids are the JSON's, so ``detections.json`` goes straight into pycocotools' ``loadRes``."""
    from ..detection.coco_json import coco_images

    if len(sources) != 1 or not os.path.isdir(sources[0]):
        raise ValueError(f"--images-json {json_path} needs --images to be the one folder its file names are under")
    return [(os.path.join(sources[0], name), image_id) for image_id, name in coco_images(json_path)]


def check_predict_out(out: str, sources: list[str], overwrite: bool) -> None:
    """Outputs never land on inputs: ``--out`` must not be (or lie inside) an ``--images`` folder, and an
    earlier prediction's ``detections.json`` there is kept unless ``overwrite``."""
    target = os.path.realpath(out)
    for source in sources:
        if os.path.isdir(source):
            folder = os.path.realpath(source)
            if os.path.commonpath([folder, target]) == folder:
                raise ValueError(f"--out {out} is inside --images {source}: outputs would be mixed with (and read "
                                 "back as) the images; choose an --out outside it")
    if os.path.isfile(os.path.join(out, "detections.json")) and not overwrite:
        raise ValueError(f"--out {out} already holds detections.json from an earlier prediction; choose another "
                         "folder or pass --overwrite")


def _read_rgb(file: str) -> Image.Image:
    """The image of ``file`` as RGB, turned upright as its EXIF orientation says (as viewers display it)."""
    with Image.open(file) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


@torch.no_grad()
def predict(model_dir: str, sources: list[str], out: str, threshold: float = 0.5, batch_size: int = 8,
            device: str | None = None, strict: bool = False, overwrite: bool = False,
            images_json: str | None = None) -> str:
    """Run the detector of ``model_dir`` on the images of ``sources``; write ``out/detections.json`` and one
    PNG per image (``out/drawn/<image id>.png``); return the JSON's path. An unreadable image is skipped and
    listed in ``out/skipped.txt`` (``strict``: it stops the run before anything is written)."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"--threshold {threshold}: expected a score in [0, 1]")
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: need at least 1")
    detector = load_detector(model_dir)
    files = coco_image_files(images_json, sources) if images_json else image_files(sources)
    check_predict_out(out, sources, overwrite)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = detector.model.to(device).eval()
    transform = detector.info.eval_transform()
    os.makedirs(os.path.join(out, DRAWN), exist_ok=True)
    results, skipped, names = [], [], detector.info.class_names
    for start in tqdm(range(0, len(files), batch_size), desc="predict", unit="batch"):
        batch, images, rows = [], [], []
        for index, (file, image_id) in enumerate(files[start:start + batch_size], start):
            try:
                image = _read_rgb(file)
            except (UnidentifiedImageError, OSError) as err:
                if strict:
                    raise ValueError(f"--images: {file} is not a readable image ({err}); without --strict it is "
                                     "skipped and listed") from None
                skipped.append(f"{file}\t{err}")
                continue
            sample = transform(image, [], [])
            empty = EvalTarget(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool),
                               index, tuple(sample.scale), tuple(sample.orig_size))
            batch.append((file, image_id))
            images.append(image)
            rows.append({"sample": sample, EVAL_KEY: empty})
        if not rows:
            continue
        detections = detect(model, detector.collator, detector.postprocess, rows, device)
        for (file, image_id), image, det in zip(batch, images, detections):
            keep = det["scores"] >= threshold
            boxes, scores, labels = det["boxes"][keep].cpu(), det["scores"][keep].cpu(), det["labels"][keep].cpu()
            for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
                if round(box[2] - box[0], 2) <= 0 or round(box[3] - box[1], 2) <= 0:
                    continue  # a box without area is no detection (COCO tools reject it)
                results.append(
                    {
                        "image_id": image_id,
                        "file_name": file,
                        "category_id": detector.info.category_id(label),
                        "category": names[label],
                        "score": round(score, 5),
                        "bbox": [
                            round(box[0], 2),
                            round(box[1], 2),
                            round(box[2] - box[0], 2),
                            round(box[3] - box[1], 2),
                        ],
                    }
                )
            drawn = os.path.join(out, DRAWN, f"{image_id}.png")
            os.makedirs(os.path.dirname(drawn), exist_ok=True)
            plot_detections(
                [image],
                [{"boxes": boxes.numpy(), "scores": scores.numpy(), "labels": labels.numpy()}],
                names,
                drawn,
                score_threshold=threshold,
                columns=1,
                cell_inches=6.4,
            )
    path = os.path.join(out, "detections.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    n_done = len(files) - len(skipped)
    print(
        f"{len(results)} detections (score >= {threshold}) on {n_done} images: {path} and {n_done} PNGs in "
        f"{os.path.join(out, DRAWN)}"
    )
    if skipped:
        listed = os.path.join(out, "skipped.txt")
        with open(listed, "w") as f:
            f.write("\n".join(skipped) + "\n")
        print(f"skipped {len(skipped)} unreadable images, listed in {listed}", file=sys.stderr)
    return path


EVAL_RESULTS = "eval_results.json"


def evaluate_saved(
    model_dir: str,
    data: DetectionDataArguments,
    evaluation: EvaluationArguments,
    out: str,
    batch_size: int = 8,
    overwrite: bool = False,
) -> dict:
    """Score the detector of ``model_dir`` on the evaluation split of ``data``; write ``out/eval_results.json``
    (an existing one only with ``overwrite``)."""
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: need at least 1")
    if os.path.isfile(os.path.join(out, EVAL_RESULTS)) and not overwrite:
        raise ValueError(f"--out {out} already holds {EVAL_RESULTS}; choose another folder or pass --overwrite")
    detector = load_detector(model_dir)
    names = detector.info.class_names
    images = load_split(data, names, "eval")
    transform = detector.info.eval_transform()
    from transformers import TrainingArguments

    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            scratch,
            per_device_eval_batch_size=batch_size,
            batch_eval_metrics=True,
            eval_do_concat_batches=False,
            remove_unused_columns=False,
            report_to="none",
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
        )
        trainer = DetectionTrainer(
            model=detector.model,
            args=args,
            eval_dataset=with_canvas_transform(images, transform),
            data_collator=detector.collator,
            postprocess=detector.postprocess,
            compute_metrics=detection_compute_metrics(names, compat=evaluation.compat),
        )
        metrics = trainer.evaluate()
    report = {
        "model": os.path.abspath(model_dir),
        "family": detector.info.family,
        "n_images": len(images),
        "classes": names,
        "metrics": metrics,
    }
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, EVAL_RESULTS), "w") as f:
        json.dump(report, f, indent=2)
    shown = ", ".join(f"{k.removeprefix('eval_')}={v:.4f}" for k, v in metrics.items() if k.endswith("_map"))
    print(f"{shown} on {len(images)} images: {os.path.join(out, EVAL_RESULTS)}")
    return report

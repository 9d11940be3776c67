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
import re
import sys
import tempfile

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from ..detection.data import DetectionDataArguments, has_evaluation_source, load_split
from ..detection.saved import load_detector
from ..detection.schema import EVAL_KEY, EvalTarget, detect, with_canvas_transform
from ..detection.trainer import DetectionTrainer, detection_compute_metrics
from ..metrics.detection import EvaluationArguments
from .plots import plot_detections

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DRAWN = "drawn"  # the folder of drawn PNGs inside --out
DETECTIONS = "detections.json"
SKIPPED = "skipped.txt"


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
    ids are the JSON's, so ``detections.json`` goes straight into pycocotools' ``loadRes``. A JSON that lists
    no image is refused, and one that lists an image id or file twice (the COCO reader's checks)."""
    from ..detection.coco_json import coco_images

    if len(sources) != 1 or not os.path.isdir(sources[0]):
        raise ValueError(f"--images-json {json_path} needs --images to be the one folder its file names are under")
    listed = coco_images(json_path)
    if not listed:
        raise ValueError(f"--images-json {json_path} lists no images")
    return [(os.path.join(sources[0], name), image_id) for image_id, name in listed]


def coco_category_ids(json_path: str, class_names: list[str]) -> list[int] | None:
    """The category id of each of the model's classes in the COCO JSON at ``json_path``, matched by name, so
    detections carry the JSON's ids whatever ids the model was trained with; ``None`` when the JSON lists no
    categories (the model's own ids are written). Classes on one side only are refused, naming them."""
    from ..detection.coco_json import coco_categories

    by_name = {name: cat_id for cat_id, name in coco_categories(json_path)}
    if not by_name:
        return None
    only_model = [n for n in class_names if n not in by_name]
    only_json = [n for n in by_name if n not in class_names]
    if only_model or only_json:
        raise ValueError(
            f"--images-json {json_path}: its categories and the model's classes differ (model only: "
            f"{only_model or 'none'}; JSON only: {only_json or 'none'}); detections could not carry the JSON's "
            "category ids"
        )
    return [by_name[n] for n in class_names]


def drawn_names(image_ids: list[object]) -> list[str]:
    """The file of each image's drawing, relative to ``--out/drawn``: the image id with ``.png`` added, its
    folders kept, but never outside ``drawn`` (an absolute id or a ``..`` in it loses those parts; characters
    other than letters, digits, ``._- `` become ``_``) and never one file for two images (a repeat gets its
    index appended)."""
    names, used = [], set()
    for index, image_id in enumerate(image_ids):
        parts = [re.sub(r"[^\w.\- ]", "_", part) for part in re.split(r"[\\/]+", str(image_id))
                 if part not in ("", ".", "..")]
        stem = "/".join(parts) or f"image-{index}"
        name = f"{stem}.png" if f"{stem}.png".lower() not in used else f"{stem}-{index}.png"
        used.add(name.lower())
        names.append(name)
    return names


def check_predict_out(out: str, sources: list[str], overwrite: bool) -> None:
    """Outputs never land on inputs: ``--out`` must not be (or lie inside) an ``--images`` folder nor be a
    file, and an earlier prediction's files there (``detections.json``, ``skipped.txt``, drawings: a finished
    or an interrupted one) are kept unless ``overwrite``."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file, not a folder")
    target = os.path.realpath(out)
    for source in sources:
        if os.path.isdir(source):
            folder = os.path.realpath(source)
            if os.path.commonpath([folder, target]) == folder:
                raise ValueError(f"--out {out} is inside --images {source}: outputs would be mixed with (and read "
                                 "back as) the images; choose an --out outside it")
    earlier = [name for name in (DETECTIONS, SKIPPED) if os.path.isfile(os.path.join(out, name))]
    if any(files for _, _, files in os.walk(os.path.join(out, DRAWN))):
        earlier.append(f"{DRAWN}/")
    if earlier and not overwrite:
        raise ValueError(f"--out {out} already holds {', '.join(earlier)} from an earlier prediction; choose "
                         "another folder or pass --overwrite")


def clear_earlier_prediction(out: str) -> None:
    """With ``--overwrite``: remove what an earlier ``predict`` wrote in ``out`` (its JSON, ``skipped.txt``, the
    drawn PNGs and the folders they leave empty), so no stale file stays beside the new results; any other
    file is kept."""
    for name in (DETECTIONS, SKIPPED):
        if os.path.isfile(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    drawn = os.path.join(out, DRAWN)
    for folder, _, names in os.walk(drawn, topdown=False):
        for name in names:
            if name.endswith(".png"):
                os.remove(os.path.join(folder, name))
        if folder != drawn and not os.listdir(folder):
            os.rmdir(folder)


def _read_rgb(file: str) -> Image.Image:
    """The image of ``file`` as RGB, turned upright as its EXIF orientation says (as viewers display it)."""
    with Image.open(file) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


def _read_image(file: str, strict: bool) -> tuple[Image.Image | None, str]:
    """The image of ``file`` or ``(None, why)``; ``strict``: a ``ValueError`` instead of ``None``. Whatever
    the reader rejects (not an image, cut short, a decompression bomb) is such a case."""
    try:
        return _read_rgb(file), ""
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        if strict:
            raise ValueError(f"--images: {file} is not a readable image ({err}); without --strict it is "
                             "skipped and listed") from None
        return None, str(err)


@torch.no_grad()
def predict(model_dir: str, sources: list[str], out: str, threshold: float = 0.5, batch_size: int = 8,
            device: str | None = None, strict: bool = False, overwrite: bool = False,
            images_json: str | None = None) -> str:
    """Run the detector of ``model_dir`` on the images of ``sources``; write ``out/detections.json`` and one
    PNG per image (``out/drawn/<image id>.png``, :func:`drawn_names`); return the JSON's path. An image that
    the reader or the model's processor rejects is skipped and listed in ``out/skipped.txt`` (``strict``: it
    stops the run before anything is written). With ``images_json`` the detections carry the JSON's image and
    category ids (:func:`coco_category_ids`)."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"--threshold {threshold}: expected a score in [0, 1]")
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: need at least 1")
    detector = load_detector(model_dir)
    names = detector.info.class_names
    files = coco_image_files(images_json, sources) if images_json else image_files(sources)
    category_ids = coco_category_ids(images_json, names) if images_json else None
    check_predict_out(out, sources, overwrite)
    category_id = category_ids.__getitem__ if category_ids else detector.info.category_id
    drawn_files = drawn_names([image_id for _, image_id in files])
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = detector.model.to(device).eval()
    transform = detector.info.eval_transform()
    if overwrite:
        clear_earlier_prediction(out)
    os.makedirs(os.path.join(out, DRAWN), exist_ok=True)
    results, skipped = [], []

    def run(entries):
        """Detections of ``entries`` (one batch); an entry the processor rejects is skipped and listed."""
        rows = [{"sample": sample, EVAL_KEY: target} for *_, sample, target in entries]
        try:
            return entries, detect(model, detector.collator, detector.postprocess, rows, device)
        except (ValueError, RuntimeError, IndexError) as err:
            if len(entries) > 1:  # find the image at fault: one at a time
                kept = [run([entry]) for entry in entries]
                return [e for es, _ in kept for e in es], [d for _, ds in kept for d in ds]
            if strict:
                raise ValueError(f"--images: the model cannot take {entries[0][0]} ({err}); without --strict it "
                                 "is skipped and listed") from None
            skipped.append(f"{entries[0][0]}\t{type(err).__name__}: {err}")
            return [], []

    for start in tqdm(range(0, len(files), batch_size), desc="predict", unit="batch"):
        entries = []
        for index, (file, image_id) in enumerate(files[start:start + batch_size], start):
            image, why = _read_image(file, strict)
            if image is None:
                skipped.append(f"{file}\t{why}")
                continue
            sample = transform(image, [], [])
            empty = EvalTarget(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool),
                               index, tuple(sample.scale), tuple(sample.orig_size))
            entries.append((file, image_id, drawn_files[index], image, sample, empty))
        if not entries:
            continue
        for (file, image_id, drawn_file, image, *_), det in zip(*run(entries)):
            keep = det["scores"] >= threshold
            boxes, scores, labels = det["boxes"][keep].cpu(), det["scores"][keep].cpu(), det["labels"][keep].cpu()
            for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
                if round(box[2] - box[0], 2) <= 0 or round(box[3] - box[1], 2) <= 0:
                    continue  # a box without area is no detection (COCO tools reject it)
                results.append(
                    {
                        "image_id": image_id,
                        "file_name": file,
                        "category_id": category_id(label),
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
            drawn = os.path.join(out, DRAWN, drawn_file)
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
    path = os.path.join(out, DETECTIONS)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    n_done = len(files) - len(skipped)
    print(
        f"{len(results)} detections (score >= {threshold}) on {n_done} images: {path} and {n_done} PNGs in "
        f"{os.path.join(out, DRAWN)}"
    )
    if skipped:
        listed = os.path.join(out, SKIPPED)
        with open(listed, "w") as f:
            f.write("\n".join(skipped) + "\n")
        print(f"skipped {len(skipped)} images that could not be read or processed, listed in {listed}",
              file=sys.stderr)
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
    if not has_evaluation_source(data):  # no data flags: the evaluation data the training run recorded
        if not detector.info.eval_data:
            raise ValueError(f"no evaluation data given (--voc_root, or --data_format coco --eval_json "
                             f"--eval_images) and {model_dir} records none")
        data = DetectionDataArguments(**detector.info.eval_data)
        shown = ", ".join(f"{k} {v}" for k, v in detector.info.eval_data.items() if v not in (None, False))
        print(f"evaluating on the data recorded in {model_dir}: {shown}")
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

"""COCO-format detection data (the JSON that CVAT, Label Studio and Roboflow export) as the same ``datasets``
rows :func:`~hf_gaf.detection.voc.load_voc` gives, so one transform, trainer and evaluator serve both.

- category ids (any integers) map to contiguous labels 0..K-1 in the order of their ids; the ids stay
  available (:func:`coco_categories`) to write predictions back in COCO form;
- ``bbox`` is ``[x, y, width, height]`` in pixels; a box with non-positive width or height is skipped and
  counted (one warning), as VOC's zero-area boxes; boxes are clamped to the image;
- ``iscrowd: 1`` objects are kept as ``difficult`` (ignored by the VOC metric, as in VOC).

Bad input is a :class:`COCOFormatError` naming the file and the field: a file that is
not JSON, a missing ``images``/``annotations``/``categories`` list, an annotation whose image or category
does not exist, an image file that is missing or whose size differs from the JSON's.

Example:
    >>> import json, tempfile, os
    >>> from PIL import Image
    >>> d = tempfile.mkdtemp(); Image.new("RGB", (40, 30)).save(os.path.join(d, "a.jpg"))
    >>> spec = {"images": [{"id": 7, "file_name": "a.jpg", "width": 40, "height": 30}],
    ...         "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
    ...         "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [5, 5, 10, 8], "iscrowd": 0}]}
    >>> path = os.path.join(d, "train.json"); json.dump(spec, open(path, "w"))
    >>> ds = load_coco(path, d)
    >>> ds.features["objects"]["category"].feature.names, ds[0]["objects"]["bbox"], ds[0]["objects"]["category"]
    (['dog', 'cat'], [[5.0, 5.0, 15.0, 13.0]], [1])
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence

import datasets

from .images import DetectionDataError, detection_features, image_size, size_mismatch_note


class COCOFormatError(DetectionDataError):
    """A COCO JSON file (or an image it names) is missing or malformed; the message names it and the field."""


def _read(path: str) -> dict:
    if not os.path.isfile(path):
        raise COCOFormatError(f"COCO annotation file {path} does not exist")
    try:
        with open(path) as f:
            spec = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise COCOFormatError(f"{path} is not JSON ({err})") from None
    if not isinstance(spec, dict):
        raise COCOFormatError(f"{path}: the top level is {type(spec).__name__}, not a COCO object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(spec.get(key), list):
            raise COCOFormatError(f"{path}: field {key!r} is missing or not a list")
    return spec


def _is_number(value) -> bool:
    """An int or float, not a string or a boolean (JSON ``"12"`` and ``true`` are not sizes or coordinates)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _image_entries(spec: dict, path: str) -> list[dict]:
    """The entries of ``images``, checked once for every reader: each an object with an integer or string
    ``id`` and a ``file_name``; no id and no file listed twice (its boxes would be learned, scored or predicted
    twice)."""
    ids, files = set(), {}
    for i, img in enumerate(spec["images"]):
        if (not isinstance(img, dict) or not isinstance(img.get("id"), (int, str)) or isinstance(img["id"], bool)
                or not isinstance(img.get("file_name"), str)):
            raise COCOFormatError(f"{path}: images[{i}] needs an integer or string 'id' and a 'file_name', got {img!r}")
        if img["id"] in ids:
            raise COCOFormatError(f"{path}: image id {img['id']!r} appears twice in 'images'")
        file = os.path.normpath(img["file_name"])
        if file in files:
            raise COCOFormatError(
                f"{path}: file {img['file_name']!r} is listed twice in 'images' (ids {files[file]!r} "
                f"and {img['id']!r}); merge their annotations under one id"
            )
        ids.add(img["id"])
        files[file] = img["id"]
    return spec["images"]


def coco_images(path: str) -> list[tuple[object, str]]:
    """``(image id, file_name)`` of every image of the JSON at ``path``, in file order (checked:
    :func:`_image_entries`)."""
    return [(img["id"], img["file_name"]) for img in _image_entries(_read(path), path)]


def coco_categories(path: str) -> list[tuple[int, str]]:
    """``(category id, name)`` of the JSON at ``path``, sorted by id: label k is the k-th of them."""
    return _categories(_read(path), path)


def _categories(spec: dict, path: str) -> list[tuple[int, str]]:
    out = []
    for i, cat in enumerate(spec["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            raise COCOFormatError(f"{path}: categories[{i}] needs an integer 'id' and a string 'name', got {cat!r}")
        out.append((cat["id"], cat["name"]))
    ids = [i for i, _ in out]
    if len(set(ids)) != len(ids):
        raise COCOFormatError(f"{path}: categories repeat an id: {sorted({i for i in ids if ids.count(i) > 1})}")
    return sorted(out)


def load_coco(path: str, images_dir: str, classes: Sequence[str] | None = None, keep_difficult: bool = True,
              skip_empty: bool = False, skip_unknown: bool = False) -> datasets.Dataset:
    """The images and annotations of COCO JSON ``path`` (files under ``images_dir``) as ``datasets`` rows
    (module docstring). ``classes``: the label order to use (default: this file's categories by id);
    a category whose name is not among them is an error naming it, or with ``skip_unknown`` its objects are
    skipped and counted (one warning)."""
    spec = _read(path)
    categories = _categories(spec, path)
    names = list(classes) if classes is not None else [name for _, name in categories]
    index = {name: k for k, name in enumerate(names)}
    label_of, unknown = {}, set()
    for cat_id, name in categories:
        if name in index:
            label_of[cat_id] = index[name]
        elif skip_unknown:
            unknown.add(cat_id)
        else:
            raise COCOFormatError(f"{path}: category {name!r} (id {cat_id}) is not one of the classes {names}")
    images = {}
    for i, img in enumerate(_image_entries(spec, path)):
        for key in ("width", "height"):
            if key in img and not _is_number(img[key]):
                raise COCOFormatError(
                    f"{path}: images[{i}] (id {img['id']!r}): {key} must be a number, got {img[key]!r}"
                )
        images[img["id"]] = img
    objects = {
        image_id: {"bbox": [], "category": [], "difficult": [], "truncated": [], "area": []} for image_id in images
    }
    n_degenerate = n_unknown = 0
    for i, ann in enumerate(spec["annotations"]):
        where = (
            f"{path}: annotations[{i}] (id {ann.get('id')!r})" if isinstance(ann, dict) else f"{path}: annotations[{i}]"
        )
        if not isinstance(ann, dict):
            raise COCOFormatError(f"{where} is not an object")
        if ann.get("image_id") not in images:
            raise COCOFormatError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") in unknown:
            n_unknown += 1
            continue
        if ann.get("category_id") not in label_of:
            raise COCOFormatError(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        box = ann.get("bbox")
        if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) and math.isfinite(v) for v in box):
            raise COCOFormatError(f"{where}: bbox must be 4 finite numbers [x, y, width, height], got {box!r}")
        crowd = ann.get("iscrowd", 0)
        if type(crowd) is not int or crowd not in (0, 1):
            raise COCOFormatError(f"{where}: iscrowd must be 0 or 1, got {ann['iscrowd']!r}")
        img = images[ann["image_id"]]
        x, y, w, h = (float(v) for v in box)
        if w <= 0 or h <= 0:
            n_degenerate += 1
            continue
        width, height = float(img.get("width", math.inf)), float(img.get("height", math.inf))
        x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if x1 <= x0 or y1 <= y0:
            n_degenerate += 1
            continue
        if crowd and not keep_difficult:
            continue
        target = objects[ann["image_id"]]
        target["bbox"].append([x0, y0, x1, y1])
        target["category"].append(label_of[ann["category_id"]])
        target["difficult"].append(bool(crowd))
        target["truncated"].append(False)
        target["area"].append((x1 - x0) * (y1 - y0))
    if n_unknown:
        warnings.warn(f"load_coco: skipped {n_unknown} objects of unknown classes in {path}", stacklevel=2)
    if n_degenerate:
        warnings.warn(
            f"load_coco: skipped {n_degenerate} boxes with non-positive width or height in {path}", stacklevel=2
        )
    rows = {"image": [], "image_id": [], "width": [], "height": [], "objects": []}
    for image_id, img in images.items():
        if skip_empty and not objects[image_id]["bbox"]:
            continue
        file = os.path.join(images_dir, img["file_name"])
        if not os.path.isfile(file):
            raise COCOFormatError(f"{path}: image id {image_id!r}: file {file} does not exist")
        actual = image_size(file, COCOFormatError)
        declared = (img.get("width"), img.get("height"))
        if None not in declared and tuple(declared) != actual:
            raise COCOFormatError(
                f"{path}: image id {image_id!r} declares {declared[0]}x{declared[1]} but {file} is "
                f"{actual[0]}x{actual[1]}" + size_mismatch_note(file, declared, actual)
            )
        rows["image"].append(file)
        rows["image_id"].append(str(image_id))
        rows["width"].append(actual[0])
        rows["height"].append(actual[1])
        rows["objects"].append(objects[image_id])
    if not rows["image"]:
        raise COCOFormatError(f"{path} has no images" + (" with objects" if skip_empty else ""))
    return datasets.Dataset.from_dict(rows, features=detection_features(names))


def write_coco(
    dataset: datasets.Dataset,
    path: str,
    categories: Sequence[tuple[int, str]] | None = None,
    images_root: str | None = None,
) -> str:
    """Write ``dataset`` (rows as :func:`load_voc`/:func:`load_coco` give) as COCO JSON at ``path``; file names
    relative to ``images_root`` (default: the JSON's folder). ``categories``: ``(id, name)`` per label
    (default: ids 1..K in label order). Difficult objects are written as ``iscrowd: 1``."""
    names = dataset.features["objects"]["category"].feature.names
    categories = list(categories) if categories is not None else [(k + 1, name) for k, name in enumerate(names)]
    root = images_root or os.path.dirname(os.path.abspath(path))
    images, annotations = [], []
    for number, row in enumerate(dataset.cast_column("image", datasets.Image(decode=False))):
        images.append(
            {
                "id": number,
                "file_name": os.path.relpath(row["image"]["path"], root),
                "width": row["width"],
                "height": row["height"],
            }
        )
        o = row["objects"]
        for (x0, y0, x1, y1), label, difficult in zip(o["bbox"], o["category"], o["difficult"]):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": number,
                    "category_id": categories[label][0],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": int(difficult),
                }
            )
    with open(path, "w") as f:
        json.dump(
            {"images": images, "annotations": annotations, "categories": [{"id": i, "name": n} for i, n in categories]},
            f,
        )
    return path


def voc_to_coco(
    voc_root: str,
    year: str = "2007",
    splits: Sequence[str] = ("trainval", "test"),
    classes: Sequence[str] | None = None,
) -> list[str]:
    """Write each VOC ``split`` of ``year`` under ``voc_root`` as ``VOC<year>/coco/<split>.json`` (COCO JSON over the
    same JPEGs, category ids 1..K in the order of ``classes``, default the sorted names of the first split);
    return the paths."""
    from .voc import load_voc, voc_class_names, year_dir

    base = year_dir(voc_root, year)
    names = list(classes) if classes is not None else voc_class_names(voc_root, [year], splits[0])
    os.makedirs(os.path.join(base, "coco"), exist_ok=True)
    paths = []
    for split in splits:
        dataset = load_voc(voc_root, years=(year,), split=split, classes=names)
        paths.append(
            write_coco(
                dataset, os.path.join(base, "coco", f"{split}.json"), images_root=os.path.join(base, "JPEGImages")
            )
        )
    return paths

"""PASCAL VOC detection data as a ``datasets.Dataset``.

Layout read (the same for VOC2012)::

    ROOT/VOC2007/Annotations/<id>.xml
    ROOT/VOC2007/JPEGImages/<id>.jpg
    ROOT/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt

``ROOT`` may be the ``VOCdevkit`` folder or the folder that holds it. VOC boxes are 1-based and
inclusive; they are returned as continuous 0-based ``xyxy`` = (xmin-1, ymin-1, xmax, ymax), so
ordinary IoU equals VOC's "+1" IoU. Each object's own ``bndbox`` is read; the ``part`` boxes of
person objects are ignored. XML is parsed with ``defusedxml``: entity-expansion attacks are refused.

Example:
    >>> from hf_gaf.detection.synthetic_voc import make_voc, SHAPE_CLASSES
    >>> from hf_gaf.detection.voc import load_voc
    >>> import tempfile
    >>> root = make_voc(tempfile.mkdtemp(), n_train=8, n_test=4)
    >>> ds = load_voc(root, split="test", classes=SHAPE_CLASSES)
    >>> len(ds), sorted(ds[0]["objects"])
    (4, ['area', 'bbox', 'category', 'difficult', 'truncated'])
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Sequence

import datasets
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from .images import DetectionDataError, detection_features, image_size, size_mismatch_note

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

EXPECTED_LAYOUT = """expected layout:
  ROOT/VOC<year>/Annotations/<id>.xml
  ROOT/VOC<year>/JPEGImages/<id>.jpg
  ROOT/VOC<year>/ImageSets/Main/<split>.txt   (split: train, val, trainval or test)
where ROOT is the VOCdevkit folder (or the folder that contains it)"""


class VOCFormatError(DetectionDataError):
    """A VOC file or folder is missing or malformed; the message names it."""


def voc_annotation_xml(filename: str, width: int, height: int, objects: list[dict], database: str) -> str:
    """One VOC annotation file: ``objects`` are dicts with ``name``, 1-based inclusive ``xmin`` … ``ymax``,
    ``truncated`` and ``difficult`` (what :func:`parse_voc_xml` reads back)."""
    parts = [
        "<annotation>", "\t<folder>VOC2007</folder>", f"\t<filename>{filename}</filename>",
        f"\t<source><database>{database}</database></source>",
        f"\t<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
        "\t<segmented>0</segmented>",
    ]
    for o in objects:
        parts += [
            "\t<object>", f"\t\t<name>{o['name']}</name>", "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(o['truncated'])}</truncated>", f"\t\t<difficult>{int(o['difficult'])}</difficult>",
            "\t\t<bndbox>", *(f"\t\t\t<{k}>{o[k]}</{k}>" for k in ("xmin", "ymin", "xmax", "ymax")), "\t\t</bndbox>",
            "\t</object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def check_voc_output(out_dir: str, overwrite: bool, command: str) -> None:
    """Before a generator writes ``out_dir/VOCdevkit/VOC2007``: ``out_dir`` must be a folder (or missing), and
    empty unless ``overwrite`` (a ``FileExistsError`` naming ``command``'s flag otherwise)."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"{out_dir} is a file, not a folder: give {command} a folder to write into")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(
            f"{out_dir} is not empty; {command} writes VOCdevkit/VOC2007 (images, XML, split files) there and would "
            "replace what it holds: choose an empty folder, or pass --overwrite (overwrite=True) to replace it")


def create_voc_tree(out_dir: str, overwrite: bool) -> str:
    """``out_dir/VOCdevkit/VOC2007`` with its empty sub-folders (an earlier one replaced with ``overwrite``; nothing
    else in ``out_dir`` is touched); returns it."""
    base = os.path.join(out_dir, "VOCdevkit", "VOC2007")
    if overwrite and os.path.isdir(base):
        shutil.rmtree(base)
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    return base


def finish_voc_tree(out_dir: str, splits: dict[str, list[str]], marker: str, provenance: str) -> str:
    """Write the split files of ``splits`` and the generator's ``marker`` file (holding ``provenance``) into the
    tree :func:`create_voc_tree` made; return the ``VOCdevkit`` path."""
    devkit = os.path.join(out_dir, "VOCdevkit")
    for name, members in splits.items():
        with open(os.path.join(devkit, "VOC2007", "ImageSets", "Main", f"{name}.txt"), "w") as f:
            f.writelines(f"{i}\n" for i in members)
    with open(os.path.join(out_dir, marker), "w") as f:
        f.write(provenance + "\n")
    return devkit


def year_dir(root: str, year: str) -> str:
    for candidate in (os.path.join(root, f"VOC{year}"), os.path.join(root, "VOCdevkit", f"VOC{year}")):
        if os.path.isdir(candidate):
            return candidate
    raise VOCFormatError(f"no VOC{year} folder under {root!r}\n{EXPECTED_LAYOUT}")


def _text(node, tag: str, path: str, default: str | None = None) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if default is not None:
            return default
        raise VOCFormatError(f"{path}: missing <{tag}>")
    return child.text.strip()


def _number(node, tag: str, path: str) -> float:
    value = _text(node, tag, path)
    try:
        number = float(value)
    except ValueError:
        raise VOCFormatError(f"{path}: <{tag}> is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise VOCFormatError(f"{path}: <{tag}> is not a finite number: {value!r}")
    return number


def parse_voc_xml(
    path: str, classes: Sequence[str], *, keep_difficult: bool = True, skip_unknown: bool = False
) -> dict:
    """One annotation file as ``{width, height, objects, n_unknown, n_degenerate}`` (boxes 0-based xyxy)."""
    try:
        root = ElementTree.parse(path).getroot()
    except DefusedXmlException as err:
        raise VOCFormatError(f"{path}: refused unsafe XML ({type(err).__name__}: {err})") from None
    except ElementTree.ParseError as err:
        raise VOCFormatError(f"{path}: malformed XML ({err})") from None
    size = root.find("size")
    if size is None:
        raise VOCFormatError(f"{path}: missing <size>")
    width, height = int(_number(size, "width", path)), int(_number(size, "height", path))
    if width <= 0 or height <= 0:
        raise VOCFormatError(f"{path}: <size> is {width}x{height}; width and height must be positive")
    index = {name: i for i, name in enumerate(classes)}
    objects = {"bbox": [], "category": [], "difficult": [], "truncated": [], "area": []}
    n_unknown = n_degenerate = 0
    for obj in root.findall("object"):  # direct children only: <part> boxes live deeper
        name = _text(obj, "name", path)
        if name not in index:
            if skip_unknown:
                n_unknown += 1
                continue
            raise VOCFormatError(
                f"{path}: unknown class {name!r} (known: {', '.join(classes)}); "
                "to train on a subset of the classes, skip such objects with --skip_unknown_classes true "
                "(skip_unknown=True in load_voc)"
            )
        difficult = _text(obj, "difficult", path, default="0") not in ("0", "false", "False")
        if difficult and not keep_difficult:
            continue
        box = obj.find("bndbox")
        if box is None:
            raise VOCFormatError(f"{path}: object {name!r} has no <bndbox>")
        x0 = min(max(_number(box, "xmin", path) - 1, 0.0), width)
        y0 = min(max(_number(box, "ymin", path) - 1, 0.0), height)
        x1 = min(max(_number(box, "xmax", path), 0.0), width)
        y1 = min(max(_number(box, "ymax", path), 0.0), height)
        if x1 <= x0 or y1 <= y0:
            n_degenerate += 1
            continue
        objects["bbox"].append([x0, y0, x1, y1])
        objects["category"].append(index[name])
        objects["difficult"].append(difficult)
        objects["truncated"].append(_text(obj, "truncated", path, default="0") not in ("0", "false", "False"))
        objects["area"].append((x1 - x0) * (y1 - y0))
    return {"width": width, "height": height, "objects": objects, "n_unknown": n_unknown, "n_degenerate": n_degenerate}


def _split_ids(base: str, split: str) -> tuple[str, list[str]]:
    """The path of ``ImageSets/Main/<split>.txt`` under a year's folder, and the image ids it lists."""
    split_file = os.path.join(base, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(split_file):
        raise VOCFormatError(f"split file {split_file} not found\n{EXPECTED_LAYOUT}")
    with open(split_file) as f:
        return split_file, [line.split()[0] for line in f if line.strip()]


def voc_class_names(root: str, years: Sequence[str], split: str) -> list[str]:
    """The sorted class names that the annotations of ``split`` (over ``years``) under ``root`` use."""
    names = set()
    for year in years:
        base = year_dir(root, str(year))
        for image_id in _split_ids(base, split)[1]:
            xml = os.path.join(base, "Annotations", f"{image_id}.xml")
            try:
                tree = ElementTree.parse(xml).getroot()
            except (OSError, ElementTree.ParseError, DefusedXmlException) as err:
                raise VOCFormatError(f"{xml}: cannot be read ({err})") from None
            names |= {_text(obj, "name", xml) for obj in tree.findall("object")}
    if not names:
        raise VOCFormatError(f"--classes auto: no <object><name> in split {split!r} of {list(years)} under {root}")
    return sorted(names)


def load_voc(
    root: str,
    years: Sequence[str] | str = ("2007",),
    split: str = "trainval",
    classes: Sequence[str] = VOC_CLASSES,
    keep_difficult: bool = True,
    skip_empty: bool = False,
    skip_unknown: bool = False,
) -> datasets.Dataset:
    """Read VOC ``split`` of each of ``years`` (``("2007", "2012")`` = 07+12) into one ``Dataset``.

    Columns: ``image`` (decoded lazily, as RGB), ``image_id`` (``"<year>/<id>"``), ``width``,
    ``height``, ``objects`` = {``bbox`` 0-based xyxy, ``category``, ``difficult``, ``truncated``,
    ``area``}. Boxes beyond the image are clamped; boxes of zero area are dropped with one warning.
    """
    if not root or not os.path.isdir(root):
        raise VOCFormatError(f"VOC root {root!r} does not exist or is not a folder\n{EXPECTED_LAYOUT}")
    years = (years,) if isinstance(years, str) else tuple(years)
    if len(set(map(str, years))) != len(years):
        raise VOCFormatError(f"years {list(years)} name a year twice: its images would be counted twice")
    rows = {"image": [], "image_id": [], "width": [], "height": [], "objects": []}
    n_unknown = n_degenerate = 0
    for year in years:
        base = year_dir(root, str(year))
        split_file, ids = _split_ids(base, split)
        repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
        if repeated:
            raise VOCFormatError(f"{split_file} lists {repeated[:5]} more than once")
        for image_id in ids:
            xml = os.path.join(base, "Annotations", f"{image_id}.xml")
            jpg = os.path.join(base, "JPEGImages", f"{image_id}.jpg")
            if not os.path.isfile(xml):
                raise VOCFormatError(f"annotation {xml} listed in {split_file} does not exist")
            if not os.path.isfile(jpg):
                raise VOCFormatError(f"image {jpg} listed in {split_file} does not exist")
            record = parse_voc_xml(xml, classes, keep_difficult=keep_difficult, skip_unknown=skip_unknown)
            actual = image_size(jpg, VOCFormatError)
            if actual != (record["width"], record["height"]):
                declared = (record["width"], record["height"])
                raise VOCFormatError(
                    f"{xml}: <size> says {declared[0]}x{declared[1]} but {jpg} is "
                    f"{actual[0]}x{actual[1]}" + size_mismatch_note(jpg, declared, actual)
                )
            n_unknown += record["n_unknown"]
            n_degenerate += record["n_degenerate"]
            if skip_empty and not record["objects"]["bbox"]:
                continue
            rows["image"].append(jpg)
            rows["image_id"].append(f"{year}/{image_id}")
            rows["width"].append(record["width"])
            rows["height"].append(record["height"])
            rows["objects"].append(record["objects"])
    if n_degenerate:
        warnings.warn(
            f"load_voc: dropped {n_degenerate} boxes of zero area (after clamping to the image) under {root}",
            stacklevel=2,
        )
    if n_unknown:
        warnings.warn(f"load_voc: skipped {n_unknown} objects of unknown classes under {root}", stacklevel=2)
    if not rows["image"]:
        raise VOCFormatError(
            f"split {split!r} of VOC{'+'.join(map(str, years))} under {root} has no images"
            + (" with objects" if skip_empty else "")
        )
    return datasets.Dataset.from_dict(rows, features=detection_features(classes))

"""What the VOC and COCO loaders share: the error type, the rows' ``datasets`` features, and reading an
image's size from its header (a file cut short, a decompression bomb, an EXIF rotation explained).

Example:
    >>> import os, tempfile
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "a.jpg"); Image.new("RGB", (40, 30)).save(path)
    >>> image_size(path)
    (40, 30)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import datasets
from PIL import Image


class DetectionDataError(ValueError):
    """A detection data file or folder is missing or malformed; the message names it (and the field).
    :class:`~hf_gaf.detection.voc.VOCFormatError` and :class:`~hf_gaf.detection.coco_json.COCOFormatError`
    say which format."""


def detection_features(classes: Sequence[str]) -> datasets.Features:
    """The ``datasets`` features of the loaders' rows (boxes 0-based ``xyxy`` in pixels)."""
    return datasets.Features({
        "image": datasets.Image(mode="RGB"),
        "image_id": datasets.Value("string"),
        "width": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "objects": {
            "bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
            "category": datasets.List(datasets.ClassLabel(names=list(classes))),
            "difficult": datasets.List(datasets.Value("bool")),
            "truncated": datasets.List(datasets.Value("bool")),
            "area": datasets.List(datasets.Value("float32")),
        },
    })


def image_size(path: str, error: type[DetectionDataError] = DetectionDataError) -> tuple[int, int]:
    """(width, height) from the image header. Unreadable images, decompression bombs and JPEGs cut
    short are an ``error`` (the caller's format's :class:`DetectionDataError`) naming the file: a JPEG that
    does not end with its end-of-image
    marker (FFD9, trailing padding allowed) is decoded here to tell a truncated file from one with
    trailing data; every other image is decoded only when training reads it."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG" and not _ends_with_eoi(path):
                image.load()  # raises OSError("image file is truncated ...") for a file cut short
            return image.size
    except (OSError, Image.DecompressionBombError) as err:
        raise error(f"image {path} cannot be read: {err}") from None


def size_mismatch_note(path: str, declared: tuple, actual: tuple[int, int]) -> str:
    """The end of a size-mismatch error: whether the file's EXIF orientation explains it (a camera photo
    stored sideways that viewers and annotation tools show turned upright; its pixels are read as stored)."""
    try:
        with Image.open(path) as image:
            orientation = image.getexif().get(0x0112, 1)
    except OSError:
        orientation = 1
    if orientation in (5, 6, 7, 8) and tuple(declared) == (actual[1], actual[0]):
        return (
            f"; its EXIF orientation ({orientation}) turns it by 90 degrees when displayed, so it was annotated "
            "upright: save the image upright (e.g. PIL.ImageOps.exif_transpose) and annotate that"
        )
    return "; boxes would be clamped to the wrong image"


def _ends_with_eoi(path: str) -> bool:
    """True when the file's last non-padding bytes are the JPEG end-of-image marker FFD9."""
    with open(path, "rb") as f:
        f.seek(max(os.path.getsize(path) - 64, 0))
        tail = f.read().rstrip(b"\x00\n\r ")
    return tail.endswith(b"\xff\xd9")

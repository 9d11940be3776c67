"""A synthetic data set in real PASCAL VOC format, for tests and CPU demos (no download).

Images of simple filled shapes (classes ``circle``, ``square``, ``triangle``, ``cross``) on a noisy
background: 1 to 4 objects per image of varied size and colour, some cut by the border
(``truncated``), a few marked ``difficult`` (the smallest ones), a few images with no object. Written
as ``OUT/VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets/Main}``, so :func:`~hf_gaf.detection.voc.load_voc`
reads it exactly as it reads real VOC. The same seed gives the same bytes.

Example:
    >>> from hf_gaf.detection.synthetic_voc import make_voc
    >>> import tempfile
    >>> root = make_voc(tempfile.mkdtemp(), n_train=4, n_test=2)
    >>> root.endswith("VOCdevkit")
    True
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .voc import check_voc_output, create_voc_tree, finish_voc_tree, voc_annotation_xml

SHAPE_CLASSES = ("circle", "square", "triangle", "cross")
_EMPTY_FRACTION = 0.05
_DIFFICULT_MAX_SIDE = 0.1  # objects smaller than this fraction of the image are marked difficult


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
    """Fill ``shape`` so that it touches every side of the inclusive pixel box ``box``."""
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "cross":
        tx, ty = max((x1 - x0) // 6, 1), max((y1 - y0) // 6, 1)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle((cx - tx, y0, cx + tx, y1), fill=colour)
        draw.rectangle((x0, cy - ty, x1, cy + ty), fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}: expected one of {', '.join(SHAPE_CLASSES)}")


def _overlap(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _make_image(rng: np.random.Generator, size: int, classes: Sequence[str]) -> tuple[Image.Image, list[dict]]:
    background = rng.integers(0, 256, size=3)
    noise = rng.normal(0, 12, size=(size, size, 3))
    pixels = np.clip(background[None, None, :] + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    objects: list[dict] = []
    n_objects = 0 if rng.random() < _EMPTY_FRACTION else int(rng.integers(1, 5))
    placed: list[tuple[float, float, float, float]] = []
    for _ in range(n_objects):
        for _attempt in range(20):
            side = int(rng.integers(int(0.08 * size), int(0.45 * size) + 1))
            aspect = rng.uniform(0.75, 1.33)
            w, h = max(int(side * aspect), 4), max(int(side / aspect), 4)
            # centres may sit near the border, so some shapes are cut (truncated)
            cx, cy = rng.uniform(0.05 * size, 0.95 * size, size=2)
            x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
            x1, y1 = x0 + w - 1, y0 + h - 1  # inclusive pixel box, possibly beyond the image
            vis = (max(x0, 0), max(y0, 0), min(x1, size - 1) + 1, min(y1, size - 1) + 1)
            if vis[2] - vis[0] < 4 or vis[3] - vis[1] < 4 or any(_overlap(vis, p) > 0.2 for p in placed):
                continue
            shape = classes[int(rng.integers(len(classes)))]
            colour = tuple(int(c) for c in (background + rng.integers(80, 176, size=3)) % 256)
            _draw(draw, shape, (x0, y0, x1, y1), colour)
            placed.append(vis)
            objects.append({
                "name": shape, "xmin": vis[0] + 1, "ymin": vis[1] + 1, "xmax": vis[2], "ymax": vis[3],
                "truncated": vis != (x0, y0, x1 + 1, y1 + 1),
                "difficult": max(vis[2] - vis[0], vis[3] - vis[1]) < _DIFFICULT_MAX_SIDE * size,
            })
            break
    return image, objects


SYNTHETIC_MARKER = "HF_GAF_SYNTHETIC_VOC"


def make_voc(
    out_dir: str,
    n_train: int = 160,
    n_test: int = 40,
    image_size: int = 128,
    seed: int = 0,
    classes: Sequence[str] = SHAPE_CLASSES,
    val_fraction: float = 0.2,
    overwrite: bool = False,
) -> str:
    """Write a VOCdevkit/VOC2007 tree of ``n_train`` trainval and ``n_test`` test images; return the
    ``VOCdevkit`` path. ``classes`` picks which of :data:`SHAPE_CLASSES` appear (their names).

    ``out_dir`` must be missing or empty: a folder with anything in it (a real VOC tree, say) raises
    ``FileExistsError`` unless ``overwrite``, which first deletes ``VOCdevkit/VOC2007`` there (the
    tree this writes) and leaves every other file alone. A set written here carries the marker file
    :data:`SYNTHETIC_MARKER`, so callers can tell their own output from a user's data."""
    unknown = [c for c in classes if c not in SHAPE_CLASSES]
    if unknown:
        raise ValueError(f"make_voc draws only {', '.join(SHAPE_CLASSES)}; unknown class names: {unknown}")
    if n_train < 0 or n_test < 0 or image_size < 32:
        raise ValueError(f"need n_train, n_test >= 0 and image_size >= 32, got {n_train}, {n_test}, {image_size}")
    check_voc_output(out_dir, overwrite, "make-voc")
    base = create_voc_tree(out_dir, overwrite)
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}" for i in range(n_train + n_test)]
    for image_id in ids:
        image, objects = _make_image(rng, image_size, classes)
        image.save(os.path.join(base, "JPEGImages", f"{image_id}.jpg"), quality=92)
        with open(os.path.join(base, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write(voc_annotation_xml(f"{image_id}.jpg", image_size, image_size, objects, "hf_gaf synthetic shapes"))
    trainval, test = ids[:n_train], ids[n_train:]
    n_val = int(round(val_fraction * len(trainval)))
    splits = {"trainval": trainval, "train": trainval[: len(trainval) - n_val],
              "val": trainval[len(trainval) - n_val:], "test": test}
    return finish_voc_tree(out_dir, splits, SYNTHETIC_MARKER,
                           f"written by hf_gaf.detection.synthetic_voc.make_voc (seed {seed})")


def is_synthetic_voc(out_dir: str) -> bool:
    """True when ``out_dir`` was written by :func:`make_voc` (it holds :data:`SYNTHETIC_MARKER`)."""
    return os.path.isfile(os.path.join(out_dir, SYNTHETIC_MARKER))

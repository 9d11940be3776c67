"""Real aerial tree crowns, offline: the labelled NEON images inside the ``deepforest`` wheel as a VOCdevkit tree.

The ``deepforest`` package (MIT licence, Weinstein et al.) ships, in ``deepforest/data/`` of its wheel, RGB
orthophotos of the US National Ecological Observatory Network (NEON, 10 cm per pixel) with hand-drawn
tree-crown boxes in PASCAL VOC XML. :func:`make_trees` reads four of them straight from the wheel (a zip; the
package is never installed nor imported) and writes ``OUT/VOCdevkit/VOC2007`` with one class, ``tree``:

============================================  ====  ============  =====  =========
image                                         site  size          boxes  split
============================================  ====  ============  =====  =========
``2019_YELL_2_528000_4978000_image_crop2``    YELL  2299 × 2472   574    trainval
``2019_YELL_2_541000_4977000_image_crop``     YELL  1249 × 1035   279    trainval
``OSBS_029``                                  OSBS  400 × 400     61     test
``SOAP_061``                                  SOAP  400 × 400     37     test
============================================  ====  ============  =====  =========

The split is **by site**: training on Yellowstone (YELL, Wyoming conifers), testing on Ordway-Swisher (OSBS,
Florida pine savanna) and Soaproot Saddle (SOAP, California Sierra), so the number measures how a detector
carries over to places it has never seen. Images are cut into ``tile_size`` tiles (the last row and column
aligned to the image's edge, so every pixel is in a tile; a side shorter than the tile is one tile). A crown
is labelled in every tile it shows in (:func:`tile_objects`): whole, or clipped and ``truncated``, and
``difficult`` (ignored by the metric, left out of training) when less than half of it shows there. The wheel is pinned
(:data:`DEEPFOREST_VERSION`) and its SHA-256 checked, so every machine builds the same bytes.

Example:
    >>> DEEPFOREST_VERSION, len(WHEEL_SHA256)
    ('2.1.0', 64)
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile

from defusedxml import ElementTree
from PIL import Image

from .voc import check_voc_output, create_voc_tree, finish_voc_tree, voc_annotation_xml

DEEPFOREST_VERSION = "2.1.0"
WHEEL_NAME = f"deepforest-{DEEPFOREST_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54"
FETCH_COMMAND = f"{sys.executable} -m pip download deepforest=={DEEPFOREST_VERSION} --no-deps -d DIR"
#: image stem in ``deepforest/data/`` -> (NEON site, split); the images are PNG, the boxes VOC XML
IMAGES = {
    "2019_YELL_2_528000_4978000_image_crop2": ("YELL", "trainval"),
    "2019_YELL_2_541000_4977000_image_crop": ("YELL", "trainval"),
    "OSBS_029": ("OSBS", "test"),
    "SOAP_061": ("SOAP", "test"),
}
TREES_MARKER = "HF_GAF_TREES"
_DATA = "deepforest/data/"


class TreesError(ValueError):
    """The wheel is missing, not the pinned one, or not readable; the message says how to get the right one."""


def default_cache() -> str:
    """Where a fetched wheel is kept between runs: ``$XDG_CACHE_HOME/hf_gaf`` (``~/.cache/hf_gaf``)."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hf_gaf")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheel(cache: str | None = None) -> str:
    """The pinned deepforest wheel: from ``cache`` (:func:`default_cache`) when it is there and checks out, else
    downloaded there with ``pip download --no-deps`` (nothing is installed); a failure is a :class:`TreesError`
    naming the command to run by hand."""
    cache = cache or default_cache()
    path = os.path.join(cache, WHEEL_NAME)
    if os.path.isfile(path) and sha256_of(path) == WHEEL_SHA256:
        return path
    os.makedirs(cache, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", f"deepforest=={DEEPFOREST_VERSION}", "--no-deps", "--only-binary",
           ":all:", "-d", cache, "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.isfile(path):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise TreesError(f"could not download {WHEEL_NAME} ({last}); fetch it with `{FETCH_COMMAND}` and pass "
                         "its path (hf-gaf make-trees --wheel DIR/" + WHEEL_NAME + ")")
    return check_wheel(path)


def check_wheel(path: str, sha256: str = WHEEL_SHA256) -> str:
    """``path`` if its SHA-256 is ``sha256`` (the pinned wheel's), else a :class:`TreesError` naming both."""
    if os.path.isdir(path):
        inside = os.path.join(path, WHEEL_NAME)
        raise TreesError(f"wheel {path} is a folder; pass the wheel file itself"
                         + (f": {inside}" if os.path.isfile(inside) else f" (fetch it with `{FETCH_COMMAND}`)"))
    if not os.path.isfile(path):
        raise TreesError(f"wheel {path} does not exist; fetch it with `{FETCH_COMMAND}`")
    digest = sha256_of(path)
    if digest != sha256:
        raise TreesError(f"wheel {path} has SHA-256 {digest}, not the one of {WHEEL_NAME} ({sha256}); "
                         f"fetch the pinned wheel with `{FETCH_COMMAND}`")
    return path


def read_boxes(xml: bytes, source: str) -> list[tuple[float, float, float, float]]:
    """The boxes of a VOC XML file as 0-based ``(x0, y0, x1, y1)`` (VOC's 1-based inclusive corners)."""
    try:
        root = ElementTree.fromstring(xml)
    except Exception as err:  # defusedxml's refusals and ParseError alike
        raise TreesError(f"{source}: unreadable XML ({err})") from None
    boxes = []
    for obj in root.iter("object"):
        b = obj.find("bndbox")
        try:
            x0, y0, x1, y1 = (float(b.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise TreesError(f"{source}: an object without a numeric bndbox") from None
        boxes.append((x0 - 1, y0 - 1, x1, y1))
    return boxes


def tile_origins(length: int, tile: int) -> list[int]:
    """Tile starts along one side: every ``tile`` pixels, the last aligned to the end (one tile when shorter).

    >>> tile_origins(1035, 400), tile_origins(400, 400), tile_origins(300, 400)
    ([0, 400, 635], [0], [0])
    """
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, tile))
    return starts if starts[-1] == length - tile else [*starts, length - tile]


VISIBLE_TO_LABEL = 0.5  # a crown cut by a tile's edge is a training label there when at least this much shows


def tile_objects(boxes, tx: int, ty: int, w: int, h: int) -> list[dict]:
    """The VOC objects of the tile at ``(tx, ty)`` of size ``w`` × ``h``: every crown that shows in it, clipped to
    it. A crown wholly inside is a plain label; one cut by the edge is ``truncated``, and ``difficult`` (left
    out of training and ignored by the VOC metric) when less than :data:`VISIBLE_TO_LABEL` of its area shows;
    a sliver under 2 px is dropped.

    >>> [(o["xmin"], o["xmax"], o["truncated"], o["difficult"]) for o in tile_objects(
    ...     [(10, 10, 30, 30), (90, 10, 130, 30), (70, 40, 110, 60)], 0, 0, 100, 100)]
    [(11, 30, False, False), (91, 100, True, True), (71, 100, True, False)]
    """
    objects = []
    for x0, y0, x1, y1 in boxes:
        c = (max(x0 - tx, 0.0), max(y0 - ty, 0.0), min(x1 - tx, w), min(y1 - ty, h))
        if c[2] - c[0] < 2 or c[3] - c[1] < 2:
            continue
        whole = c == (x0 - tx, y0 - ty, x1 - tx, y1 - ty)
        shown = (c[2] - c[0]) * (c[3] - c[1]) / ((x1 - x0) * (y1 - y0))
        objects.append({"name": "tree", "xmin": int(round(c[0])) + 1, "ymin": int(round(c[1])) + 1,
                        "xmax": int(round(c[2])), "ymax": int(round(c[3])), "truncated": not whole,
                        "difficult": not whole and shown < VISIBLE_TO_LABEL})
    return objects


def tiles_of(image: Image.Image, boxes, tile: int):
    """``(x, y, crop, objects)`` per tile, the objects by :func:`tile_objects` (a crown shows in every tile it
    lies in: where tiles overlap, at the last row and column, in both)."""
    width, height = image.size
    for ty in tile_origins(height, tile):
        for tx in tile_origins(width, tile):
            w, h = min(tile, width - tx), min(tile, height - ty)
            yield tx, ty, image.crop((tx, ty, tx + w, ty + h)), tile_objects(boxes, tx, ty, w, h)


def make_trees(out_dir: str, wheel: str | None = None, tile_size: int = 400, overwrite: bool = False,
               cache: str | None = None, sha256: str = WHEEL_SHA256) -> str:
    """Write the tree-crown set (module docstring) into ``out_dir``; return its ``VOCdevkit`` path.

    ``wheel``: a path to the pinned deepforest wheel (default: :func:`fetch_wheel`), checked against ``sha256``
    (the tests pass their own small wheel-shaped zip's). ``out_dir`` must be missing or empty unless
    ``overwrite``, which replaces its ``VOCdevkit/VOC2007`` and nothing else."""
    if tile_size < 64:
        raise ValueError(f"tile_size {tile_size}: need at least 64 px")
    check_voc_output(out_dir, overwrite, "make-trees")  # before the download
    path = check_wheel(wheel, sha256) if wheel else fetch_wheel(cache)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise TreesError(f"wheel {path} is not a zip ({err})") from None
    base = create_voc_tree(out_dir, overwrite)
    splits: dict[str, list[str]] = {"trainval": [], "test": []}
    with archive:
        names = set(archive.namelist())
        for stem, (site, split) in IMAGES.items():
            png, xml = f"{_DATA}{stem}.png", f"{_DATA}{stem}.xml"
            if png not in names or xml not in names:
                raise TreesError(f"wheel {path} lacks {png} or {xml}: not deepforest {DEEPFOREST_VERSION}")
            boxes = read_boxes(archive.read(xml), f"{path}:{xml}")
            with Image.open(io.BytesIO(archive.read(png))) as img:
                image = img.convert("RGB")
            for tx, ty, crop, objects in tiles_of(image, boxes, tile_size):
                image_id = f"{site}_{stem}_{tx:04d}_{ty:04d}"
                crop.save(os.path.join(base, "JPEGImages", f"{image_id}.jpg"), quality=95)
                with open(os.path.join(base, "Annotations", f"{image_id}.xml"), "w") as f:
                    f.write(voc_annotation_xml(f"{image_id}.jpg", crop.width, crop.height, objects,
                                               f"NEON via deepforest {DEEPFOREST_VERSION} ({stem})"))
                splits[split].append(image_id)
    return finish_voc_tree(out_dir, splits, TREES_MARKER,
                           f"written by hf_gaf.detection.trees.make_trees from {WHEEL_NAME} (tile {tile_size})")


def is_trees(out_dir: str) -> bool:
    """True when ``out_dir`` was written by :func:`make_trees`."""
    return os.path.isfile(os.path.join(out_dir, TREES_MARKER))

"""hf_gaf.detection.trees on a small wheel-shaped zip the test builds (the real wheel is 20 MB and fetched by
`make bench-trees`): tiling, every crown labelled where it shows, the by-site split, and the refusals."""

import io
import zipfile

import pytest
from PIL import Image

from hf_gaf.detection.trees import IMAGES, TreesError, make_trees, sha256_of, tile_origins
from hf_gaf.detection.voc import load_voc
from hf_gaf.harness.cli import main as hf_gaf

SIZES = {"2019_YELL_2_528000_4978000_image_crop2": (230, 250), "2019_YELL_2_541000_4977000_image_crop": (125, 100),
         "OSBS_029": (100, 100), "SOAP_061": (100, 100)}
BOXES = {  # VOC 1-based corners
    "2019_YELL_2_528000_4978000_image_crop2": [(1, 1, 20, 20), (90, 90, 110, 110), (95, 150, 130, 190)],
    "2019_YELL_2_541000_4977000_image_crop": [(110, 80, 125, 100)],
    "OSBS_029": [(10, 10, 30, 30), (50, 60, 70, 90)],
    "SOAP_061": [(40, 40, 60, 60)],
}


def voc_xml(boxes):
    objects = "".join(f"<object><name>Tree</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                      f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>" for a, b, c, d in boxes)
    return f"<annotation><size><width>1</width><height>1</height></size>{objects}</annotation>"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    path = tmp_path_factory.mktemp("wheel") / "deepforest-2.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for stem in IMAGES:
            png = io.BytesIO()
            Image.new("RGBA", SIZES[stem], (30, 120, 40, 255)).save(png, format="PNG")
            z.writestr(f"deepforest/data/{stem}.png", png.getvalue())
            z.writestr(f"deepforest/data/{stem}.xml", voc_xml(BOXES[stem]))
        z.writestr("deepforest/__init__.py", "")
    return str(path)


def test_tiles_split_by_site_and_every_crown_is_labelled_in_every_tile_it_shows_in(wheel, tmp_path):
    """Round 4, item 5: a crown was labelled only in the tile holding its centre, so tiles overlapping at the
    last row and column showed whole crowns unlabelled (164 on the real set). Counted box by box here, with
    the visible area measured on a pixel mask."""
    import numpy as np

    root = make_trees(str(tmp_path / "t"), wheel=wheel, tile_size=100, sha256=sha256_of(wheel))
    train = load_voc(root, split="trainval", classes=["tree"])
    test = load_voc(root, split="test", classes=["tree"])
    assert {i.split("/")[-1].split("_")[0] for i in train["image_id"]} == {"YELL"}
    assert sorted({i.split("/")[-1].split("_")[0] for i in test["image_id"]}) == ["OSBS", "SOAP"]
    # 230 x 250 in 100 px tiles: x at 0, 100, 130; y at 0, 100, 150 (the last aligned to the edge) = 9 tiles;
    # 125 x 100: x at 0, 25 = 2 tiles; the test images are one tile each
    assert len(train) == 9 + 2 and len(test) == 2
    n_checked = 0
    for row in [*train, *test]:
        name = row["image_id"].split("/")[-1]
        stem = next(s for s in SIZES if f"_{s}_" in f"_{name}")
        tx, ty = (int(v) for v in name.split("_")[-2:])
        labels = {tuple(b): (t, d) for b, t, d in zip(row["objects"]["bbox"], row["objects"]["truncated"],
                                                       row["objects"]["difficult"])}
        expected = {}
        for x0, y0, x1, y1 in BOXES[stem]:  # VOC 1-based corners -> 0-based pixel ranges [x0-1, x1)
            mask = np.zeros((SIZES[stem][1], SIZES[stem][0]), bool)
            mask[y0 - 1:y1, x0 - 1:x1] = True
            shown = mask[ty:ty + row["height"], tx:tx + row["width"]]
            if not shown.any():
                continue
            ys, xs = np.nonzero(shown)
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            whole = shown.sum() == mask.sum()
            expected[box] = (not whole, not whole and shown.sum() < 0.5 * mask.sum())
        assert labels == expected, name
        n_checked += len(expected)
    assert n_checked > sum(len(b) for b in BOXES.values())  # crowns in the overlaps are labelled in both tiles
    by_id = {r["image_id"].split("/")[-1]: r["objects"] for r in train}
    crop2 = "YELL_2019_YELL_2_528000_4978000_image_crop2"
    # (89, 89, 110, 110): 11 x 11 of its 21 x 21 px show in the first tile: clipped, truncated and difficult
    assert by_id[f"{crop2}_0000_0000"]["bbox"] == [[0.0, 0.0, 20.0, 20.0], [89.0, 89.0, 100.0, 100.0]]
    assert by_id[f"{crop2}_0000_0000"]["difficult"] == [False, True]
    with Image.open(train[0]["image"].filename) as img:
        assert img.mode == "RGB"


def test_tile_origins_cover_every_pixel():
    for length in (64, 99, 100, 101, 399, 2472):
        starts = tile_origins(length, 100)
        covered = set().union(*(range(s, min(s + 100, length)) for s in starts))
        assert covered == set(range(length)) and starts == sorted(set(starts))


def test_refusals_are_one_line(wheel, tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("user data")
    assert hf_gaf(["make-trees", str(tmp_path / "fresh"), "--wheel", wheel]) == 2  # not the pinned digest
    err = capsys.readouterr().err.strip()
    assert "SHA-256" in err and "pip download deepforest==2.1.0" in err and "\n" not in err
    with pytest.raises(FileExistsError, match="is not empty"):
        make_trees(str(full), wheel=wheel, sha256=sha256_of(wheel))
    assert (full / "mine.txt").read_text() == "user data"
    assert hf_gaf(["make-trees", str(tmp_path / "x"), "--wheel", str(tmp_path / "missing.whl")]) == 2
    assert "does not exist; fetch it with" in capsys.readouterr().err
    broken = tmp_path / "broken.whl"
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("deepforest/__init__.py", "")
    with pytest.raises(TreesError, match="lacks deepforest/data/"):
        make_trees(str(tmp_path / "y"), wheel=str(broken), sha256=sha256_of(str(broken)))

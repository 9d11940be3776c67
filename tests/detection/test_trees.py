"""hf_gaf.detection.trees on a small wheel-shaped zip the test builds (the real wheel is 20 MB and fetched by
`make bench-trees`): tiling, the centre rule, the by-site split, and the refusals."""

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


def test_tiles_split_by_site_and_every_box_lands_in_the_tile_of_its_centre(wheel, tmp_path):
    root = make_trees(str(tmp_path / "t"), wheel=wheel, tile_size=100, sha256=sha256_of(wheel))
    train = load_voc(root, split="trainval", classes=["tree"])
    test = load_voc(root, split="test", classes=["tree"])
    assert {i.split("/")[-1].split("_")[0] for i in train["image_id"]} == {"YELL"}
    assert sorted({i.split("/")[-1].split("_")[0] for i in test["image_id"]}) == ["OSBS", "SOAP"]
    # 230 x 250 in 100 px tiles: x at 0, 100, 130; y at 0, 100, 150 (the last aligned to the edge) = 9 tiles;
    # 125 x 100: x at 0, 25 = 2 tiles; the test images are one tile each
    assert len(train) == 9 + 2 and len(test) == 2
    assert sum(len(r["objects"]["bbox"]) for r in train) == 4 and sum(len(r["objects"]["bbox"]) for r in test) == 3
    by_id = {r["image_id"].split("/")[-1]: r["objects"] for r in train}
    crop2 = "YELL_2019_YELL_2_528000_4978000_image_crop2"
    # (89, 89, 110, 110) has its centre (99.5, 99.5) in the first tile: clipped there and marked truncated
    assert by_id[f"{crop2}_0000_0000"]["bbox"] == [[0.0, 0.0, 20.0, 20.0], [89.0, 89.0, 100.0, 100.0]]
    assert by_id[f"{crop2}_0000_0000"]["truncated"] == [False, True]
    # (94, 149, 130, 190): centre (112, 169.5) in tile (100, 100), clipped at its left edge
    assert by_id[f"{crop2}_0100_0100"]["bbox"] == [[0.0, 49.0, 30.0, 90.0]]
    assert by_id[f"{crop2}_0130_0150"]["bbox"] == []  # overlaps the same crown; owned by one tile only
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

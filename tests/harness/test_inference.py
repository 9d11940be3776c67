"""hf_gaf.harness.inference in process: image discovery, drawn names, COCO ids (the whole predict and evaluate
runs are in tests/e2e/test_detection_journey.py)."""

import json

import pytest
from PIL import Image

from hf_gaf.harness.inference import coco_category_ids, drawn_names, image_files


def test_image_ids_are_relative_paths_with_extension_and_each_file_once(tmp_path):
    (tmp_path / "x").mkdir()
    for name in ("a.jpg", "a.png", "x/a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"") if name.endswith(".txt") else Image.new("RGB", (4, 4)).save(tmp_path / name)
    found = image_files([str(tmp_path), str(tmp_path / "a.jpg")])
    assert [i for _, i in found] == ["a.jpg", "a.png", "x/a.jpg"]
    with pytest.raises(ValueError, match="no such file or folder"):
        image_files([str(tmp_path / "nope")])


def test_drawn_names_stay_inside_and_never_collide():
    names = drawn_names(["a.jpg", "../../etc/passwd", "/abs/b.png", "x/../../a.jpg", "a.jpg", "w:e?ird", 7])
    assert names == ["a.jpg.png", "etc/passwd.png", "abs/b.png.png", "x/a.jpg.png", "a.jpg-4.png", "w_e_ird.png",
                     "7.png"]
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in names)


def test_category_ids_by_name_or_none_without_categories(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 9, "name": "b"},
                                                                                 {"id": 4, "name": "a"}]}))
    assert coco_category_ids(str(path), ["a", "b"]) == [4, 9]
    with pytest.raises(ValueError, match=r"model only: \['c'\]; JSON only: \['b'\]"):
        coco_category_ids(str(path), ["a", "c"])
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    assert coco_category_ids(str(path), ["a"]) is None

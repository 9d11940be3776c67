import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_gaf.detection.synthetic_voc import SHAPE_CLASSES, make_voc
from hf_gaf.detection.voc import VOC_CLASSES, VOCFormatError, load_voc, parse_voc_xml
from hf_gaf.metrics import voc_eval
from hf_gaf.metrics.coco import coco_eval

OBJ = """<object><name>{name}</name><truncated>0</truncated>{difficult}
<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>{extra}</object>"""


def write_voc(root: Path, year="2007", images=None, split="trainval", mode="RGB"):
    """A tiny VOC tree: images = {id: [(name, x0, y0, x1, y1, difficult_xml, extra_xml), ...]}."""
    base = root / f"VOC{year}"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for image_id, objects in images.items():
        body = "".join(OBJ.format(name=n, x0=a, y0=b, x1=c, y1=d, difficult=diff, extra=extra)
                       for n, a, b, c, d, diff, extra in objects)
        (base / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>50</width><height>40</height><depth>3</depth></size>{body}</annotation>")
        Image.new(mode, (50, 40)).save(base / "JPEGImages" / f"{image_id}.jpg")
    (base / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in images))
    return root


def test_coordinates_part_boxes_floats_and_difficult_defaults(tmp_path):
    part = "<part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax><ymax>3</ymax></bndbox></part>"
    write_voc(tmp_path, images={"a": [
        ("person", 11, 6, 30, 20, "<difficult>0</difficult>", part),
        ("dog", "5.5", "3.0", "20.5", "18", "", ""),  # float coordinates, no <difficult>
        ("cat", 1, 1, 50, 40, "<difficult></difficult>", ""),  # empty <difficult>
        ("car", 1, 1, 5, 5, "<difficult>1</difficult>", ""),
    ]})
    row = load_voc(str(tmp_path))[0]
    o = row["objects"]
    assert o["bbox"][0] == [10.0, 5.0, 30.0, 20.0]  # 1-based inclusive -> 0-based continuous; part ignored
    assert o["bbox"][1] == [4.5, 2.0, 20.5, 18.0]
    assert o["bbox"][2] == [0.0, 0.0, 50.0, 40.0]
    assert o["difficult"] == [False, False, False, True]
    assert [VOC_CLASSES[c] for c in o["category"]] == ["person", "dog", "cat", "car"]
    assert o["area"][0] == 20 * 15
    assert (row["width"], row["height"], row["image_id"]) == (50, 40, "2007/a")
    assert len(load_voc(str(tmp_path), keep_difficult=False)[0]["objects"]["bbox"]) == 3


def test_clamping_and_zero_area_warning(tmp_path):
    write_voc(tmp_path, images={"a": [("dog", -5, 0, 70, 50, "", ""), ("cat", 60, 5, 80, 10, "", ""),
                                      ("cat", 10, 10, 9, 20, "", "")]})
    with pytest.warns(UserWarning, match="dropped 2 boxes of zero area"):
        ds = load_voc(str(tmp_path))
    assert ds[0]["objects"]["bbox"] == [[0.0, 0.0, 50.0, 40.0]]


def test_unknown_class_error_or_skip(tmp_path):
    write_voc(tmp_path, images={"a": [("unicorn", 1, 1, 5, 5, "", ""), ("dog", 1, 1, 5, 5, "", "")]})
    with pytest.raises(VOCFormatError, match=r"a\.xml: unknown class 'unicorn'"):
        load_voc(str(tmp_path))
    with pytest.warns(UserWarning, match="skipped 1 objects of unknown classes"):
        ds = load_voc(str(tmp_path), skip_unknown=True)
    assert len(ds[0]["objects"]["bbox"]) == 1


def test_missing_root_split_and_jpeg(tmp_path):
    with pytest.raises(VOCFormatError, match="does not exist.*\n.*expected layout"):
        load_voc(str(tmp_path / "nope"))
    write_voc(tmp_path, images={"a": [("dog", 1, 1, 5, 5, "", "")]})
    with pytest.raises(VOCFormatError, match="test.txt not found"):
        load_voc(str(tmp_path), split="test")
    with pytest.raises(VOCFormatError, match="no VOC2012 folder"):
        load_voc(str(tmp_path), years=("2007", "2012"))
    os.remove(tmp_path / "VOC2007" / "JPEGImages" / "a.jpg")
    with pytest.raises(VOCFormatError, match=r"image .*a\.jpg listed in .*trainval\.txt does not exist"):
        load_voc(str(tmp_path))


def test_malformed_and_hostile_xml(tmp_path):
    write_voc(tmp_path, images={"a": [("dog", 1, 1, 5, 5, "", "")]})
    xml = tmp_path / "VOC2007" / "Annotations" / "a.xml"
    xml.write_text("<annotation><size>")
    with pytest.raises(VOCFormatError, match=r"a\.xml: malformed XML"):
        load_voc(str(tmp_path))
    laughs = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">'
              '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><annotation><size><width>50</width><height>40</height>'
              '</size><object><name>&lol3;</name></object></annotation>')
    xml.write_text(laughs)
    with pytest.raises(VOCFormatError, match="refused unsafe XML"):
        load_voc(str(tmp_path))


def test_grayscale_and_cmyk_become_rgb(tmp_path):
    write_voc(tmp_path / "g", images={"a": [("dog", 1, 1, 5, 5, "", "")]}, mode="L")
    write_voc(tmp_path / "c", images={"a": [("dog", 1, 1, 5, 5, "", "")]}, mode="CMYK")
    for sub in ("g", "c"):
        image = load_voc(str(tmp_path / sub))[0]["image"]
        assert image.mode == "RGB" and image.size == (50, 40)


def test_07_plus_12_concatenation(tmp_path):
    write_voc(tmp_path / "VOCdevkit", "2007", {"a": [("dog", 1, 1, 5, 5, "", "")], "b": []})
    write_voc(tmp_path / "VOCdevkit", "2012", {"2012_1": [("cat", 1, 1, 5, 5, "", "")]})
    ds = load_voc(str(tmp_path), years=("2007", "2012"))  # the folder holding VOCdevkit works too
    assert len(ds) == 3 and ds["image_id"] == ["2007/a", "2007/b", "2012/2012_1"]
    assert len(load_voc(str(tmp_path), years=("2007", "2012"), skip_empty=True)) == 2


def test_make_voc_deterministic_and_read_like_voc(tmp_path):
    a = make_voc(str(tmp_path / "a"), n_train=20, n_test=10, seed=3)
    b = make_voc(str(tmp_path / "b"), n_train=20, n_test=10, seed=3)
    c = make_voc(str(tmp_path / "c"), n_train=20, n_test=10, seed=4)
    ann = Path(a) / "VOC2007" / "Annotations"
    for name in sorted(os.listdir(ann)):
        assert (ann / name).read_bytes() == (Path(b) / "VOC2007" / "Annotations" / name).read_bytes()
    assert (ann / "000001.xml").read_bytes() != (Path(c) / "VOC2007" / "Annotations" / "000001.xml").read_bytes()
    train = load_voc(a, split="trainval", classes=SHAPE_CLASSES)
    test = load_voc(a, split="test", classes=SHAPE_CLASSES)
    assert (len(train), len(test)) == (20, 10)
    assert len(load_voc(a, split="train", classes=SHAPE_CLASSES)) == 16


def test_make_voc_contents_have_the_promised_variety(tmp_path):
    root = make_voc(str(tmp_path), n_train=200, n_test=0, seed=0)
    objects = load_voc(root, split="trainval", classes=SHAPE_CLASSES)["objects"]
    counts = [len(o["bbox"]) for o in objects]
    assert min(counts) == 0 and max(counts) == 4
    flat = lambda key: [v for o in objects for v in o[key]]  # noqa: E731
    assert 0 < np.mean(flat("difficult")) < 0.15 and 0.05 < np.mean(flat("truncated")) < 0.5
    assert set(flat("category")) == {0, 1, 2, 3}


@pytest.mark.parametrize("compat", ["devkit", "py-faster-rcnn"])
def test_oracle_after_round_trip_through_load_voc(tmp_path, compat):
    root = make_voc(str(tmp_path), n_train=0, n_test=40, seed=1)
    ds = load_voc(root, split="test", classes=SHAPE_CLASSES)
    gts, dets = [], []
    for row in ds.remove_columns("image"):
        o = row["objects"]
        gts.append({"image_id": row["image_id"], "boxes": np.array(o["bbox"]).reshape(-1, 4),
                    "labels": np.array(o["category"]), "difficult": np.array(o["difficult"])})
        dets.append({"image_id": row["image_id"], "boxes": gts[-1]["boxes"], "scores": np.ones(len(o["bbox"])),
                     "labels": gts[-1]["labels"]})
    for metric in ("voc07", "voc12"):
        assert voc_eval(dets, gts, SHAPE_CLASSES, metric=metric, compat=compat)["map"] == pytest.approx(1.0, abs=1e-12)
    assert coco_eval(dets, gts, SHAPE_CLASSES)["coco_map"] == pytest.approx(1.0, abs=1e-9)


def test_parse_voc_xml_reports_missing_size(tmp_path):
    path = tmp_path / "x.xml"
    path.write_text("<annotation></annotation>")
    with pytest.raises(VOCFormatError, match=r"x\.xml: missing <size>"):
        parse_voc_xml(str(path), VOC_CLASSES)


@pytest.mark.parametrize("edit, message", [
    (lambda xml: xml.replace("<width>50</width>", "<width>100000</width>"),
     r"<size> says 100000x40 but .*a\.jpg is 50x40"),
    (lambda xml: xml.replace("<xmin>11</xmin>", "<xmin>nan</xmin>"), r"<xmin> is not a finite number: 'nan'"),
    (lambda xml: xml.replace("<width>50</width>", "<width>nan</width>"), r"<width> is not a finite number"),
    (lambda xml: xml.replace("<height>40</height>", "<height>inf</height>"), r"<height> is not a finite number"),
    (lambda xml: xml.replace("<height>40</height>", "<height>0</height>"), r"width and height must be positive"),
])
def test_xml_that_disagrees_with_itself_or_the_image_names_the_file(tmp_path, edit, message):
    write_voc(tmp_path, images={"a": [("dog", 11, 6, 30, 20, "", "")]})
    xml = tmp_path / "VOC2007" / "Annotations" / "a.xml"
    xml.write_text(edit(xml.read_text()))
    with pytest.raises(VOCFormatError, match=message) as err:
        load_voc(str(tmp_path))
    assert "a.xml" in str(err.value) or "a.jpg" in str(err.value)


def test_decompression_bomb_duplicates_and_empty_splits_are_clear_errors(tmp_path, monkeypatch):
    write_voc(tmp_path, images={"a": [("dog", 11, 6, 30, 20, "", "")], "b": []})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 50x40 = 2000 pixels > 2x the limit: a "bomb"
    with pytest.raises(VOCFormatError, match=r"image .*a\.jpg cannot be read"):
        load_voc(str(tmp_path))
    monkeypatch.undo()
    with pytest.raises(VOCFormatError, match="name a year twice"):
        load_voc(str(tmp_path), years=("2007", "2007"))
    split = tmp_path / "VOC2007" / "ImageSets" / "Main" / "trainval.txt"
    split.write_text("a\nb\na\n")
    with pytest.raises(VOCFormatError, match=r"trainval\.txt lists \['a'\] more than once"):
        load_voc(str(tmp_path))
    split.write_text("b\n")
    with pytest.raises(VOCFormatError, match="has no images with objects"):
        load_voc(str(tmp_path), skip_empty=True)
    split.write_text("")
    with pytest.raises(VOCFormatError, match="has no images"):
        load_voc(str(tmp_path))


def test_recipes_train_on_a_subset_of_classes_with_the_flag_the_error_names(tmp_path):
    from hf_gaf.detection.data import DetectionDataArguments, load_splits

    write_voc(tmp_path, images={"a": [("dog", 11, 6, 30, 20, "", ""), ("cat", 1, 1, 20, 20, "", "")]})
    write_voc(tmp_path, images={"a": [("dog", 11, 6, 30, 20, "", ""), ("cat", 1, 1, 20, 20, "", "")]}, split="test")
    with pytest.raises(VOCFormatError, match="--skip_unknown_classes true"):
        load_splits(DetectionDataArguments(voc_root=str(tmp_path)), ["dog"])
    with pytest.warns(UserWarning, match="skipped 1 objects of unknown classes"):
        train, evaluation = load_splits(DetectionDataArguments(voc_root=str(tmp_path), skip_unknown_classes=True),
                                        ["dog"])
    assert train[0]["objects"]["category"] == [0] and len(evaluation) == 1


def test_a_truncated_jpeg_is_found_at_load_time_with_its_name(tmp_path):
    write_voc(tmp_path, images={"a": [("dog", 11, 6, 30, 20, "", "")], "b": [("cat", 1, 1, 20, 20, "", "")]})
    jpg = tmp_path / "VOC2007" / "JPEGImages" / "b.jpg"
    Image.effect_noise((50, 40), 60).convert("RGB").save(jpg, quality=95)  # enough data that a cut shows
    data = jpg.read_bytes()
    assert len(load_voc(str(tmp_path))) == 2  # intact files pass (and are not decoded)
    jpg.write_bytes(data[: len(data) // 2])
    with pytest.raises(VOCFormatError, match=r"image .*b\.jpg cannot be read: image file is truncated"):
        load_voc(str(tmp_path))
    jpg.write_bytes(data + b"trailing bytes after the end-of-image marker")  # some cameras do this
    assert len(load_voc(str(tmp_path))) == 2

"""A detection user's journey on CPU with tiny models: own data as a VOC tree (``--classes auto`` or a file)
or COCO JSON, saved models with a model card, ``hf-gaf predict``, ``hf-gaf evaluate`` and the bad inputs."""

import json
import math
import os

import pytest
from PIL import Image

from hf_gaf.detection.coco_json import COCOFormatError, load_coco, voc_to_coco
from hf_gaf.detection.saved import load_detector
from hf_gaf.detection.synthetic_voc import make_voc
from hf_gaf.harness.cli import main as hf_gaf
from hf_gaf.recipes.detection import train_detr, train_faster_rcnn

STEPS = ["--max_steps", "2", "--eval_strategy", "steps", "--eval_steps", "2", "--report_to", "none",
         "--disable_tqdm", "true", "--draw_predictions", "0", "--image_size", "96"]
FRCNN = ["--backbone", "timm:resnet18", "--anchor_sizes", "16", "32", "64", "--timm_out_indices", "2", "3",
         "--fpn_channels", "32", "--rpn_pre_nms_top_n", "200", "--rpn_post_nms_top_n", "100",
         "--rpn_batch_size_per_image", "64", "--box_batch_size_per_image", "64", "--per_device_train_batch_size", "4",
         "--per_device_eval_batch_size", "8"]
DETR = ["--model_config", "tiny-rt-detr", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = make_voc(str(tmp_path_factory.mktemp("voc")), n_train=12, n_test=8, image_size=96, seed=4)
    voc_to_coco(root)
    return root


def predict_cli(model, images, out, *flags) -> int:
    """``hf-gaf predict --model MODEL --images IMAGES... --out OUT FLAGS...``; its exit code."""
    return hf_gaf(["predict", "--model", str(model), "--images", *map(str, images), "--out", str(out), *flags])


def coco_flags(root):
    base = os.path.join(root, "VOC2007")
    return [
        "--data_format",
        "coco",
        "--train_json",
        f"{base}/coco/trainval.json",
        "--train_images",
        f"{base}/JPEGImages",
        "--eval_json",
        f"{base}/coco/test.json",
        "--eval_images",
        f"{base}/JPEGImages",
    ]


def coco_eval_flags(root):
    """The COCO flags of the evaluation split only (what ``hf-gaf evaluate`` takes)."""
    flags = coco_flags(root)
    return [flags[0], flags[1], *flags[6:]]


@pytest.fixture(scope="module")
def frcnn_run(voc, tmp_path_factory):
    out = tmp_path_factory.mktemp("frcnn")
    train_faster_rcnn.main([*coco_flags(voc), "--output_dir", str(out), *STEPS, *FRCNN])
    return out


@pytest.fixture(scope="module")
def detr_run(voc, tmp_path_factory):
    out = tmp_path_factory.mktemp("detr")
    train_detr.main(["--voc_root", voc, "--classes", "auto", "--output_dir", str(out), *STEPS, *DETR])
    return out


def test_coco_training_saves_final_and_best_models_with_a_card(frcnn_run):
    report = json.loads((frcnn_run / "metrics.json").read_text())
    assert report["settings"]["classes"] == ["circle", "cross", "square", "triangle"]  # the COCO categories by id
    chance = report["chance"]  # recorded for the comparisons: two steps from random init learn nothing
    assert chance["metric"] == "eval_voc07_map" and chance["at_chance"] == (report["final"]["eval_voc07_map"] <= 0.02)
    for name in ("model", "best-model"):
        folder = frcnn_run / name
        assert (folder / "model.safetensors").is_file() and (folder / "faster_rcnn_config.json").is_file()
        card = (folder / "README.md").read_text()
        assert "COCO JSON" in card and "circle, cross, square, triangle" in card and '"gaf": "none"' in card
        assert "| voc07_map |" in card and "- saved at: epoch " in card and "step 2" in card
    info = json.loads((frcnn_run / "model" / "hf_gaf_detection.json").read_text())
    assert info["family"] == "faster_rcnn" and info["category_ids"] == [1, 2, 3, 4]


def test_evaluate_without_data_flags_uses_the_data_the_model_records(frcnn_run, tmp_path, capsys):
    """Newcomer's path, item 5: evaluate on a COCO-trained model stopped with "--voc_root is required" though
    the model folder records its evaluation data; now it evaluates there, saying so."""
    final = json.loads((frcnn_run / "metrics.json").read_text())["final"]
    assert hf_gaf(["evaluate", "--model", str(frcnn_run / "model"), "--out", str(tmp_path)]) == 0
    assert "evaluating on the data recorded in" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "eval_results.json").read_text())["metrics"]
    assert metrics["eval_voc07_map"] == pytest.approx(final["eval_voc07_map"], abs=1e-6)


def test_evaluate_reproduces_the_final_map_of_training(frcnn_run, voc, tmp_path):
    final = json.loads((frcnn_run / "metrics.json").read_text())["final"]
    code = hf_gaf(
        ["evaluate", "--model", str(frcnn_run / "model"), "--out", str(tmp_path), "--batch-size", "8",
         *coco_eval_flags(voc)]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "eval_results.json").read_text())["metrics"]
    for key in ("eval_voc07_map", "eval_voc12_map", "eval_coco_map", "eval_ap_circle"):
        assert metrics[key] == pytest.approx(final[key], abs=1e-6), key


@pytest.mark.parametrize("run", ["frcnn_run", "detr_run"])
def test_predict_writes_coco_json_and_pngs_for_both_families(run, request, voc, tmp_path):
    folder = request.getfixturevalue(run) / "model"
    images = os.path.join(voc, "VOC2007", "JPEGImages")
    chosen = sorted(os.listdir(images))[:3]
    code = predict_cli(folder, [os.path.join(images, c) for c in chosen], tmp_path, "--threshold", "0.0")
    assert code == 0
    detections = json.loads((tmp_path / "detections.json").read_text())
    assert {d["image_id"] for d in detections} == set(chosen)
    assert all(len(d["bbox"]) == 4 and d["bbox"][2] >= 0 and 0 <= d["score"] <= 1 for d in detections)
    for c in chosen:
        with Image.open(tmp_path / "drawn" / f"{c}.png") as png:
            assert max(png.size) >= 640  # readable: drawn large, not at the image's 96 px


@pytest.mark.parametrize("size", [None, (200, 120), (120, 180)], ids=["square", "wide", "tall"])
def test_voc_classes_auto_are_sorted_and_the_detr_folder_agrees_with_the_pipeline(detr_run, voc, tmp_path, size):
    """The saved DETR folder in ``pipeline("object-detection")`` and in ``hf-gaf predict`` (the recipe's
    transform and post-processing), on a square image and on non-square ones (the letterbox canvas): the
    same detections, boxes within the pipeline's whole-pixel rounding, the same scores."""
    from transformers import AutoModelForObjectDetection, pipeline

    folder = str(detr_run / "model")
    model = AutoModelForObjectDetection.from_pretrained(folder)
    assert list(model.config.id2label.values()) == ["circle", "cross", "square", "triangle"]  # sorted, from the XML
    jpegs = os.path.join(voc, "VOC2007", "JPEGImages")
    with Image.open(os.path.join(jpegs, sorted(os.listdir(jpegs))[0])) as img:
        image = img.convert("RGB")
    if size is not None:
        image = image.resize(size)
    image_path = tmp_path / "image.png"
    image.save(image_path)
    piped = pipeline("object-detection", model=folder, device="cpu")(image, threshold=0.0)
    assert load_detector(folder).info.family == "detr"
    out = tmp_path / "pred-one"
    assert predict_cli(folder, [image_path], out, "--threshold", "0.0") == 0
    recipe = json.loads((out / "detections.json").read_text())
    assert len(piped) == len(recipe) > 0
    width, height = image.size
    for p, r in zip(sorted(piped, key=lambda d: -d["score"])[:10], sorted(recipe, key=lambda d: -d["score"])[:10]):
        x, y, w, h = r["bbox"]
        assert p["label"] == r["category"] and p["score"] == pytest.approx(r["score"], abs=1e-4)
        box = p["box"]  # whole pixels (truncated), not clipped to the image; predict clips
        xmin, xmax = min(max(box["xmin"], 0), width), min(max(box["xmax"], 0), width)
        ymin, ymax = min(max(box["ymin"], 0), height), min(max(box["ymax"], 0), height)
        # < 1 px of truncation, plus detections.json's rounding to 0.01 px
        assert max(abs(xmin - x), abs(ymin - y), abs(xmax - x - w), abs(ymax - y - h)) <= 1.01, (box, r["bbox"])


def test_classes_from_a_file(voc, tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("triangle\ncircle\nsquare\ncross\n")
    train_faster_rcnn.main(
        [
            "--voc_root",
            voc,
            "--classes",
            str(names),
            "--output_dir",
            str(tmp_path / "o"),
            *STEPS,
            *FRCNN,
            "--save_models",
            "false",
        ]
    )
    report = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert (
        report["settings"]["classes"] == ["triangle", "circle", "square", "cross"]
        and not (tmp_path / "o" / "model").exists()
    )
    assert math.isfinite(report["final"]["eval_voc07_map"])


def _coco(tmp_path, **changes):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.jpg")
    spec = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
        "categories": [{"id": 5, "name": "cat"}],
        "annotations": [{"id": 9, "image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 8], "iscrowd": 0}],
    }
    for key, value in changes.items():
        spec[key] = value
    path = tmp_path / "d.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_coco_bad_inputs_name_the_file_and_field(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(COCOFormatError, match=r"broken\.json is not JSON"):
        load_coco(str(broken), str(tmp_path))
    with pytest.raises(COCOFormatError, match=r"annotations\[0\] \(id 9\): category_id 7 is not in 'categories'"):
        load_coco(
            _coco(tmp_path, annotations=[{"id": 9, "image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4]}]),
            str(tmp_path),
        )
    with pytest.raises(COCOFormatError, match=r"annotations\[0\] \(id 9\): image_id 2 is not in 'images'"):
        load_coco(
            _coco(tmp_path, annotations=[{"id": 9, "image_id": 2, "category_id": 5, "bbox": [1, 2, 3, 4]}]),
            str(tmp_path),
        )
    with pytest.raises(COCOFormatError, match=r"image id 1: file .*b\.jpg does not exist"):
        load_coco(_coco(tmp_path, images=[{"id": 1, "file_name": "b.jpg", "width": 40, "height": 30}]), str(tmp_path))
    flat = [
        {"id": 9, "image_id": 1, "category_id": 5, "bbox": [1, 2, 0, 8]},
        {"id": 10, "image_id": 1, "category_id": 5, "bbox": [1, 2, 5, -1]},
        {"id": 11, "image_id": 1, "category_id": 5, "bbox": [1, 2, 5, 6], "iscrowd": 1},
    ]
    with pytest.warns(UserWarning, match="skipped 2 boxes with non-positive width or height"):
        ds = load_coco(_coco(tmp_path, annotations=flat), str(tmp_path))
    assert ds[0]["objects"]["bbox"] == [[1.0, 2.0, 6.0, 8.0]] and ds[0]["objects"]["difficult"] == [True]


def test_a_model_folder_of_neither_family_is_one_line(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    code = hf_gaf(["predict", "--model", str(tmp_path / "m"), "--images", str(tmp_path / "m"), "--out",
                   str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("hf-gaf predict: error: detector folder")
    assert "neither a saved DETR-family" in err
    assert "\n" not in err


def test_predict_never_writes_over_its_inputs_and_names_apart_images_of_one_stem(frcnn_run, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "x").mkdir(parents=True)
    (folder / "y").mkdir()
    for name in ("a.jpg", "a.png", "x/f.jpg", "y/f.jpg"):
        Image.new("RGB", (64, 48), (90, 120, 150)).save(folder / name)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    code = predict_cli(frcnn_run / "model", [folder], folder)
    assert code == 2 and "is inside --images" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    out = tmp_path / "preds"
    assert predict_cli(frcnn_run / "model", [folder], out, "--threshold", "0.0") == 0
    drawn = sorted(str(p.relative_to(out / "drawn")) for p in (out / "drawn").rglob("*.png"))
    assert drawn == ["a.jpg.png", "a.png.png", "x/f.jpg.png", "y/f.jpg.png"]
    ids = {d["image_id"] for d in json.loads((out / "detections.json").read_text())}
    assert ids <= {"a.jpg", "a.png", "x/f.jpg", "y/f.jpg"}
    code = predict_cli(frcnn_run / "model", [folder], out)
    assert code == 2 and "already holds detections.json" in capsys.readouterr().err


def test_predict_skips_and_lists_an_unreadable_image_unless_strict(frcnn_run, voc, tmp_path, capsys):
    images = os.path.join(voc, "VOC2007", "JPEGImages")
    good = [os.path.join(images, n) for n in sorted(os.listdir(images))[:2]]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "o"
    assert predict_cli(frcnn_run / "model", [*good, bad], out, "--threshold", "0.0") == 0
    assert "skipped 1 images that could not be read or processed" in capsys.readouterr().err
    assert str(bad) in (out / "skipped.txt").read_text()
    assert {d["file_name"] for d in json.loads((out / "detections.json").read_text())} == set(good)
    assert len(list((out / "drawn").rglob("*.png"))) == 2
    code = predict_cli(frcnn_run / "model", [*good, bad], tmp_path / "strict", "--strict")
    assert code == 2 and "broken.jpg is not a readable image" in capsys.readouterr().err
    assert not (tmp_path / "strict" / "detections.json").exists()


def test_evaluate_into_the_training_folder_keeps_its_metrics_json(frcnn_run, voc, capsys):
    record = (frcnn_run / "metrics.json").read_bytes()
    args = ["evaluate", "--model", str(frcnn_run / "model"), "--out", str(frcnn_run), *coco_eval_flags(voc)]
    assert hf_gaf(args) == 0
    assert (frcnn_run / "metrics.json").read_bytes() == record
    assert "eval_voc07_map" in json.loads((frcnn_run / "eval_results.json").read_text())["metrics"]
    assert hf_gaf(args) == 2 and "already holds eval_results.json" in capsys.readouterr().err
    assert hf_gaf([*args, "--overwrite"]) == 0
    assert (
        hf_gaf(
            [
                "evaluate",
                "--model",
                str(frcnn_run / "model"),
                "--out",
                str(frcnn_run),
                "--batch-size",
                "0",
                *coco_eval_flags(voc),
            ]
        )
        == 2
    )


def test_coco_classes_absent_from_the_training_json_are_refused(voc, tmp_path):
    with pytest.raises(SystemExit, match="--classes names pentagon, which .*trainval.json has no category"):
        train_faster_rcnn.main(
            [
                *coco_flags(voc),
                "--classes",
                "circle,cross,square,triangle,pentagon",
                "--output_dir",
                str(tmp_path),
                *STEPS,
                *FRCNN,
            ]
        )
    assert not (tmp_path / "metrics.json").exists()


def test_saved_model_folders_with_a_bad_config_or_weights_are_one_line(frcnn_run, tmp_path, capsys):
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(frcnn_run / "model", broken)
    info = json.loads((broken / "hf_gaf_detection.json").read_text())
    (broken / "hf_gaf_detection.json").write_text(json.dumps({**info, "image_size": "96"}))
    image = os.path.join(voc_images := str(tmp_path / "img.jpg"))
    Image.new("RGB", (32, 32)).save(voc_images)
    assert hf_gaf(["predict", "--model", str(broken), "--images", image, "--out", str(tmp_path / "o")]) == 2
    assert "image_size must be a positive integer" in capsys.readouterr().err
    (broken / "hf_gaf_detection.json").write_text(json.dumps(info))
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short
    assert hf_gaf(["predict", "--model", str(broken), "--images", image, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be read as weights" in err and "\n" not in err
    weights.unlink()
    assert hf_gaf(["predict", "--model", str(broken), "--images", image, "--out", str(tmp_path / "o")]) == 2
    assert "model.safetensors is missing" in capsys.readouterr().err


def test_coco_strings_booleans_and_repeated_files_are_refused(tmp_path):
    one = {"id": 9, "image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 8]}
    with pytest.raises(COCOFormatError, match="iscrowd must be 0 or 1, got '0'"):
        load_coco(_coco(tmp_path, annotations=[{**one, "iscrowd": "0"}]), str(tmp_path))
    with pytest.raises(COCOFormatError, match="iscrowd must be 0 or 1, got True"):
        load_coco(_coco(tmp_path, annotations=[{**one, "iscrowd": True}]), str(tmp_path))
    with pytest.raises(COCOFormatError, match="bbox must be 4 finite numbers"):
        load_coco(_coco(tmp_path, annotations=[{**one, "bbox": [1, "2", 10, 8]}]), str(tmp_path))
    twice = [
        {"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
        {"id": 2, "file_name": "./a.jpg", "width": 40, "height": 30},
    ]
    with pytest.raises(COCOFormatError, match=r"file '\./a\.jpg' is listed twice in 'images' \(ids 1 and 2\)"):
        load_coco(_coco(tmp_path, images=twice, annotations=[one]), str(tmp_path))
    with pytest.raises(COCOFormatError, match="width must be a number"):
        load_coco(_coco(tmp_path, images=[{"id": 1, "file_name": "a.jpg", "width": "40", "height": 30}]), str(tmp_path))


def test_an_exif_rotated_photo_annotated_upright_is_explained(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x30, displayed turned by 90 degrees: 30x40
    Image.new("RGB", (40, 30)).save(tmp_path / "a.jpg", exif=exif)
    spec = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 30, "height": 40}],
        "categories": [{"id": 5, "name": "cat"}],
        "annotations": [],
    }
    (tmp_path / "d.json").write_text(json.dumps(spec))
    with pytest.raises(COCOFormatError, match=r"declares 30x40 but .*a\.jpg is 40x30; its EXIF orientation \(6\)"):
        load_coco(str(tmp_path / "d.json"), str(tmp_path))


def _detection_presets():
    from hf_gaf.harness.presets import PRESETS

    return [(task, name) for task in ("faster_rcnn", "detr") for name in PRESETS[task]]


@pytest.mark.parametrize("task, preset", _detection_presets())
def test_every_detection_preset_checkpoint_loads_with_weights_only(voc, tmp_path, task, preset):
    import torch

    recipe, flags = (train_faster_rcnn, FRCNN) if task == "faster_rcnn" else (train_detr, DETR)
    recipe.main(["--voc_root", voc, "--classes", "shapes", "--output_dir", str(tmp_path), "--preset", preset, *STEPS,
                 *flags, "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", "1",
                 "--save_models", "false", "--max_train_samples", "4"])
    state = torch.load(tmp_path / "checkpoint-1" / "optimizer.pt", weights_only=True)
    assert state["param_groups"]


def test_predict_with_a_coco_json_writes_its_image_ids_for_pycocotools(frcnn_run, voc, tmp_path):
    from pycocotools.coco import COCO

    base = os.path.join(voc, "VOC2007")
    gt = f"{base}/coco/test.json"
    out = tmp_path / "p"
    assert hf_gaf(["predict", "--model", str(frcnn_run / "model"), "--images", f"{base}/JPEGImages", "--images-json",
                   gt, "--out", str(out), "--threshold", "0.0"]) == 0
    detections = json.loads((out / "detections.json").read_text())
    truth = COCO(gt)
    assert detections and {d["image_id"] for d in detections} <= set(truth.getImgIds())
    assert all(d["bbox"][2] > 0 and d["bbox"][3] > 0 for d in detections)
    assert len(truth.loadRes(str(out / "detections.json")).getAnnIds()) == len(detections)


def test_a_detr_folder_of_the_earlier_canvas_format_is_refused_with_the_reason(detr_run, tmp_path):
    """A DETR folder saved before format 2 (boxes relative to a padded canvas its processor did not make) would
    predict shifted boxes on non-square images: loading it is a clear error, not a silent mistake."""
    import shutil

    old = tmp_path / "old-model"
    shutil.copytree(detr_run / "model", old)
    info = json.loads((old / "hf_gaf_detection.json").read_text())
    assert info["format_version"] == 2
    for bad in ("2", True, 3):  # a hand-edited version is named, not taken for another
        (old / "hf_gaf_detection.json").write_text(json.dumps({**info, "format_version": bad}))
        with pytest.raises(ValueError, match="format_version must be 1 or 2"):
            load_detector(str(old))
    del info["format_version"]
    (old / "hf_gaf_detection.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="earlier hf_gaf .format 1.*retrain"):
        load_detector(str(old))


def _renumbered_coco(voc, tmp_path, ids: dict[str, int], drop: str | None = None, add: str | None = None) -> str:
    """test.json of the synthetic set with other category ids (and optionally a class dropped or added)."""
    spec = json.loads(open(os.path.join(voc, "VOC2007", "coco", "test.json")).read())
    old = {c["id"]: c["name"] for c in spec["categories"]}
    spec["categories"] = [{"id": ids[n], "name": n} for n in old.values() if n != drop]
    if add:
        spec["categories"].append({"id": 99, "name": add})
    spec["annotations"] = [{**a, "category_id": ids[old[a["category_id"]]]} for a in spec["annotations"]
                           if old[a["category_id"]] != drop]
    path = tmp_path / "renumbered.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_predict_with_a_coco_json_writes_the_json_category_ids_mapped_by_name(detr_run, voc, tmp_path, capsys):
    """Round 4, item 1: a model trained on VOC (labels 0..3) predicting with --images-json wrote its own label
    numbers as category_id, so pycocotools scored a perfect detector at 0.5 AP. The JSON's ids, by name."""
    ids = {"circle": 40, "cross": 10, "square": 30, "triangle": 20}
    gt = _renumbered_coco(voc, tmp_path, ids)
    images = os.path.join(voc, "VOC2007", "JPEGImages")
    out = tmp_path / "p"
    assert hf_gaf(["predict", "--model", str(detr_run / "model"), "--images", images, "--images-json", gt,
                   "--out", str(out), "--threshold", "0.0"]) == 0
    detections = json.loads((out / "detections.json").read_text())
    assert detections and all(d["category_id"] == ids[d["category"]] for d in detections)
    for drop, add, named in (("triangle", None, "model only: ['triangle']"), (None, "star", "JSON only: ['star']")):
        bad = _renumbered_coco(voc, tmp_path, {**ids, "star": 99}, drop=drop, add=add)
        assert hf_gaf(["predict", "--model", str(detr_run / "model"), "--images", images, "--images-json", bad,
                       "--out", str(tmp_path / "bad"), "--threshold", "0.0"]) == 2
        assert named in capsys.readouterr().err
    assert not (tmp_path / "bad" / "detections.json").exists()


def test_predict_output_names_stay_inside_out_whatever_the_image_ids(frcnn_run, voc, tmp_path):
    """Round 4, item 8: drawn PNGs were named from image ids, so an id that is an absolute path or holds '..'
    wrote outside --out (once over the input image)."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (64, 48), (90, 120, 150)).save(images / name)
    target = tmp_path / "victim"
    spec = {"images": [{"id": "../../victim", "file_name": "a.jpg"}, {"id": str(target), "file_name": "b.jpg"},
                       {"id": "x/../../c", "file_name": "c.jpg"}], "annotations": [], "categories": []}
    (tmp_path / "ids.json").write_text(json.dumps(spec))
    out = tmp_path / "deep" / "out"
    before = sorted(p for p in tmp_path.rglob("*"))
    assert hf_gaf(["predict", "--model", str(frcnn_run / "model"), "--images", str(images), "--images-json",
                   str(tmp_path / "ids.json"), "--out", str(out), "--threshold", "0.0"]) == 0
    created = sorted(set(tmp_path.rglob("*")) - set(before))
    assert created and all(out in p.parents or p == out or p in out.parents for p in created), created
    assert len(list((out / "drawn").rglob("*.png"))) == 3  # one per image, none overwritten by another


def test_predict_skips_what_the_reader_or_the_processor_rejects_and_writes_the_rest(detr_run, voc, tmp_path,
                                                                                     monkeypatch, capsys):
    """Round 4, item 7: a decompression bomb (PIL's DecompressionBombError is no OSError) and a 3000 x 2 image
    (its letterboxed short side is under a pixel) stopped the whole run; each is skipped and listed now."""
    images = os.path.join(voc, "VOC2007", "JPEGImages")
    good = [os.path.join(images, n) for n in sorted(os.listdir(images))[:2]]
    thin, bomb = tmp_path / "thin.png", tmp_path / "bomb.png"
    Image.new("RGB", (3000, 2), (200, 10, 10)).save(thin)
    Image.new("RGB", (300, 300), (10, 200, 10)).save(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 300 x 300 > 2 x 20,000: PIL raises, as for 20000 x 10000
    out = tmp_path / "o"
    assert predict_cli(detr_run / "model", [good[0], bomb, good[1]], out, "--threshold", "0.0",
                       "--batch-size", "3") == 0
    listed = (out / "skipped.txt").read_text()
    assert str(bomb) in listed and "skipped 1 images" in capsys.readouterr().err
    assert {d["file_name"] for d in json.loads((out / "detections.json").read_text())} <= set(good)
    assert len(list((out / "drawn").rglob("*.png"))) == 2
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    out2 = tmp_path / "o2"
    assert predict_cli(detr_run / "model", [good[0], thin], out2, "--threshold", "0.0") == 0
    drawn = {p.name for p in (out2 / "drawn").rglob("*.png")}
    skipped = (out2 / "skipped.txt").read_text() if (out2 / "skipped.txt").exists() else ""
    assert os.path.basename(good[0]) + ".png" in drawn
    assert ("thin.png.png" in drawn) != (str(thin) in skipped)  # predicted, or skipped and listed: never a crash


def test_predict_overwrite_leaves_no_stale_file_and_bad_outs_are_one_line(frcnn_run, voc, tmp_path, capsys):
    images = os.path.join(voc, "VOC2007", "JPEGImages")
    names = sorted(os.listdir(images))[:2]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "o"
    assert predict_cli(frcnn_run / "model", [os.path.join(images, names[0]), bad], out) == 0
    (out / "mine.txt").write_text("kept")
    assert predict_cli(frcnn_run / "model", [os.path.join(images, names[1])], out, "--overwrite") == 0
    assert not (out / "skipped.txt").exists() and (out / "mine.txt").read_text() == "kept"
    assert sorted(p.name for p in (out / "drawn").rglob("*.png")) == [f"{names[1]}.png"]
    capsys.readouterr()
    assert predict_cli(frcnn_run / "model", [images], out / "mine.txt") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    assert hf_gaf(["predict", "--model", str(frcnn_run / "model"), "--images", images, "--images-json", str(empty),
                   "--out", str(tmp_path / "e")]) == 2
    assert "lists no images" in capsys.readouterr().err
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({"images": [{"id": 1, "file_name": names[0]}, {"id": 1, "file_name": names[1]}],
                                 "annotations": [], "categories": []}))
    assert hf_gaf(["predict", "--model", str(frcnn_run / "model"), "--images", images, "--images-json", str(twice),
                   "--out", str(tmp_path / "t")]) == 2
    assert "image id 1 appears twice in 'images'" in capsys.readouterr().err


def test_an_interrupted_prediction_is_refused_without_overwrite_and_nothing_is_deleted(frcnn_run, voc, tmp_path,
                                                                                        capsys):
    """An --out that holds drawings but no detections.json (a prediction killed half-way, or someone's own
    drawn/ folder) is an earlier prediction's output: refused without --overwrite, and nothing there removed."""
    images = os.path.join(voc, "VOC2007", "JPEGImages")
    out = tmp_path / "o"
    (out / "drawn").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(out / "drawn" / "mine.png")
    assert predict_cli(frcnn_run / "model", [os.path.join(images, sorted(os.listdir(images))[0])], out) == 2
    assert "already holds drawn/ from an earlier prediction" in capsys.readouterr().err
    assert (out / "drawn" / "mine.png").is_file()


@pytest.mark.parametrize("recipe, preset", [(train_detr, "scratch-adamw-agc"), (train_detr, "adamw-zclip"),
                                            (train_faster_rcnn, "gc")])
def test_the_treatment_presets_train_both_detectors(voc, tmp_path, recipe, preset):
    """The treatments' presets run through each detection recipe (a DETR's embeddings and 1-dim parameters, the
    frozen parts of a Faster R-CNN) and record what ran."""
    flags = DETR if recipe is train_detr else FRCNN
    recipe.main(["--voc_root", voc, "--classes", "auto", "--output_dir", str(tmp_path), "--preset", preset,
                 "--save_strategy", "no", *STEPS, *flags])
    settings = json.loads((tmp_path / "metrics.json").read_text())["settings"]
    assert settings["grad_treatment"] == preset.split("-")[-1] and settings["gaf"] == "none"
    assert settings["max_grad_norm"] == 0.0


@pytest.mark.parametrize("recipe, preset, parts", [
    (train_detr, "scratch-adamw-gaf", {"backbone", "neck", "decoder", "class_head", "box_head", "queries"}),
    (train_faster_rcnn, "gaf", {"backbone", "neck", "rpn", "decoder", "class_head", "box_head"}),
])
def test_gaf_statistics_are_logged_per_detector_part(voc, tmp_path, recipe, preset, parts):
    """--gaf_log_stats on a detector logs, beside the totals, every part's statistics (gaf/<part>/<key>), finite,
    and the parts' coordinates add up to the whole; the recipe draws them per part."""
    flags = DETR if recipe is train_detr else FRCNN
    recipe.main(["--voc_root", voc, "--classes", "auto", "--output_dir", str(tmp_path), "--preset", preset,
                 "--save_strategy", "no", "--gaf_log_stats", "true", "--logging_strategy", "steps",
                 "--logging_steps", "1", *STEPS, *flags])
    entries = json.loads((tmp_path / "metrics.json").read_text())["gaf_stats"]
    assert len(entries) == 2
    for entry in entries:
        logged = {key.split("/")[1] for key in entry if key.count("/") == 2}
        assert parts <= logged and logged <= parts | {"other"}, logged
        assert all(math.isfinite(v) for k, v in entry.items() if k != "step")
        squares = sum(entry[f"gaf/{part}/norm_before"] ** 2 for part in logged)
        assert squares == pytest.approx(entry["gaf/norm_before"] ** 2, rel=1e-9)
    with Image.open(tmp_path / "gaf_stats_by_part.png") as png:
        assert png.format == "PNG" and png.size[0] > 800

import numpy as np
import pytest
import torch

from hf_gaf.metrics import DetectionEvaluator, voc_eval
from hf_gaf.metrics.coco import coco_eval

B = np.array  # boxes


def gt(image_id, boxes, labels, difficult=None):
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    return {"image_id": image_id, "boxes": boxes, "labels": np.asarray(labels, int),
            "difficult": np.asarray(difficult if difficult is not None else [False] * len(boxes), bool)}


def det(image_id, boxes, scores, labels):
    return {"image_id": image_id, "boxes": np.asarray(boxes, float).reshape(-1, 4), "scores": np.asarray(scores, float),
            "labels": np.asarray(labels, int)}


# Case A, computed by hand (see the docstring of test_hand_case_a)
GTS_A = [gt(0, [[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], [False, True]),
         gt(1, [[0, 0, 10, 10], [50, 50, 60, 60]], [0, 1]),
         gt(2, [], [])]
DETS_A = [det(0, [[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0]),
          det(2, [[0, 0, 5, 5], [70, 70, 80, 80]], [0.6, 0.95], [0, 2]),
          det(1, [[0, 0, 10, 10]], [0.5], [0])]


@pytest.mark.parametrize("compat", ["devkit", "py-faster-rcnn"])
def test_hand_case_a(compat):
    """Class a, score order: TP (img0), duplicate on the matched box FP, on the difficult box ignored,
    FP in the image without objects, TP (img1); npos 2. rec .5 .5 .5 .5 1, prec 1 .5 .5 1/3 .5.
    VOC07 = (6*1 + 5*0.5)/11; VOC12 = .5*1 + .5*.5 = .75. Class b: ground truth, no detection: 0.
    Class c: a detection but no ground truth: left out of the mean."""
    r07 = voc_eval(DETS_A, GTS_A, ["a", "b", "c"], metric="voc07", compat=compat)
    r12 = voc_eval(DETS_A, GTS_A, ["a", "b", "c"], metric="voc12", compat=compat)
    assert r07["ap"]["a"] == pytest.approx(8.5 / 11, abs=1e-12)
    assert r12["ap"]["a"] == pytest.approx(0.75, abs=1e-12)
    assert r07["ap"]["b"] == 0.0 and r12["ap"]["b"] == 0.0
    assert np.isnan(r07["ap"]["c"]) and r07["classes_without_positives"] == ["c"]
    assert r07["map"] == pytest.approx(8.5 / 22, abs=1e-12)
    assert r12["map"] == pytest.approx(0.375, abs=1e-12)
    np.testing.assert_allclose(r07["recall"]["a"], [0.5, 0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(r07["precision"]["a"], [1, 0.5, 0.5, 1 / 3, 0.5])


def test_iou_exactly_half():
    g = [gt(0, [[0, 0, 10, 10]], [0])]
    d = [det(0, [[0, 0, 10, 5]], [0.9], [0])]  # intersection 50, union 100
    assert voc_eval(d, g, ["a"], compat="devkit")["map"] == pytest.approx(1.0)
    assert voc_eval(d, g, ["a"], compat="py-faster-rcnn")["map"] == 0.0


@pytest.mark.parametrize("n_tp, devkit, pfr", [(3, 3 / 11, 3 / 11), (6, 7 / 11, 6 / 11), (7, 8 / 11, 7 / 11)])
def test_recall_exactly_on_an_11_point_threshold(n_tp, devkit, pfr):
    """10 positives, n_tp perfect detections: recall reaches exactly n_tp/10 with precision 1. MATLAB's
    0:0.1:1 (the devkit) gives 0.30000000000000004 but exact 0.6 and 0.7, so the devkit misses 0.3 and counts
    0.6 and 0.7; py-faster-rcnn's np.arange gives n_tp/10 + 4e-17 for all three and misses them."""
    g = [gt(i, [[0, 0, 10, 10]], [0]) for i in range(10)]
    d = [det(i, [[0, 0, 10, 10]], [1.0 - i / 100], [0]) for i in range(n_tp)]
    assert voc_eval(d, g, ["a"], compat="devkit")["map"] == pytest.approx(devkit, abs=1e-12)
    assert voc_eval(d, g, ["a"], compat="py-faster-rcnn")["map"] == pytest.approx(pfr, abs=1e-12)


def test_empty_predictions_and_empty_everything():
    g = [gt(0, [[0, 0, 10, 10]], [0])]
    r = voc_eval([], g, ["a"])
    assert r["map"] == 0.0
    assert voc_eval([det(0, [], [], [])], g, ["a"], metric="voc12")["map"] == 0.0
    assert np.isnan(voc_eval([], [gt(0, [], [])], ["a"])["map"])
    assert coco_eval([], g, ["a"])["coco_map"] == 0.0


def test_stable_sort_on_equal_scores():
    """Equal scores keep input order: the first detection on the box is the TP."""
    g = [gt(0, [[0, 0, 10, 10]], [0]), gt(1, [[0, 0, 10, 10]], [0])]
    d = [det(0, [[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.5], [0, 0]), det(1, [[0, 0, 10, 10]], [0.5], [0])]
    r = voc_eval(d, g, ["a"], metric="voc12")
    np.testing.assert_allclose(r["precision"]["a"], [1, 0.5, 2 / 3])


def test_matching_uses_highest_iou_including_matched_boxes():
    """The second detection overlaps the matched box best (IoU .8) and the free one less (IoU .6):
    VOC matches it to the matched box, so it is a FP (a greedy-free-box matcher would call it TP)."""
    g = [gt(0, [[0, 0, 10, 10], [2, 0, 12, 10]], [0, 0])]
    d = [det(0, [[0, 0, 10, 10], [1, 0, 11, 10]], [0.9, 0.8], [0, 0])]
    r = voc_eval(d, g, ["a"], metric="voc12")
    np.testing.assert_allclose(r["precision"]["a"], [1, 0.5])


def test_labels_out_of_range_raise():
    with pytest.raises(ValueError, match="outside 0..0"):
        voc_eval([det(0, [[0, 0, 1, 1]], [1.0], [3])], [gt(0, [[0, 0, 1, 1]], [0])], ["a"])


@pytest.mark.parametrize("metric", ["voc07", "voc12"])
@pytest.mark.parametrize("compat", ["devkit", "py-faster-rcnn"])
def test_oracle_random_scene(metric, compat):
    rng = np.random.default_rng(0)
    gts, dets = [], []
    for i in range(30):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 200, size=(n, 2))
        wh = rng.uniform(5, 80, size=(n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(0, 5, size=n)
        diff = rng.random(n) < 0.1
        gts.append(gt(i, boxes, labels, diff))
        dets.append(det(i, torch.tensor(boxes), torch.ones(n), torch.tensor(labels)))
    r = voc_eval(dets, gts, list("abcde"), metric=metric, compat=compat)
    assert r["map"] == pytest.approx(1.0, abs=1e-12)
    assert coco_eval(dets, gts, list("abcde"))["coco_map"] == pytest.approx(1.0, abs=1e-9)


def test_streaming_evaluator_equals_one_shot():
    ev = DetectionEvaluator(["a", "b", "c"])
    ev.update(DETS_A[:1], GTS_A[:2])
    ev.update(DETS_A[1:], GTS_A[2:])
    out = ev.compute()
    assert out["voc07_map"] == pytest.approx(voc_eval(DETS_A, GTS_A, ["a", "b", "c"])["map"])
    assert out["voc12_map"] == pytest.approx(0.375)
    assert out["n_images"] == 3
    assert set(out) >= {"voc07_map", "voc12_map", "coco_map", "coco_ap50", "coco_ap75", "ap_a", "ap_b"}


def test_evaluate_module_loads_offline():
    import evaluate

    from hf_gaf.metrics import metric_path

    metric = evaluate.load(metric_path("voc_map"))
    for g, d in zip(GTS_A, [DETS_A[0], DETS_A[2], DETS_A[1]]):
        metric.add(prediction={k: d[k] for k in ("boxes", "scores", "labels")},
                   reference={k: g[k] for k in ("boxes", "labels", "difficult")})
    out = metric.compute(class_names=["a", "b", "c"])
    assert out["voc07_map"] == pytest.approx(8.5 / 22)


def test_non_finite_detections_are_dropped_counted_and_score_nothing():
    """30 NaN boxes per image used to give COCO mAP 0.578; now they are left out of every metric and counted."""
    from hf_gaf.metrics import DetectionEvaluator

    gts = [{"image_id": i, "boxes": np.array([[10.0, 10, 50, 50]]), "labels": np.array([0]), "difficult": np.array([0])}
           for i in range(3)]
    nan_boxes = np.full((30, 4), np.nan)
    dets = [{"image_id": i, "boxes": np.concatenate([nan_boxes, [[10.0, 10, 50, 50]]]),
             "scores": np.concatenate([np.full(30, 0.99), [0.5]]), "labels": np.zeros(31, int)} for i in range(2)]
    dets.append({"image_id": 2, "boxes": np.array([[10.0, 10, 50, 50]]), "scores": np.array([np.nan]),
                 "labels": np.array([0])})
    ev = DetectionEvaluator(["thing"])
    ev.update(dets, gts)
    out = ev.compute()
    assert out["n_dropped_detections"] == 61
    clean = DetectionEvaluator(["thing"])
    clean.update([{"image_id": i, "boxes": np.array([[10.0, 10, 50, 50]]), "scores": np.array([0.5]),
                   "labels": np.array([0])} for i in range(2)], gts)
    expected = clean.compute()
    for key in ("voc07_map", "voc12_map", "coco_map"):
        assert out[key] == pytest.approx(expected[key]), key


@pytest.mark.parametrize("bad, message", [
    (dict(det={"image_id": 0, "boxes": np.zeros((2, 4)), "scores": np.ones(3), "labels": np.zeros(2, int)}),
     r"detections of image 0: 2 boxes, 3 scores, 2 labels"),
    (dict(det={"image_id": 0, "boxes": np.zeros(6), "scores": np.ones(1), "labels": np.zeros(1, int)}),
     r"boxes has 6 values, not rows of 4"),
    (dict(det={"image_id": "000000", "boxes": np.zeros((1, 4)), "scores": np.ones(1), "labels": np.zeros(1, int)}),
     r"image '000000' \(str\) have no ground truth; ground-truth ids look like 0 \(int\)"),
    (dict(gt={"image_id": 0, "boxes": np.array([[0, 0, np.nan, 1.0]]), "labels": np.zeros(1, int)}),
     r"ground truth of image 0 has a non-finite box"),
    (dict(gt={"image_id": 0, "boxes": np.zeros((2, 4)), "labels": np.zeros(1, int)}),
     r"ground truth of image 0: 2 boxes, 1 labels"),
])
@pytest.mark.parametrize("evaluate", ["voc", "coco"])
def test_malformed_inputs_are_clear_errors(bad, message, evaluate):
    from hf_gaf.metrics.coco import coco_eval

    gt = bad.get("gt", {"image_id": 0, "boxes": np.array([[0.0, 0, 5, 5]]), "labels": np.zeros(1, int)})
    det = bad.get("det", {"image_id": 0, "boxes": np.array([[0.0, 0, 5, 5]]), "scores": np.ones(1),
                          "labels": np.zeros(1, int)})
    with pytest.raises(ValueError, match=message):
        (voc_eval if evaluate == "voc" else coco_eval)([det], [gt], ["thing"])


def test_devkit_thresholds_are_matlabs_colon_operator():
    """10 ground-truth boxes, detections in score order TP TP TP FP FP TP: precision 1 1 1 .75 .6 .667 at recall
    .1 .2 .3 .3 .3 .4. Devkit (t = 0.30000000000000004 misses recall 0.3): (1+1+1+2/3+2/3)/11 = 0.3939."""
    g = [gt(i, [[0, 0, 10, 10]], [0]) for i in range(10)]
    boxes = [[0, 0, 10, 10]] * 3 + [[50, 50, 60, 60]] * 2 + [[0, 0, 10, 10]]
    d = [det(i if i < 3 else (9 if i < 5 else 3), [b], [1.0 - i / 100], [0]) for i, b in enumerate(boxes)]
    assert voc_eval(d, g, ["a"], compat="devkit")["map"] == pytest.approx((3 + 4 / 3) / 11, abs=1e-12)

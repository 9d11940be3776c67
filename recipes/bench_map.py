"""mAP speed: hf_gaf's voc_eval against torchmetrics' MeanAveragePrecision on the same input.

5,000 images x 100 detections x 20 classes by default: ground truth of 1-6 boxes per image;
detections are jittered copies of the ground truth plus random boxes, random scores. Both score
AP at IoU 0.5 (torchmetrics with ``iou_thresholds=[0.5]``; its COCO-style 101-point AP differs from
VOC's by design, so only the times are compared).

    python recipes/bench_map.py --images 5000 --out runs/bench_map.json

An existing report at ``--out`` stops it before timing anything, unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from hf_gaf._outputs import claim_outputs
from hf_gaf.metrics import voc_eval


def make_input(n_images: int, n_dets: int, n_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    dets, gts = [], []
    for i in range(n_images):
        n_gt = int(rng.integers(1, 7))
        xy = rng.uniform(0, 400, size=(n_gt, 2))
        gt_boxes = np.concatenate([xy, xy + rng.uniform(10, 100, size=(n_gt, 2))], 1)
        gt_labels = rng.integers(0, n_classes, n_gt)
        n_near = min(n_dets, 3 * n_gt)
        src = rng.integers(0, n_gt, n_near)
        near = gt_boxes[src] + rng.normal(0, 5, size=(n_near, 4))
        xy = rng.uniform(0, 400, size=(n_dets - n_near, 2))
        far = np.concatenate([xy, xy + rng.uniform(10, 100, size=(n_dets - n_near, 2))], 1)
        boxes = np.concatenate([near, far]).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.concatenate([gt_labels[src], rng.integers(0, n_classes, n_dets - n_near)])
        dets.append(
            {
                "image_id": i,
                "boxes": torch.from_numpy(boxes),
                "scores": torch.from_numpy(rng.random(n_dets).astype(np.float32)),
                "labels": torch.from_numpy(labels),
            }
        )
        gts.append(
            {
                "image_id": i,
                "boxes": torch.from_numpy(gt_boxes.astype(np.float32)),
                "labels": torch.from_numpy(gt_labels),
                "difficult": torch.from_numpy(rng.random(n_gt) < 0.05),
            }
        )
    return dets, gts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--out", default="runs/bench_map.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report at --out")
    args = parser.parse_args(argv)
    claim_outputs([args.out], args.overwrite)
    from torchmetrics.detection import MeanAveragePrecision

    dets, gts = make_input(args.images, args.detections, args.classes)
    names = [f"class{i}" for i in range(args.classes)]
    start = time.perf_counter()
    ours = voc_eval(dets, gts, names, metric="voc12")
    t_ours = time.perf_counter() - start
    print(f"hf_gaf voc_eval (voc12): {t_ours:.2f} s, mAP@0.5 = {ours['map']:.4f}", flush=True)

    start = time.perf_counter()
    tm = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=[0.5], class_metrics=False)
    tm.update(
        [{k: d[k] for k in ("boxes", "scores", "labels")} for d in dets],
        [{"boxes": g["boxes"], "labels": g["labels"], "iscrowd": g["difficult"].long()} for g in gts],
    )
    theirs = tm.compute()
    t_theirs = time.perf_counter() - start
    print(f"torchmetrics MeanAveragePrecision: {t_theirs:.2f} s, mAP@0.5 = {float(theirs['map']):.4f}")
    ratio = t_theirs / t_ours
    print(
        f"\n| evaluator | seconds |\n|---|---:|\n| hf_gaf voc_eval | {t_ours:.2f} |\n| torchmetrics | {t_theirs:.2f} |"
    )
    print(
        f"\nratio torchmetrics/voc_eval = {ratio:.1f}x ({args.images} images x {args.detections} detections x "
        f"{args.classes} classes)"
    )
    Path(args.out).write_text(
        json.dumps(
            dict(
                vars(args),
                voc_eval_s=t_ours,
                torchmetrics_s=t_theirs,
                ratio_torchmetrics_over_voc_eval=ratio,
                voc_eval_map=ours["map"],
                torchmetrics_map50=float(theirs["map"]),
            ),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

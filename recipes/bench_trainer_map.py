"""mAP inside a plain ``transformers.Trainer``: peak evaluation memory and time of ``trainer.evaluate()`` with
``hf_gaf.metrics.DetrComputeMetrics`` against the ``compute_metrics`` of transformers' object-detection example
(torchmetrics' ``MeanAveragePrecision`` over every kept output, ``eval_do_concat_batches=False`` as its README
says), same model, same images.

Model: the tiny RT-DETR of the detection recipe (random init, 20 classes as VOC, 30 queries); images: random
pixels with 1-6 random boxes each, ``--image-size`` px, batch 8. Each method runs ``--repeats`` times, alternating,
each time in a fresh process; memory is the peak resident set during ``evaluate()`` above the resident set just
before it (sampled every 5 ms); time is the whole ``evaluate()`` (the forward passes are the same for every method).
Reported: medians and their ratios to the example's.

    python recipes/bench_trainer_map.py --images 400 --out runs/bench_trainer_map.json

An existing report at ``--out`` stops it before any work, unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import torch

from hf_gaf._outputs import claim_outputs

CLASSES = 20
METHODS = {  # name: (compute_metrics kind, TrainingArguments of the evaluation)
    "example (torchmetrics)": ("example", dict(batch_eval_metrics=False, eval_do_concat_batches=False)),
    "DetrComputeMetrics, streaming": ("hf_gaf", dict(batch_eval_metrics=True)),
    "DetrComputeMetrics, at once": ("hf_gaf", dict(batch_eval_metrics=False)),
}


def make_rows(n_images: int, image_size: int, image_processor) -> list[dict]:
    """Random images with 1-6 random boxes each, through the processor as the example's transform does."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n_images):
        n = int(torch.randint(1, 7, (1,), generator=g))
        wh = 8 + torch.rand(n, 2, generator=g) * image_size / 3
        xy = torch.rand(n, 2, generator=g) * (image_size - wh)
        objects = [{"bbox": [*xy[j].tolist(), *wh[j].tolist()], "category_id": int(c), "area": float(wh[j].prod()),
                    "iscrowd": 0} for j, c in enumerate(torch.randint(0, CLASSES, (n,), generator=g))]
        image = torch.randint(0, 255, (image_size, image_size, 3), generator=g, dtype=torch.uint8).numpy()
        batch = image_processor(images=[image], annotations=[{"image_id": i, "annotations": objects}],
                                return_tensors="pt")
        rows.append({"pixel_values": batch["pixel_values"][0], "labels": batch["labels"][0]})
    return rows


def collate_fn(batch: list[dict]) -> dict:
    return {"pixel_values": torch.stack([x["pixel_values"] for x in batch]), "labels": [x["labels"] for x in batch]}


@torch.no_grad()
def example_compute_metrics(evaluation_results, image_processor, threshold: float = 0.0) -> dict:
    """What transformers' run_object_detection.py computes: post-process every kept batch at the labels'
    ``orig_size``, ground truth from cx cy w h to corners in pixels, torchmetrics' MeanAveragePrecision with
    per-class metrics."""
    from torchmetrics.detection.mean_ap import MeanAveragePrecision
    from transformers.image_transforms import center_to_corners_format

    predictions, targets = [], []
    for outputs, labels in zip(evaluation_results.predictions, evaluation_results.label_ids):
        sizes = torch.tensor([list(label["orig_size"]) for label in labels])
        for label in labels:
            h, w = (int(v) for v in label["orig_size"])
            boxes = center_to_corners_format(torch.as_tensor(label["boxes"])) * torch.tensor([w, h, w, h])
            targets.append({"boxes": boxes, "labels": torch.as_tensor(label["class_labels"])})
        view = type("Out", (), {"logits": torch.as_tensor(outputs[1]), "pred_boxes": torch.as_tensor(outputs[2])})
        predictions.extend(image_processor.post_process_object_detection(view, threshold=threshold,
                                                                         target_sizes=sizes))
    metric = MeanAveragePrecision(box_format="xyxy", class_metrics=True)
    metric.update(predictions, targets)
    return {k: float(v) for k, v in metric.compute().items() if v.numel() == 1}


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(method: str, n_images: int, image_size: int) -> dict:
    """One evaluation in this process: peak memory above the start, seconds, and the main numbers."""
    from transformers import Trainer, TrainingArguments

    from hf_gaf.detection.detr import build_detr_model, canvas_processor
    from hf_gaf.metrics import DetrComputeMetrics

    torch.manual_seed(0)
    model, processor = build_detr_model([f"class{i}" for i in range(CLASSES)], model_config="tiny-rt-detr")
    processor = canvas_processor(processor, image_size, "stretch")
    rows = make_rows(n_images, image_size, processor)
    kind, settings = METHODS[method]
    extra = {}
    if kind == "example":
        compute_metrics = partial(example_compute_metrics, image_processor=processor)
    else:
        compute_metrics = DetrComputeMetrics(processor, model.config.id2label)
        extra = {"preprocess_logits_for_metrics": compute_metrics.preprocess}
    scratch = tempfile.TemporaryDirectory()  # the Trainer's output_dir: nothing of it is kept
    args = TrainingArguments(output_dir=scratch.name, per_device_eval_batch_size=8, report_to="none",
                             use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, **settings)
    trainer = Trainer(model=model, args=args, eval_dataset=rows, data_collator=collate_fn,
                      compute_metrics=compute_metrics, **extra)
    start_bytes, peak, done = resident_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    metrics = trainer.evaluate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak[0] = max(peak[0], resident_bytes())
    shown = {k: metrics[k] for k in ("eval_map_50", "eval_coco_ap50", "eval_voc07_map", "eval_n_images")
             if k in metrics}
    return {"method": method, "peak_mib": (peak[0] - start_bytes) / 2**20, "seconds": seconds, **shown}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="the JSON report")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--one", choices=list(METHODS), help=argparse.SUPPRESS)  # a single measurement (internal)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.images, args.image_size)))
        return 0
    claim_outputs([args.out], args.overwrite)
    runs = []
    for repeat in range(args.repeats):
        for method in METHODS:
            done = subprocess.run([sys.executable, __file__, "--out", args.out, "--images", str(args.images),
                                   "--image-size", str(args.image_size), "--one", method],
                                  capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {repeat + 1}/{args.repeats} {method}: {runs[-1]['peak_mib']:.0f} MiB, "
                  f"{runs[-1]['seconds']:.1f} s", flush=True)
    table = {}
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        table[method] = {"peak_mib": statistics.median(r["peak_mib"] for r in mine),
                         "seconds": statistics.median(r["seconds"] for r in mine),
                         **{k: v for k, v in mine[0].items() if k.startswith("eval_")}}
    base = table["example (torchmetrics)"]
    lines = [f"{args.images} images of {args.image_size} px, tiny RT-DETR (30 queries, {CLASSES} classes), batch 8, "
             f"medians of {args.repeats}", "",
             "| compute_metrics | peak memory above start (MiB) | vs example | evaluate() (s) | vs example |",
             "|---|---:|---:|---:|---:|"]
    for method, row in table.items():
        lines.append(f"| {method} | {row['peak_mib']:.0f} | {row['peak_mib'] / base['peak_mib']:.3f} | "
                     f"{row['seconds']:.2f} | {row['seconds'] / base['seconds']:.3f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"images": args.images, "image_size": args.image_size, "runs": runs,
                                          "table": table}, indent=2))
    print("\n".join(lines) + f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

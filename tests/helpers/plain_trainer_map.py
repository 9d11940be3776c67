"""A plain ``transformers.Trainer`` evaluating a DETR-family model with ``hf_gaf.metrics.DetrComputeMetrics``, the
way transformers' ``run_object_detection.py`` does after the README's swap (its ``collate_fn``, labels made by the
image processor from COCO-style annotations), and the reference: the same predictions scored by hf_gaf's
``DetectionEvaluator`` directly, with the ground truth from the annotations in pixels.

Under ``accelerate launch`` (2 CPU processes) process 0 writes ``OUT/metrics.json``: the evaluation of each
setting of :data:`SETTINGS`.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from transformers import RTDetrImageProcessor, Trainer, TrainingArguments

from hf_gaf.metrics import DetectionEvaluator, DetrComputeMetrics

CLASSES = {0: "circle", 1: "square", 2: "cross"}
SETTINGS = {  # name: TrainingArguments of the evaluation
    "streaming": dict(batch_eval_metrics=True),
    "at once": dict(batch_eval_metrics=False),
    "at once, batches kept apart": dict(batch_eval_metrics=False, eval_do_concat_batches=False),
}


def processor() -> RTDetrImageProcessor:
    return RTDetrImageProcessor(size={"height": 64, "width": 64})  # 64 px: a tiny RT-DETR needs its 30 anchors


def annotations(n_images: int) -> list[dict]:
    """COCO-style annotations of images of different sizes, 1 to 3 objects each (one crowd box on image 4)."""
    out = []
    for i in range(n_images):
        g = torch.Generator().manual_seed(100 + i)
        h, w = 40 + 4 * i, 60 - 2 * i
        objects = []
        for j in range(1 + i % 3):
            bw, bh = (8 + 20 * torch.rand(2, generator=g)).tolist()
            x, y = (torch.rand(1, generator=g).item() * (w - bw), torch.rand(1, generator=g).item() * (h - bh))
            objects.append({"bbox": [x, y, bw, bh], "category_id": (i + j) % 3, "area": bw * bh,
                            "iscrowd": int(i == 4 and j == 1)})
        out.append({"image_id": 10 + i, "size": (h, w), "annotations": objects})
    return out


def dataset(n_images: int, image_processor) -> list[dict]:
    """Rows as the example's transform makes them: ``pixel_values`` and the processor's ``labels``."""
    rows = []
    for a in annotations(n_images):
        image = torch.randint(0, 255, (*a["size"], 3), generator=torch.Generator().manual_seed(a["image_id"]),
                              dtype=torch.uint8).numpy()
        batch = image_processor(images=[image], annotations=[{"image_id": a["image_id"],
                                                              "annotations": a["annotations"]}],
                                return_tensors="pt")
        rows.append({"pixel_values": batch["pixel_values"][0], "labels": batch["labels"][0]})
    return rows


def collate_fn(batch: list[dict]) -> dict:
    """transformers' run_object_detection.py's."""
    return {"pixel_values": torch.stack([x["pixel_values"] for x in batch]), "labels": [x["labels"] for x in batch]}


class OracleDetr(torch.nn.Module):
    """Outputs like a DETR's (``loss``, ``logits`` [B, 8, 3], ``pred_boxes`` [B, 8, 4]) made from the labels: the
    objects' boxes jittered, mostly with the right class scored highest, the other queries random; seeded by
    image id, so the predictions do not depend on batching or processes. mAP comes out between 0 and 1."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, pixel_values, labels=None):
        logits, boxes = [], []
        for label in labels:
            g = torch.Generator().manual_seed(int(label["image_id"]))
            n = len(label["class_labels"])
            image_logits = torch.randn(8, 3, generator=g)
            image_boxes = torch.rand(8, 4, generator=g) * 0.5 + 0.1
            image_boxes[:n] = (label["boxes"] + 0.03 * torch.randn(n, 4, generator=g)).clamp(0.01, 0.99)
            right = torch.rand(n, generator=g) < 0.7
            classes = torch.where(right, label["class_labels"], (label["class_labels"] + 1) % 3)
            image_logits[torch.arange(n), classes] += 3
            logits.append(image_logits)
            boxes.append(image_boxes)
        loss = (self.unused * 0).sum() + pixel_values.mean()
        return {"loss": loss, "logits": torch.stack(logits), "pred_boxes": torch.stack(boxes)}


def evaluate(model, rows, out_dir: str, **settings) -> dict:
    """``Trainer.evaluate`` with ``DetrComputeMetrics`` as ``compute_metrics`` and its ``preprocess``."""
    image_processor = processor()
    metrics = DetrComputeMetrics(image_processor, CLASSES)
    args = TrainingArguments(output_dir=out_dir, per_device_eval_batch_size=2, report_to="none", use_cpu=True,
                             disable_tqdm=True, dataloader_num_workers=0, **settings)
    trainer = Trainer(model=model, args=args, eval_dataset=rows, data_collator=collate_fn, compute_metrics=metrics,
                      preprocess_logits_for_metrics=metrics.preprocess)
    return trainer.evaluate()


@torch.no_grad()
def reference(model, rows) -> dict:
    """The same predictions (model outputs post-processed at each image's original size, threshold 0) scored by
    DetectionEvaluator, with the ground truth taken from the annotations (pixels, COCO x y w h → corners)."""
    image_processor, evaluator = processor(), DetectionEvaluator(list(CLASSES.values()))
    model.eval()
    truths = {a["image_id"]: a for a in annotations(len(rows))}
    for start in range(0, len(rows), 2):
        batch = collate_fn(rows[start : start + 2])
        outputs = model(**batch)
        sizes = [tuple(truths[int(label["image_id"])]["size"]) for label in batch["labels"]]
        results = image_processor.post_process_object_detection(
            type("Out", (), {"logits": outputs["logits"], "pred_boxes": outputs["pred_boxes"]}), threshold=0.0,
            target_sizes=sizes)
        dets, gts = [], []
        for label, r in zip(batch["labels"], results):
            a = truths[int(label["image_id"])]
            dets.append({"image_id": a["image_id"], **r})
            gts.append({"image_id": a["image_id"],
                        "boxes": torch.tensor([[x, y, x + w, y + h] for x, y, w, h in
                                               (o["bbox"] for o in a["annotations"])]),
                        "labels": torch.tensor([o["category_id"] for o in a["annotations"]]),
                        "difficult": torch.tensor([bool(o["iscrowd"]) for o in a["annotations"]])})
        evaluator.update(dets, gts)
    return evaluator.compute()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=7)
    cli = parser.parse_args()
    rows = dataset(cli.images, processor())
    results = {name: evaluate(OracleDetr(), rows, cli.out, **settings) for name, settings in SETTINGS.items()}
    if int(os.environ.get("RANK", "0")) == 0:
        with open(os.path.join(cli.out, "metrics.json"), "w") as f:
            json.dump(results, f)

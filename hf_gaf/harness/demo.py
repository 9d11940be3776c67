"""``hf-gaf demo`` / ``make demo``: GAF against its baseline on the built-in data, on the CPU.

Three side-by-side comparisons (one seed each), each through ``hf_gaf.harness.compare``:

1. ``digits``: classification of scikit-learn's bundled digits with timm ``resnet10t``, ``sgd`` vs ``gaf``;
2. ``detr``: synthetic-VOC detection with a tiny RT-DETR, ``adamw`` (DETR's recipe, clipping 0.1) vs
   ``adamw-gaf``;
3. ``faster_rcnn``: synthetic-VOC detection with Faster R-CNN (timm resnet18 + FPN), ``sgd`` vs ``gaf``.

``make demo-detr`` and ``make demo-frcnn`` run one task each with a longer schedule (``--task``,
``--epochs``).

It writes ``OUT/{digits,detr,faster_rcnn}/`` (results.md, results.json, curves.png, per-run
metrics.json and predictions.png), ``OUT/gaf_function.png`` and ``OUT/results.md`` (the summary),
prints the summary table and where the files are. ``fast=True`` is the reduced version the tests run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .. import recipes
from ..detection.synthetic_voc import is_synthetic_voc, make_voc
from .compare import compare
from .paired_stats import ONE_SEED
from .plots import plot_gaf

RECIPES = Path(recipes.__file__).resolve().parent  # recipes/ of the checkout, installed as hf_gaf.recipes


@dataclass(frozen=True)
class DemoTask:
    """One CPU comparison: ``script`` over ``baseline`` and ``gaf`` presets; ``flags`` ({voc} = the
    synthetic set), ``epochs`` in ``make demo``, ``fast`` flags for the reduced demo."""

    script: str
    baseline: str
    gaf: str
    metric: str
    flags: str
    epochs: int
    fast: str


TASKS = {
    "digits": DemoTask("classification/train.py", "sgd", "gaf", "eval_accuracy",
                       "--dataset digits --model resnet10t", 4,
                       "--max_train_samples 256 --max_eval_samples 100"),
    "detr": DemoTask("detection/train_detr.py", "adamw", "adamw-gaf", "eval_voc07_map",
                     "--voc_root {voc} --classes shapes --model_config tiny-rt-detr --image_size 96 "
                     "--per_device_train_batch_size 16 --learning_rate 1e-3 --backbone_lr 1e-3", 16,
                     "--max_eval_samples 8"),
    "faster_rcnn": DemoTask("detection/train_faster_rcnn.py", "sgd", "gaf", "eval_voc07_map",
                            "--voc_root {voc} --classes shapes --backbone timm:resnet18 --image_size 96 "
                            "--anchor_sizes 16 32 64 --timm_out_indices 2 3 --fpn_channels 64 --rpn_pre_nms_top_n 300 "
                            "--rpn_post_nms_top_n 150 --rpn_batch_size_per_image 128 --box_batch_size_per_image 128 "
                            "--per_device_train_batch_size 8", 5, "--max_eval_samples 8"),
}
VOC = {"full": dict(n_train=400, n_test=80, image_size=128), "fast": dict(n_train=32, n_test=16, image_size=96)}


def _summary_row(name: str, result: dict, task: DemoTask) -> dict:
    base, gaf = result["table"][task.baseline], result["table"][task.gaf]
    verdict = gaf["vs_baseline"]["verdict"]
    if verdict == ONE_SEED:
        verdict = "no difference shown (one seed: no CI)"
    return {"task": name, "metric": result["metric"], "baseline": task.baseline, "baseline_value": base["mean"],
            "gaf": task.gaf, "gaf_value": gaf["mean"], "delta": gaf["mean"] - base["mean"], "verdict": verdict,
            "speed": gaf["images_per_s"] / base["images_per_s"]}


def summary_markdown(rows: list[dict], seconds: float, fast: bool) -> str:
    lines = [
        "## hf_gaf demo: GAF against its baseline (CPU, one seed, built-in data)" + (" [FAST]" if fast else ""),
        "",
        "| task | metric | baseline | value | GAF preset | value | Δ (GAF − baseline) | verdict "
        "| images/s GAF/baseline |",
        "|---|---|---|---:|---|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['metric'].removeprefix('eval_')} | {r['baseline']} | {r['baseline_value']:.4f} | "
            f"{r['gaf']} | {r['gaf_value']:.4f} | {r['delta']:+.4f} | {r['verdict']} | {r['speed']:.3f} |"
        )
    lines += [
        "",
        "One seed per preset, so each Δ includes seed-to-seed noise and no difference can be shown "
        "(`make bench-digits` runs 3 seeds and reports confidence intervals and paired tests); "
        "images/s ratios on a shared 2-core machine swing by about ±10 % between runs.",
        f"Total time {seconds / 60:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


def run_demo(
    out: str = "runs/demo", fast: bool = False, tasks: list[str] | None = None, epochs: int | None = None
) -> str:
    """Run the demo (or only ``tasks``, with ``epochs`` instead of each task's own) into ``out``;
    return the summary markdown."""
    start = time.perf_counter()
    names = tasks or list(TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown demo task(s) {unknown}: expected {', '.join(TASKS)}")
    out_path = Path(out)
    out_path.mkdir(parents=True, exist_ok=True)
    plot_gaf(str(out_path / "gaf_function.png"), "atan", 0.1, 20.0)
    voc = None
    if any("{voc}" in TASKS[n].flags for n in names):
        voc_dir = str(out_path / "voc-synth")  # replaced only when an earlier demo wrote it
        voc = make_voc(voc_dir, seed=0, overwrite=is_synthetic_voc(voc_dir), **VOC["fast" if fast else "full"])
        print(f"synthetic VOC: {voc}", flush=True)
    rows = []
    for name in names:
        task = TASKS[name]
        n_epochs = 1 if fast else (epochs or task.epochs)
        recipe_args = task.flags.format(voc=voc).split() + ["--num_train_epochs", str(n_epochs), "--report_to", "none"]
        recipe_args += task.fast.split() if fast else []
        print(f"\n=== {name}: {task.baseline} vs {task.gaf} ({task.metric}), {n_epochs} epochs ===", flush=True)
        result = compare(
            str(RECIPES / task.script),
            [task.baseline, task.gaf],
            [0],
            out_path / name,
            recipe_args,
            metric=task.metric,
            baseline=task.baseline,
            title=f"{name}: {n_epochs} epochs, CPU, bundled/synthetic data, one seed",
        )
        rows.append(_summary_row(name, result, task))
    markdown = summary_markdown(rows, time.perf_counter() - start, fast)
    (out_path / "results.md").write_text(markdown)
    print("\n" + markdown)
    print("files:")
    print(f"  summary            {out_path / 'results.md'}")
    print(f"  GAF function plot  {out_path / 'gaf_function.png'}")
    for name in names:
        print(f"  {name:<18s} {out_path / name / 'results.md'}, {out_path / name / 'curves.png'}")
        for preset in (TASKS[name].baseline, TASKS[name].gaf):
            png = out_path / name / preset / "seed-0" / "predictions.png"
            if png.is_file():
                print(f"  {'':<18s} boxes: {png}")
    if voc:
        print(f"  synthetic VOC      {voc}")
    return markdown

"""``hf-gaf demo`` / ``make demo``: GAF against its baseline and its learning-rate control, on the CPU.

Side-by-side comparisons (one seed each), each through :func:`hf_gaf.harness.compare.compare`:

1. ``digits``: classification of scikit-learn's bundled digits with timm ``resnet10t``, ``sgd`` vs ``gaf``;
2. ``detr``: synthetic-VOC detection with a tiny RT-DETR from random init, ``scratch-adamw`` (DETR's recipe,
   clipping 0.1, at the from-scratch lr 1e-3) vs ``scratch-adamw-gaf``;
3. ``trees``: real aerial tree crowns (:mod:`hf_gaf.detection.trees`: NEON images from the deepforest wheel,
   train on one site, test on two others) with Faster R-CNN (timm resnet18 + FPN), ``sgd`` vs ``gaf``;
4. ``faster_rcnn`` (``--task faster_rcnn``, and in the reduced demo instead of ``trees``): the same detector
   on the synthetic set.

Beside each GAF preset runs its learning-rate control (:mod:`hf_gaf.harness.presets`): ``sgd-gain`` (the
baseline at lr × α·β, GAF's gain alone), or for AdamW ``scratch-adamw-gain``; sized so that the whole demo takes
7–9 minutes on 2 cores. ``make demo-detr`` and ``make demo-frcnn`` run one task each with a longer schedule
(``--task``, ``--epochs``); ``hf-gaf compare`` runs any preset, the piecewise-linear twin ``clip-gain`` among them.

It writes ``OUT/<task>/`` (results.md, results.json, curves.png, per-run metrics.json and predictions.png),
``OUT/gaf_function.png`` and ``OUT/results.md`` (the summary), prints the summary table and where the
files are. An earlier demo's finished runs in ``OUT`` stop it before anything runs (``overwrite`` /
``--overwrite`` runs them again; the synthetic VOC set it made is then made again, its finished tree
crowns are kept, an unfinished cut is made again). ``fast=True`` is the reduced version the tests run
(digits, detr, faster_rcnn; baseline and GAF only, one epoch, no download).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .. import recipes
from ..detection.synthetic_voc import is_synthetic_voc, make_voc
from ..detection.trees import is_trees, make_trees
from .compare import compare
from .paired_stats import ONE_SEED
from .plots import plot_gaf
from .runner import check_finished_runs, run_dir

RECIPES = Path(recipes.__file__).resolve().parent  # recipes/ of the checkout, installed as hf_gaf.recipes


@dataclass(frozen=True)
class DemoTask:
    """One CPU comparison: ``script`` over the ``baseline`` and ``gaf`` presets and the ``controls``; ``flags``
    ({voc} = the synthetic set, {trees} = the tree-crown set), ``epochs`` in ``make demo``, ``fast`` flags for
    the reduced demo."""

    script: str
    baseline: str
    gaf: str
    controls: tuple[str, ...]
    metric: str
    flags: str
    epochs: int
    fast: str


TASKS = {
    "digits": DemoTask("classification/train.py", "sgd", "gaf", ("sgd-gain",), "eval_accuracy",
                       "--dataset digits --model resnet10t", 4,
                       "--max_train_samples 256 --max_eval_samples 100"),
    "detr": DemoTask("detection/train_detr.py", "scratch-adamw", "scratch-adamw-gaf",
                     ("scratch-adamw-gain",), "eval_voc07_map",
                     "--voc_root {voc} --classes shapes --model_config tiny-rt-detr --image_size 96 "
                     "--per_device_train_batch_size 16", 8, "--max_eval_samples 8"),
    "trees": DemoTask("detection/train_faster_rcnn.py", "sgd", "gaf", ("sgd-gain",), "eval_voc07_map",
                      "--voc_root {trees} --classes tree --backbone timm:resnet18 --image_size 256 "
                      "--anchor_sizes 8 16 32 64 128 --timm_out_indices 1 2 3 4 --fpn_channels 64 --max_zoom_out 1.0 "
                      "--rpn_pre_nms_top_n 1000 --rpn_post_nms_top_n 500 --per_device_train_batch_size 4", 3, ""),
    "faster_rcnn": DemoTask("detection/train_faster_rcnn.py", "sgd", "gaf", ("sgd-gain",),
                            "eval_voc07_map",
                            "--voc_root {voc} --classes shapes --backbone timm:resnet18 --image_size 96 "
                            "--anchor_sizes 16 32 64 --timm_out_indices 2 3 --fpn_channels 64 --rpn_pre_nms_top_n 300 "
                            "--rpn_post_nms_top_n 150 --rpn_batch_size_per_image 128 --box_batch_size_per_image 128 "
                            "--per_device_train_batch_size 8", 5, "--max_eval_samples 8"),
}
VOC = {"full": dict(n_train=400, n_test=80, image_size=128), "fast": dict(n_train=32, n_test=16, image_size=96)}
DEFAULT_TASKS = ("digits", "detr", "trees")
FAST_TASKS = ("digits", "detr", "faster_rcnn")  # no download in the reduced demo the tests run


def task_presets(task: DemoTask, fast: bool) -> list[str]:
    """The presets a demo task compares: its baseline and GAF, and (not ``fast``) their controls."""
    return [task.baseline, task.gaf, *(() if fast else task.controls)]


def _summary_row(name: str, result: dict, task: DemoTask) -> dict:
    table = result["table"]
    base, gaf = table[task.baseline], table[task.gaf]
    verdict = gaf["vs_baseline"]["verdict"]
    if verdict == ONE_SEED:
        verdict = "no difference shown (one seed: no CI)"
    return {"task": name, "metric": result["metric"], "baseline": task.baseline, "baseline_value": base["mean"],
            "gaf": task.gaf, "gaf_value": gaf["mean"],
            "delta": None if gaf["vs_baseline"]["mean"] is None else gaf["mean"] - base["mean"], "verdict": verdict,
            "controls": {c: table[c]["mean"] for c in task.controls if c in table},
            "speed": gaf["images_per_s"] / base["images_per_s"]}


def summary_markdown(rows: list[dict], seconds: float, fast: bool) -> str:
    lines = [
        "## hf_gaf demo: GAF against its baseline and its learning-rate control (CPU, one seed)"
        + (" [FAST]" if fast else ""),
        "",
        "| task | metric | baseline | value | GAF preset | value | Δ (GAF − baseline) | verdict | controls "
        "| images/s GAF/baseline |",
        "|---|---|---|---:|---|---:|---:|---|---|---:|",
    ]
    for r in rows:
        controls = ", ".join(f"{c} {v:.4f}" for c, v in r["controls"].items()) or "—"
        delta = "—" if r["delta"] is None else f"{r['delta']:+.4f}"
        lines.append(
            f"| {r['task']} | {r['metric'].removeprefix('eval_')} | {r['baseline']} | {r['baseline_value']:.4f} | "
            f"{r['gaf']} | {r['gaf_value']:.4f} | {delta} | {r['verdict']} | {controls} | "
            f"{r['speed']:.3f} |"
        )
    lines += [
        "",
        "One seed per preset, so each Δ includes seed-to-seed noise and no difference can be shown "
        "(`make bench-digits` and `make bench-trees` run 3 seeds and report confidence intervals and paired "
        "tests). The control separates GAF from a larger learning rate: `sgd-gain` is the baseline at lr × α·β "
        "(GAF's gain on tiny updates); for AdamW, whose normalisation cancels a uniform gain, `adamw-gain` is "
        "AdamW without the norm clipping that adamw-gaf drops. images/s ratios on a shared 2-core machine swing "
        "by about ±10 %.",
        f"Total time {seconds / 60:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


def run_demo(
    out: str = "runs/demo", fast: bool = False, tasks: list[str] | None = None, epochs: int | None = None,
    overwrite: bool = False,
) -> str:
    """Run the demo (or only ``tasks``, with ``epochs`` instead of each task's own) into ``out``;
    return the summary markdown. An earlier demo's finished runs in ``out`` stop it before anything runs,
    unless ``overwrite``."""
    start = time.perf_counter()
    names = tasks or list(FAST_TASKS if fast else DEFAULT_TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown demo task(s) {unknown}: expected {', '.join(TASKS)}")
    presets = {name: task_presets(TASKS[name], fast) for name in names}
    out_path = Path(out)
    for name in names:
        check_finished_runs(out_path / name, {run_dir(out_path / name, p, 0): None for p in presets[name]},
                            reuse=False, overwrite=overwrite,
                            remedy="pass --overwrite (make ... OVERWRITE=1) to run the demo's comparisons again")
    out_path.mkdir(parents=True, exist_ok=True)
    plot_gaf(str(out_path / "gaf_function.png"), "atan", 0.1, 20.0)
    voc = None
    if any("{voc}" in TASKS[n].flags for n in names):
        voc_dir = str(out_path / "voc-synth")  # replaced when an earlier demo wrote it, or with --overwrite
        voc = make_voc(voc_dir, seed=0, overwrite=overwrite or is_synthetic_voc(voc_dir),
                       **VOC["fast" if fast else "full"])
        print(f"synthetic VOC: {voc}", flush=True)
    trees = None
    if any("{trees}" in TASKS[n].flags for n in names):
        trees_dir = str(out_path / "trees")  # cut once and kept for later demos; a cut left unfinished (a killed
        done = is_trees(trees_dir)            # demo) is made again with --overwrite
        trees = os.path.join(trees_dir, "VOCdevkit") if done else make_trees(trees_dir, overwrite=overwrite)
        print(f"tree crowns (NEON, deepforest wheel): {trees}", flush=True)
    rows = []
    for name in names:
        task = TASKS[name]
        n_epochs = epochs or (1 if fast else task.epochs)  # --epochs wins with --fast too
        recipe_args = task.flags.format(voc=voc, trees=trees).split() + ["--num_train_epochs", str(n_epochs),
                                                                          "--report_to", "none"]
        recipe_args += task.fast.split() if fast else []
        print(f"\n=== {name}: {' vs '.join(presets[name])} ({task.metric}), {n_epochs} epochs ===", flush=True)
        result = compare(
            str(RECIPES / task.script),
            presets[name],
            [0],
            out_path / name,
            recipe_args,
            metric=task.metric,
            baseline=task.baseline,
            title=f"{name}: {n_epochs} epochs, CPU, one seed",
            overwrite=overwrite,
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
    if trees:
        print(f"  tree crowns        {trees}")
    return markdown

"""`make bench-spikes`: what a gradient spike does to a detector under each gradient treatment.

A spike is injected where the loss is made (``--grad_spike_steps``, ``--grad_spike_scale`` of
:class:`~hf_gaf.harness.experiment_args.ExperimentArguments`: the gradient of the chosen optimizer steps times
the scale, before norm clipping, GAF or a treatment sees it; the logged loss keeps its value), so each treatment
meets it where it meets a real one. Both detection recipes train on a synthetic VOC set (``hf-gaf make-voc``,
160 training and 40 test images of 96 px, seed 0) from random init: a tiny RT-DETR (its ``scratch-`` presets:
AdamW lr 1e-3, DETR's norm clipping 0.1 or a treatment in its place) and a Faster R-CNN (timm resnet18 + FPN;
torchvision's SGD reference, no clipping, or a treatment), with the demo's flags for the synthetic set
(:data:`hf_gaf.harness.demo.TASKS`). Every preset runs under the same spikes; the
baseline also runs without them (``clean``). Seeds pair the runs (same initial weights, same batches).

Per preset: how many runs **diverged** (a non-finite training loss, or a last epoch's training loss above the
first epoch's), the final VOC07 mAP (mean and 95 % CI, diverged runs included with the mAP they reached), the
paired difference to the baseline under the same spikes and to the clean baseline (CI, p, verdict of
:mod:`hf_gaf.harness.paired_stats`), and the final training loss over the clean baseline's (median over seeds).

    python recipes/bench_spikes.py --out runs/bench-spikes
    python recipes/bench_spikes.py --out /tmp/s --seeds 0 --detectors detr --epochs-detr 2

Writes one run folder per (preset, seed) under ``--out/<detector>/`` (the runner's rules: ``--reuse`` keeps
finished runs of the same flags, ``--overwrite`` runs them again) and ``results.md`` / ``results.json`` in
``--out``. Training losses are logged unfiltered (``--logging_nan_inf_filter false``), so a non-finite step
shows in its epoch's loss.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from hf_gaf._outputs import claim_outputs
from hf_gaf.detection.synthetic_voc import is_synthetic_voc, make_voc
from hf_gaf.harness import runner
from hf_gaf.harness.demo import RECIPES, TASKS
from hf_gaf.harness.paired_stats import mean_ci, paired_cells, paired_difference

CLEAN = "clean"  # the baseline without spikes
DETECTORS = {  # the presets under spikes (the first is the baseline) and the epochs; script and flags: the demo's
    "detr": (["scratch-adamw", "scratch-adamw-gain", "scratch-adamw-gaf", "scratch-adamw-agc", "scratch-adamw-zclip",
              "scratch-adamw-gc"], 6),
    "faster_rcnn": (["sgd", "gaf", "gaf-grad", "clip-norm", "clip-value", "agc", "zclip", "gc"], 3),
}
METRIC = "eval_voc07_map"
OUTPUTS = ("results.md", "results.json")


def jobs_for(presets: list[str], spikes: list[str]) -> list[runner.Job]:
    """The baseline without spikes, then every preset with them."""
    return [runner.Job(CLEAN, ("--preset", presets[0])), *(runner.Job(p, ("--preset", p, *spikes)) for p in presets)]


def diverged(epochs: list[dict]) -> bool:
    """A non-finite training loss in any epoch, or the last epoch's above the first's."""
    losses = [e.get("train_loss", math.nan) for e in epochs]
    return not all(math.isfinite(v) for v in losses) or losses[-1] > losses[0]


def summarize(folder: Path, jobs: list[runner.Job], seeds: list[int]) -> list[dict]:
    """One row per job: divergences, final mAP, paired differences, final loss over the clean baseline's."""
    runs = {(j.name, s): json.loads((runner.run_dir(folder, j.name, s) / "metrics.json").read_text())
            for j in jobs for s in seeds}
    maps = {j.name: [runs[j.name, s]["final"].get(METRIC, math.nan) for s in seeds] for j in jobs}
    last_loss = {j.name: [runs[j.name, s]["epochs"][-1].get("train_loss", math.nan) for s in seeds] for j in jobs}
    baseline = jobs[1].name
    rows = []
    for job in jobs:
        ratios = [a / b for a, b in zip(last_loss[job.name], last_loss[CLEAN]) if math.isfinite(a) and b > 0]
        rows.append({
            "job": job.name, "flags": list(job.flags),
            "diverged": sum(diverged(runs[job.name, s]["epochs"]) for s in seeds), "n": len(seeds),
            "map": mean_ci(maps[job.name]), "per_seed": maps[job.name],
            "vs_baseline": None if job.name in (CLEAN, baseline) else paired_difference(maps[job.name], maps[baseline]),
            "vs_clean": None if job.name == CLEAN else paired_difference(maps[job.name], maps[CLEAN]),
            "loss_vs_clean": statistics.median(ratios) if len(ratios) == len(seeds) else math.nan,
            "wall_time_s": statistics.median(runs[job.name, s]["wall_time_s"] for s in seeds),
        })
    return rows


def markdown(results: dict) -> str:
    """The tables of ``results.json``, one per detector."""
    lines = [f"Spikes: gradient x{results['scale']:g} on optimizer steps {', '.join(map(str, results['steps']))}; "
             f"seeds {', '.join(map(str, results['seeds']))}; {results['minutes']:.1f} min in all.", ""]
    for name, block in results["detectors"].items():
        lines += [f"**{name}** ({block['epochs']} epochs, {block['steps']} optimizer steps; baseline "
                  f"`{block['rows'][1]['job']}`, `{CLEAN}` = the baseline without spikes):", "",
                  "| preset | diverged | VOC07 mAP | Δ vs baseline (spiked) [95 % CI] | p | verdict | Δ vs clean "
                  "[95 % CI] | verdict vs clean | final loss / clean's | s per run |",
                  "|---|---:|---:|---:|---:|---|---:|---|---:|---:|"]
        for row in block["rows"]:
            m = row["map"]
            shown = f"{m['mean']:.4f}" + (f" [{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}]" if m["ci95"] else "")
            d_base, p_base, v_base = paired_cells(row["vs_baseline"], "reference" if row is block["rows"][1] else "—")
            d_clean, _, v_clean = paired_cells(row["vs_clean"], "reference")
            lines.append(f"| {row['job']} | {row['diverged']}/{row['n']} | {shown} | {d_base} | {p_base} | {v_base} "
                         f"| {d_clean} | {v_clean} | {row['loss_vs_clean']:.3g} | {row['wall_time_s']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--detectors", nargs="+", choices=list(DETECTORS), default=list(DETECTORS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--spike-steps", nargs="+", type=int, default=[30, 40, 50],
                        help="optimizer steps (from 1) whose gradient is scaled; after ZClip's 25 warm-up steps")
    parser.add_argument("--spike-scale", type=float, default=100.0)
    parser.add_argument("--epochs-detr", type=int, default=DETECTORS["detr"][1])
    parser.add_argument("--epochs-faster-rcnn", type=int, default=DETECTORS["faster_rcnn"][1])
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--reuse", action="store_true", help="keep finished runs recorded with the same flags")
    again.add_argument("--overwrite", action="store_true", help="run every run again and replace the tables")
    args = parser.parse_args(argv)
    out = Path(args.out)
    claim_outputs([out / name for name in OUTPUTS], args.overwrite or args.reuse)
    voc_dir = out / "voc"
    voc = make_voc(str(voc_dir), n_train=160, n_test=40, image_size=96, seed=0, overwrite=is_synthetic_voc(voc_dir))
    spikes = ["--grad_spike_steps", *map(str, args.spike_steps), "--grad_spike_scale", str(args.spike_scale)]
    epochs = {"detr": args.epochs_detr, "faster_rcnn": args.epochs_faster_rcnn}
    start, blocks = time.perf_counter(), {}
    for name in args.detectors:
        presets, task = DETECTORS[name][0], TASKS[name]  # the demo's synthetic-VOC task of this detector
        recipe_args = [*task.flags.format(voc=voc).split(), "--num_train_epochs", str(epochs[name]), "--report_to",
                       "none", "--save_models", "false", "--draw_predictions", "0", "--logging_nan_inf_filter", "false"]
        jobs = jobs_for(presets, spikes)
        runner.run_jobs(str(RECIPES / task.script), jobs, args.seeds, out / name, recipe_args, reuse=args.reuse,
                        overwrite=args.overwrite, metric=METRIC, desc=name)
        steps = json.loads((runner.run_dir(out / name, CLEAN, args.seeds[0]) / "metrics.json").read_text())
        blocks[name] = {"epochs": epochs[name], "steps": steps["global_step"],
                        "rows": summarize(out / name, jobs, args.seeds)}
    results = {"steps": args.spike_steps, "scale": args.spike_scale, "seeds": args.seeds,
               "minutes": (time.perf_counter() - start) / 60, "detectors": blocks}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (out / "results.md").write_text(table)
    print("\n" + table + f"\nwrote {out / 'results.md'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

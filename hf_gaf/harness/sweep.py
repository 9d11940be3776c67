"""``hf-gaf sweep``: a recipe over a grid of GAF's α × β (and optionally placements), seeds per cell, beside
a baseline preset run on the same seeds.

    hf-gaf sweep --script recipes/classification/train.py --alphas 0.05 0.1 0.3 --betas 5 20 50 \\
        --seeds 0 1 --baseline sgd --out runs/sweep -- --dataset digits --num_train_epochs 3

Every run is its own process (as in ``hf-gaf compare``) writing ``OUT/<cell>/seed-S/metrics.json``; the cell
of α=a, β=b is ``alpha-a_beta-b`` (plus ``_placement-p``), the baseline's is ``baseline-<preset>``. A sweep
that stops (a crash, Ctrl-C, a lost machine) is resumed by running the same command: finished runs are
kept, the others run. ``OUT/sweep.json`` records the command's settings, and a different script, seeds
or recipe flags into the same ``--out`` is refused unless ``--overwrite`` (the kept runs would otherwise
mix two experiments); the metric is not such a setting: a wrong ``--metric`` stops the sweep after its first run, and
``--summarize-only --metric M`` recomputes the results from the finished runs. Writes ``sweep.json`` (per cell:
mean, 95 % CI, per seed, the paired difference to
the baseline with its CI, p-value and verdict), ``results.md`` and ``heatmap.png`` (mean metric per cell,
one panel per placement, the baseline's value in the title and as the colour map's centre).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from . import compare
from .compare import final_metric, run_one
from .paired_stats import mean_ci, paired_cells, paired_difference
from .plots import PRETTY, plot_sweep_heatmap

SETTINGS = "sweep.json"


def cell_name(alpha: float, beta: float, placement: str | None) -> str:
    return f"alpha-{alpha:g}_beta-{beta:g}" + (f"_placement-{placement}" if placement else "")


SETTING_KEYS = ("script", "seeds", "recipe_args", "preset", "baseline")  # what makes two sweeps one experiment


def check_settings(out: Path, settings: dict, overwrite: bool) -> None:
    """Refuse to resume into ``out`` when it holds a sweep of other settings (``--overwrite`` starts afresh).
    The metric is not one of them: it only reads the runs (``--summarize-only --metric M`` recomputes)."""
    compare.check_settings(out, SETTINGS, settings, SETTING_KEYS, overwrite, "pass --overwrite to delete it")
    path = out / SETTINGS
    if overwrite and path.is_file():
        previous = json.loads(path.read_text()).get("settings", {})
        if any(previous.get(k) != settings[k] for k in SETTING_KEYS):
            shutil.rmtree(out)


def run_sweep(
    script: str,
    alphas: list[float],
    betas: list[float],
    seeds: list[int],
    out: Path,
    extra: list[str],
    metric: str = "eval_accuracy",
    preset: str = "gaf",
    placements: list[str] | None = None,
    baseline: str | None = "sgd",
    overwrite: bool = False,
    launcher: list[str] | None = None,
    summarize_only: bool = False,
) -> dict:
    """Run (or resume) the sweep and write its results (module docstring); return the summary.
    ``summarize_only``: run nothing, recompute the results of the finished runs (e.g. with another ``metric``)."""
    settings = {
        "script": os.path.abspath(script),
        "seeds": seeds,
        "recipe_args": extra,
        "metric": metric,
        "preset": preset,
        "baseline": baseline,
        "alphas": alphas,
        "betas": betas,
        "placements": placements,
    }
    if summarize_only and overwrite:
        raise ValueError("--summarize-only reads the finished runs; it cannot be combined with --overwrite")
    check_settings(out, settings, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    (out / SETTINGS).write_text(json.dumps({"settings": settings}, indent=2))
    cells = [(a, b, p) for p in (placements or [None]) for b in betas for a in alphas]
    jobs = [
        (
            cell_name(*c),
            [
                "--preset",
                preset,
                "--gaf_alpha",
                str(c[0]),
                "--gaf_beta",
                str(c[1]),
                *(["--gaf_placement", c[2]] if c[2] else []),
            ],
        )
        for c in cells
    ]
    if baseline:
        jobs.insert(0, (f"baseline-{baseline}", ["--preset", baseline]))
    todo = [] if summarize_only else [(name, flags, seed) for seed in seeds for name, flags in jobs]
    bar = tqdm(todo, desc="sweep", unit="run")
    for name, flags, seed in bar:
        folder = out / name / f"seed-{seed}"
        bar.set_postfix(cell=name, seed=seed)
        if not (folder / "metrics.json").is_file():  # else finished before the sweep was stopped
            seconds = run_one(
                script, folder, [*flags, "--seed", str(seed), *extra], launcher, label=f"{name} seed {seed}"
            )
            tqdm.write(f"  {name:<34s} seed {seed}: {seconds:5.1f} s")
        final_metric(folder, metric)  # a wrong --metric stops after the first run, not after all of them
    return write_sweep(out, settings, cells)


def write_sweep(out: Path, settings: dict, cells: list[tuple]) -> dict:
    """Summarize the finished runs of ``out`` with ``settings["metric"]``: ``sweep.json``, ``results.md``,
    ``heatmap.png``; return the summary."""
    summary = summarize_sweep(out, cells, settings["seeds"], settings["metric"], settings["baseline"])
    summary["settings"] = settings
    (out / SETTINGS).write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(sweep_markdown(summary))
    plot_sweep_heatmap(summary, str(out / "heatmap.png"))
    return summary


def summarize_sweep(out: Path, cells: list[tuple], seeds: list[int], metric: str, baseline: str | None) -> dict:
    greater_is_better = not metric.endswith("loss")
    base = [final_metric(out / f"baseline-{baseline}" / f"seed-{s}", metric) for s in seeds] if baseline else None
    rows = []
    for alpha, beta, placement in cells:
        finals = [final_metric(out / cell_name(alpha, beta, placement) / f"seed-{s}", metric) for s in seeds]
        rows.append(
            {
                "alpha": alpha,
                "beta": beta,
                "placement": placement,
                "finals": finals,
                **mean_ci(finals),
                "vs_baseline": paired_difference(finals, base, greater_is_better) if base else None,
            }
        )
    return {
        "metric": metric,
        "seeds": seeds,
        "greater_is_better": greater_is_better,
        "cells": rows,
        "baseline": None if not baseline else {"preset": baseline, "finals": base, **mean_ci(base)},
    }


def sweep_markdown(summary: dict) -> str:
    name = PRETTY.get(summary["metric"], summary["metric"])
    base = summary["baseline"]
    lines = [f"## GAF sweep: {name} (`{summary['metric']}`), seeds {summary['seeds']}", ""]
    if base:
        lines += [
            f"Baseline `{base['preset']}`: {base['mean']:.4f} ± {base['std']:.4f}. Δ is the paired difference "
            "to it (seeds pair runs) with its 95 % CI; the verdict reads the CI.",
            "",
        ]
    lines += [
        "| α | β | placement | mean ± std | 95 % CI | Δ vs baseline [95 % CI] | p | verdict |",
        "|---:|---:|---|---:|---|---:|---:|---|",
    ]
    for r in summary["cells"]:
        ci = f"[{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]" if r["ci95"] else "—"
        delta, p, verdict = paired_cells(r["vs_baseline"])
        lines.append(
            f"| {r['alpha']:g} | {r['beta']:g} | {r['placement'] or 'preset'} | {r['mean']:.4f} ± "
            f"{r['std']:.4f} | {ci} | {delta} | {p} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of ``hf-gaf sweep`` (arguments after ``--`` go to the recipe)."""
    parser.add_argument("--script", required=True, help="recipe script, e.g. recipes/classification/train.py")
    parser.add_argument("--alphas", nargs="+", type=float, required=True)
    parser.add_argument("--betas", nargs="+", type=float, required=True)
    parser.add_argument(
        "--placements",
        nargs="+",
        choices=["update", "grad"],
        default=None,
        help="also sweep the placement (default: the preset's)",
    )
    parser.add_argument("--preset", default="gaf", help="the GAF preset whose alpha and beta are swept")
    parser.add_argument("--baseline", default="sgd", help="preset run on the same seeds for comparison ('' for none)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--metric",
        default=None,
        help="a key of metrics.json's 'final' (default: eval_voc07_map "
        "for the detection recipes, eval_accuracy otherwise)",
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true", help="delete a sweep of other settings in --out")
    parser.add_argument(
        "--summarize-only",
        action="store_true",
        help="run nothing; recompute results.md, heatmap.png and sweep.json from the finished runs "
        "(e.g. with another --metric)",
    )
    parser.add_argument("--launcher", default=None, help="command that starts each run instead of python")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """What can be wrong before any run starts (a ``ValueError`` naming the flag)."""
    if not os.path.isfile(args.script):
        raise ValueError(f"--script {args.script!r} does not exist")
    bad = [v for v in args.alphas + args.betas if not v > 0]
    if bad:
        raise ValueError(f"--alphas/--betas must be > 0, got {bad}")


def run(args: argparse.Namespace, recipe_args: list[str]) -> int:
    """``hf-gaf sweep`` with parsed ``args``: check them, run or resume the sweep, print the table."""
    check_args(args)
    summary = run_sweep(
        args.script,
        args.alphas,
        args.betas,
        args.seeds,
        Path(args.out),
        recipe_args,
        args.metric or compare.default_metric(args.script),
        args.preset,
        args.placements,
        args.baseline or None,
        args.overwrite,
        args.launcher.split() if args.launcher else None,
        args.summarize_only,
    )
    print("\n" + sweep_markdown(summary))
    print(f"files: {Path(args.out) / 'results.md'}, {Path(args.out) / 'heatmap.png'}, {Path(args.out) / SETTINGS}")
    return 0


DESCRIPTION = ("Run a recipe over a grid of GAF alpha x beta (x placement) and seeds; arguments after `--` go to "
               "the recipe.")


def main(argv: list[str] | None = None) -> int:
    """The same flags as ``hf-gaf sweep``, from Python or a script."""
    return compare.runner_main(argv, "hf-gaf sweep", DESCRIPTION, add_arguments, check_args, run)

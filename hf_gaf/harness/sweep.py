"""``hf-gaf sweep``: a recipe over a grid of GAF's α × β (and optionally placements), seeds per cell, beside
a baseline preset run on the same seeds.

    hf-gaf sweep --script recipes/classification/train.py --alphas 0.05 0.1 0.3 --betas 5 20 50 \\
        --seeds 0 1 --baseline sgd --out runs/sweep -- --dataset digits --num_train_epochs 3

Every run is its own process (as in ``hf-gaf compare``) writing ``OUT/<cell>/seed-S/metrics.json``; the cell
of α=a, β=b is ``alpha-a_beta-b`` (plus ``_placement-p``), the baseline's is ``baseline-<preset>``. Finished
runs, ``--reuse`` (how a stopped sweep resumes), ``--overwrite`` and a wrong ``--metric`` follow the runner's
rules (:mod:`~hf_gaf.harness.runner`, the same as ``hf-gaf compare``); ``--summarize-only --metric M``
recomputes the results from the finished runs. Writes ``sweep.json`` (per cell:
mean, 95 % CI, per seed, the paired difference to
the baseline with its CI, p-value and verdict), ``results.md`` and ``heatmap.png`` (mean metric per cell,
one panel per placement, the baseline's value in the title and as the colour map's centre).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..gaf_sgd import PLACEMENTS
from . import runner
from .paired_stats import mean_ci, paired_cells, paired_difference
from .plots import PRETTY, plot_sweep_heatmap

SUMMARY = "sweep.json"


def cell_name(alpha: float, beta: float, placement: str | None) -> str:
    return f"alpha-{alpha:g}_beta-{beta:g}" + (f"_placement-{placement}" if placement else "")


def run_sweep(
    script: str,
    alphas: list[float],
    betas: list[float],
    seeds: list[int],
    out: Path,
    extra: list[str],
    *,
    metric: str = "eval_accuracy",
    preset: str = "gaf",
    placements: list[str] | None = None,
    baseline: str | None = "sgd",
    reuse: bool = False,
    overwrite: bool = False,
    launcher: list[str] | None = None,
    summarize_only: bool = False,
) -> dict:
    """Run the sweep (``reuse``: resume it) and write its results (module docstring); return the summary.
    ``summarize_only``: run nothing, recompute the results of the finished runs (e.g. with another ``metric``)."""
    settings = {"script": script, "seeds": seeds, "recipe_args": extra, "metric": metric, "preset": preset,
                "baseline": baseline, "alphas": alphas, "betas": betas, "placements": placements}
    cells = [(a, b, p) for p in (placements or [None]) for b in betas for a in alphas]
    jobs = [runner.Job(cell_name(*c), ("--preset", preset, "--gaf_alpha", str(c[0]), "--gaf_beta", str(c[1]),
                                *(("--gaf_placement", c[2]) if c[2] else ()))) for c in cells]
    if baseline:
        jobs.insert(0, runner.Job(f"baseline-{baseline}", ("--preset", baseline)))
    if not summarize_only:
        runner.run_jobs(script, jobs, seeds, out, extra, reuse=reuse, overwrite=overwrite, launcher=launcher,
                        metric=metric, desc="sweep")
    runner.check_one_experiment([runner.run_dir(out, job.name, seed) for job in jobs for seed in seeds])
    return write_sweep(out, settings, cells)


def write_sweep(out: Path, settings: dict, cells: list[tuple]) -> dict:
    """Summarize the finished runs of ``out`` with ``settings["metric"]``: ``sweep.json``, ``results.md``,
    ``heatmap.png``; return the summary."""
    summary = summarize_sweep(out, cells, settings["seeds"], settings["metric"], settings["baseline"])
    summary["settings"] = settings
    (out / SUMMARY).write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(sweep_markdown(summary))
    plot_sweep_heatmap(summary, str(out / "heatmap.png"))
    return summary


def summarize_sweep(out: Path, cells: list[tuple], seeds: list[int], metric: str, baseline: str | None) -> dict:
    greater_is_better = not metric.endswith("loss")
    base = ([runner.final_metric(runner.run_dir(out, f"baseline-{baseline}", s), metric) for s in seeds]
            if baseline else None)
    rows = []
    for alpha, beta, placement in cells:
        finals = [runner.final_metric(runner.run_dir(out, cell_name(alpha, beta, placement), s), metric)
                  for s in seeds]
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
    """The flags of ``hf-gaf sweep``: the runner's (:func:`~hf_gaf.harness.runner.add_runner_arguments`) and
    its own."""
    runner.add_runner_arguments(parser)
    parser.add_argument("--alphas", nargs="+", type=float, required=True, help="GAF alpha values of the grid")
    parser.add_argument("--betas", nargs="+", type=float, required=True, help="GAF beta values of the grid")
    parser.add_argument("--placements", nargs="+", choices=list(PLACEMENTS), default=None,
                        help="also sweep the placement (default: the preset's)")
    parser.add_argument("--preset", default="gaf", help="the GAF preset whose alpha and beta are swept")
    parser.add_argument("--baseline", default="sgd", help="preset run on the same seeds for comparison ('' for none)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """What can be wrong before any run starts (a ``ValueError`` naming the flag)."""
    runner.check_runner_args(args)
    for flag in ("alphas", "betas", "placements"):
        runner.check_distinct(f"--{flag}", getattr(args, flag))
    bad = [v for v in args.alphas + args.betas if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"--alphas/--betas must be finite and > 0, got {bad}")


def run(args: argparse.Namespace, recipe_args: list[str]) -> int:
    """``hf-gaf sweep`` with parsed ``args``: check them, run or resume the sweep, print the table."""
    check_args(args)
    summary = run_sweep(args.script, args.alphas, args.betas, args.seeds, Path(args.out), recipe_args,
                        metric=args.metric or runner.default_metric(args.script), preset=args.preset,
                        placements=args.placements, baseline=args.baseline or None, reuse=args.reuse,
                        overwrite=args.overwrite, launcher=args.launcher.split() if args.launcher else None,
                        summarize_only=args.summarize_only)
    print("\n" + sweep_markdown(summary))
    print(f"files: {Path(args.out) / 'results.md'}, {Path(args.out) / 'heatmap.png'}, {Path(args.out) / SUMMARY}")
    return 0


DESCRIPTION = ("Run a recipe over a grid of GAF alpha x beta (x placement) and seeds; arguments after `--` go to "
               "the recipe.")


def main(argv: list[str] | None = None) -> int:
    """The same flags as ``hf-gaf sweep``, from Python or a script."""
    return runner.runner_main(argv, "hf-gaf sweep", DESCRIPTION, add_arguments, check_args, run)

"""The comparison runner: one recipe over presets x seeds, then one table and one plot.

Each run is a separate process (``python SCRIPT --preset P --seed S --output_dir OUT/P/seed-S ...``)
writing its own ``metrics.json``; its log goes to ``OUT/P/seed-S/log.txt``, its flags to ``run.json``. Finished
runs, ``--reuse``, ``--overwrite`` and a wrong ``--metric`` follow the runner's rules
(:mod:`~hf_gaf.harness.runner`, the same as ``hf-gaf sweep``); ``--summarize-only``
recomputes the tables from finished runs (with another ``--metric`` too). Then:

- ``results.json``: every run's final metric, per-epoch curve, time per epoch and images/s;
- ``results.md``: per preset, mean ± std and 95 % CI over seeds of the main metric; against the baseline
  preset, the paired difference (seeds pair runs: same data order and initial weights), its 95 % CI, the
  paired t-test's p-value and a verdict (``better``, ``worse``, ``no difference shown``; see
  :mod:`~hf_gaf.harness.paired_stats`); the median time per epoch, images/s and images/s relative to the
  baseline (measured in this same comparison);
- ``curves.png``: the metric per epoch (and the training loss), mean over seeds with a min-max band;
- ``gaf_stats.png``: with ``--gaf_log_stats`` runs, the GAF telemetry per preset, averaged over seeds.

Example:
    python recipes/compare.py --script recipes/classification/train.py --presets sgd gaf \\
        --seeds 0 1 2 --metric eval_accuracy --out runs/digits -- --dataset digits --num_train_epochs 5
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from . import runner
from .paired_stats import NOT_LEARNED, mean_ci, paired_cells, paired_difference
from .plots import PRETTY, plot_curves, plot_gaf_stats


def summarize(out: Path, presets: list[str], seeds: list[int], metric: str, baseline: str | None = None,
              also_vs: str | None = None) -> dict:
    """Read the runs' ``metrics.json`` files and aggregate them per preset; ``baseline`` (default: the
    first preset) must be one of ``presets``; ``also_vs``, a second preset every other one is paired with
    too (a control such as ``sgd-gain``)."""
    if baseline is None:
        baseline = presets[0]
    runner.check_references(presets, baseline=baseline, also_vs=also_vs)
    runner.check_one_experiment([runner.run_dir(out, p, s) for p in presets for s in seeds])
    runs, table = {}, {}
    for preset in presets:
        for seed in seeds:
            path = runner.run_dir(out, preset, seed) / "metrics.json"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run the comparison first (or drop --summarize-only)")
            report = json.loads(path.read_text())
            runs[f"{preset}/seed-{seed}"] = {
                "preset": preset,
                "seed": seed,
                "final": runner.final_metric(path.parent, metric),
                "curve": [e.get(metric) for e in report["epochs"]],
                "train_loss": [e.get("train_loss") for e in report["epochs"]],
                "epoch_time_s": [e["epoch_time_s"] for e in report["epochs"]],
                "train_images_per_s": report["train_images_per_s"],
                "gaf_stats": report.get("gaf_stats", []),
                "at_chance": bool(report.get("chance", {}).get("metric") == metric
                                  and report["chance"].get("at_chance")),
            }
    greater_is_better = not metric.endswith("loss")
    for preset in presets:
        mine = [r for r in runs.values() if r["preset"] == preset]
        finals = [r["final"] for r in mine]
        table[preset] = {
            **mean_ci(finals),
            "n": len(mine),
            "finals": finals,
            # the steady state, as images/s: epochs after the first (which holds start-up and compilation)
            "epoch_time_s": statistics.median(t for r in mine for t in (r["epoch_time_s"][1:] or r["epoch_time_s"])),
            "images_per_s": statistics.median(r["train_images_per_s"] for r in mine),
            "n_at_chance": sum(r["at_chance"] for r in mine),
        }
    base = table[baseline]
    for preset, row in table.items():
        row["delta_vs_baseline"] = row["mean"] - base["mean"]
        row["speed_vs_baseline"] = row["images_per_s"] / base["images_per_s"]
        row["vs_baseline"] = None if preset == baseline else paired(row, base, greater_is_better)
        if also_vs is not None:
            row["vs_also"] = None if preset in (baseline, also_vs) else paired(row, table[also_vs], greater_is_better)
    return {
        "metric": metric,
        "baseline": baseline,
        "also_vs": also_vs,
        "greater_is_better": greater_is_better,
        "presets": presets,
        "seeds": seeds,
        "table": table,
        "runs": runs,
    }


def paired(row: dict, reference: dict, greater_is_better: bool) -> dict:
    """The paired comparison of two presets' rows, or :data:`~hf_gaf.harness.paired_stats.NOT_LEARNED` when a run
    of either stayed at chance level: a difference between runs that learned nothing is no result."""
    if row["n_at_chance"] or reference["n_at_chance"]:
        return dict(NOT_LEARNED)
    return paired_difference(row["finals"], reference["finals"], greater_is_better)


def results_markdown(summary: dict, title: str = "") -> str:
    metric, baseline = summary["metric"], summary["baseline"]
    name = PRETTY.get(metric, metric)
    lines = [
        f"## {title}" if title else "## Results",
        "",
        f"{name} (`{metric}`), mean ± std [95 % CI] over seeds {summary['seeds']}. Δ is the paired difference "
        f"to `{baseline}` (runs pair by seed: same data order and initial weights) with its 95 % CI and the "
        f'paired t-test\'s p; the verdict reads the CI ("no difference shown" when it contains 0); "(best)" marks '
        f'the highest mean only when the CIs show it best, "(highest mean)" otherwise. s / epoch and images/s '
        f"are the training steady state (median over epochs after the first, then over seeds), measured in this "
        f"same comparison.",
        "",
    ]
    also = summary.get("also_vs")
    extra_head, extra_rule = (f" Δ vs {also} [95 % CI] | verdict vs {also} |", "---:|---|") if also else ("", "")
    lines += [
        f"| preset | {name} | Δ vs {baseline} [95 % CI] | p | verdict |{extra_head} n | per seed | s / epoch | "
        f"images/s | images/s vs {baseline} |",
        f"|---|---:|---:|---:|---|{extra_rule}---:|---|---:|---:|---:|",
    ]
    complete = [r for r in summary["table"].values()
                if r.get("n_nonfinite", 0) == 0 and not r.get("n_at_chance") and math.isfinite(r["mean"])]
    best = max(complete, key=lambda r: r["mean"]) if complete else None  # never a preset with a diverged seed
    for preset, r in summary["table"].items():
        mark = ""
        if r is best and len(summary["table"]) > 1:
            mark = " **(best)**" if shown_best(preset, summary) else " (highest mean)"
        seeds = ", ".join(f"{v:.4f}" for v in r["finals"])
        ci = f" [{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}]" if r["ci95"] else ""
        skipped = f" ({r['n_nonfinite']} of {r['n']} seeds non-finite, left out)" if r.get("n_nonfinite") else ""
        if r.get("n_at_chance"):
            skipped += f" **(at chance level: {r['n_at_chance']} of {len(r['finals'])} seeds)**"
        delta, p, verdict = paired_cells(r.get("vs_baseline"), none="baseline")
        extra = ""
        if also:
            also_delta, _, also_verdict = paired_cells(r.get("vs_also"), none="reference" if preset == also else "—")
            extra = f" {also_delta} | {also_verdict} |"
        spread = f" ± {r['std']:.4f}" if r["n"] > 1 else ""  # one seed has no spread to show
        lines.append(
            f"| {preset}{mark} | {r['mean']:.4f}{spread}{ci}{skipped} | {delta} | {p} | {verdict} |{extra} "
            f"{r['n']} | {seeds} | {r['epoch_time_s']:.2f} | {r['images_per_s']:.3g} | "
            f"{r['speed_vs_baseline']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def shown_best(preset: str, summary: dict) -> bool:
    """Whether the highest mean is shown to be best by the paired CIs: a preset "better" than the baseline, or
    the baseline when every other preset is "worse"; with one seed (no CI) never."""
    table, baseline = summary["table"], summary["baseline"]
    if preset != baseline:
        return (table[preset].get("vs_baseline") or {}).get("verdict") == "better"
    return all((r.get("vs_baseline") or {}).get("verdict") == "worse" for p, r in table.items() if p != baseline)


def write_results(summary: dict, out: Path, title: str = "") -> str:
    """Write results.json, results.md and curves.png into ``out``; return the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    markdown = results_markdown(summary, title)
    (out / "results.md").write_text(markdown)
    curves = {}
    for r in summary["runs"].values():
        entry = curves.setdefault(r["preset"], {summary["metric"]: [], "train_loss": []})
        entry[summary["metric"]].append([v for v in r["curve"] if v is not None])
        entry["train_loss"].append([v for v in r["train_loss"] if v is not None])
    plot_curves(curves, summary["metric"], str(out / "curves.png"), title=title)
    telemetry = {}
    for r in summary["runs"].values():
        if r["gaf_stats"]:
            telemetry.setdefault(r["preset"], []).append(r["gaf_stats"])
    if telemetry:
        plot_gaf_stats(telemetry, str(out / "gaf_stats.png"), title=title)
    return markdown


def compare(
    script: str,
    presets: list[str],
    seeds: list[int],
    out: Path,
    recipe_args: list[str],
    *,
    metric: str = "eval_accuracy",
    baseline: str | None = None,
    title: str = "",
    reuse: bool = False,
    summarize_only: bool = False,
    launcher: list[str] | None = None,
    also_vs: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Run ``script`` over ``presets`` × ``seeds`` into ``out`` (:func:`~hf_gaf.harness.runner.run_jobs`, with
    ``reuse`` and ``overwrite``; nothing with ``summarize_only``), then write and return the summary
    (:func:`summarize`, :func:`write_results`; ``also_vs``: a second reference preset)."""
    runner.check_references(presets, baseline=baseline, also_vs=also_vs)  # before hours of runs, not after
    if not summarize_only:
        runner.run_jobs(script, [runner.Job(p, ("--preset", p)) for p in presets], seeds, out, recipe_args, reuse=reuse,
                 overwrite=overwrite, launcher=launcher, metric=metric)
    summary = summarize(out, presets, seeds, metric, baseline, also_vs)
    write_results(summary, out, title)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of ``hf-gaf compare``: the runner's (:func:`~hf_gaf.harness.runner.add_runner_arguments`) and
    its own."""
    runner.add_runner_arguments(parser)
    parser.add_argument("--presets", nargs="+", required=True, help="--preset names to compare")
    parser.add_argument("--baseline", default=None, help="preset the others are compared to; by default the first")
    parser.add_argument("--also-vs", default=None, help="a second preset every other one is paired with too, e.g. "
                        "the learning-rate control sgd-gain")
    parser.add_argument("--title", default="", help="title of results.md and the plots")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """What can be wrong before any run starts (a ``ValueError`` naming the flag)."""
    runner.check_runner_args(args)
    runner.check_distinct("--presets", args.presets)
    runner.check_references(args.presets, baseline=args.baseline, also_vs=args.also_vs)


def run(args: argparse.Namespace, recipe_args: list[str]) -> int:
    """``hf-gaf compare`` with parsed ``args``: check them, compare, print the table and where it is."""
    check_args(args)
    out, metric = Path(args.out), args.metric or runner.default_metric(args.script)
    summary = compare(args.script, args.presets, args.seeds, out, recipe_args, metric=metric, baseline=args.baseline,
                      title=args.title, reuse=args.reuse, summarize_only=args.summarize_only,
                      launcher=args.launcher.split() if args.launcher else None, also_vs=args.also_vs,
                      overwrite=args.overwrite)
    print("\n" + results_markdown(summary, args.title))
    learned_nothing = [p for p, r in summary["table"].items() if r["n_at_chance"]]
    if learned_nothing:
        print(f"warning: {', '.join(learned_nothing)} stayed at chance level in some runs: no verdict is drawn for "
              "them (each run's log.txt says what to change)")
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'curves.png'}")
    return 0


DESCRIPTION = "Run a recipe over presets x seeds and compare them. Arguments after `--` go to the recipe."


def main(argv: list[str] | None = None) -> int:
    """``python recipes/compare.py ...``: the same flags as ``hf-gaf compare``."""
    return runner.runner_main(argv, "hf-gaf compare", DESCRIPTION, add_arguments, check_args, run)

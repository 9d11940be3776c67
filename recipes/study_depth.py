"""`make study-depth`: where the paper's claim can show. GAF is argued to help when gradients vanish or are
ill-conditioned; plain networks without normalisation layers, deep enough, are that regime.

Networks (no normalisation, PyTorch's default initialisation): an MLP (64 → 64 × depth → 10) with sigmoid,
tanh or ReLU, and a small CNN (8-channel 3×3 convolutions × depth on the 8×8 image, global average pool, linear
head) with tanh or ReLU (a sigmoid CNN learned nothing at any depth in a pilot, and the CNN runs cost most of
the 15-minute budget), depth 4 to 16; data: scikit-learn's bundled digits (1,797 8×8 images, standardised; a
fixed stratified 80/20 split).
Presets: the classification presets of :mod:`hf_gaf.harness.presets` (sgd, gaf, gaf-grad, clip-norm,
clip-value: SGD momentum 0.9, weight decay 5e-4; GAF atan α=0.1, β=20; and the learning-rate controls sgd-gain,
sgd at lr × α·β, and clip-gain, the piecewise-linear twin of gaf's atan; the gradient treatments agc, zclip and
gc of :mod:`hf_gaf.treatments` on sgd) with ``--learning_rate`` (default
0.05 for sgd, each preset's rate scaled alike: the presets' 0.1 is the paper's for batch-normalised ResNets;
with momentum 0.9 it kills most plain networks here within the first epoch, for every preset), applied by the
same objects the Trainer uses (``GAFSGD``, ``clip_grad_norm_``, ``attach_treatment``; clip-by-value is ``GAFSGD``'s
``clip`` kind on the gradient).
Each (network, preset) runs over ``--seeds`` (a seed fixes the initial weights and the batch order, shared by
all presets, so runs pair by seed). Reported: test accuracy after ``--epochs``, mean and 95 % CI per cell,
and the paired difference to sgd with its CI, p-value and verdict (:mod:`hf_gaf.harness.paired_stats`).

    python recipes/study_depth.py --out runs/study-depth            # the full study (5 seeds)
    python recipes/study_depth.py --out /tmp/s --seeds 0 1 --depths 4 --activations relu --archs mlp --epochs 2

Writes ``results.json``, ``results.md`` and ``accuracy_vs_depth.png`` into ``--out`` (refused before any run
when an earlier study's files are there, unless ``--overwrite``). Runs in worker
processes (one thread each), one per CPU core.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from hf_gaf import GAFSGD
from hf_gaf._outputs import claim_outputs
from hf_gaf.harness.paired_stats import mean_ci, paired_difference
from hf_gaf.harness.presets import PRESETS
from hf_gaf.treatments import attach_treatment, parse_treatment_args

PRESET_NAMES = ("sgd", "gaf", "gaf-grad", "clip-norm", "clip-value", "sgd-gain", "clip-gain", "agc", "zclip", "gc")
GAIN = "sgd-gain"  # the learning-rate control: GAF's gain alpha*beta as a plain learning-rate factor
ACTIVATIONS = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}
GRID = {"mlp": ("sigmoid", "tanh", "relu"), "cnn": ("tanh", "relu")}  # activations per network (docstring)
OUTPUTS = ("results.json", "results.md", "accuracy_vs_depth.png")  # written into --out (--overwrite to replace)


def digits_split():
    """Fixed stratified 80/20 split of scikit-learn's digits, pixels standardised with the training split's
    mean and standard deviation."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=digits.target, random_state=0)
    mean, std = x[train].mean(), x[train].std()
    return (x[train] - mean) / std, y[train], (x[test] - mean) / std, y[test]


def build(arch: str, depth: int, activation: str) -> torch.nn.Module:
    act = ACTIVATIONS[activation]
    if arch == "mlp":
        layers, width = [torch.nn.Flatten()], 64
        for i in range(depth):
            layers += [torch.nn.Linear(64 if i == 0 else width, width), act()]
        return torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
    layers = []
    for i in range(depth):
        layers += [torch.nn.Conv2d(1 if i == 0 else 8, 8, 3, padding=1), act()]
    return torch.nn.Sequential(torch.nn.Unflatten(1, (1, 8)), *layers, torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 10))


def optimizer_for(preset: dict, params, lr: float | None = None) -> tuple[torch.optim.Optimizer, float]:
    """The optimizer a classification preset asks for (``lr`` replacing sgd's learning rate, each preset's scaled
    alike, so sgd-gain keeps its factor alpha*beta; clip-value is the ``clip`` kind on the gradient), and its clip
    norm (0: off)."""
    params = list(params)
    momentum = float(preset["optim_args"].split("=")[1])
    gaf = preset["gaf"] if preset["gaf"] != "none" else None
    scale = lr / PRESETS["classification"]["sgd"]["learning_rate"] if lr else 1.0
    optimizer = GAFSGD(params, lr=preset["learning_rate"] * scale, momentum=momentum,
                       weight_decay=preset["weight_decay"],
                       gaf=gaf, alpha=preset.get("gaf_alpha", 0.1), beta=preset.get("gaf_beta", 20.0),
                       placement=preset.get("gaf_placement", "update"), fused=False)
    name = preset.get("grad_treatment", "none")
    if name != "none":
        attach_treatment(optimizer, name, **parse_treatment_args(name, preset.get("grad_treatment_args")))
    return optimizer, preset["max_grad_norm"]


def run(job: tuple) -> dict:
    """One (network, preset, seed) run: train ``epochs`` epochs, return the final test accuracy."""
    arch, depth, activation, preset_name, seed, epochs, batch, lr = job
    torch.set_num_threads(1)
    x, y, x_test, y_test = digits_split()
    torch.manual_seed(seed)
    model = build(arch, depth, activation)
    optimizer, max_norm = optimizer_for(PRESETS["classification"][preset_name], model.parameters(), lr)
    order = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=order).split(batch):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            if max_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
    with torch.no_grad():
        logits = model(x_test)
    accuracy = float((logits.argmax(1) == y_test).float().mean()) if torch.isfinite(logits).all() else float("nan")
    return {"arch": arch, "depth": depth, "activation": activation, "preset": preset_name, "seed": seed,
            "accuracy": accuracy, "seconds": time.perf_counter() - start}


def summarize(results: list[dict], seeds: list[int]) -> list[dict]:
    cells = {}
    for r in results:
        cells.setdefault((r["arch"], r["activation"], r["depth"]), {}).setdefault(r["preset"], {})[r["seed"]] = r[
            "accuracy"
        ]
    rows = []
    for (arch, activation, depth), by_preset in sorted(cells.items()):
        base = [by_preset["sgd"][s] for s in seeds] if "sgd" in by_preset else None
        gain = [by_preset[GAIN][s] for s in seeds] if GAIN in by_preset else None
        for preset, by_seed in by_preset.items():
            finals = [by_seed[s] for s in seeds]
            rows.append(
                {
                    "arch": arch,
                    "activation": activation,
                    "depth": depth,
                    "preset": preset,
                    "finals": finals,
                    **mean_ci(finals),
                    "vs_sgd": None if preset == "sgd" or base is None else paired_difference(finals, base),
                    "vs_gain": None if preset in ("sgd", GAIN) or gain is None else paired_difference(finals, gain),
                }
            )
    return rows


def markdown(rows: list[dict], seeds: list[int], epochs: int, lr: float, minutes: float) -> str:
    presets = list(dict.fromkeys(r["preset"] for r in rows))
    lines = [
        f"## Depth study: digits, {epochs} epochs, lr {lr}, {len(seeds)} seeds, no normalisation layers",
        "",
        "Test accuracy, mean [95 % CI] over seeds; after each non-sgd preset, the paired verdict against sgd "
        "and then against sgd-gain (sgd at lr × alpha·beta; + better, − worse, = no difference shown; CIs of the "
        "paired difference).",
        "",
        "| network | activation | depth | " + " | ".join(presets) + " |",
        "|---|---|---:|" + "---:|" * len(presets),
    ]
    marks = {"better": " +", "worse": " −", "no difference shown": " ="}
    for key in dict.fromkeys((r["arch"], r["activation"], r["depth"]) for r in rows):
        cells = {r["preset"]: r for r in rows if (r["arch"], r["activation"], r["depth"]) == key}
        text = []
        for p in presets:
            r = cells[p]
            ci = f" [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" if r["ci95"] else ""
            nonfinite = f" ({r['n_nonfinite']} NaN)" if r["n_nonfinite"] else ""
            verdicts = "".join(marks.get((r[k] or {}).get("verdict"), "") for k in ("vs_sgd", "vs_gain"))
            text.append(f"{r['mean']:.3f}{ci}{nonfinite}{verdicts}")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(text) + " |")
    lines.append("")
    for key, name in (("vs_sgd", "sgd"), ("vs_gain", GAIN)):
        by_preset = {}
        for r in rows:
            if r[key]:
                by_preset.setdefault(r["preset"], []).append(r[key]["verdict"])
        counts = {p: {v: vs.count(v) for v in dict.fromkeys(vs)} for p, vs in by_preset.items()}
        lines.append(f"Verdicts against {name} over all cells, per preset: {counts}.")
    lines += ["", f"Total time {minutes:.1f} min."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["arch"], r["activation"]) for r in rows))
    presets = list(dict.fromkeys(r["preset"] for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, (arch, activation) in zip(axes[0], panels):
        for i, preset in enumerate(presets):
            mine = sorted(
                (r for r in rows if (r["arch"], r["activation"], r["preset"]) == (arch, activation, preset)),
                key=lambda r: r["depth"],
            )
            depths = [r["depth"] for r in mine]
            means = np.array([r["mean"] for r in mine])
            errors = np.array([(r["ci95"][1] - r["mean"]) if r["ci95"] else 0.0 for r in mine])
            ax.errorbar(
                np.array(depths) + 0.25 * (i - len(presets) / 2),
                means,
                yerr=errors,
                marker="o",
                ms=3,
                capsize=2,
                label=preset,
                color=f"C{i}",
                lw=1.5 if preset != "sgd" else 2.2,
            )
        ax.set_title(f"{arch}, {activation}", fontsize=10)
        ax.set_xlabel("depth")
        ax.set_xticks(sorted({r["depth"] for r in rows}))
        ax.set_ylim(0, 1.02)  # accuracy; a CI reaching past it is clipped
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (mean, 95 % CI)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--archs", nargs="+", choices=["mlp", "cnn"], default=["mlp", "cnn"])
    parser.add_argument("--depths", nargs="+", type=int, default=[4, 8, 12, 16])
    parser.add_argument(
        "--activations",
        nargs="+",
        choices=list(ACTIVATIONS),
        default=list(ACTIVATIONS),
        help="activations to run, each with the networks GRID pairs it with",
    )
    parser.add_argument("--presets", nargs="+", choices=PRESET_NAMES, default=list(PRESET_NAMES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=0.05, help="replaces the presets' 0.1 (docstring)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier study's results in --out")
    args = parser.parse_args(argv)
    if "sgd" not in args.presets:
        parser.error("--presets must include sgd, the baseline of the paired comparison")
    out = Path(args.out)
    jobs = [
        (arch, depth, act, preset, seed, args.epochs, args.batch, args.learning_rate)
        for arch in args.archs
        for act in args.activations
        if act in GRID[arch]
        for depth in args.depths
        for seed in args.seeds
        for preset in args.presets
    ]
    if not jobs:
        parser.error(f"no network of --archs {args.archs} runs with --activations {args.activations} (GRID: {GRID})")
    claim_outputs([out / name for name in OUTPUTS], args.overwrite)
    start = time.perf_counter()
    from tqdm.auto import tqdm

    # spawn, not fork: a parent that has run autograd (a test session, a notebook) cannot fork safely
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(tqdm(pool.map(run, jobs, chunksize=4), total=len(jobs), desc="study-depth", unit="run"))
    minutes = (time.perf_counter() - start) / 60
    rows = summarize(results, args.seeds)
    results_json, results_md, figure = (out / name for name in OUTPUTS)
    results_json.write_text(json.dumps({"settings": vars(args), "runs": results, "cells": rows}, indent=1))
    text = markdown(rows, args.seeds, args.epochs, args.learning_rate, minutes)
    results_md.write_text(text)
    plot(rows, str(figure))
    print(text)
    print(f"files: {results_md}, {figure}, {results_json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

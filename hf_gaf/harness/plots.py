"""Plots for people: comparison curves, the GAF function, and predicted boxes on images.

All figures are written with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import math
import re

import matplotlib
import matplotlib.colors
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from ..functional import gaf, gaf_bound

PRETTY = {"eval_accuracy": "test top-1 accuracy", "eval_voc07_map": "VOC07 mAP@0.5", "eval_voc12_map": "VOC12 mAP@0.5",
          "eval_coco_map": "COCO mAP@[.5:.95]", "train_loss": "training loss"}


def plot_curves(curves: dict[str, dict[str, list[list[float]]]], metric: str, path: str, title: str = "") -> None:
    """``curves[preset][key]`` = one list of per-epoch values per seed, for ``key`` in (metric,
    "train_loss"). Draws the mean over seeds with a min-max band, one line per preset."""
    keys = [metric] + (["train_loss"] if any("train_loss" in c for c in curves.values()) else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(6.5 * len(keys), 4.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, (preset, by_key) in enumerate(curves.items()):
            runs = [r for r in by_key.get(key, []) if r]
            if not runs:
                continue
            length = min(len(r) for r in runs)
            values = np.array([r[:length] for r in runs], dtype=float)
            epochs = np.arange(1, length + 1)
            colour = f"C{i}"
            ax.plot(epochs, values.mean(0), marker="o", color=colour, lw=2.2 if preset != "sgd" else 2.8,
                    ls="-" if preset != "sgd" else "--", label=f"{preset} (n={len(runs)})")
            if len(runs) > 1:
                ax.fill_between(epochs, values.min(0), values.max(0), color=colour, alpha=0.15)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(PRETTY.get(key, key))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9)
        if key == "train_loss":
            ax.set_yscale("log")
    fig.suptitle(title or f"{PRETTY.get(metric, metric)}: mean over seeds, band = min..max", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


GAF_FRACTIONS = {"amplified": "amplified |f(x)| > |x|", "compressed": "compressed |f(x)| < |x|",
                 "saturated": "saturated |f(x)| > 0.9 bound"}
PART_KEY = re.compile(r"^gaf/([^/]+)/amplified$")  # a per-part statistic (hf_gaf.trainer.stats)


def _mean_by_step(runs: list[list[dict]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps logged by every run, and ``key`` averaged over the runs at each."""
    steps = sorted(set.intersection(*[{e["step"] for e in run if key in e} for run in runs])) if runs else []
    values = [[next(e[key] for e in run if e["step"] == step) for run in runs] for step in steps]
    return np.array(steps), np.array([np.mean(v) for v in values])


def plot_gaf_stats(telemetry: dict[str, list[list[dict]]], path: str, title: str = "", prefixes=None) -> None:
    """GAF telemetry (``metrics.json``'s ``gaf_stats``: one list of logging-step entries per run), one line
    per label averaged over its runs: the fractions of coordinates amplified, compressed and saturated,
    and the gradient norm before and after f, read from the keys ``<prefix>amplified`` ... (``prefixes``: one
    per label; ``gaf/`` by default, the totals). Everything saturated means β is too large (GAF acts as
    sign-SGD); nothing amplified means β is too small (GAF is the identity times α·β)."""
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    for i, (label, runs) in enumerate(telemetry.items()):
        colour, prefix = f"C{i}", (prefixes or {}).get(label, "gaf/")
        for ax, key in zip(axes[:3], GAF_FRACTIONS):
            steps, values = _mean_by_step(runs, prefix + key)
            ax.plot(steps, values, color=colour, marker=".", label=f"{label} (n={len(runs)})")
        for key, style in (("norm_before", "--"), ("norm_after", "-")):
            steps, values = _mean_by_step(runs, prefix + key)
            axes[3].plot(steps, values, color=colour, ls=style, label=f"{label}: {key.removeprefix('norm_')} f")
    for ax, key in zip(axes[:3], GAF_FRACTIONS):
        ax.set_title(GAF_FRACTIONS[key], fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("fraction of coordinates")
    axes[3].set_title("gradient norm before (dashed) / after f", fontsize=10)
    axes[3].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[3].legend(fontsize=7)
    fig.suptitle(title or "GAF telemetry (--gaf_log_stats), mean over runs", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def telemetry_parts(entries: list[dict]) -> list[str]:
    """The model parts whose statistics ``entries`` (one run's ``gaf_stats``) hold, in order of appearance."""
    return list(dict.fromkeys(m.group(1) for e in entries for k in e if (m := PART_KEY.match(k))))


def plot_gaf_stats_by_part(entries: list[dict], path: str, title: str = "") -> None:
    """One run's GAF telemetry split by model part (``gaf/<part>/<key>``), one line per part."""
    parts = telemetry_parts(entries)
    plot_gaf_stats({p: [entries] for p in parts}, path, title or "GAF telemetry per model part",
                   prefixes={p: f"gaf/{p}/" for p in parts})


def plot_sweep_heatmap(summary: dict, path: str) -> None:
    """The mean metric of each α × β cell of a sweep (:mod:`~hf_gaf.harness.sweep`), one panel per placement,
    annotated with the value and the paired verdict against the baseline (+ better, − worse, = no difference
    shown); the colour map is centred on the baseline's mean, which the title states."""
    cells = summary["cells"]
    placements = list(dict.fromkeys(c["placement"] for c in cells))
    alphas = sorted({c["alpha"] for c in cells})
    betas = sorted({c["beta"] for c in cells})
    base = summary.get("baseline")
    values = [c["mean"] for c in cells if math.isfinite(c["mean"])] + ([base["mean"]] if base else [])
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    centre = base["mean"] if base and math.isfinite(base["mean"]) else (low + high) / 2
    span = max(high - centre, centre - low, 1e-12)
    norm = matplotlib.colors.TwoSlopeNorm(vcenter=centre, vmin=centre - span, vmax=centre + span)
    cmap = "RdYlGn" if summary.get("greater_is_better", True) else "RdYlGn_r"
    fig, axes = plt.subplots(1, len(placements), figsize=(1.3 * len(alphas) + 2.6, 1.0 * len(betas) + 1.8) if len(
        placements) == 1 else (len(placements) * (1.3 * len(alphas) + 2.2), 1.0 * len(betas) + 1.8), squeeze=False)
    marks = {"better": "+", "worse": "−", "no difference shown": "="}
    for ax, placement in zip(axes[0], placements):
        grid = np.full((len(betas), len(alphas)), np.nan)
        for c in cells:
            if c["placement"] == placement:
                grid[betas.index(c["beta"]), alphas.index(c["alpha"])] = c["mean"]
                verdict = marks.get((c["vs_baseline"] or {}).get("verdict"), "")
                ax.text(alphas.index(c["alpha"]), betas.index(c["beta"]), f"{c['mean']:.3f}{verdict}", ha="center",
                        va="center", fontsize=8)
        image = ax.imshow(grid, cmap=cmap, norm=norm, origin="lower", aspect="auto")
        ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        ax.set_yticks(range(len(betas)), [f"{b:g}" for b in betas])
        ax.set_xlabel("α")
        ax.set_ylabel("β")
        ax.set_title(f"placement: {placement or 'preset'}", fontsize=10)
    bar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9)
    name = PRETTY.get(summary["metric"], summary["metric"])
    bar.set_label(name)
    if base:
        bar.ax.axhline(base["mean"], color="black", lw=2)
    n = len(summary["seeds"])
    fig.suptitle(
        f"{name}, mean over {n} seed{'s' if n > 1 else ''}"
        + (f"; baseline {base['preset']} = {base['mean']:.3f} (black line); +/−/= paired verdict" if base else ""),
        fontsize=9,
    )
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def plot_gaf(path: str, kind: str = "atan", alpha: float = 0.1, beta: float = 20.0, span: float | None = None) -> None:
    """f(g) and f'(g) for one GAF setting, against the identity and clip-by-value at f's bound."""
    bound = gaf_bound(kind, alpha)
    span = span or (3.0 * bound if math.isfinite(bound) else 3.0 / beta)
    g = torch.linspace(-span, span, 2001, dtype=torch.float64)
    x, y = g.numpy(), gaf(g, kind, alpha, beta).numpy()
    dy = np.gradient(y, x)  # central differences; f is smooth
    clip = bound if math.isfinite(bound) else alpha
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3))
    a1.plot(x, x, color="0.6", ls=":", label="identity (plain SGD)")
    a1.plot(x, np.clip(x, -clip, clip), color="C3", ls="--", label=f"clip-by-value at ±{clip:.3g}")
    a1.plot(x, y, color="C0", lw=2.5, label=f"GAF {kind}: α={alpha:g}, β={beta:g}")
    a1.set_ylim(-1.6 * clip, 1.6 * clip)
    a1.set_xlabel("gradient g")
    a1.set_ylabel("f(g)")
    a1.set_title(f"f(g); bound {bound:.3g}" if math.isfinite(bound) else "f(g); unbounded")
    a2.axhline(1.0, color="0.6", ls=":", label="identity: 1")
    a2.plot(x, np.where(np.abs(x) < clip, 1.0, 0.0), color="C3", ls="--", label="clip-by-value")
    a2.plot(x, dy, color="C0", lw=2.5, label=f"f'(g); f'(0) = α·β = {alpha * beta:g}")
    a2.set_xlabel("gradient g")
    a2.set_ylabel("gain f'(g)")
    a2.set_title("small gradients are enlarged where f' > 1")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_detections(
    images,
    detections,
    class_names,
    path: str,
    ground_truths=None,
    score_threshold: float = 0.3,
    columns: int = 4,
    cell_inches: float = 3.2,
) -> None:
    """Predicted boxes (solid, coloured by class, with class and score) and, when given, ground truth (dashed)
    on a grid of images, ``cell_inches`` per image at 100 dpi (6.4: a single image 640 px on its longer side)."""
    n = len(images)
    columns = min(columns, max(n, 1))
    rows = max(1, math.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(cell_inches * columns, cell_inches * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    font = max(7.0, 2.2 * cell_inches)
    for k, (ax, image, det) in enumerate(zip(axes.flat, images, detections)):
        ax.imshow(image)
        for box in np.asarray(ground_truths[k]["boxes"] if ground_truths else []).reshape(-1, 4):
            ax.add_patch(
                plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec="white", ls="--", lw=1)
            )
        for box, score, label in zip(
            np.asarray(det["boxes"]).reshape(-1, 4), np.asarray(det["scores"]), np.asarray(det["labels"])
        ):
            if score < score_threshold:
                continue
            colour = f"C{int(label) % 10}"
            ax.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec=colour, lw=2))
            ax.text(
                box[0],
                box[1],
                f"{class_names[int(label)]} {score:.2f}",
                color="white",
                fontsize=font,
                bbox=dict(facecolor=colour, alpha=0.8, pad=1, lw=0),
            )
    truth = " and ground truth (dashed)" if ground_truths else ""
    fig.suptitle(f"predictions (solid, score ≥ {score_threshold}){truth}", fontsize=font + 2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

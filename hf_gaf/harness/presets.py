"""Named presets (``--preset NAME``): the paper's comparison as defaults that flags override.

Each preset is a dict of :class:`~hf_gaf.harness.experiment_args.ExperimentArguments` defaults.
:func:`parse_with_preset` reads ``--preset`` first, installs the preset as parser defaults, then
parses the command line, so an explicit flag always wins over the preset. ``--recipe`` is the old
name of ``--preset``: still accepted, with a deprecation warning.

Example:
    >>> PRESETS["classification"]["gaf"]["gaf_beta"]
    20.0
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

_SGD = dict(optim="sgd", optim_args="momentum=0.9", learning_rate=0.1, weight_decay=5e-4, gaf="none",
            max_grad_norm=0.0)
_PAPER_GAF = dict(gaf="atan", gaf_alpha=0.1, gaf_beta=20.0)
_FRCNN_SGD = dict(_SGD, learning_rate=0.02, weight_decay=1e-4, warmup_steps=0.05, lr_milestones=[0.67, 0.89])
_DETR_ADAMW = dict(optim="adamw_torch", optim_args=None, learning_rate=1e-4, backbone_lr=1e-5, weight_decay=1e-4,
                   max_grad_norm=0.1, gaf="none")
_ADAMW = dict(optim="adamw_torch", optim_args=None, learning_rate=1e-3, weight_decay=0.05, gaf="none",
              max_grad_norm=0.0)



def clip_by_value(value: float) -> dict:
    """The paper's clip-by-value baseline, clamp(g, -v, v) on the gradient, as the ``clip`` kind:
    α·clamp(β·g, -1, 1) with α = v, β = 1/v (so it runs where GAF runs, once per optimizer step, with GAF's
    handling of non-finite gradients: ±inf gives NaN, never a plausible ±v)."""
    return dict(gaf="clip", gaf_alpha=value, gaf_beta=1 / value, gaf_placement="grad")


def treated(baseline: dict, name: str, args: str | None = None) -> dict:
    """The baseline with gradient treatment ``name`` (:mod:`hf_gaf.treatments`) where GAF would run, at the
    settings of its paper (timm's for agc) unless ``args``, and no norm clipping before it."""
    return {**baseline, "gaf": "none", "grad_treatment": name, "grad_treatment_args": args, "max_grad_norm": 0.0}


def gain_control(baseline: dict, gaf_preset: dict) -> dict:
    """``sgd-gain``: the baseline with its learning rate multiplied by the GAF preset's gain α·β, which is what
    GAF does to tiny updates (f(u) ≈ α·β·u near 0), without the bound or the curve."""
    gain = gaf_preset["gaf_alpha"] * gaf_preset["gaf_beta"]
    return {**baseline, "learning_rate": round(baseline["learning_rate"] * gain, 12)}


def clip_control(gaf_preset: dict) -> dict:
    """``clip-gain``: the GAF preset with f = α'·clamp(β'·u, -1, 1), α' = α·π/2, β' = 2β/π: the same gain α·β
    near 0 and the same bound α·π/2, joined by straight lines (the piecewise-linear twin of atan, at the same
    placement). Equivalently: the learning rate × α·β and clip-by-value at the bound α·π/2/(α·β)."""
    alpha, beta = gaf_preset["gaf_alpha"], gaf_preset["gaf_beta"]
    return {**gaf_preset, "gaf": "clip", "gaf_alpha": alpha * math.pi / 2, "gaf_beta": 2 * beta / math.pi}


PRESETS: dict[str, dict[str, dict]] = {
    # Liu et al.: SGD momentum 0.9, wd 5e-4; GAF on the update with alpha=0.1, beta=20; clipping baselines
    "classification": {
        "sgd": _SGD,
        "gaf": {**_SGD, **_PAPER_GAF, "gaf_placement": "update"},
        "gaf-grad": {**_SGD, **_PAPER_GAF, "gaf_placement": "grad"},
        "clip-norm": {**_SGD, "max_grad_norm": 1.0},
        "clip-value": {**_SGD, **clip_by_value(0.1)},
        "adamw": _ADAMW,
        "adamw-gaf": {**_ADAMW, **_PAPER_GAF, "gaf_placement": "grad"},
        "sgd-gain": gain_control(_SGD, _PAPER_GAF),
        "clip-gain": clip_control({**_SGD, **_PAPER_GAF, "gaf_placement": "update"}),
        "agc": treated(_SGD, "agc"),
        "zclip": treated(_SGD, "zclip"),
        "gc": treated(_SGD, "gc"),
    },
    # DETR's recipe: AdamW 1e-4 (backbone 1e-5), wd 1e-4, clip 0.1; "adamw-gaf" replaces the clipping by GAF
    "detr": {
        "adamw": _DETR_ADAMW,
        "adamw-gaf": {**_DETR_ADAMW, **_PAPER_GAF, "max_grad_norm": 0.0, "gaf_placement": "grad"},
        "sgd": dict(_SGD, learning_rate=0.01, weight_decay=1e-4, backbone_lr=None),
        "gaf": dict(
            _SGD, learning_rate=0.01, weight_decay=1e-4, backbone_lr=None, **_PAPER_GAF, gaf_placement="update"
        ),
    },
    # torchvision's detection reference: SGD lr 0.02 per 16 images, momentum 0.9, wd 1e-4, warmup, step decay
    "faster_rcnn": {
        "sgd": _FRCNN_SGD,
        "gaf": {**_FRCNN_SGD, **_PAPER_GAF, "gaf_placement": "update"},
        "gaf-grad": {**_FRCNN_SGD, **_PAPER_GAF, "gaf_placement": "grad"},
        "clip-norm": {**_FRCNN_SGD, "max_grad_norm": 1.0},
        "clip-value": {**_FRCNN_SGD, **clip_by_value(0.1)},
        "sgd-gain": gain_control(_FRCNN_SGD, _PAPER_GAF),
        "clip-gain": clip_control({**_FRCNN_SGD, **_PAPER_GAF, "gaf_placement": "update"}),
        "agc": treated(_FRCNN_SGD, "agc"),
        "zclip": treated(_FRCNN_SGD, "zclip"),
        "gc": treated(_FRCNN_SGD, "gc"),
    },
}
# DETR's GAF preset is AdamW with GAF on the gradient. AdamW divides by the gradient's running scale, so a
# uniform gain α·β changes nothing (up to ε): its gain control is AdamW without the norm clipping that
# adamw-gaf drops, and its clip control is the clip twin on the gradient.
_DETR = PRESETS["detr"]
_DETR.update({
    "sgd-gain": gain_control(_DETR["sgd"], _PAPER_GAF),
    "clip-gain": clip_control(_DETR["gaf"]),
    "adamw-gain": {**_DETR["adamw-gaf"], "gaf": "none", "max_grad_norm": 0.0},
    "adamw-clip-gain": clip_control(_DETR["adamw-gaf"]),
    # the treatments replace DETR's norm clipping 0.1, as adamw-gaf does
    "adamw-agc": treated(_DETR["adamw"], "agc"),
    "adamw-zclip": treated(_DETR["adamw"], "zclip"),
    "adamw-gc": treated(_DETR["adamw"], "gc"),
})
# The adamw presets are DETR's own settings: fine-tuning a checkpoint (--model_name_or_path), or a full-size
# model trained for hundreds of epochs. A small DETR from random init (the CPU configs, own data without a
# checkpoint) learns nothing in tens of epochs at lr 1e-4 (VOC07 mAP 0.0006 after 2 epochs on 200 synthetic
# images); its "scratch-" twins train every part at lr 1e-3, the rest unchanged.
_DETR.update({f"scratch-{name}": {**_DETR[name], "learning_rate": 1e-3, "backbone_lr": 1e-3}
              for name in ("adamw", "adamw-gaf", "adamw-gain", "adamw-clip-gain", "adamw-agc", "adamw-zclip",
                           "adamw-gc")})


@dataclass
class PresetArguments:
    """The flags every recipe script shares beside ``TrainingArguments``: ``--preset`` and
    ``--overwrite_output_dir``."""

    preset: str = field(
        default="sgd",
        metadata={
            "help": "Named preset of optimizer settings (hf_gaf.harness.presets); --recipe is its deprecated alias."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Write into an --output_dir that already holds a finished run's metrics.json (refused otherwise)."
        },
    )


def parse_with_preset(parser, task: str, argv: Sequence[str] | None = None, default: str = "sgd"):
    """Parse ``argv`` with ``parser`` (an ``HfArgumentParser`` that includes :class:`PresetArguments`)
    after applying ``--preset``'s defaults (``--recipe NAME`` is rewritten to ``--preset NAME``, with a
    ``FutureWarning``).

    A preset key that no dataclass of the parser has is an error in the preset table itself.
    Returns the parsed dataclasses and the preset name.
    """
    argv = [_renamed(a) for a in (sys.argv[1:] if argv is None else argv)]
    presets = PRESETS[task]
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=default)
    known, _ = pre.parse_known_args(argv)
    if known.preset not in presets:
        parser.error(f"--preset {known.preset!r} is not one of: {', '.join(presets)}")
    dests = {a.dest for a in parser._actions}
    missing = [k for k in presets[known.preset] if k not in dests]
    if missing:
        raise KeyError(f"preset {task}/{known.preset} sets {missing}, which the parser does not have")
    parser.set_defaults(**presets[known.preset], preset=known.preset)
    try:
        parsed = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as err:  # a dataclass's own check (a bad value of a flag): one line, exit 2
        parser.error(str(err).strip().splitlines()[0] if str(err).strip() else repr(err))
    if len(parsed) > len(parser.dataclass_types):  # defaults that no dataclass field took
        raise KeyError(f"defaults {sorted(vars(parsed[-1]))} belong to no argument dataclass")
    return parsed, known.preset


def _renamed(arg: str) -> str:
    """``--recipe`` (and ``--recipe=NAME``) to ``--preset``, warning once per use."""
    if arg == "--recipe" or arg.startswith("--recipe="):
        warnings.warn("--recipe is deprecated and will be removed: use --preset", FutureWarning, stacklevel=3)
        return "--preset" + arg[len("--recipe") :]
    return arg

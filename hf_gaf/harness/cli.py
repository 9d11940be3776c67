"""The ``hf-gaf`` command: ``make-voc``, ``make-trees``, ``plot-gaf``, ``compare``, ``sweep``, ``demo``, ``predict``
and ``evaluate``.

    hf-gaf make-voc runs/voc-synth --n-train 400 --n-test 100
    hf-gaf make-trees runs/trees --tile-size 400
    hf-gaf plot-gaf --kind atan --alpha 0.1 --beta 20 --out gaf.png
    hf-gaf compare --script recipes/classification/train.py --presets sgd gaf --out runs/cmp -- --num_train_epochs 2
    hf-gaf sweep --script recipes/classification/train.py --alphas 0.05 0.1 --betas 5 20 --out runs/sweep \
        -- --num_train_epochs 2
    hf-gaf demo
    hf-gaf predict --model runs/frcnn/model --images photos/ --out preds/ --threshold 0.5
    hf-gaf evaluate --model runs/frcnn/best-model --out eval/ --voc_root runs/voc-synth --classes shapes

Bad arguments are reported in one line (no traceback) with exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from .runner import HelpFormatter, split_recipe_args


class CommandError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _make_voc(args) -> None:
    from ..detection.synthetic_voc import SHAPE_CLASSES, make_voc

    classes = args.classes.split(",") if args.classes else SHAPE_CLASSES
    if args.n_train < 1 or args.n_test < 1:
        raise CommandError(
            f"--n-train {args.n_train} --n-test {args.n_test}: each split needs at least 1 image (an "
            "empty split can be neither trained on nor evaluated)"
        )
    if len(set(classes)) != len(classes):
        raise CommandError(f"--classes {args.classes}: a class is named twice")
    root = make_voc(
        args.out,
        n_train=args.n_train,
        n_test=args.n_test,
        image_size=args.image_size,
        seed=args.seed,
        classes=classes,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.n_train} trainval + {args.n_test} test images to {root}")
    if args.format == "coco":
        from ..detection.coco_json import voc_to_coco

        for path in voc_to_coco(root, classes=classes):
            print(f"wrote {path}")


def _make_trees(args) -> None:
    from ..detection.trees import make_trees

    root = make_trees(args.out, wheel=args.wheel, tile_size=args.tile_size, overwrite=args.overwrite)
    print(f"wrote the tree-crown set (train: YELL; test: OSBS, SOAP; {args.tile_size} px tiles) to {root}")


def _plot_gaf(args) -> None:
    from ..functional import validate_gaf
    from .plots import plot_gaf

    validate_gaf(args.kind, args.alpha, args.beta)
    suffix = os.path.splitext(args.out)[1].lower().lstrip(".")
    if suffix not in ("png", "pdf", "svg", "jpg", "jpeg"):
        raise CommandError(f"--out {args.out}: the file name must end in .png, .pdf, .svg or .jpg")
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise CommandError(f"--out {args.out}: the folder {folder} does not exist or is not writable")
    plot_gaf(args.out, args.kind, args.alpha, args.beta)
    print(f"wrote {args.out}")


def _demo(args) -> None:
    from .demo import run_demo

    if args.epochs is not None and args.epochs < 1:
        raise CommandError(f"--epochs {args.epochs}: need at least 1")
    run_demo(args.out, fast=args.fast, tasks=args.task, epochs=args.epochs, overwrite=args.overwrite)


def _predict(args) -> None:
    from .inference import predict

    predict(args.model, args.images, args.out, threshold=args.threshold, batch_size=args.batch_size,
            strict=args.strict, overwrite=args.overwrite, images_json=args.images_json)


def _evaluate(args) -> None:
    from ..detection.data import EVAL_FLAGS, DetectionDataArguments
    from ..metrics.detection import EvaluationArguments
    from .inference import evaluate_saved

    data = DetectionDataArguments(**{name: getattr(args, name) for name in EVAL_FLAGS})
    evaluation = EvaluationArguments(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvaluationArguments)})
    evaluate_saved(args.model, data, evaluation, args.out, batch_size=args.batch_size, overwrite=args.overwrite)


EVALUATE_HELP = {  # the recipes' help names their training flags
    "data_format": "voc (a VOCdevkit tree: --voc_root) or coco (COCO JSON: --eval_json, --eval_images).",
    "eval_years": "VOC years to evaluate on: 2007, or several joined by + (default: 2007).",
    "skip_unknown_classes": "Skip (and count) objects whose class the model does not have; without it such an "
                            "object is an error naming its file.",
}


def _args_make_voc(p: argparse.ArgumentParser) -> None:
    from ..detection.data import DATA_FORMATS

    p.add_argument("out", help="output folder (VOCdevkit/VOC2007 is created inside)")
    p.add_argument("--n-train", type=int, default=400, help="trainval images")
    p.add_argument("--n-test", type=int, default=100, help="test images")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", default=None, help="comma-separated subset of circle,square,triangle,cross")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty folder, replacing its VOCdevkit/VOC2007 (refused without it)")
    p.add_argument("--format", choices=list(DATA_FORMATS), default="voc",
                   help="coco: also write VOC2007/coco/{trainval,test}.json (COCO JSON over the same JPEGs)")
    p.set_defaults(func=_make_voc)


def _args_make_trees(p: argparse.ArgumentParser) -> None:
    p.description = ("Real tree-crown boxes on NEON aerial images, read from the pinned deepforest wheel (fetched "
                     "with pip download, SHA-256 checked, never installed), tiled, split by site (train YELL, test "
                     "OSBS and SOAP). See hf_gaf.detection.trees.")
    p.add_argument("out", help="output folder (VOCdevkit/VOC2007 is created inside)")
    p.add_argument("--wheel", default=None, help="a local deepforest-2.1.0-py3-none-any.whl (default: downloaded "
                   "once into ~/.cache/hf_gaf)")
    p.add_argument("--tile-size", type=int, default=400, help="side of the square tiles the large images are cut into")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty folder, replacing its VOCdevkit/VOC2007 (refused without it)")
    p.set_defaults(func=_make_trees)


def _args_plot_gaf(p: argparse.ArgumentParser) -> None:
    from ..kinds import GAF_KINDS

    p.add_argument("--kind", default="atan", choices=GAF_KINDS)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--beta", type=float, default=20.0)
    p.add_argument("--out", default="gaf.png")
    p.set_defaults(func=_plot_gaf)


def _args_compare(p: argparse.ArgumentParser) -> None:
    from . import compare

    p.description = compare.DESCRIPTION
    compare.add_arguments(p).set_defaults(func=compare.run, takes_recipe_args=True)


def _args_sweep(p: argparse.ArgumentParser) -> None:
    from . import sweep

    p.description = sweep.DESCRIPTION
    sweep.add_arguments(p).set_defaults(func=sweep.run, takes_recipe_args=True)


def _args_demo(p: argparse.ArgumentParser) -> None:
    from .demo import TASKS

    p.add_argument("--out", default="runs/demo")
    p.add_argument("--fast", action="store_true", help="a reduced demo (about 2 minutes), as the tests run it")
    p.add_argument("--task", nargs="+", choices=list(TASKS), default=None,
                   help="run these comparisons (default: digits detr trees; with --fast: digits detr faster_rcnn)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of every task run, with --fast too; by default each task's own")
    p.add_argument("--overwrite", action="store_true", help="run again the comparisons an earlier demo in --out "
                   "finished (without it, they stop the demo before anything runs)")
    p.set_defaults(func=_demo)


def _args_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="a folder saved by a detection recipe (OUTPUT_DIR/model or best-model)")
    p.add_argument("--images", required=True, nargs="+", help="image files and/or folders of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threshold", type=float, default=0.5, help="keep detections with at least this score")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable image (default: skip it and list it in OUT/skipped.txt)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier prediction in --out")
    p.add_argument("--images-json", default=None, help="a COCO JSON of the images under the --images folder: "
                   "predict on its images and write its image ids (pycocotools loadRes reads the result)")
    p.set_defaults(func=_predict)


def _args_evaluate(p: argparse.ArgumentParser) -> None:
    """The evaluation split's flags of the recipes' data dataclass (the model fixes classes and canvas) and the
    evaluator's flags, from their dataclass fields."""
    from transformers.hf_argparser import string_to_bool

    from ..detection.data import EVAL_FLAGS, DetectionDataArguments
    from ..metrics.detection import EvaluationArguments

    data_fields = {f.name: f for f in dataclasses.fields(DetectionDataArguments)}
    for f in [data_fields[name] for name in EVAL_FLAGS] + list(dataclasses.fields(EvaluationArguments)):
        kind = {"bool": dict(type=string_to_bool, nargs="?", const=True), "int | None": dict(type=int)}.get(
            str(f.type), dict(type=str))
        p.add_argument(f"--{f.name}", default=f.default, help=EVALUATE_HELP.get(f.name, f.metadata.get("help")),
                       choices=f.metadata.get("choices"), **kind)
    p.add_argument("--model", required=True, help="a folder saved by a detection recipe")
    p.add_argument("--out", required=True,
                   help="output folder for eval_results.json (may be the training run's: its metrics.json is left "
                   "alone)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier eval_results.json in --out")
    p.set_defaults(func=_evaluate)


COMMANDS = {  # name: (its line in ``hf-gaf --help``, what adds its flags: imported only for the command run)
    "make-voc": ("write a synthetic VOC-format data set of shapes", _args_make_voc),
    "make-trees": ("write real aerial tree crowns (NEON, from the deepforest wheel) as VOC", _args_make_trees),
    "plot-gaf": ("plot f and f' of a GAF against identity and clip-by-value", _args_plot_gaf),
    "compare": ("run a recipe over presets x seeds; table and curves", _args_compare),
    "sweep": ("run a recipe over a grid of GAF alpha x beta; heatmap, table, JSON", _args_sweep),
    "demo": ("the CPU demo: digits, synthetic VOC and real tree crowns; GAF, baseline and the learning-rate "
             "controls; plots, summary", _args_demo),
    "predict": ("run a saved detector on images: detections.json and drawn PNGs", _args_predict),
    "evaluate": ("score a saved detector on a labelled split (VOC or COCO flags as the recipes take them, e.g. "
                 "--voc_root DIR --eval_split test): eval_results.json", _args_evaluate),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Every command in one argparse tree; only the command named in ``argv`` gets its flags (and imports what
    they need), so ``hf-gaf --help`` starts at once. ``argv=None``: every command's flags."""
    named = None if argv is None else next((a for a in argv if a in COMMANDS), None)
    parser = argparse.ArgumentParser(prog="hf-gaf", description="Gradient Activation Functions for the HF stack.",
                                     formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_flags) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, formatter_class=HelpFormatter)
        if argv is None or name == named:
            add_flags(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv, recipe_args = split_recipe_args(list(sys.argv[1:] if argv is None else argv))
    args = build_parser(argv).parse_args(argv)
    if recipe_args and not getattr(args, "takes_recipe_args", False):
        print(f"hf-gaf {args.command}: error: unexpected arguments after --: {' '.join(recipe_args)}", file=sys.stderr)
        return 2
    try:
        args.func(args, recipe_args) if getattr(args, "takes_recipe_args", False) else args.func(args)
    except CommandError as err:
        print(f"hf-gaf {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path that cannot be read or written: its name and why
        shown = f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err)
        print(f"hf-gaf {args.command}: error: {shown}", file=sys.stderr)
        return 2
    except (KeyError, RuntimeError, ValueError) as err:  # user-facing errors
        message = err.args[0] if isinstance(err, KeyError) and err.args else err  # a KeyError's str() is quoted
        print(f"hf-gaf {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

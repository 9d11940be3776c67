"""The ``hf-gaf`` command: ``make-voc``, ``plot-gaf``, ``compare``, ``sweep``, ``demo``, ``predict`` and ``evaluate``.

    hf-gaf make-voc runs/voc-synth --n-train 400 --n-test 100
    hf-gaf plot-gaf --kind atan --alpha 0.1 --beta 20 --out gaf.png
    hf-gaf compare --script recipes/classification/train.py --presets sgd gaf --out runs/cmp -- --num_train_epochs 2
    hf-gaf sweep --script recipes/classification/train.py --alphas 0.05 0.1 --betas 5 20 --out runs/sweep -- --num_train_epochs 2
    hf-gaf demo
    hf-gaf predict --model runs/frcnn/model --images photos/ --out preds/ --threshold 0.5
    hf-gaf evaluate --model runs/frcnn/best-model --out eval/ --voc_root runs/voc-synth --classes shapes

Bad arguments are reported in one line (no traceback) with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..functional import GAF_KINDS
from .demo import TASKS as DEMO_TASKS

class CommandError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _make_voc(args) -> None:
    from ..detection.synthetic_voc import SHAPE_CLASSES, make_voc

    classes = args.classes.split(",") if args.classes else SHAPE_CLASSES
    if args.n_train < 1 or args.n_test < 1:
        raise CommandError(f"--n-train {args.n_train} --n-test {args.n_test}: each split needs at least 1 image (an "
                           "empty split can be neither trained on nor evaluated)")
    if len(set(classes)) != len(classes):
        raise CommandError(f"--classes {args.classes}: a class is named twice")
    try:
        root = make_voc(args.out, n_train=args.n_train, n_test=args.n_test, image_size=args.image_size,
                        seed=args.seed, classes=classes, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as err:
        raise CommandError(str(err)) from None
    print(f"wrote {args.n_train} trainval + {args.n_test} test images to {root}")
    if args.format == "coco":
        from ..detection.coco_json import voc_to_coco

        for path in voc_to_coco(root, classes=classes):
            print(f"wrote {path}")


def _plot_gaf(args) -> None:
    from ..functional import validate_gaf
    from .plots import plot_gaf

    try:
        validate_gaf(args.kind, args.alpha, args.beta)
    except ValueError as err:
        raise CommandError(str(err)) from None
    suffix = os.path.splitext(args.out)[1].lower().lstrip(".")
    if suffix not in ("png", "pdf", "svg", "jpg", "jpeg"):
        raise CommandError(f"--out {args.out}: the file name must end in .png, .pdf, .svg or .jpg")
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise CommandError(f"--out {args.out}: the folder {folder} does not exist or is not writable")
    plot_gaf(args.out, args.kind, args.alpha, args.beta)
    print(f"wrote {args.out}")


def _runner(name: str, rest: list[str]) -> None:
    from importlib import import_module

    main = import_module(f".{name}", __package__).main
    try:
        main(rest)
    except (FileNotFoundError, KeyError, RuntimeError, ValueError) as err:
        raise CommandError(str(err).strip("'\"")) from None


def _demo(args) -> None:
    from .demo import run_demo

    if args.epochs is not None and args.epochs < 1:
        raise CommandError(f"--epochs {args.epochs}: need at least 1")
    try:
        run_demo(args.out, fast=args.fast, tasks=args.task, epochs=args.epochs)
    except (ValueError, FileExistsError) as err:
        raise CommandError(str(err)) from None


def _predict(args) -> None:
    from .inference import predict

    try:
        predict(args.model, args.images, args.out, threshold=args.threshold, batch_size=args.batch_size,
                strict=args.strict, overwrite=args.overwrite)
    except ValueError as err:
        raise CommandError(str(err)) from None


def _evaluate(args, rest: list[str]) -> None:
    from transformers import HfArgumentParser

    from ..detection.data import DetectionDataArguments
    from ..detection.images import DetectionDataError
    from ..metrics.detection import EvaluationArguments
    from .inference import evaluate_saved

    parser = HfArgumentParser((DetectionDataArguments, EvaluationArguments), prog="hf-gaf evaluate (data flags)")
    try:
        data, evaluation = parser.parse_args_into_dataclasses(args=rest)
    except SystemExit as exit_:
        raise CommandError(f"bad data flags {rest}") if exit_.code else exit_
    except ValueError as err:
        raise CommandError(str(err)) from None
    try:
        evaluate_saved(args.model, data, evaluation, args.out, batch_size=args.batch_size, overwrite=args.overwrite)
    except (ValueError, DetectionDataError, FileNotFoundError) as err:
        raise CommandError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-gaf", description="Gradient Activation Functions for the HF stack.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("make-voc", help="write a synthetic VOC-format data set of shapes")
    p.add_argument("out", help="output folder (VOCdevkit/VOC2007 is created inside)")
    p.add_argument("--n-train", type=int, default=400, help="trainval images")
    p.add_argument("--n-test", type=int, default=100, help="test images")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", default=None, help="comma-separated subset of circle,square,triangle,cross")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty folder, replacing its VOCdevkit/VOC2007 (refused without it)")
    p.add_argument("--format", choices=["voc", "coco"], default="voc",
                   help="coco: also write VOC2007/coco/{trainval,test}.json (COCO JSON over the same JPEGs)")
    p.set_defaults(func=_make_voc)

    p = sub.add_parser("plot-gaf", help="plot f and f' of a GAF against identity and clip-by-value")
    p.add_argument("--kind", default="atan", choices=list(GAF_KINDS))
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--beta", type=float, default=20.0)
    p.add_argument("--out", default="gaf.png")
    p.set_defaults(func=_plot_gaf)

    p = sub.add_parser("compare", help="run a recipe over presets x seeds; table and curves (see --help)",
                       add_help=False)
    p.set_defaults(func=None)

    p = sub.add_parser("sweep", help="run a recipe over a grid of GAF alpha x beta; heatmap, table, JSON (see --help)",
                       add_help=False)
    p.set_defaults(func=None)

    p = sub.add_parser("demo", help="the CPU demo: digits and synthetic-VOC comparisons, plots, summary")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--fast", action="store_true", help="a reduced demo (about 2 minutes), as the tests run it")
    p.add_argument("--task", nargs="+", choices=list(DEMO_TASKS), default=None,
                   help="run only these comparisons")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every task run (default: each task's own)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("predict", help="run a saved detector on images: detections.json and drawn PNGs")
    p.add_argument("--model", required=True, help="a folder saved by a detection recipe (OUTPUT_DIR/model or best-model)")
    p.add_argument("--images", required=True, nargs="+", help="image files and/or folders of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threshold", type=float, default=0.5, help="keep detections with at least this score")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable image (default: skip it and list it in OUT/skipped.txt)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier prediction in --out")
    p.set_defaults(func=_predict)

    p = sub.add_parser("evaluate", help="score a saved detector on a labelled split (VOC or COCO flags as the "
                       "recipes take them, e.g. --voc_root DIR --eval_split test): metrics.json")
    p.add_argument("--model", required=True, help="a folder saved by a detection recipe")
    p.add_argument("--out", required=True, help="output folder for eval_results.json (may be the training run's: "
                   "its metrics.json is left alone)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier eval_results.json in --out")
    p.set_defaults(func=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] in (["compare"], ["sweep"]):  # these runners own their flags (and `--` for the recipe)
        try:
            _runner(argv[0], argv[1:])
        except CommandError as err:
            print(f"hf-gaf {argv[0]}: error: {err}", file=sys.stderr)
            return 2
        return 0
    if argv[:1] == ["evaluate"]:  # the data flags are the recipes' (HfArgumentParser)
        args, rest = parser.parse_known_args(argv)
    else:
        args, rest = parser.parse_args(argv), None
    try:
        args.func(args) if rest is None else args.func(args, rest)
    except CommandError as err:
        print(f"hf-gaf {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The detection recipes' data flags (a VOC tree or COCO JSON); the class list (``voc`` = the 20 VOC
classes, ``shapes`` = the synthetic set, ``auto`` = from the training annotations, a file with one name
per line, or comma-separated names); train/eval splits with an ``index`` column that identifies each
image in evaluation; and the per-split canvas transform that feeds the collators of both model families."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from .coco_json import coco_categories, load_coco
from .schema import EVAL_KEY, EvalTarget
from .synthetic_voc import SHAPE_CLASSES
from .transforms import DetectionTransform
from .voc import VOC_CLASSES, load_voc, voc_class_names

DATA_FORMATS = ("voc", "coco")


@dataclass
class DetectionDataArguments:
    """The data flags shared by the detection recipes and ``hf-gaf evaluate``."""

    data_format: str = field(default="voc", metadata={
        "help": "voc (a VOCdevkit tree: --voc_root) or coco (COCO JSON: --train_json/--train_images/--eval_json/"
                "--eval_images).", "choices": list(DATA_FORMATS)})
    voc_root: str | None = field(default=None, metadata={"help": "Folder holding VOCdevkit (--data_format voc)."})
    train_json: str | None = field(default=None, metadata={"help": "COCO JSON of the training images."})
    train_images: str | None = field(default=None, metadata={"help": "Folder of the training images (COCO)."})
    eval_json: str | None = field(default=None, metadata={"help": "COCO JSON of the evaluation images."})
    eval_images: str | None = field(default=None, metadata={"help": "Folder of the evaluation images (COCO)."})
    years: str = field(default="2007", metadata={"help": "Training years: 2007 or 2007+2012."})
    eval_years: str | None = field(default=None, metadata={"help": "Evaluation year (default: the first of --years)."})
    train_split: str = field(default="trainval")
    eval_split: str = field(default="test")
    classes: str | None = field(default=None, metadata={
        "help": "voc (the 20 VOC classes), shapes (synthetic set), auto (sorted names of the VOC training annotations; "
                "the COCO categories by id), a file with one name per line, or comma-separated names. "
                "Default: voc for --data_format voc, auto for coco."})
    skip_unknown_classes: bool = field(default=False, metadata={
        "help": "Skip (and count) objects whose class is not in --classes, to train on a subset of the classes; "
                "without it such an object is an error naming its file."})
    image_size: int = field(default=512, metadata={"help": "Side of the square canvas images are resized onto."})
    resize_mode: str = field(default="letterbox", metadata={"help": "letterbox (keep aspect, pad) or stretch.",
                                                            "choices": ["letterbox", "stretch"]})
    hflip: float = field(default=0.5)
    max_zoom_out: float = field(default=1.5, metadata={"help": "Scale jitter: zoom out up to this factor (1 = off)."})
    iou_crop: bool = field(default=False, metadata={"help": "Random IoU crop augmentation."})
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    compat: str = field(default="devkit", metadata={"help": "VOC AP convention: devkit or py-faster-rcnn.",
                                                    "choices": ["devkit", "py-faster-rcnn"]})
    draw_predictions: int = field(default=8, metadata={
        "help": "After training, draw the boxes on this many evaluation images into OUTPUT_DIR/predictions.png (0: off)."})
    save_models: bool = field(default=True, metadata={
        "help": "Save the final model to OUTPUT_DIR/model and the best one by --metric_for_best_model (default "
                "voc07_map) to OUTPUT_DIR/best-model, each with a model card (README.md)."})


    def __post_init__(self):
        for flag in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, flag)
            if value is not None and value < 1:
                raise ValueError(f"--{flag} {value}: need at least 1 (leave it out to use every image)")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"--image_size {self.image_size}: the detectors need a canvas of at least "
                             f"{MIN_IMAGE_SIZE} px")
        if self.max_zoom_out < 1:
            raise ValueError(f"--max_zoom_out {self.max_zoom_out}: need >= 1 (1 turns the zoom-out off)")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"--hflip {self.hflip}: a probability in [0, 1]")


MIN_IMAGE_SIZE = 32  # the coarsest feature maps (stride 32) need at least one cell
CLASS_SETS = {"voc": VOC_CLASSES, "shapes": SHAPE_CLASSES}


def _years(spec: str) -> tuple[str, ...]:
    return tuple(y.strip() for y in spec.replace("+", ",").split(",") if y.strip())


def resolve_classes(data: DetectionDataArguments) -> list[str]:
    """The class names ``--classes`` asks for (module docstring); label k is the k-th name."""
    spec = data.classes or ("voc" if data.data_format == "voc" else "auto")
    if spec in CLASS_SETS:
        return list(CLASS_SETS[spec])
    if spec == "auto":
        if data.data_format == "coco":
            _require(data, "train_json")
            return [name for _, name in coco_categories(data.train_json)]
        _require(data, "voc_root")
        return voc_class_names(data.voc_root, _years(data.years), data.train_split)
    if os.path.isfile(spec):
        with open(spec) as f:
            names = [line.strip() for line in f if line.strip()]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"--classes {spec}: the file must list each class name once, one per line")
        return names
    names = [c.strip() for c in spec.split(",") if c.strip()]
    if not names or ("," not in spec and (os.sep in spec or spec.endswith(".txt"))):
        raise ValueError(f"--classes {spec!r}: expected voc, shapes, auto, an existing file or comma-separated names")
    if len(set(names)) != len(names):
        raise ValueError(f"--classes {spec!r}: a class is named twice")
    return names


def _require(data: DetectionDataArguments, *flags: str) -> None:
    missing = [f"--{flag}" for flag in flags if not getattr(data, flag)]
    if missing:
        raise ValueError(f"--data_format {data.data_format} needs {' and '.join(missing)}")


def load_splits(data: DetectionDataArguments, classes: list[str]):
    """(train, eval) datasets of the data flags, VOC or COCO (see :func:`load_detection_splits`)."""
    if data.data_format == "coco":
        _require(data, "train_json", "train_images", "eval_json", "eval_images")
        train = load_coco(data.train_json, data.train_images, classes, keep_difficult=False, skip_empty=True)
        evaluation = load_coco(data.eval_json, data.eval_images, classes, keep_difficult=True)
        return _finish(train, evaluation, data.max_train_samples, data.max_eval_samples)
    return load_detection_splits(data.voc_root, data.years, data.train_split, data.eval_split, classes,
                                 data.max_train_samples, data.max_eval_samples, data.eval_years,
                                 data.skip_unknown_classes)


def load_eval_split(data: DetectionDataArguments, classes: list[str]):
    """The evaluation split alone (``hf-gaf evaluate``), with its ``index`` column."""
    if data.data_format == "coco":
        _require(data, "eval_json", "eval_images")
        evaluation = load_coco(data.eval_json, data.eval_images, classes, keep_difficult=True)
    else:
        _require(data, "voc_root")
        years = _years(data.eval_years or _years(data.years)[0])
        evaluation = load_voc(data.voc_root, years=years, split=data.eval_split, classes=classes, keep_difficult=True,
                              skip_unknown=data.skip_unknown_classes)
    if data.max_eval_samples:
        evaluation = evaluation.select(range(min(data.max_eval_samples, len(evaluation))))
    return evaluation.add_column("index", list(range(len(evaluation))))


def _finish(train, evaluation, max_train, max_eval):
    if max_train:
        train = train.select(range(min(max_train, len(train))))
    if max_eval:
        evaluation = evaluation.select(range(min(max_eval, len(evaluation))))
    return train.add_column("index", list(range(len(train)))), evaluation.add_column("index", list(range(len(evaluation))))


def load_detection_splits(voc_root: str | None, years: str, train_split: str, eval_split: str, classes: list[str],
                          max_train: int | None = None, max_eval: int | None = None, eval_years: str | None = None,
                          skip_unknown: bool = False):
    """(train, eval) datasets: training skips difficult objects and empty images (the usual VOC
    recipe); evaluation keeps both, difficult objects flagged; ``skip_unknown`` drops objects of
    classes outside ``classes`` (counted in a warning)."""
    if not voc_root:
        raise ValueError("--voc_root is required: the folder that holds VOCdevkit (real VOC, or `hf-gaf make-voc OUT`)")
    train_years = _years(years)
    test_years = _years(eval_years or train_years[0])
    train = load_voc(voc_root, years=train_years, split=train_split, classes=classes, keep_difficult=False,
                     skip_empty=True, skip_unknown=skip_unknown)
    evaluation = load_voc(voc_root, years=test_years, split=eval_split, classes=classes, keep_difficult=True,
                          skip_unknown=skip_unknown)
    return _finish(train, evaluation, max_train, max_eval)


def with_canvas_transform(dataset, transform: DetectionTransform):
    """``dataset`` (rows with ``image``, ``objects``, ``index``) whose rows come out, on access, as
    ``{"sample": CanvasSample, "eval_target": EvalTarget}``: the training split gets the augmenting
    transform, the evaluation split the plain one, and one collator per model family serves both."""

    def apply(batch: dict) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        samples = [transform.apply(row) for row in rows]
        return {"sample": samples, EVAL_KEY: [EvalTarget.of(row, s) for row, s in zip(rows, samples)]}

    fingerprint_log = logging.getLogger("datasets.fingerprint")  # it warns that a closure "couldn't be hashed":
    level = fingerprint_log.level                                 # harmless for an on-access transform
    fingerprint_log.setLevel(logging.ERROR)
    try:
        return dataset.with_transform(apply)
    finally:
        fingerprint_log.setLevel(level)

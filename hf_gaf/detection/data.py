"""The detection recipes' data flags; VOC splits with an ``index`` column that identifies each image in
evaluation; the class list by name (``voc`` = the 20 VOC classes, ``shapes`` = the synthetic set); and
the per-split canvas transform that feeds the collators of both model families."""

from __future__ import annotations

from dataclasses import dataclass, field

from .schema import EVAL_KEY, EvalTarget
from .synthetic_voc import SHAPE_CLASSES
from .transforms import DetectionTransform
from .voc import VOC_CLASSES, load_voc


@dataclass
class VOCDataArguments:
    """The data flags shared by the detection recipes."""

    voc_root: str | None = field(default=None, metadata={"help": "Folder holding VOCdevkit (required)."})
    years: str = field(default="2007", metadata={"help": "Training years: 2007 or 2007+2012."})
    eval_years: str | None = field(default=None, metadata={"help": "Evaluation year (default: the first of --years)."})
    train_split: str = field(default="trainval")
    eval_split: str = field(default="test")
    classes: str = field(default="voc", metadata={"help": "voc, shapes (synthetic set) or comma-separated names."})
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


CLASS_SETS = {"voc": VOC_CLASSES, "shapes": SHAPE_CLASSES}


def class_names(spec: str) -> list[str]:
    """``voc``, ``shapes`` or a comma-separated list of class names."""
    if spec in CLASS_SETS:
        return list(CLASS_SETS[spec])
    names = [c.strip() for c in spec.split(",") if c.strip()]
    if not names:
        raise ValueError(f"--classes {spec!r}: expected voc, shapes or a comma-separated list of names")
    return names


def load_detection_splits(voc_root: str | None, years: str, train_split: str, eval_split: str, classes: list[str],
                          max_train: int | None = None, max_eval: int | None = None, eval_years: str | None = None,
                          skip_unknown: bool = False):
    """(train, eval) datasets: training skips difficult objects and empty images (the usual VOC
    recipe); evaluation keeps both, difficult objects flagged; ``skip_unknown`` drops objects of
    classes outside ``classes`` (counted in a warning)."""
    if not voc_root:
        raise ValueError("--voc_root is required: the folder that holds VOCdevkit (real VOC, or `hf-gaf make-voc OUT`)")
    train_years = tuple(y.strip() for y in years.replace("+", ",").split(",") if y.strip())
    test_years = tuple(y.strip() for y in (eval_years or train_years[0]).replace("+", ",").split(",") if y.strip())
    train = load_voc(voc_root, years=train_years, split=train_split, classes=classes, keep_difficult=False,
                     skip_empty=True, skip_unknown=skip_unknown)
    evaluation = load_voc(voc_root, years=test_years, split=eval_split, classes=classes, keep_difficult=True,
                          skip_unknown=skip_unknown)
    if max_train:
        train = train.select(range(min(max_train, len(train))))
    if max_eval:
        evaluation = evaluation.select(range(min(max_eval, len(evaluation))))
    return train.add_column("index", list(range(len(train)))), evaluation.add_column("index", list(range(len(evaluation))))


def with_canvas_transform(dataset, transform: DetectionTransform):
    """``dataset`` (rows with ``image``, ``objects``, ``index``) whose rows come out, on access, as
    ``{"sample": CanvasSample, "eval_target": EvalTarget}``: the training split gets the augmenting
    transform, the evaluation split the plain one, and one collator per model family serves both."""

    def apply(batch: dict) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        samples = [transform.apply(row) for row in rows]
        return {"sample": samples, EVAL_KEY: [EvalTarget.of(row, s) for row, s in zip(rows, samples)]}

    return dataset.with_transform(apply)

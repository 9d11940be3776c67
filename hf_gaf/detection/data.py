"""The detection data flags (a VOC tree or COCO JSON) and what they resolve to: the class list (``voc`` =
the 20 VOC classes, ``shapes`` = the synthetic set, ``auto`` = from the training annotations, a file with one
name per line, or comma-separated names), the evaluation years, and the train/eval splits with an ``index``
column that identifies each image in evaluation. The per-split canvas transform is
:func:`hf_gaf.detection.schema.with_canvas_transform`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..sample_limits import SampleLimitArguments
from .coco_json import coco_categories, load_coco
from .synthetic_voc import SHAPE_CLASSES
from .transforms import MODES
from .voc import VOC_CLASSES, load_voc, voc_class_names

DATA_FORMATS = ("voc", "coco")


@dataclass
class DetectionDataArguments(SampleLimitArguments):
    """The data flags shared by the detection recipes and ``hf-gaf evaluate``."""

    data_format: str = field(default="voc", metadata={
        "help": "voc (a VOCdevkit tree: --voc_root) or coco (COCO JSON: --train_json/--train_images/--eval_json/"
                "--eval_images).", "choices": list(DATA_FORMATS)})
    voc_root: str | None = field(default=None, metadata={"help": "Folder holding VOCdevkit (--data_format voc)."})
    train_json: str | None = field(default=None, metadata={"help": "COCO JSON of the training images."})
    train_images: str | None = field(default=None, metadata={"help": "Folder of the training images (COCO)."})
    eval_json: str | None = field(default=None, metadata={"help": "COCO JSON of the evaluation images."})
    eval_images: str | None = field(default=None, metadata={"help": "Folder of the evaluation images (COCO)."})
    years: str = field(default="2007", metadata={"help": "Training years: 2007, or several joined by + or , "
                                                                    "(2007+2012)."})
    eval_years: str | None = field(default=None, metadata={
        "help": "Evaluation years, as --years (default: the first of --years)."})
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
                                                            "choices": list(MODES)})
    hflip: float = field(default=0.5)
    max_zoom_out: float = field(default=1.5, metadata={"help": "Scale jitter: zoom out up to this factor (1 = off)."})
    iou_crop: bool = field(default=False, metadata={"help": "Random IoU crop augmentation."})

    def __post_init__(self):
        super().__post_init__()
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"--image_size {self.image_size}: the detectors need a canvas of at least "
                             f"{MIN_IMAGE_SIZE} px")
        if not 1 <= self.max_zoom_out < float("inf"):
            raise ValueError(f"--max_zoom_out {self.max_zoom_out}: need a finite factor >= 1 (1 turns the zoom-out "
                             "off)")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"--hflip {self.hflip}: a probability in [0, 1]")


EVAL_FLAGS = ("data_format", "voc_root", "eval_years", "eval_split", "eval_json", "eval_images",
              "skip_unknown_classes", "max_eval_samples")  # what the evaluation split is read from
_PATH_FLAGS = ("voc_root", "eval_json", "eval_images")


def evaluation_data(data: DetectionDataArguments) -> dict:
    """The evaluation split's flags of ``data`` (:data:`EVAL_FLAGS`), paths made absolute: what a saved model
    records so that ``hf-gaf evaluate`` can score it again without them."""
    recorded = {k: os.path.abspath(getattr(data, k)) if k in _PATH_FLAGS and getattr(data, k) else getattr(data, k)
                for k in EVAL_FLAGS}
    return recorded | {"eval_years": "+".join(evaluation_years(data))}  # resolved: --years is not recorded


def has_evaluation_source(data: DetectionDataArguments) -> bool:
    """Whether the flags name evaluation data (a VOC root or a COCO JSON)."""
    return bool(data.voc_root or data.eval_json)


MIN_IMAGE_SIZE = 32  # the coarsest feature maps (stride 32) need at least one cell
CLASS_SETS = {"voc": VOC_CLASSES, "shapes": SHAPE_CLASSES}


def parse_years(spec: str) -> tuple[str, ...]:
    """``2007+2012`` or ``2007,2012`` as ``("2007", "2012")``."""
    return tuple(y.strip() for y in spec.replace("+", ",").split(",") if y.strip())


def evaluation_years(data: DetectionDataArguments) -> tuple[str, ...]:
    """The VOC years evaluated on: ``--eval_years``, else the first of ``--years`` (the one rule, used by the
    loader and by the model card)."""
    return parse_years(data.eval_years) if data.eval_years else parse_years(data.years)[:1]


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
        return voc_class_names(data.voc_root, parse_years(data.years), data.train_split)
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


def load_split(data: DetectionDataArguments, classes: list[str], which: str):
    """The ``"train"`` or ``"eval"`` split of the data flags, VOC or COCO, with an ``index`` column. Training
    skips difficult objects and empty images (the usual VOC recipe); evaluation keeps both, difficult objects
    flagged; ``--skip_unknown_classes`` drops objects of classes outside ``classes`` (counted in a warning)."""
    train = which == "train"
    limit = data.max_train_samples if train else data.max_eval_samples
    if data.data_format == "coco":
        json_flag, images_flag = ("train_json", "train_images") if train else ("eval_json", "eval_images")
        _require(data, json_flag, images_flag)
        dataset = load_coco(getattr(data, json_flag), getattr(data, images_flag), classes, keep_difficult=not train,
                            skip_empty=train, skip_unknown=data.skip_unknown_classes)
    else:
        if not data.voc_root:
            raise ValueError("--voc_root is required: the folder that holds VOCdevkit (real VOC, or "
                             "`hf-gaf make-voc OUT`)")
        dataset = load_voc(data.voc_root, years=parse_years(data.years) if train else evaluation_years(data),
                           split=data.train_split if train else data.eval_split, classes=classes,
                           keep_difficult=not train, skip_empty=train, skip_unknown=data.skip_unknown_classes)
    if limit:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset.add_column("index", list(range(len(dataset))))


def load_splits(data: DetectionDataArguments, classes: list[str]):
    """(train, eval) datasets of the data flags (:func:`load_split`)."""
    return load_split(data, classes, "train"), load_split(data, classes, "eval")

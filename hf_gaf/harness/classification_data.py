"""Image-classification data for the recipes: the built-in ``digits``, a local image folder, or a
Hugging Face data set that is already in the local cache (nothing is downloaded at run time).

``digits`` is scikit-learn's bundled handwritten digits (1,797 real 8x8 images shipped inside
scikit-learn), upscaled to 32x32 RGB, split 80/20 stratified with a fixed seed.

Example:
    >>> train, test, names = load_classification_data("digits")
    >>> len(train), len(test), names[:3], train[0]["image"].size
    (1437, 360, ['0', '1', '2'], (32, 32))
"""

from __future__ import annotations

import os

import datasets
import numpy as np

IMAGE_COLUMNS = ("image", "img", "pixel_values", "jpg", "png")
LABEL_COLUMNS = ("label", "labels", "fine_label", "cls", "target")


class DatasetNotAvailableError(RuntimeError):
    """The data set is neither built in, nor a local folder, nor in the local Hugging Face cache."""


def load_digits_dataset(size: int = 32, test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's digits as RGB ``size`` x ``size`` images: (train, test, class names)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    images = [Image.fromarray(p, "L").resize((size, size), Image.BILINEAR).convert("RGB") for p in pixels]
    index = np.arange(len(images))
    train_idx, test_idx = train_test_split(index, test_size=test_fraction, stratify=digits.target, random_state=seed)
    names = [str(i) for i in range(10)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})

    def subset(idx):
        return datasets.Dataset.from_dict(
            {"image": [images[i] for i in idx], "label": [int(digits.target[i]) for i in idx]}, features=features
        )

    return subset(train_idx), subset(test_idx), names


def _pick(columns, preferred, given, what, name):
    if given:
        if given not in columns:
            raise ValueError(f"--{what}_column {given!r} is not a column of {name} (columns: {', '.join(columns)})")
        return given
    for c in preferred:
        if c in columns:
            return c
    raise ValueError(f"cannot tell the {what} column of {name} (columns: {', '.join(columns)}); pass --{what}_column")


def _load_hub_or_folder(name: str, train_split: str, eval_split: str):
    if os.path.isdir(name):
        loaded = datasets.load_dataset("imagefolder", data_dir=name)
    else:
        try:
            loaded = datasets.load_dataset(name)
        except Exception as err:  # offline: datasets raises ConnectionError/FileNotFoundError/ValueError
            raise DatasetNotAvailableError(
                f"data set {name!r} is not a local folder and is not in the local Hugging Face cache; this recipe "
                f'never downloads at run time. Cache it once where there is network (python -c "import datasets; '
                f"datasets.load_dataset('{name}')\"), or pass a local image folder "
                f"(--dataset /path/with/train/<class>/*.jpg), "
                f"or use --dataset digits. ({type(err).__name__})"
            ) from None
    if train_split not in loaded:
        raise ValueError(f"{name} has no split {train_split!r} (splits: {', '.join(loaded)}); pass --train_split")
    if eval_split not in loaded:
        if eval_split == "test" and "validation" in loaded:
            eval_split = "validation"
        else:
            raise ValueError(f"{name} has no split {eval_split!r} (splits: {', '.join(loaded)}); pass --eval_split")
    return loaded[train_split], loaded[eval_split]


def load_classification_data(
    name: str,
    train_split: str = "train",
    eval_split: str = "test",
    image_column: str | None = None,
    label_column: str | None = None,
    image_size: int = 32,
):
    """(train, eval, class names) with columns renamed to ``image`` and ``label``."""
    if name == "digits":
        return load_digits_dataset(size=image_size)
    train, evaluation = _load_hub_or_folder(name, train_split, eval_split)
    image_col = _pick(train.column_names, IMAGE_COLUMNS, image_column, "image", name)
    label_col = _pick(train.column_names, LABEL_COLUMNS, label_column, "label", name)
    feature = train.features[label_col]
    names = (
        list(feature.names)
        if isinstance(feature, datasets.ClassLabel)
        else [str(v) for v in sorted(set(train[label_col]))]
    )
    out = []
    for ds in (train, evaluation):
        ds = ds.select_columns([image_col, label_col])
        if image_col != "image":
            ds = ds.rename_column(image_col, "image")
        if label_col != "label":
            ds = ds.rename_column(label_col, "label")
        out.append(ds)
    return out[0], out[1], names

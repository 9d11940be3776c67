"""hf_gaf.harness.classification_data in process: the bundled digits split and the column checks."""

import pytest

from hf_gaf.harness.classification_data import _pick, load_classification_data


def test_digits_are_a_stratified_rgb_split_of_the_bundled_set():
    train, test, names = load_classification_data("digits", image_size=16)
    assert names == [str(i) for i in range(10)] and len(train) + len(test) == 1797
    assert abs(len(test) - 0.2 * 1797) < 1
    image = train[0]["image"]
    assert image.mode == "RGB" and image.size == (16, 16)
    counts = [sum(1 for v in test["label"] if v == k) for k in range(10)]
    assert max(counts) - min(counts) <= 3  # stratified: every class in the test split


def test_a_column_that_does_not_exist_or_cannot_be_told_is_named():
    assert _pick(["img", "label"], ("image", "img"), None, "image", "x") == "img"
    with pytest.raises(ValueError, match="--image_column 'picture' is not a column of x"):
        _pick(["img"], ("image",), "picture", "image", "x")
    with pytest.raises(ValueError, match="cannot tell the label column of x .*pass --label_column"):
        _pick(["a", "b"], ("label",), None, "label", "x")

"""hf_gaf.detection.families: a detector family is one record naming its module; the saved-detector code reads
the record, so a family defined elsewhere saves and loads with no other change."""

import pytest
import torch

from hf_gaf.detection import families
from hf_gaf.detection.saved import DetectorInfo, load_detector, save_detector


@pytest.fixture
def toy_family(monkeypatch):
    entry = families.Family("toy", "tests.helpers.toy_family", canvas_by_processor=False, library_name="pytorch",
                            recipe="train_toy", pipeline=False)
    monkeypatch.setitem(families.FAMILIES, "toy", entry)
    return entry


def test_a_family_registered_once_saves_and_loads(toy_family, tmp_path):
    model = torch.nn.Linear(2, 2)
    info = DetectorInfo("toy", ["a", "b"], 64)
    save_detector(str(tmp_path / "m"), model, info)
    loaded = load_detector(str(tmp_path / "m"))
    assert loaded.info.family == "toy" and not loaded.info.canvas_by_processor
    for a, b in zip(model.parameters(), loaded.model.parameters()):
        assert torch.equal(a, b)


def test_an_unknown_family_is_one_error_naming_them():
    with pytest.raises(ValueError, match="family 'yolo': expected one of detr, faster_rcnn"):
        DetectorInfo("yolo", ["a"], 64)

"""hf_gaf.harness.detection_training in process: the advice at chance level and what a saved model records for
``hf-gaf evaluate`` (the recipes' whole runs are in tests/e2e/test_detection_journey.py and tests/detection)."""

import os

from hf_gaf.detection.data import EVAL_FLAGS, DetectionDataArguments, evaluation_data
from hf_gaf.harness.detection_training import ADVICE, chance_advice


def test_the_advice_fits_the_family_and_the_preset():
    assert chance_advice("faster_rcnn", "sgd") == ADVICE["faster_rcnn"]
    assert "--preset scratch-adamw" in chance_advice("detr", "adamw-gaf")
    assert "optimizer steps" in chance_advice("detr", "scratch-adamw")


def test_a_model_records_its_evaluation_split_with_absolute_paths_and_resolved_years(tmp_path):
    data = DetectionDataArguments(voc_root="relative/voc", years="2012+2007", eval_split="val")
    recorded = evaluation_data(data)
    assert set(recorded) == set(EVAL_FLAGS)
    assert recorded["voc_root"] == os.path.abspath("relative/voc") and recorded["eval_years"] == "2012"
    assert recorded["eval_split"] == "val" and recorded["eval_json"] is None
    again = DetectionDataArguments(**recorded)  # what evaluate rebuilds: the same split
    assert evaluation_data(again) == recorded

"""Data-loader defaults of the recipes: workers, pinned memory and persistent workers on CUDA; none on CPU."""

import torch

from hf_gaf.harness import training as recipe_run


def test_cpu_keeps_zero_workers(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert recipe_run.recipe_defaults()["dataloader_num_workers"] == 0
    assert "dataloader_persistent_workers" not in recipe_run.recipe_defaults()


def test_cuda_gets_workers_per_gpu_and_flags_still_win(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(recipe_run.os, "cpu_count", lambda: 16)
    defaults = recipe_run.recipe_defaults()
    assert defaults["dataloader_num_workers"] == 8
    assert defaults["dataloader_pin_memory"] and defaults["dataloader_persistent_workers"]
    monkeypatch.setattr(recipe_run.os, "cpu_count", lambda: 6)
    assert recipe_run.recipe_defaults()["dataloader_num_workers"] == 3
    assert recipe_run.recipe_defaults(dataloader_num_workers=0)["dataloader_num_workers"] == 0


def test_prepare_run_seeds_and_drops_persistent_workers_without_workers(tmp_path):
    from transformers import TrainingArguments

    args = TrainingArguments(str(tmp_path), seed=3, dataloader_num_workers=0, dataloader_persistent_workers=True,
                             report_to="none")
    recipe_run.prepare_run(args)
    first = torch.rand(3)
    recipe_run.prepare_run(args)
    assert torch.equal(first, torch.rand(3))
    assert args.dataloader_persistent_workers is False


def test_a_final_metric_at_chance_level_ends_the_run_with_a_warning_that_says_what_to_change(capsys):
    """``warn_at_chance_level``: the final value of --metric_for_best_model at or below its chance level prints
    one warning with the advice; above it, or for a metric without a chance level (a loss), nothing."""
    levels = {"voc07_map": 0.02}
    assert recipe_run.warn_at_chance_level({"eval_voc07_map": 0.0006}, "voc07_map", levels, "Use lr 1e-3.")
    err = capsys.readouterr().err
    assert "eval_voc07_map = 0.0006 stayed at chance level (<= 0.02)" in err and "Use lr 1e-3." in err
    assert recipe_run.warn_at_chance_level({"eval_voc07_map": 0.02}, "eval_voc07_map", levels, "")
    capsys.readouterr()
    assert not recipe_run.warn_at_chance_level({"eval_voc07_map": 0.31}, "voc07_map", levels, "")
    assert not recipe_run.warn_at_chance_level({"eval_loss": 0.0}, "loss", levels, "")
    assert not recipe_run.warn_at_chance_level({}, "voc07_map", levels, "")
    assert capsys.readouterr().err == ""


def test_chance_levels_and_advice_fit_the_run():
    """Round 4, low: the classification warning fired for a 2-class run at 0.75 accuracy (threshold 1.5/K), and a
    DETR run already on a scratch preset was told to use the scratch preset."""
    from hf_gaf.harness.detection_training import chance_advice
    from hf_gaf.recipes.classification.train import chance_accuracy

    assert chance_accuracy(2, 360) < 0.56 and chance_accuracy(10, 360) < 0.14  # guess + two binomial errors
    assert 0.1 < chance_accuracy(10, 360) and 0.5 < chance_accuracy(2, 360)
    assert "--preset scratch-adamw" in chance_advice("detr", "adamw")
    assert "scratch-adamw" not in chance_advice("detr", "scratch-adamw-gaf")
    assert "optimizer steps" in chance_advice("detr", "scratch-adamw-gaf")

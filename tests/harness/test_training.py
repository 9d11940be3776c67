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

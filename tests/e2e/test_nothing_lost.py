"""Nothing lost, nothing silently wrong (round 3): a finished run re-queued, a resume whose schedule differs,
a partial checkpoint, the runners' metric and reuse checks, attach_gaf on a GAFSGD, an optimizer passed in
that contradicts the arguments, and bad values that must be refused in one line. The detection items
(predict, evaluate, COCO ids, DETR resume) are in test_detection_journey.py and test_detr.py."""

import json
import os
from pathlib import Path

import pytest
import torch

from hf_gaf import GAFSGD, attach_gaf
from hf_gaf.harness.compare import main as compare
from hf_gaf.harness.sweep import main as sweep
from hf_gaf.recipes.classification import train as classification
from tests.helpers.tiny import SequentialGAFTrainer, TinyData, TinyRegressor, tiny_args

ROOT = Path(__file__).resolve().parents[2]
FAKE = str(ROOT / "tests" / "helpers" / "fake_recipe.py")
TINY = ["--max_train_samples", "64", "--max_eval_samples", "32", "--per_device_train_batch_size", "32",
        "--num_train_epochs", "2", "--save_strategy", "steps", "--save_steps", "1", "--report_to", "none",
        "--disable_tqdm", "true", "--seed", "1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-epoch classification run with a checkpoint after every step (the last one written before
    the final evaluation)."""
    out = tmp_path_factory.mktemp("finished")
    classification.main([*TINY, "--output_dir", str(out)])
    return out


def test_a_finished_run_requeued_with_resume_last_is_left_as_it_is(finished_run, capsys):
    before = (finished_run / "metrics.json").read_bytes()
    assert len(json.loads(before)["epochs"]) == 2
    with pytest.raises(SystemExit) as exit_:
        classification.main([*TINY, "--output_dir", str(finished_run), "--resume_from_checkpoint", "last"])
    assert exit_.value.code in (0, None)
    assert "holds a finished run" in capsys.readouterr().out
    assert (finished_run / "metrics.json").read_bytes() == before


def test_a_resume_with_another_batch_size_stops_before_training_naming_the_flag(finished_run, tmp_path):
    other = tmp_path / "o"
    os.symlink(finished_run / "checkpoint-2", tmp_path / "ckpt")
    with pytest.raises(SystemExit, match=r"--per_device_train_batch_size 16 \(checkpoint: 32\)"):
        classification.main([*TINY, "--output_dir", str(other), "--per_device_train_batch_size", "16",
                             "--resume_from_checkpoint", str(tmp_path / "ckpt")])
    with pytest.raises(SystemExit, match=r"--num_train_epochs 3.0 \(checkpoint: 2.0\)"):
        classification.main([*TINY, "--output_dir", str(other), "--num_train_epochs", "3",
                             "--resume_from_checkpoint", str(tmp_path / "ckpt")])
    assert not (other / "metrics.json").exists()


def test_a_checkpoint_cut_short_is_passed_over_or_refused(finished_run, tmp_path):
    from hf_gaf.harness.training import resolve_checkpoint

    work = tmp_path / "run"
    work.mkdir()
    for name in ("checkpoint-2", "checkpoint-3"):
        os.symlink(finished_run / name, work / name)
    (work / "checkpoint-4").mkdir()  # a crash while saving: no trainer_state.json
    args = type("Args", (), {"output_dir": str(work), "resume_from_checkpoint": "last"})()
    with pytest.warns(UserWarning, match="checkpoint-4 has no trainer_state.json"):
        assert resolve_checkpoint(args) == str(work / "checkpoint-3")
    args.resume_from_checkpoint = str(work / "checkpoint-4")
    with pytest.raises(SystemExit, match="has no trainer_state.json: the save was cut short"):
        resolve_checkpoint(args)


def test_metric_for_best_model_and_sample_counts_are_checked_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit, match="--metric_for_best_model acuracy is not a metric of this recipe"):
        classification.main([*TINY, "--output_dir", str(tmp_path / "a"), "--metric_for_best_model", "acuracy"])
    assert not (tmp_path / "a" / "metrics.json").exists()
    for flag in ("--max_train_samples", "--max_eval_samples"):
        with pytest.raises(SystemExit) as exit_:
            classification.main([*TINY, "--output_dir", str(tmp_path / "b"), flag, "0"])
        assert exit_.value.code == 2
        assert f"{flag} 0: need at least 1" in capsys.readouterr().err


def test_sweep_with_a_wrong_metric_stops_after_the_first_run_and_can_be_resummarized(tmp_path, monkeypatch):
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("FAKE_RECIPE_LOG", str(log))
    out = tmp_path / "sweep"
    grid = ["--script", FAKE, "--alphas", "0.1", "0.3", "--betas", "5", "--seeds", "0", "1", "--out", str(out)]
    with pytest.raises(KeyError, match="--metric must be one of \\['eval_accuracy'\\]"):
        sweep([*grid, "--metric", "eval_acuracy"])
    assert len(log.read_text().splitlines()) == 1  # not 6
    assert sweep([*grid, "--metric", "eval_accuracy", "--reuse"]) == 0  # the right metric: resumes
    assert len(log.read_text().splitlines()) == 6
    first = json.loads((out / "sweep.json").read_text())
    assert sweep([*grid, "--metric", "eval_accuracy", "--summarize-only"]) == 0
    assert len(log.read_text().splitlines()) == 6  # nothing ran again
    assert json.loads((out / "sweep.json").read_text())["cells"] == first["cells"]


def test_compare_stops_after_the_first_run_on_a_wrong_metric_and_refuses_to_reuse_another_experiment(
        tmp_path, monkeypatch):
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("FAKE_RECIPE_LOG", str(log))
    out = tmp_path / "cmp"
    base = ["--script", FAKE, "--presets", "sgd", "gaf", "--seeds", "0", "1", "--out", str(out)]
    with pytest.raises(KeyError, match="eval_map"):
        compare([*base, "--metric", "eval_map", "--", "--model", "resnet10t"])
    assert len(log.read_text().splitlines()) == 1
    assert compare([*base, "--reuse", "--", "--model", "resnet10t"]) == 0
    table = (out / "results.md").read_text()
    with pytest.raises(ValueError, match="was run with other flags"):
        compare([*base, "--reuse", "--", "--model", "resnet50"])
    assert (out / "results.md").read_text() == table
    assert compare([*base, "--reuse", "--", "--model", "resnet10t"]) == 0  # the same experiment: reused
    assert len(log.read_text().splitlines()) == 4  # the first run, kept by --reuse, and the three others


def test_attach_gaf_on_a_gafsgd_that_applies_gaf_is_refused():
    layer = torch.nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match="applies GAF in its step"):
        attach_gaf(GAFSGD(layer.parameters(), lr=0.1, gaf="atan"))
    attach_gaf(GAFSGD(layer.parameters(), lr=0.1, gaf=None)).remove()  # plain SGD in GAFSGD: allowed


@pytest.mark.parametrize("given, match", [
    (lambda ps: GAFSGD(ps, lr=0.05, momentum=0.9, gaf=None), "GAFSGD applies no GAF"),
    (lambda ps: GAFSGD(ps, lr=0.05, momentum=0.9, gaf="atan", alpha=0.3), "GAFSGD applies atan alpha=0.3"),
    (lambda ps: GAFSGD(ps, lr=0.05, momentum=0.9, gaf="tanh", placement="grad"), "GAFSGD applies tanh"),
])
def test_an_optimizer_passed_in_that_contradicts_the_gaf_arguments_is_an_error(tmp_path, given, match):
    model = TinyRegressor()
    with pytest.raises(ValueError, match=f"contradicts the GAF arguments: {match}"):
        SequentialGAFTrainer(model=model, args=tiny_args(tmp_path), train_dataset=TinyData(16),
                             optimizers=(given(model.parameters()), None))


def test_an_optimizer_passed_in_that_agrees_trains_and_a_hooked_one_is_compared(tmp_path):
    model = TinyRegressor()
    agreeing = GAFSGD(model.parameters(), lr=0.05, momentum=0.9, gaf="atan", alpha=0.1, beta=20.0)
    trainer = SequentialGAFTrainer(model=model, args=tiny_args(tmp_path), train_dataset=TinyData(16),
                                   optimizers=(agreeing, None))
    trainer.train()
    assert trainer.state.global_step > 0
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-3)
    attach_gaf(adamw, gaf="atan", alpha=0.2, beta=20.0)
    with pytest.raises(ValueError, match="AdamW has attach_gaf"):
        SequentialGAFTrainer(model=model, args=tiny_args(tmp_path / "b", optim="adamw_torch", optim_args=None,
                                                          gaf_placement="grad"),
                             train_dataset=TinyData(16), optimizers=(adamw, None))


CLASSIFICATION_PRESETS = ["sgd", "gaf", "gaf-grad", "clip-norm", "clip-value", "adamw", "adamw-gaf", "agc", "zclip",
                          "gc"]


@pytest.mark.parametrize("preset", CLASSIFICATION_PRESETS)
def test_every_preset_checkpoint_loads_with_weights_only(tmp_path, preset):
    """optimizer.pt holds only tensors, strings and numbers: transformers loads it with weights_only=True."""
    classification.main([*TINY, "--preset", preset, "--max_steps", "1", "--output_dir", str(tmp_path)])
    state = torch.load(tmp_path / "checkpoint-1" / "optimizer.pt", weights_only=True)
    assert state["param_groups"]


def test_a_clip_value_run_resumes_through_the_recipe(tmp_path):
    import shutil

    flags = [*TINY, "--preset", "clip-value", "--max_steps", "3", "--save_steps", "2"]
    classification.main([*flags, "--output_dir", str(tmp_path / "whole")])
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "whole" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    classification.main([*flags, "--output_dir", str(tmp_path / "resumed"), "--resume_from_checkpoint", "last"])
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())["final"]
    b = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["final"]
    assert a["eval_loss"] == b["eval_loss"] and a["eval_accuracy"] == b["eval_accuracy"]


def test_claim_outputs_names_every_earlier_result_and_an_unwritable_folder(tmp_path):
    from hf_gaf._outputs import claim_outputs

    (tmp_path / "report.json").write_text("{}")
    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit, match=r"report\.json, .*runs already exists.*--overwrite"):
        claim_outputs([tmp_path / "report.json", tmp_path / "runs", tmp_path / "new.md"], overwrite=False)
    claim_outputs([tmp_path / "report.json", tmp_path / "runs", tmp_path / "new" / "a.md"], overwrite=True)
    assert (tmp_path / "new").is_dir() and (tmp_path / "report.json").read_text() == "{}"  # checked, not written
    with pytest.raises(SystemExit, match=r"--out \(folder .*report\.json/sub\) is not writable"):
        claim_outputs([tmp_path / "report.json" / "sub" / "x.json"], overwrite=False)  # its folder is under a file


BENCHMARKS = {  # script, its flags for a run that would take long, and the report it writes into the folder
    "bench_optimizer_step": (["--models", "resnet10t", "--no-schedule"], "bench_optim.json"),
    "bench_map": (["--images", "50"], "bench_map.json"),
    "bench_trainer_map": (["--images", "8", "--repeats", "1"], "bench_trainer_map.json"),
    "bench_spikes": (["--seeds", "0", "--detectors", "detr", "--epochs-detr", "1"], "results.json"),
    "gpu_check": (["--device", "cpu", "--quick"], "gpu_check.json"),
    "study_depth": (["--archs", "mlp", "--depths", "2", "--activations", "tanh", "--presets", "sgd",
                     "--seeds", "0", "--epochs", "1", "--workers", "1"], "results.json"),
}


@pytest.mark.parametrize("script", BENCHMARKS)
def test_a_benchmark_refuses_to_replace_its_earlier_report_before_any_work(tmp_path, script, capsys):
    import importlib

    flags, report = BENCHMARKS[script]
    main = importlib.import_module(f"hf_gaf.recipes.{script}").main
    out = str(tmp_path / report) if report.startswith("bench_") else str(tmp_path)
    (tmp_path / report).write_text("an earlier run's numbers")
    with pytest.raises(SystemExit, match=f"{report} already exists.*pass --overwrite"):
        main([*flags, "--out", out])
    assert (tmp_path / report).read_text() == "an earlier run's numbers"
    assert "ms" not in capsys.readouterr().out  # nothing was timed or trained
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(SystemExit, match="is not writable"):  # a folder under a file: refused before the work too
        main([*flags, "--out", str(blocked / report) if report.startswith("bench_") else str(blocked / "sub")])


def test_compare_refuses_to_replace_finished_runs_unless_reuse_or_overwrite(tmp_path, monkeypatch, capsys):
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("FAKE_RECIPE_LOG", str(log))
    out = tmp_path / "cmp"
    base = ["--script", FAKE, "--presets", "sgd", "gaf", "--seeds", "0", "--out", str(out)]
    assert compare([*base, "--", "--model", "resnet10t"]) == 0
    first = (out / "gaf" / "seed-0" / "metrics.json").read_text()
    refused = r"already holds finished runs \(sgd/seed-0, gaf/seed-0\).*--reuse.*--overwrite"
    with pytest.raises(ValueError, match=refused):
        compare([*base, "--", "--model", "resnet10t"])
    assert len(log.read_text().splitlines()) == 2 and (out / "gaf" / "seed-0" / "metrics.json").read_text() == first
    with pytest.raises(SystemExit):
        compare([*base, "--reuse", "--overwrite", "--", "--model", "resnet10t"])
    assert "--reuse keeps the finished runs, --overwrite runs them again: pass one of them" in capsys.readouterr().err
    assert compare([*base, "--reuse", "--", "--model", "resnet10t"]) == 0
    assert len(log.read_text().splitlines()) == 2  # kept
    assert compare([*base, "--overwrite", "--", "--model", "resnet10t"]) == 0
    assert len(log.read_text().splitlines()) == 4  # both ran again


def test_a_demo_stops_before_anything_runs_when_an_earlier_demo_finished_its_runs(tmp_path):
    from hf_gaf.harness.demo import run_demo

    finished = tmp_path / "digits" / "gaf" / "seed-0"
    finished.mkdir(parents=True)
    (finished / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match=r"already holds finished runs \(gaf/seed-0\): pass --overwrite") as refused:
        run_demo(str(tmp_path), fast=True, tasks=["digits"])
    assert "--reuse" not in str(refused.value)  # the demo has no --reuse: the message names only its own flag
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]  # nothing written, not even the GAF plot


def test_a_demo_killed_while_making_its_data_runs_again_with_overwrite(tmp_path, monkeypatch):
    """Round 4, low: the demo's --overwrite did not reach its data step, so a demo killed while writing its
    synthetic VOC set (a folder without the finished marker) could be re-run by neither command."""
    from hf_gaf.detection.synthetic_voc import is_synthetic_voc
    from hf_gaf.harness import demo

    half = tmp_path / "voc-synth" / "VOCdevkit" / "VOC2007" / "JPEGImages"
    half.mkdir(parents=True)
    (half / "000001.jpg").write_bytes(b"cut short")

    class Reached(Exception):
        pass

    def stop(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(demo, "compare", stop)
    with pytest.raises(FileExistsError, match="--overwrite"):
        demo.run_demo(str(tmp_path), fast=True, tasks=["detr"])
    with pytest.raises(Reached):
        demo.run_demo(str(tmp_path), fast=True, tasks=["detr"], overwrite=True)
    assert is_synthetic_voc(str(tmp_path / "voc-synth"))

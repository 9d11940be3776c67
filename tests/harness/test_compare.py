import json
import statistics
from pathlib import Path

import pytest
from PIL import Image

from hf_gaf.harness.compare import main, summarize

ROOT = Path(__file__).resolve().parents[2]


def fake_run(folder: Path, final: float, curve: list[float], speed: float):
    folder.mkdir(parents=True)
    epochs = [{"epoch": i + 1, "eval_accuracy": v, "train_loss": 1.0 / (i + 1), "epoch_time_s": 2.0,
               "train_images_per_s": speed} for i, v in enumerate(curve)]
    (folder / "metrics.json").write_text(json.dumps({"final": {"eval_accuracy": final}, "epochs": epochs,
                                                     "train_images_per_s": speed}))


def test_summary_statistics_from_metrics_files(tmp_path):
    fake_run(tmp_path / "sgd" / "seed-0", 0.80, [0.5, 0.80], 100)
    fake_run(tmp_path / "sgd" / "seed-1", 0.84, [0.6, 0.84], 110)
    fake_run(tmp_path / "gaf" / "seed-0", 0.90, [0.7, 0.90], 99)
    fake_run(tmp_path / "gaf" / "seed-1", 0.86, [0.7, 0.86], 101)
    s = summarize(tmp_path, ["sgd", "gaf"], [0, 1], "eval_accuracy")
    assert s["table"]["gaf"]["mean"] == pytest.approx(0.88)
    assert s["table"]["gaf"]["std"] == pytest.approx(statistics.stdev([0.90, 0.86]))
    assert s["table"]["gaf"]["delta_vs_baseline"] == pytest.approx(0.88 - 0.82)
    assert s["table"]["gaf"]["speed_vs_baseline"] == pytest.approx(100 / 105)
    with pytest.raises(FileNotFoundError, match="seed-2"):
        summarize(tmp_path, ["sgd"], [2], "eval_accuracy")
    with pytest.raises(KeyError, match="eval_map"):
        summarize(tmp_path, ["sgd"], [0], "eval_map")


@pytest.mark.slow  # four recipe runs in subprocesses (~30 s); `make test-all`
def test_compare_end_to_end_on_a_tiny_run(tmp_path, capsys):
    out = tmp_path / "cmp"
    main(["--script", str(ROOT / "recipes/classification/train.py"), "--presets", "sgd", "gaf", "--seeds", "0",
          "--out", str(out), "--", "--max_steps", "6", "--max_train_samples", "96", "--max_eval_samples", "64",
          "--per_device_train_batch_size", "16", "--report_to", "none"])
    for name in ("results.md", "results.json", "curves.png"):
        assert (out / name).is_file()
    results = json.loads((out / "results.json").read_text())
    table = (out / "results.md").read_text()
    for preset in ("sgd", "gaf"):
        per_run = json.loads((out / preset / "seed-0" / "metrics.json").read_text())
        final = per_run["final"]["eval_accuracy"]
        assert results["table"][preset]["mean"] == final
        assert f"| {final:.4f} |" in table.replace(" **(best)**", "").replace(" (highest mean)", "")
    with Image.open(out / "curves.png") as png:
        png.verify()
    with Image.open(out / "curves.png") as png:
        assert png.size[0] >= 800 and png.size[1] >= 400
    assert "wrote" in capsys.readouterr().out


def test_compare_reports_a_failing_run(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("import sys; print('boom'); sys.exit(3)")
    with pytest.raises(RuntimeError, match=r"run sgd seed 0 failed \(exit 3\)[\s\S]*boom"):
        main(["--script", str(script), "--presets", "sgd", "--out", str(tmp_path / "o")])


def test_a_non_finite_seed_is_counted_reported_and_never_best(tmp_path):
    fake_run(tmp_path / "sgd" / "seed-0", 0.90, [0.90], 100)
    fake_run(tmp_path / "sgd" / "seed-1", 0.91, [0.91], 100)
    fake_run(tmp_path / "gaf" / "seed-0", 0.95, [0.95], 100)
    fake_run(tmp_path / "gaf" / "seed-1", float("nan"), [float("nan")], 100)
    s = summarize(tmp_path, ["sgd", "gaf"], [0, 1], "eval_accuracy")
    assert s["table"]["gaf"]["n_nonfinite"] == 1 and s["table"]["gaf"]["mean"] == pytest.approx(0.95)
    from hf_gaf.harness.compare import results_markdown

    table = results_markdown(s)
    assert "(1 of 2 seeds non-finite, left out)" in table
    assert "| sgd (highest mean) |" in table and "gaf **(best)**" not in table and "gaf (highest" not in table


def test_best_is_marked_only_when_the_paired_ci_shows_it(tmp_path):
    """"(best)" needs a "better" verdict; a higher mean whose CI contains 0 is only "(highest mean)"."""
    from hf_gaf.harness.compare import results_markdown

    for seed, (base, other) in enumerate([(0.80, 0.90), (0.82, 0.93), (0.81, 0.91)]):
        fake_run(tmp_path / "a" / "sgd" / f"seed-{seed}", base, [base], 100)
        fake_run(tmp_path / "a" / "gaf" / f"seed-{seed}", other, [other], 100)
    shown = results_markdown(summarize(tmp_path / "a", ["sgd", "gaf"], [0, 1, 2], "eval_accuracy"))
    assert "| gaf **(best)** |" in shown
    for seed, (base, other) in enumerate([(0.80, 0.95), (0.90, 0.85), (0.85, 0.86)]):
        fake_run(tmp_path / "b" / "sgd" / f"seed-{seed}", base, [base], 100)
        fake_run(tmp_path / "b" / "gaf" / f"seed-{seed}", other, [other], 100)
    noisy = results_markdown(summarize(tmp_path / "b", ["sgd", "gaf"], [0, 1, 2], "eval_accuracy"))
    assert "| gaf (highest mean) |" in noisy and "**(best)**" not in noisy


def test_a_baseline_that_is_not_compared_is_an_error_before_any_run(tmp_path):
    fake_run(tmp_path / "sgd" / "seed-0", 0.90, [0.90], 100)
    with pytest.raises(ValueError, match="'sdg' is not one of"):
        summarize(tmp_path, ["sgd"], [0], "eval_accuracy", baseline="sdg")
    assert summarize(tmp_path, ["sgd"], [0], "eval_accuracy")["baseline"] == "sgd"
    with pytest.raises(SystemExit):
        main(["--script", str(ROOT / "recipes/classification/train.py"), "--presets", "sgd", "gaf", "--baseline",
              "sdg", "--out", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()


def test_a_second_reference_preset_gets_its_own_paired_columns(tmp_path):
    from hf_gaf.harness.compare import results_markdown

    values = {"sgd": [0.80, 0.82, 0.81], "gaf": [0.90, 0.93, 0.91], "sgd-gain": [0.905, 0.925, 0.915]}
    for preset, finals in values.items():
        for seed, v in enumerate(finals):
            fake_run(tmp_path / preset / f"seed-{seed}", v, [v], 100)
    s = summarize(tmp_path, list(values), [0, 1, 2], "eval_accuracy", also_vs="sgd-gain")
    assert s["table"]["gaf"]["vs_baseline"]["verdict"] == "better"
    assert s["table"]["gaf"]["vs_also"]["verdict"] == "no difference shown"
    assert s["table"]["sgd-gain"]["vs_also"] is None and s["table"]["sgd"]["vs_also"] is None
    table = results_markdown(s)
    assert "| Δ vs sgd-gain [95 % CI] | verdict vs sgd-gain |" in table and "| reference |" in table
    with pytest.raises(ValueError, match="--also-vs 'adamw'"):
        summarize(tmp_path, list(values), [0, 1, 2], "eval_accuracy", also_vs="adamw")


def test_a_preset_at_chance_is_marked_and_gets_no_delta_based_verdict(tmp_path, capsys):
    """Newcomer's path, item 1: two models that learned nothing (0.031 vs 0.002 VOC07 mAP) read as "GAF hurts".
    A run whose metrics.json records it at chance level is marked in results.md and results.json, and no verdict
    is drawn for its preset (against the baseline or any reference)."""
    import math

    from hf_gaf.harness.compare import results_markdown, write_results

    def detection_run(folder, final, at_chance):
        fake_run(folder, final, [final], 10)
        report = json.loads((folder / "metrics.json").read_text())
        report["chance"] = {"metric": "eval_accuracy", "level": 0.05, "at_chance": at_chance}
        (folder / "metrics.json").write_text(json.dumps(report))

    for seed in (0, 1):
        detection_run(tmp_path / "sgd" / f"seed-{seed}", 0.031 + seed * 1e-3, True)
        detection_run(tmp_path / "gaf" / f"seed-{seed}", 0.002 + seed * 1e-3, True)
        detection_run(tmp_path / "adamw" / f"seed-{seed}", 0.30 + seed * 1e-2, False)
    s = summarize(tmp_path, ["sgd", "gaf", "adamw"], [0, 1], "eval_accuracy")
    assert s["table"]["gaf"]["n_at_chance"] == 2 and s["table"]["adamw"]["n_at_chance"] == 0
    for preset in ("gaf", "adamw"):  # against an at-chance baseline, or being at chance: no Δ, no verdict
        assert s["table"][preset]["vs_baseline"]["verdict"] == "no verdict: a run stayed at chance level"
        assert s["table"][preset]["vs_baseline"]["mean"] is None
    table = results_markdown(s)
    assert "| gaf **(at chance level: 2 of 2 seeds)**" not in table  # the mark follows the value
    assert "0.0025 ± 0.0007 [" in table and "**(at chance level: 2 of 2 seeds)**" in table
    assert "| adamw **(best)**" not in table and "no verdict: a run stayed at chance level" in table
    assert not any(math.isnan(v) for v in s["table"]["adamw"]["finals"])
    write_results(s, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["runs"]["gaf/seed-0"]["at_chance"] is True
    summarize(tmp_path, ["adamw"], [0, 1], "eval_accuracy")  # a preset that learned keeps its verdicts


def test_report_fields_agree_with_each_other(tmp_path):
    """Newcomer's path, item 6: s/epoch counted the first epoch (start-up, compilation) while images/s did not,
    so a preset read slower in one column and faster in the other; images/s printed as integers (0.52 as "1");
    one seed showed "± 0.0000"."""
    from hf_gaf.harness.compare import results_markdown

    for preset, first, steady, speed in (("sgd", 30.0, 20.0, 0.52), ("gaf", 25.0, 21.0, 0.50)):
        folder = tmp_path / preset / "seed-0"
        folder.mkdir(parents=True)
        epochs = [{"epoch": 1, "eval_accuracy": 0.5, "epoch_time_s": first},
                  {"epoch": 2, "eval_accuracy": 0.6, "epoch_time_s": steady}]
        (folder / "metrics.json").write_text(json.dumps({"final": {"eval_accuracy": 0.6}, "epochs": epochs,
                                                         "train_images_per_s": speed}))
    s = summarize(tmp_path, ["sgd", "gaf"], [0], "eval_accuracy")
    assert s["table"]["sgd"]["epoch_time_s"] == 20.0 and s["table"]["gaf"]["epoch_time_s"] == 21.0
    table = results_markdown(s)
    assert "| 20.00 | 0.52 | 1.000 |" in table and "| 21.00 | 0.5 | 0.962 |" in table
    assert "± 0.0000" not in table


def test_metrics_json_records_the_schedule_that_ran():
    from types import SimpleNamespace

    from hf_gaf.harness.metrics_json import SETTING_KEYS, recorded_settings

    args = SimpleNamespace(**{k: None for k in SETTING_KEYS})
    args.lr_scheduler_type, args.lr_milestones = "cosine", [0.67, 0.89]
    assert recorded_settings(args)["lr_scheduler_type"] == "multistep"
    args.lr_milestones = []
    assert recorded_settings(args)["lr_scheduler_type"] == "cosine"

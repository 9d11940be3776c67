"""Evidence a researcher can trust: confidence intervals and paired tests in compare, the α × β sweep and
its resume, GAF telemetry plots."""

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from hf_gaf.harness.compare import summarize, write_results
from hf_gaf.harness.paired_stats import ONE_SEED, mean_ci, paired_difference
from hf_gaf.harness.sweep import main as sweep
from tests.helpers.tiny import SequentialGAFTrainer, TinyData, TinyRegressor, tiny_args

ROOT = Path(__file__).resolve().parents[2]
FAKE = str(ROOT / "tests" / "helpers" / "fake_recipe.py")
T_975 = {2: 4.302653, 3: 3.182446}  # Student's t quantiles from a table, by degrees of freedom


def test_confidence_interval_by_hand():
    r = mean_ci([1.0, 2.0, 3.0, 4.0, float("nan")])
    sd = math.sqrt(((1.5 ** 2) * 2 + (0.5 ** 2) * 2) / 3)
    assert r["mean"] == 2.5 and r["std"] == pytest.approx(sd) and r["n"] == 4 and r["n_nonfinite"] == 1
    half = T_975[3] * sd / 2
    assert r["ci95"] == pytest.approx([2.5 - half, 2.5 + half], abs=1e-5)


def test_paired_difference_and_verdicts_by_hand():
    spans = paired_difference([0.90, 0.92, 0.91], [0.88, 0.89, 0.90])  # d = .02, .03, .01
    half = T_975[2] * 0.01 / math.sqrt(3)
    assert spans["mean"] == pytest.approx(0.02) and spans["ci95"] == pytest.approx([0.02 - half, 0.02 + half], abs=1e-6)
    assert spans["verdict"] == "no difference shown"
    assert spans["p_value"] == pytest.approx(0.0742, abs=5e-4)  # t = 0.02 / (0.01/sqrt 3) = 3.464, 2 df
    clear = paired_difference([0.95, 0.96, 0.97, 0.98], [0.90, 0.91, 0.93, 0.92])  # d = .05, .05, .04, .06
    assert clear["verdict"] == "better" and clear["ci95"][0] > 0
    assert (
        paired_difference([0.95, 0.96, 0.97, 0.98], [0.90, 0.91, 0.93, 0.92], greater_is_better=False)["verdict"]
        == "worse"
    )
    assert paired_difference([0.90, 0.91, 0.93, 0.92], [0.95, 0.96, 0.97, 0.98])["verdict"] == "worse"
    one = paired_difference([0.9], [0.8])
    assert one["verdict"] == ONE_SEED and one["ci95"] is None and one["p_value"] is None
    gap = paired_difference([0.9, float("nan"), 0.8], [0.8, 0.7, 0.75])
    assert gap["n"] == 2 and gap["n_unpaired"] == 1
    with pytest.raises(ValueError, match="one value per seed"):
        paired_difference([0.9, 0.8], [0.8])


def fake_run(folder: Path, final: float, gaf_stats=None):
    folder.mkdir(parents=True)
    report = {
        "final": {"eval_accuracy": final},
        "train_images_per_s": 10.0,
        "epochs": [{"epoch": 1, "eval_accuracy": final, "epoch_time_s": 1.0, "train_images_per_s": 10.0}],
    }
    if gaf_stats:
        report["gaf_stats"] = gaf_stats
    (folder / "metrics.json").write_text(json.dumps(report))


def test_compare_table_and_json_carry_the_statistics(tmp_path):
    telemetry = [
        {
            "step": s,
            "gaf/amplified": 0.5,
            "gaf/compressed": 0.4,
            "gaf/saturated": 0.1,
            "gaf/norm_before": 2.0,
            "gaf/norm_after": 1.0,
        }
        for s in (2, 4)
    ]
    for seed, (base, gaf) in enumerate([(0.80, 0.86), (0.82, 0.87), (0.81, 0.85)]):
        fake_run(tmp_path / "sgd" / f"seed-{seed}", base)
        fake_run(tmp_path / "gaf" / f"seed-{seed}", gaf, telemetry)
    summary = summarize(tmp_path, ["sgd", "gaf"], [0, 1, 2], "eval_accuracy")
    markdown = write_results(summary, tmp_path)
    paired = json.loads((tmp_path / "results.json").read_text())["table"]["gaf"]["vs_baseline"]
    assert paired["verdict"] == "better" and paired["n"] == 3 and paired["p_value"] < 0.05
    assert "| gaf **(best)** |" in markdown and "| better |" in markdown and "| baseline |" in markdown
    with Image.open(tmp_path / "gaf_stats.png") as png:
        assert png.format == "PNG"


def test_sweep_writes_heatmap_and_resumes_without_rerunning_finished_cells(tmp_path, monkeypatch):
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("FAKE_RECIPE_LOG", str(log))
    out = tmp_path / "sweep"
    grid = [
        "--script",
        FAKE,
        "--alphas",
        "0.1",
        "0.3",
        "--betas",
        "5",
        "20",
        "--seeds",
        "0",
        "1",
        "--out",
        str(out),
        "--",
        "--max_steps",
        "1",
    ]
    assert sweep(grid) == 0
    assert len(log.read_text().splitlines()) == 2 * (4 + 1)  # 4 cells + the baseline, 2 seeds
    summary = json.loads((out / "sweep.json").read_text())
    cell = next(c for c in summary["cells"] if c["alpha"] == 0.3 and c["beta"] == 20)
    assert cell["finals"] == pytest.approx([0.5 + 0.03 + 0.02, 0.5 + 0.03 + 0.02 + 0.01])
    assert cell["vs_baseline"]["mean"] == pytest.approx(0.05) and cell["vs_baseline"]["verdict"] == "better"
    with Image.open(out / "heatmap.png") as png:
        assert png.format == "PNG"
    assert "| 0.3 | 20 |" in (out / "results.md").read_text()
    # a stopped sweep: one run never finished; the same command with --reuse runs only that one
    (out / "alpha-0.1_beta-5" / "seed-1" / "metrics.json").unlink()
    log.write_text("")
    assert sweep(["--reuse", *grid]) == 0
    assert log.read_text().splitlines() == [
        "--preset gaf --gaf_alpha 0.1 --gaf_beta 5.0 --seed 1 --max_steps 1 "
        f"--output_dir {out / 'alpha-0.1_beta-5' / 'seed-1'} "
        "--overwrite_output_dir true --disable_tqdm true"
    ]
    # other recipe flags into the same folder would mix two experiments
    with pytest.raises(ValueError, match="recipe_args"):
        sweep(["--reuse", *grid[:-1], "2"])


def test_telemetry_plot_from_a_tiny_runs_logs(tmp_path):
    from hf_gaf.harness.training import run_training

    args = tiny_args(tmp_path, gaf_log_stats=True, logging_steps=2, logging_strategy="steps", eval_strategy="no")
    trainer = SequentialGAFTrainer(model=TinyRegressor(), args=args, train_dataset=TinyData(64))
    report = run_training(trainer, "gaf", n_train_images=64)
    steps = [e["step"] for e in report["gaf_stats"]]
    assert steps == [2, 4, 6, 8]
    assert all(0 <= e["gaf/amplified"] <= 1 and e["gaf/norm_after"] > 0 for e in report["gaf_stats"])
    with Image.open(tmp_path / "gaf_stats.png") as png:
        assert png.format == "PNG" and png.size[0] > 800
    assert torch.isfinite(torch.tensor([e["gaf/norm_before"] for e in report["gaf_stats"]])).all()


def test_study_depth_runs_a_tiny_grid_and_reports_paired_verdicts(tmp_path):
    from hf_gaf.recipes import study_depth

    assert (
        study_depth.main(
            [
                "--out",
                str(tmp_path),
                "--archs",
                "mlp",
                "--depths",
                "2",
                "--activations",
                "tanh",
                "--presets",
                "sgd",
                "gaf",
                "--seeds",
                "0",
                "1",
                "--epochs",
                "1",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "results.json").read_text())
    assert len(result["runs"]) == 4 and all(0 <= r["accuracy"] <= 1 for r in result["runs"])
    gaf = next(c for c in result["cells"] if c["preset"] == "gaf")
    assert gaf["vs_sgd"]["n"] == 2 and gaf["vs_sgd"]["verdict"] in ("better", "worse", "no difference shown")
    assert "| mlp | tanh | 2 |" in (tmp_path / "results.md").read_text()
    with Image.open(tmp_path / "accuracy_vs_depth.png") as png:
        assert png.format == "PNG"


def test_bench_optim_times_cold_caches_beside_hot_ones_and_rates_them_against_cold_sgd():
    """CPU: every step timed hot is timed cold too (after reading 1 GiB), and the cold ratios are to the fastest
    torch SGD step with cold caches, not to the hot baseline."""
    from hf_gaf.recipes import bench_optimizer_step as bench_optim

    names = ["torch SGD per-tensor", "torch SGD foreach", "GAFSGD per-tensor", "AdamW", "AdamW + attach_gaf"]
    report = bench_optim.bench("resnet10t", "cpu", repeats=2, warmup=2, names=names)
    cold = report["ms_cold_caches"]
    assert set(cold) == set(report["ms"]) == set(names) and all(v > 0 for v in cold.values())
    ratios = report["cold_cache_ratios"]
    fastest_sgd = min(("torch SGD per-tensor", "torch SGD foreach"), key=cold.get)
    assert ratios["best"]["torch SGD"] == fastest_sgd
    assert ratios["gafsgd_over_torch_sgd"] == pytest.approx(cold["GAFSGD per-tensor"] / cold[fastest_sgd])
    assert ratios["hook_on_adamw"] == pytest.approx(cold["AdamW + attach_gaf"] / cold["AdamW"])
    text = bench_optim.table(report)
    assert f"x {fastest_sgd}, cold" in text and "steady state, cold caches: GAFSGD/torch SGD = " in text


def test_bench_spikes_counts_divergences_and_pairs_by_seed(tmp_path):
    """The spike benchmark's table from written runs: a non-finite loss or a last epoch above the first is a
    divergence; mAP pairs by seed against the spiked baseline and the clean one."""
    from hf_gaf.harness import runner
    from hf_gaf.recipes import bench_spikes

    jobs = bench_spikes.jobs_for(["sgd", "gaf"], ["--grad_spike_steps", "3"])
    assert [j.name for j in jobs] == ["clean", "sgd", "gaf"] and jobs[0].flags == ("--preset", "sgd")
    runs = {  # job: per seed (epoch losses, final mAP)
        "clean": [([2.0, 1.5], 0.30), ([2.0, 1.4], 0.32)],
        "sgd": [([2.0, float("nan")], 0.0), ([2.0, 2.5], 0.01)],
        "gaf": [([2.0, 1.6], 0.28), ([2.0, 1.4], 0.33)],
    }
    for name, per_seed in runs.items():
        for seed, (losses, value) in enumerate(per_seed):
            folder = runner.run_dir(tmp_path, name, seed)
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps({
                "epochs": [{"epoch": i + 1, "train_loss": v} for i, v in enumerate(losses)],
                "final": {"eval_voc07_map": value}, "wall_time_s": 10.0, "global_step": 6}))
    rows = {r["job"]: r for r in bench_spikes.summarize(tmp_path, jobs, [0, 1])}
    assert [rows[j]["diverged"] for j in ("clean", "sgd", "gaf")] == [0, 2, 0]
    assert rows["gaf"]["vs_baseline"]["mean"] == pytest.approx((0.28 + 0.32) / 2)
    assert rows["gaf"]["vs_clean"]["mean"] == pytest.approx((-0.02 + 0.01) / 2)
    assert rows["sgd"]["vs_baseline"] is None and rows["clean"]["vs_clean"] is None
    assert rows["gaf"]["loss_vs_clean"] == pytest.approx((1.6 / 1.5 + 1.0) / 2)
    assert math.isnan(rows["sgd"]["loss_vs_clean"])  # a non-finite final loss has no ratio
    table = bench_spikes.markdown({"steps": [3], "scale": 100.0, "seeds": [0, 1], "minutes": 1.0,
                                   "detectors": {"detr": {"epochs": 2, "steps": 6, "rows": list(rows.values())}}})
    assert "| sgd | 2/2 |" in table and "| gaf | 0/2 |" in table and "x100 on optimizer steps 3" in table

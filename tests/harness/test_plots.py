"""hf_gaf.harness.plots in process: each plot writes a readable PNG of a useful size."""

from PIL import Image

from hf_gaf.harness.plots import plot_curves, plot_gaf, plot_gaf_stats, plot_gaf_stats_by_part, telemetry_parts


def test_the_plots_write_pngs(tmp_path):
    plot_gaf(str(tmp_path / "f.png"), "tanh", 0.2, 10.0)
    plot_curves({"sgd": {"eval_accuracy": [[0.5, 0.7], [0.4, 0.8]], "train_loss": [[1.0, 0.5], [1.1, 0.4]]}},
                "eval_accuracy", str(tmp_path / "c.png"), title="t")
    stats = [[{"step": s, "gaf/amplified": 0.5, "gaf/compressed": 0.1, "gaf/saturated": 0.0,
               "gaf/norm_before": 1.0, "gaf/norm_after": 1.5} for s in (2, 4)]]
    plot_gaf_stats({"gaf": stats}, str(tmp_path / "s.png"))
    by_part = [{**e, **{f"gaf/{part}/{k.removeprefix('gaf/')}": v for part in ("backbone", "decoder")
                        for k, v in e.items() if k != "step"}} for e in stats[0]]
    assert telemetry_parts(by_part) == ["backbone", "decoder"] and telemetry_parts(stats[0]) == []
    plot_gaf_stats_by_part(by_part, str(tmp_path / "p.png"))
    for name in ("f.png", "c.png", "s.png", "p.png"):
        with Image.open(tmp_path / name) as png:
            assert png.format == "PNG" and png.size[0] >= 600, name

import contextlib
import io
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from hf_gaf.harness.cli import main

ROOT = Path(__file__).resolve().parents[2]
HF_GAF = str(Path(sys.executable).with_name("hf-gaf"))


def run(*args) -> SimpleNamespace:
    """``hf-gaf ARGS`` in this process (the entry point itself is checked once, in a subprocess)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse: --help, bad choices
            code = exit_.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def run_entry_point(*args, timeout=120):
    return subprocess.run([HF_GAF, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_the_installed_command_runs():
    proc = run_entry_point("plot-gaf", "--alpha", "-1")
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == "hf-gaf plot-gaf: error: GAF alpha must be finite and > 0, got alpha=-1.0"
    )


@pytest.mark.parametrize(
    "command", [[], ["make-voc"], ["make-trees"], ["plot-gaf"], ["compare"], ["sweep"], ["demo"], ["predict"],
                ["evaluate"]]
)
def test_help_of_every_command(command):
    proc = run(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    assert "(default: None)" not in proc.stdout  # a flag left out is explained by its help, not "None"


def test_evaluate_shows_and_takes_only_the_flags_it_uses():
    """Round 4, low (and the newcomer's path, item 5): evaluate listed the recipes' training flags (--image_size,
    --resize_mode, --hflip, --train_json, ...) and ignored them; the saved model fixes its canvas and classes."""
    shown = run("evaluate", "--help").stdout
    for flag in ("--voc_root", "--eval_json", "--eval_images", "--eval_split", "--eval_years", "--data_format",
                 "--max_eval_samples", "--skip_unknown_classes", "--compat", "--model", "--out"):
        assert flag in shown, flag
    for flag in ("--image_size", "--resize_mode", "--hflip", "--max_zoom_out", "--iou_crop", "--train_json",
                 "--train_images", "--train_split", "--max_train_samples", "--classes", "--years "):
        assert flag not in shown, flag


def test_make_voc_and_plot_gaf_write_valid_files(tmp_path):
    proc = run("make-voc", str(tmp_path / "voc"), "--n-train", "6", "--n-test", "3", "--image-size", "64")
    assert proc.returncode == 0, proc.stderr
    base = tmp_path / "voc" / "VOCdevkit" / "VOC2007"
    assert len(list((base / "JPEGImages").glob("*.jpg"))) == 9
    assert (base / "ImageSets" / "Main" / "test.txt").read_text().split() == ["000006", "000007", "000008"]
    proc = run("plot-gaf", "--kind", "tanh", "--alpha", "0.2", "--beta", "10", "--out", str(tmp_path / "f.png"))
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "f.png") as png:
        assert png.format == "PNG" and png.size[0] > 600


@pytest.mark.parametrize(
    "args, message",
    [
        (["plot-gaf", "--alpha", "-1"], "alpha must be finite and > 0"),
        (["make-voc", "/tmp/x", "--classes", "hexagon"], "unknown class names"),
        (["compare", "--script", "nope.py", "--presets", "sgd", "--out", "/tmp/x"], "does not exist"),
        (["sweep", "--script", "nope.py", "--alphas", "0.1", "--betas", "5", "--out", "/tmp/x"], "does not exist"),
        (["predict", "--model", "/no/such/model", "--images", "/tmp", "--out", "/tmp/x"], "not a folder"),
        (["demo", "--task", "segmentation"], "invalid choice"),
        (["demo", "--epochs", "-1"], "--epochs -1: need at least 1"),
        (["plot-gaf", "--out", "/no/such/folder/f.png"], "does not exist or is not writable"),
        (["plot-gaf", "--out", "/tmp/f.txt"], "must end in .png"),
        (["make-trees", "/tmp/x", "--wheel", "/tmp"], "is a folder; pass the wheel file itself"),
        (["make-voc", "/dev/null/voc"], "/dev/null/voc: Not a directory"),
        (["demo", "--fast", "--out", "/dev/null/demo"], "Not a directory"),
        (["compare", "--script", __file__, "--presets", "sgd", "--out", "/dev/null/c"], "is not a writable folder"),
        (["evaluate", "--model", "/tmp", "--out", "/tmp/x", "--image_size", "64"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_are_one_line_errors(args, message):
    proc = run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "error" in line]) == 1


@pytest.mark.slow  # six recipe runs in subprocesses (~100 s); `make test-all`
def test_reduced_demo_end_to_end(tmp_path):
    start = time.perf_counter()
    proc = run_entry_point("demo", "--fast", "--out", str(tmp_path / "demo"), timeout=400)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "demo"
    summary = (out / "results.md").read_text()
    for task in ("digits", "detr", "faster_rcnn"):
        assert f"| {task} |" in summary
        assert (out / task / "curves.png").is_file() and (out / task / "results.md").is_file()
    assert (out / "gaf_function.png").is_file()
    assert (out / "detr" / "scratch-adamw-gaf" / "seed-0" / "predictions.png").is_file()
    assert (out / "faster_rcnn" / "gaf" / "seed-0" / "predictions.png").is_file()
    assert "files:" in proc.stdout and str(out / "results.md") in proc.stdout
    assert elapsed < 180, f"the reduced demo took {elapsed:.0f} s"


def test_make_voc_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    """A real VOC tree (ids from 000001) must survive: make-voc stops with one line naming --overwrite."""
    user = tmp_path / "data" / "VOCdevkit" / "VOC2007" / "Annotations"
    user.mkdir(parents=True)
    (user / "000001.xml").write_text("<annotation>mine</annotation>")
    (tmp_path / "data" / "notes.txt").write_text("keep me")
    proc = run("make-voc", str(tmp_path / "data"), "--n-train", "3", "--n-test", "1", "--image-size", "64")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert (user / "000001.xml").read_text() == "<annotation>mine</annotation>"
    proc = run(
        "make-voc", str(tmp_path / "data"), "--n-train", "3", "--n-test", "1", "--image-size", "64", "--overwrite"
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in user.iterdir()) == ["000000.xml", "000001.xml", "000002.xml", "000003.xml"]
    assert "mine" not in (user / "000001.xml").read_text()
    assert (tmp_path / "data" / "notes.txt").read_text() == "keep me"  # only VOCdevkit/VOC2007 is replaced
    (tmp_path / "file").write_text("x")
    proc = run("make-voc", str(tmp_path / "file"))
    assert proc.returncode == 2 and "is a file" in proc.stderr and "Traceback" not in proc.stderr


def test_hf_gaf_help_starts_without_importing_the_training_stack():
    """Issue "newcomer's path", item 8: `hf-gaf --help` imported torch, transformers, datasets, scipy and
    matplotlib (6 s); the top-level help needs none of them (a command's own flags load what they need)."""
    import subprocess
    import sys

    heavy = "('torch', 'transformers', 'datasets', 'scipy', 'matplotlib')"
    code = ("import sys\nfrom hf_gaf.harness.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
            f"    pass\nprint(sorted(m for m in {heavy} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "make-voc" in out.stdout and out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr

"""The runner under compare and sweep (hf_gaf.harness.runner): one meaning of --reuse and --overwrite in both,
a record per run, and a table that never mixes two experiments. The recipe is tests/helpers/fake_recipe.py."""

import json
from pathlib import Path

import pytest

from hf_gaf.harness.compare import main as compare
from hf_gaf.harness.runner import RUN_RECORD
from hf_gaf.harness.sweep import main as sweep

ROOT = Path(__file__).resolve().parents[2]
FAKE = str(ROOT / "tests" / "helpers" / "fake_recipe.py")


@pytest.fixture
def calls(tmp_path, monkeypatch):
    """The fake recipe's call log: a function giving the number of runs started so far."""
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("FAKE_RECIPE_LOG", str(log))
    return lambda: len(log.read_text().splitlines()) if log.is_file() else 0


def command(kind: str, out: Path, *flags: str, recipe: tuple[str, ...] = ("--model", "a")) -> list[str]:
    if kind == "compare":
        head = ["--script", FAKE, "--presets", "sgd", "gaf", "--seeds", "0", "--out", str(out)]
    else:
        head = ["--script", FAKE, "--alphas", "0.1", "--betas", "5", "--seeds", "0", "--out", str(out)]
    return [*head, *flags, "--", *recipe]


RUNNERS = {"compare": compare, "sweep": sweep}


@pytest.mark.parametrize("kind", ["compare", "sweep"])
def test_both_runners_refuse_finished_runs_resume_with_reuse_and_rerun_with_overwrite(kind, tmp_path, calls):
    run, out = RUNNERS[kind], tmp_path / "out"
    assert run(command(kind, out)) == 0
    assert calls() == 2
    with pytest.raises(ValueError, match=r"already holds finished runs .*--reuse.*--overwrite"):
        run(command(kind, out))
    assert calls() == 2
    assert run(command(kind, out, "--reuse")) == 0 and calls() == 2  # kept
    finished = sorted(out.glob("*/seed-0/metrics.json"))
    finished[0].unlink()  # a run that was stopped: --reuse runs only it
    assert run(command(kind, out, "--reuse")) == 0 and calls() == 3
    assert run(command(kind, out, "--overwrite")) == 0 and calls() == 5  # both again


def test_sweep_overwrite_replaces_only_its_own_runs_never_the_folder(tmp_path, calls):
    """Round 4, item 2: --overwrite into a folder holding an earlier sweep of other settings deleted the whole
    --out (unrelated runs and the user's files); it may replace only what the command itself writes."""
    out = tmp_path / "out"
    assert sweep(command("sweep", out, recipe=("--model", "a"))) == 0
    (out / "notes.txt").write_text("mine")
    other = out / "baseline-sgd" / "seed-7"
    other.mkdir()
    (other / "metrics.json").write_text("{}")
    assert sweep(command("sweep", out, "--overwrite", recipe=("--model", "b"))) == 0
    assert (out / "notes.txt").read_text() == "mine" and (other / "metrics.json").read_text() == "{}"
    record = json.loads((out / "alpha-0.1_beta-5" / "seed-0" / RUN_RECORD).read_text())
    assert record["recipe_args"] == ["--model", "b"] and record["job_flags"][:2] == ["--preset", "gaf"]


def test_reuse_never_mixes_runs_of_other_flags_into_one_table(tmp_path, calls):
    """Round 4, item 6: compare.json recorded only the last call's flags, so sgd at one lr, then gaf at other
    flags, then both with --reuse gave one table of two experiments. Each run knows its own flags now."""
    out = tmp_path / "cmp"
    base = ["--script", FAKE, "--seeds", "0", "--out", str(out)]
    assert compare([*base, "--presets", "sgd", "--", "--learning_rate", "0.5"]) == 0
    assert compare([*base, "--presets", "gaf", "--", "--learning_rate", "0.1"]) == 0
    with pytest.raises(ValueError, match=r"sgd/seed-0 was run with other flags \(recipe_args: \['--learning_rate', "
                                         r"'0.5'\] there, \['--learning_rate', '0.1'\] now\)"):
        compare([*base, "--presets", "sgd", "gaf", "--reuse", "--", "--learning_rate", "0.1"])
    with pytest.raises(ValueError, match="one table never mixes two experiments"):
        compare([*base, "--presets", "sgd", "gaf", "--summarize-only", "--", "--learning_rate", "0.1"])
    assert "| sgd" not in (out / "results.md").read_text()  # the last table is gaf's alone, never the mix
    assert calls() == 2


def test_a_finished_run_without_a_record_is_not_reused_blindly(tmp_path, calls):
    out = tmp_path / "cmp"
    folder = out / "sgd" / "seed-0"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text("{}")  # made by hand or by an earlier hf_gaf
    with pytest.raises(ValueError, match=f"has no {RUN_RECORD}, so its flags are unknown"):
        compare(command("compare", out, "--reuse"))
    assert calls() == 0


@pytest.mark.parametrize("kind", ["compare", "sweep"])
def test_the_shared_flags_are_checked_the_same_way(kind, tmp_path, capsys):
    for flags, message in ((("--reuse", "--overwrite"), "pass one of them"),
                           (("--summarize-only", "--reuse"), "takes neither --reuse nor --overwrite")):
        with pytest.raises(SystemExit):
            RUNNERS[kind](command(kind, tmp_path / "o", *flags))
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind, flags, named", [
    ("compare", ["--seeds", "0", "0"], "--seeds names 0 more than once"),
    ("compare", ["--presets", "sgd", "gaf", "sgd"], "--presets names sgd more than once"),
    ("sweep", ["--alphas", "0.1", "0.1"], "--alphas names 0.1 more than once"),
])
def test_a_repeated_seed_or_cell_is_refused_not_counted_twice(kind, flags, named, tmp_path, capsys):
    """A repeated seed would enter a table's mean and CI twice, as if it were independent evidence."""
    with pytest.raises(SystemExit):
        RUNNERS[kind]([*command(kind, tmp_path / "o")[:-3], *flags, "--", "--model", "a"])
    assert named in capsys.readouterr().err


def test_a_run_in_progress_shows_its_latest_progress_line_and_its_log(tmp_path, capsys):
    """Newcomer's path, item 3: a comparison was silent for a whole run. The runner names each run's log and
    shows the run's latest progress line (step, epoch, metric, ETA) while it runs."""
    from types import SimpleNamespace

    from hf_gaf.harness.metrics_json import progress_line
    from hf_gaf.harness.runner import latest_progress, run_one

    state = SimpleNamespace(global_step=50, max_steps=200, epoch=1.0, num_train_epochs=4)
    line = progress_line(state, "accuracy", {"eval_accuracy": 0.8125}, 120.0)
    assert line == "[hf_gaf progress] step 50/200, epoch 1.0/4 accuracy 0.8125, 2.0 min, ETA 6.0 min"
    log = tmp_path / "log.txt"
    log.write_text("noise\n" + line + "\nmore noise\n")
    assert latest_progress(log) == "step 50/200, epoch 1.0/4 accuracy 0.8125, 2.0 min, ETA 6.0 min"
    script = tmp_path / "slow.py"
    script.write_text("import sys, time, pathlib\nprint('[hf_gaf progress] step 1/2', flush=True)\ntime.sleep(3)\n"
                      "out = pathlib.Path(sys.argv[sys.argv.index('--output_dir') + 1])\n"
                      "(out / 'metrics.json').write_text('{}')\n")
    shown = []
    bar = SimpleNamespace(set_postfix_str=lambda text, refresh: shown.append(text))
    run_one(str(script), tmp_path / "run", [], label="sgd seed 0", bar=bar)
    assert "sgd seed 0: step 1/2" in shown
    captured = capsys.readouterr()
    assert f"sgd seed 0: running, log {tmp_path / 'run' / 'log.txt'}" in captured.out + captured.err

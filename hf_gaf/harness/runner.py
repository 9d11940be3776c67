"""The runner under ``hf-gaf compare`` and ``hf-gaf sweep``: a recipe run once per (job, seed), each in its own
process, into ``OUT/<job>/seed-<s>/`` with its log in ``log.txt`` and its record in ``run.json``.

The record holds what made the run (the script, the job's flags, the seed and the recipe flags after ``--``),
so a folder knows its own experiment. The rules, the same in both commands:

- finished runs (a ``metrics.json``) of the command's jobs and seeds already in ``OUT`` stop it before any run,
  naming them; ``--reuse`` keeps them and runs the rest, but only runs whose record equals what this command
  would run (a run of other flags is named and refused); ``--overwrite`` runs them again. Nothing else in
  ``OUT`` is touched by either: only the run folders of this command's jobs and seeds are written;
- a summary reads only runs of one experiment: runs whose records name another script or other recipe flags
  are refused, naming them (:func:`check_one_experiment`);
- a ``--metric`` that the runs do not report stops the command after the first run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .._outputs import unwritable

RUN_RECORD = "run.json"
PROGRESS = "[hf_gaf progress]"  # the start of the line a recipe prints after each evaluation (shown while it runs)


@dataclass(frozen=True)
class Job:
    """One line of an experiment: its folder name under ``OUT`` and the recipe flags that make it."""

    name: str
    flags: tuple[str, ...]


def run_dir(out: Path, name: str, seed: int) -> Path:
    return out / name / f"seed-{seed}"


def run_record(script: str, job: Job, seed: int, recipe_args: list[str]) -> dict:
    """What makes the run of ``job`` with ``seed`` (stored as ``run.json`` in its folder)."""
    return {"script": os.path.abspath(script), "job": job.name, "job_flags": list(job.flags), "seed": seed,
            "recipe_args": list(recipe_args)}


def read_record(folder: Path) -> dict | None:
    path = folder / RUN_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def run_one(script: str, folder: Path, flags: list[str], launcher: list[str] | None = None, label: str = "",
            bar=None) -> float:
    """Run ``script`` with ``flags`` into ``folder`` (its own process, log in ``folder/log.txt``, named on the
    console); while it runs, the ``bar``'s postfix shows its latest progress line (step, epoch, metric, ETA).
    Return the seconds it took; stop with the log's tail (and ``label``) if it fails."""
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "log.txt"
    cmd = [*(launcher or [sys.executable]), script, *flags, "--output_dir", str(folder), "--overwrite_output_dir",
           "true", "--disable_tqdm", "true"]
    tqdm.write(f"  {label or folder}: running, log {log_path}")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        while True:
            try:
                code = process.wait(timeout=2)
                break
            except subprocess.TimeoutExpired:
                if bar is not None:
                    bar.set_postfix_str(f"{label}: {latest_progress(log_path)}", refresh=True)
            except BaseException:  # Ctrl-C: the run ends with the runner
                process.kill()
                raise
    if code != 0 or not (folder / "metrics.json").is_file():
        tail = log_path.read_text().splitlines()[-25:]
        raise RuntimeError(f"run {label or folder} failed (exit {code}); last lines of {log_path}:\n" + "\n".join(tail))
    return time.perf_counter() - start


def latest_progress(log_path: Path) -> str:
    """The newest progress line of a run's log (without its marker), or "starting" before the first."""
    with open(log_path, "rb") as f:
        f.seek(max(0, f.seek(0, 2) - 8192))
        lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.startswith(PROGRESS)]
    return lines[-1].removeprefix(PROGRESS).strip() if lines else "starting"


def final_metric(folder: Path, metric: str) -> float:
    """The final ``metric`` of the run in ``folder``; a ``KeyError`` listing the metrics it has otherwise."""
    path = folder / "metrics.json"
    report = json.loads(path.read_text())
    if metric not in report["final"]:
        raise KeyError(
            f"{path} has no final {metric!r}; --metric must be one of {sorted(report['final'])} (the runs "
            "so far are kept: run the same command again with the right --metric and --reuse)"
        )
    return report["final"][metric]


REUSE_OR_OVERWRITE = "pass --reuse to keep them and run the rest, --overwrite to run them all again"


def check_finished_runs(out: Path, records: dict[Path, dict], reuse: bool, overwrite: bool,
                        remedy: str = REUSE_OR_OVERWRITE) -> None:
    """Before any run: ``records`` maps each run folder of the command to the record it would write. Finished
    runs among them stop the command (a ``ValueError`` naming them and ``remedy``, the caller's flags) unless
    ``overwrite`` (they run again) or ``reuse``; with ``reuse``, a finished run recorded with other flags, or
    without a record, is refused, naming it and what differs."""
    finished = [folder for folder in records if (folder / "metrics.json").is_file()]
    if finished and not (reuse or overwrite):
        listed = ", ".join(str(f.relative_to(out)) for f in finished)
        raise ValueError(f"--out {out} already holds finished runs ({listed}): {remedy}, or choose another --out")
    if reuse:
        for folder in finished:
            recorded = read_record(folder)
            if recorded is None:
                raise ValueError(f"--reuse: {folder} has no {RUN_RECORD}, so its flags are unknown; run it again "
                                 "with --overwrite, or choose another --out")
            changed = [k for k, v in records[folder].items() if recorded.get(k) != v]
            if changed:
                shown = "; ".join(f"{k}: {recorded.get(k)!r} there, {records[folder][k]!r} now" for k in changed)
                raise ValueError(f"--reuse: {folder} was run with other flags ({shown}); reusing it would mix two "
                                 "experiments: choose another --out or pass --overwrite instead of --reuse")


def check_one_experiment(folders: list[Path]) -> None:
    """The runs of one table share their script and recipe flags: a ``ValueError`` naming two runs that differ
    (runs without a record, made by hand or by an earlier hf_gaf, are only accepted when none has one)."""
    records = {folder: read_record(folder) for folder in folders}
    known = {f: r for f, r in records.items() if r is not None}
    if not known:
        return
    unknown = [str(f) for f, r in records.items() if r is None]
    if unknown:
        raise ValueError(f"{', '.join(unknown)} has no {RUN_RECORD} while other runs do: their flags cannot be "
                         "checked to be the same experiment; run them again with --overwrite")
    (first, ref), *rest = known.items()
    for folder, record in rest:
        for key in ("script", "recipe_args"):
            if record.get(key) != ref.get(key):
                raise ValueError(f"{folder} and {first} were run with other {key} ({record.get(key)!r} vs "
                                 f"{ref.get(key)!r}); one table never mixes two experiments")


def run_jobs(script: str, jobs: list[Job], seeds: list[int], out: Path, recipe_args: list[str], *,
             reuse: bool = False, overwrite: bool = False, launcher: list[str] | None = None,
             metric: str | None = None, desc: str = "runs") -> None:
    """Run every (job, seed), seed-major (early results cover every job), under the rules of the module
    docstring; stop with the log's tail if one fails, and after the first run whose ``metrics.json`` lacks
    ``metric``."""
    todo = [(job, seed) for seed in seeds for job in jobs]
    records = {run_dir(out, job.name, seed): run_record(script, job, seed, recipe_args) for job, seed in todo}
    check_finished_runs(out, records, reuse, overwrite)
    why = unwritable(out)  # before the first run, not after it
    if why is not None:
        raise ValueError(f"--out {out} is not a writable folder ({why}); choose another --out")
    bar = tqdm(todo, desc=desc, unit="run")
    for job, seed in bar:
        folder = run_dir(out, job.name, seed)
        bar.set_postfix(run=job.name, seed=seed)
        if not (reuse and (folder / "metrics.json").is_file()):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.json").unlink(missing_ok=True)  # an --overwrite run is unfinished until it ends
            (folder / RUN_RECORD).write_text(json.dumps(records[folder], indent=2))
            seconds = run_one(script, folder, [*job.flags, "--seed", str(seed), *recipe_args], launcher,
                              label=f"{job.name} seed {seed}", bar=bar)
            chance = json.loads((folder / "metrics.json").read_text()).get("chance", {})
            note = (f" — at chance level ({chance['metric']}); see {folder / 'log.txt'}" if chance.get("at_chance")
                    else "")
            tqdm.write(f"  {job.name:<34s} seed {seed}: {seconds:5.1f} s{note}")
        if metric is not None:
            final_metric(folder, metric)


def check_references(names: list[str], **references: str | None) -> None:
    """Each reference (``baseline=...``, ``also_vs=...``) must be one of ``names``: a ``ValueError`` naming
    the flag (``--baseline``, ``--also-vs``) otherwise."""
    for key, name in references.items():
        if name is not None and name not in names:
            raise ValueError(f"--{key.replace('_', '-')} {name!r} is not one of the compared presets {names}")


def default_metric(script: str) -> str:
    """The main metric of a recipe: VOC07 mAP for the detection recipes, top-1 accuracy otherwise."""
    from ..detection.families import FAMILIES

    detection = {f"{f.recipe}.py" for f in FAMILIES.values()}  # each family's recipe script
    return "eval_voc07_map" if os.path.basename(script) in detection else "eval_accuracy"


def add_runner_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags ``compare`` and ``sweep`` share (arguments after ``--`` go to the recipe)."""
    parser.add_argument("--script", required=True, help="recipe script, e.g. recipes/classification/train.py")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="seeds of every run; runs of one seed pair up (same data order and initial weights)")
    parser.add_argument("--metric", default=None, help="main metric, a key of metrics.json's 'final' (default: "
                        "eval_voc07_map for the detection recipes, eval_accuracy otherwise)")
    parser.add_argument("--out", required=True, help="output folder (one subfolder per run)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep finished runs recorded with the same flags and run the rest")
    parser.add_argument("--overwrite", action="store_true",
                        help="run again the finished runs of this command (nothing else in --out is touched)")
    parser.add_argument("--summarize-only", action="store_true",
                        help="run nothing; recompute the results from the finished runs (e.g. with another --metric)")
    parser.add_argument("--launcher", default=None,
                        help="command that starts each run instead of python, e.g. 'accelerate launch --config_file X'")
    return parser


def check_runner_args(args: argparse.Namespace) -> None:
    """What can be wrong with the shared flags before any run (a ``ValueError`` naming the flag)."""
    if not os.path.isfile(args.script):
        raise ValueError(f"--script {args.script!r} does not exist")
    if args.reuse and args.overwrite:
        raise ValueError("--reuse keeps the finished runs, --overwrite runs them again: pass one of them")
    if args.summarize_only and (args.reuse or args.overwrite):
        raise ValueError("--summarize-only reads the finished runs; it takes neither --reuse nor --overwrite")
    check_distinct("--seeds", args.seeds)


def check_distinct(flag: str, values: list | None) -> None:
    """A list flag names each value once: a repeated seed or preset would be counted twice in a table's mean
    and CI as if it were independent evidence (a ``ValueError`` naming it)."""
    repeated = sorted({v for v in values or [] if values.count(v) > 1}, key=str)
    if repeated:
        raise ValueError(f"{flag} names {', '.join(map(str, repeated))} more than once")


def split_recipe_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` before ``--`` and after it (the recipe's flags)."""
    if "--" not in argv:
        return argv, []
    return argv[: argv.index("--")], argv[argv.index("--") + 1 :]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each default, except ``None`` (a flag left out), whose meaning its help says."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default is None else super()._get_help_string(action)


def runner_main(argv: list[str] | None, prog: str, description: str, add, check, run_) -> int:
    """A runner's script entry (``compare``, ``sweep``): its flags (``add``) before ``--``, the recipe's after;
    ``check`` errors become the parser's one-line error before anything runs; then ``run_``."""
    argv, recipe_args = split_recipe_args(list(sys.argv[1:] if argv is None else argv))
    parser = add(argparse.ArgumentParser(prog=prog, description=description,
                                         formatter_class=HelpFormatter))
    args = parser.parse_args(argv)
    try:
        check(args)
    except ValueError as err:
        parser.error(str(err))
    return run_(args, recipe_args)

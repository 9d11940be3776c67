"""Optimizer-step benchmark: GAFSGD against torch SGD on the parameter sets of timm models.

Times one ``optimizer.step()`` (random gradients, no forward/backward) for torch SGD (foreach,
per-tensor and, on CUDA, fused), a paper-style per-parameter GAF loop, each GAFSGD path, and AdamW
with and without ``attach_gaf`` (eager and compiled), all in this one process, and reports medians, the
first steps' time and the steady-state ratios: the fastest GAFSGD path to the fastest torch SGD, the
faster ``attach_gaf`` path to AdamW. On CPU each is timed twice: on consecutive steps (hot caches: the
parameters, gradients and state partly stay in the caches from the step before) and on steps that each
follow a read of 1 GiB elsewhere (cold caches, as in training, where a forward and backward pass run
between two steps).

On CPU it also follows the default schedule of ``GAFSGD()`` and of AdamW with ``attach_gaf()``
(:mod:`hf_gaf.compiled_step`: eager, compiling in a helper process from the schedule's ``start_step``, the
compiled pass from its ``switch_step``) step by step in a fresh process, twice: with an empty Inductor cache in a
temporary folder (cold) and again with that cache (warm). Reported: the longest single step (what blocks a
training loop), and the steady median after the switch.

    python recipes/bench_optimizer_step.py --models resnet50 resnet10t --repeats 30 --out runs/bench_optim.json

An existing report at ``--out`` (or a folder that cannot take one) stops it before the first step, unless
``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch

from hf_gaf import GAFSGD, attach_gaf
from hf_gaf._outputs import claim_outputs
from hf_gaf.compiled_step import CompileSchedule

COMPILE_SWITCH_STEP = CompileSchedule().switch_step

SETTINGS = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)
FLUSH_BYTES = 1 << 30  # CPU, cold-cache steps: read before each, more than a server CPU's last-level cache
GAF = dict(gaf="atan", alpha=0.1, beta=20.0, placement="update")


class PaperGAFLoop(torch.optim.Optimizer):
    """The reference ``SGD_atanMom`` written as the paper's code does it: one Python loop per parameter."""

    def __init__(self, params, lr, momentum, weight_decay, alpha, beta):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, alpha=alpha, beta=beta))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                d_p = p.grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d_p.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d_p)
                update = group["alpha"] * torch.atan(group["beta"] * state["momentum_buffer"])
                p.add_(update, alpha=-group["lr"])


def time_step(make_optimizer, params, repeats: int, warmup: int, sync, flush: torch.Tensor | None = None
              ) -> tuple[float, float, float | None]:
    """(seconds of the ``warmup`` first steps together, compilation included: GAFSGD's compiled pass
    compiles on its first step with momentum buffers, the second step; median seconds of ``repeats`` later
    consecutive steps (hot caches); with ``flush``, the median of ``repeats`` more steps, each right after
    reading all of ``flush``, which evicts the parameters, gradients and state from the caches without
    leaving dirty lines to write back (cold caches, as after a forward and backward pass))."""
    optimizer = make_optimizer(params)
    sync()
    start = time.perf_counter()
    for _ in range(warmup):
        optimizer.step()
    sync()
    first = time.perf_counter() - start

    def timed_step() -> float:
        start = time.perf_counter()
        optimizer.step()
        sync()
        return time.perf_counter() - start

    hot = [timed_step() for _ in range(repeats)]
    cold = []
    for _ in range(repeats if flush is not None else 0):
        flush.sum()
        cold.append(timed_step())
    return first, statistics.median(hot), statistics.median(cold) if cold else None


def candidates(device: str) -> dict:
    """The optimizers timed on ``device``: torch's SGD paths, the paper-style loop, each GAFSGD path,
    and AdamW with and without ``attach_gaf`` (fused AdamW on CUDA)."""
    out = {
        "torch SGD foreach": lambda ps: torch.optim.SGD(ps, **SETTINGS, foreach=True),
        "torch SGD per-tensor": lambda ps: torch.optim.SGD(ps, **SETTINGS, foreach=False),
        "paper-style GAF loop": lambda ps: PaperGAFLoop(ps, **SETTINGS, alpha=0.1, beta=20.0),
        "GAFSGD per-tensor": lambda ps: GAFSGD(ps, **SETTINGS, **GAF, foreach=False, fused=False),
        "GAFSGD foreach": lambda ps: GAFSGD(ps, **SETTINGS, **GAF, foreach=True),
        "GAFSGD default": lambda ps: GAFSGD(ps, **SETTINGS, **GAF),
        "GAFSGD compiled pass": lambda ps: GAFSGD(ps, **SETTINGS, **GAF, fused="compile"),
    }
    adamw = dict(lr=1e-3, weight_decay=0.05)
    if device.startswith("cuda"):
        out["torch SGD fused"] = lambda ps: torch.optim.SGD(ps, **SETTINGS, fused=True)
        adamw["fused"] = True
    out["AdamW"] = lambda ps: torch.optim.AdamW(ps, **adamw)
    out["AdamW + attach_gaf"] = lambda ps: attached(torch.optim.AdamW(ps, **adamw))
    out["AdamW + attach_gaf compiled pass"] = lambda ps: attached(torch.optim.AdamW(ps, **adamw), fused="compile")
    return out


def attached(optimizer, fused=None):
    attach_gaf(optimizer, gaf="atan", alpha=0.1, beta=20.0, fused=fused)
    return optimizer


def memory_floor_ms(n_params: int, bytes_per_param: int = 20, bandwidth: float = 4.0e12) -> float:
    """The SGD-with-momentum step's memory floor: read p, g, b and write p, b (20 bytes per fp32 param)."""
    return n_params * bytes_per_param / bandwidth * 1e3


def steady_ratios(ms: dict) -> dict:
    """From one set of medians (ms by candidate): the fastest candidate of each kind (``best``: torch SGD,
    GAFSGD, AdamW + attach_gaf), the fastest GAFSGD over the fastest torch SGD, and the faster hook path over
    AdamW."""
    best = {kind: min((n for n in ms if n.startswith(kind)), key=ms.get)
            for kind in ("torch SGD", "GAFSGD", "AdamW + attach_gaf")}
    return dict(best=best, gafsgd_over_torch_sgd=ms[best["GAFSGD"]] / ms[best["torch SGD"]],
                hook_on_adamw=ms[best["AdamW + attach_gaf"]] / ms["AdamW"])


def bench(model_name: str, device: str, repeats: int, warmup: int, names: list[str] | None = None) -> dict:
    """Time every candidate on the parameter set of timm's ``model_name`` (random gradients)."""
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False).to(device)
    params = list(model.parameters())
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    n_params = sum(p.numel() for p in params)
    flush = torch.zeros(FLUSH_BYTES // 4) if device == "cpu" else None
    ms, ms_cold, first_s = {}, {}, {}
    for name, make in candidates(device).items():
        if names and name not in names:
            continue
        for p in params:  # fresh gradients: the paths must not see each other's state
            p.grad = torch.randn_like(p) * 1e-3
        first_s[name], median, median_cold = time_step(make, params, repeats, warmup, sync, flush)
        ms[name] = median * 1e3
        cold = ""
        if median_cold is not None:
            ms_cold[name] = median_cold * 1e3
            cold = f" (cold caches {ms_cold[name]:8.3f} ms)"
        print(f"  {name:<32s} {ms[name]:8.3f} ms{cold}   first {warmup} steps {first_s[name]:7.2f} s", flush=True)
    hot = steady_ratios(ms)
    return dict(
        model=model_name,
        device=device,
        n_params=n_params,
        n_tensors=len(params),
        threads=torch.get_num_threads(),
        repeats=repeats,
        warmup=warmup,
        ms=ms,
        ms_cold_caches=ms_cold or None,
        first_step_s=first_s,
        baseline=hot["best"]["torch SGD"],
        best_gafsgd=hot["best"]["GAFSGD"],
        best_hook=hot["best"]["AdamW + attach_gaf"],
        ratio_gafsgd_over_torch_sgd=hot["gafsgd_over_torch_sgd"],
        ratio_hook_on_adamw=hot["hook_on_adamw"],
        cold_cache_ratios=steady_ratios(ms_cold) if ms_cold else None,
        memory_floor_ms=memory_floor_ms(n_params) if device.startswith("cuda") else None,
    )


SCHEDULED = {  # the optimizers whose default CPU schedule is followed, with no path argument
    "GAFSGD()": lambda ps: GAFSGD(ps, **SETTINGS, **GAF),
    "AdamW + attach_gaf()": lambda ps: attached(torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.05)),
}


def follow_schedule(model_name: str, repeats: int, kind: str) -> dict:
    """In this process: the optimizer ``SCHEDULED[kind]``, stepped ``COMPILE_SWITCH_STEP + repeats`` times on
    ``model_name``'s parameters; every step timed."""
    torch.manual_seed(0)
    params = list(timm.create_model(model_name, pretrained=False).parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizer = SCHEDULED[kind](params)
    times = []
    for _ in range(COMPILE_SWITCH_STEP + repeats):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    worst = max(range(len(times)), key=times.__getitem__)
    return dict(worst_step_s=times[worst], worst_step=worst + 1, first_step_s=times[0],
                switch_step_s=times[COMPILE_SWITCH_STEP - 1], eager_ms=statistics.median(times[1:100]) * 1e3,
                steady_ms=statistics.median(times[COMPILE_SWITCH_STEP:]) * 1e3)


def schedule_in_fresh_process(model_name: str, repeats: int, kind: str, cache: str) -> dict:
    """:func:`follow_schedule` in a new Python process whose Inductor cache is the folder ``cache``."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    env.pop("HF_GAF_FUSED", None)  # the default path, as a user gets it
    proc = subprocess.run([sys.executable, __file__, "--schedule-of", model_name, "--schedule-kind", kind,
                           "--repeats", str(repeats)], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def schedules(model_name: str, repeats: int) -> dict:
    """For each optimizer of :data:`SCHEDULED`: cold (empty Inductor cache) and warm (the same cache again)
    runs of the default schedule."""
    out = {}
    for kind in SCHEDULED:
        with tempfile.TemporaryDirectory(prefix="inductor-cold-") as cache:
            out[f"{kind}, cold"] = schedule_in_fresh_process(model_name, repeats, kind, cache)
            out[f"{kind}, warm"] = schedule_in_fresh_process(model_name, repeats, kind, cache)
    return out


def table(report: dict) -> str:
    """A markdown table of one :func:`bench` report, with ratios to the fastest torch SGD (with cold caches
    too, on CPU: ratios to the fastest torch SGD with cold caches)."""
    ms, base, cold = report["ms"], report["baseline"], report.get("ms_cold_caches")
    cold_base = cold and report["cold_cache_ratios"]["best"]["torch SGD"]
    cold_head = f" cold caches, ms (median) | x {cold_base}, cold |" if cold else ""
    lines = [
        f"{report['model']}: {report['n_params'] / 1e6:.1f}M parameters in {report['n_tensors']} tensors on "
        f"{report['device']}, median of {report['repeats']} steps"
        + (f" (cold caches: each after reading {FLUSH_BYTES >> 30} GiB elsewhere)" if cold else ""),
        "",
        f"| step | ms (median) | x {base} |{cold_head} first {report['warmup']} steps (compilation), s |",
        "|---|---:|---:|" + ("---:|---:|" if cold else "") + "---:|",
    ]
    for name, value in ms.items():
        cold_cells = f" {cold[name]:.3f} | {cold[name] / cold[cold_base]:.2f} |" if cold else ""
        first = report["first_step_s"][name]
        lines.append(f"| {name} | {value:.3f} | {value / ms[base]:.2f} |{cold_cells} {first:.2f} |")
    if report["memory_floor_ms"]:
        lines.append(
            f"| memory floor (20 B/param at 4 TB/s) | {report['memory_floor_ms']:.3f} | "
            f"{report['memory_floor_ms'] / ms[base]:.2f} | |"
        )
    lines += [
        "",
        f"steady state: GAFSGD/torch SGD = {report['ratio_gafsgd_over_torch_sgd']:.2f} ({report['best_gafsgd']} vs "
        f"{base}); AdamW + attach_gaf / AdamW = {report['ratio_hook_on_adamw']:.2f} ({report['best_hook']})",
    ]
    if cold:
        ratios = report["cold_cache_ratios"]
        lines.append(
            f"steady state, cold caches: GAFSGD/torch SGD = {ratios['gafsgd_over_torch_sgd']:.2f} "
            f"({ratios['best']['GAFSGD']} vs {cold_base}); AdamW + attach_gaf / AdamW = {ratios['hook_on_adamw']:.2f} "
            f"({ratios['best']['AdamW + attach_gaf']})"
        )
    if report.get("schedule"):
        lines += ["", f"Default CPU schedules ({COMPILE_SWITCH_STEP} eager steps, compiled from then on), one fresh "
                  "process each; the ratio is to torch SGD for GAFSGD, to AdamW for the hook:", "",
                  "| optimizer, cache | longest step, s (at step) | first step, s | eager median, ms | steady after "
                  "the switch, ms | ratio |", "|---|---:|---:|---:|---:|---:|"]
        for kind, r in report["schedule"].items():
            reference = ms["AdamW"] if kind.startswith("AdamW") else ms[base]
            lines.append(f"| {kind} | {r['worst_step_s']:.3f} ({r['worst_step']}) | {r['first_step_s']:.3f} | "
                         f"{r['eager_ms']:.1f} | {r['steady_ms']:.1f} | {r['steady_ms'] / reference:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50", "resnet10t"],
                        help="timm models whose parameter sets are used")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-schedule", action="store_true", help="skip the cold/warm default-schedule runs (CPU)")
    parser.add_argument("--schedule-of", default=None, help=argparse.SUPPRESS)  # the fresh-process worker
    parser.add_argument("--schedule-kind", default="GAFSGD()", choices=list(SCHEDULED), help=argparse.SUPPRESS)
    parser.add_argument("--out", default="runs/bench_optim.json", help="where the JSON report is written")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report at --out")
    args = parser.parse_args(argv)
    if args.schedule_of:
        print(json.dumps(follow_schedule(args.schedule_of, args.repeats, args.schedule_kind)))
        return
    if args.warmup < 2:
        parser.error(f"--warmup {args.warmup}: need at least 2 (a compiled pass starts on the second step)")
    claim_outputs([args.out], args.overwrite)
    reports = []
    for model in args.models:
        report = bench(model, args.device, args.repeats, args.warmup)
        if args.device == "cpu" and not args.no_schedule:
            print(f"  default schedule of {model}: cold, then warm cache ...", flush=True)
            report["schedule"] = schedules(model, args.repeats)
        print("\n" + table(report) + "\n", flush=True)
        reports.append(report)
    Path(args.out).write_text(json.dumps(reports, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

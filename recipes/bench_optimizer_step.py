"""Optimizer-step benchmark: GAFSGD against torch SGD on the parameter set of timm's resnet50.

Times one ``optimizer.step()`` (random gradients, no forward/backward) for torch SGD (foreach and
per-tensor), a paper-style per-parameter GAF loop, and each GAFSGD path, all in this one process, and
reports medians and ``ratio GAFSGD/torch-SGD`` against the faster torch SGD.

    python recipes/bench_optimizer_step.py --model resnet50 --repeats 30 --out runs/bench_optim.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import timm
import torch

from hf_gaf import GAFSGD

SETTINGS = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)
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


def time_step(make_optimizer, params, repeats: int, warmup: int, sync) -> float:
    """Median seconds of ``optimizer.step()`` after ``warmup`` untimed steps (compilation included there)."""
    optimizer = make_optimizer(params)
    for _ in range(warmup):
        optimizer.step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer.step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50", help="timm model whose parameter set is used")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default="runs/bench_optim.json", help="where the JSON report is written")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False).to(args.device)
    params = [p for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    n_params = sum(p.numel() for p in params)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"{args.model}: {n_params / 1e6:.1f}M parameters in {len(params)} tensors on {args.device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} steps")

    candidates = {
        "torch SGD foreach": lambda ps: torch.optim.SGD(ps, **SETTINGS, foreach=True),
        "torch SGD per-tensor": lambda ps: torch.optim.SGD(ps, **SETTINGS, foreach=False),
        "paper-style GAF loop": lambda ps: PaperGAFLoop(ps, **SETTINGS, alpha=0.1, beta=20.0),
        "GAFSGD per-tensor": lambda ps: GAFSGD(ps, **SETTINGS, **GAF, foreach=False, fused=False),
        "GAFSGD foreach": lambda ps: GAFSGD(ps, **SETTINGS, **GAF, foreach=True),
        "GAFSGD default (fused)": lambda ps: GAFSGD(ps, **SETTINGS, **GAF),
    }
    if args.device.startswith("cuda"):
        candidates["torch SGD fused"] = lambda ps: torch.optim.SGD(ps, **SETTINGS, fused=True)
    results = {}
    for name, make in candidates.items():
        results[name] = time_step(make, params, args.repeats, args.warmup, sync) * 1e3
        print(f"  {name:<26s} {results[name]:8.2f} ms", flush=True)
    torch_names = [n for n in results if n.startswith("torch SGD")]
    baseline = min(torch_names, key=results.get)
    print(f"\n| step | ms (median) | x {baseline} |\n|---|---:|---:|")
    for name, ms in results.items():
        print(f"| {name} | {ms:.2f} | {ms / results[baseline]:.2f} |")
    ratio = results["GAFSGD default (fused)"] / results[baseline]
    print(f"\nratio GAFSGD/torch-SGD = {ratio:.2f} (GAFSGD default path vs {baseline})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(
        model=args.model, device=args.device, n_params=n_params, n_tensors=len(params),
        threads=torch.get_num_threads(), repeats=args.repeats, ms=results, baseline=baseline,
        ratio_gafsgd_over_torch_sgd=ratio,
    ), indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""`make gpu-check`: the GPU checks of hf_gaf in one prepared run (about 5 minutes on one H200, offline).

Prints, as markdown tables:

1. correctness on the GPU: every GAFSGD path (per-tensor, foreach, compiled pass, Triton kernel) and the
   ``attach_gaf`` kernel against a float64 reference, and fused AdamW + ``attach_gaf`` under a real CUDA
   ``GradScaler`` against the unscaled run;
2. the optimizer-step table (recipes/bench_optimizer_step.py) on the parameter sets of resnet50 and
   vit_large_patch16_224, with ratios to ``torch.optim.SGD(fused=True)`` and the memory floor;
3. a whole training step (timm resnet50, batch 128, 224 px, bf16 autocast, channels_last): torch fused
   SGD against GAFSGD, CUDA-event medians;
4. each detection recipe's training images/s with and without GAF (DETR-R50 512 px batch 16 bf16, Faster
   R-CNN R50-FPN 512 px batch 8) on a synthetic VOC set; skipped, with the reason, when the detection
   packages (datasets, evaluate, pycocotools, defusedxml) are not importable.

Nothing is installed or downloaded: models are random-init, data is generated. Everything goes to --out
(gpu_check.md, gpu_check.json, the detection runs); an earlier run's files there stop it before any check,
unless ``--overwrite``. ``--device cpu --quick`` runs the same code in a
minute on a CPU (the test suite's smoke run); its numbers mean nothing.

    PYTHONPATH=. python recipes/gpu_check.py --out runs/gpu-check
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_optimizer_step import bench, table

from hf_gaf import GAFSGD, attach_gaf
from hf_gaf._outputs import claim_outputs

ROOT = Path(__file__).resolve().parent.parent
DETECTION_PACKAGES = ("datasets", "evaluate", "pycocotools", "defusedxml")


def reference_sgd(params64, grads, bufs, cfg):
    """GAFSGD's math (hf_gaf.gaf_sgd docstring) in float64, one step, out of place."""
    f = {"atan": lambda x: cfg["alpha"] * torch.atan(cfg["beta"] * x),
         "tanh": lambda x: cfg["alpha"] * torch.tanh(cfg["beta"] * x),
         "log": lambda x: cfg["alpha"] * torch.sign(x) * torch.log1p(cfg["beta"] * x.abs())}[cfg["gaf"]]
    out_p, out_b = [], []
    for p, g, b in zip(params64, grads, bufs):
        d = -g if cfg["maximize"] else g
        d = f(d) if cfg["placement"] == "grad" else d
        d = d + cfg["weight_decay"] * p
        b = d.clone() if b is None else cfg["momentum"] * b + (1 - cfg["dampening"]) * d
        d = d + cfg["momentum"] * b if cfg["nesterov"] else b
        d = f(d) if cfg["placement"] == "update" else d
        out_p.append(p - cfg["lr"] * d)
        out_b.append(b)
    return out_p, out_b


def check_correctness(device: str) -> list[dict]:
    """Max relative error of each path after 3 steps against float64, float32 parameters."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(0,), (1,), (7,), (1024,), (4099,), (64, 3, 7, 7)]
    paths = {"per-tensor": dict(foreach=False, fused=False), "foreach": dict(foreach=True, fused=False),
             "compiled pass": dict(fused="compile"), "Triton kernel": dict(fused="triton")}
    configs = [dict(gaf="atan", alpha=0.1, beta=20.0, placement="update", momentum=0.9, dampening=0.0, nesterov=False,
                    weight_decay=5e-4, maximize=False, lr=0.1),
               dict(gaf="tanh", alpha=0.3, beta=4.5, placement="grad", momentum=0.8, dampening=0.1, nesterov=False,
                    weight_decay=1e-3, maximize=True, lr=0.05),
               dict(gaf="log", alpha=0.5, beta=3.0, placement="update", momentum=0.9, dampening=0.0, nesterov=True,
                    weight_decay=0.0, maximize=False, lr=0.05)]
    init = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) * 0.3 for s in shapes] for _ in range(3)]
    rows = []
    for cfg in configs:
        ref_p, ref_b = [t.double() for t in init], [None] * len(shapes)
        for step in range(3):
            ref_p, ref_b = reference_sgd(ref_p, [g.double() for g in grads[step]], ref_b, cfg)
        for name, path in paths.items():
            try:
                params = [torch.nn.Parameter(t.clone().to(device)) for t in init]
                opt = GAFSGD(params, **cfg, **path)
                for step in range(3):
                    for p, g in zip(params, grads[step]):
                        p.grad = g.to(device)
                    opt.step()
                err = max(((p.detach().double().cpu() - r).abs() / r.abs().clamp_min(1e-3)).max().item()
                          if p.numel() else 0.0 for p, r in zip(params, ref_p))
                rows.append(dict(check=f"GAFSGD {name}", setting=f"{cfg['gaf']}/{cfg['placement']}", max_rel_err=err))
            except Exception as err:  # report, do not hide: the table shows which path broke
                rows.append(dict(check=f"GAFSGD {name}", setting=f"{cfg['gaf']}/{cfg['placement']}",
                                 max_rel_err=float("nan"), error=f"{type(err).__name__}: {err}"[:200]))
    rows.append(check_hook_under_scaler(device))
    return rows


def check_hook_under_scaler(device: str, hook_path: bool | str | None = None, width: int = 256, steps: int = 5) -> dict:
    """Fused AdamW + ``attach_gaf(fused=hook_path)``: a GradScaler run (scale 2^12) against the unscaled run.

    Returns the largest weight difference after ``steps`` steps and each hook's call count (both must be
    ``steps``). The test suite runs it on the CPU with the Triton interpreter (``hook_path="triton"``)."""
    torch.manual_seed(0)
    make = lambda: torch.nn.Sequential(torch.nn.Linear(32, width), torch.nn.Tanh(), torch.nn.Linear(width, 10))  # noqa: E731
    models = [make().to(device), make().to(device)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True) for m in models]
    hooks = [attach_gaf(o, fused=hook_path) for o in optimizers]
    scaler = torch.amp.GradScaler(device, init_scale=2.0**12, growth_interval=1000)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(64, 32, generator=gen).to(device), torch.randn(64, 10, generator=gen).to(device)
        for model, optimizer, scale in zip(models, optimizers, (False, True)):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            if scale:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
    err = max((a - b).abs().max().item() for a, b in zip(*(m.parameters() for m in models)))
    return dict(check="attach_gaf on fused AdamW, GradScaler vs unscaled", setting="atan", max_rel_err=err,
                calls=[h.calls for h in hooks])


def time_training_step(device: str, optimizer_name: str, steps: int, batch: int, size: int, model_name: str) -> float:
    """Median ms of forward + backward + optimizer step (bf16 autocast, channels_last), CUDA events."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=1000).to(device)
    model = model.to(memory_format=torch.channels_last)
    settings = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)
    if optimizer_name == "torch SGD fused":
        opt = torch.optim.SGD(model.parameters(), **settings, fused=device.startswith("cuda"))
    else:
        opt = GAFSGD(model.parameters(), **settings, gaf="atan", alpha=0.1, beta=20.0, placement="update")
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    cuda = device.startswith("cuda")
    times = []
    for i in range(steps + 5):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            end.record()
            torch.cuda.synchronize()
            elapsed = start.elapsed_time(end)
        else:
            elapsed = (time.perf_counter() - t0) * 1e3
        if i >= 5:
            times.append(elapsed)
    return statistics.median(times)


def detection_runs(quick: bool) -> list[tuple[str, str, str, list[str]]]:
    """(recipe, script, preset, extra flags) of each detection training run of section 4."""
    detr = ["--model_config", "tiny-rt-detr" if quick else "detr-r50", "--per_device_train_batch_size", "16"]
    frcnn = ["--backbone", "timm:resnet18" if quick else "resnet50_fpn", "--per_device_train_batch_size", "8"]
    return [
        ("detr", "recipes/detection/train_detr.py", "adamw", detr),
        ("detr", "recipes/detection/train_detr.py", "adamw-gaf", detr),
        ("faster_rcnn", "recipes/detection/train_faster_rcnn.py", "sgd", frcnn),
        ("faster_rcnn", "recipes/detection/train_faster_rcnn.py", "gaf", frcnn),
    ]


def outputs(out: Path, quick: bool, detection: bool) -> list[Path]:
    """Everything this run writes into ``out``: the two reports and, with ``detection``, the synthetic VOC set
    and one folder per detection run."""
    paths = [out / "gpu_check.md", out / "gpu_check.json"]
    if detection:
        paths += [out / "voc"] + [out / f"{recipe}-{preset}" for recipe, _, preset, _ in detection_runs(quick)]
    return paths


def detection_throughput(out: Path, quick: bool, overwrite: bool) -> list[dict]:
    """Training images/s of both detection recipes, with and without GAF, on synthetic VOC."""
    missing = [m for m in DETECTION_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        return [dict(recipe="(skipped)", preset="", images_per_s=float("nan"),
                     note=f"missing {', '.join(missing)}: carry their wheels (see the device README)")]
    from hf_gaf.detection.synthetic_voc import make_voc

    size = 96 if quick else 512
    n_train = 32 if quick else 320
    voc = make_voc(str(out / "voc"), n_train=n_train, n_test=8, image_size=size, seed=0, overwrite=overwrite)
    rows = []
    for recipe, script, preset, extra in detection_runs(quick):
        run_dir = out / f"{recipe}-{preset}"
        cmd = [sys.executable, str(ROOT / script), "--voc_root", voc, "--classes", "shapes", "--preset", preset,
               "--image_size", str(size), "--num_train_epochs", "1" if quick else "2", "--eval_strategy", "no",
               "--draw_predictions", "0", "--output_dir", str(run_dir), "--overwrite_output_dir", "true",
               "--report_to", "none", *extra]
        if not quick:
            cmd += ["--bf16", "true"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        metrics = run_dir / "metrics.json"
        if proc.returncode != 0 or not metrics.exists():
            rows.append(dict(recipe=recipe, preset=preset, images_per_s=float("nan"),
                             note=(proc.stderr or proc.stdout)[-300:].replace("\n", " ")))
            continue
        speed = json.loads(metrics.read_text())["train_images_per_s"]
        rows.append(dict(recipe=recipe, preset=preset, images_per_s=speed))
    return rows


def markdown(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return "\n".join(
        [f"| {' | '.join(columns)} |", "|" + "---|" * len(columns)]
        + [f"| {' | '.join(fmt(r.get(c, '')) for c in columns)} |" for r in rows]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="runs/gpu-check")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run; the numbers mean nothing)")
    parser.add_argument("--skip_detection", action="store_true")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier gpu-check's files in --out")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no GPU (run with --device cpu --quick for a smoke run)")
    out = Path(args.out)
    claim_outputs(outputs(out, args.quick, not args.skip_detection), args.overwrite)
    sections, report = [], {}
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    has_triton = importlib.util.find_spec("triton") is not None
    triton = getattr(importlib.import_module("triton"), "__version__", "-") if has_triton else "-"
    sections.append(f"# hf_gaf gpu-check on {name}: torch {torch.__version__}, triton {triton}")

    rows = check_correctness(args.device)
    report["correctness"] = rows
    sections.append(
        "## 1. Each path against float64 (3 steps, float32 parameters)\n\n"
        + markdown(rows, ["check", "setting", "max_rel_err", "error"])
    )
    print(sections[-1], flush=True)

    models = ["resnet18"] if args.quick else ["resnet50", "vit_large_patch16_224"]
    report["step"] = []
    for model_name in models:
        names = (
            None
            if model_name == "resnet50" or args.quick
            else [
                "torch SGD fused",
                "torch SGD foreach",
                "GAFSGD foreach",
                "GAFSGD default",
                "AdamW",
                "AdamW + attach_gaf",
            ]
        )
        if args.device == "cpu":
            names = [n for n in (names or []) if "fused" not in n] or [
                "torch SGD per-tensor",
                "GAFSGD default",
                "AdamW",
                "AdamW + attach_gaf",
            ]
        result = bench(model_name, args.device, repeats=5 if args.quick else 40, warmup=3, names=names)
        report["step"].append(result)
        sections.append("## 2. Optimizer step\n\n" + table(result))
        print(sections[-1], flush=True)

    batch, size, steps = (4, 64, 3) if args.quick else (128, 224, 30)
    model_name = "resnet18" if args.quick else "resnet50"
    train = {
        n: time_training_step(args.device, n, steps, batch, size, model_name)
        for n in ("torch SGD fused", "GAFSGD default")
    }
    report["training_step_ms"] = train
    sections.append(
        f"## 3. Whole training step ({model_name}, batch {batch}, {size} px, bf16 autocast, "
        f"channels_last; median of {steps})\n\n"
        + markdown(
            [dict(optimizer=k, ms=v, ratio=v / train["torch SGD fused"]) for k, v in train.items()],
            ["optimizer", "ms", "ratio"],
        )
    )
    print(sections[-1], flush=True)

    if not args.skip_detection:
        rows = detection_throughput(out, args.quick, args.overwrite)
        base = {}
        for r in rows:
            base.setdefault(r["recipe"], r["images_per_s"])
            r["vs_baseline"] = r["images_per_s"] / base[r["recipe"]] if base[r["recipe"]] else float("nan")
        report["detection"] = rows
        sections.append(
            "## 4. Detection recipes, training images/s (synthetic VOC)\n\n"
            + markdown(rows, ["recipe", "preset", "images_per_s", "vs_baseline", "note"])
        )
        print(sections[-1], flush=True)

    (out / "gpu_check.md").write_text("\n\n".join(sections) + "\n")
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()

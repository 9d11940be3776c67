"""GAF in a plain `accelerate` training loop: the only GAF line is `attach_gaf(optimizer, ...)`.

    python recipes/accelerate_example.py --steps 50
    accelerate launch --config_file recipes/accelerate_configs/multi_gpu_ddp.yaml recipes/accelerate_example.py

`attach_gaf` works before or after `accelerator.prepare` (it unwraps `AcceleratedOptimizer`). Its
hook runs inside `optimizer.step()`, so under `accelerator.accumulate` it fires once per real step,
after DDP averaged the gradients and the GradScaler unscaled them; on an fp16 overflow step the step
and GAF are both skipped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from hf_gaf import attach_gaf
from hf_gaf.kinds import KindNames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--grad_accum", type=int, default=1)
    parser.add_argument("--gaf", default="atan", choices=KindNames("none"))
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--beta", type=float, default=20.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write final parameters and metrics here")
    args = parser.parse_args()

    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum)
    set_seed(args.seed)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    if args.gaf != "none":
        attach_gaf(optimizer, gaf=args.gaf, alpha=args.alpha, beta=args.beta)  # the one GAF line
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    step, progress = 0, tqdm(total=args.steps, disable=not accelerator.is_main_process, desc="train")
    while step < args.steps:
        for xb, yb in loader:
            with accelerator.accumulate(model):
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                step += 1
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.3f}")
                if step >= args.steps:
                    break
    model.eval()
    with torch.no_grad():
        accuracy = (model(x.to(accelerator.device)).argmax(-1).cpu() == y).float().mean().item()
    accelerator.print(f"train accuracy {accuracy:.3f} after {step} steps (gaf={args.gaf})")
    if args.out and accelerator.is_main_process:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(accelerator.unwrap_model(model).state_dict(), out / "model.pt")
        (out / "metrics.json").write_text(json.dumps({"train_accuracy": accuracy, "steps": step}))


if __name__ == "__main__":
    main()

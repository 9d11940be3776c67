"""Trains TinyRegressor with SequentialGAFTrainer; run under `accelerate launch` or plain python.

Each process saves its final parameters to OUT/params_rank{RANK}.pt.
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from tests.helpers.tiny import SequentialGAFTrainer, TinyData, TinyRegressor, tiny_args

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--batch", type=int, default=4)
parser.add_argument("--placement", default="update")
parser.add_argument("--optim", default="sgd")
cli = parser.parse_args()

args = tiny_args(cli.out, per_device_train_batch_size=cli.batch, gaf_placement=cli.placement, optim=cli.optim,
                 num_train_epochs=2, learning_rate=0.05 if cli.optim == "sgd" else 1e-2,
                 optim_args="momentum=0.9" if cli.optim == "sgd" else None)
model = TinyRegressor()
trainer = SequentialGAFTrainer(model=model, args=args, train_dataset=TinyData(64))
trainer.train()
rank = int(os.environ.get("RANK", "0"))
torch.save({n: p.detach().cpu() for n, p in model.named_parameters()}, os.path.join(cli.out, f"params_rank{rank}.pt"))
print(f"rank {rank} done after {trainer.state.global_step} steps")

"""Under torchrun with 2 CPU processes (gloo): a model sharded with torch's FSDP2 (``fully_shard``) trained
with GAFSGD (placement update) and with AdamW + attach_gaf, each rank on half of every batch, against the
same model unsharded on whole batches in each process. Prints one line per optimizer on rank 0:
``<name> <max |sharded - unsharded|>``."""

import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from hf_gaf import GAFSGD, attach_gaf


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def train(model, optimizer, rank=0, world=1):
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x, y = torch.randn(8, 8, generator=g), torch.randn(8, 4, generator=g)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x[rank::world]), y[rank::world]).backward()  # FSDP averages the halves
        optimizer.step()


def optimizer_for(name, params):
    if name == "gafsgd":
        return GAFSGD(params, lr=0.1, momentum=0.9, gaf="atan", alpha=0.1, beta=20.0, placement="update")
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    attach_gaf(optimizer)
    return optimizer


dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
for name in ("gafsgd", "attach_gaf"):
    reference, sharded = make_model(), make_model()
    for layer in (sharded[0], sharded[2], sharded):
        fully_shard(layer)
    train(reference, optimizer_for(name, reference.parameters()))
    train(sharded, optimizer_for(name, sharded.parameters()), rank, world)
    full = {k: v.full_tensor() for k, v in sharded.state_dict().items()}
    error = max((full[k] - v).abs().max().item() for k, v in reference.state_dict().items())
    if rank == 0:
        print(name, error, flush=True)
dist.barrier()  # both ranks done before gloo tears down: without it rank 1 could abort at exit (a flake)
dist.destroy_process_group()

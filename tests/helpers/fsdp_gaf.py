"""Under torchrun with 2 CPU processes (gloo): a model sharded with torch's FSDP2 (``fully_shard``) trained
with GAFSGD (placement update), with AdamW + attach_gaf, and with AdamW + each gradient treatment of
hf_gaf.treatments (and each treatment under DDP too), each rank on half of every batch, against the same model
unsharded on whole batches in each process. Prints one line per optimizer on rank 0:
``<name> <max |sharded - unsharded|> <zclip's clipped steps>``."""

import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from hf_gaf import GAFSGD, attach_gaf
from hf_gaf.treatments import TREATMENTS, attach_treatment


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
    if name in TREATMENTS:  # zclip: a warm-up of 2 and a low threshold, so that it clips within the 5 steps
        attach_treatment(optimizer, name, **({"warmup_steps": 2, "z_thresh": 0.3} if name == "zclip" else {}))
    else:
        attach_gaf(optimizer)
    return optimizer


dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
for name in ("gafsgd", "attach_gaf", *TREATMENTS, *(f"ddp-{t}" for t in TREATMENTS)):
    ddp = name.startswith("ddp-")
    name = name.removeprefix("ddp-")
    reference, sharded = make_model(), make_model()
    if ddp:  # the same treatment under DDP: each rank holds the whole averaged gradient
        sharded = DistributedDataParallel(sharded)
    else:
        for layer in (sharded[0], sharded[2], sharded):
            fully_shard(layer)
    ref_optimizer = optimizer_for(name, reference.parameters())
    train(reference, ref_optimizer)
    train(sharded, optimizer_for(name, sharded.parameters()), rank, world)
    full = ({k: v for k, v in sharded.module.state_dict().items()} if ddp else
            {k: v.full_tensor() for k, v in sharded.state_dict().items()})
    error = max((full[k] - v).abs().max().item() for k, v in reference.state_dict().items())
    clipped = ref_optimizer.state.get("hf_gaf.zclip", {}).get("clipped_steps", 0)  # zclip: did it act?
    if rank == 0:
        print(f"ddp-{name}" if ddp else name, error, clipped, flush=True)
dist.barrier()  # both ranks done before gloo tears down: without it rank 1 could abort at exit (a flake)
dist.destroy_process_group()

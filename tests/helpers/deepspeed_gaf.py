"""Under torchrun with 2 CPU processes (gloo, ``DS_ACCELERATOR=cpu``): one training, 6 optimizer steps of 2
accumulated micro-batches of 4 per rank, under torch DDP and under DeepSpeed ZeRO 1, 2 and 3, for each case:

- ``adamw``: AdamW + ``attach_gaf`` on two parameter groups (decay / no decay, as the Trainer builds them);
- ``exclude``: the same with the LayerNorm in a group marked ``no_gaf=True`` (``--gaf_exclude``'s mechanism);
- ``gafsgd``: GAFSGD, placement ``update`` (on ZeRO's flat partitions), momentum 0.9.

Prints on rank 0 one line per case and engine: ``<case> <engine> <max |weights - DDP's|> <hook steps>``, and
under ZeRO-2 ``params-error <message>`` for ``attach_gaf(params=...)`` (it must refuse, not apply f to nothing)
and ``agc-error <message>`` for AGC (flat partitions have no unit shapes: it must refuse, not follow another
rule).
"""

import os
import sys
from contextlib import nullcontext

import deepspeed
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from hf_gaf import GAFSGD, attach_gaf, attached_gaf
from hf_gaf.hook import NO_GAF
from hf_gaf.treatments import attach_treatment
from tests.helpers.tiny import TinyData, TinyRegressor

STEPS, MICRO, BATCH = 6, 2, 4


def groups(model, case):
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and not n.startswith("norm")]
    rest = [p for n, p in model.named_parameters() if not (n.endswith("weight") and not n.startswith("norm"))]
    if case != "exclude":
        return [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}]
    norm = [p for n, p in model.named_parameters() if n.startswith("norm")]
    rest = [p for p in rest if all(p is not q for q in norm)]
    return [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0},
            {"params": norm, "weight_decay": 0.0, NO_GAF: True}]


def optimizer_for(model, case):
    if case == "gafsgd":
        return GAFSGD(groups(model, case), lr=0.05, momentum=0.9, gaf="atan", alpha=0.1, beta=20.0,
                      placement="update", fused=False)
    optimizer = torch.optim.AdamW(groups(model, case), lr=1e-2)
    if case == "agc":
        attach_treatment(optimizer, "agc")
    else:
        attach_gaf(optimizer, fused=False)
    return optimizer


def batches(rank):
    data = TinyData(STEPS * MICRO * BATCH * 2)
    for step in range(STEPS):
        for micro in range(MICRO):
            start = ((step * MICRO + micro) * 2 + rank) * BATCH
            yield micro, data.x[start:start + BATCH], data.y[start:start + BATCH]


def train_ddp(case, rank):
    model = TinyRegressor()
    ddp = DistributedDataParallel(model)
    optimizer = optimizer_for(model, case)
    for micro, x, y in batches(rank):
        with ddp.no_sync() if micro < MICRO - 1 else nullcontext():
            (ddp(x, y)["loss"] / MICRO).backward()
        if micro == MICRO - 1:
            optimizer.step()
            optimizer.zero_grad()
    return {n: p.detach().clone() for n, p in model.named_parameters()}, optimizer


def train_zero(case, rank, stage, params=None):
    model = TinyRegressor()
    optimizer = optimizer_for(model, case)
    if params is not None:  # attach_gaf(params=...) by identity: ZeRO steps flat partitions instead
        attached_gaf(optimizer).remove()
        attach_gaf(optimizer, params=[model.body.weight], fused=False)
    config = {"train_micro_batch_size_per_gpu": BATCH, "gradient_accumulation_steps": MICRO,
              "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True,
              "gradient_clipping": 0.0}  # DeepSpeed's default is 1.0: a norm clip before GAF
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    for _, x, y in batches(rank):
        engine.backward(engine(x, y)["loss"])
        engine.step()
    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    return weights, optimizer


deepspeed.init_distributed(dist_backend="gloo")
rank = dist.get_rank()
cases = sys.argv[1:] or ["adamw", "exclude", "gafsgd", "params", "agc"]
for case in cases:
    if case in ("params", "agc"):  # attach_gaf(params=...) by identity; AGC, which needs the parameters' shapes
        try:
            train_zero("adamw" if case == "params" else "agc", rank, 2, params=True if case == "params" else None)
            message = "no error"
        except RuntimeError as err:
            message = str(err).replace("\n", " ")
        if rank == 0:
            print(f"{case}-error", message, flush=True)
        continue
    reference, ddp_optimizer = train_ddp(case, rank)
    hook = attached_gaf(ddp_optimizer)
    if rank == 0:
        print(case, "ddp", 0.0, hook.calls if hook else "-", flush=True)
    for stage in (1, 2, 3):
        weights, optimizer = train_zero(case, rank, stage)
        hook = attached_gaf(optimizer)
        error = max((weights[n] - reference[n]).abs().max().item() for n in reference)
        if rank == 0:
            print(case, f"zero{stage}", error, hook.calls if hook else "-", flush=True)
dist.barrier()
dist.destroy_process_group()

"""Under torchrun with 2 CPU processes: GAFTrainer on TinyRegressor, 2 micro-batches of 4 per rank accumulated
per optimizer step, 8 optimizer steps, GAF statistics on every second step, under DDP (``--zero -1``) or the
Trainer's ``--deepspeed`` with ``recipes/accelerate_configs/deepspeed_zero2.json`` at ZeRO stage ``--zero``.
Rank 0 saves the final weights, the hook's step count and the logged statistics to ``OUT/result.pt``.

On a machine without a GPU, accelerate and transformers record one process on every rank, and DeepSpeed then
stops on its batch-size check; ``use_cpu`` turns DeepSpeed off. The way around it lives here, in the test
helper, not in the library: the process group is made first (``PartialState(backend="gloo")`` with
``ACCELERATE_USE_DEEPSPEED=true``) and the Trainer uses that state (``use_configured_state``).
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--zero", type=int, default=-1, help="ZeRO stage; -1: DDP")
parser.add_argument("--optim", default="adamw_torch")
parser.add_argument("--gaf_exclude", nargs="*", default=[])
cli = parser.parse_args()

workaround = {}
if cli.zero >= 0:
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    from accelerate import PartialState

    PartialState(backend="gloo")
    workaround = dict(use_cpu=False, accelerator_config={"use_configured_state": True})

from hf_gaf.hook import attached_gaf, unwrap_optimizer  # noqa: E402
from tests.helpers.tiny import SequentialGAFTrainer, TinyData, TinyRegressor, tiny_args  # noqa: E402

deepspeed = None
if cli.zero >= 0:  # the shipped config, at the stage asked for
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "accelerate_configs",
                           "deepspeed_zero2.json")) as f:
        deepspeed = json.load(f)
    deepspeed["zero_optimization"]["stage"] = cli.zero
sgd = cli.optim == "sgd"
args = tiny_args(cli.out, per_device_train_batch_size=4, gradient_accumulation_steps=2, num_train_epochs=2,
                 optim=cli.optim, optim_args="momentum=0.9" if sgd else None, learning_rate=0.05 if sgd else 1e-2,
                 gaf_exclude=cli.gaf_exclude, ddp_backend="gloo", deepspeed=deepspeed, **workaround,
                 gaf_log_stats=True, logging_steps=2)
model = TinyRegressor()
trainer = SequentialGAFTrainer(model=model, args=args, train_dataset=TinyData(64))
trainer.train()
if deepspeed is not None and cli.zero == 3:
    import deepspeed as ds

    with ds.zero.GatheredParameters(list(model.parameters())):
        weights = {n: p.detach().clone() for n, p in model.named_parameters()}
else:
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
hook = attached_gaf(unwrap_optimizer(trainer.optimizer))
stats = [{k: v for k, v in e.items() if k.startswith("gaf/")} for e in trainer.state.log_history
         if "gaf/norm_before" in e]
if trainer.args.process_index == 0:
    torch.save({"weights": weights, "hook_steps": hook.calls if hook else None, "steps": trainer.state.global_step,
                "stats": stats}, os.path.join(cli.out, "result.pt"))
    print(f"done: {trainer.state.global_step} steps, hook steps {hook.calls if hook else None}", flush=True)

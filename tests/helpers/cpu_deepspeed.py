"""Run a recipe (``train.py``, ``train_detr.py``, ``train_faster_rcnn.py``) under the Trainer's ``--deepspeed`` on
2 CPU processes: ``torchrun --nproc_per_node 2 tests/helpers/cpu_deepspeed.py RECIPE.py FLAGS...``.

On a machine without a GPU, accelerate and transformers record one process on every rank, so DeepSpeed stops
on its batch-size check, and ``--use_cpu`` turns DeepSpeed off. This helper (not the library) makes the gloo
process group first and has the Trainer use that state; with a GPU none of this is needed.
"""

import os
import runpy
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
from accelerate import PartialState

PartialState(backend="gloo")
recipe, *flags = sys.argv[1:]
sys.argv = [recipe, *flags, "--use_cpu", "false", "--ddp_backend", "gloo",
            "--accelerator_config", '{"use_configured_state": true}']
runpy.run_path(recipe, run_name="__main__")

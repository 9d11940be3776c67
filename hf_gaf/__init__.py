"""hf_gaf: Gradient Activation Functions (GAF, arXiv 2107.04228) for the Hugging Face training stack.

The core needs torch only (``pip install hf_gaf``): :mod:`~hf_gaf.functional` (f itself),
:mod:`~hf_gaf.gaf_sgd` (GAFSGD and its functional form), :mod:`~hf_gaf.hook` (GAF on any optimizer),
:mod:`~hf_gaf.step_path` (which path runs a step), :mod:`~hf_gaf.compiled_step` (the compiled pass and its
schedule) and :mod:`~hf_gaf.triton_kernels` (the fused CUDA kernels). The wings need their extras: :mod:`hf_gaf.trainer`
(``[hf]``), :mod:`hf_gaf.detection` and :mod:`hf_gaf.metrics` (``[detection]``), :mod:`hf_gaf.harness`
(``[recipes]``: presets, compare, sweep, demo, plots, the ``hf-gaf`` command). ``hf_gaf.GAFTrainer`` and
``hf_gaf.GAFTrainingArguments`` load the Trainer wing on first use.
"""

from .functional import GAFSpec, foreach_gaf, foreach_gaf_, gaf, gaf_, gaf_bound, validate_gaf
from .gaf_sgd import GAFSGD, gaf_sgd, gaf_sgd_update
from .hook import GAFHook, attach_gaf, attached_gaf, unwrap_optimizer
from .kinds import GAF_KINDS

__version__ = "0.1.0"

_LAZY = {"GAFTrainer", "GAFTrainingArguments", "GAFStatsCallback"}

__all__ = [
    "GAF_KINDS", "GAFSpec", "gaf", "gaf_", "foreach_gaf", "foreach_gaf_", "gaf_bound", "validate_gaf",
    "GAFSGD", "gaf_sgd", "gaf_sgd_update", "GAFHook", "attach_gaf", "attached_gaf", "unwrap_optimizer", *sorted(_LAZY),
]


def __getattr__(name: str):
    if name in _LAZY:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'hf_gaf' has no attribute {name!r}")

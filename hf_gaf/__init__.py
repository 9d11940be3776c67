"""hf_gaf: Gradient Activation Functions (GAF, arXiv 2107.04228) for the Hugging Face training stack.

Core objects import fast (torch only); the Trainer integration loads transformers on first use.
"""

from .functional import GAF_KINDS, GAFSpec, foreach_gaf, foreach_gaf_, gaf, gaf_, gaf_bound, validate_gaf
from .gaf_sgd import GAFSGD, gaf_sgd_update
from .hook import GAFHook, attach_gaf, attached_gaf, unwrap_optimizer

__version__ = "0.1.0"

_LAZY = {
    "GAFTrainer": "hf_gaf.trainer",
    "GAFTrainingArguments": "hf_gaf.trainer",
    "GAFStatsCallback": "hf_gaf.stats",
}

__all__ = [
    "GAF_KINDS", "GAFSpec", "gaf", "gaf_", "foreach_gaf", "foreach_gaf_", "gaf_bound", "validate_gaf",
    "GAFSGD", "gaf_sgd_update", "GAFHook", "attach_gaf", "attached_gaf", "unwrap_optimizer", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hf_gaf' has no attribute {name!r}")

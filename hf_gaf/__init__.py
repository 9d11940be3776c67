"""hf_gaf: Gradient Activation Functions (GAF, arXiv 2107.04228) for the Hugging Face training stack.

The core needs torch only (``pip install hf_gaf``): :mod:`~hf_gaf.functional` (f itself),
:mod:`~hf_gaf.gaf_sgd` (GAFSGD and its functional form), :mod:`~hf_gaf.hook` (GAF on any optimizer),
:mod:`~hf_gaf.treatments` (AGC, ZClip, gradient centralization at GAF's place), :mod:`~hf_gaf.step_path`
(which path runs a step), :mod:`~hf_gaf.compiled_step` (the compiled pass and its schedule) and
:mod:`~hf_gaf.triton_kernels` (the fused CUDA kernels). The wings need their extras: :mod:`hf_gaf.trainer`
(``[hf]``), :mod:`hf_gaf.detection` and :mod:`hf_gaf.metrics` (``[detection]``), :mod:`hf_gaf.harness`
(``[recipes]``: presets, compare, sweep, demo, plots, the ``hf-gaf`` command). Every name exported here is
loaded on first use (``hf_gaf.GAFTrainer`` loads the Trainer wing then).
"""

import importlib

__version__ = "0.1.0"

# name -> the module that defines it; loaded on first use, so that ``import hf_gaf.<module>`` (the ``hf-gaf``
# command's start-up among them) pays only for what it imports
_EXPORTS = {
    **dict.fromkeys(["GAFSpec", "gaf", "gaf_", "foreach_gaf", "foreach_gaf_", "gaf_bound", "validate_gaf"],
                    ".functional"),
    **dict.fromkeys(["GAFSGD", "gaf_sgd", "gaf_sgd_update"], ".gaf_sgd"),
    **dict.fromkeys(["GAFHook", "attach_gaf", "attached_gaf", "unwrap_optimizer"], ".hook"),
    **dict.fromkeys(["TREATMENTS", "attach_treatment", "attached_treatment"], ".treatments"),
    "GAF_KINDS": ".kinds",
    **dict.fromkeys(["GAFTrainer", "GAFTrainingArguments", "GAFStatsCallback"], ".trainer"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_gaf' has no attribute {name!r}")

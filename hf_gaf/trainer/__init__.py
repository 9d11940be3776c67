"""Hugging Face wing (``pip install 'hf_gaf[hf]'``): :class:`GAFTrainingArguments` (GAF's flags on top of
``TrainingArguments``), :class:`GAFTrainer` (GAF where it belongs in ``transformers.Trainer``) and
:class:`GAFStatsCallback` (what GAF did, on logging steps)."""

from .._extras import require_extra

require_extra("hf_gaf.trainer", "hf")

from .arguments import GAFTrainingArguments  # noqa: E402
from .stats import GAFStatsCallback  # noqa: E402
from .trainer import GAF_CONFIG_NAME, GAFTrainer  # noqa: E402

__all__ = ["GAFTrainingArguments", "GAFTrainer", "GAFStatsCallback", "GAF_CONFIG_NAME"]

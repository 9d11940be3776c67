"""``--max_train_samples`` / ``--max_eval_samples``: the Hugging Face examples' flags that keep the first N
examples of a split, checked once for every recipe that takes them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SampleLimitArguments:
    """Keep only the first N examples of the training or evaluation split (None: every example)."""

    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N examples."})

    def __post_init__(self):
        for flag in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, flag)
            if value is not None and value < 1:
                raise ValueError(f"--{flag} {value}: need at least 1 (leave it out to use every example)")

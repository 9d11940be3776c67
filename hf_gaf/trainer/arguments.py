"""``GAFTrainingArguments``: ``transformers.TrainingArguments`` plus GAF's own flags, nothing else.

Example (``python train.py --gaf atan --gaf_alpha 0.1 --gaf_beta 20 --optim sgd ...``):
    >>> from transformers import HfArgumentParser
    >>> from hf_gaf.trainer import GAFTrainingArguments
    >>> (args,) = HfArgumentParser(GAFTrainingArguments).parse_args_into_dataclasses(
    ...     ["--output_dir", "/tmp/out", "--gaf", "atan", "--optim", "sgd", "--report_to", "none"])
    >>> args.gaf_spec, args.gaf_placement, args.max_grad_norm
    (GAFSpec(kind='atan', alpha=0.1, beta=20.0), 'update', 0.0)
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..functional import GAFSpec, validate_gaf
from ..gaf_sgd import PLACEMENTS, check_placement
from ..kinds import KindNames
from ..step_path import fused_default
from ..treatments import TREATMENTS, parse_treatment_args

logger = logging.getLogger(__name__)

GAF_CHOICES = KindNames("none")  # live: a kind registered in hf_gaf.kinds is a choice too


@dataclass
class GAFTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the GAF settings (see :mod:`hf_gaf.trainer` for where GAF runs).

    One default of ``TrainingArguments`` changes: ``max_grad_norm`` is 1.0 as in transformers when GAF
    is off, but 0 (no norm clipping) when GAF is on, because clipping before GAF shrinks every
    coordinate into GAF's linear zone (an explicit ``--max_grad_norm`` wins, with a warning).

    The GAF kind, α and β are validated once, here, into ``gaf_spec``
    (a :class:`~hf_gaf.functional.GAFSpec`, ``None`` with ``--gaf none``); everything downstream takes
    that spec.
    """

    gaf: str = field(default="none", metadata={"help": "Gradient activation: a kind of hf_gaf.kinds, or none.",
                                               "choices": GAF_CHOICES})
    gaf_alpha: float = field(default=0.1, metadata={"help": "GAF scale alpha (bound alpha*pi/2 for atan)."})
    gaf_beta: float = field(default=20.0, metadata={"help": "GAF slope beta (gain alpha*beta near zero)."})
    gaf_placement: str | None = field(default=None, metadata={
        "help": "update: f on the SGD momentum update (needs --optim sgd); grad: f on the gradient (any optimizer). "
                "Default: update with --optim sgd, grad otherwise.", "choices": list(PLACEMENTS)})
    gaf_exclude: list[str] = field(default_factory=list, metadata={
        "help": "Regular expressions; parameters whose name matches one are left untransformed (e.g. bias norm head)."})
    grad_treatment: str = field(default="none", metadata={
        "help": "A gradient treatment of hf_gaf.treatments (agc, gc, zclip) at GAF's place in the step, instead of "
                "GAF (--gaf none); none: off.", "choices": KindNames("none", table=TREATMENTS)})
    grad_treatment_args: str | None = field(default=None, metadata={
        "help": "Its settings, e.g. clip_factor=0.01,eps=1e-3 (agc), z_thresh=2.5,alpha=0.97,warmup_steps=25 "
                "(zclip); default: the values of its paper (timm's for agc)."})
    gaf_log_stats: bool = field(
        default=False,
        metadata={
            "help": "On logging steps, log gradient norm before/after GAF and the fractions "
            "amplified/compressed/saturated."
        },
    )
    max_grad_norm: float | None = field(
        default=None,
        metadata={
            "help": "Gradient clipping norm (0 disables). Default: 1.0, or 0 when GAF is on (clipping before GAF "
            "shrinks every coordinate into GAF's linear zone)."
        },
    )

    def __post_init__(self):
        if self.gaf not in GAF_CHOICES:
            raise ValueError(f"--gaf {self.gaf!r} is not one of {', '.join(GAF_CHOICES)}")
        is_sgd = str(self.optim).split(".")[-1].lower() == "sgd"
        if self.gaf_placement is None:  # the placement the optimizer allows: the paper's for SGD
            self.gaf_placement = "update" if is_sgd else "grad"
            if self.gaf != "none":
                logger.warning("GAF placement %s (f on the %s), chosen for --optim %s; --gaf_placement sets it",
                               self.gaf_placement, "momentum update" if is_sgd else "gradient", self.optim)
        check_placement(self.gaf_placement)
        self.gaf_spec: GAFSpec | None = None
        self.treatment_settings: dict | None = None
        if self.grad_treatment != "none":
            if self.gaf != "none":
                raise ValueError(f"--grad_treatment {self.grad_treatment} and --gaf {self.gaf}: one gradient transform "
                                 "at a time (a comparison compares one thing); set --gaf none")
            self.treatment_settings = parse_treatment_args(self.grad_treatment, self.grad_treatment_args)
        if self.gaf != "none":
            self.gaf_spec = validate_gaf(self.gaf, self.gaf_alpha, self.gaf_beta)
            if self.gaf_placement == "update" and not is_sgd:
                raise ValueError(
                    f"--gaf_placement update applies f to the SGD momentum update and needs --optim sgd "
                    f"(got --optim {self.optim}); use --gaf_placement grad with other optimizers"
                )
            for pattern in self.gaf_exclude:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ValueError(f"--gaf_exclude {pattern!r} is not a valid regular expression: {err}") from None
        for flag in ("learning_rate", "weight_decay", "max_grad_norm"):  # NaN passes every comparison downstream
            value = getattr(self, flag)
            if value is not None and not 0 <= value < math.inf:
                raise ValueError(f"--{flag} {value}: need a finite number >= 0")
        fused_default()  # a bad HF_GAF_FUSED stops the run here, before data and model loading
        if self.max_grad_norm is None:  # a treatment is a clipping scheme of its own: no norm clipping before it
            self.max_grad_norm = 0.0 if self.gaf_spec is not None or self.treatment_settings is not None else 1.0
        elif self.gaf_spec is not None and self.max_grad_norm > 0:
            logger.warning(
                "GAF (%s) and --max_grad_norm %s are both on: gradients are clipped to norm %s FIRST, which shrinks "
                "every coordinate towards GAF's linear zone, so GAF mostly rescales by alpha*beta=%g. "
                "Set --max_grad_norm 0 to run GAF as in the paper.",
                self.gaf,
                self.max_grad_norm,
                self.max_grad_norm,
                self.gaf_spec.gain,
            )
        super().__post_init__()
        transformed = self.gaf_spec is not None or self.treatment_settings is not None
        if transformed and getattr(self, "hf_deepspeed_config", None) is not None:
            check_deepspeed_config(self.hf_deepspeed_config.config, f"--deepspeed {self.deepspeed}"
                                   if isinstance(self.deepspeed, str) else "--deepspeed")

    def gaf_config(self) -> dict:
        """The GAF settings as written into each checkpoint (``gaf_config.json``)."""
        return dict(
            gaf=self.gaf,
            gaf_alpha=self.gaf_alpha,
            gaf_beta=self.gaf_beta,
            gaf_placement=self.gaf_placement,
            gaf_exclude=list(self.gaf_exclude),
            grad_treatment=self.grad_treatment,
            grad_treatment_args=self.treatment_settings,
        )


def check_deepspeed_config(config: dict, source: str) -> None:
    """GAF runs in the optimizer the Trainer builds (GAFSGD, or any other with the GAF hook), which DeepSpeed
    steps as its client optimizer after its cross-rank reduce on each rank's flat partition. A ``ValueError``
    naming ``source`` when the DeepSpeed config would bypass it: an ``"optimizer"`` section (DeepSpeed builds its
    own optimizer) or optimizer offload (the step runs in DeepSpeed's CPU optimizer; not tested with GAF). The
    same holds for a ``--grad_treatment``, which runs where GAF runs."""
    if "optimizer" in config:
        raise ValueError(
            f"{source}: the DeepSpeed config has its own \"optimizer\" section, so DeepSpeed would build an optimizer "
            "GAF does not run in; remove that section: GAFTrainer builds the optimizer from --optim (GAFSGD for sgd, "
            "any other with the GAF hook) and DeepSpeed steps it"
        )
    offload = (config.get("zero_optimization") or {}).get("offload_optimizer") or {}
    if str(offload.get("device", "none")).lower() != "none":
        raise ValueError(
            f"{source}: zero_optimization.offload_optimizer.device is {offload['device']!r}; GAF with an offloaded "
            "optimizer step is not supported (not tested): set it to \"none\", or run with --gaf none"
        )

"""``GAFTrainer``: GAF in ``transformers.Trainer``, switched on by :class:`GAFTrainingArguments`.

Where GAF runs: inside ``optimizer.step()`` of the innermost torch optimizer, so it sees gradients
that are accumulated over micro-batches, averaged across ranks and unscaled, once per real step:

- ``--optim sgd``: the Trainer builds :class:`~hf_gaf.GAFSGD` (placement ``grad`` or ``update``);
  momentum, dampening and nesterov come from ``--optim_args "momentum=0.9,nesterov=true"``.
- any other ``--optim`` (AdamW, Adafactor, ...): the Trainer's optimizer with :func:`~hf_gaf.attach_gaf`
  (placement ``grad``); ``update`` needs SGD and is refused before training starts.
- an optimizer passed in ``optimizers=``: checked against the arguments, and given the hook at
  ``on_train_begin`` when it has none.
- DeepSpeed (``--deepspeed`` or an accelerate config): DeepSpeed steps the optimizer built here after its
  cross-rank reduce, on each rank's flat partition; parameters ``--gaf_exclude`` names are in their own groups
  (which survive the flattening). A config with its own ``"optimizer"`` section or optimizer offload is refused
  (:func:`~hf_gaf.trainer.arguments.check_deepspeed_config`).

The optimizer is built once: parameter groups first (decay / no decay by the Trainer's own
``get_decay_parameter_names``, × ``--gaf_exclude``, × :meth:`GAFTrainer.param_group_overrides`), then
one construction through the Trainer's ``create_optimizer`` with the class and keywords of
``get_optimizer_cls_and_kwargs`` (GAFSGD in place of SGD when GAF is on). With a plain
``TrainingArguments`` the trainer is ``transformers.Trainer`` with GAF off.

Example:
    >>> import torch
    >>> from hf_gaf.trainer import GAFTrainer, GAFTrainingArguments
    >>> class Tiny(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.linear = torch.nn.Linear(2, 1)
    ...     def forward(self, x, labels):
    ...         return {"loss": (self.linear(x).squeeze(-1) - labels).square().mean()}
    >>> data = [{"x": torch.randn(2), "labels": torch.tensor(1.0)} for _ in range(8)]
    >>> args = GAFTrainingArguments("/tmp/gaf-doc", gaf="atan", optim="sgd", report_to="none", max_steps=2,
    ...                             use_cpu=True, save_strategy="no", disable_tqdm=True)
    >>> trainer = GAFTrainer(model=Tiny(), args=args, train_dataset=data)
    >>> _ = trainer.train()  # doctest: +ELLIPSIS
    {...}
    >>> type(trainer.optimizer.optimizer).__name__, trainer.state.global_step
    ('GAFSGD', 2)
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_optimizer import is_optimizer_factory
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..functional import GAFSpec
from ..gaf_sgd import GAFSGD
from ..hook import NO_GAF, attach_gaf, attached_gaf, unwrap_optimizer
from ..treatments import attach_treatment, attached_treatment
from .arguments import GAFTrainingArguments, check_deepspeed_config

logger = logging.getLogger(__name__)

GAF_CONFIG_NAME = "gaf_config.json"


def is_excluded(name: str, patterns: list[str]) -> bool:
    """True when parameter ``name`` matches one of the ``--gaf_exclude`` regular expressions."""
    return any(re.search(p, name) for p in patterns)


def _mesh_of(param) -> object:
    """The device mesh of a DTensor parameter (``None`` otherwise): parameters on different meshes cannot
    share one fused/foreach kernel call, so they get their own groups (as transformers does)."""
    if type(param) in (torch.nn.Parameter, torch.Tensor):
        return None
    from torch.distributed.tensor import DTensor

    return param.device_mesh if isinstance(param, DTensor) else None


class GAFAttachCallback(TrainerCallback):
    """Fallback for an optimizer the Trainer did not build through ``create_optimizer`` (``optimizers=``
    passed in): attach GAF at ``on_train_begin``."""

    def __init__(self, trainer: GAFTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None:
            self.trainer._ensure_gaf(optimizer)


class GAFTrainer(Trainer):
    """``transformers.Trainer`` that applies GAF from :class:`GAFTrainingArguments` (module docstring).

    With ``GAFTrainingArguments`` the GAF settings are written to ``gaf_config.json`` in every
    checkpoint; resuming with other settings warns loudly, and the current run's settings are used.
    Subclasses extend three points: :meth:`elementwise_transform` (what runs where GAF runs),
    :meth:`param_group_overrides` (per-parameter optimizer settings such as a backbone learning rate) and
    :meth:`module_group` (the model's parts, for per-part statistics).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # the arguments' GAF settings, read once: a plain TrainingArguments is GAF off, with nothing recorded
        self.gaf_args = self.args if isinstance(self.args, GAFTrainingArguments) else None
        if self.optimizer is not None:  # passed in with optimizers=(...): what it runs must be what is recorded
            self.check_given_optimizer(self.optimizer)
        if self.elementwise_transform() is not None or self.treatment is not None:
            self.add_callback(GAFAttachCallback(self))
            if self.is_deepspeed_enabled and self.args.deepspeed is None:  # DeepSpeed from the accelerate config
                check_deepspeed_config(self.accelerator.state.deepspeed_plugin.deepspeed_config,
                                       "the accelerate config's DeepSpeed settings")
        self.gaf_stats = None
        if self.gaf_args is not None and self.gaf_args.gaf_log_stats and self.gaf_args.gaf_spec is not None:
            from .stats import GAFStatsCallback

            plugin = self.accelerator.state.deepspeed_plugin if self.is_deepspeed_enabled else None
            groups = {id(p): g for n, p in self.model.named_parameters() if (g := self.module_group(n)) is not None}
            self.gaf_stats = GAFStatsCallback(partitioned=plugin is not None and (plugin.zero_stage or 0) >= 1,
                                              groups=groups)
            self.add_callback(self.gaf_stats)

    # --- what runs, and where ------------------------------------------------------------------------
    def elementwise_transform(self) -> GAFSpec | None:
        """The elementwise function applied where GAF runs: the arguments' GAF spec (``None``: GAF off)."""
        return self.gaf_args.gaf_spec if self.gaf_args is not None else None

    @property
    def treatment(self) -> tuple[str, dict] | None:
        """``--grad_treatment`` and its settings (:mod:`hf_gaf.treatments`), or ``None``."""
        args = self.gaf_args
        return None if args is None or args.treatment_settings is None else (args.grad_treatment,
                                                                             args.treatment_settings)

    @property
    def gaf_placement(self) -> str:
        """``update`` or ``grad`` (``grad`` for transforms that are not GAF arguments)."""
        return self.gaf_args.gaf_placement if self.gaf_args is not None else "grad"

    @property
    def gaf_exclude(self) -> list[str]:
        return list(self.gaf_args.gaf_exclude) if self.gaf_args is not None else []

    def param_group_overrides(self, name: str, param: torch.nn.Parameter) -> dict:
        """Optimizer settings that parameter ``name`` needs on top of the defaults (none here)."""
        return {}

    def module_group(self, name: str) -> str | None:
        """The part of the model parameter ``name`` belongs to, for per-part GAF statistics (``--gaf_log_stats``
        logs ``gaf/<part>/<key>`` beside the totals); ``None`` here: totals only."""
        return None

    def check_given_optimizer(self, optimizer) -> None:
        """An optimizer passed in ``optimizers=`` must run what the arguments say, since ``gaf_config.json`` and
        ``metrics.json`` record the arguments: a :class:`~hf_gaf.GAFSGD` must apply exactly the arguments' GAF
        (or none with ``--gaf none``), an optimizer with :func:`~hf_gaf.attach_gaf` the arguments' spec; a
        contradiction is a ``ValueError`` naming both, before training. Any other optimizer gets the hook at
        ``on_train_begin``."""
        inner = unwrap_optimizer(optimizer)
        spec, placement = self.elementwise_transform(), self.gaf_placement
        wanted = None if spec is None else (spec.kind, spec.alpha, spec.beta, placement)
        if isinstance(inner, GAFSGD):
            running = {(g["gaf"], g["alpha"], g["beta"], g["placement"])
                       for g in inner.param_groups if g["gaf"] is not None}
            if wanted is None and self.gaf_args is None:
                return  # plain TrainingArguments: no GAF settings are recorded, nothing to contradict
            if running != ({wanted} if wanted else set()):
                have = ", ".join(
                    f"{k} alpha={a:g} beta={b:g} placement={pl}" for k, a, b, pl in sorted(running, key=str)
                )
                raise ValueError(self._contradiction(f"GAFSGD applies {have or 'no GAF (gaf=None)'}", spec, placement))
            return
        hook = attached_gaf(inner)
        if hook is None or (spec is None and self.gaf_args is None):
            return
        if spec is None or hook.spec != spec:
            raise ValueError(self._contradiction(f"{type(inner).__name__} has attach_gaf({hook.spec})", spec, "grad"))

    @staticmethod
    def _contradiction(running: str, spec: GAFSpec | None, placement: str) -> str:
        asked = (
            "--gaf none"
            if spec is None
            else (f"--gaf {spec.kind} --gaf_alpha {spec.alpha:g} --gaf_beta {spec.beta:g} --gaf_placement {placement}")
        )
        return (
            f"the optimizer passed in optimizers= contradicts the GAF arguments: {running}, the arguments say "
            f"{asked}. gaf_config.json and metrics.json record the arguments, so set them to what the optimizer "
            "runs (or let the Trainer build the optimizer from the arguments)"
        )

    # --- where the optimizer is built ------------------------------------------------------------------
    def optimizer_param_groups(self, model, gaf_in_groups: bool) -> list[dict]:
        """The trainable parameters split by weight decay (the Trainer's ``get_decay_parameter_names``),
        by ``--gaf_exclude`` (groups with ``gaf=None`` when GAF lives in the optimizer's groups, else with
        ``no_gaf=True`` for the hook: a group survives wrappers that flatten parameters) and by
        :meth:`param_group_overrides`; groups without overrides first, then decayed before not decayed,
        parameters in model order."""
        decay = set(self.get_decay_parameter_names(model))
        transformed = self.elementwise_transform() is not None or self.treatment is not None
        exclusions = self.gaf_exclude if transformed else []
        buckets: dict[tuple, list] = {}
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            excluded = is_excluded(name, exclusions)
            key = (name in decay, excluded, tuple(sorted(self.param_group_overrides(name, p).items())), id(_mesh_of(p)))
            buckets.setdefault(key, []).append(p)
        groups = []
        # groups on the run's own settings first: the Trainer logs the first group's learning rate, which is then
        # --learning_rate's schedule, not an override's (DETR's backbone rate)
        for (decayed, excluded, overrides, _), params in sorted(buckets.items(),
                                                                key=lambda kv: (bool(kv[0][2]), not kv[0][0])):
            group = {"params": params, "weight_decay": self.args.weight_decay if decayed else 0.0, **dict(overrides)}
            if excluded:
                group.update({"gaf": None} if gaf_in_groups else {NO_GAF: True})
            groups.append(group)
        return groups

    def create_optimizer(self, model=None):
        """Build the optimizer once (module docstring), then attach the GAF hook where the optimizer is
        not GAFSGD."""
        if self.optimizer is not None:
            return self.optimizer
        model = model if model is not None else self.model
        spec = self.elementwise_transform()
        user_choice = self.optimizer_cls_and_kwargs
        cls, kwargs = user_choice if user_choice is not None else self.get_optimizer_cls_and_kwargs(self.args, model)
        kwargs = dict(kwargs)
        if spec is not None and cls is torch.optim.SGD:
            cls = GAFSGD
            kwargs.update(gaf=spec, placement=self.gaf_placement)
        if not is_optimizer_factory(cls) and not {"params", "model", "optimizer_dict"} & kwargs.keys():
            kwargs["params"] = self.optimizer_param_groups(model, gaf_in_groups=cls is GAFSGD)
        # else: an optimizer that chooses its own parameters (GaLore, LOMO, layer-wise, factories)
        self.optimizer_cls_and_kwargs = (cls, kwargs)
        try:
            super().create_optimizer(model)
        finally:
            self.optimizer_cls_and_kwargs = user_choice
        if isinstance(unwrap_optimizer(self.optimizer), GAFSGD):
            if self.gaf_stats is not None:
                self.gaf_stats.register(self.optimizer)
        elif spec is not None or self.treatment is not None:
            self._ensure_gaf(self.optimizer, model)
        return self.optimizer

    def _ensure_gaf(self, optimizer, model=None) -> None:
        """Attach the GAF hook (or the ``--grad_treatment`` hook) unless it already runs in ``optimizer``."""
        inner = unwrap_optimizer(optimizer)
        if self.treatment is not None:
            if attached_treatment(inner) is None:
                name, settings = self.treatment
                attach_treatment(inner, name, params=self._transformed_params(inner, model), **settings)
            return
        if isinstance(inner, GAFSGD) or attached_gaf(inner) is not None:
            return
        if self.gaf_placement == "update":
            raise ValueError(
                f"--gaf_placement update needs SGD, but the optimizer is {type(inner).__name__}; "
                "use --gaf_placement grad"
            )
        if self.gaf_stats is not None:
            self.gaf_stats.register(inner)  # ahead of the GAF hook, so it measures the raw gradients
        spec = self.elementwise_transform()
        attach_gaf(inner, gaf=spec, params=self._transformed_params(inner, model))
        logger.info("%s attached to %s", spec, type(inner).__name__)

    def _transformed_params(self, inner, model=None) -> list | None:
        """``params=`` for the hook: ``None`` (all, but the ``no_gaf`` groups this trainer built for
        ``--gaf_exclude``), or, for an optimizer built elsewhere, the parameters ``--gaf_exclude`` leaves in, by
        identity (checked at the first step)."""
        if not self.gaf_exclude or any(NO_GAF in g for g in inner.param_groups):
            return None
        model = model if model is not None else self.model
        kept = {id(p) for n, p in model.named_parameters() if p.requires_grad and not is_excluded(n, self.gaf_exclude)}
        all_params = [p for g in inner.param_groups for p in g["params"]]
        selected = [p for p in all_params if id(p) in kept]
        return None if len(selected) == len(all_params) else selected

    # --- checkpoints ------------------------------------------------------------------------------
    def gaf_config(self) -> dict | None:
        """The settings recorded in each checkpoint (``None`` with a plain ``TrainingArguments``)."""
        return self.gaf_args.gaf_config() if self.gaf_args is not None else None

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Model weights of a checkpoint, with the key conversion of ``from_pretrained``.

        ``save_pretrained`` writes some architectures (RT-DETR among them) under their original checkpoint
        names, and transformers' ``Trainer`` loads a checkpoint's ``model.safetensors`` with a plain
        ``load_state_dict``, so on resume those weights are not found and keep their fresh initial values
        (huggingface/transformers#43701). For a ``PreTrainedModel`` saved as one safetensors file the
        weights are read through ``from_pretrained`` and copied in strictly; anything else is transformers'
        own loading."""
        from transformers import PreTrainedModel
        from transformers.utils import SAFE_WEIGHTS_NAME

        target = model if model is not None else self.model
        inner = self.accelerator.unwrap_model(target) if target is not None else None
        if not isinstance(inner, PreTrainedModel) or not os.path.isfile(
            os.path.join(resume_from_checkpoint, SAFE_WEIGHTS_NAME)
        ):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(inner).from_pretrained(resume_from_checkpoint, config=inner.config)
        inner.load_state_dict(loaded.state_dict(), strict=True)
        del loaded

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        current = self.gaf_config()
        if self.args.should_save and current is not None:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            with open(os.path.join(folder, GAF_CONFIG_NAME), "w") as f:
                json.dump(current, f, indent=2)

    def _load_optimizer_and_scheduler(self, checkpoint):
        current = self.gaf_config()
        if current is None:
            return super()._load_optimizer_and_scheduler(checkpoint)
        saved = self._saved_gaf_config(checkpoint) if checkpoint is not None else None
        if saved is not None and list(saved.get("gaf_exclude", [])) != list(current["gaf_exclude"]):
            raise ValueError(
                f"checkpoint {checkpoint} was trained with --gaf_exclude {saved.get('gaf_exclude')}, this run asks for "
                f"{current['gaf_exclude']}: the exclusions split the optimizer's parameter groups, so its saved state "
                "cannot be matched to the new groups; resume with the checkpoint's --gaf_exclude"
            )
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        if saved != current:
            message = (
                f"RESUMING WITH DIFFERENT GAF SETTINGS: checkpoint {checkpoint} was trained with "
                f"{saved if saved is not None else 'no GAF settings recorded'}, this run uses {current}. "
                "The run's settings apply from here on; the optimizer state (momentum) is kept."
            )
            logger.warning(message)
            warnings.warn(message, stacklevel=2)
        inner = unwrap_optimizer(self.optimizer) if self.optimizer is not None else None
        spec = self.elementwise_transform()
        if isinstance(inner, GAFSGD) and spec is not None:  # the loaded state_dict carried the checkpoint's settings
            for group in inner.param_groups:
                if group["gaf"] is not None:
                    group.update(gaf=spec.kind, alpha=spec.alpha, beta=spec.beta, placement=self.gaf_placement)

    @staticmethod
    def _saved_gaf_config(checkpoint: str) -> dict | None:
        """The checkpoint's ``gaf_config.json`` (None when it has none); a corrupt one is an error naming it."""
        path = os.path.join(checkpoint, GAF_CONFIG_NAME)
        if not os.path.isfile(path):
            return None
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(
                f"{path} cannot be read as JSON ({err}); restore it from another checkpoint or "
                "delete it to resume without recorded GAF settings"
            ) from None
        if not isinstance(saved, dict):
            raise ValueError(f"{path} holds {type(saved).__name__}, not the GAF settings object")
        return saved

    # --- logging ----------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self.gaf_stats is not None and "loss" in logs:
            logs.update(self.gaf_stats.pop_stats())
        super().log(logs, *args, **kwargs)

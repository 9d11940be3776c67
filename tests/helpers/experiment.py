"""Test helpers of the experiment harness (the [hf] wing's helpers, tests/helpers/tiny.py, never import it)."""

from hf_gaf.harness.experiment_args import ExperimentArguments, ExperimentTrainerMixin
from tests.helpers.tiny import SequentialGAFTrainer, tiny_args


class SequentialExperimentTrainer(ExperimentTrainerMixin, SequentialGAFTrainer):
    """:class:`~tests.helpers.tiny.SequentialGAFTrainer` with the harness's flags (lr_milestones, backbone_lr)."""


def experiment_args(out_dir, **overrides) -> ExperimentArguments:
    """:func:`~tests.helpers.tiny.tiny_args` as :class:`ExperimentArguments`."""
    return tiny_args(out_dir, args_cls=ExperimentArguments, **overrides)

"""The experiment harness's flags on top of GAFTrainer (hf_gaf.harness.experiment_args): the multi-step schedule,
the backbone learning rate in the one optimizer construction; the clip-by-value preset as the ``clip`` kind."""

import pytest
import torch

from hf_gaf import GAFSGD
from hf_gaf.harness.presets import clip_by_value
from tests.helpers.experiment import SequentialExperimentTrainer, experiment_args
from tests.helpers.tiny import TinyData, TinyRegressor, hand_written_run, params_of


@pytest.mark.parametrize("optim", ["sgd", "adamw_torch"])
def test_clip_by_value_as_the_clip_kind_equals_torch_clip_grad_value(tmp_path, optim):
    """The clip-value preset is the ``clip`` kind (α = v, β = 1/v) on the gradient: GAFSGD's kind with --optim
    sgd, the hook's with any other optimizer; both equal torch's clip_grad_value_ before the step."""
    model = TinyRegressor()
    trainer = SequentialExperimentTrainer(
        model=model,
        train_dataset=TinyData(64),
        args=experiment_args(tmp_path, optim=optim, optim_args="momentum=0.9" if optim == "sgd" else None,
                             learning_rate=0.05, weight_decay=0.0, **clip_by_value(0.05)),
    )
    trainer.train()
    def make_optimizer(params):
        if optim == "sgd":
            return torch.optim.SGD(params, lr=0.05, momentum=0.9)
        return torch.optim.AdamW(params, lr=0.05, weight_decay=0.0)

    reference = hand_written_run(make_optimizer, lambda params: torch.nn.utils.clip_grad_value_(params, 0.05))
    for name, p in reference.items():
        torch.testing.assert_close(params_of(model)[name], p, rtol=1e-6, atol=1e-6, msg=name)


def test_multistep_schedule_with_warmup(tmp_path):
    trainer = SequentialExperimentTrainer(
        model=TinyRegressor(),
        train_dataset=TinyData(16),
        args=experiment_args(tmp_path, lr_milestones=[0.5, 0.75], lr_gamma=0.1, warmup_steps=2),
    )
    trainer.create_optimizer()
    sched = trainer.create_scheduler(num_training_steps=8)
    lrs = []
    for _ in range(8):
        lrs.append(sched.get_last_lr()[0])
        trainer.optimizer.step()
        sched.step()
    expected = [0.025, 0.05, 0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005]
    assert lrs == pytest.approx(expected)
    with pytest.raises(ValueError, match="lr_milestones"):
        experiment_args(tmp_path, lr_milestones=[0.8, 0.5])


def test_optimizer_built_once_with_decay_exclusion_and_backbone_groups(tmp_path):
    """One construction: the Trainer's decay split x --gaf_exclude x --backbone_lr, each parameter in one group."""
    trainer = SequentialExperimentTrainer(
        model=TinyRegressor(),
        train_dataset=TinyData(16),
        args=experiment_args(tmp_path, gaf_exclude=["head"], backbone_lr=0.001, backbone_pattern="body"),
    )
    built = []
    original = GAFSGD.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    GAFSGD.__init__ = counting_init
    try:
        opt = trainer.create_optimizer()
    finally:
        GAFSGD.__init__ = original
    assert len(built) == 1
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    seen = {names[id(p)]: g for g in opt.param_groups for p in g["params"]}
    assert sorted(seen) == sorted(names.values())
    assert seen["body.weight"]["lr"] == 0.001 and seen["body.weight"]["weight_decay"] == 0.01
    assert seen["body.bias"]["lr"] == 0.001 and seen["body.bias"]["weight_decay"] == 0.0
    assert seen["head.weight"]["gaf"] is None and seen["head.weight"]["lr"] == 0.05
    assert seen["norm.weight"]["gaf"] == "atan" and seen["norm.weight"]["weight_decay"] == 0.0
    assert opt.param_groups[0]["lr"] == 0.05, "the first group (whose rate the Trainer logs) is not an override's"


@pytest.mark.parametrize("flag, value", [("lr_gamma", float("nan")), ("backbone_lr", float("inf")),
                                         ("learning_rate", float("nan")), ("max_grad_norm", float("nan")),
                                         ("weight_decay", float("inf"))])
def test_a_value_that_means_nothing_is_refused_naming_the_flag(tmp_path, flag, value):
    """Round 4, low: a NaN flag passed (NaN compares false) and was recorded in metrics.json; inf was a silent
    no-op. Every float flag of the harness is checked so."""
    with pytest.raises(ValueError, match=f"--{flag} {value}"):
        experiment_args(tmp_path, gaf="none", **{flag: value})


def test_a_bad_hf_gaf_fused_stops_the_run_when_the_flags_are_read(tmp_path, monkeypatch):
    """Round 4, low: a bad HF_GAF_FUSED failed at the first optimizer step, after data and model loading."""
    monkeypatch.setenv("HF_GAF_FUSED", "fastest")
    with pytest.raises(ValueError, match="HF_GAF_FUSED='fastest'"):
        experiment_args(tmp_path, gaf="atan")


def test_grad_spike_multiplies_the_gradient_of_the_chosen_steps_and_keeps_the_loss(tmp_path):
    """--grad_spike_steps 3 --grad_spike_scale 5: the 3rd optimizer step's gradient is 5 x what it was (a
    hand-written run scaling that step's gradient), and the logged loss of that step is the unspiked one."""
    def train(out, **spikes):
        model = TinyRegressor()
        trainer = SequentialExperimentTrainer(
            model=model, train_dataset=TinyData(64),
            args=experiment_args(out, gaf="none", weight_decay=0.0, max_grad_norm=0.0, logging_steps=1,
                                 **spikes))
        trainer.train()
        return params_of(model), [h["loss"] for h in trainer.state.log_history if "loss" in h]

    spiked_params, spiked_losses = train(tmp_path / "spiked", grad_spike_steps=[3], grad_spike_scale=5.0)
    plain_params, plain_losses = train(tmp_path / "plain")
    calls = []

    def scale_third_step(params):
        calls.append(1)
        if len(calls) == 3:
            for p in params:
                p.grad.mul_(5.0)

    reference = hand_written_run(lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
                                 scale_third_step)
    for name, p in reference.items():
        scale = p.abs().max()  # float32 rounding, grown by the training's chaos: relative to the tensor's scale
        assert (spiked_params[name] - p).abs().max() < 1e-5 * scale, name
        assert (plain_params[name] - p).abs().max() > 1e-2 * scale, name
    assert spiked_losses[:3] == pytest.approx(plain_losses[:3], rel=1e-6)
    with pytest.raises(ValueError, match="grad_spike_steps"):
        experiment_args(tmp_path, grad_spike_steps=[0])
    with pytest.raises(ValueError, match="grad_spike_scale"):
        experiment_args(tmp_path, grad_spike_scale=float("inf"))

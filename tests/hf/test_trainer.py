import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import HfArgumentParser, TrainerCallback

from hf_gaf import GAFSGD, GAFTrainingArguments, attached_gaf, unwrap_optimizer
from hf_gaf.functional import GAFSpec
from hf_gaf.trainer.arguments import check_deepspeed_config
from hf_gaf.trainer.stats import gaf_stat_sums, gaf_stats, stats_of_sums
from hf_gaf.treatments import TREATMENTS
from tests.helpers.tiny import (
    SequentialGAFTrainer,
    TinyData,
    TinyRegressor,
    hand_written_run,
    params_of,
    tiny_args,
)

ROOT = Path(__file__).resolve().parents[2]


def hand_loop(batch_size, steps_data, placement, lr=0.05, momentum=0.9, wd=0.01):
    """GAFSGD over the same batches, the Trainer's decay/no-decay groups, no Trainer."""
    model = TinyRegressor()
    decay = [p for n, p in model.named_parameters() if "bias" not in n and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if "bias" in n or "norm" in n]
    opt = GAFSGD([dict(params=decay, weight_decay=wd), dict(params=no_decay, weight_decay=0.0)], lr=lr,
                 momentum=momentum, gaf="atan", alpha=0.1, beta=20.0, placement=placement, fused=False)
    data = TinyData(64)
    for start in range(0, steps_data, batch_size):
        opt.zero_grad()
        batch = data[start:start + batch_size]
        model(batch["x"], batch["labels"])["loss"].backward()
        opt.step()
    return params_of(model)


@pytest.mark.parametrize("placement", ["update", "grad"])
def test_trainer_equals_hand_written_gafsgd_loop(tmp_path, placement):
    model = TinyRegressor()
    trainer = SequentialGAFTrainer(model=model, args=tiny_args(tmp_path, gaf_placement=placement),
                                   train_dataset=TinyData(64))
    trainer.train()
    assert isinstance(unwrap_optimizer(trainer.optimizer), GAFSGD)
    expected = hand_loop(8, 64, placement)
    for name, p in params_of(model).items():
        torch.testing.assert_close(p, expected[name], rtol=1e-6, atol=1e-6, msg=name)


def test_gradient_accumulation_equals_large_batch_and_hook_fires_once_per_step(tmp_path):
    runs = {}
    for bs, acc in ((8, 1), (2, 4)):
        model = TinyRegressor()
        trainer = SequentialGAFTrainer(
            model=model, train_dataset=TinyData(64),
            args=tiny_args(tmp_path / f"{bs}", per_device_train_batch_size=bs, gradient_accumulation_steps=acc,
                           optim="adamw_torch", optim_args=None, learning_rate=1e-2, gaf_placement="grad"))
        trainer.train()
        hook = attached_gaf(trainer.optimizer)
        assert hook is not None and hook.calls == trainer.state.global_step == 8
        runs[bs] = params_of(model)
    for name in runs[8]:
        torch.testing.assert_close(runs[2][name], runs[8][name], rtol=1e-6, atol=1e-6, msg=name)


def test_exclude_patterns_leave_parameters_plain(tmp_path):
    trainer = SequentialGAFTrainer(model=TinyRegressor(), train_dataset=TinyData(16),
                                   args=tiny_args(tmp_path, gaf_exclude=["norm", r"^head\."]))
    trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            excluded = "norm" in names[id(p)] or names[id(p)].startswith("head.")
            assert (group["gaf"] is None) == excluded, names[id(p)]


def test_exclusions_of_the_hook_are_parameter_groups_not_identities(tmp_path):
    """With an optimizer other than SGD the excluded parameters sit in groups marked no_gaf=True and the hook is
    attached without params= (identities that a flattening wrapper such as DeepSpeed ZeRO would not keep);
    training leaves them exactly as AdamW alone would move them."""
    trainer = SequentialGAFTrainer(model=TinyRegressor(), train_dataset=TinyData(16),
                                   args=tiny_args(tmp_path, gaf_exclude=["norm", r"^head\."], optim="adamw_torch",
                                                  optim_args=None, gaf_placement="grad"))
    trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            excluded = "norm" in names[id(p)] or names[id(p)].startswith("head.")
            assert group.get("no_gaf", False) == excluded, names[id(p)]
    hook = attached_gaf(trainer.optimizer)
    assert hook.param_ids is None and {id(p) for p in hook.selected()} <= set()  # no gradients yet
    for p in trainer.model.parameters():
        p.grad = torch.ones_like(p)
    assert {names[id(p)] for p in hook.selected()} == {
        n for n, _ in trainer.model.named_parameters() if "norm" not in n and not n.startswith("head.")}


@pytest.mark.slow  # two `accelerate launch` processes (~30 s); `make test-all`
def test_two_process_ddp_matches_one_process(tmp_path, free_port):
    script = ROOT / "tests" / "helpers" / "ddp_train.py"
    env = {**os.environ, "HF_GAF_FUSED": "0", "PYTHONPATH": str(ROOT)}
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "recipes/accelerate_configs/cpu_2proc.yaml"),
           "--main_process_port", str(free_port), str(script), "--out", str(tmp_path / "ddp"), "--batch", "4"]
    (tmp_path / "ddp").mkdir()
    (tmp_path / "one").mkdir()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, timeout=300, capture_output=True)
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "one"), "--batch", "8"], check=True,
                   env=env, cwd=ROOT, timeout=300, capture_output=True)
    r0, r1 = (torch.load(tmp_path / "ddp" / f"params_rank{r}.pt") for r in (0, 1))
    one = torch.load(tmp_path / "one" / "params_rank0.pt")
    for name in r0:
        assert torch.equal(r0[name], r1[name]), f"ranks disagree on {name}"
        torch.testing.assert_close(r0[name], one[name], rtol=1e-5, atol=1e-5, msg=name)


def test_bf16_autocast_on_cpu_trains(tmp_path):
    model = TinyRegressor()
    before = params_of(model)
    trainer = SequentialGAFTrainer(model=model, train_dataset=TinyData(32), args=tiny_args(tmp_path, bf16=True))
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    assert any(not torch.equal(before[n], p) for n, p in params_of(model).items())


class InjectInf(TrainerCallback):
    """Puts an inf into one gradient before optimizer step number ``at`` (1-based)."""

    def __init__(self, model, at):
        self.model, self.at = model, at

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.at:
            self.model.body.weight.grad[0, 0] = float("inf")


def scaled_run(tmp_path, scale, inject_at=None, optim="sgd"):
    model = TinyRegressor()
    extra = {} if optim == "sgd" else dict(optim=optim, optim_args=None, gaf_placement="grad", learning_rate=1e-2)
    trainer = SequentialGAFTrainer(model=model, train_dataset=TinyData(48),
                                   args=tiny_args(tmp_path, lr_scheduler_type="linear", **extra))
    if scale is not None:  # the CUDA fp16 path of accelerate, with a CPU GradScaler
        trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=10_000)
    if inject_at:
        trainer.add_callback(InjectInf(model, inject_at))
    counter = {"n": 0}

    def count(*_):
        counter["n"] += 1

    trainer.create_optimizer()
    unwrap_optimizer(trainer.optimizer).register_step_post_hook(count)
    trainer.train()
    return trainer, params_of(model), counter["n"]


@pytest.mark.parametrize("optim", ["sgd", "adamw_torch_fused"])
def test_grad_scaler_updates_equal_unscaled_run(tmp_path, optim):
    _, plain, _ = scaled_run(tmp_path / "a", None, optim=optim)
    trainer, scaled, _ = scaled_run(tmp_path / "b", 2.0**10, optim=optim)
    assert trainer.accelerator.scaler._scale is not None, "the scaler was never used"
    assert trainer.accelerator.scaler.get_scale() == 2.0**10
    for name in plain:
        torch.testing.assert_close(scaled[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_overflow_step_skipped_without_gaf_or_scheduler(tmp_path):
    trainer, _, steps_run = scaled_run(tmp_path, 2.0**10, inject_at=3, optim="adamw_torch")
    hook = attached_gaf(trainer.optimizer)
    assert trainer.state.global_step == 6
    assert steps_run == 5 and hook.calls == 5, "GAF ran on the overflow step"
    assert trainer.lr_scheduler.last_epoch == 5, "the scheduler advanced on a skipped step"
    assert trainer.accelerator.scaler.get_scale() == 2.0**9


def test_resume_from_checkpoint_is_exact(tmp_path):
    def make(out, **kw):
        model = TinyRegressor()
        args = tiny_args(out, num_train_epochs=1, save_strategy="steps", save_steps=3, lr_scheduler_type="linear", **kw)
        return model, SequentialGAFTrainer(model=model, args=args, train_dataset=TinyData(48))

    model_a, trainer_a = make(tmp_path / "full")
    trainer_a.train()
    checkpoint = tmp_path / "full" / "checkpoint-3"
    saved = json.loads((checkpoint / "gaf_config.json").read_text())
    assert saved["gaf"] == "atan" and saved["gaf_beta"] == 20.0
    model_b, trainer_b = make(tmp_path / "resumed")
    trainer_b.train(resume_from_checkpoint=str(checkpoint))
    for name, p in params_of(model_a).items():
        assert torch.equal(p, params_of(model_b)[name]), name


def test_a_grad_treatment_runs_where_gaf_runs_and_zclip_resumes_exactly(tmp_path):
    """--grad_treatment agc through the Trainer equals SGD after timm's adaptive_clip_grad; zclip's state (in the
    optimizer's state_dict, so in optimizer.pt) makes a resumed run equal the whole one."""
    from timm.utils import adaptive_clip_grad

    model = TinyRegressor()
    args = tiny_args(tmp_path / "agc", gaf="none", grad_treatment="agc", grad_treatment_args="clip_factor=0.05",
                     weight_decay=0.0)
    assert args.max_grad_norm == 0.0  # a treatment is clipping of its own: no norm clipping before it
    SequentialGAFTrainer(model=model, args=args, train_dataset=TinyData(64)).train()
    reference = hand_written_run(lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
                                 lambda params: adaptive_clip_grad(params, clip_factor=0.05, eps=1e-3))
    for name, p in reference.items():
        torch.testing.assert_close(params_of(model)[name], p, rtol=1e-6, atol=1e-7, msg=name)

    def make(out):
        model = TinyRegressor()
        args = tiny_args(out, gaf="none", grad_treatment="zclip", grad_treatment_args="warmup_steps=2,z_thresh=0.5",
                         save_strategy="steps", save_steps=2, optim="adamw_torch", optim_args=None, learning_rate=0.01)
        return model, SequentialGAFTrainer(model=model, args=args, train_dataset=TinyData(64))

    model_a, trainer_a = make(tmp_path / "full")
    trainer_a.train()
    model_b, trainer_b = make(tmp_path / "resumed")
    trainer_b.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))  # warm-up done, spike at 3
    for name, p in params_of(model_a).items():
        assert torch.equal(p, params_of(model_b)[name]), name
    assert unwrap_optimizer(trainer_b.optimizer).state["hf_gaf.zclip"]["clipped_steps"] >= 1
    with pytest.raises(ValueError, match="one gradient transform at a time"):
        tiny_args(tmp_path, gaf="atan", grad_treatment="gc")


def test_resume_with_other_gaf_settings_warns_and_uses_the_run_settings(tmp_path):
    model = TinyRegressor()
    args = tiny_args(tmp_path / "a", save_strategy="steps", save_steps=3, max_steps=3)
    SequentialGAFTrainer(model=model, args=args, train_dataset=TinyData(48)).train()
    trainer = SequentialGAFTrainer(model=TinyRegressor(), train_dataset=TinyData(48),
                                   args=tiny_args(tmp_path / "b", max_steps=5, gaf_beta=30.0))
    with pytest.warns(UserWarning, match="DIFFERENT GAF SETTINGS"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))
    assert unwrap_optimizer(trainer.optimizer).param_groups[0]["beta"] == 30.0


def test_resume_with_a_corrupt_config_or_other_exclusions_is_a_clear_error(tmp_path):
    args = tiny_args(tmp_path / "a", save_strategy="steps", save_steps=3, max_steps=3)
    SequentialGAFTrainer(model=TinyRegressor(), args=args, train_dataset=TinyData(48)).train()
    checkpoint = tmp_path / "a" / "checkpoint-3"
    other = SequentialGAFTrainer(model=TinyRegressor(), train_dataset=TinyData(48),
                                 args=tiny_args(tmp_path / "b", max_steps=5, gaf_exclude=["bias"]))
    with pytest.raises(ValueError, match=r"--gaf_exclude \[\], this run asks for \['bias'\]"):
        other.train(resume_from_checkpoint=str(checkpoint))
    (checkpoint / "gaf_config.json").write_text("{not json")
    same = SequentialGAFTrainer(model=TinyRegressor(), train_dataset=TinyData(48),
                                args=tiny_args(tmp_path / "c", max_steps=5))
    with pytest.raises(ValueError, match=r"gaf_config\.json cannot be read as JSON"):
        same.train(resume_from_checkpoint=str(checkpoint))


def test_stats_equal_hand_computed_values():
    g = torch.tensor([0.001, -0.002, 0.05, -1.0, 3.0, 0.0])
    spec = GAFSpec("atan", 0.1, 20.0)
    f = 0.1 * torch.atan(20.0 * g)
    bound = 0.1 * math.pi / 2
    stats = gaf_stats([([g[:2], g[2:]], spec)])
    assert stats["gaf/norm_before"] == pytest.approx(g.norm().item(), rel=1e-6)
    assert stats["gaf/norm_after"] == pytest.approx(f.norm().item(), rel=1e-6)
    # |f| > |g| for 0.001, -0.002, 0.05 (gain 2 near 0); |f| < |g| for -1 and 3; the 0 stays 0 and is not counted
    assert stats["gaf/amplified"] == pytest.approx(3 / 5)
    assert stats["gaf/compressed"] == pytest.approx(2 / 5)
    assert stats["gaf/saturated"] == pytest.approx(2 / 5)  # 0.1*atan(20) and 0.1*atan(60) exceed 0.9*bound
    assert (f.abs() > 0.9 * bound).sum().item() == 2


def test_stats_of_partitions_padded_with_zeros_add_up_to_the_whole():
    """DeepSpeed ZeRO gives each rank a flat partition, padded with zeros: the ranks' sums add up to the
    statistics of the whole gradient (the callback all-reduces them), the padding counting for nothing."""
    g = torch.tensor([0.001, -0.002, 0.05, -1.0, 3.0, 0.3, -0.04])
    spec = GAFSpec("atan", 0.1, 20.0)
    partitions = [g[:4], torch.cat([g[4:], torch.zeros(1)])]  # 7 coordinates over 2 ranks, one padding zero
    summed = stats_of_sums(sum(gaf_stat_sums([([part], spec)]) for part in partitions))
    whole = gaf_stats([([g], spec)])
    assert summed == pytest.approx(whole, rel=1e-12)


def test_a_deepspeed_config_that_would_bypass_gafs_optimizer_is_refused_naming_it():
    no_offload = {"stage": 2, "offload_optimizer": {"device": "none"}}
    check_deepspeed_config({"zero_optimization": no_offload}, "--deepspeed x")
    with pytest.raises(ValueError, match=r'--deepspeed ds\.json: .*own "optimizer" section'):
        check_deepspeed_config({"optimizer": {"type": "AdamW"}, "zero_optimization": no_offload}, "--deepspeed ds.json")
    with pytest.raises(ValueError, match=r"offload_optimizer.device is 'cpu'"):
        check_deepspeed_config({"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}, "--deepspeed")


def test_grad_norm_is_logged_with_clipping_off(tmp_path):
    """GAF and the treatments turn norm clipping off (max_grad_norm 0); the Trainer's grad_norm, the norm of the
    raw gradient before GAF, stays in the logs."""
    for overrides in ({"gaf": "atan"}, {"gaf": "none", "grad_treatment": "agc"}):
        trainer = SequentialGAFTrainer(model=TinyRegressor(), train_dataset=TinyData(32),
                                       args=tiny_args(tmp_path, logging_steps=1, **overrides))
        assert trainer.args.max_grad_norm == 0.0
        trainer.train()
        norms = [e["grad_norm"] for e in trainer.state.log_history if "loss" in e]
        assert len(norms) == 4 and all(0 < n < math.inf for n in norms), overrides


def test_stats_logged_on_logging_steps_only(tmp_path):
    trainer = SequentialGAFTrainer(
        model=TinyRegressor(), train_dataset=TinyData(64), args=tiny_args(tmp_path, logging_steps=4, gaf_log_stats=True)
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "gaf/norm_before" in entry]
    assert [e["step"] for e in logged] == [4, 8]
    assert all(0 <= e["gaf/amplified"] <= 1 and e["gaf/norm_after"] > 0 for e in logged)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(gaf="sigmoid"), "--gaf 'sigmoid'"),
        (dict(gaf_alpha=0.0), "alpha"),
        (dict(gaf_beta=-2.0), "beta"),
        (dict(gaf_placement="middle"), "placement"),
        (dict(optim="adamw_torch", gaf_placement="update"), "needs --optim sgd"),
        (dict(gaf_exclude=["(unclosed"]), "--gaf_exclude"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_args(tmp_path, **overrides)


def test_parse_from_command_line_json_and_yaml(tmp_path):
    parser = HfArgumentParser(GAFTrainingArguments)
    (cli,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--gaf",
            "tanh",
            "--gaf_alpha",
            "0.2",
            "--gaf_beta",
            "10",
            "--gaf_placement",
            "grad",
            "--gaf_exclude",
            "bias",
            "norm",
            "--optim",
            "adamw_torch",
            "--use_cpu",
            "true",
        ]
    )
    assert (cli.gaf, cli.gaf_alpha, cli.gaf_beta, cli.gaf_placement) == ("tanh", 0.2, 10.0, "grad")
    assert cli.gaf_exclude == ["bias", "norm"] and cli.max_grad_norm == 0.0
    settings = dict(output_dir=str(tmp_path), gaf="atan", gaf_alpha=0.3, gaf_beta=4.5, optim="sgd", use_cpu=True)
    (tmp_path / "a.json").write_text(json.dumps(settings))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(settings))
    (from_json,) = parser.parse_json_file(str(tmp_path / "a.json"))
    (from_yaml,) = parser.parse_yaml_file(str(tmp_path / "a.yaml"))
    for parsed in (from_json, from_yaml):
        assert (parsed.gaf, parsed.gaf_alpha, parsed.gaf_placement, parsed.max_grad_norm) == (
            "atan",
            0.3,
            "update",
            0.0,
        )
    (plain,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--use_cpu", "true"])
    assert plain.max_grad_norm == 1.0


def test_clipping_with_gaf_warns(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="hf_gaf.trainer"):
        args = tiny_args(tmp_path, max_grad_norm=1.0)
    assert args.max_grad_norm == 1.0
    assert "clipped to norm 1.0 FIRST" in caplog.text


def test_plain_training_arguments_mean_gaf_off(tmp_path):
    """GAFTrainer with transformers' own TrainingArguments is transformers.Trainer: torch SGD, no hook,
    no gaf_config.json, the same parameters as the stock Trainer."""
    from transformers import Trainer, TrainingArguments

    settings = dict(
        output_dir=str(tmp_path / "a"),
        per_device_train_batch_size=8,
        learning_rate=0.05,
        lr_scheduler_type="constant",
        optim="sgd",
        report_to="none",
        use_cpu=True,
        max_steps=4,
        save_strategy="steps",
        save_steps=4,
        disable_tqdm=True,
    )
    ours = SequentialGAFTrainer(model=TinyRegressor(), args=TrainingArguments(**settings), train_dataset=TinyData(64))
    ours.train()
    assert type(unwrap_optimizer(ours.optimizer)) is torch.optim.SGD
    assert attached_gaf(ours.optimizer) is None and not (tmp_path / "a" / "checkpoint-4" / "gaf_config.json").exists()

    class SequentialTrainer(Trainer):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    stock = SequentialTrainer(
        model=TinyRegressor(),
        args=TrainingArguments(**{**settings, "output_dir": str(tmp_path / "b")}),
        train_dataset=TinyData(64),
    )
    stock.train()
    for name, p in params_of(stock.model).items():
        torch.testing.assert_close(params_of(ours.model)[name], p, rtol=0, atol=0, msg=name)


@pytest.mark.slow  # torchrun, two processes; `make test-all`
def test_fsdp2_sharded_gaf_equals_unsharded_on_two_cpu_processes(free_port):
    """torch's FSDP2 (fully_shard) runs with gloo on CPU: GAF on sharded gradients (after reduce-scatter) is
    exact per shard, for GAFSGD and for attach_gaf."""
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port),
            str(ROOT / "tests" / "helpers" / "fsdp_gaf.py"),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = {"gafsgd", "attach_gaf", *TREATMENTS, *(f"ddp-{t}" for t in TREATMENTS)}
    rows = {parts[0]: parts[1:] for parts in map(str.split, proc.stdout.splitlines()) if parts and parts[0] in names}
    assert set(rows) == names, proc.stdout
    assert all(float(error) < 1e-6 for error, _ in rows.values()), rows  # the treatments' norms: the full ones
    assert int(rows["zclip"][1]) >= 1 and int(rows["ddp-zclip"][1]) >= 1, rows  # zclip clipped: its norm was tested


def test_gaf_alone_picks_the_placement_from_the_optimizer(tmp_path, caplog):
    """--gaf atan with the Trainer's default optimizer (AdamW) runs GAF on the gradient; with --optim sgd on the
    momentum update (the paper's); the choice is logged once; an explicit flag wins."""
    import logging

    with caplog.at_level(logging.WARNING):
        (args,) = HfArgumentParser(GAFTrainingArguments).parse_args_into_dataclasses(
            ["--output_dir", str(tmp_path), "--gaf", "atan", "--report_to", "none"])
    assert args.gaf_placement == "grad" and args.gaf_config()["gaf_placement"] == "grad"
    assert sum("GAF placement grad" in r.message for r in caplog.records) == 1
    (sgd,) = HfArgumentParser(GAFTrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--gaf", "atan", "--optim", "sgd", "--report_to", "none"])
    assert sgd.gaf_placement == "update"
    (given,) = HfArgumentParser(GAFTrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--gaf", "atan", "--optim", "sgd", "--gaf_placement", "grad",
         "--report_to", "none"])
    assert given.gaf_placement == "grad"
    trainer = SequentialGAFTrainer(model=TinyRegressor(), train_dataset=TinyData(16),
                                   args=tiny_args(tmp_path / "t", optim="adamw_torch", optim_args=None))
    trainer.train()
    assert attached_gaf(trainer.optimizer) is not None

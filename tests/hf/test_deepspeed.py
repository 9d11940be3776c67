"""GAF under DeepSpeed ZeRO 1, 2 and 3 on 2 CPU processes (gloo, ``DS_ACCELERATOR=cpu``), against DDP: the plain
route (``deepspeed.initialize`` with a client optimizer) and GAFTrainer with ``--deepspeed`` (the shipped
``recipes/accelerate_configs/deepspeed_zero2.json`` at each stage), with ``--gaf_exclude``, GAFSGD and gradient
accumulation 2; then each recipe runs under ``accelerate launch`` with DeepSpeed. Slow (``make test-all``):
about 3 minutes, plus about 2.5 minutes once on a fresh machine while DeepSpeed builds its C++ op."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                                   reason="pip install 'hf_gaf[deepspeed]'")]

ROOT = Path(__file__).resolve().parents[2]
HELPERS = ROOT / "tests" / "helpers"
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "HF_GAF_FUSED": "0", "PYTHONPATH": str(ROOT)}
# ZeRO-2/3 reduce the accumulated micro-batches in another order than DDP: a few float32 ulps over the run
ULPS = 1e-7


def torchrun(port, script, *args) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(script), *map(str, args)]
    proc = subprocess.run(cmd, env=ENV, cwd=ROOT, timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def test_plain_deepspeed_zero_1_2_3_equal_ddp_and_params_by_identity_is_refused(free_port):
    """deepspeed.initialize(model, optimizer=client) with AdamW + attach_gaf, with no_gaf groups, and with GAFSGD;
    accumulation 2; the hook's step count is the number of optimizer steps, not of ZeRO's per-group calls."""
    rows, refusal, agc = {}, None, None
    for line in torchrun(free_port, HELPERS / "deepspeed_gaf.py").splitlines():
        if line.startswith("params-error "):
            refusal = line
        elif line.startswith("agc-error "):
            agc = line
        elif line.split(" ")[0] in ("adamw", "exclude", "gafsgd"):
            case, engine, error, steps = line.split()
            rows[(case, engine)] = (float(error), steps)
    for case in ("adamw", "exclude", "gafsgd"):
        for stage in (1, 2, 3):
            error, steps = rows[(case, f"zero{stage}")]
            assert error <= (0.0 if stage == 1 else ULPS), (case, stage, error)  # ZeRO-1 reduces as DDP does
            if case != "gafsgd":
                assert steps == rows[(case, "ddp")][1] == "6", (case, stage, steps)
    # attach_gaf(params=...) names tensors ZeRO does not step: an error at the first step, not f on nothing
    assert refusal is not None and "not among" in refusal and "no_gaf=True" in refusal, refusal
    assert agc is not None and "gradient treatment agc" in agc and "flat partitions" in agc, agc


def trainer_run(port, out, zero, *flags) -> dict:
    torchrun(port, HELPERS / "deepspeed_trainer.py", "--out", out, "--zero", zero, *flags)
    return torch.load(Path(out) / "result.pt")


@pytest.mark.parametrize("flags, stages", [
    ([], (1, 2, 3)),                          # AdamW + the hook
    (["--gaf_exclude", "norm"], (2,)),        # exclusions as no_gaf groups
    (["--optim", "sgd"], (2,)),               # GAFSGD, placement update, on ZeRO's flat partitions
], ids=["adamw", "gaf_exclude", "gafsgd"])
def test_gaftrainer_with_deepspeed_equals_ddp(tmp_path, free_port, flags, stages):
    """Accumulation 2, 8 optimizer steps: weights, the hook's step count and the GAF statistics (summed over the
    ranks' partitions) equal the DDP run's."""
    ddp = trainer_run(free_port, tmp_path / "ddp", -1, *flags)
    assert ddp["steps"] == 8 and len(ddp["stats"]) == 4
    for stage in stages:
        run = trainer_run(free_port, tmp_path / f"zero{stage}", stage, *flags)
        assert run["steps"] == 8 and run["hook_steps"] == ddp["hook_steps"], (stage, run["hook_steps"])
        for name, w in ddp["weights"].items():
            torch.testing.assert_close(run["weights"][name], w, rtol=0, atol=ULPS, msg=f"zero{stage} {name}")
        for ours, theirs in zip(run["stats"], ddp["stats"], strict=True):
            for key, value in theirs.items():
                assert ours[key] == pytest.approx(value, rel=1e-6), (stage, key)
    if "--gaf_exclude" in flags:  # the exclusion changed something: the LayerNorm trained without GAF
        plain = trainer_run(free_port, tmp_path / "no-exclusion", 2)
        assert not torch.allclose(plain["weights"]["norm.weight"], ddp["weights"]["norm.weight"])


RECIPE_RUNS = {
    "classification": ["recipes/classification/train.py", "--preset", "gaf", "--max_train_samples", "32",
                       "--max_eval_samples", "16", "--per_device_train_batch_size", "8"],
    "detr": ["recipes/detection/train_detr.py", "--preset", "adamw-gaf", "--model_config", "tiny-rt-detr",
             "--classes", "auto", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "4",
             "--image_size", "96"],
    "faster_rcnn": ["recipes/detection/train_faster_rcnn.py", "--preset", "gaf", "--backbone", "timm:resnet18",
                    "--anchor_sizes", "16", "32", "64", "--timm_out_indices", "2", "3", "--fpn_channels", "32",
                    "--classes", "auto", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "4",
                    "--image_size", "96"],
}


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    from hf_gaf.detection.synthetic_voc import make_voc

    return make_voc(str(tmp_path_factory.mktemp("voc")), n_train=8, n_test=4, image_size=96, seed=4)


@pytest.mark.parametrize("recipe", list(RECIPE_RUNS))
def test_each_recipe_trains_under_accelerate_launch_with_deepspeed(tmp_path, free_port, tiny_voc, recipe):
    """``accelerate launch`` with a DeepSpeed ZeRO-2 config (the shipped JSON), 2 CPU processes, 2 steps: the run
    records 2 processes and ZeRO stage 2, and GAF's statistics in metrics.json."""
    config = tmp_path / "deepspeed_cpu.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n"
        f"  deepspeed_config_file: {ROOT / 'recipes/accelerate_configs/deepspeed_zero2.json'}\n"
        f"num_machines: 1\nnum_processes: 2\nmachine_rank: 0\nmain_process_ip: 127.0.0.1\n"
        f"main_process_port: {free_port}\nrdzv_backend: static\nsame_network: true\n")
    script, *flags = RECIPE_RUNS[recipe]
    if recipe != "classification":
        flags += ["--voc_root", tiny_voc, "--draw_predictions", "0", "--eval_strategy", "steps", "--eval_steps", "2"]
    out = tmp_path / "run"
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file", str(config),
           str(HELPERS / "cpu_deepspeed.py"), str(ROOT / script), *flags, "--max_steps", "2", "--output_dir", str(out),
           "--report_to", "none", "--disable_tqdm", "true", "--gaf_log_stats", "true", "--logging_strategy", "steps",
           "--logging_steps", "1"]
    proc = subprocess.run(cmd, env=ENV, cwd=ROOT, timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads((out / "metrics.json").read_text())
    assert report["settings"]["world_size"] == 2 and report["settings"]["zero_stage"] == 2, report["settings"]
    assert report["global_step"] == 2 and len(report["gaf_stats"]) == 2
    assert all(0 < s["gaf/norm_before"] < float("inf") for s in report["gaf_stats"])


def test_the_arguments_refuse_a_deepspeed_config_with_its_own_optimizer_before_training(tmp_path):
    from tests.helpers.tiny import tiny_args

    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
                                  "zero_optimization": {"stage": 2}}))
    for transform in ({}, {"gaf": "none", "grad_treatment": "agc"}):  # GAF, or a treatment where GAF runs
        with pytest.raises(ValueError, match=f"--deepspeed {config}: .*own \"optimizer\" section"):
            tiny_args(tmp_path, optim="adamw_torch", optim_args=None, use_cpu=False, deepspeed=str(config), **transform)
    tiny_args(tmp_path, gaf="none", optim="adamw_torch", optim_args=None, use_cpu=False, deepspeed=str(config))

import math

import pytest
import torch

from hf_gaf import GAFSGD, attach_gaf, attached_gaf, unwrap_optimizer
from tests.helpers.schedules import SHORT, with_schedule


def model_and_batches(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(dtype)
    g = torch.Generator().manual_seed(7)
    batches = [
        (torch.randn(5, 6, generator=g, dtype=dtype), torch.randn(5, 3, generator=g, dtype=dtype)) for _ in range(6)
    ]
    return model, batches


def train(model, opt, batches, scaler=None):
    for x, y in batches:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    return [p.detach().clone() for p in model.parameters()]


def test_attach_on_sgd_equals_gafsgd_grad_placement():
    m1, batches = model_and_batches(dtype=torch.float64)
    m2, _ = model_and_batches(dtype=torch.float64)
    sgd = torch.optim.SGD(m1.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=False)
    hook = attach_gaf(sgd, gaf="atan", alpha=0.3, beta=4.5)
    gafsgd = GAFSGD(
        m2.parameters(),
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        gaf="atan",
        alpha=0.3,
        beta=4.5,
        placement="grad",
        foreach=False,
        fused=False,
    )
    for a, b in zip(train(m1, sgd, batches), train(m2, gafsgd, batches)):
        assert torch.equal(a, b)
    assert hook.calls == len(batches)


def test_attach_on_adamw_differs_and_remove_restores():
    runs = []
    for mode in ("plain", "gaf", "removed"):
        m, batches = model_and_batches()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        if mode != "plain":
            h = attach_gaf(opt, alpha=0.1, beta=20.0)
            assert attached_gaf(opt) is h
            if mode == "removed":
                h.remove()
                assert attached_gaf(opt) is None
        runs.append(train(m, opt, batches))
    plain, with_gaf, removed = runs
    assert any(not torch.equal(a, b) for a, b in zip(plain, with_gaf))
    assert all(torch.equal(a, b) for a, b in zip(plain, removed))


def test_second_attach_refused_and_wrappers_unwrapped():
    from accelerate import Accelerator

    m, _ = model_and_batches()
    inner = torch.optim.SGD(m.parameters(), lr=0.1)
    _, wrapped = Accelerator(cpu=True).prepare(m, inner)
    assert type(wrapped).__name__ == "AcceleratedOptimizer"
    assert unwrap_optimizer(wrapped) is inner
    h = attach_gaf(wrapped)
    assert h.optimizer is inner
    with pytest.raises(RuntimeError, match="already attached"):
        attach_gaf(inner)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        attach_gaf(object())


@pytest.mark.parametrize("how", ["load_state_dict", "add_param_group", "edit the group"])
def test_a_gafsgd_that_gains_gaf_after_attach_is_refused_at_the_step_not_stepped_twice(how):
    """Round 4, item 9: attach_gaf(GAFSGD(gaf=None)) is right, but a group that later gets gaf set would have f
    applied twice (0.01253 for g = 1 instead of 0.01): the check runs at every step."""
    layer = torch.nn.Linear(1, 1, bias=False)
    opt = GAFSGD(layer.parameters(), lr=1.0, gaf=None)
    attach_gaf(opt, gaf="atan", alpha=0.01, beta=1.0)
    if how == "load_state_dict":
        opt.load_state_dict(GAFSGD(torch.nn.Linear(1, 1, bias=False).parameters(), lr=1.0, gaf="atan").state_dict())
    elif how == "add_param_group":
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "gaf": "atan"})
    else:
        opt.param_groups[0]["gaf"] = "atan"
    layer.weight.grad = torch.ones_like(layer.weight)
    before = layer.weight.detach().clone()
    with pytest.raises(RuntimeError, match="f would run twice"):
        opt.step()
    assert torch.equal(layer.weight, before) and torch.equal(layer.weight.grad, torch.ones_like(before))


def test_params_subset_left_alone():
    m, batches = model_and_batches()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    attach_gaf(opt, params=list(m[0].parameters()))
    x, y = batches[0]
    torch.nn.functional.mse_loss(m(x), y).backward()
    raw_head = [p.grad.clone() for p in m[2].parameters()]
    raw_first = m[0].weight.grad.clone()
    opt.step()
    assert all(torch.equal(p.grad, g) for p, g in zip(m[2].parameters(), raw_head))
    assert torch.equal(m[0].weight.grad, 0.1 * torch.atan(20.0 * raw_first))


def test_grad_scaler_with_fused_optimizer_sees_unscaled_gradients():
    m1, batches = model_and_batches()
    m2, _ = model_and_batches()
    o1 = torch.optim.SGD(m1.parameters(), lr=0.1, momentum=0.9, fused=True)
    o2 = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9, fused=True)
    attach_gaf(o1)
    h2 = attach_gaf(o2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1000)
    for a, b in zip(train(m1, o1, batches), train(m2, o2, batches, scaler)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert h2.calls == len(batches)


def test_grad_scaler_overflow_step_skipped_without_gaf():
    m, batches = model_and_batches()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, fused=True)
    h = attach_gaf(opt)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = [p.detach().clone() for p in m.parameters()]
    x, y = batches[0]
    scaler.scale(torch.nn.functional.mse_loss(m(x), y)).backward()
    m[0].weight.grad[0, 0] = float("inf")
    scaled = m[2].weight.grad.clone()
    scaler.step(opt)
    scaler.update()
    assert h.calls == 0
    assert torch.equal(m[2].weight.grad, scaled), "GAF must not touch gradients on an overflow step"
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    assert scaler.get_scale() == 2.0**9


def test_an_infinite_gradient_reaches_the_optimizer_as_nan():
    m, batches = model_and_batches()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    attach_gaf(opt)
    x, y = batches[0]
    torch.nn.functional.mse_loss(m(x), y).backward()
    m[0].weight.grad[0, 0] = float("inf")
    opt.step()
    assert torch.isnan(m[0].weight.grad[0, 0]) and torch.isnan(m[0].weight[0, 0])
    assert torch.isfinite(m[2].weight).all()


def test_sparse_and_complex_are_clear_errors():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    attach_gaf(opt)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()
    with pytest.raises(ValueError, match="complex parameter"):
        attach_gaf(torch.optim.SGD([torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))], lr=0.1))


def test_the_default_cpu_hook_on_adamw_compiles_in_a_helper_and_equals_the_eager_hook(
    monkeypatch, caplog, fresh_compile_state
):
    """attach_gaf on AdamW, CPU, no path argument, schedule shortened (start 3, switch 6, counted by AdamW's own
    checkpointed step): the compiled transform from step 6, the same parameters as fused=False."""
    import logging

    models = [torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in models]
    hook = with_schedule(attach_gaf(opts[0]), SHORT)
    attach_gaf(opts[1], fused=False)
    calls, run = [], hook.compiled.run
    monkeypatch.setattr(hook.compiled, "run", lambda *a, **k: calls.append(1) or run(*a, **k))
    x = torch.randn(16, 6)
    with caplog.at_level(logging.WARNING, logger="hf_gaf"):
        for _ in range(8):
            for m, o in zip(models, opts):
                o.zero_grad()
                m(x).square().mean().backward()
                o.step()
    assert sum("compiling GAF's fused CPU step in a helper process" in r.message for r in caplog.records) == 1
    assert len(calls) == 3  # steps 6, 7 and 8
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # compiled once, at the switch
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_default_cpu_hook_on_adamw_is_bit_identical_to_the_eager_hook_until_the_switch(fresh_compile_state):
    """Round 4, item 3: the compilation used to run in a thread of the training process, and torch's
    is_compiling() is process-wide, so AdamW took its compile-time arithmetic on whichever steps overlapped it
    (two runs differed by 5.7e-7 after 1010 steps; a resume was not exact). The helper process compiles
    outside: every step before the switch is the eager hook's step, bit for bit, while it compiles."""
    import time

    models = [torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.Tanh(), torch.nn.Linear(96, 8)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in models]
    from hf_gaf.compiled_step import CompileSchedule

    hook = with_schedule(attach_gaf(opts[0]), CompileSchedule(start_step=2, switch_step=10_000, min_numel=2))
    attach_gaf(opts[1], fused=False)
    g = torch.Generator().manual_seed(0)
    for step in range(300):  # about 3 s: the steps overlap the whole compilation (the old design failed 3 of 3)
        time.sleep(0.01)
        x = torch.randn(32, 64, generator=g)
        for m, o in zip(models, opts):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
        if step == 1:
            assert len(hook.compiled._helpers) == 1  # compiling beside these steps
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)


def test_a_process_that_exits_while_the_helper_compiles_exits_cleanly_and_ends_the_helper(tmp_path):
    """Round 4, item 4: exiting while the background compilation ran aborted 3 times in 10 (rc 134,
    'terminate called without an active exception'). Now nothing compiles in the process, and the helper
    is ended with its owner."""
    import os
    import subprocess
    import sys

    script = tmp_path / "loop.py"
    script.write_text(
        "import torch\n"
        "from hf_gaf import GAFSGD\n"
        "from hf_gaf.compiled_step import CompiledStep, CompileSchedule\n"
        "p = torch.nn.Parameter(torch.randn(8192))\n"
        "opt = GAFSGD([p], lr=0.1, momentum=0.9)\n"
        "opt.compiled = CompiledStep(CompileSchedule(start_step=2, switch_step=10**6))\n"
        "for _ in range(4):\n"
        "    p.grad = torch.randn(8192)\n"
        "    opt.step()\n"
        "print([h.pid for h in opt.compiled._helpers.values()], flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_GAF_FUSED"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (pid,) = eval(done.stdout.strip().splitlines()[-1])
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_a_no_gaf_group_is_left_alone_and_survives_a_wrapper_that_replaces_the_parameters():
    """Issue "GAF under DeepSpeed", HIGH: exclusions by identity matched nothing once ZeRO handed the optimizer
    flat partitions (GAF applied to nothing, silently). A group marked no_gaf=True is left alone whatever tensors
    it holds at step time, so the choice survives flattening (simulated here by swapping the groups' tensors)."""
    weight, bias = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [weight]}, {"params": [bias], "no_gaf": True}], lr=1.0)
    attach_gaf(opt, gaf="atan", alpha=0.1, beta=20.0, fused=False)
    flat_w, flat_b = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(2))  # as a wrapper would
    opt.param_groups[0]["params"], opt.param_groups[1]["params"] = [flat_w], [flat_b]
    flat_w.grad, flat_b.grad = torch.full((4,), 2.0), torch.full((2,), 2.0)
    opt.step()
    torch.testing.assert_close(flat_w.detach(), torch.full((4,), -0.1 * math.atan(40.0)))
    torch.testing.assert_close(flat_b.detach(), torch.full((2,), -2.0))  # untouched by f


def test_params_that_are_not_the_optimizers_at_its_first_step_are_an_error_not_a_silent_no_op():
    weight, bias = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([weight, bias], lr=1.0)
    attach_gaf(opt, gaf="atan", params=[weight], fused=False)
    opt.param_groups[0]["params"] = [torch.nn.Parameter(torch.zeros(6))]  # a flat partition, as ZeRO steps
    opt.param_groups[0]["params"][0].grad = torch.ones(6)
    with pytest.raises(RuntimeError, match=r"1 of the 1 parameters given are not among the 1 tensors .*no_gaf=True"):
        opt.step()


@pytest.mark.parametrize("wrapper", ["one group per call", "one sub-group per call"])
def test_a_wrapper_that_steps_part_of_the_groups_per_call_is_counted_once_per_optimizer_step(wrapper):
    """Issue "GAF under DeepSpeed", item 2: ZeRO 1/2 call the client's step() once per parameter group (param_groups
    holding that group only), ZeRO-3 once per sub-group (every group present, one holding its flat tensor); the
    hook counted calls (16 after 8 steps of the Trainer's two groups). It counts optimizer steps, and f runs on
    every part, as one call over all groups would do."""
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(5)) for _ in range(2)]
    reference = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    opt = torch.optim.AdamW([{"params": [weights[0]]}, {"params": [weights[1]], "weight_decay": 0.0}], lr=0.1)
    ref = torch.optim.AdamW([{"params": [reference[0]]}, {"params": [reference[1]], "weight_decay": 0.0}], lr=0.1)
    hook, ref_hook = attach_gaf(opt, fused=False), attach_gaf(ref, fused=False)
    for step in range(3):
        for w, r in zip(weights, reference):
            w.grad = torch.full((5,), 0.01 * (step + 1))
            r.grad = w.grad.clone()
        ref.step()
        groups = opt.param_groups
        for k, group in enumerate(groups):
            if wrapper == "one group per call":
                opt.param_groups = [group]
            else:  # every group present, only the k-th holds its tensor
                opt.param_groups = [dict(g, params=g["params"] if i == k else []) for i, g in enumerate(groups)]
            opt.step()
            opt.param_groups = groups
    assert hook.calls == ref_hook.calls == 3
    for w, r in zip(weights, reference):
        torch.testing.assert_close(w, r, rtol=0, atol=0)

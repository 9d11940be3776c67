import copy
import math

import pytest
import torch

from hf_gaf import GAFSGD
from tests.helpers.schedules import SHORT, with_schedule

F = {"atan": lambda x, a, b: a * torch.atan(b * x), "tanh": lambda x, a, b: a * torch.tanh(b * x),
     "log": lambda x, a, b: a * torch.sign(x) * torch.log1p(b * x.abs())}


def make_params(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    shapes = [(5, 3), (7,), (), (4, 2, 3), (6,)]
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in shapes]


def fake_grads(params, step, none_at=None):
    g = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        p.grad = (
            None if (none_at is not None and i in none_at) else torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3
        )


def run(optimizer, params, steps=7, none_schedule=None):
    for s in range(steps):
        fake_grads(params, s, (none_schedule or {}).get(s))
        optimizer.step()


GROUPS = [
    dict(gaf="atan", alpha=0.1, beta=20.0, placement="update", momentum=0.9, weight_decay=5e-4),
    dict(gaf="tanh", alpha=0.3, beta=4.5, placement="grad", momentum=0.8, dampening=0.1, weight_decay=1e-3),
    dict(gaf="log", alpha=0.5, beta=3.0, placement="update", momentum=0.9, nesterov=True),
    dict(gaf=None, momentum=0.0, weight_decay=1e-2, maximize=True),
]


def groups_for(params):
    return [
        dict(params=params[:2], **GROUPS[0]),
        dict(params=[params[2]], **GROUPS[1]),
        dict(params=[params[3]], **GROUPS[2]),
        dict(params=[params[4]], **GROUPS[3]),
    ]


def naive_step(params, state, group, lr):
    """The module docstring's formulas, written independently, one coordinate block at a time."""
    for p in group["params"]:
        if p.grad is None:
            continue
        g = -p.grad if group.get("maximize") else p.grad
        f = (lambda x: F[group["gaf"]](x, group["alpha"], group["beta"])) if group.get("gaf") else (lambda x: x)
        if group.get("placement") == "grad":
            g = f(g)
        d = g + group.get("weight_decay", 0.0) * p.detach()
        mom = group.get("momentum", 0.0)
        if mom:
            if id(p) not in state:
                state[id(p)] = d.clone()
            else:
                state[id(p)] = mom * state[id(p)] + (1 - group.get("dampening", 0.0)) * d
            u = d + mom * state[id(p)] if group.get("nesterov") else state[id(p)]
        else:
            u = d
        if group.get("placement") == "update":
            u = f(u)
        with torch.no_grad():
            p -= lr * u


NONES = {2: {1, 3}, 4: {0}}


@pytest.mark.parametrize("foreach", [False, True])
def test_matches_naive_formulas(foreach):
    params = make_params()
    ref = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = GAFSGD(groups_for(params), lr=0.05, foreach=foreach, fused=False)
    ref_groups, state = groups_for(ref), {}
    for s in range(7):
        fake_grads(params, s, NONES.get(s))
        fake_grads(ref, s, NONES.get(s))
        opt.step()
        for g in ref_groups:
            naive_step(ref, state, g, 0.05)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p, r, rtol=1e-12, atol=1e-12)
        if id(r) in state:
            torch.testing.assert_close(opt.state[p]["momentum_buffer"], state[id(r)], rtol=1e-12, atol=1e-12)


def test_per_tensor_and_multi_tensor_identical():
    a, b = make_params(), make_params()
    oa = GAFSGD(groups_for(a), lr=0.05, foreach=False, fused=False)
    ob = GAFSGD(groups_for(b), lr=0.05, foreach=True)
    run(oa, a, none_schedule=NONES)
    run(ob, b, none_schedule=NONES)
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)
        if "momentum_buffer" in oa.state[pa]:
            assert torch.equal(oa.state[pa]["momentum_buffer"], ob.state[pb]["momentum_buffer"])


GROUP_SETTINGS = [
    dict(momentum=0.9),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.9, dampening=0.3),
    dict(momentum=0.5, weight_decay=1e-2, maximize=True),
    dict(weight_decay=1e-3),
    dict(),
]


@pytest.mark.parametrize("placement", ["update", "grad"])
@pytest.mark.parametrize("cfg", GROUP_SETTINGS)
def test_fused_pass_matches_eager(cfg, placement):
    """The compiled pass against the per-tensor loop, over the group settings the eager paths are checked
    with (the Triton step has the same table in test_triton_kernels.py)."""
    torch._dynamo.reset()  # each setting is a new graph: stay under Dynamo's recompile limit (8)
    a, b = make_params(torch.float32), make_params(torch.float32)
    settings = dict(lr=0.05, gaf="atan", alpha=0.1, beta=20.0, placement=placement, **cfg)
    oa = GAFSGD(a, **settings, fused=False)
    ob = with_schedule(GAFSGD(b, **settings, fused=True))
    sched = torch.optim.lr_scheduler.StepLR(ob, step_size=2, gamma=0.5)
    sched_a = torch.optim.lr_scheduler.StepLR(oa, step_size=2, gamma=0.5)
    for s in range(4):
        fake_grads(a, s)
        fake_grads(b, s)
        oa.step()
        ob.step()
        sched.step()
        sched_a.step()
    assert not ob.compiled.failed
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def test_functional_gaf_sgd_is_the_class_step():
    """``gaf_sgd`` on the lists a group gathers gives the class's step exactly, buffers included."""
    from hf_gaf.gaf_sgd import gaf_sgd

    a, b = make_params(), make_params()
    opt = GAFSGD(a, lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True, fused=False, placement="update")
    bufs = [None] * len(b)
    for s in range(3):
        fake_grads(a, s)
        fake_grads(b, s)
        opt.step()
        with torch.no_grad():
            gaf_sgd(
                b,
                [p.grad for p in b],
                bufs,
                foreach=False,
                fused=False,
                lr=0.05,
                momentum=0.9,
                weight_decay=1e-3,
                nesterov=True,
                gaf_kind="atan",
                alpha=0.1,
                beta=20.0,
                placement="update",
            )
    for pa, pb, buf in zip(a, b, bufs):
        assert torch.equal(pa, pb) and torch.equal(opt.state[pa]["momentum_buffer"], buf)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("cfg", GROUP_SETTINGS)
def test_gaf_none_is_torch_sgd_bit_for_bit(foreach, cfg):
    a, b = make_params(torch.float32), make_params(torch.float32)
    oa = GAFSGD(a, lr=0.1, gaf=None, foreach=foreach, fused=False, **cfg)
    ob = torch.optim.SGD(b, lr=0.1, foreach=foreach, **cfg)
    run(oa, a, none_schedule=NONES)
    run(ob, b, none_schedule=NONES)
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)


def test_never_writes_grad():
    params = make_params()
    opt = GAFSGD(groups_for(params), lr=0.1, fused=False)
    fake_grads(params, 0)
    before = [p.grad.clone() for p in params]
    opt.step()
    opt.step()
    for p, g in zip(params, before):
        assert torch.equal(p.grad, g)


def test_state_dict_resume_exact():
    a, b = make_params(), make_params()
    oa = GAFSGD(groups_for(a), lr=0.05, fused=False)
    for s in range(20):
        fake_grads(a, s)
        oa.step()
    ob = GAFSGD(groups_for(b), lr=0.05, fused=False)
    for s in range(10):
        fake_grads(b, s)
        ob.step()
    saved = copy.deepcopy(ob.state_dict())
    assert saved["param_groups"][1]["gaf"] == "tanh" and saved["param_groups"][1]["placement"] == "grad"
    c = [torch.nn.Parameter(p.detach().clone()) for p in b]
    groups = groups_for(c)
    for g in groups:  # a fresh optimizer built with other GAF settings: the checkpoint wins
        g.update(gaf="atan", alpha=1.0, beta=2.0) if g["gaf"] else None
    oc = GAFSGD(groups, lr=0.05, fused=False)
    oc.load_state_dict(saved)
    assert oc.param_groups[2]["gaf"] == "log"
    for s in range(10, 20):
        fake_grads(c, s)
        oc.step()
    for pa, pc in zip(a, c):
        assert torch.equal(pa, pc)


def test_torch_sgd_state_dict_loads():
    a, b = make_params(), make_params()
    sgd = torch.optim.SGD(a, lr=0.1, momentum=0.9)
    fake_grads(a, 0)
    sgd.step()
    g = GAFSGD(b, lr=0.1, momentum=0.9, gaf=None, fused=False)
    g.load_state_dict(copy.deepcopy(sgd.state_dict()))
    assert torch.equal(g.state[b[0]]["momentum_buffer"], sgd.state[a[0]]["momentum_buffer"])
    for p, q in zip(a, b):
        q.data.copy_(p.data)
    fake_grads(a, 1)
    fake_grads(b, 1)
    sgd.step()
    g.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)


def test_torch_sgd_checkpoint_keeps_constructor_gaf_settings():
    a = make_params()
    sgd = torch.optim.SGD(a, lr=0.1, momentum=0.9)
    fake_grads(a, 0)
    sgd.step()
    g = GAFSGD(make_params(), lr=0.1, momentum=0.9, gaf="tanh", alpha=0.2, beta=10.0, placement="grad")
    g.load_state_dict(copy.deepcopy(sgd.state_dict()))
    group = g.param_groups[0]
    assert (group["gaf"], group["alpha"], group["beta"], group["placement"]) == ("tanh", 0.2, 10.0, "grad")


def test_bad_arguments():
    p = make_params()
    with pytest.raises(ValueError, match="placement"):
        GAFSGD(p, lr=0.1, placement="middle")
    with pytest.raises(ValueError, match="alpha"):
        GAFSGD(p, lr=0.1, alpha=-1.0)
    with pytest.raises(ValueError, match="unknown GAF kind"):
        GAFSGD(p, lr=0.1, gaf="relu")
    with pytest.raises(ValueError, match="placement"):
        GAFSGD([dict(params=p[:1], placement="x")], lr=0.1)


def test_bf16_parameters():
    a = [torch.nn.Parameter(torch.randn(64, dtype=torch.bfloat16))]
    ref = a[0].detach().float().clone()
    opt = GAFSGD(a, lr=0.1, momentum=0.9, fused=False)
    a[0].grad = torch.full((64,), 1e-3, dtype=torch.bfloat16)
    opt.step()
    assert a[0].dtype == torch.bfloat16 and torch.isfinite(a[0]).all()
    expected = ref - 0.1 * 0.1 * math.atan(20 * 1e-3)
    torch.testing.assert_close(a[0].float(), expected, rtol=1e-2, atol=1e-2)
    b = [torch.nn.Parameter(a[0].detach().clone())]
    a[0].grad = torch.randn(64, dtype=torch.bfloat16)
    b[0].grad = a[0].grad.clone()
    ob = GAFSGD(b, lr=0.1, momentum=0.9, foreach=True)
    ob.load_state_dict(copy.deepcopy(opt.state_dict()))
    opt.step()
    ob.step()
    assert torch.equal(a[0], b[0])


@pytest.mark.parametrize("placement", ["update", "grad"])
def test_converges_on_quadratic(placement):
    target = torch.linspace(-3, 3, 20)
    x = torch.nn.Parameter(torch.zeros(20))
    opt = GAFSGD([x], lr=0.1, momentum=0.9, placement=placement, fused=False)
    for _ in range(400):
        opt.zero_grad()
        ((x - target) ** 2).sum().backward()
        opt.step()
    assert (x - target).abs().max() < 1e-2


def test_converges_on_rosenbrock():
    xy = torch.nn.Parameter(torch.tensor([-1.5, 2.0]))
    opt = GAFSGD([xy], lr=2e-3, momentum=0.9, alpha=0.5, beta=4.0, fused=False)
    start = None
    for _ in range(3000):
        opt.zero_grad()
        loss = (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2
        start = start if start is not None else loss.item()
        loss.backward()
        opt.step()
    assert torch.allclose(xy.detach(), torch.tensor([1.0, 1.0]), atol=5e-2), xy


@pytest.mark.parametrize("placement", ["update", "grad"])
@pytest.mark.parametrize("path", ["per-tensor", "foreach", "compiled", "triton"])
def test_an_infinite_gradient_makes_the_parameter_nan_never_a_silent_drift(monkeypatch, placement, path):
    """Loss p²/2 with g[1] = inf at step 5: torch's SGD turns p[1] NaN (loud); so must GAFSGD, on every path
    and both placements, instead of moving p[1] by lr·α·π/2 forever from an inf momentum buffer."""
    if path == "triton":
        from hf_gaf import triton_kernels

        if not triton_kernels.runs_on(torch.device("cpu")):
            pytest.skip("needs triton and TRITON_INTERPRET=1")
    kwargs = {
        "per-tensor": dict(foreach=False, fused=False),
        "foreach": dict(foreach=True, fused=False),
        "compiled": dict(fused="compile"),
        "triton": dict(fused="triton"),
    }[path]
    p = torch.nn.Parameter(torch.tensor([0.5, -0.3, 0.2]))
    opt = with_schedule(GAFSGD([p], lr=0.1, momentum=0.9, gaf="atan", alpha=0.1, beta=20.0, placement=placement,
                               **kwargs))
    for step in range(12):
        p.grad = p.detach().clone()
        if step == 5:
            p.grad[1] = math.inf
        opt.step()
    assert torch.isnan(p[1]), "an infinite gradient must not turn into a bounded, repeated step"
    assert torch.isfinite(p[[0, 2]]).all() and p[0].abs() < 0.5  # the other coordinates keep training


def test_bad_groups_are_refused_and_not_kept():
    p = make_params()
    opt = GAFSGD(p[:1], lr=0.1)
    with pytest.raises(ValueError, match="placement"):
        opt.add_param_group(dict(params=p[1:2], placement="middle"))
    assert len(opt.param_groups) == 1, "a refused group must not stay in the optimizer"
    opt.param_groups[0]["gaf"] = "atna"  # a typo after construction must not silently run another kind
    p[0].grad = torch.ones_like(p[0])
    for kwargs in (dict(foreach=False), dict(foreach=True)):
        opt.param_groups[0].update(kwargs, fused=False)
        with pytest.raises(ValueError, match="unknown GAF kind 'atna'"):
            opt.step()
    with pytest.raises(ValueError, match="complex parameter"):
        GAFSGD([torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))], lr=0.1)
    import numpy as np

    GAFSGD(p[:1], lr=0.1, alpha=np.float32(0.1), beta=np.float64(20.0))  # numpy scalars are numbers too




def test_the_default_cpu_step_compiles_in_a_helper_process_with_one_note_and_equals_the_eager_loop(
    monkeypatch, caplog, fresh_compile_state
):
    """GAFSGD() with no path argument and no HF_GAF_FUSED, on CPU, with the schedule shortened to start at
    step 3 and switch at step 6: eager steps 1-5 (a helper process compiles from step 3, announced once),
    the compiled pass from step 6, and the same numbers as the per-tensor loop (to float rounding)."""
    import logging

    a, b = make_params(torch.float32), make_params(torch.float32)
    settings = dict(lr=0.05, momentum=0.9, weight_decay=1e-3, gaf="atan", alpha=0.1, beta=20.0)
    oa, ob = with_schedule(GAFSGD(a, **settings), SHORT), GAFSGD(b, **settings, fused=False)
    calls, run = [], oa.compiled.run
    monkeypatch.setattr(oa.compiled, "run", lambda *a, **k: calls.append(1) or run(*a, **k))
    with caplog.at_level(logging.WARNING, logger="hf_gaf"):
        for s in range(8):
            fake_grads(a, s)
            fake_grads(b, s)
            oa.step()
            ob.step()
            if s == 3:
                assert len(oa.compiled._helpers) == 1  # compiling beside training since step 3
    notes = [r for r in caplog.records if "compiling GAF's fused CPU step in a helper process" in r.message]
    assert len(notes) == 1 and "HF_GAF_FUSED=0" in notes[0].message
    assert len(calls) == 3  # steps 6, 7 and 8
    # one graph on the training thread, compiled at the switch from the helper's caches; a parameter's flat view
    # (requires_grad, a base) matches the graph made on stand-ins: no recompiling
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert oa.state[a[0]]["step"] == 8
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)

"""The gradient treatments beside GAF (hf_gaf.treatments): each against a float64 reference written from its
paper (AGC against timm's own function), ZClip's state through a checkpoint, and the refusals."""

import math

import pytest
import torch

from hf_gaf import attach_gaf
from hf_gaf.treatments import TREATMENTS, attach_treatment, parse_treatment_args


def shaped_params(dtype=torch.float64):
    torch.manual_seed(0)
    shapes = [(5,), (4, 3), (2, 3, 2, 2)]  # a bias, a linear weight, a conv weight
    return [torch.nn.Parameter(torch.randn(s, dtype=dtype)) for s in shapes]


def step_once(name, params, grads, **settings):
    opt = torch.optim.SGD(params, lr=1.0)
    attach_treatment(opt, name, **settings)
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()
    return [p.grad for p in params]  # the hook treats the gradients in place, before the update


def test_agc_equals_timms_adaptive_clip_grad_in_float64():
    from timm.utils import adaptive_clip_grad

    params = shaped_params()
    grads = [torch.randn_like(p) * s for p, s in zip(params, (0.001, 1.0, 0.05))]  # some units clipped, some not
    ours = step_once("agc", params, grads, clip_factor=0.05, eps=1e-3)
    reference = [torch.nn.Parameter(p.detach().clone()) for p in shaped_params()]
    for p, g in zip(reference, grads):
        p.grad = g.clone()
    adaptive_clip_grad(reference, clip_factor=0.05, eps=1e-3)
    for o, r in zip(ours, reference):
        torch.testing.assert_close(o, r.grad, rtol=1e-12, atol=0)
    assert any(not torch.equal(o, g) for o, g in zip(ours, grads)), "nothing was clipped: the test tests nothing"


def test_gc_subtracts_the_mean_over_all_dims_but_the_first_for_weights_only():
    params = shaped_params()
    grads = [torch.randn_like(p) + 3.0 for p in params]
    ours = step_once("gc", params, grads)
    torch.testing.assert_close(ours[0], grads[0], rtol=0, atol=0)  # 1-dim: untouched
    for o, g in zip(ours[1:], grads[1:]):
        rows = g.reshape(g.shape[0], -1)
        torch.testing.assert_close(o.reshape(rows.shape), rows - rows.sum(1, keepdim=True) / rows.shape[1],
                                   rtol=1e-12, atol=1e-12)
        assert o.reshape(rows.shape).sum(1).abs().max() < 1e-12


def zclip_reference(norms, z_thresh, alpha, warmup):
    """ZClip (arXiv 2504.02507, "adaptive scaling"), written from the paper in plain floats: the norm each step
    ends with."""
    out, mean, var, seen = [], None, None, []
    for n in norms:
        if mean is None:
            seen.append(n)
            out.append(n)
            if len(seen) == warmup:
                mean = sum(seen) / warmup
                var = sum((x - mean) ** 2 for x in seen) / warmup
            continue
        z = (n - mean) / math.sqrt(var)
        c = mean + z_thresh**2 / z * math.sqrt(var) if z > z_thresh else n
        out.append(c)
        mean = alpha * mean + (1 - alpha) * c
        var = alpha * var + (1 - alpha) * (c - mean) ** 2
    return out


def test_zclip_clips_the_spikes_only_and_follows_the_papers_recursion():
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.zeros(50, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=1.0)
    hook = attach_treatment(opt, "zclip", z_thresh=2.5, alpha=0.9, warmup_steps=5)
    scales = [1.0 + 0.05 * math.sin(k) for k in range(20)]
    scales[8], scales[14] = 10.0, 6.0  # two spikes after the warm-up
    norms, ended = [], []
    for s in scales:
        g = torch.randn(50, dtype=torch.float64)
        g = g / g.norm() * s
        norms.append(s)
        before = p.detach().clone()
        p.grad = g
        opt.step()
        ended.append((before - p.detach()).norm().item())
    expected = zclip_reference(norms, 2.5, 0.9, 5)
    assert ended == pytest.approx(expected, rel=1e-12)
    assert [k for k, (a, b) in enumerate(zip(norms, ended)) if b < a - 1e-9] == [8, 14]
    assert hook.state["clipped_steps"] == 2 and hook.calls == 20


def test_zclip_resumes_exactly_from_the_optimizer_state_dict(tmp_path):
    def run(steps, start=None):
        torch.manual_seed(0)
        model = torch.nn.Linear(6, 3)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        attach_treatment(opt, "zclip", warmup_steps=5)
        if start is not None:
            model.load_state_dict(start["model"])
            opt.load_state_dict(torch.load(start["opt"]))
        g = torch.Generator().manual_seed(3)
        for k in range(40):
            x = torch.randn(8, 6, generator=g) * (20.0 if k in (12, 31) else 1.0)  # spikes
            if k < (0 if start is None else 20) or k >= steps:
                continue
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        return model, opt

    whole, _ = run(40)
    half, opt = run(20)
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    assert opt.state["hf_gaf.zclip"]["mean"] > 0  # the state is in the optimizer's state_dict
    resumed, _ = run(40, {"model": half.state_dict(), "opt": tmp_path / "opt.pt"})
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(TREATMENTS))
def test_a_shape_or_norm_treatment_on_flat_partitions_is_an_error_not_another_rule(name):
    """As DeepSpeed ZeRO steps them: the optimizer's tensors replaced by flat partitions after attaching."""
    params = shaped_params(torch.float32)
    opt = torch.optim.SGD(params, lr=0.1)
    attach_treatment(opt, name)
    flat = torch.nn.Parameter(torch.cat([p.detach().flatten() for p in params]))
    flat.grad = torch.ones_like(flat)
    opt.param_groups[0]["params"] = [flat]
    with pytest.raises(RuntimeError, match=f"gradient treatment {name}: .*flat partitions"):
        opt.step()


def test_one_gradient_transform_at_a_time_and_no_gaf_groups_are_left_alone():
    params = shaped_params(torch.float32)
    opt = torch.optim.SGD([{"params": params[:2]}, {"params": params[2:], "no_gaf": True}], lr=1.0)
    hook = attach_treatment(opt, "gc")
    with pytest.raises(RuntimeError, match="one gradient transform at a time"):
        attach_gaf(opt)
    with pytest.raises(RuntimeError, match="one at a time"):
        attach_treatment(opt, "agc")
    grads = [torch.randn_like(p) + 1.0 for p in params]
    before = [p.detach().clone() for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()
    torch.testing.assert_close(before[2] - params[2].detach(), grads[2])  # the no_gaf group: untouched
    assert not torch.allclose(before[1] - params[1].detach(), grads[1])
    hook.remove()
    attach_gaf(opt)  # detached: GAF may be attached now


def test_with_a_fused_optimizer_under_a_grad_scaler_the_treatment_sees_unscaled_gradients():
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2, fused=True) for m in models]
    for o in opts:
        attach_treatment(o, "agc", clip_factor=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    g = torch.Generator().manual_seed(2)
    for _ in range(4):
        x, y = torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)
        for o in opts:
            o.zero_grad()
        torch.nn.functional.mse_loss(models[0](x), y).backward()
        opts[0].step()
        scaler.scale(torch.nn.functional.mse_loss(models[1](x), y)).backward()
        scaler.step(opts[1])
        scaler.update()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_settings_are_checked_naming_the_treatment_and_the_value():
    assert parse_treatment_args("agc", "clip_factor=0.02") == {"clip_factor": 0.02, "eps": 1e-3}
    with pytest.raises(ValueError, match="agc has no setting z_thresh"):
        parse_treatment_args("agc", "z_thresh=2")
    with pytest.raises(ValueError, match="clip_factor=nan: need a finite number > 0"):
        parse_treatment_args("agc", "clip_factor=nan")
    with pytest.raises(ValueError, match="unknown gradient treatment 'agcc'"):
        parse_treatment_args("agcc", None)


def test_a_gafsgd_that_applies_gaf_is_refused_beside_a_treatment_at_attach_and_at_every_step():
    from hf_gaf import GAFSGD

    params = shaped_params(torch.float32)
    with pytest.raises(RuntimeError, match="applies GAF in its step .* the gc treatment is attached too"):
        attach_treatment(GAFSGD(params, lr=0.1, gaf="atan"), "gc")
    opt = GAFSGD(params, lr=0.1, gaf=None)
    attach_treatment(opt, "gc")
    opt.param_groups[0]["gaf"] = "atan"  # as load_state_dict of a GAF checkpoint would
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="two transforms would run"):
        opt.step()

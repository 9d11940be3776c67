import math
import warnings

import pytest
import torch

from hf_gaf.functional import foreach_gaf, foreach_gaf_, gaf, gaf_, gaf_bound, validate_gaf
from hf_gaf.kinds import GAF_KINDS

ALPHA, BETA = 0.3, 4.5


def closed_form(kind, x, a=ALPHA, b=BETA):
    return {
        "atan": lambda: a * torch.atan(b * x),
        "tanh": lambda: a * torch.tanh(b * x),
        "log": lambda: a * torch.sign(x) * torch.log1p(b * x.abs()),
        "clip": lambda: a * (b * x).clamp(-1.0, 1.0),
    }[kind]()


@pytest.mark.parametrize("kind", GAF_KINDS)
def test_closed_forms_all_forms(kind):
    x = torch.randn(257, dtype=torch.float64) * 3
    expected = closed_form(kind, x)
    torch.testing.assert_close(gaf(x, kind, ALPHA, BETA), expected, rtol=1e-14, atol=1e-15)
    y = x.clone()
    assert gaf_(y, kind, ALPHA, BETA) is y
    torch.testing.assert_close(y, expected, rtol=1e-14, atol=1e-15)
    ys = [x.clone(), x[:10].clone()]
    foreach_gaf_(ys, kind, ALPHA, BETA)
    torch.testing.assert_close(ys[1], expected[:10], rtol=1e-14, atol=1e-15)
    outs = foreach_gaf([x, x[:10]], kind, ALPHA, BETA)
    assert torch.equal(outs[0], gaf(x, kind, ALPHA, BETA)), "list and per-tensor forms must agree exactly"


def test_out_of_place_leaves_input():
    x = torch.randn(10)
    before = x.clone()
    gaf(x, "atan", 0.1, 20.0)
    foreach_gaf([x], "log", 0.1, 20.0)
    assert torch.equal(x, before)


@pytest.mark.parametrize("kind", GAF_KINDS)
def test_gain_at_zero_is_alpha_beta(kind):
    h = torch.tensor([1e-7], dtype=torch.float64)
    slope = (gaf(h, kind, ALPHA, BETA) / h).item()
    assert slope == pytest.approx(ALPHA * BETA, rel=1e-6)
    assert gaf(torch.zeros(3), kind, ALPHA, BETA).abs().max() == 0


def test_bounds():
    big = torch.tensor([1e30, -1e30], dtype=torch.float64)
    assert gaf_bound("atan", 0.2) == pytest.approx(0.2 * math.pi / 2)
    assert gaf_bound("tanh", 0.2) == 0.2
    assert gaf_bound("log", 0.2) == math.inf
    assert gaf_bound("clip", 0.2) == 0.2
    torch.testing.assert_close(gaf(big, "clip", 0.2, 10.0), torch.tensor([0.2, -0.2], dtype=torch.float64))
    torch.testing.assert_close(
        gaf(big, "atan", 0.2, 10.0), torch.tensor([0.1 * math.pi, -0.1 * math.pi], dtype=torch.float64)
    )
    torch.testing.assert_close(gaf(big, "tanh", 0.2, 10.0), torch.tensor([0.2, -0.2], dtype=torch.float64))
    x = torch.randn(1000) * 100
    assert gaf(x, "atan", 0.2, 10.0).abs().max() <= 0.2 * math.pi / 2


@pytest.mark.parametrize("kind", GAF_KINDS)
def test_nonfinite_policy(kind):
    x = torch.tensor([float("nan"), float("inf"), -float("inf")])
    for out in (gaf(x, kind, ALPHA, BETA), foreach_gaf([x], kind, ALPHA, BETA)[0]):
        assert math.isnan(out[0].item()), "NaN must stay NaN so loss scalers still see the overflow"
        bound = gaf_bound(kind, ALPHA)
        assert out[1].item() == pytest.approx(bound) and out[2].item() == pytest.approx(-bound)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf"), "1"])
@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_bad_alpha_beta_raise_naming_value(name, value):
    kwargs = dict(alpha=0.1, beta=20.0)
    kwargs[name] = value
    with pytest.raises(ValueError, match=name):
        validate_gaf("atan", **kwargs)


def test_unknown_kind_and_low_gain_warning():
    with pytest.raises(ValueError, match="'sigmoid'"):
        validate_gaf("sigmoid", 0.1, 20.0)
    with pytest.warns(UserWarning, match="shrinks every gradient"):
        validate_gaf("atan", 0.1, 5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_gaf("atan", 0.1, 20.0)
        validate_gaf("clip", 0.05, 20.0)  # gain 1: clip-by-value, a pure bound


def test_user_callable():
    f = lambda t: t.clamp(-0.5, 0.5)  # noqa: E731
    x = torch.linspace(-2, 2, 9)
    assert torch.equal(gaf(x, f, 1.0, 1.0), x.clamp(-0.5, 0.5))
    ys = [x.clone()]
    foreach_gaf_(ys, f, 1.0, 1.0)
    assert torch.equal(ys[0], x.clamp(-0.5, 0.5))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_computed_in_float32(dtype):
    x = (torch.randn(1000) * 0.05).to(dtype)
    expected = (0.1 * torch.atan(20.0 * x.float())).to(dtype)
    assert gaf(x, "atan", 0.1, 20.0).dtype == dtype
    assert torch.equal(gaf(x, "atan", 0.1, 20.0), expected)
    y = x.clone()
    foreach_gaf_([y], "atan", 0.1, 20.0)
    assert torch.equal(y, expected)

"""hf_gaf.kinds: a new GAF kind is one registry entry. A toy kind registered here runs on every path against a
float64 reference and appears in every choice list that names kinds."""

import subprocess
import sys

import pytest
import torch

from hf_gaf import GAFSGD, attach_gaf, gaf
from hf_gaf.functional import GAFSpec, foreach_gaf
from hf_gaf.kinds import GAF_KINDS, Kind, kind, register_kind, unregister_kind
from tests.helpers.schedules import with_schedule


def _softsign_(x):
    return x.div_(x.abs().add_(1.0))


def _foreach_softsign_(tensors):
    denominators = torch._foreach_abs(tensors)
    torch._foreach_add_(denominators, 1.0)
    torch._foreach_div_(tensors, denominators)


SOFTSIGN = Kind("softsign", "alpha*beta*x/(1+beta*|x|)", _softsign_, _foreach_softsign_,
                lambda u: u / (1.0 + u.abs()), 1.0)


@pytest.fixture
def softsign():
    register_kind(SOFTSIGN)
    yield SOFTSIGN
    unregister_kind("softsign")


def reference(x: torch.Tensor, alpha=0.1, beta=20.0) -> torch.Tensor:
    u = beta * x.double()
    return alpha * u / (1 + u.abs())


def test_a_registered_kind_runs_on_every_path_against_float64(softsign):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, generator=g) * torch.logspace(-4, 2, 4096)
    torch.testing.assert_close(gaf(x, "softsign"), reference(x).float(), rtol=2e-6, atol=1e-9)
    torch.testing.assert_close(foreach_gaf([x], "softsign")[0], reference(x).float(), rtol=2e-6, atol=1e-9)
    assert GAFSpec("softsign", 0.1, 20.0).bound == pytest.approx(0.1)
    # GAFSGD, placement grad, plain SGD update p -= lr * f(g): the per-tensor loop, the list kernels, the compiled pass
    for path in (dict(fused=False, foreach=False), dict(fused=False, foreach=True), dict(fused="compile")):
        p = torch.nn.Parameter(torch.zeros(4096))
        opt = with_schedule(GAFSGD([p], lr=1.0, gaf="softsign", placement="grad", **path))
        p.grad = x.clone()
        opt.step()
        torch.testing.assert_close(p.detach(), -reference(x).float(), rtol=2e-6, atol=1e-9, msg=str(path))
        assert not opt.compiled.failed
    for fused in (False, "compile"):  # the hook on torch's SGD: eager list kernels and the compiled transform
        p = torch.nn.Parameter(torch.zeros(4096))
        opt = torch.optim.SGD([p], lr=1.0)
        with_schedule(attach_gaf(opt, gaf="softsign", fused=fused))
        p.grad = x.clone()
        opt.step()
        torch.testing.assert_close(p.detach(), -reference(x).float(), rtol=2e-6, atol=1e-9, msg=str(fused))


def test_a_registered_kind_is_a_choice_of_every_flag_that_names_kinds(softsign, capsys):
    from transformers import HfArgumentParser

    from hf_gaf.harness.cli import build_parser
    from hf_gaf.trainer import GAFTrainingArguments

    assert "softsign" in GAF_KINDS and list(GAF_KINDS)[-1] == "softsign"
    parser = HfArgumentParser(GAFTrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(["--output_dir", "/tmp/x", "--gaf", "softsign", "--report_to", "none"])
    assert args.gaf_spec == GAFSpec("softsign", 0.1, 20.0)
    assert "{none,atan,tanh,log,clip,softsign}" in parser.format_help()
    assert build_parser().parse_args(["plot-gaf", "--kind", "softsign"]).kind == "softsign"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["plot-gaf", "--help"])
    assert "{atan,tanh,log,clip,softsign}" in capsys.readouterr().out


def test_one_lookup_gives_the_one_unknown_kind_error_and_names_cannot_be_taken_twice():
    with pytest.raises(ValueError, match="unknown GAF kind 'atna': expected one of atan, tanh, log, clip"):
        kind("atna")
    with pytest.raises(ValueError, match="unknown GAF kind 'atna'"):
        GAFSpec("atna", 0.1, 20.0)
    with pytest.raises(ValueError, match="registered already"):
        register_kind(kind("atan"))


def test_the_accelerate_example_takes_its_choices_from_the_registry():
    shown = subprocess.run([sys.executable, "recipes/accelerate_example.py", "--help"], capture_output=True,
                           text=True, timeout=120).stdout
    assert "{none,atan,tanh,log,clip}" in shown

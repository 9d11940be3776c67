"""The one-launch Triton kernels (hf_gaf.triton_kernels) against float64 references, on CPU through the
Triton interpreter (TRITON_INTERPRET=1, set in conftest.py when no GPU is present), plus an ahead-of-time
compile for Hopper (sm_90) that needs no GPU: it proves the kernels lower to PTX and a cubin, and that full
blocks get 16-byte vector loads."""

import math
import os
import subprocess
import sys

import pytest
import torch

from hf_gaf import GAFSGD, attach_gaf
from hf_gaf import triton_kernels as K

pytestmark = pytest.mark.skipif(
    not K.runs_on(torch.device("cpu")), reason="needs triton and TRITON_INTERPRET=1 (set by conftest.py without a GPU)")

F64 = {
    "atan": lambda x, a, b: a * torch.atan(b * x),
    "tanh": lambda x, a, b: a * torch.tanh(b * x),
    "log": lambda x, a, b: a * torch.sign(x) * torch.log1p(b * x.abs()),
    "clip": lambda x, a, b: a * (b * x).clamp(-1.0, 1.0),
    None: lambda x, a, b: x,
}
# tensor sizes: empty, one element, odd, exactly one block, several blocks with a partial last one, 2-D
SHAPES = [(0,), (1,), (7,), (K.BLOCK,), (2 * K.BLOCK + 3,), (33, 65)]
EPS = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def make_params(dtypes):
    g = torch.Generator().manual_seed(3)
    return [torch.nn.Parameter(torch.randn(shape, generator=g).to(dtypes[i % len(dtypes)]))
            for i, shape in enumerate(SHAPES)]


def new_grads(params, step, keep_alive):
    """Fresh gradient tensors (new addresses each step: the old ones are kept alive), some tiny, some large."""
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        scale = torch.where(torch.rand(p.shape, generator=g) < 0.3, 1e-3, 0.5)
        keep_alive.append(p.grad)
        p.grad = (torch.randn(p.shape, generator=g) * scale).to(p.dtype)


def reference_step(p64, b64, grad, dtype, cfg, lr, first):
    """The module docstring's math in float64; the buffer and the parameter are rounded to ``dtype``
    where the kernel stores them (the kernel rounds once per stored value)."""
    f = lambda x: F64[cfg["gaf"]](x, cfg["alpha"], cfg["beta"])  # noqa: E731
    d = -grad.double() if cfg["maximize"] else grad.double()
    if cfg["placement"] == "grad":
        d = f(d)
    d = d + cfg["weight_decay"] * p64
    if cfg["momentum"]:
        b64 = d.clone() if first else cfg["momentum"] * b64 + (1 - cfg["dampening"]) * d
        b64 = b64.to(dtype).double()
        d = d + cfg["momentum"] * b64 if cfg["nesterov"] else b64
    if cfg["placement"] == "update":
        d = f(d)
    return (p64 - lr * d).to(dtype).double(), b64


OPTIONS = [
    dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
    dict(momentum=0.9, dampening=0.0, nesterov=False, weight_decay=5e-4, maximize=False),
    dict(momentum=0.9, dampening=0.0, nesterov=True, weight_decay=1e-3, maximize=True),
    dict(momentum=0.8, dampening=0.3, nesterov=False, weight_decay=0.0, maximize=True),
]
KINDS = [("atan", 0.1, 20.0), ("tanh", 0.3, 4.5), ("log", 0.5, 3.0), (None, 0.1, 20.0), ("clip", 0.157, 12.7)]


def run_against_reference(dtypes, kind, options, placement, steps=4):
    """Each step is checked against the float64 reference computed from the optimizer's own state before
    that step (so low-precision rounding cannot drift apart over steps): at most 2 units in the last place."""
    params = make_params(dtypes)
    name, alpha, beta = kind
    cfg = dict(options, gaf=name, alpha=alpha, beta=beta, placement=placement)
    opt = GAFSGD(params, lr=0.05, fused="triton", **cfg)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)  # a new lr every step
    alive, addresses = [], []
    for step in range(steps):
        new_grads(params, step, alive)
        addresses.append([p.grad.data_ptr() for p in params])
        lr = opt.param_groups[0]["lr"]
        ref = [
            reference_step(
                p.detach().double(),
                opt.state[p]["momentum_buffer"].double() if step and cfg["momentum"] else None,
                p.grad,
                p.dtype,
                cfg,
                lr,
                step == 0,
            )
            for p in params
        ]
        opt.step()
        sched.step()
        for p, (p64, b64) in zip(params, ref):
            eps = EPS[p.dtype]
            torch.testing.assert_close(p.detach().double(), p64, rtol=2 * eps, atol=2 * eps)
            if cfg["momentum"]:
                torch.testing.assert_close(opt.state[p]["momentum_buffer"].double(), b64, rtol=2 * eps, atol=2 * eps)
    assert addresses[0] != addresses[-1], "the test must move the gradients between steps"


@pytest.mark.parametrize("placement", ["update", "grad"])
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: str(k[0]))
@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "momentum-wd", "nesterov-max", "dampening-max"])
def test_gafsgd_kernel_float32_matches_float64_reference(options, kind, placement):
    run_against_reference([torch.float32], kind, options, placement)


@pytest.mark.parametrize("placement", ["update", "grad"])
@pytest.mark.parametrize("kind", KINDS[:3], ids=lambda k: str(k[0]))
def test_gafsgd_kernel_mixed_dtypes_in_one_group(kind, placement):
    """fp32, bf16 and fp16 parameters in ONE group: one launch per dtype, math in float32."""
    run_against_reference([torch.float32, torch.bfloat16, torch.float16], kind, OPTIONS[2], placement)


def test_gafsgd_one_launch_per_dtype(monkeypatch):
    launches = []
    original = K.gaf_sgd_step
    monkeypatch.setattr(K, "gaf_sgd_step", lambda *a, **kw: launches.append(kw["dtype"]) or original(*a, **kw))
    params = make_params([torch.float32, torch.bfloat16])
    opt = GAFSGD(params, lr=0.1, momentum=0.9, fused="triton")
    alive = []
    for step in range(3):
        new_grads(params, step, alive)
        opt.step()
    assert sorted(map(str, launches)) == sorted(map(str, [torch.float32, torch.bfloat16] * 3))


def test_first_step_with_some_buffers_missing():
    """A parameter whose gradient appears only on step 3 gets b = d then (torch's first step), the others
    continue their buffers: two launches in that step, same numbers as the eager path."""
    a, b = make_params([torch.float32]), make_params([torch.float32])
    settings = dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=1e-3, gaf="atan", alpha=0.1, beta=20.0)
    oa, ob = GAFSGD(a, **settings, fused="triton"), GAFSGD(b, **settings, fused=False)
    alive = []
    for step in range(5):
        for params in (a, b):
            new_grads(params, step, alive)
            if step < 3:
                params[4].grad = None
        oa.step()
        ob.step()
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(
            oa.state[pa]["momentum_buffer"], ob.state[pb]["momentum_buffer"], rtol=1e-6, atol=1e-7
        )


def test_non_dense_gradient_falls_back_to_eager_unchanged():
    p = [torch.nn.Parameter(torch.randn(6, 4))]
    q = [torch.nn.Parameter(p[0].detach().clone())]
    op = GAFSGD(p, lr=0.1, momentum=0.9, fused="triton")
    oq = GAFSGD(q, lr=0.1, momentum=0.9, fused=False)
    g = torch.randn(4, 6)
    p[0].grad, q[0].grad = g.t(), g.t().contiguous()  # transposed: strides differ from the parameter's
    op.step()
    oq.step()
    assert torch.equal(p[0], q[0])


@pytest.mark.parametrize("kind", ["atan", "tanh", "log", "clip"])
def test_gradient_kernel_special_values(kind):
    x = torch.tensor([math.inf, -math.inf, math.nan, 0.0, 1e-30, -1e-8, 0.41421356, 2.4142135, 0.625, 44.0, 1e30])
    x = torch.cat([x, torch.randn(3000) * 3, torch.logspace(-8, 8, 500), -torch.logspace(-8, 8, 500)])
    g = x.clone()
    table = K.TensorTable([g.numel()], g.device)
    K.gaf_grads_(table, table.addresses([g]), dtype=g.dtype, gaf_kind=kind, alpha=0.7, beta=1.3)
    ref = F64[kind](x.double(), 0.7, 1.3)
    ref = torch.where(torch.isfinite(x), ref, math.nan)  # nan_on_inf: an overflow never becomes a bounded value
    assert torch.equal(torch.isnan(g), torch.isnan(ref))
    torch.testing.assert_close(g.double(), ref.to(torch.float32).double(), rtol=4e-7, atol=1e-38, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hook_kernel_matches_foreach_and_scaled_form_equals_unscaled(monkeypatch, dtype):
    params = make_params([dtype])
    alive = []
    new_grads(params, 0, alive)
    grads = [p.grad.clone() for p in params]
    expected = [F64["atan"](g.double(), 0.1, 20.0).to(dtype) for g in grads]
    opt = torch.optim.SGD(params, lr=0.0)
    hook = attach_gaf(opt, gaf="atan", alpha=0.1, beta=20.0, fused="triton")
    opt.step()
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e, rtol=2 * EPS[dtype], atol=1e-30)
    scale = torch.tensor([2.0**12])
    for p, g in zip(params, grads):
        p.grad = g * scale.to(dtype)
    # what a fused optimizer exposes to step pre-hooks under a GradScaler; the hook is called as step() would
    opt.grad_scale, opt.found_inf = scale, torch.zeros(1)
    hook(opt, (), {})  # s*f(g/s): dividing by s gives f(g) again
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad / scale.to(dtype), e, rtol=2 * EPS[dtype], atol=1e-30)
    scaled = [p.grad.clone() for p in params]
    opt.found_inf = torch.ones(1)
    hook(opt, (), {})  # overflow: the kernel leaves every gradient alone, and the hook does not count it
    assert all(torch.equal(p.grad, s) for p, s in zip(params, scaled))
    assert hook.calls == 2


def test_hook_with_fused_optimizer_and_grad_scaler_equals_unscaled_run():
    from hf_gaf.recipes.gpu_check import check_hook_under_scaler  # the GPU check's own code, on the CPU kernel

    result = check_hook_under_scaler("cpu", hook_path="triton", width=40, steps=4)
    assert result["max_rel_err"] <= 1e-6, result
    assert result["calls"] == [4, 4]


HOPPER_COMPILE = """
import re
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from hf_gaf import triton_kernels as K

def compile_for_hopper(kernel, signature, constants):
    names = list(signature) + list(constants)
    sig = dict(signature, **{k: "constexpr" for k in constants})
    src = ASTSource(fn=kernel, signature=sig, constexprs={(names.index(k),): v for k, v in constants.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})

rows = {n: "*i64" for n in ("param_ptrs", "grad_ptrs", "buf_ptrs", "numels")}
scalars = {n: "fp32" for n in ("lr", "momentum", "dampening", "weight_decay", "alpha", "beta")}
for dtype in (tl.float32, tl.bfloat16, tl.float16):
    step = compile_for_hopper(K._gaf_sgd_kernel, {**rows, "block_tensor": "*i32", "block_start": "*i64", **scalars},
        dict(DTYPE=dtype, KIND=1, ON_UPDATE=True, HAS_MOMENTUM=True, FIRST_STEP=False, NESTEROV=True,
             MAXIMIZE=False, HAS_WEIGHT_DECAY=True, ALIGNED=True, BLOCK_SIZE=K.BLOCK))
    grad = compile_for_hopper(K._gaf_grad_kernel, {"grad_ptrs": "*i64", "numels": "*i64", "block_tensor": "*i32",
        "block_start": "*i64", "alpha": "fp32", "beta": "fp32", "scale_ptr": "*fp32", "found_inf_ptr": "*fp32"},
        dict(DTYPE=dtype, KIND=2, HAS_SCALE=True, ALIGNED=True, BLOCK_SIZE=K.BLOCK))
    for name, k in (("step", step), ("grad", grad)):
        # no fast-math flag on an add or subtract: y + (x - x) must stay NaN for inf (the non-finite guard);
        # tl.exp's own multiplies carry nnan, which only concerns exp's argument
        fast = re.search(r"= f(add|sub) (nnan|ninf|fast)", k.asm["llir"]) is not None
        print(dtype, name, "v4" if "ld.global.v4" in k.asm["ptx"] else "scalar", "fastmath" if fast else "ieee",
              len(k.asm["cubin"]))
"""


def test_kernels_compile_for_hopper_with_vector_loads():
    """No GPU needed: Triton lowers both kernels (each dtype) to PTX and ptxas assembles cubins for sm_90;
    full blocks use 16-byte vector loads, and no fast-math flag could fold the NaN guard away. A separate
    process: the compiler, not the interpreter."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", HOPPER_COMPILE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.split("\n")
    assert sum(" v4 ieee " in line for line in lines) == 6, out.stdout

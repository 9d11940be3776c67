r"""One-launch multi-tensor Triton kernels: the GAFSGD step and the GAF gradient transform.

Why: a step over a list of tensors written with ``torch._foreach`` or ``torch.compile`` becomes one
kernel launch per tensor (or per few), and on a GPU the step is then bound by launch latency, not
memory. Here every (device, dtype) bucket of a parameter group is ONE launch. The kernel reads a
table of tensor addresses (int64 ``data_ptr()``\s, one row per role: param, grad, momentum buffer)
and a table that maps each program (block of ``BLOCK`` elements) to (tensor index, start offset):

    program k  ->  t = block_tensor[k], s = block_start[k]
                   x[s : s+BLOCK] of tensor t, for each role, loaded through its address

:class:`TensorTable` builds those tables on the device once per parameter set (the block table
depends only on the sizes) and re-uploads the address rows only when an address changed (gradients
set to ``None`` between steps are new tensors, often at the same address). Uploads go through pinned
memory with ``non_blocking=True``, so a step never synchronises the host with the device.

The math is computed in float32 and rounded once into each tensor's dtype (float32, bfloat16,
float16). f is written here with float32 polynomials (Cephes' ``atanf`` and ``tanhf``) and an exact
``log1p`` correction, not with libdevice, so the very same code runs under the Triton interpreter on
CPU (``TRITON_INTERPRET=1``), where the tests check it against float64 references; relative error
≲ 2e-7. Non-finite values: ±inf and NaN give NaN, as :mod:`hf_gaf.functional` with ``nan_on_inf``
(what GAFSGD and ``attach_gaf`` use on every path).

Scalars (lr, momentum, α, β, ...) are kernel arguments passed by value: a new learning rate each
step neither recompiles (Triton does not specialise on float values) nor synchronises.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .kinds import kind

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs of torch on some platforms come without Triton
    triton = None

#: True when Triton runs kernels in its CPU interpreter (the tests); read once, as ``triton.jit`` does.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
#: Elements per program. 1024 fp32 = 4 KiB per role: four 16-byte accesses per thread at 4 warps.
BLOCK = 1024
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def runs_on(device: torch.device) -> bool:
    """Whether the kernels run for tensors on ``device``: CUDA, or CPU under ``TRITON_INTERPRET=1``."""
    if triton is None:
        return False
    return device.type == "cpu" if INTERPRET else device.type == "cuda"


def same_layout(tensor: Tensor, reference: Tensor) -> bool:
    """True when ``tensor`` has ``reference``'s dtype, shape and strides and covers its memory without
    gaps or overlaps (contiguous or channels-last), so both can be walked as one flat array."""
    if tensor.dtype != reference.dtype or tensor.shape != reference.shape or tensor.stride() != reference.stride():
        return False
    return tensor.is_contiguous() or tensor.is_contiguous(memory_format=torch.channels_last) or (
        tensor.dim() == 5 and tensor.is_contiguous(memory_format=torch.channels_last_3d))


if triton is not None:
    _TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}

    @triton.jit
    def _atan(x):
        """Cephes ``atanf``: range reduction to |z| <= tan(pi/8), then an odd degree-9 polynomial."""
        ax = tl.abs(x)
        big = ax > 2.414213562373095  # tan(3pi/8)
        mid = ax > 0.41421356237309503  # tan(pi/8)
        am = tl.where(big, 0.0, ax)  # keeps inf out of the unused branches
        z = tl.where(big, -1.0 / tl.where(big, ax, 1.0), tl.where(mid, (am - 1.0) / (am + 1.0), ax))
        y0 = tl.where(big, 1.5707963267948966, tl.where(mid, 0.7853981633974483, 0.0))
        z2 = z * z
        y = y0 + ((((8.05374449538e-2 * z2 - 1.38776856032e-1) * z2 + 1.99777106478e-1) * z2 - 3.33329491539e-1)
                  * z2 * z + z)
        return tl.where(x < 0, -y, y)

    @triton.jit
    def _tanh(x):
        """Cephes ``tanhf``: an odd polynomial below |x| = 0.625, ``1 - 2/(exp(2|x|) + 1)`` above."""
        ax = tl.abs(x)
        xs = tl.where(ax < 0.625, x, 0.0)
        x2 = xs * xs
        small = ((((-5.70498872745e-3 * x2 + 2.06390887954e-2) * x2 - 5.37397155531e-2) * x2 + 1.33314422036e-1)
                 * x2 - 3.33332819422e-1) * x2 * xs + xs
        e = tl.exp(2.0 * tl.minimum(ax, 44.0))  # tanh(44) == 1 in float32; no overflow warnings
        large = 1.0 - 2.0 / (e + 1.0)
        large = tl.where(x < 0, -large, large)
        return tl.where(ax < 0.625, small, tl.where(ax == ax, large, x))

    @triton.jit
    def _log1p_abs(x):
        """log(1 + |x|) with the correction log(u)·|x|/(u - 1), u = 1 + |x| (exact where u rounds)."""
        ax = tl.abs(x)
        infinite = ax == float("inf")
        af = tl.where(infinite, 1.0, ax)
        u = af + 1.0
        um1 = u - 1.0
        y = tl.where(um1 == 0.0, af, tl.log(u) * (af / tl.where(um1 == 0.0, 1.0, um1)))
        return tl.where(infinite, ax, y)

    @triton.jit
    def _gaf_f(x, alpha, beta, KIND: tl.constexpr):
        """f(x) in float32 for KIND, a kind's ``triton_code`` in :mod:`hf_gaf.kinds` (1 atan, 2 tanh, 3 log,
        4 clip); ±inf and NaN give NaN (``nan_on_inf`` of hf_gaf.functional: an overflow is never
        a silent bounded step)."""
        if KIND == 1:
            y = alpha * _atan(beta * x)
        elif KIND == 2:
            y = alpha * _tanh(beta * x)
        elif KIND == 4:
            y = alpha * tl.minimum(tl.maximum(beta * x, -1.0), 1.0)
        else:
            m = alpha * _log1p_abs(beta * x)
            y = tl.where(x < 0, -m, m)
        return y + (x - x)  # + 0 where x is finite, NaN where it is not

    @triton.jit
    def _load(ptr, offs, mask, MASKED: tl.constexpr):
        if MASKED:
            x = tl.load(ptr + offs, mask=mask)
        else:
            x = tl.load(ptr + offs)
        return x.to(tl.float32)

    @triton.jit
    def _store(ptr, offs, mask, value, MASKED: tl.constexpr):
        if MASKED:
            tl.store(ptr + offs, value.to(ptr.dtype.element_ty), mask=mask)
        else:
            tl.store(ptr + offs, value.to(ptr.dtype.element_ty))

    @triton.jit
    def _program_block(block_tensor, block_start, numels, ALIGNED: tl.constexpr, BLOCK_SIZE: tl.constexpr):
        """This program's block: (tensor index t, start offset, t's numel, element offsets of the block)."""
        pid = tl.program_id(0)
        t = tl.load(block_tensor + pid)
        start = tl.load(block_start + pid)
        offs = start + tl.arange(0, BLOCK_SIZE)
        if ALIGNED:
            offs = tl.max_contiguous(tl.multiple_of(offs, BLOCK_SIZE), BLOCK_SIZE)
        return t, start, tl.load(numels + t), offs

    @triton.jit
    def _row_pointer(rows, t, DTYPE: tl.constexpr, ALIGNED: tl.constexpr):
        """Tensor t's address from an int64 address row, as a DTYPE pointer (16-byte aligned if ALIGNED)."""
        ptr = tl.load(rows + t).to(tl.pointer_type(DTYPE))
        if ALIGNED:
            ptr = tl.multiple_of(ptr, 16)
        return ptr

    @triton.jit
    def _sgd_block(
        p_ptr, g_ptr, b_ptr, offs, mask, lr, momentum, dampening, weight_decay, alpha, beta,
        KIND: tl.constexpr, ON_UPDATE: tl.constexpr, HAS_MOMENTUM: tl.constexpr, FIRST_STEP: tl.constexpr,
        NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr, MASKED: tl.constexpr,
    ):
        p = _load(p_ptr, offs, mask, MASKED)
        d = _load(g_ptr, offs, mask, MASKED)
        if MAXIMIZE:
            d = -d
        if KIND != 0 and not ON_UPDATE:
            d = _gaf_f(d, alpha, beta, KIND)
        if HAS_WEIGHT_DECAY:
            d = d + weight_decay * p
        if HAS_MOMENTUM:
            if FIRST_STEP:
                b = d
            else:
                b = momentum * _load(b_ptr, offs, mask, MASKED) + (1.0 - dampening) * d
            # the update reads the buffer as stored (rounded to its dtype), as torch's SGD does
            b = b.to(b_ptr.dtype.element_ty).to(tl.float32)
            _store(b_ptr, offs, mask, b, MASKED)
            if NESTEROV:
                d = d + momentum * b
            else:
                d = b
        if KIND != 0 and ON_UPDATE:
            d = _gaf_f(d, alpha, beta, KIND)
        _store(p_ptr, offs, mask, p - lr * d, MASKED)

    @triton.jit
    def _gaf_sgd_kernel(
        param_ptrs, grad_ptrs, buf_ptrs, numels, block_tensor, block_start,
        lr, momentum, dampening, weight_decay, alpha, beta,
        DTYPE: tl.constexpr, KIND: tl.constexpr, ON_UPDATE: tl.constexpr, HAS_MOMENTUM: tl.constexpr,
        FIRST_STEP: tl.constexpr, NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr, HAS_WEIGHT_DECAY: tl.constexpr,
        ALIGNED: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    ):
        """One GAFSGD step (``hf_gaf.gaf_sgd``'s math) on one block of one tensor; KIND 0 = no f.
        Full blocks run unmasked, so aligned tensors get 16-byte vector loads and stores."""
        t, start, n, offs = _program_block(block_tensor, block_start, numels, ALIGNED, BLOCK_SIZE)
        p_ptr = _row_pointer(param_ptrs, t, DTYPE, ALIGNED)
        g_ptr = _row_pointer(grad_ptrs, t, DTYPE, ALIGNED)
        b_ptr = _row_pointer(buf_ptrs, t, DTYPE, ALIGNED)
        mask = offs < n
        tail = start + BLOCK_SIZE > n
        for MASKED in tl.static_range(2):  # unrolled: an unmasked copy for full blocks, a masked one for the tail
            if tail == (MASKED == 1):
                _sgd_block(p_ptr, g_ptr, b_ptr, offs, mask, lr, momentum, dampening, weight_decay, alpha, beta,
                           KIND, ON_UPDATE, HAS_MOMENTUM, FIRST_STEP, NESTEROV, MAXIMIZE, HAS_WEIGHT_DECAY,
                           MASKED == 1)

    @triton.jit
    def _gaf_block(g_ptr, offs, mask, alpha, beta, scale_ptr, KIND: tl.constexpr, HAS_SCALE: tl.constexpr,
                   MASKED: tl.constexpr):
        g = _load(g_ptr, offs, mask, MASKED)
        if HAS_SCALE:
            s = tl.load(scale_ptr).to(tl.float32)
            g = _gaf_f(g / s, alpha, beta, KIND) * s
        else:
            g = _gaf_f(g, alpha, beta, KIND)
        _store(g_ptr, offs, mask, g, MASKED)

    @triton.jit
    def _gaf_grad_kernel(
        grad_ptrs, numels, block_tensor, block_start, alpha, beta, scale_ptr, found_inf_ptr,
        DTYPE: tl.constexpr, KIND: tl.constexpr, HAS_SCALE: tl.constexpr, ALIGNED: tl.constexpr,
        BLOCK_SIZE: tl.constexpr,
    ):
        """g <- f(g), or s·f(g/s) with the loss scale s read on the device; nothing when found_inf != 0."""
        if tl.load(found_inf_ptr) == 0:
            t, start, n, offs = _program_block(block_tensor, block_start, numels, ALIGNED, BLOCK_SIZE)
            g_ptr = _row_pointer(grad_ptrs, t, DTYPE, ALIGNED)
            mask = offs < n
            tail = start + BLOCK_SIZE > n
            for MASKED in tl.static_range(2):  # as in _gaf_sgd_kernel
                if tail == (MASKED == 1):
                    _gaf_block(g_ptr, offs, mask, alpha, beta, scale_ptr, KIND, HAS_SCALE, MASKED == 1)


class TensorTable:
    """The device tables of one multi-tensor launch over a fixed list of tensor sizes.

    ``numels`` fixes the block table (built once). :meth:`addresses` returns the int64 address rows
    of the given tensor lists (one row per list), uploading them only when an address changed, and
    checking then that every tensor has the layout of the first list's (:func:`same_layout`).
    ``aligned`` is True while every address is a multiple of 16 bytes (vector loads are then safe).
    """

    def __init__(self, numels: list[int], device: torch.device, block: int = BLOCK) -> None:
        self.device = device
        self.numels = torch.tensor(numels, dtype=torch.int64, device=device)
        counts = torch.tensor([-(-n // block) for n in numels], dtype=torch.int64)
        tensor_index = torch.repeat_interleave(torch.arange(len(numels), dtype=torch.int32), counts)
        first_block = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        starts = (torch.arange(int(counts.sum()), dtype=torch.int64) - first_block) * block
        self.block_tensor = tensor_index.to(device)
        self.block_start = starts.to(device)
        self.n_blocks = int(counts.sum())
        self.zero = torch.zeros(1, dtype=torch.float32, device=device)  # "no overflow" for the gradient kernel
        self._host: list[int] = []
        self._rows: Tensor | None = None
        self.aligned = False

    def addresses(self, *tensor_lists: list[Tensor]) -> Tensor | None:
        """An int64 tensor of shape (len(tensor_lists), n) holding every tensor's ``data_ptr()``, or
        None when a tensor's layout differs from its counterpart's in the first list."""
        host = [t.data_ptr() for tensors in tensor_lists for t in tensors]
        if host != self._host or self._rows is None:
            reference = tensor_lists[0]
            if not all(same_layout(t, r) for tensors in tensor_lists for t, r in zip(tensors, reference)):
                return None
            rows = torch.tensor(host, dtype=torch.int64).view(len(tensor_lists), -1)
            if self.device.type == "cuda":
                rows = rows.pin_memory().to(self.device, non_blocking=True)
            self._rows, self._host = rows, host
            self.aligned = all(a % 16 == 0 for a in host)
        return self._rows


class TableCache:
    r""":class:`TensorTable`\s keyed by the identity of the tensors they describe (a few at most); a
    table is rebuilt when the sizes under a key changed (an ``id`` reused by another tensor)."""

    def __init__(self, max_entries: int = 16) -> None:
        self._tables: dict[tuple, tuple[list[int], TensorTable]] = {}
        self.max_entries = max_entries

    def get(self, tensors: list[Tensor]) -> TensorTable:
        key = tuple(map(id, tensors))
        numels = [t.numel() for t in tensors]
        entry = self._tables.get(key)
        if entry is None or entry[0] != numels:
            if len(self._tables) >= self.max_entries:
                self._tables.clear()
            entry = self._tables[key] = (numels, TensorTable(numels, tensors[0].device))
        return entry[1]


def gaf_sgd_step(table: TensorTable, rows: Tensor, settings, *, first_step: bool, dtype: torch.dtype) -> None:
    """One launch of the GAFSGD step (an :class:`~hf_gaf.gaf_sgd.SGDSettings`) over the ``dtype`` tensors whose
    address rows (params, grads and, when momentum != 0, momentum buffers) ``table.addresses`` returned as
    ``rows``.

    With ``first_step`` the buffers are written as b = d (torch's SGD on its first step), else
    b = μ·b + (1-τ)·d.
    """
    if table.n_blocks == 0:
        return
    s = settings
    _gaf_sgd_kernel[(table.n_blocks,)](
        rows[0], rows[1], rows[2] if s.momentum != 0 else rows[0], table.numels, table.block_tensor,
        table.block_start, float(s.lr), float(s.momentum), float(s.dampening), float(s.weight_decay),
        float(s.alpha), float(s.beta), DTYPE=_TL_DTYPES[dtype], KIND=kind(s.gaf).triton_code if s.gaf else 0,
        ON_UPDATE=s.placement == "update", HAS_MOMENTUM=s.momentum != 0, FIRST_STEP=first_step,
        NESTEROV=bool(s.nesterov), MAXIMIZE=bool(s.maximize), HAS_WEIGHT_DECAY=s.weight_decay != 0,
        ALIGNED=table.aligned, BLOCK_SIZE=BLOCK,
    )


def gaf_grads_(
    table: TensorTable,
    rows: Tensor,
    *,
    dtype: torch.dtype,
    gaf_kind: str,
    alpha: float,
    beta: float,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """One launch of g ← f(g), or s·f(g/s) with the loss scale ``grad_scale`` s, over the ``dtype``
    gradients whose address row ``table.addresses`` returned as ``rows``; a non-zero ``found_inf``
    (read on the device: no host sync) leaves them untouched. Both scalars live on the gradients' device."""
    if table.n_blocks == 0:
        return
    _gaf_grad_kernel[(table.n_blocks,)](
        rows[0], table.numels, table.block_tensor, table.block_start, float(alpha), float(beta),
        grad_scale if grad_scale is not None else rows[0], found_inf if found_inf is not None else table.zero,
        DTYPE=_TL_DTYPES[dtype], KIND=kind(gaf_kind).triton_code, HAS_SCALE=grad_scale is not None,
        ALIGNED=table.aligned, BLOCK_SIZE=BLOCK,
    )

# mypy: disable-error-code="name-defined"
"""One-pass proximal kernels for CUDA tensors, written in Triton.

:mod:`shrinkage.functional` calls these for CUDA tensors when Triton imports; its torch
code stays the CPU path and the reference the tests compare against.

Each launch covers every tensor of a list (one device and dtype): a table of data
pointers and a map from program to tensor, as torch's multi-tensor kernels do, so the
cost on the host is a few launches per step whatever the number of tensors. A kernel
reads each weight and, for an adaptive optimizer, its second-moment state once, and
writes the weight once: the per-element step ``a / (√q + e)`` is computed in registers.
The group prox with per-element steps solves each group's Newton root in one program.
No kernel reads anything back to the host, so a step stays asynchronous and can be
captured in a CUDA graph.

Steps arrive as :mod:`shrinkage.functional` describes them; here they are one of four
*kinds* per list (a fifth adds mode ``gradient``'s subgradient) (all tensors of a list share one kind):

=====  ==========================================  ===================================
kind   step of element i                           from
=====  ==========================================  ===================================
0      ``a``                                       a float or 0-d tensor (SGD)
1      ``a / (√q_i + e)``                          :class:`~shrinkage.functional.RootStep`
2      ``a / (q_i + e)``                           :class:`~shrinkage.functional.ScaledStep`
3      ``a · q_i``                                 a tensor of per-element steps
4      (no prox: ``q_i += l1·sign(w_i) + 2·l2·w_i``)  mode ``gradient`` (``q``: the gradient)
=====  ==========================================  ===================================

Numerics follow the torch reference operation by operation (``x·d``, soft-threshold,
then ``/ (d + 2a·l2)``), with IEEE-rounded division and square root, and compute in
float32 for float32, bfloat16 and float16 weights (rounded once when stored).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache

import torch
from torch import Tensor

__all__ = ["add_elastic_grad_", "available", "elementwise_prox_", "group_prox_", "supports"]

# ``SHRINKAGE_KERNELS=torch`` turns these kernels off (the torch path runs on CUDA too):
# for comparing the two and for debugging.
_SWITCH = "SHRINKAGE_KERNELS"


@cache
def _triton():
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None
    return triton, tl


def available() -> bool:
    """Whether the kernels can run: Triton imports and ``SHRINKAGE_KERNELS`` is not ``torch``."""
    return os.environ.get(_SWITCH, "").lower() != "torch" and _triton() is not None


_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def supports(tensors: Sequence[Tensor]) -> bool:
    """Whether a list of tensors runs through a kernel: CUDA (or, under Triton's
    interpreter, the CPU), float32/bfloat16/float16, contiguous, one device and dtype."""
    if not tensors:
        return False
    first = tensors[0]
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if not (first.is_cuda or (interpreted and first.device.type == "cpu")) or first.dtype not in _DTYPES:
        return False  # (before Triton is imported: 50 MB that CPU tensors never need)
    same = all(t.device == first.device and t.dtype == first.dtype and t.is_contiguous() for t in tensors)
    return same and available()


def _kernels():
    """The kernel module (imported at the first launch: it needs Triton)."""
    from . import _triton_kernels

    return _triton_kernels


# --------------------------------------------------------------------------- launching
_ELEMENTWISE_BLOCK = 4096
_GROUP_BLOCK = 1024  # elements a row group's program takes at a time
_TILE_ELEMENTS = 4096  # elements of a tile of column groups taken at a time
_SLAB_CHUNKS = 8  # tiles (or blocks) in a slab of a split group
_TABLES: OrderedDict[tuple, tuple] = OrderedDict()
_TABLES_KEPT = 64


def _upload(values: list, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A small host list on the device without a host sync (through pinned memory)."""
    host = torch.tensor(values, dtype=dtype)
    if device.type == "cpu":
        return host
    return host.pin_memory().to(device, non_blocking=True)


class NotCaptured(Exception):
    """A list of tensors met for the first time while a CUDA graph is being captured: its
    tables cannot be uploaded then, so the caller runs the torch code (capturable too)."""


#: keys whose tables a captured CUDA graph reads: never evicted
_CAPTURED: set[tuple] = set()


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _cached(key: tuple, build) -> tuple:
    """Pointer tables and program maps, built once per list of tensors (their addresses,
    sizes, dtypes and shapes make the key; ``key[1]`` is the device)."""
    capturing = _capturing(key[1])
    tables = _TABLES.get(key)
    if tables is None:
        if capturing:
            raise NotCaptured(key)
        tables = _TABLES[key] = build()
        _evict()
    else:
        _TABLES.move_to_end(key)
    if capturing:
        _CAPTURED.add(key)
    return tables


def _evict() -> None:
    """Forget the least recently used tables beyond ``_TABLES_KEPT``, but never those a
    captured graph reads."""
    for key in list(_TABLES):
        if len(_TABLES) <= _TABLES_KEPT:
            return
        if key not in _CAPTURED:
            del _TABLES[key]


def _triton_type(dtype: torch.dtype):
    _, tl = _triton()
    return {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}[dtype]


def _scalars(values: Tensor | Sequence[float | Tensor], device: torch.device) -> tuple[Tensor | None, float]:
    """Per-tensor numbers as ``(device table, 0.0)``, or ``(None, the float they all share)``.
    ``values`` may already be the table (a vector on the device)."""
    if isinstance(values, Tensor):
        return values.to(device=device, dtype=torch.float32), 0.0
    if all(not isinstance(v, Tensor) for v in values) and len({float(v) for v in values}) <= 1:
        return None, float(values[0]) if values else 0.0
    # a float becomes a device tensor by a fill, never by a copy from the host
    return (
        torch.stack(
            [
                v.reshape(()).to(device=device, dtype=torch.float32)
                if isinstance(v, Tensor)
                else torch.full((), float(v), device=device)
                for v in values
            ]
        ),
        0.0,
    )


def _prepare(tensors: Sequence[Tensor], kind: int, numerators, eps, states):
    device = tensors[0].device
    a_table, a_value = _scalars(numerators, device)
    e_table, e_value = _scalars(eps, device)
    per_tensor = a_table is not None or e_table is not None
    if per_tensor:
        n = len(tensors)
        a_table = a_table if a_table is not None else torch.full((n,), a_value, device=device)
        e_table = e_table if e_table is not None else torch.full((n,), e_value, device=device)
    else:
        a_table = e_table = torch.empty(1, device=device)  # unread
    states = states if kind else list(tensors)  # kind 0 reads no state: any valid pointer
    return a_table, e_table, a_value, e_value, per_tensor, states


def elementwise_prox_(
    tensors: Sequence[Tensor],
    *,
    kind: int,
    numerators: Tensor | Sequence[float | Tensor],
    eps: Tensor | Sequence[float | Tensor],
    states: Sequence[Tensor],
    l1: float,
    l2: float,
) -> bool:
    """In place, for each tensor k: soft-threshold by ``l1·s``, then divide by ``1 + 2·l2·s``,
    with ``s`` the per-element step of ``kind`` (module docstring); one pass, one launch.
    False (and nothing done) where the tables cannot be made now (:class:`NotCaptured`)."""
    if not tensors:
        return True
    a_table, e_table, a_value, e_value, per_tensor, states = _prepare(tensors, kind, numerators, eps, states)
    device = tensors[0].device
    key = ("e", device, _identity(tensors, states), tuple(t.numel() for t in tensors))

    w_base, q_base = tensors[0], states[0]

    def build():
        blocks = [-(-t.numel() // _ELEMENTWISE_BLOCK) for t in tensors]
        firsts = [sum(blocks[:i]) for i in range(len(blocks))]
        w_offsets = _offsets(tensors, w_base)
        q_offsets = _offsets(states, q_base)
        # 16 bytes apart at least: vector loads (every base from torch's allocator is aligned)
        align = min(16 // w_base.element_size(), 16 // q_base.element_size())
        aligned = all(
            o % align == 0 and p % 16 == 0
            for o, p in zip(w_offsets + q_offsets, [w_base.data_ptr(), q_base.data_ptr()] * len(w_offsets))
        )
        return (
            _upload(w_offsets, torch.int64, device),
            _upload(q_offsets, torch.int64, device),
            _upload([t.numel() for t in tensors], torch.int64, device),
            _upload(firsts, torch.int32, device),
            _upload([k for k, b in enumerate(blocks) for _ in range(b)], torch.int32, device),
            align if aligned else 1,
        )

    try:
        w_offsets, q_offsets, numels, firsts, block_tensor, align = _cached(key, build)
    except NotCaptured:
        return False
    arguments = (w_base, q_base, w_offsets, q_offsets, numels, firsts, block_tensor, a_table, e_table, a_value, e_value)
    _kernels().elementwise[(block_tensor.numel(),)](
        *arguments, float(l1), float(l2), KIND=kind, PER_TENSOR=per_tensor, ALIGN=align, BLOCK=_ELEMENTWISE_BLOCK
    )
    return True


def add_elastic_grad_(grads: Sequence[Tensor], params: Sequence[Tensor], *, l1: float, l2: float) -> bool:
    """``grad += l1·sign(w) + 2·l2·w`` for every pair, one pass and one launch, no
    temporary tensor (mode ``gradient`` of L1, L2 and elastic net). False as
    :func:`elementwise_prox_`: gradients made inside a CUDA-graph capture are new tensors."""
    return elementwise_prox_(
        params, kind=4, numerators=[0.0] * len(params), eps=[0.0] * len(params), states=grads, l1=l1, l2=l2
    )


def _offsets(tensors: Sequence[Tensor], base: Tensor) -> list[int]:
    """Each tensor's start, in elements after ``base``'s (its dtype's size)."""
    size = base.element_size()
    out = []
    for t in tensors:
        delta = t.data_ptr() - base.data_ptr()
        if delta % size:
            raise ValueError("tensors of one kernel launch must be aligned to their element size")
        out.append(delta // size)
    return out


def group_prox_(
    tensors: Sequence[Tensor],
    shapes: Sequence[tuple[int, int, int, int]],
    weights: Sequence[float],
    *,
    kind: int,
    numerators: Tensor | Sequence[float | Tensor],
    eps: Tensor | Sequence[float | Tensor],
    states: Sequence[Tensor],
    scale: float,
    l1: float,
    max_iter: int,
) -> bool:
    """The group prox of every tensor in place (False, and nothing done, where the tables
    cannot be made now: see :class:`NotCaptured`).

    ``shapes[k]`` is ``(models, outer, groups, inner)``: tensor k seen as that 4-D
    array, whose groups are the slices along the third axis; ``weights[k]`` is √|g|;
    every step is multiplied by ``scale`` (the penalty's λ). With ``l1 > 0`` each
    element is first soft-thresholded by ``l1·s`` (the sparse group lasso).

    Groups of up to ``_TALL`` elements are solved one program per group (or per tile of
    neighbouring column groups); larger ones in slabs (see :mod:`._triton_kernels`).
    """
    if not tensors:
        return True
    tall = [i for i, (_, outer, _, inner) in enumerate(shapes) if outer * inner > _TALL]
    launches = []
    for indices, prepare in (([i for i in range(len(tensors)) if i not in tall], _group_short), (tall, _group_tall)):
        if indices:
            launches.append(
                prepare(
                    [tensors[i] for i in indices],
                    [shapes[i] for i in indices],
                    [weights[i] for i in indices],
                    kind=kind,
                    numerators=[numerators[i] for i in indices],
                    eps=[eps[i] for i in indices],
                    states=[states[i] for i in indices] if kind else [],
                    scale=scale,
                    l1=l1,
                    max_iter=max_iter,
                )
            )
    if any(launch is None for launch in launches):
        return False  # a table could not be made during a capture: nothing was launched
    for launch in launches:
        launch()
    return True


#: Groups of more elements than this are split into slabs, one program each
_TALL = 16384
#: Newton iterations of the split groups (a fixed count, as nothing is read back; a
#: converged group skips the rest; the one-program groups stop by themselves)
_TALL_ITERATIONS = 12


def _tile(shapes: Sequence[tuple[int, int, int, int]], device: torch.device) -> int:
    """Groups per program: column groups (small inner extent) go several to a program,
    so that a tile's rows are contiguous in memory; row groups one to a program."""
    cols = 32 if max(inner for *_, inner in shapes) <= 16 else 1
    while cols > 4 and sum(m * -(-g // cols) for m, _, g, _ in shapes) < 4 * _processors(device):
        cols //= 2  # few groups: more programs, so that every multiprocessor has work
    return cols


def _group_short(tensors, shapes, weights, *, kind, numerators, eps, states, scale, l1, max_iter):
    """The launch of the one-program-per-group kernel, or None (:class:`NotCaptured`)."""
    a_table, e_table, a_value, e_value, per_tensor, states = _prepare(tensors, kind, numerators, eps, states)
    device = tensors[0].device
    key = ("g", device, _identity(tensors, states), tuple(shapes), tuple(weights))
    cols = _tile(shapes, device)

    def build():
        counts = [models * -(-groups // cols) for models, _, groups, _ in shapes]
        return (*_group_tables(tensors, states, shapes, weights, counts, device), None)

    try:
        w_table, q_table, firsts, program_tensor, dims, weight_table, _ = _cached(key, build)
    except NotCaptured:
        return None
    return lambda: _kernels().group[(program_tensor.numel(),)](
        w_table,
        q_table,
        firsts,
        program_tensor,
        dims,
        weight_table,
        a_table,
        e_table,
        a_value,
        e_value,
        float(scale),
        float(l1),
        16 * torch.finfo(torch.float32).eps,
        max_iter,
        KIND=kind,
        PER_TENSOR=per_tensor,
        W_TYPE=_triton_type(tensors[0].dtype),
        Q_TYPE=_triton_type(states[0].dtype),
        ROWS=(_TILE_ELEMENTS if cols > 1 else _GROUP_BLOCK) // cols,
        COLS=cols,
        num_warps=8 if cols > 1 else 4,
    )


def _identity(tensors, states) -> tuple:
    """What a list's tables depend on: addresses, dtypes (element offsets) of both lists."""
    return (
        tensors[0].dtype,
        states[0].dtype,
        tuple(t.data_ptr() for t in tensors),
        tuple(q.data_ptr() for q in states),
    )


def _group_tables(tensors, states, shapes, weights, counts, device) -> tuple[Tensor, ...]:
    """Pointers, each tensor's first program, each program's tensor, shapes, √|g|."""
    firsts = [sum(counts[:i]) for i in range(len(counts))]
    return (
        _upload([t.data_ptr() for t in tensors], torch.int64, device),
        _upload([q.data_ptr() for q in states], torch.int64, device),
        _upload(firsts, torch.int32, device),
        _upload([k for k, c in enumerate(counts) for _ in range(c)], torch.int32, device),
        _upload([n for _, outer, groups, inner in shapes for n in (outer, groups, inner)], torch.int64, device),
        _upload(list(weights), torch.float32, device),
    )


def _group_tall(tensors, shapes, weights, *, kind, numerators, eps, states, scale, l1, max_iter):
    """The launches of the split-group kernels, or None (:class:`NotCaptured`)."""
    k = _kernels()
    a_table, e_table, a_value, e_value, per_tensor, states = _prepare(tensors, kind, numerators, eps, states)
    device = tensors[0].device
    key = ("t", device, _identity(tensors, states), tuple(shapes), tuple(weights))
    cols = _tile(shapes, device)
    rows = (_TILE_ELEMENTS if cols > 1 else _GROUP_BLOCK) // cols
    slab = _SLAB_CHUNKS * rows
    slabs = [-(-(outer * inner) // slab) for _, outer, _, inner in shapes]
    n_groups = sum(models * groups for models, _, groups, _ in shapes)

    def build():
        counts = [models * -(-groups // cols) * n for (models, _, groups, _), n in zip(shapes, slabs)]
        group_counts = [models * groups for models, _, groups, _ in shapes]
        extra = (
            _upload(slabs, torch.int32, device),
            _upload([sum(group_counts[:i]) for i in range(len(group_counts))], torch.int32, device),
            _upload([n for n, c in zip(slabs, group_counts) for _ in range(c)], torch.int32, device),
        )
        return (*_group_tables(tensors, states, shapes, weights, counts, device), extra)

    try:
        w_table, q_table, firsts, program_tensor, dims, weight_table, extra = _cached(key, build)
    except NotCaptured:
        return None
    slab_table, group_first, group_slabs = extra
    partial = torch.empty(max(slabs) * 4 * n_groups, dtype=torch.float32, device=device)
    radii = torch.empty(n_groups, dtype=torch.float32, device=device)
    going = torch.empty(n_groups, dtype=torch.int32, device=device)
    tile = (w_table, q_table, firsts, program_tensor, dims, slab_table, group_first, weight_table)
    steps = (a_table, e_table, a_value, e_value, float(scale), float(l1))
    types = {
        "KIND": kind,
        "PER_TENSOR": per_tensor,
        "W_TYPE": _triton_type(tensors[0].dtype),
        "Q_TYPE": _triton_type(states[0].dtype),
        "ROWS": rows,
        "COLS": cols,
        "SLAB": slab,
        "num_warps": 8 if cols > 1 else 4,
    }
    programs, updates = (program_tensor.numel(),), (-(-n_groups // 256),)
    tolerance = 16 * torch.finfo(torch.float32).eps

    def launch() -> None:
        for first in [True] + [False] * min(max_iter, _TALL_ITERATIONS):
            k.tall_partial[programs](*tile, *steps, radii, going, partial, n_groups, FIRST=first, **types)
            k.tall_update[updates](
                partial, radii, going, group_slabs, n_groups, max(slabs), tolerance, FIRST=first, BLOCK=256
            )
        k.tall_apply[programs](*tile, *steps, radii, **types)

    return launch


@cache
def _processors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8

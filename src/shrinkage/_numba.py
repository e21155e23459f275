"""One-pass proximal kernels for CPU tensors with per-element steps, compiled by Numba.

:mod:`shrinkage.functional` calls these for the proxes after Adam, AdamW, RMSprop,
Adagrad and Adamax (and for per-element step tensors) when Numba imports (the
``shrinkage[fast]`` extra); :mod:`shrinkage.batched` for its stacked models' Adam step,
group proxes and penalty values. The torch code they replace stays the reference the
tests compare against, and the path without Numba. A kernel reads each weight and its
optimizer state once per pass and keeps the per-element step in registers: the
elementwise prox is one pass where torch takes four to six; the group prox solves all
of a tensor's Newton roots with one pass per iteration and no Python between.

The kernels are serial. The torch path splits large tensors over threads, so tensors
of more than ``_SERIAL_LIMIT`` elements stay on it when torch has more than two
threads (a serial pass beat two threads by 3× at 4 M elements, measured on 2 cores).
Kinds of step as in :mod:`shrinkage._triton` (1, 2 and 3; kind 0, one step per
tensor, is one pass in torch already). ``SHRINKAGE_KERNELS=torch`` turns these
kernels off as it does the CUDA ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.autograd.graph import increment_version

from ._triton import _SWITCH

__all__ = [
    "PartTable",
    "available",
    "elementwise_prox_",
    "group_prox_",
    "part_table",
    "stacked_group_prox_",
    "supports",
    "unused",
]

_DTYPES = (torch.float32, torch.float64)
#: Above this many elements a tensor goes to torch's threaded code (when torch has more
#: than two threads), where several parallel passes may beat one serial pass
_SERIAL_LIMIT = 1 << 20


@cache
def _kernels():
    """The kernel module, or None without Numba (imported at the first call)."""
    try:
        from . import _numba_kernels
    except ImportError:
        return None
    return _numba_kernels


#: Set within :func:`unused`: the torch code runs, and Numba is not imported for it.
_OFF: ContextVar[bool] = ContextVar("numba_kernels_off", default=False)


@contextmanager
def unused() -> Iterator[None]:
    """Within the block the proxes and the batched engine's steps run torch's code on the
    CPU, without importing Numba (130 MB less in a study's process)."""
    token = _OFF.set(True)
    try:
        yield
    finally:
        _OFF.reset(token)


def available() -> bool:
    """Whether the kernels can run: Numba imports, ``SHRINKAGE_KERNELS`` is not ``torch``
    and no :func:`unused` block is active."""
    return not _OFF.get() and os.environ.get(_SWITCH, "").lower() != "torch" and _kernels() is not None


def supports(tensors: Sequence[Tensor]) -> bool:
    """Whether a list of tensors runs through these kernels: plain CPU tensors (or
    parameters) of one dtype, float32 or float64, contiguous, none too large for a
    serial pass."""
    if not tensors:
        return False
    dtype = tensors[0].dtype
    threaded = torch.get_num_threads() > 2
    plain = dtype in _DTYPES and all(
        type(t) in (Tensor, torch.nn.Parameter)
        and t.device.type == "cpu"
        and t.dtype == dtype
        and t.is_contiguous()
        and not (threaded and t.numel() > _SERIAL_LIMIT)
        for t in tensors
    )
    return plain and available()  # (Numba imported only for tensors it can take)


def _array(t: Tensor) -> np.ndarray:
    return t.detach().numpy()


def _written(tensors: Sequence[Tensor]) -> None:
    """Count a kernel's writes as in-place changes, as torch's own would be: autograd then
    refuses a backward pass through a graph that saved the old values."""
    increment_version(list(tensors))


def _float(value: float | Tensor) -> float:
    return float(value)  # a CPU 0-d tensor: no device to wait for


def _each(values: Tensor | Sequence[float | Tensor]) -> Sequence[float | Tensor]:
    return list(values.unbind()) if isinstance(values, Tensor) else values


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
    """In place, for each tensor: soft-threshold by ``l1·s``, then divide by ``1 + 2·l2·s``
    (``s`` the per-element step of ``kind``), one pass. False, and nothing done, for
    kind 0 (torch's one pass)."""
    if kind not in (1, 2, 3):
        return False
    kernels = _kernels()
    for x, q, a, e in zip(tensors, states, _each(numerators), _each(eps), strict=True):
        one = np.float32 if x.dtype == torch.float32 else np.float64
        # the thresholds as the reference forms them (in float32 when ``a`` is a tensor)
        t1, t2 = _float(a * l1), _float(2.0 * (a * l2))
        kernels.elementwise(
            _array(x).reshape(-1),
            _array(q).reshape(-1),
            kind,
            one(_float(e)),
            one(t1),
            one(t2),
            one(l1),
            one(l2),
            one(1.0),
        )
    _written(tensors)
    return True


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
    """The group prox of every tensor in place, as :func:`shrinkage._triton.group_prox_`
    takes it (``shapes[k]`` = ``(models, outer, groups, inner)``, ``weights[k]`` = √|g|).
    False, and nothing done, for kind 0 (torch's closed form)."""
    if kind not in (1, 2, 3):
        return False
    kernels = _kernels()
    scratch = np.empty(max(t.numel() for t in tensors), dtype=_array(tensors[0]).dtype)
    one, tolerance = scratch.dtype.type, _tolerance(scratch.dtype)
    for x, q, shape, weight, a, e in zip(tensors, states, shapes, weights, _each(numerators), _each(eps), strict=True):
        # the group threshold's numerator and the l1 threshold as the reference forms them
        ac, t1 = ((a * scale) * weight, a * l1) if kind != 3 else (scale * weight, l1)
        models, outer, groups, inner = shape
        view = shape if inner > 1 else (models, outer, groups)
        kernel = kernels.group_rows if inner > 1 else kernels.group_columns
        kernel(
            _array(x).reshape(view),
            _array(q).reshape(view),
            scratch[: x.numel()].reshape(view),
            kind,
            one(_float(a)),
            one(_float(e)),
            one(_float(ac)),
            one(_float(t1)),
            one(1.0),
            max_iter,
            tolerance,
        )
    _written(tensors)
    return True


def _tolerance(dtype: np.dtype) -> np.floating:
    """The Newton iterations' relative tolerance, in ``dtype``."""
    return dtype.type(16 * np.finfo(dtype).eps)


class PartTable(NamedTuple):
    """Parts of a stack's flat weights as :func:`stacked_group_prox_` takes them."""

    #: each part's ``(start, outer, groups, inner)``, int64 rows
    bounds: np.ndarray
    #: each part's group threshold scale·√|g|, float64 (formed as the reference forms it)
    thresholds: np.ndarray
    #: the l1 threshold's scale (a sparse group lasso's; 0 for the group lasso)
    l1: float
    #: the largest part's entries per model
    largest: int


def part_table(parts: Sequence[tuple[int, int, tuple[int, int, int], float]], scale: float, l1: float) -> PartTable:
    """The table of a group term's ``parts`` of a stack's flat weights, ``scale`` and
    ``l1`` its prox's (``GroupLasso._shrink_scales``): part ``(start, stop, shape,
    weight)`` is ``weights[:, start:stop]`` seen as ``(models, *shape)`` = ``(models,
    outer, groups, inner)``, ``weight`` = √|g|."""
    bounds = np.array([(start, *shape) for start, _, shape, _ in parts], dtype=np.int64).reshape(-1, 4)
    thresholds = np.array([scale * weight for *_, weight in parts], dtype=np.float64)
    return PartTable(bounds, thresholds, l1, max(stop - start for start, stop, _, _ in parts))


def stacked_group_prox_(weights: Tensor, steps: Tensor, table: PartTable, *, max_iter: int) -> bool:
    """The group prox with per-element ``steps`` (kind 3) of parts of a stack of models'
    flat weights ``(models, parameters)``, in place, without copies: the parts of
    ``table`` (:func:`part_table`), all in one kernel call. :mod:`shrinkage.batched`'s
    prox after each epoch's Adam step: through :func:`group_prox_`, on each tensor's
    copy, it took four times as long, and with a kernel call per part twice as long.
    False, and nothing done, where the kernels do not run (see :func:`supports`;
    ``weights`` and ``steps`` contiguous)."""
    if not supports([weights, steps]):
        return False
    x, q = _array(weights), _array(steps)
    one = x.dtype.type
    _kernels().stacked_groups(
        x,
        q,
        np.empty(table.largest * len(x), dtype=x.dtype),
        table.bounds,
        table.thresholds.astype(x.dtype),
        one(table.l1),
        one(1.0),
        max_iter,
        _tolerance(x.dtype),
    )
    _written([weights])
    return True


def adam_stack_(
    weights: Tensor,
    moments: tuple[Tensor, Tensor],
    grad: Tensor,
    counts: Tensor,
    *,
    adam: tuple[float, float, float, float],
    rate: Tensor | None,
    lam: Tensor,
    l1: Tensor | None = None,
    l2: Tensor | None = None,
    hold: Tensor | None = None,
) -> Tensor:
    """torch's Adam step on every model of a stack's flat weights ``(models,
    parameters)``, in place, with its moments, then the elementwise prox of the L1 and
    L2 coefficient rows ``l1``, ``l2`` (at λ = 1) with the per-element step the step took
    times each model's λ, and ``hold`` multiplied in: one pass where torch takes sixteen
    operations. ``counts`` (each model's step count, float64) goes up by one; ``rate``,
    ``lam``: ``(models, 1)``, the learning rate's factor (None: 1) and λ. Returns the
    per-element steps times λ, for a group prox to follow. For tensors :func:`supports`."""
    lr, beta1, beta2, eps = adam
    x = weights.numpy()
    one = x.dtype.type
    out = torch.empty_like(weights)
    empty = np.empty(0, dtype=x.dtype)
    none = empty.reshape(0, 0)
    _kernels().adam_stack(
        x,
        moments[0].numpy(),
        moments[1].numpy(),
        grad.numpy(),
        out.numpy(),
        counts.numpy(),
        none if rate is None else rate.numpy(),
        lam.numpy(),
        np.array((beta1, beta2)),
        one(lr),
        one(1.0 - beta1),
        one(beta2),
        one(1.0 - beta2),
        one(eps),
        *(empty if t is None else t.numpy() for t in (l1, l2)),
        none if hold is None else hold.numpy(),
        one(1.0),
    )
    _written([weights, *moments, counts])
    return out


class ValueTable(NamedTuple):
    """Pieces of a stack's flat weights as :func:`stacked_values` takes them."""

    #: each piece's ``(start, outer, groups, inner)``, int64 rows
    bounds: np.ndarray
    #: each piece's factors of Σ_g‖w_g‖, Σ|w| and Σw², float64 rows
    coefficients: np.ndarray


def stacked_values(weights: Tensor, table: ValueTable) -> Tensor:
    """Each model's penalty value over the pieces of ``table`` of a stack's flat
    ``weights`` ``(models, parameters)``: ``(models,)``, float64, summed in float64."""
    return torch.from_numpy(_kernels().stacked_values(_array(weights), table.bounds, table.coefficients))

"""Penalty math as pure tensor functions (the layer everything else calls).

Conventions (fixed; see DESIGN.md):

==============  =========================  ====================================
penalty         R(w)                       prox with step s
==============  =========================  ====================================
L1              Σ|w|                       sign(v)·max(|v| − s, 0)
L2              Σw² (no ½)                 v / (1 + 2s)
group lasso     Σ_g √|g|·‖w_g‖₂            v_g·max(0, 1 − s√|g| / ‖v_g‖)
==============  =========================  ====================================

Elastic net and sparse group lasso are compositions of these (soft-threshold first).

Functions ending in ``_`` change their first argument in place and must run under
``torch.no_grad()`` when the tensors are parameters. Element-wise gradients use
PyTorch's multi-tensor ``torch._foreach_*`` kernels (fused on CUDA). On CUDA the proxes
of L1, L2, elastic net and group lasso (row and column groups) run as one-pass Triton kernels
over a whole list of tensors (``shrinkage._triton``), when Triton is installed. On the
CPU, the same proxes with per-element steps (after Adam, RMSprop, Adagrad, Adamax) run
as one-pass Numba kernels (``shrinkage._numba``), when Numba is installed. Otherwise,
and as the reference those kernels are tested against, proxes run one native
in-place kernel per tensor (``softshrink`` writing into its input, ``mul_``, ``div_``),
one tensor at a time, because on CPU every temporary tensor costs page faults and a pass
over memory, so the fewest passes win. Lists should share one device and dtype (the
caller buckets them). Nothing here reads a CUDA tensor back to the host.

A *step* is given per tensor, as one of:

- a float ``s`` (or a 0-d tensor) — every element moves with the same step (SGD);
- a :class:`RootStep` ``(a, q, e)`` — element i moves with step ``a / (√q_i + e)``
  (Adam, RMSprop, Adagrad: ``q`` is the optimizer's second-moment state; read only);
- a :class:`ScaledStep` ``(a, d)`` — element i moves with step ``a / d_i`` (``d`` any
  denominator, such as Adamax's state; read only);
- a tensor of per-element steps.

With per-element steps every prox here is the exact prox in the optimizer's own
diagonal metric, so that proximal training has the regularized optimum as fixed point.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .validation import InputError


@dataclass(frozen=True)
class ScaledStep:
    """Per-element steps ``numerator / denominator`` (``denominator`` is never written).

    ``numerator`` is a float or a 0-d tensor on the tensors' device (a tensor learning
    rate, a step count kept on the device), which is never read back to the host.
    """

    numerator: float | Tensor
    denominator: Tensor

    def scaled(self, factor: float) -> ScaledStep:
        return ScaledStep(self.numerator * factor, self.denominator)


@dataclass(frozen=True)
class RootStep:
    """Per-element steps ``numerator / (√square + eps)``: Adam's, RMSprop's, Adagrad's.

    ``square`` is the optimizer's own state (``exp_avg_sq``, ``square_avg``, ``sum``),
    never written. The denominator is formed where it is used: on CUDA inside the
    prox's one pass, on the CPU one tensor at a time (:attr:`denominator`).
    ``numerator`` and ``eps`` are floats or 0-d tensors on the tensors' device.
    """

    numerator: float | Tensor
    square: Tensor
    eps: float | Tensor

    def scaled(self, factor: float) -> RootStep:
        return RootStep(self.numerator * factor, self.square, self.eps)

    @property
    def denominator(self) -> Tensor:
        """``√square + eps``, a new tensor (float32 for a half-precision state)."""
        return self.denominator_into(None)

    def denominator_into(self, scratch: Tensor | None) -> Tensor:
        """``√square + eps`` written into ``scratch`` (a flat buffer at least as large, of
        the denominator's dtype: float32 for a half-precision state), or a new tensor."""
        square = self.square
        if square.dtype in (torch.float16, torch.bfloat16):
            square = square.float()
        out = torch.empty_like(square) if scratch is None else scratch[: square.numel()].view(square.shape)
        if (
            type(square) is Tensor
            and square.device.type == "cpu"
            and square.is_contiguous()
            and not square.requires_grad
        ):
            # NumPy's square root is about 1.4× faster than torch's on the CPU (AVX-512
            # machines measured), and exactly rounded as well: the same values
            np.sqrt(square.numpy(), out=out.numpy())
        else:
            torch.sqrt(square, out=out)
        return out.add_(self.eps)


class RootSteps(Sequence[RootStep]):
    """The :class:`RootStep` of each of a list of tensors, kept as the optimizer gives
    them: ``numerators`` and ``eps`` as one vector each (or lists of floats), and the
    states. Indexing makes a :class:`RootStep`; the CUDA kernels take the vectors as they
    are, so a step with many tensors makes no per-tensor objects on the host."""

    def __init__(
        self,
        numerators: Tensor | Sequence[float | Tensor],
        squares: Sequence[Tensor],
        eps: Tensor | Sequence[float | Tensor],
    ):
        self.numerators, self.squares, self.eps = numerators, list(squares), eps

    def __len__(self) -> int:
        return len(self.squares)

    def __iter__(self) -> Iterator[RootStep]:
        for index in range(len(self)):
            yield RootStep(self.numerators[index], self.squares[index], self.eps[index])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return RootStep(self.numerators[index], self.squares[index], self.eps[index])


Step = float | ScaledStep | RootStep | Tensor
Steps = Sequence[Step]

__all__ = [
    "GroupLayout",
    "RootStep",
    "RootSteps",
    "ScaledStep",
    "add_elastic_grad_",
    "add_group_grad_",
    "add_l1_grad_",
    "add_l2_grad_",
    "device_checks",
    "elastic_shrink_",
    "group_layout",
    "group_norms",
    "group_shrink_",
    "group_value",
    "group_zero_threshold",
    "hier_prox_",
    "hier_zero_threshold",
    "kernels_apply",
    "l1_value",
    "l1_zero_threshold",
    "l2_value",
    "ridge_shrink_",
    "scale_steps",
    "soft_threshold_",
    "sparse_group_zero_threshold",
]


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision parameters are summed in float32."""
    return torch.promote_types(dtype, torch.float32)


def scale_steps(steps: Steps, factor: float) -> list[Step]:
    """``factor · step`` for each tensor's step (new list; inputs are not changed)."""
    out: list[Step] = []
    for s in steps:
        if isinstance(s, (ScaledStep, RootStep)):
            out.append(s.scaled(factor))
        elif isinstance(s, Tensor):
            out.append(s * factor)
        else:
            out.append(factor * float(s))
    return out


# --------------------------------------------------------------------------- values
def l1_value(tensors: Sequence[Tensor]) -> Tensor:
    """Σ|w| over all tensors (differentiable; the gradient at 0 is 0)."""
    if not tensors:
        return torch.zeros(())
    acc = _accumulate_dtype(tensors[0].dtype)
    return torch.stack(torch._foreach_norm(list(tensors), 1, dtype=acc)).sum()


def l2_value(tensors: Sequence[Tensor]) -> Tensor:
    """Σw² over all tensors (differentiable)."""
    if not tensors:
        return torch.zeros(())
    acc = _accumulate_dtype(tensors[0].dtype)
    return torch.stack(torch._foreach_norm(list(tensors), 2, dtype=acc)).square().sum()


# --------------------------------------------------------------------------- groups
@dataclass(frozen=True)
class GroupLayout:
    """How one tensor splits into groups.

    Groups are unions of slices along ``axis``: for a weight ``W`` of shape
    ``(out, in, *kernel)``, ``axis=1`` slices are input features / channels (columns)
    and ``axis=0`` slices are units / output channels (rows).

    Attributes
    ----------
    axis : int
        The axis whose slices make up groups.
    labels : Tensor or None
        ``(shape[axis],)`` group index of each slice; ``None`` when each slice is its
        own group.
    n_groups : int
        Number of groups.
    weights : Tensor or float
        √|g| for each group (``(n_groups,)``), or one float when all groups have the
        same size.
    batch : int
        Leading dimensions that index separate models of one stacked tensor (the
        K fold models trained together, :mod:`shrinkage.batched`): ``axis`` counts
        after them, and per-group results have shape ``(*batch_shape, n_groups)``.
        0 for an ordinary tensor.
    """

    axis: int
    labels: Tensor | None
    n_groups: int
    weights: Tensor | float
    batch: int = 0

    def stacked(self) -> GroupLayout:
        """The same groups on a tensor of such models stacked along a new first dimension."""
        return replace(self, batch=self.batch + 1)


#: The named group layouts and the axis whose slices they are: columns (inputs, input
#: channels) or rows (units, conv filters). "channel" and "filter" are CNN aliases.
_GROUP_AXES = {"input": 1, "unit": 0, "channel": 1, "filter": 0}


def group_layout(
    shape: Sequence[int],
    groups: str | Sequence[Sequence[int]],
    *,
    device: torch.device | str | None = None,
) -> GroupLayout:
    """Build the :class:`GroupLayout` of a tensor of ``shape``.

    Parameters
    ----------
    shape : sequence of int
        The tensor's shape; at least 2-D.
    groups : {"input", "unit", "channel", "filter"} or sequence of sequences of int
        ``"input"``: one group per column (input feature / channel); ``"unit"``: one
        group per row (output unit / channel); or a partition of the column indices
        (e.g. the one-hot columns of each categorical feature). ``"channel"`` and
        ``"filter"`` are the convolutional names of ``"input"`` and ``"unit"``: for a
        conv weight ``(out, in, *kernel)`` a channel group is ``W[:, c]`` (all kernel
        taps that read input channel ``c``) and a filter group is ``W[o]``.
    device : torch.device, optional
        Where the labels tensor lives (the parameter's device).
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:
        raise InputError(f"group penalties need a tensor with ndim >= 2, got shape {shape}")
    numel = math.prod(shape)
    if isinstance(groups, str):
        if groups not in _GROUP_AXES:
            raise InputError(
                f"groups must be 'input', 'unit', 'channel', 'filter' or a list of column lists, got {groups!r}"
            )
        axis = _GROUP_AXES[groups]
        return GroupLayout(axis, None, shape[axis], math.sqrt(numel // shape[axis]))
    n_columns = shape[1]
    if len(groups) == n_columns and all(list(members) == [j] for j, members in enumerate(groups)):
        return group_layout(shape, "input")  # every column alone, in order: the same groups, sums per column
    labels = torch.full((n_columns,), -1, dtype=torch.long)
    sizes = []
    for g, members in enumerate(groups):
        index = torch.as_tensor(list(members), dtype=torch.long)
        if index.numel() == 0:
            raise InputError(f"groups must not contain an empty group, got group {g} empty")
        if index.min() < 0 or index.max() >= n_columns:
            raise InputError(f"groups must hold column indices in [0, {n_columns}), got group {g} = {list(members)}")
        if (labels[index] >= 0).any() or index.unique().numel() != index.numel():
            raise InputError(f"groups must not overlap, got column(s) repeated in group {g}")
        labels[index] = g
        sizes.append(index.numel())
    if (labels < 0).any():
        missing = torch.nonzero(labels < 0).flatten().tolist()
        raise InputError(f"groups must cover every column of the tensor, got columns {missing} in no group")
    per_column = numel // n_columns
    weights = torch.tensor([math.sqrt(per_column * s) for s in sizes], dtype=torch.float64)
    return GroupLayout(1, labels.to(device), len(sizes), weights)


def _other_dims(x: Tensor, layout: GroupLayout) -> list[int]:
    return [d for d in range(layout.batch, x.ndim) if d != layout.batch + layout.axis]


def _group_sum(x: Tensor, layout: GroupLayout) -> Tensor:
    """Sum of ``x`` over each group: ``(*batch_shape, n_groups)``."""
    per_slice = x.sum(dim=_other_dims(x, layout))
    if layout.labels is None:
        return per_slice
    out = per_slice.new_zeros((*per_slice.shape[:-1], layout.n_groups))
    return out.index_add_(layout.batch, layout.labels, per_slice)


def _expand(per_group: Tensor, like: Tensor, layout: GroupLayout) -> Tensor:
    """A ``(n_groups,)`` or ``(*batch_shape, n_groups)`` tensor broadcastable against ``like``."""
    per_slice = per_group if layout.labels is None else per_group[..., layout.labels]
    shape = [1] * like.ndim
    shape[: per_slice.ndim - 1] = per_slice.shape[:-1]  # the models' dimensions, when it has them
    shape[layout.batch + layout.axis] = like.shape[layout.batch + layout.axis]
    return per_slice.reshape(shape)


def _weights(layout: GroupLayout, like: Tensor) -> Tensor | float:
    w = layout.weights
    return w if isinstance(w, float) else w.to(device=like.device, dtype=like.dtype)


def group_norms(x: Tensor, layout: GroupLayout) -> Tensor:
    """‖x_g‖₂ per group, ``(n_groups,)``; differentiable with gradient 0 at a zero group.

    Computed as √(Σ x²) rather than ``torch.linalg.vector_norm``, whose reduction over a
    strided axis (the columns of a row-major weight) is several times slower on CPU.
    """
    squares = _group_sum(x.square(), layout)
    if not squares.requires_grad:
        return squares.sqrt_()
    nonzero = squares > 0
    # sqrt only where positive, so that a zero group gets gradient 0, not NaN
    return torch.where(nonzero, squares, torch.ones_like(squares)).sqrt() * nonzero


def group_value(tensors: Sequence[Tensor], layouts: Sequence[GroupLayout]) -> Tensor:
    """Σ_tensors Σ_g √|g|·‖w_g‖₂ (differentiable)."""
    if not tensors:
        return torch.zeros(())
    acc = _accumulate_dtype(tensors[0].dtype)
    terms = []
    for x, layout in zip(tensors, layouts, strict=True):
        norms = group_norms(x.to(acc), layout)
        terms.append((norms * _weights(layout, norms)).sum())
    return torch.stack(terms).sum()


# ------------------------------------------------------------------------ gradients
def add_elastic_grad_(grads: Sequence[Tensor], params: Sequence[Tensor], *, l1: float, l2: float) -> None:
    """``grad += l1·sign(w) + 2·l2·w``: the (sub)gradient of ``l1·Σ|w| + l2·Σw²``.

    On CUDA one Triton pass over all the tensors, with no temporary (where Triton is
    installed); elsewhere ``sign(w)`` one tensor at a time, then :func:`add_l2_grad_`.
    """
    from . import _triton

    if (
        l1
        and _triton.supports(params)
        and _triton.supports(grads)
        and grads[0].dtype == params[0].dtype
        and _triton.add_elastic_grad_(grads, params, l1=l1, l2=l2)
    ):
        return
    if l1:
        _add_sign_(grads, params, alpha=l1)
    if l2:
        add_l2_grad_(grads, params, alpha=l2)


def add_l1_grad_(grads: Sequence[Tensor], params: Sequence[Tensor], *, alpha: float) -> None:
    """``grad += alpha · sign(w)`` (the subgradient 0 at w = 0, as autograd gives)."""
    add_elastic_grad_(grads, params, l1=alpha, l2=0.0)


def _add_sign_(grads: Sequence[Tensor], params: Sequence[Tensor], *, alpha: float) -> None:
    if params and params[0].is_cuda:  # fused multi-tensor kernels
        torch._foreach_add_(list(grads), torch._foreach_sign(list(params)), alpha=alpha)
        return
    # On the CPU ``_foreach_*`` is a loop anyway, and making every sign(w) first costs
    # all the temporaries at once; one at a time the allocator reuses one block.
    for grad, w in zip(grads, params, strict=True):
        grad.add_(w.sign(), alpha=alpha)


def add_l2_grad_(grads: Sequence[Tensor], params: Sequence[Tensor], *, alpha: float) -> None:
    """``grad += alpha · 2w`` (torch's ``weight_decay=2·alpha``, same kernel)."""
    torch._foreach_add_(list(grads), list(params), alpha=2.0 * alpha)


def add_group_grad_(
    grads: Sequence[Tensor],
    params: Sequence[Tensor],
    layouts: Sequence[GroupLayout],
    *,
    alpha: float,
) -> None:
    """``grad_g += alpha · √|g| · w_g / ‖w_g‖`` (0 for a zero group)."""
    for grad, w, layout in zip(grads, params, layouts, strict=True):
        norms = group_norms(w, layout)
        coef = (alpha * _weights(layout, norms)) / norms
        coef = torch.where(norms > 0, coef, torch.zeros_like(coef))
        grad.addcmul_(w, _expand(coef, w, layout))


# ---------------------------------------------------------------- zero thresholds
# The smallest strength at which w = 0 satisfies the optimality condition
# 0 ∈ g + t·∂R(0), g the data loss's gradient at w = 0: the λ_max of a path.
def l1_zero_threshold(grads: Sequence[Tensor]) -> float:
    """``max|g|``: zero is optimal for ``t·Σ|w|`` iff every ``|g_i| <= t``."""
    return max((float(g.abs().max()) for g in grads if g.numel()), default=0.0)


def group_zero_threshold(grads: Sequence[Tensor], layouts: Sequence[GroupLayout]) -> float:
    """``max_g ‖g_g‖ / √|g|``: zero is optimal iff every ``‖g_g‖ <= t·√|g|``."""
    out = 0.0
    for g, layout in zip(grads, layouts, strict=True):
        ratio = group_norms(g.detach(), layout) / _weights(layout, g)
        out = max(out, float(ratio.max()))
    return out


def sparse_group_zero_threshold(
    grads: Sequence[Tensor], layouts: Sequence[GroupLayout], *, l1_ratio: float, iterations: int = 80
) -> float:
    """Smallest t with ``‖S(g_g, tρ)‖ <= t(1 − ρ)√|g|`` for every group (S: soft-threshold).

    The left side falls and the right side rises with t, so each group's root is found
    by bisection (vectorized over groups).
    """
    if l1_ratio >= 1.0:
        return l1_zero_threshold(grads)
    if l1_ratio <= 0.0:
        return group_zero_threshold(grads, layouts)
    out = 0.0
    for g, layout in zip(grads, layouts, strict=True):
        g = g.detach()
        low = torch.zeros(layout.n_groups, dtype=g.dtype, device=g.device)
        high = torch.full_like(low, float(g.abs().max()) / l1_ratio)  # S(g, high·ρ) = 0
        weights = torch.as_tensor(_weights(layout, g), dtype=g.dtype, device=g.device)
        for _ in range(iterations):
            mid = (low + high) / 2
            soft = torch.nn.functional.relu(g.abs() - _expand(mid, g, layout) * l1_ratio)
            feasible = group_norms(soft, layout) <= mid * (1.0 - l1_ratio) * weights
            high = torch.where(feasible, mid, high)
            low = torch.where(feasible, low, mid)
        out = max(out, float(high.max()))
    return out


# --------------------------------------------------------------------------- proxes
def _softshrink_(x: Tensor, threshold: float | Tensor) -> None:
    """``x ← sign(x)·max(|x| − t, 0)`` in place, ``t ≥ 0`` a float, a device scalar or
    one threshold per element."""
    if isinstance(threshold, Tensor):  # w − clamp(w, −t, t); a device scalar is never read back to the host
        x.sub_(torch.clamp(x, -threshold, threshold))
        return
    # one pass: softshrink is sign(v)·max(|v| − t, 0), written into its own input
    torch.ops.aten.softshrink.out(x, threshold, out=x)


def _is_scalar(step: Step) -> bool:
    return not isinstance(step, (ScaledStep, RootStep)) and (not isinstance(step, Tensor) or step.ndim == 0)


def _kernel_steps(tensors: Sequence[Tensor], steps: Steps) -> tuple[Any, dict] | None:
    """Which kernel module takes these steps, and how (see :mod:`shrinkage._triton`):
    the Triton kernels for CUDA tensors, the Numba kernels (:mod:`shrinkage._numba`) for
    per-element steps on the CPU; None where the torch code runs (neither installed,
    mixed kinds of step, a tensor either cannot take)."""
    from . import _numba, _triton

    on_cuda = _triton.supports(tensors)
    if not on_cuda and all(_is_scalar(s) for s in steps):
        return None  # (one step per tensor on the CPU: torch's prox is one pass already)
    if not isinstance(steps, RootSteps) and all(isinstance(s, RootStep) for s in steps):
        roots = [s for s in steps if isinstance(s, RootStep)]
        steps = RootSteps([r.numerator for r in roots], [r.square for r in roots], [r.eps for r in roots])
    plan: dict | None = None
    if isinstance(steps, RootSteps):  # Adam's come so: the numerator and ε vectors as they are
        plan = {"kind": 1, "numerators": steps.numerators, "eps": steps.eps, "states": steps.squares}
    elif all(isinstance(s, ScaledStep) for s in steps):
        scaled = [s for s in steps if isinstance(s, ScaledStep)]
        states = [d.denominator for d in scaled]
        plan = {"kind": 2, "numerators": [d.numerator for d in scaled], "eps": [0.0] * len(scaled), "states": states}
    elif all(_is_scalar(s) for s in steps):
        plan = {"kind": 0, "numerators": list(steps), "eps": [0.0] * len(steps), "states": []}
    elif all(isinstance(s, Tensor) and s.shape == x.shape for s, x in zip(steps, tensors)):
        plan = {"kind": 3, "numerators": [1.0] * len(steps), "eps": [0.0] * len(steps), "states": list(steps)}
    if plan is None:
        return None
    # (Numba is imported only here, for steps its kernels take)
    backend: Any = _triton if on_cuda else _numba if _numba.supports(tensors) else None
    if backend is None or (plan["states"] and not backend.supports(plan["states"])):
        return None
    return backend, plan


def kernels_apply(tensors: Sequence[Tensor], steps: Steps, layouts: Sequence[GroupLayout] | None = None) -> bool:
    """Whether the proxes here run these tensors through the kernels (Triton on CUDA,
    Numba on the CPU). The CUDA kernels read half-precision weights, compute in float32
    and round once when they store; the CPU kernels take float32 and float64 only."""
    return _kernel_steps(tensors, steps) is not None and (layouts is None or all(g.labels is None for g in layouts))


def elastic_shrink_(tensors: Sequence[Tensor], *, step: Steps, l1: float, l2: float) -> None:
    """Prox of ``s·(l1·Σ|w| + l2·Σw²)``: soft-threshold by ``l1·s``, then divide by ``1 + 2·l2·s``.

    The prox of L1 (``l2=0``), L2 (``l1=0``) and elastic net in one pass: exact zeros
    inside ``[−l1·s, l1·s]``. ``step`` holds one step per tensor (module docstring).
    With a per-element step ``a / d`` it is computed in the optimizer's metric as
    ``soft(w·d, l1·a) / (d + 2·l2·a)`` (d > 0), which needs no threshold tensor.
    """
    kernel = _kernel_steps(tensors, step)
    if kernel is not None:
        backend, plan = kernel
        if backend.elementwise_prox_(tensors, l1=l1, l2=l2, **plan):
            return
    scratch = _scratch(tensors, step)
    for x, s in zip(tensors, step, strict=True):
        if isinstance(s, (ScaledStep, RootStep)):
            a = s.numerator
            # a RootStep's denominator is formed in the scratch (ours to change); a
            # ScaledStep's is the caller's, never written
            d = s.denominator_into(scratch) if isinstance(s, RootStep) else s.denominator
            x.mul_(d)
            if l1:
                _softshrink_(x, a * l1)
            if l2:
                d = d.add_(2.0 * (a * l2)) if isinstance(s, RootStep) else d + 2.0 * (a * l2)
            x.div_(d)
        elif _is_scalar(s):
            if l1:
                _softshrink_(x, s * l1)
            if l2:
                x.div_(1.0 + 2.0 * (s * l2))
        else:
            assert isinstance(s, Tensor)  # per-element steps
            if l1:
                _softshrink_(x, s * l1)
            if l2:
                x.div_(1.0 + 2.0 * (s * l2))


def _scratch(tensors: Sequence[Tensor], steps: Steps) -> Tensor | None:
    """One buffer for the RootSteps' denominators, reused tensor after tensor: on the
    CPU a new tensor per parameter costs page faults, often more than the arithmetic."""
    roots = [s.square for s in steps if isinstance(s, RootStep)]
    if not roots:
        return None
    low = roots[0].dtype in (torch.float16, torch.bfloat16)
    dtype = torch.float32 if low else roots[0].dtype
    if any(type(r) is not Tensor or r.dtype != roots[0].dtype or r.device != roots[0].device for r in roots):
        return None  # a DTensor shard (FSDP) makes its own
    return torch.empty(max(r.numel() for r in roots), dtype=dtype, device=roots[0].device)


def soft_threshold_(tensors: Sequence[Tensor], *, threshold: Steps) -> None:
    """Prox of ``t·Σ|w|``: ``w ← sign(w)·max(|w| − t, 0)``; exact zeros inside ``[−t, t]``.

    ``threshold`` holds one float, :class:`RootStep`, :class:`ScaledStep` or tensor per
    tensor (:func:`elastic_shrink_` with ``l1=1, l2=0``).
    """
    elastic_shrink_(tensors, step=threshold, l1=1.0, l2=0.0)


def ridge_shrink_(tensors: Sequence[Tensor], *, step: Steps) -> None:
    """Prox of ``s·Σw²``: ``w ← w / (1 + 2s)``; shrinks, never reaches zero.

    With a per-element step ``a / d``: ``w·d / (d + 2a)`` (:func:`elastic_shrink_` with
    ``l1=0, l2=1``).
    """
    elastic_shrink_(tensors, step=step, l1=0.0, l2=1.0)


#: The most Newton iterations of a group prox with per-element steps (:func:`group_shrink_`)
NEWTON_ITERATIONS = 100


def group_shrink_(
    tensors: Sequence[Tensor],
    layouts: Sequence[GroupLayout],
    *,
    step: Steps,
    scale: float = 1.0,
    l1: float = 0.0,
    max_iter: int = NEWTON_ITERATIONS,
) -> None:
    """Prox of ``scale·s·Σ_g √|g|·‖w_g‖``: whole groups become exactly zero.

    With one step ``s`` per tensor this is the closed form
    ``w_g ← w_g·max(0, 1 − s√|g| / ‖w_g‖)``. With per-element steps ``s_i`` it is the
    prox in the metric ``diag(1/s)``::

        argmin_x  Σ_i (x_i − w_i)² / (2 s_i) + √|g|·‖x‖

    which is zero when ``‖w/s‖ ≤ √|g|`` and otherwise ``x_i = w_i·r / (r + c_i)`` with
    ``c_i = s_i√|g|`` and ``r = ‖x‖`` the root of ``Σ_i w_i² / (r + c_i)² = 1``. That
    root is found by Newton's method on ``(Σ_i w_i²/(r + c_i)²)^(−1/2) − 1``, which is
    concave and increasing in r, so the iterates rise monotonically to the root from
    r = 0 (one iteration when all s_i are equal). ``scale`` (the penalty's λ) multiplies
    every step.

    ``l1 > 0`` first soft-thresholds by ``l1·s`` (:func:`elastic_shrink_`): the prox of
    the sparse group lasso, in the same pass in the kernels.
    """
    if scale == 0.0:  # no group part (a sparse group lasso with l1_ratio=1): the soft threshold alone
        if l1:
            elastic_shrink_(tensors, step=step, l1=l1, l2=0.0)
        return
    # the kernels (on CUDA one Triton program per group, its Newton root in registers;
    # on the CPU one Numba pass per Newton iteration) for tensors whose groups are plain
    # rows or columns
    plain = [i for i, layout in enumerate(layouts) if layout.labels is None]
    subset = step if len(plain) == len(tensors) else [step[i] for i in plain]  # (keeps RootSteps)
    kernel = _kernel_steps([tensors[i] for i in plain], subset) if plain else None
    launched = False
    if kernel is not None:
        backend, plan = kernel
        launched = backend.group_prox_(
            [tensors[i] for i in plain],
            [_group_shape(tensors[i], layouts[i]) for i in plain],
            [float(layouts[i].weights) for i in plain],
            scale=scale,
            l1=l1,
            max_iter=max_iter,
            **plan,
        )
    done = set(plain) if launched else set()
    if l1 and len(done) < len(tensors):
        rest = [i for i in range(len(tensors)) if i not in done]
        elastic_shrink_([tensors[i] for i in rest], step=[step[i] for i in rest], l1=l1, l2=0.0)
    for i, (x, layout, s) in enumerate(zip(tensors, layouts, step, strict=True)):
        if i in done:
            continue
        if not _is_scalar(s):
            _group_shrink_scaled_(x, layout, s, scale=scale, max_iter=max_iter)
            continue
        assert not isinstance(s, (ScaledStep, RootStep))
        if not isinstance(s, Tensor) and float(s) * scale == 0.0:
            continue
        # factor = max(0, 1 − s√|g|/‖w_g‖); a zero group gives −inf, then 0. A true
        # division (torch computes float / tensor as a reciprocal times the float), so
        # that ‖w_g‖ = s√|g| gives exactly 0.
        norms = group_norms(x, layout)
        threshold = torch.as_tensor((s * scale) * _weights(layout, norms), dtype=norms.dtype, device=norms.device)
        factor = torch.rsub(torch.div(threshold, norms), 1.0).clamp_min_(0.0)
        x.mul_(_expand(factor, x, layout))


def _group_shape(x: Tensor, layout: GroupLayout) -> tuple[int, int, int, int]:
    """``x`` seen as ``(models, outer, groups, inner)``, its groups the slices of the third axis."""
    axis = layout.batch + layout.axis
    return (
        math.prod(x.shape[: layout.batch]),
        math.prod(x.shape[layout.batch : axis]),
        x.shape[axis],
        math.prod(x.shape[axis + 1 :]),
    )


_DEVICE_NEWTON_ITERATIONS = 30

#: How often the scaled group prox may stop the host on an accelerator to test its
#: Newton iterations for convergence: 0 (the default) never — a training step must not
#: wait on the device. Code that waits on the device every step anyway (the batched CV
#: engine reads its early-stopping state each epoch) sets it with :func:`device_checks`.
_DEVICE_CHECKS: ContextVar[int] = ContextVar("newton_device_checks", default=0)


@contextmanager
def device_checks(every: int) -> Iterator[None]:
    """Within the block, the scaled group prox on an accelerator tests its Newton
    iterations for convergence every ``every`` iterations (a host sync each time)
    instead of running a fixed count: a few iterations usually suffice."""
    token = _DEVICE_CHECKS.set(every)
    try:
        yield
    finally:
        _DEVICE_CHECKS.reset(token)


def _group_shrink_scaled_(x: Tensor, layout: GroupLayout, step: Step, *, scale: float, max_iter: int) -> None:
    # Every pass over the tensor counts on the CPU: scratch tensors are reused, and the
    # first evaluation needs only S (whether each group survives).
    weights = _weights(layout, x)  # √|g| per group
    weights = weights if isinstance(weights, float) else _expand(weights, x, layout)
    # c_i = s_i·√|g|, the per-element threshold (a RootStep's denominator is ours to overwrite)
    if isinstance(step, (ScaledStep, RootStep)):
        d = step.denominator
        c = torch.div((step.numerator * scale) * weights, d, out=d if isinstance(step, RootStep) else None)
    else:
        assert isinstance(step, Tensor)  # per-element steps
        c = (step * scale) * weights
    if layout.labels is None and x.numel() == math.prod(x.shape[: layout.batch]) * layout.n_groups:
        # groups of one entry (a single output's hidden units): the root is |w| − c, and
        # the prox the soft threshold by c, without Newton's passes
        _softshrink_(x, c)
        return
    x.mul_(_scaled_group_factor(x, c, layout, max_iter))


def _numpy_viewable(x: Tensor) -> bool:
    """Whether ``x`` is a plain CPU tensor of a dtype NumPy has (float32, float64)."""
    return x.device.type == "cpu" and type(x) in (Tensor, torch.nn.Parameter) and x.dtype in _NUMPY_DTYPES


_NUMPY_DTYPES = (torch.float32, torch.float64)


def _scaled_group_factor(x: Tensor, c: Tensor, layout: GroupLayout, max_iter: int) -> Tensor:
    """The scaled group prox's factor ``r/(r + c_i)`` of every entry of ``x``,
    its Newton roots found with NumPy's arithmetic on CPU tensors (a few µs less per
    operation than torch's: the prox of a small tabular network is all per-operation
    cost), with torch's elsewhere. The arrays are laid out ``(models, columns, entries)``,
    each column's entries contiguous, so that a group's sums are reductions over the last
    axis (and over its columns, for user groups): on a small stack's first layer, the
    factor in 60 % of the time its sums over the weight's own strided axes took."""
    models, outer, columns, inner = _group_shape(x, layout)
    on_host = _numpy_viewable(x)
    xp: Any = np if on_host else torch

    def arranged(t: Tensor) -> Any:  # (models, columns, entries), contiguous (a view of t where it is already)
        a: Any = t.detach().numpy() if on_host else t
        a = a.reshape(models, outer, columns, inner).swapaxes(1, 2)
        return (np.ascontiguousarray(a) if on_host else a).reshape(models, columns, outer * inner)

    w2, cs = arranged(x), arranged(c)
    w2 = xp.multiply(w2, w2)  # w², never written: cs and w2 may be views of c and x
    one_hot: Any = None  # user groups: (columns, groups) of 0/1
    if layout.labels is not None:
        eye = torch.eye(layout.n_groups, dtype=x.dtype, device=x.device)
        one_hot = eye[layout.labels.to(x.device)]
        one_hot = one_hot.numpy() if on_host else one_hot

    add: Any = np.add.reduce if on_host else torch.sum  # (the ufunc: a few µs less than .sum)

    def group_sum(a: Any) -> Any:  # (models, groups)
        per_column = add(a, -1)
        return per_column if one_hot is None else per_column @ one_hot

    def per_entry(r: Any) -> Any:  # a group's value on each entry, broadcast
        return (r if one_hot is None else r @ one_hot.T)[:, :, None]

    inverse = xp.reciprocal(cs)  # scratch, reused by every pass
    work = xp.multiply(w2, inverse)
    total = group_sum(w2)
    keep = group_sum(xp.multiply(work, inverse, out=work)) > 1.0  # ‖w/s‖ > √|g|: the group survives
    # Start from a lower bound of the root (Jensen on 1/z²): r ≥ ‖w‖ − Σw²c/Σw²,
    # exact when all c_i are equal; Newton then rises monotonically to the root.
    weighted_c = group_sum(xp.multiply(w2, cs, out=work)) / xp.where(keep, total, 1.0)
    radius = xp.where(keep, xp.clip(xp.sqrt(total) - weighted_c, 0.0, None), 0.0)
    tolerance = 16 * torch.finfo(x.dtype).eps
    # on an accelerator, testing convergence would stop the host at every iteration:
    # there a fixed count runs instead (Newton from below converges quadratically; at
    # the root its step is 0, so extra iterations change nothing)
    every = 1 if x.device.type == "cpu" else _DEVICE_CHECKS.get()
    previous = None
    for iteration in range(max_iter if every else min(max_iter, _DEVICE_NEWTON_ITERATIONS)):
        # per group: S = Σ w²/(r + c)² and T = Σ w²/(r + c)³
        xp.reciprocal(xp.add(cs, per_entry(radius), out=inverse), out=inverse)
        xp.multiply(xp.multiply(w2, inverse, out=work), inverse, out=work)
        s_sum = group_sum(work)
        t_sum = group_sum(xp.multiply(work, inverse, out=work))
        # Newton step on S^(-1/2) − 1: r ← r + S(√S − 1)/T
        delta = xp.where(keep, s_sum * (xp.sqrt(s_sum) - 1.0) / xp.where(keep, t_sum, 1.0), 0.0)
        radius += delta
        if every and (iteration + 1) % every == 0:
            if not bool((delta > tolerance * radius).any()):
                break
            if previous is not None and _converged_next(previous, delta, radius, tolerance):
                break
        previous = delta
    expanded = per_entry(radius)
    factor = xp.divide(expanded, xp.add(cs, expanded, out=inverse), out=inverse)
    factor = torch.from_numpy(factor) if on_host else factor
    return factor.reshape(models, columns, outer, inner).transpose(1, 2).reshape(x.shape)


def _converged_next(previous, delta, radius, tolerance: float) -> bool:
    """Whether the next Newton step would be below the tolerance in every group, by
    quadratic convergence (|δ_next| ≈ K·δ², K ≈ |δ|/δ_previous², with a margin of 4):
    the step that would only confirm convergence is skipped. A group whose step is
    already below the tolerance (rounding noise included) counts as converged. NumPy
    arrays or tensors."""
    limit = tolerance * radius
    step, before = abs(delta), abs(previous)
    moving = before > limit
    rate = step / (before * before + (before == 0))  # (a group that did not move: any finite rate)
    contracting = moving & (step < 0.5 * before) & (4.0 * rate * step * step <= limit)
    return bool(((step <= limit) | contracting).all())


# ------------------------------------------------------------------ hierarchical prox
def hier_prox_(
    skip: Tensor, first: Tensor, *, step: float | Tensor, M: float | Tensor, ratio: float | Tensor = 1.0
) -> None:
    """LassoNet's hierarchical prox (Lemhadri et al., JMLR 2021, Algorithm 2), in place.

    For each input feature j, with ``b = skip[:, j]`` (its weights in a linear skip
    connection, one per output) and ``w = first[:, j]`` (its weights into the first
    hidden layer), solves::

        argmin_{b, w}  ½‖b − b₀‖² + ½‖w − w₀‖² + s·‖b‖₂   subject to  ‖w‖∞ <= M·‖b‖₂

    A feature may reach the hidden layers only as much as its linear part uses it, and
    leaves the model as a whole. The solution shrinks ``b₀`` radially to ``‖b‖ = r`` and
    clips ``w₀`` at ``M·r``, where, with ``|w₀|`` sorted decreasingly and ``m`` the number
    of its entries above the clip, ``r = max(0, ‖b₀‖ − s + M·Σ_{i≤m}|w₀|₍ᵢ₎) / (1 + m·M²)``
    (the stationary point of a convex function of r: the unique consistent m is found
    for all features at once). ``skip`` has shape ``(outputs, features)`` and ``first``
    ``(hidden, features)``.

    ``ratio`` is the first layer's step over the skip's, when they differ: the prox in
    the metric ``diag(1/s_skip, 1/s_first)`` is the plain one on ``w/√ratio`` with
    ``M/√ratio``, mapped back. ``step``, ``M`` and ``ratio`` may be 0-d tensors on the
    weights' device (an adaptive optimizer's mean step), which are never read back.
    """
    if skip.shape[1] != first.shape[1]:
        raise InputError(f"skip and first weights must share their input features, got {skip.shape} and {first.shape}")
    if isinstance(ratio, Tensor) or ratio != 1.0:
        root = ratio.sqrt() if isinstance(ratio, Tensor) else math.sqrt(ratio)
        first.div_(root)
        hier_prox_(skip, first, step=step, M=M / root)
        first.mul_(root)
        return
    hidden = first.shape[0]
    sorted_abs = first.abs().sort(dim=0, descending=True).values  # (K, p)
    prefix = torch.cat([torch.zeros_like(sorted_abs[:1]), sorted_abs.cumsum(dim=0)])  # Σ of the top m, m = 0..K
    m = torch.arange(hidden + 1, dtype=first.dtype, device=first.device).unsqueeze(1)  # (K+1, 1)
    norm_b = torch.linalg.vector_norm(skip, dim=0)  # (p,)
    radius = (norm_b - step + M * prefix).clamp_min(0.0) / (1.0 + m * M * M)  # (K+1, p)
    clip = M * radius
    # m is consistent when the (m+1)-th largest |w₀| lies below the clip (0 past the end)
    next_value = torch.cat([sorted_abs, torch.zeros_like(sorted_abs[:1])])
    index = (next_value <= clip).to(torch.int8).argmax(dim=0, keepdim=True)  # the first consistent m
    r = radius.gather(0, index)  # (1, p)
    scale = torch.where(norm_b > 0, r[0] / norm_b, torch.zeros_like(norm_b))
    skip.mul_(scale)
    first.copy_(first.sign() * torch.minimum(first.abs(), M * r))


def hier_zero_threshold(skip_grad: Tensor, first_grad: Tensor, *, M: float) -> float:
    """Smallest s at which zero is optimal for the hierarchical penalty:
    ``max_j ‖g_skip[:, j]‖₂ + M·‖g_first[:, j]‖₁``."""
    return float((torch.linalg.vector_norm(skip_grad, dim=0) + M * first_grad.abs().sum(dim=0)).max())

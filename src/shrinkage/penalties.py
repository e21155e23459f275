"""Penalty classes: thin, validated holders of λ (and ρ, groups) over :mod:`.functional`.

Every penalty has three faces, all for ``λ·R(w)`` over a list of tensors:

- :meth:`Penalty.value` — differentiable, for the loss (mode ``loss``) and for logging;
- :meth:`Penalty.add_grad_` — the same (sub)gradient added straight into ``.grad``
  (mode ``gradient``), equal to autograd of :meth:`Penalty.value`, 0 at exact zeros;
- :meth:`Penalty.prox_` — the proximal operator for a step the optimizer took
  (mode ``proximal``), which gives exact zeros.

Penalties don't know which tensors they touch (that is :mod:`.selection`) nor how they
reach the optimizer (that is :mod:`.regularizer`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from . import functional as F
from .validation import InputError, InputTypeError, check_choice, check_number, fail

__all__ = [
    "L1",
    "L2",
    "PENALTIES",
    "ElasticNet",
    "GroupLasso",
    "HierarchicalLasso",
    "Penalty",
    "SparseGroupLasso",
    "make_penalty",
]


#: Reference weights a penalty is centred on: ``"initial"`` (the weights when the
#: :class:`~shrinkage.Regularizer` is built), a state dict, or a module (its state dict).
Center = str | Mapping[str, Tensor] | nn.Module | None


def _check_center(center: Any) -> str | Mapping[str, Tensor] | None:
    """``None``, ``"initial"`` or a mapping of names to tensors (a module's state dict)."""
    rule = "None, 'initial', a state dict (name → tensor) or an nn.Module"
    if center is None or (isinstance(center, str) and center == "initial"):
        return center
    if isinstance(center, str):
        if center == "state_dict":
            raise InputError(
                "center='state_dict' marks a centre that was given as tensors (in get_config and "
                "Regularizer.to_dict); "
                "pass the tensors themselves: center=pretrained.state_dict()"
            )
        raise fail("center", rule, center)
    if isinstance(center, nn.Module):
        return center.state_dict()  # the module's own tensors: the Regularizer copies them when it binds
    if not isinstance(center, Mapping):
        raise fail("center", rule, center, kind=TypeError)
    for name, value in center.items():
        if not isinstance(value, Tensor):
            raise fail(f"center[{name!r}]", "a tensor", value, kind=TypeError)
    return center


class Penalty:
    """Base class: ``λ·R(w)`` with ``λ = lambda_ >= 0``.

    With ``center`` (reference weights ``w₀``, e.g. the pretrained ones) the penalty is
    ``λ·R(w − w₀)``: it acts on the change. :class:`L1`, :class:`L2`,
    :class:`ElasticNet`, :class:`GroupLasso` and :class:`SparseGroupLasso` take a
    ``center`` (:class:`HierarchicalLasso`, a constraint, does not). L2 centred on pretrained weights is L2-SP
    (keep fine-tuned weights near the pretrained ones); L1, elastic net and group lasso
    centred, in mode ``proximal``, make most of the change exactly zero (sparse
    fine-tuning). The :class:`~shrinkage.Regularizer` that binds the penalty copies
    ``w₀`` once, onto each parameter's device and dtype; the penalty itself keeps only
    what was given (``"initial"``, or the mapping).

    Subclasses set ``name`` and implement the three faces for a list of tensors plus the
    per-tensor ``layouts`` that :meth:`layouts` prepared (``None`` for element-wise
    penalties).
    """

    name: ClassVar[str]
    #: True when the penalty is in the L2 family and may be applied as decoupled decay.
    decouplable: ClassVar[bool] = False
    #: True when its tensors are bound together (their zero point is joint, not per tensor).
    coupled: ClassVar[bool] = False
    #: True when only the prox can apply it (a constraint no subgradient enforces).
    proximal_only: ClassVar[bool] = False
    #: True when its prox is exact for per-element (adaptive-optimizer) steps.
    exact_scaled_prox: ClassVar[bool] = True
    #: True when its prox is made of :mod:`shrinkage.functional`'s element-wise and group
    #: proxes, which run as one-pass kernels (see :func:`~shrinkage.functional.kernels_apply`).
    one_pass: ClassVar[bool] = True

    @property
    def sparsifying(self) -> bool:
        """Whether a large enough λ makes the weights exactly zero (not so for L2)."""
        return True

    def __init__(self, lambda_: float = 1e-3, center: Center = None):
        self.lambda_ = check_number("lambda_", lambda_, low=0.0)
        if self.lambda_ > _LARGEST_LAMBDA:  # the prox's thresholds λ·step are float32 numbers
            raise fail("lambda_", f"at most {_LARGEST_LAMBDA:.4g} (float32's largest number)", lambda_)
        self.center = _check_center(center)

    # -- structure -------------------------------------------------------------------
    def layouts(self, named: Sequence[tuple[str, Tensor]]) -> list[F.GroupLayout] | None:
        """Per-tensor group layouts (``None`` for element-wise penalties)."""
        return None

    # -- the three faces ---------------------------------------------------------------
    def value(self, tensors: Sequence[Tensor], layouts=None) -> Tensor:
        raise NotImplementedError

    def add_grad_(self, params: Sequence[Tensor], layouts=None) -> None:
        """Add ``λ·∂R`` into each parameter's ``.grad`` (which must exist)."""
        raise NotImplementedError

    def prox_(self, tensors: Sequence[Tensor], layouts=None, *, step: F.Steps) -> None:
        """Apply ``prox_{λ·s·R}`` in place, ``s`` the per-tensor (or per-element) step."""
        raise NotImplementedError

    def zero_threshold(self, grads: Sequence[Tensor], layouts=None) -> float:
        """The smallest λ at which all-zero weights satisfy the optimality condition.

        ``grads`` are the data loss's gradients with respect to the penalized tensors,
        taken where those tensors are zero: for a linear model this λ is the exact
        λ_max of a path. ``math.inf`` when no finite λ gives zeros (L2).
        """
        raise NotImplementedError

    # -- config ------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Plain-dict form, inverted by :func:`make_penalty`.

        A centre given as tensors appears as ``"center": "state_dict"`` (the tensors are
        not plain values); a :class:`~shrinkage.Regularizer`'s ``state_dict`` holds them.
        """
        config: dict[str, Any] = {"name": self.name, "lambda_": self.lambda_}
        if self.center is not None:
            config["center"] = self.center if isinstance(self.center, str) else "state_dict"
        return config

    @property
    def centered(self) -> bool:
        """Whether the penalty acts on the change ``w − w₀`` from reference weights."""
        return self.center is not None

    def with_lambda(self, lambda_: float) -> Penalty:
        """A copy of this penalty with another λ (what a path steps along); the same centre."""
        config = self.get_config()
        config.pop("center", None)
        copy = make_penalty({**config, "lambda_": lambda_})
        copy.center = self.center
        return copy

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self) or other.get_config() != self.get_config():
            return False
        assert isinstance(other, Penalty)
        # a centre given as tensors is the same centre only if it is the same mapping
        return isinstance(self.center, str | None) or other.center is self.center

    def __hash__(self) -> int:
        return hash(repr(self))


class L1(Penalty):
    """Lasso: ``λ·Σ|w|``. Proximal mode drives weights to exactly zero.

    Subgradient modes (``loss``, ``gradient``) use ``sign(w)`` and shrink weights but
    almost never land on zero: use ``mode="proximal"`` for sparsity.

    ``L1(λ, center=w₀)`` is ``λ·Σ|w − w₀|``: in mode ``proximal`` most of the change
    from the pretrained weights ``w₀`` stays exactly zero (sparse fine-tuning; ``center``
    as in :class:`Penalty`: ``"initial"``, a state dict or a module).

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([-2.0, 0.05, 1.0])
    >>> L1(0.1).value([w])
    tensor(0.3050)
    >>> with torch.no_grad():
    ...     L1(0.1).prox_([w], step=[1.0])
    >>> w
    tensor([-1.9000,  0.0000,  0.9000])
    """

    name = "l1"

    def value(self, tensors, layouts=None):
        return self.lambda_ * F.l1_value(tensors)

    def add_grad_(self, params, layouts=None):
        F.add_l1_grad_([p.grad for p in params], params, alpha=self.lambda_)

    def prox_(self, tensors, layouts=None, *, step):
        F.elastic_shrink_(tensors, step=step, l1=self.lambda_, l2=0.0)

    def zero_threshold(self, grads, layouts=None):
        return F.l1_zero_threshold(grads)


class L2(Penalty):
    """Ridge: ``λ·Σw²`` (no ½). Gradient ``2λw``.

    ``torch.optim.SGD(weight_decay=wd)`` is this penalty with ``λ = wd / 2`` in mode
    ``gradient``; ``torch.optim.AdamW(weight_decay=wd)`` is it with ``λ = wd / 2`` in mode
    ``decoupled``.

    ``L2(λ, center=w₀)`` is ``λ·Σ(w − w₀)²``, L2-SP (Li, Grandvalet & Davoine, 2018):
    fine-tuned weights kept near the pretrained ``w₀`` rather than near zero.
    """

    name = "l2"
    decouplable = True

    def value(self, tensors, layouts=None):
        return self.lambda_ * F.l2_value(tensors)

    def add_grad_(self, params, layouts=None):
        F.add_l2_grad_([p.grad for p in params], params, alpha=self.lambda_)

    def prox_(self, tensors, layouts=None, *, step):
        F.elastic_shrink_(tensors, step=step, l1=0.0, l2=self.lambda_)

    def zero_threshold(self, grads, layouts=None):
        return math.inf

    @property
    def sparsifying(self) -> bool:
        return False


class ElasticNet(Penalty):
    """Elastic net: ``λ·(ρ·Σ|w| + (1 − ρ)·Σw²)`` with ``ρ = l1_ratio`` in [0, 1].

    ``l1_ratio=1`` is :class:`L1` and ``l1_ratio=0`` is :class:`L2` with the same λ.
    scikit-learn's ``ElasticNet(alpha=a, l1_ratio=r)`` minimizes
    ``(1/2n)‖y − Xw‖² + a·r·‖w‖₁ + (a·(1 − r)/2)·‖w‖²``; with a mean-squared-error data
    loss (twice sklearn's data term) that is ``λ = a·(1 + r)`` and ``ρ = 2r / (1 + r)``
    (:func:`shrinkage.convert.from_sklearn_enet` does the conversion).
    """

    name = "elasticnet"

    def __init__(self, lambda_: float = 1e-3, l1_ratio: float = 0.5, center: Center = None):
        super().__init__(lambda_, center)
        self.l1_ratio = check_number("l1_ratio", l1_ratio, low=0.0, high=1.0)

    def get_config(self):
        return {**super().get_config(), "l1_ratio": self.l1_ratio}

    def value(self, tensors, layouts=None):
        rho = self.l1_ratio
        return self.lambda_ * (rho * F.l1_value(tensors) + (1.0 - rho) * F.l2_value(tensors))

    def add_grad_(self, params, layouts=None):
        grads = [p.grad for p in params]
        F.add_elastic_grad_(grads, params, l1=self.lambda_ * self.l1_ratio, l2=self.lambda_ * (1.0 - self.l1_ratio))

    def prox_(self, tensors, layouts=None, *, step):
        # prox of ρ|·| + (1−ρ)(·)²: soft-threshold by sρ, then divide by 1 + 2s(1−ρ)
        F.elastic_shrink_(tensors, step=step, l1=self.lambda_ * self.l1_ratio, l2=self.lambda_ * (1.0 - self.l1_ratio))

    def zero_threshold(self, grads, layouts=None):
        # the L2 part has zero gradient at 0: only λρ·Σ|w| must cover g
        rho = self.l1_ratio
        return F.l1_zero_threshold(grads) / rho if rho > 0 else math.inf

    @property
    def sparsifying(self) -> bool:
        return self.l1_ratio > 0


#: The named group layouts; "channel" is "input" and "filter" is "unit" under the names a
#: CNN user looks for.
_GROUP_NAMES = ("input", "unit", "channel", "filter")


_LARGEST_LAMBDA = float(torch.finfo(torch.float32).max)
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _whole(value: Any) -> bool:
    """An integer: Python's, NumPy's, or a 0-d integer tensor (not a bool)."""
    if isinstance(value, Tensor):
        return value.ndim == 0 and value.dtype in _INTEGER_DTYPES
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_groups(groups: Any) -> str | tuple[tuple[int, ...], ...]:
    if isinstance(groups, str):
        return check_choice("groups", groups, _GROUP_NAMES)
    rule = "'input', 'unit' or a list of lists of column indices (or the conv names 'channel', 'filter')"
    try:
        members = [list(g) for g in groups]
    except TypeError:
        raise fail("groups", rule, groups, kind=TypeError) from None
    # whole numbers only: int(0.5) would quietly make column 0 of a column "0.5"
    if not all(_whole(i) for g in members for i in g):
        raise fail("groups", rule + " (whole numbers)", groups, kind=TypeError)
    parsed = tuple(tuple(int(i) for i in g) for g in members)
    if not parsed or not all(parsed):
        raise fail("groups", rule + " (none empty)", groups)
    return parsed


class GroupLasso(Penalty):
    """Group lasso: ``λ·Σ_g √|g|·‖w_g‖₂``; the prox zeroes whole groups.

    Parameters
    ----------
    lambda_ : float, default 1e-3
        Strength λ >= 0.
    groups : {"input", "unit", "channel", "filter"} or list of lists of int, default "input"
        For a weight ``W`` of shape ``(out, in, *kernel)``: ``"input"`` makes one group
        per column (an input feature or input channel: a zero column removes that input
        from the layer), ``"unit"`` one group per row (an output unit or channel: a zero
        row kills that unit), and a list of column-index lists groups columns together
        (e.g. the one-hot columns of one categorical feature); it must partition the
        columns. ``|g|`` is the number of weights in the group.

        ``"filter"`` and ``"channel"`` are the same layouts under a CNN's names, for any
        weight with ``ndim >= 2``: ``"filter"`` is ``"unit"`` (group ``W[o]``, one
        filter of ``in·k₁·k₂`` weights for a ``Conv2d``: a zero filter is a dead output
        channel that :func:`~shrinkage.prune.prune` removes) and ``"channel"`` is
        ``"input"`` (group ``W[:, c]``, the ``out·k₁·k₂`` weights that read input
        channel ``c``). The name is kept as given (:meth:`get_config`).

    Examples
    --------
    >>> import torch
    >>> w = torch.ones(2, 3, 2, 2)  # Conv2d(3, 2, kernel_size=2): 2 filters of 12 weights
    >>> w[1] *= 0.05  # filter norms √12 ≈ 3.46 and 0.17
    >>> penalty = GroupLasso(1.0, groups="filter")
    >>> with torch.no_grad():  # step 0.1: the threshold is 0.1·√12 ≈ 0.35 per filter
    ...     penalty.prox_([w], penalty.layouts([("weight", w)]), step=[0.1])
    >>> [round(float(n), 4) for n in w.flatten(1).norm(dim=1)]  # filter 1 is exactly zero
    [3.1177, 0.0]
    """

    name = "group"

    def __init__(self, lambda_: float = 1e-3, groups: str | Sequence[Sequence[int]] = "input", center: Center = None):
        super().__init__(lambda_, center)
        self.groups = _check_groups(groups)

    def get_config(self):
        groups = self.groups if isinstance(self.groups, str) else [list(g) for g in self.groups]
        return {**super().get_config(), "groups": groups}

    def layouts(self, named):
        out = []
        for name, tensor in named:
            try:
                out.append(F.group_layout(tensor.shape, self.groups, device=tensor.device))
            except ValueError as error:
                raise InputError(f"{type(self).__name__} on parameter {name!r}: {error}") from None
        return out

    def value(self, tensors, layouts=None):
        return self.lambda_ * F.group_value(tensors, layouts)

    def add_grad_(self, params, layouts=None):
        F.add_group_grad_([p.grad for p in params], params, layouts, alpha=self.lambda_)

    @property
    def _shrink_scales(self) -> tuple[float, float]:
        """``(scale, l1)`` of the prox: :func:`~shrinkage.functional.group_shrink_`'s arguments."""
        return self.lambda_, 0.0

    def prox_(self, tensors, layouts=None, *, step):
        scale, l1 = self._shrink_scales
        F.group_shrink_(tensors, layouts, step=step, scale=scale, l1=l1)

    def zero_threshold(self, grads, layouts=None):
        return F.group_zero_threshold(grads, layouts)


class SparseGroupLasso(GroupLasso):
    """Sparse group lasso: ``λ·(ρ·Σ|w| + (1 − ρ)·Σ_g √|g|·‖w_g‖₂)``, ``ρ = l1_ratio``.

    Zeros whole groups and single weights inside the surviving groups. The prox is the
    soft-threshold by ``sρ`` followed by the group shrink by ``s(1 − ρ)`` (exact, also
    with per-element steps). ``groups`` is as in :class:`GroupLasso`, the conv names
    ``"filter"`` and ``"channel"`` included.
    """

    name = "sparse_group"

    def __init__(
        self,
        lambda_: float = 1e-3,
        l1_ratio: float = 0.5,
        groups: str | Sequence[Sequence[int]] = "input",
        center: Center = None,
    ):
        super().__init__(lambda_, groups, center)
        self.l1_ratio = check_number("l1_ratio", l1_ratio, low=0.0, high=1.0)

    def get_config(self):
        return {**super().get_config(), "l1_ratio": self.l1_ratio}

    def value(self, tensors, layouts=None):
        rho = self.l1_ratio
        return self.lambda_ * (rho * F.l1_value(tensors) + (1.0 - rho) * F.group_value(tensors, layouts))

    def add_grad_(self, params, layouts=None):
        grads = [p.grad for p in params]
        F.add_l1_grad_(grads, params, alpha=self.lambda_ * self.l1_ratio)
        F.add_group_grad_(grads, params, layouts, alpha=self.lambda_ * (1.0 - self.l1_ratio))

    @property
    def _shrink_scales(self) -> tuple[float, float]:
        return self.lambda_ * (1.0 - self.l1_ratio), self.lambda_ * self.l1_ratio

    def zero_threshold(self, grads, layouts=None):
        return F.sparse_group_zero_threshold(grads, layouts, l1_ratio=self.l1_ratio)


class HierarchicalLasso(Penalty):
    """LassoNet's hierarchical penalty: ``λ·Σ_j ‖b_j‖₂`` subject to ``‖W₁[:, j]‖∞ <= M·‖b_j‖₂``.

    For a network with a linear skip connection (:class:`~shrinkage.models.SkipMLP`),
    ``b_j`` is input j's column of the skip weight and ``W₁[:, j]`` its column of the
    first hidden layer: a feature reaches the hidden layers only as much as its linear
    part uses it, so features leave the whole model at once, and ``M`` bounds how
    nonlinear a feature may be (``M → 0``: a linear model; ``M → ∞``: no hierarchy).
    Lemhadri, Ruan, Abraham & Tibshirani, *LassoNet*, JMLR 22 (2021); the prox is their
    Algorithm 2 (:func:`shrinkage.functional.hier_prox_`).

    Select exactly the two weights (their names are ``skip`` and ``first``). Only mode
    ``proximal`` can enforce the constraint. The prox takes one step per tensor: exact
    with SGD (also with a learning rate per tensor); with adaptive optimizers it uses
    each tensor's mean per-element step (a warning says so).
    """

    name = "hierarchical"
    coupled = True
    one_pass = False
    proximal_only = True
    exact_scaled_prox = False

    def __init__(self, lambda_: float = 1e-3, M: float = 10.0, skip: str = "skip.weight", first: str = "body.0.weight"):
        super().__init__(lambda_)
        self.M = check_number("M", M, low=0.0, low_open=True)
        if not isinstance(skip, str) or not isinstance(first, str):
            raise fail("skip/first", "parameter names", (skip, first), kind=TypeError)
        self.skip, self.first = skip, first

    def get_config(self):
        return {**super().get_config(), "M": self.M, "skip": self.skip, "first": self.first}

    def layouts(self, named):
        names = [n for n, _ in named]
        if sorted(names) != sorted([self.skip, self.first]):
            raise InputError(
                f"HierarchicalLasso must select exactly the weights {self.skip!r} and {self.first!r}, got {names}"
            )
        shapes = {n: t.shape for n, t in named}
        if len(shapes[self.skip]) != 2 or len(shapes[self.first]) != 2 or shapes[self.skip][1] != shapes[self.first][1]:
            raise InputError(f"HierarchicalLasso needs 2-D weights with the same input features, got {dict(shapes)}")
        return ["skip" if n == self.skip else "first" for n in names]  # each tensor's role

    @staticmethod
    def _pair(tensors, roles):
        by_role = dict(zip(roles, tensors))
        return by_role["skip"], by_role["first"]

    def value(self, tensors, layouts=None):
        skip, _ = self._pair(tensors, layouts)
        dtype = torch.promote_types(skip.dtype, torch.float32)
        return self.lambda_ * torch.linalg.vector_norm(skip, dim=0, dtype=dtype).sum()

    def add_grad_(self, params, layouts=None):
        raise InputError("HierarchicalLasso is a constraint that only mode='proximal' enforces")

    def prox_(self, tensors, layouts=None, *, step):
        skip, first = self._pair(tensors, layouts)
        s_skip, s_first = (_mean_step(s) for s in self._pair(step, layouts))
        F.hier_prox_(skip, first, step=self.lambda_ * s_skip, M=self.M, ratio=s_first / s_skip)

    def zero_threshold(self, grads, layouts=None):
        g_skip, g_first = self._pair(grads, layouts)
        return F.hier_zero_threshold(g_skip, g_first, M=self.M)


def _mean_step(step) -> float | Tensor:
    """One step for a tensor: the float, or the mean of per-element steps (a 0-d tensor
    on their device: never read back to the host)."""
    if isinstance(step, (F.ScaledStep, F.RootStep)):
        return (step.numerator / step.denominator).mean()
    if isinstance(step, Tensor):
        return step.mean()
    return float(step)


PENALTIES: dict[str, type[Penalty]] = {
    cls.name: cls for cls in (L1, L2, ElasticNet, GroupLasso, SparseGroupLasso, HierarchicalLasso)
}


def make_penalty(spec: Penalty | str | dict[str, Any], **kwargs: Any) -> Penalty:
    """A penalty from an instance, a name (``"l1"``, …) with keyword arguments, or a config dict.

    >>> make_penalty("elasticnet", lambda_=0.01, l1_ratio=0.3)
    ElasticNet(lambda_=0.01, l1_ratio=0.3)
    >>> make_penalty({"name": "l1", "lambda_": 0.1})
    L1(lambda_=0.1)
    """
    if isinstance(spec, Penalty):
        return spec
    given: Any = spec  # the name, once a config dict is unpacked
    if isinstance(spec, dict):
        kwargs = {**{k: v for k, v in spec.items() if k != "name"}, **kwargs}
        given = spec.get("name")
    name = check_choice("penalty", given, PENALTIES)
    try:
        return PENALTIES[name](**kwargs)
    except TypeError as error:
        if "unexpected keyword" in str(error):
            raise InputTypeError(f"penalty {name!r} got an unknown argument: {error}") from None
        raise

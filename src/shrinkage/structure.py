"""Which inputs and units a sparse network still uses.

A zero weight matters through paths: an input feature is used only if some path of
non-zero weights leads from it to an output, and a hidden unit is dead when no path
goes through it. For a chain of ``nn.Linear`` layers with element-wise activations in
between (an MLP), this is exact and computed here; other models fall back to the
columns of their input weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .functional import GroupLayout, group_norms
from .validation import InputError, fail

__all__ = [
    "ELEMENTWISE",
    "SparsityReport",
    "TensorSparsity",
    "dead_units",
    "input_parameter_of",
    "input_parameters_of",
    "input_usage",
    "linear_chain",
    "path_masks",
    "reachable_inputs",
    "sparsity_report",
    "unwrap",
]


def unwrap(model: nn.Module) -> nn.Module:
    """The user's own module inside the wrappers that only rename it.

    ``torch.compile`` returns a module whose parameters are named ``_orig_mod.…``;
    ``DistributedDataParallel`` and ``DataParallel`` add ``module.``. The tensors are the
    same, so penalties select, report and prune by the names the user wrote.

    >>> net = nn.Sequential(nn.Linear(3, 2))
    >>> unwrap(nn.DataParallel(net)) is net
    True
    """
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if isinstance(inner, nn.Module):
            model = inner
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Tanhshrink,
    nn.Identity,
    nn.Dropout,
    nn.AlphaDropout,
)


def linear_chain(model: nn.Module) -> list[nn.Linear] | None:
    """The Linear layers of ``model`` if it is an ``nn.Sequential`` of Linear layers and
    element-wise modules (activations, dropout), else ``None``."""
    if not isinstance(model, nn.Sequential):
        return None
    layers = []
    for module in model:
        if isinstance(module, nn.Linear):
            layers.append(module)
        elif not isinstance(module, ELEMENTWISE):
            return None
    return layers or None


def path_masks(weights: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """For each layer boundary ``[inputs, hidden_1, …, outputs]``, as boolean vectors:
    which units some input reaches through non-zero weights, and which reach some output.
    ``weights`` are the chain's Linear weights, each ``(out, in)``."""
    masks = [w.detach() != 0 for w in weights]
    forward = [masks[0].new_ones(masks[0].shape[1])]
    for m in masks:  # reachable from some input
        forward.append((m & forward[-1]).any(dim=1))
    backward = [masks[-1].new_ones(masks[-1].shape[0])]
    for m in reversed(masks):  # reaches some output
        backward.append((m & backward[-1][:, None]).any(dim=0))
    backward.reverse()
    return forward, backward


def _connected(weights: list[Tensor]) -> list[Tensor]:
    """Units on an input→output path of non-zeros, per boundary."""
    forward, backward = path_masks(weights)
    return [f & b for f, b in zip(forward, backward)]


def reachable_inputs(weights: list[Tensor]) -> list[int]:
    """Input columns with a path of non-zero weights to some output."""
    return _connected(weights)[0].nonzero().flatten().tolist()


def dead_units(weights: list[Tensor]) -> list[int]:
    """Per hidden layer, the number of units on no input→output path."""
    return [int((~alive).sum()) for alive in _connected(weights)[1:-1]]


def input_parameter_of(model: nn.Module, name: str | None = None) -> tuple[str, Tensor] | None:
    """The weight whose columns (axis 1) are the model's input features.

    ``name`` if given; else the model's own ``input_parameter`` attribute if it declares
    one (as :class:`~shrinkage.models.MLP` does); else its first parameter with
    ``ndim >= 2``; ``None`` for a model without one.
    """
    named = dict(model.named_parameters())
    if name is not None:
        if name not in named:
            raise fail("input_parameter", "the name of a parameter of the model", name)
        return name, named[name]
    declared = getattr(model, "input_parameter", None)
    if isinstance(declared, str) and declared in named:
        return declared, named[declared]
    return next(((n, p) for n, p in named.items() if p.ndim >= 2), None)


def input_usage(model: nn.Module) -> tuple[list[int], int] | None:
    """(input features used, dead hidden units) counted along paths of non-zero weights.

    Known for models that say (an ``input_usage()`` method, as
    :class:`~shrinkage.models.SkipMLP` has) and for chains of Linear layers with
    element-wise layers between them; ``None`` otherwise.
    """
    own_count = getattr(model, "input_usage", None)
    if callable(own_count):
        return own_count()
    chain = linear_chain(model)
    if chain is None:
        return None
    weights = [layer.weight for layer in chain]
    return reachable_inputs(weights), sum(dead_units(weights))


def input_parameters_of(model: nn.Module) -> list[tuple[str, Tensor]]:
    """Every weight that reads the input features by column: the model's own
    ``input_parameters`` names if it declares them (a :class:`~shrinkage.models.SkipMLP`
    has two), else :func:`input_parameter_of`. Zeroing column j of all of them removes
    feature j from the model."""
    declared = getattr(model, "input_parameters", None)
    named = dict(model.named_parameters())
    if declared and all(n in named for n in declared):
        return [(n, named[n]) for n in declared]
    found = input_parameter_of(model)
    return [] if found is None else [found]


@dataclass
class TensorSparsity:
    """Exact zeros in one penalized tensor."""

    name: str
    shape: tuple[int, ...]
    numel: int
    zeros: int
    zero_rows: int | None  # units whose incoming weights are all zero (ndim >= 2)
    zero_columns: int | None  # inputs the layer no longer reads (ndim >= 2)

    @property
    def fraction_zero(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass
class SparsityReport:
    """What the penalties did: exact zeros per tensor, zero groups, inputs still used."""

    tensors: list[TensorSparsity]
    groups: dict[str, tuple[int, int]]  # term label -> (zero groups, groups)
    input_parameter: str | None
    features_used: list[int]  # input columns with a path of non-zero weights to an output
    n_features: int
    dead_units: int  # hidden units on no input→output path (zero rows outside an MLP)
    feature_names: list[str] | None = None

    @property
    def numel(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def zeros(self) -> int:
        return sum(t.zeros for t in self.tensors)

    @property
    def fraction_zero(self) -> float:
        """Fraction of penalized weights exactly zero."""
        return self.zeros / self.numel if self.numel else 0.0

    @property
    def features_used_names(self) -> list[str]:
        if self.feature_names is None:
            return [str(j) for j in self.features_used]
        return [self.feature_names[j] for j in self.features_used]

    def to_dict(self) -> dict[str, Any]:
        return {
            "fraction_zero": self.fraction_zero,
            "zeros": self.zeros,
            "numel": self.numel,
            "dead_units": self.dead_units,
            "groups": {k: {"zero": z, "total": n} for k, (z, n) in self.groups.items()},
            "input_parameter": self.input_parameter,
            "n_features": self.n_features,
            "features_used": self.features_used,
            "features_used_names": self.features_used_names,
            "tensors": [
                {
                    "name": t.name,
                    "shape": list(t.shape),
                    "zeros": t.zeros,
                    "numel": t.numel,
                    "zero_rows": t.zero_rows,
                    "zero_columns": t.zero_columns,
                }
                for t in self.tensors
            ],
        }


@torch.no_grad()
def sparsity_report(
    model: nn.Module,
    terms: Sequence[Any],
    input_weight: tuple[str, Tensor] | None,
    input_parameter: str | None = None,
    feature_names: Sequence[str] | None = None,
) -> SparsityReport:
    """Exact zeros per penalized tensor, zero groups per term, input features still used.

    ``terms`` are a regularizer's bound terms (``label``, ``names``, ``params``,
    ``layouts``); ``input_weight`` is :func:`input_parameter_of`'s answer. Called by
    :meth:`Regularizer.sparsity() <shrinkage.Regularizer.sparsity>`.
    """
    tensors: dict[str, TensorSparsity] = {}
    groups: dict[str, tuple[int, int]] = {}
    for term in terms:
        for name, p in zip(term.names, term.params):
            if name not in tensors:
                tensors[name] = _tensor_sparsity(name, p)
        if term.layouts is not None and all(isinstance(lay, GroupLayout) for lay in term.layouts):
            norms = [group_norms(p, lay) for p, lay in zip(term.params, term.layouts)]
            groups[term.label] = (
                sum(int((n == 0).sum()) for n in norms),
                sum(n.numel() for n in norms),
            )
    used: list[int] = []
    n_features = 0
    input_name: str | None = None
    if input_weight is not None:
        input_name, weight = input_weight
        n_features = weight.shape[1]
        columns = weight.detach().abs().sum(dim=[d for d in range(weight.ndim) if d != 1])
        used = torch.nonzero(columns).flatten().tolist()
    usage = input_usage(model) if input_parameter is None else None
    if usage is not None:  # an MLP (or a model that says): count paths, not just columns
        used, dead = usage
    else:
        dead = sum(t.zero_rows or 0 for t in tensors.values())
    if feature_names is not None:
        feature_names = [str(f) for f in feature_names]
        if len(feature_names) != n_features:
            raise InputError(
                f"feature_names must have one name per input feature ({n_features}), got {len(feature_names)}"
            )
    return SparsityReport(list(tensors.values()), groups, input_name, used, n_features, dead, feature_names)


def _tensor_sparsity(name: str, p: Tensor) -> TensorSparsity:
    zero = p.detach() == 0
    rows = cols = None
    if p.ndim >= 2:
        rows = int(zero.flatten(1).all(dim=1).sum())
        cols = int(zero.transpose(0, 1).flatten(1).all(dim=1).sum())
    return TensorSparsity(name, tuple(p.shape), p.numel(), int(zero.sum()), rows, cols)

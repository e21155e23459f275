"""Which inputs and units a sparse network still uses.

A zero weight matters through paths: an input feature is used only if some path of
non-zero weights leads from it to an output, and a hidden unit is dead when no path
goes through it. For a chain of ``nn.Linear`` layers with element-wise activations in
between (an MLP), this is exact and computed here; other models fall back to the
columns of their input weight.

The *input weight* is the weight whose columns (axis 1) are the model's input features.
It is known only where it can be told from the model's structure
(:func:`input_parameter_of`); for other models — a transformer, whose first weight is a
token embedding or a free positional parameter — the report says which input features
are used is not applicable (``features_used is None``) rather than reporting positions
as features.
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
    "whole",
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


def whole(tensor: Tensor) -> Tensor:
    """The whole tensor: a sharded DTensor (FSDP) gathered from every rank — a
    collective, so every rank must call it — and any other tensor as it is."""
    full_tensor = getattr(tensor, "full_tensor", None)
    return full_tensor() if callable(full_tensor) else tensor


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
    nn.Dropout1d,
    nn.Dropout2d,
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
    return _inputs_of(_connected(weights))


def dead_units(weights: list[Tensor]) -> list[int]:
    """Per hidden layer, the number of units on no input→output path."""
    return _dead_of(_connected(weights))


def chain_usage(weights: list[Tensor]) -> tuple[list[int], int]:
    """:func:`reachable_inputs` and the sum of :func:`dead_units`, from one pass over the
    chain's weights."""
    alive = _connected(weights)
    return _inputs_of(alive), sum(_dead_of(alive))


def _inputs_of(alive: list[Tensor]) -> list[int]:
    return alive[0].nonzero().flatten().tolist()


def _dead_of(alive: list[Tensor]) -> list[int]:
    return [int((~units).sum()) for units in alive[1:-1]]


# A layer whose weight's axis 1 is its input (features of a Linear, channels of an
# ungrouped Conv): the first such layer of a model reads the model's input by column.
_INPUT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Modules before the input layer that keep input j at position j (element-wise maps,
# per-feature batch norm, flattening): the input layer's column j still reads input j.
_PASS_THROUGH: tuple[type[nn.Module], ...] = (*ELEMENTWISE, nn.Flatten, nn.modules.batchnorm._BatchNorm)


def _sole_child(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The one submodule that holds all of ``model``'s parameters (a LightningModule
    around its network, a wrapper with ``self.net``), or ``None``."""
    if next(model.parameters(recurse=False), None) is not None:
        return None
    holders = [(key, child) for key, child in model.named_children() if next(child.parameters(), None) is not None]
    return holders[0] if len(holders) == 1 else None


def _declared(model: nn.Module, attribute: str) -> list[str] | None:
    """The parameter names a model declares in ``attribute`` (``input_parameter``: one
    name; ``input_parameters``: several), if they are all its parameters."""
    value = getattr(model, attribute, None)
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        return None
    named = dict(model.named_parameters())
    return list(names) if all(n in named for n in names) else None


def _input_names(model: nn.Module, every: bool) -> list[str]:
    """Names of the weights that read ``model``'s input by column (the first only unless
    ``every``); ``[]`` where the structure does not say."""
    declared = (every and _declared(model, "input_parameters")) or _declared(model, "input_parameter")
    if declared:
        return declared
    if isinstance(model, _INPUT_LAYERS):
        weight = model.weight
        ungrouped = getattr(model, "groups", 1) == 1  # a grouped conv's axis 1 is a channel within its group
        ready = not isinstance(weight, nn.parameter.UninitializedParameter)
        return ["weight"] if ungrouped and ready else []
    inner: tuple[str, nn.Module] | None = None
    if isinstance(model, nn.Sequential):  # its first module that is not a pass-through reads the input
        inner = next(((k, m) for k, m in model.named_children() if not isinstance(m, _PASS_THROUGH)), None)
    else:
        inner = _sole_child(model)
    if inner is None:
        return []
    key, child = inner
    return [f"{key}.{name}" for name in _input_names(child, every)]


def input_parameter_of(model: nn.Module, name: str | None = None) -> tuple[str, Tensor] | None:
    """The weight whose columns (axis 1) are the model's input features, or ``None``
    where the model's structure does not say which it is.

    In order:

    1. ``name``, if given (an unknown name is an error);
    2. the model's own ``input_parameter`` attribute, if it declares one (as
       :class:`~shrinkage.models.MLP` and :class:`~shrinkage.models.SkipMLP` do);
    3. a ``Linear`` or ungrouped ``Conv1d/2d/3d`` model: its ``weight``;
    4. an ``nn.Sequential``: the input weight of its first module that is not
       element-wise (activations, dropout), ``Flatten`` or a batch norm — so an MLP's
       first ``Linear``, a CNN's first ``Conv``;
    5. a module whose parameters all live in one submodule (a LightningModule around
       its network): that submodule's input weight, by the rules above.

    Anything else — in particular a model whose first layer is an ``nn.Embedding`` or
    that holds free parameters of its own (a positional embedding, a CLS token), as a
    transformer does — has no input weight that can be identified: ``None``. Such a
    model may still declare one with an ``input_parameter`` attribute.

    Examples
    --------
    >>> mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    >>> input_parameter_of(mlp)[0]
    '0.weight'
    >>> input_parameter_of(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 1))) is None
    True
    """
    named = dict(model.named_parameters())
    if name is not None:
        if name not in named:
            raise fail("input_parameter", "the name of a parameter of the model", name)
        return name, named[name]
    found = _input_names(model, every=False)
    return (found[0], named[found[0]]) if found else None


def input_usage(model: nn.Module) -> tuple[list[int], int] | None:
    """(input features used, dead hidden units) counted along paths of non-zero weights.

    Known for models that say (an ``input_usage()`` method, as
    :class:`~shrinkage.models.SkipMLP` has), for chains of Linear layers with
    element-wise layers between them, and for a module whose parameters all live in one
    such submodule; ``None`` otherwise.
    """
    own_count = getattr(model, "input_usage", None)
    if callable(own_count):
        return own_count()
    chain = linear_chain(model)
    if chain is not None:
        return chain_usage([whole(layer.weight) for layer in chain])
    sole = _sole_child(model) if _declared(model, "input_parameter") is None else None
    return input_usage(sole[1]) if sole is not None else None


def input_parameters_of(model: nn.Module) -> list[tuple[str, Tensor]]:
    """Every weight that reads the input features by column: the model's own
    ``input_parameters`` names if it declares them (a :class:`~shrinkage.models.SkipMLP`
    has two), else :func:`input_parameter_of`'s; ``[]`` where the model's structure does
    not say. Zeroing column j of all of them removes feature j from the model."""
    named = dict(model.named_parameters())
    return [(n, named[n]) for n in _input_names(model, every=True)]


@dataclass
class TensorSparsity:
    """Exact zeros in one penalized tensor."""

    name: str
    shape: tuple[int, ...]
    numel: int
    zeros: int
    zero_rows: int | None  # units whose incoming weights are all zero (ndim >= 2)
    zero_columns: int | None  # inputs the layer no longer reads (ndim >= 2)
    #: True for a tensor under a centred penalty: the counts are of its change ``w − w₀``
    #: (entries, rows, columns left exactly at the reference weights).
    centered: bool = False

    @property
    def fraction_zero(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass
class SparsityReport:
    """What the penalties did: exact zeros per tensor, zero groups, inputs still used.

    Attributes
    ----------
    tensors : list of TensorSparsity
        Exact zeros in each penalized tensor.
    groups : dict
        Term label → (zero groups, groups), for group penalties.
    input_parameter : str or None
        The weight whose columns are the input features (see :func:`input_parameter_of`);
        ``None`` where the model's input layer cannot be identified.
    features_used : list of int or None
        Input features with a path of non-zero weights to an output (for an MLP), or
        whose column of the input weight is not all zero. ``None`` — not applicable —
        when there is no identified input weight (a transformer: its first weights are
        an embedding table and positional parameters, not one column per feature).
    n_features : int or None
        Number of input features (columns of the input weight); ``None`` likewise.
    dead_units : int
        Hidden units on no input→output path (for an MLP); elsewhere the penalized
        tensors' all-zero rows.
    feature_names : list of str, optional
        Names of the input features, when given.
    """

    tensors: list[TensorSparsity]
    groups: dict[str, tuple[int, int]]
    input_parameter: str | None
    features_used: list[int] | None
    n_features: int | None
    dead_units: int
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
    def features_used_names(self) -> list[str] | None:
        """Names of :attr:`features_used` (their indices as strings without names);
        ``None`` when not applicable."""
        if self.features_used is None:
            return None
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
                    "centered": t.centered,
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
    ``layouts``); ``input_weight`` is :func:`input_parameter_of`'s answer, and without
    one (``None``) ``features_used`` and ``n_features`` are ``None``: not applicable.
    Called by :meth:`Regularizer.sparsity() <shrinkage.Regularizer.sparsity>`.

    Raises
    ------
    ValueError
        ``feature_names`` do not have one name per input feature, or are given for a
        model whose input weight is not known.
    """
    tensors: dict[str, TensorSparsity] = {}
    groups: dict[str, tuple[int, int]] = {}
    for term in terms:
        # a centred penalty acts on the change w − w₀: its zeros are the unchanged entries
        targets = [whole(t) for t in term.targets(range(len(term.params)))]
        centered = term.centers is not None
        for name, target in zip(term.names, targets):
            if name not in tensors:
                tensors[name] = _tensor_sparsity(name, target)
                tensors[name].centered = centered
        if term.layouts is not None and all(isinstance(lay, GroupLayout) for lay in term.layouts):
            norms = [group_norms(target, lay) for target, lay in zip(targets, term.layouts)]
            groups[term.label] = (
                sum(int((n == 0).sum()) for n in norms),
                sum(n.numel() for n in norms),
            )
    used: list[int] | None = None
    n_features: int | None = None
    input_name: str | None = None
    usage = None
    if input_weight is not None:
        input_name, weight = input_weight[0], whole(input_weight[1])
        # weight: (out, in, *kernel); column j, summed over every other axis, is input j
        n_features = weight.shape[1]
        usage = input_usage(model) if input_parameter is None else None
        if usage is None:  # else an MLP (or a model that says): paths counted, not just columns
            columns = weight.detach().abs().sum(dim=[d for d in range(weight.ndim) if d != 1])
            used = torch.nonzero(columns).flatten().tolist()
    if usage is not None:
        used, dead = usage
    else:
        dead = sum(t.zero_rows or 0 for t in tensors.values())
    if feature_names is not None:
        if isinstance(feature_names, (str, bytes)):
            raise fail("feature_names", "a sequence of names, one per input feature", feature_names, kind=TypeError)
        feature_names = [str(f) for f in feature_names]
        if n_features is None:
            raise InputError(
                "feature_names need the model's input weight, which cannot be identified for this model; "
                "name it with Regularizer(..., input_parameter=...) or an input_parameter attribute on the model"
            )
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

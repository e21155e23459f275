"""Which inputs and units a sparse network still uses.

A zero weight matters through paths: an input feature is used only if some path of
non-zero weights leads from it to an output, and a hidden unit is dead when no path
goes through it. For a chain of ``nn.Linear`` layers with element-wise activations in
between (an MLP), this is exact and computed here; other models fall back to the
columns of their input weight.
"""

from __future__ import annotations

from torch import Tensor, nn

from .validation import fail

__all__ = [
    "ELEMENTWISE",
    "dead_units",
    "input_parameter_of",
    "input_parameters_of",
    "input_usage",
    "linear_chain",
    "path_masks",
    "reachable_inputs",
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

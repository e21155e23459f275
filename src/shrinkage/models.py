"""Small model builders used by the demo, paths, estimators and CLI.

Any ``nn.Module`` works with the regularizer; these exist so that the tools built on
top (paths, CV, estimators) can make fresh copies of a known architecture.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .validation import check_choice, check_int, check_number, fail

__all__ = ["ACTIVATIONS", "MLP", "SkipMLP"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "silu": nn.SiLU}


class MLP(nn.Sequential):
    """A multilayer perceptron: ``Linear → activation (→ Dropout)`` per hidden layer, then ``Linear``.

    Parameters
    ----------
    in_features : int
        Number of input features (columns of the first weight).
    hidden : sequence of int, default (64,)
        Hidden layer widths; ``()`` makes a linear model.
    out_features : int, default 1
        Outputs: 1 for regression or binary logits, K for K-class logits.
    activation : {"relu", "tanh", "sigmoid", "gelu", "silu"}, default "relu"
    dropout : float in [0, 1), default 0.0

    Notes
    -----
    The first layer's weight is named ``"0.weight"``; its columns are the input
    features (``input_parameter``, used by sparsity reports).
    """

    input_parameter = "0.weight"

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (64,),
        out_features: int = 1,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        in_features = check_int("in_features", in_features, low=1)
        out_features = check_int("out_features", out_features, low=1)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise fail("hidden", "a sequence of positive integers", hidden, kind=TypeError)
        widths = [check_int("hidden", h, low=1) for h in hidden]
        check_choice("activation", activation, ACTIVATIONS)
        dropout = check_number("dropout", dropout, low=0.0, high=1.0, high_open=True)
        layers: list[nn.Module] = []
        previous = in_features
        for width in widths:
            layers += [nn.Linear(previous, width), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            previous = width
        layers.append(nn.Linear(previous, out_features))
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = out_features
        self.hidden = tuple(widths)


class SkipMLP(nn.Module):
    """``f(x) = skip(x) + body(x)``: an :class:`MLP` beside a linear skip connection.

    LassoNet's architecture: with :class:`~shrinkage.HierarchicalLasso` on
    ``skip.weight`` and ``body.0.weight``, an input reaches the hidden layers only
    through (and as much as) its linear part. Its input features are the columns of
    ``skip.weight``; :meth:`input_usage` counts what the whole model uses.

    Parameters
    ----------
    in_features, hidden, out_features, activation, dropout
        As for :class:`MLP` (the body); the skip has no bias (the body's last layer has).
    """

    input_parameter = "skip.weight"
    input_parameters = ("skip.weight", "body.0.weight")

    # an MLP when built here; a plain nn.Sequential of the same layers after prune() or load_model()
    body: nn.Sequential

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (64,),
        out_features: int = 1,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.body = MLP(in_features, hidden, out_features, activation=activation, dropout=dropout)
        self.skip = nn.Linear(in_features, out_features, bias=False)
        self.in_features, self.out_features, self.hidden = in_features, out_features, self.body.hidden

    def forward(self, x):
        return self.skip(x) + self.body(x)

    def input_usage(self) -> tuple[list[int], int]:
        """Input features used (by the skip or on a non-zero path through the body) and
        the body's dead units."""
        from .structure import chain_usage

        through_body, dead = chain_usage([m.weight for m in self.body if isinstance(m, nn.Linear)])
        through_skip = set((self.skip.weight.detach() != 0).any(dim=0).nonzero().flatten().tolist())
        return sorted(set(through_body) | through_skip), dead

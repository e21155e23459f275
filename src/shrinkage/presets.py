"""Penalty presets: the one registry of the names ``none``, ``l1``, ``l2``, … and their rules.

A preset turns a name into the :class:`~shrinkage.regularizer.Rule` list that puts its
penalty on a network's weights. The estimators (``penalty="group"``), the study
(``--penalties l1,group``), its report and the command line all read this registry, so a
name means the same tensors everywhere:

==================  ================================================================
``none``            no penalty
``l1``              :class:`~shrinkage.penalties.L1` on every weight matrix
``l2``              :class:`~shrinkage.penalties.L2` on every weight matrix
``elasticnet``      :class:`~shrinkage.penalties.ElasticNet` (ρ = ``l1_ratio``) on every weight
``group``           :class:`~shrinkage.penalties.GroupLasso`: input features on the first
                    layer (a categorical feature's one-hot columns as one group where
                    given), hidden units on the later layers
``sparse_group``    :class:`~shrinkage.penalties.SparseGroupLasso`, placed as ``group``
``hierarchical``    :class:`~shrinkage.penalties.HierarchicalLasso` (LassoNet) on a
                    :class:`~shrinkage.models.SkipMLP`'s skip and first-layer weights
==================  ================================================================

>>> from shrinkage.models import MLP
>>> from shrinkage.presets import PRESETS, get_preset
>>> sorted(PRESETS)
['elasticnet', 'group', 'hierarchical', 'l1', 'l2', 'none', 'sparse_group']
>>> get_preset("elasticnet").rules(MLP(4, hidden=(8,)), 0.1, l1_ratio=0.3)
[Rule(penalty=ElasticNet(lambda_=0.1, l1_ratio=0.3), select=None, mode=None, overlap=False)]
>>> get_preset("l2").sparsifying(), get_preset("l1").sparsifying()
(False, True)

Adding a preset is one entry in :data:`PRESETS` (and, for a new penalty, its class in
:mod:`shrinkage.penalties`): every reader of the registry offers it from then on.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .penalties import L1, L2, ElasticNet, GroupLasso, HierarchicalLasso, Penalty, SparseGroupLasso
from .regularizer import Rule
from .selection import select_parameters
from .validation import InputError, check_choice

__all__ = ["PLACEMENTS", "PRESETS", "Preset", "get_preset"]

#: Where a preset puts its penalty: ``weights`` (every weight matrix, one penalty),
#: ``features`` (input-feature groups on the first layer, hidden units on the later
#: ones), ``skip`` (a SkipMLP's skip and first-layer weights, jointly).
PLACEMENTS = ("weights", "features", "skip")


@dataclass(frozen=True)
class Preset:
    """A named penalty and where it goes on a network.

    Parameters
    ----------
    name : str
        The name users write (``penalty="l1"``, ``--penalties l1``).
    penalty : type of Penalty or None
        The penalty class (``None``: no penalty). Its constructor receives λ and those of
        the hyperparameters ``l1_ratio``, ``M`` it accepts.
    placement : {"weights", "features", "skip"}
        See :data:`PLACEMENTS`.
    description : str
        One line for help texts and the report.
    """

    name: str
    penalty: type[Penalty] | None
    placement: str = "weights"
    description: str = ""

    def __post_init__(self) -> None:
        check_choice("placement", self.placement, PLACEMENTS)

    @property
    def model(self) -> str:
        """The network this preset needs: ``"skip_mlp"`` (a :class:`~shrinkage.models.SkipMLP`) or ``"mlp"``."""
        return "skip_mlp" if self.placement == "skip" else "mlp"

    def make_penalty(self, lambda_: float = 1.0, **hyper: Any) -> Penalty | None:
        """The penalty at ``lambda_``, given the hyperparameters its class takes (others ignored)."""
        if self.penalty is None:
            return None
        accepted = inspect.signature(self.penalty).parameters
        return self.penalty(lambda_, **{k: v for k, v in hyper.items() if k in accepted})

    def sparsifying(self, **hyper: Any) -> bool:
        """Whether a large enough λ gives exact zeros (L1, group, …; not L2, nor ``none``)."""
        penalty = self.make_penalty(1.0, **hyper)
        return penalty is not None and penalty.sparsifying

    def rules(
        self,
        model: nn.Module,
        lambda_: float = 1.0,
        *,
        l1_ratio: float = 0.5,
        M: float = 10.0,
        feature_groups: Sequence[Sequence[int]] | None = None,
    ) -> list[Rule] | None:
        """The rules that put this preset on ``model`` at ``lambda_`` (``None`` for ``none``).

        ``feature_groups`` partitions the input columns (e.g. one categorical feature's
        one-hot columns as one group) for the ``features`` placement; element-wise
        penalties ignore it.
        """
        hyper = {"l1_ratio": l1_ratio, "M": M}
        if self.penalty is None:
            return None

        def make(**groups: Any) -> Penalty:
            penalty = self.make_penalty(lambda_, **groups, **hyper)
            assert penalty is not None  # self.penalty is set: checked above
            return penalty

        if self.placement == "weights":
            return [Rule(make())]
        if self.placement == "skip":
            if feature_groups is not None and any(len(group) != 1 for group in feature_groups):
                raise InputError(
                    f"penalty {self.name!r} selects single input columns, got feature groups "
                    f"{[list(g) for g in feature_groups if len(g) != 1][:3]} (use 'group' for groups of columns)"
                )
            names = dict(model.named_parameters())
            missing = [n for n in ("skip.weight", "body.0.weight") if n not in names]
            if missing:
                raise InputError(
                    f"penalty {self.name!r} needs a SkipMLP (parameters 'skip.weight', 'body.0.weight'), "
                    f"got a {type(model).__name__} without {missing}"
                )
            return [Rule(make(), select=["skip.weight", "body.0.weight"])]
        weights = [name for name, _ in select_parameters(model)]  # the default selection: layer weights
        first_groups = "input" if feature_groups is None else [list(g) for g in feature_groups]
        rules = [Rule(make(groups=first_groups), select=weights[0])]
        if len(weights) > 1:  # hidden units, so the first layer cannot shrink by rescaling into the next
            rules.append(Rule(make(groups="input"), select=weights[1:]))
        return rules


def _registry(*presets: Preset) -> dict[str, Preset]:
    return {preset.name: preset for preset in presets}


#: Every preset by name, in the order help texts list them.
PRESETS: dict[str, Preset] = _registry(
    Preset("none", None, description="no penalty"),
    Preset("l1", L1, description="lasso: λ·Σ|w| on every weight; exact zeros, feature selection"),
    Preset("l2", L2, description="ridge: λ·Σw² on every weight; shrinks, never zeroes"),
    Preset("elasticnet", ElasticNet, description="λ·(ρ·Σ|w| + (1−ρ)·Σw²) on every weight"),
    Preset(
        "group",
        GroupLasso,
        "features",
        "group lasso: whole input features (one-hot blocks together) and hidden units",
    ),
    Preset("sparse_group", SparseGroupLasso, "features", "group lasso plus L1 within groups"),
    Preset("hierarchical", HierarchicalLasso, "skip", "LassoNet: a feature enters the network only via its skip"),
)


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (an :class:`~shrinkage.validation.InputError` naming the choices otherwise)."""
    return PRESETS[check_choice("penalty", name, PRESETS)]

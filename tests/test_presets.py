"""The penalty registry: one meaning per name, read by the estimators, the study and the CLI."""

from __future__ import annotations

import pytest
import torch

from shrinkage import InputError
from shrinkage.estimators import ShrinkageMLPRegressor, ShrinkageMLPRegressorCV
from shrinkage.models import MLP, SkipMLP
from shrinkage.penalties import PENALTIES, GroupLasso, HierarchicalLasso, SparseGroupLasso
from shrinkage.presets import PRESETS, Preset, get_preset
from shrinkage.regularizer import Regularizer
from shrinkage.study.config import PENALTY_CHOICES


def _placed(rules, model):
    """(penalty, parameter names, groups) of each term: what the rules put where."""
    reg = Regularizer(model, rules)
    return [(type(t.penalty).__name__, t.names, getattr(t.penalty, "groups", None)) for t in reg.terms]


def test_every_reader_offers_every_preset():
    assert tuple(PRESETS) == PENALTY_CHOICES
    assert set(ShrinkageMLPRegressor._checks) >= {"penalty"}
    for name in PRESETS:
        ShrinkageMLPRegressor._checks["penalty"]("penalty", name)
    assert {p.penalty for p in PRESETS.values() if p.penalty is not None} <= set(PENALTIES.values())


@pytest.mark.parametrize("name", ["l1", "l2", "elasticnet"])
def test_elementwise_presets_cover_every_weight_with_one_penalty(name):
    model = MLP(5, (8, 4))
    rules = get_preset(name).rules(model, 0.1, l1_ratio=0.3)
    [(kind, names, _)] = _placed(rules, model)
    assert kind == type(PRESETS[name].make_penalty(0.1, l1_ratio=0.3)).__name__
    assert names == [n for n, p in model.named_parameters() if p.ndim >= 2]


@pytest.mark.parametrize("cls", [GroupLasso, SparseGroupLasso])
def test_group_presets_take_features_on_the_first_layer_and_units_after(cls):
    model = MLP(5, (8, 4))
    name = "group" if cls is GroupLasso else "sparse_group"
    placed = _placed(get_preset(name).rules(model, 0.1, feature_groups=[[0, 1, 2], [3], [4]]), model)
    assert placed[0] == (cls.__name__, ["0.weight"], ((0, 1, 2), (3,), (4,)))
    assert placed[1] == (cls.__name__, ["2.weight", "4.weight"], "input")
    # without feature groups (the estimators), each column is its own group
    assert _placed(get_preset(name).rules(model, 0.1), model)[0][2] == "input"


def test_group_means_the_same_tensors_in_the_estimator_and_the_study():
    """The estimator's "group" is the study's "group" without one-hot blocks."""
    X, y = torch.randn(40, 5).numpy(), torch.randn(40).numpy()
    estimator = ShrinkageMLPRegressor((8,), penalty="group", lambda_=0.01, max_iter=2, random_state=0).fit(X, y)
    model = estimator.model_
    from shrinkage.estimators import _rules

    assert _placed(_rules(estimator, model, 0.01), model) == _placed(get_preset("group").rules(model, 0.01), model)


def test_hierarchical_needs_a_skip_mlp_and_single_columns():
    preset = get_preset("hierarchical")
    assert preset.model == "skip_mlp" and preset.sparsifying()
    [(kind, names, _)] = _placed(preset.rules(SkipMLP(4, (6,)), 0.1, M=5.0), SkipMLP(4, (6,)))
    assert kind == "HierarchicalLasso" and sorted(names) == ["body.0.weight", "skip.weight"]
    assert preset.make_penalty(0.1, M=5.0, l1_ratio=0.3) == HierarchicalLasso(0.1, M=5.0)  # l1_ratio not its own
    with pytest.raises(InputError, match="penalty 'hierarchical' needs a SkipMLP"):
        preset.rules(MLP(4, (6,)))
    with pytest.raises(InputError, match="selects single input columns, got feature groups"):
        preset.rules(SkipMLP(4, (6,)), feature_groups=[[0, 1], [2], [3]])


def test_none_and_sparsifying():
    assert get_preset("none").rules(MLP(3, (4,))) is None
    assert [n for n, p in PRESETS.items() if p.sparsifying()] == [
        "l1",
        "elasticnet",
        "group",
        "sparse_group",
        "hierarchical",
    ]
    assert not get_preset("elasticnet").sparsifying(l1_ratio=0.0)  # ρ = 0 is ridge


def test_bad_names_and_placements_name_the_parameter():
    with pytest.raises(InputError, match="penalty must be one of 'none', 'l1'"):
        get_preset("lasso")
    with pytest.raises(InputError, match="placement must be one of 'weights', 'features', 'skip', got 'everywhere'"):
        Preset("x", GroupLasso, "everywhere")


def test_a_cv_estimator_builds_a_skip_mlp_for_hierarchical():
    X, y = torch.randn(60, 4).numpy(), torch.randn(60).numpy()
    model = ShrinkageMLPRegressorCV(
        (6,), penalty="hierarchical", optimizer="sgd", cv=2, n_lambdas=2, max_iter=3, fit_config="same"
    )
    assert isinstance(model.fit(X, y).model_, SkipMLP)

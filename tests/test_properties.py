"""Property-based tests (hypothesis) for the penalty classes, selection rules and the
data loader's validation. The prox operators' own properties are in
``test_functional.py``, the pruning's in ``test_prune.py``. Every test runs the CI
profile of ``conftest.py``: derandomized, 200 examples unless it says fewer."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from shrinkage import L1, L2, ElasticNet, GroupLasso, Regularizer, Rule
from shrinkage._arrays import check_X
from shrinkage.study.tabular import read_table

lambdas = st.floats(0.0, 10.0, allow_nan=False)
seeds = st.integers(0, 2**31 - 1)


def _tensor(seed: int, shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@given(lambdas, st.floats(0.0, 1.0), seeds, st.floats(-5, 5, allow_nan=False))
def test_penalty_values_are_their_formulas_and_scale_as_they_should(lambda_, rho, seed, c):
    """L1 = λΣ|w|, L2 = λΣw², elastic net = their ρ-mix, all ≥ 0; L1 and group are
    absolutely homogeneous of degree 1 in w, L2 of degree 2."""
    w = _tensor(seed, (5, 4))
    l1, l2 = L1(lambda_), L2(lambda_)
    assert float(l1.value([w])) == pytest.approx(lambda_ * float(w.abs().sum()), rel=1e-12, abs=1e-12)
    assert float(l2.value([w])) == pytest.approx(lambda_ * float((w**2).sum()), rel=1e-12, abs=1e-12)
    mix = lambda_ * (rho * float(w.abs().sum()) + (1 - rho) * float((w**2).sum()))
    assert float(ElasticNet(lambda_, rho).value([w])) == pytest.approx(mix, rel=1e-12, abs=1e-12)
    group = GroupLasso(lambda_, groups="input")
    layouts = group.layouts([("w", w)])
    scaled = group.value([c * w], layouts)
    assert float(scaled) == pytest.approx(abs(c) * float(group.value([w], layouts)), rel=1e-9, abs=1e-12)
    assert float(l2.value([c * w])) == pytest.approx(c * c * float(l2.value([w])), rel=1e-9, abs=1e-12)
    assert min(float(p.value([w], p.layouts([("w", w)]))) for p in (l1, l2, group)) >= 0


@st.composite
def models(draw):
    """A random stack of Linear / LayerNorm / BatchNorm / activation layers."""
    widths = draw(st.lists(st.integers(1, 5), min_size=2, max_size=5))
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers.append(nn.Linear(a, b, bias=draw(st.booleans())))
        norm = draw(st.sampled_from([None, nn.LayerNorm, nn.BatchNorm1d]))
        if norm is not None:
            layers.append(norm(b))
        layers.append(draw(st.sampled_from([nn.ReLU, nn.Tanh]))())
    return nn.Sequential(*layers)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(models(), st.data())
def test_selection_rules(model, data):
    """By default exactly the layer weights, never a bias or a norm parameter; a name
    picks exactly that tensor; disjoint rules bind; a tensor claimed twice is refused."""
    weights = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    weights = [f"{name}.weight" for name in weights]
    assert sorted(Regularizer(model, L1(0.1)).parameter_names()["l1"]) == sorted(weights)
    one = data.draw(st.sampled_from(weights))
    rest = [w for w in weights if w != one]
    rules = [Rule(L2(0.1), select=one)] + ([Rule(L1(0.1), select=rest)] if rest else [])
    bound = Regularizer(model, rules).parameter_names()
    assert bound["l2"] == [one] and sorted(bound.get("l1", [])) == sorted(rest)
    with pytest.raises(ValueError, match=f"parameter '{one}' is selected by rule 0 and rule 1"):
        Regularizer(model, [Rule(L2(0.1), select=one), Rule(L1(0.1))])


@given(
    st.integers(1, 30),
    st.integers(1, 6),
    st.lists(st.tuples(st.integers(0, 29), st.integers(0, 5), st.sampled_from([np.nan, np.inf, -np.inf])), max_size=8),
    seeds,
)
def test_check_X_counts_every_bad_value_and_passes_good_data_unchanged(rows, cols, bad, seed):
    X = np.random.default_rng(seed).standard_normal((rows, cols))
    cells = {(r % rows, c % cols): v for r, c, v in bad}
    if not cells:
        np.testing.assert_array_equal(check_X(X), X)
        return
    for (r, c), v in cells.items():
        X[r, c] = v
    with pytest.raises(ValueError, match=rf"X must be free of NaN and infinite values, got {len(cells)} such value"):
        check_X(X)


cell_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=12)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(cell_text, min_size=2, max_size=5, unique=True), st.lists(cell_text, min_size=2, max_size=5), seeds)
def test_csv_cells_are_read_as_data_never_evaluated(tmp_path_factory, names, texts, seed):
    """Whatever a CSV holds — formulas (=cmd|…), markup, quotes, any Unicode — comes
    back as the same strings: the loader reads data and runs nothing."""
    names = [n.strip() or "c" for n in names]
    if len(set(names)) < len(names) or "y" in names:
        return
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    formulas = ["=cmd|' /C calc'!A0", "@SUM(1+1)", "+1+1", "-2+3", "<script>alert(1)</script>"]
    rng = np.random.default_rng(seed)
    column = [texts[i % len(texts)] if i % 3 else formulas[i % len(formulas)] for i in range(12)]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*names, "y"])
        for i in range(12):
            writer.writerow([column[i], *[f"{v:.6f}" for v in rng.standard_normal(len(names) - 1)], f"{i * 0.5}"])
    table = read_table(path, "y")
    assert list(table.features.columns) == names
    read_back = [None if isinstance(v, float) and np.isnan(v) else str(v) for v in table.features[names[0]]]
    expected = [v if v.strip() else None for v in column]
    assert [v.strip() if v else v for v in read_back] == [v.strip() if v else v for v in expected]

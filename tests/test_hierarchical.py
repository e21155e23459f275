"""LassoNet's hierarchical prox and selection, against the defining problem and the data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from shrinkage import GroupLasso, HierarchicalLasso, Regularizer, Rule
from shrinkage.cv import cross_validate
from shrinkage.estimators import ShrinkageMLPRegressor
from shrinkage.functional import hier_prox_, hier_zero_threshold
from shrinkage.models import MLP, SkipMLP
from shrinkage.optim import ExactStepWarning
from shrinkage.path import PATH_CONFIG
from shrinkage.study.datasets import make_synthetic
from shrinkage.train import evaluate


def _defining_problem(b0, w0, lam, M, s_b=1.0, s_w=1.0):
    """min Σ(b−b₀)²/2s_b + Σ(w−w₀)²/2s_w + λ‖b‖ s.t. |w_k| <= M‖b‖, by SLSQP from several
    starts (the best feasible value found, and zero)."""
    C, K = len(b0), len(w0)

    def objective(z):
        b, w = z[:C], z[C:]
        return np.sum((b - b0) ** 2) / (2 * s_b) + np.sum((w - w0) ** 2) / (2 * s_w) + lam * np.linalg.norm(b)

    constraints = [
        {"type": "ineq", "fun": lambda z, k=k: M * np.sqrt(np.sum(z[:C] ** 2) + 1e-300) - abs(z[C + k])}
        for k in range(K)
    ]
    best = objective(np.zeros(C + K))
    for start in (np.r_[b0, w0], np.r_[b0 * 0.5, w0 * 0.1], np.r_[b0, np.zeros(K)]):
        result = minimize(
            objective, start, constraints=constraints, method="SLSQP", options={"ftol": 1e-14, "maxiter": 3000}
        )
        if all(c["fun"](result.x) >= -1e-8 for c in constraints):
            best = min(best, result.fun)
    return objective, best


@pytest.mark.parametrize("case", range(25))
def test_hier_prox_solves_its_defining_problem(case):
    rng = np.random.default_rng(case)
    C, K = int(rng.integers(1, 3)), int(rng.integers(1, 6))
    b0 = rng.standard_normal(C) * rng.choice([0.2, 1.0, 3.0])
    w0 = rng.standard_normal(K) * rng.choice([0.2, 1.0, 3.0])
    lam, M = rng.uniform(0.01, 2.0), float(rng.choice([0.5, 1.0, 3.0, 10.0]))
    s_b, s_w = (1.0, 1.0) if case % 2 == 0 else (rng.uniform(0.1, 1.0), rng.uniform(0.05, 2.0))
    skip, first = torch.tensor(b0.reshape(C, 1)), torch.tensor(w0.reshape(K, 1))
    hier_prox_(skip, first, step=lam * s_b, M=M, ratio=s_w / s_b)
    b, w = skip.numpy().ravel(), first.numpy().ravel()
    assert np.max(np.abs(w)) <= M * np.linalg.norm(b) + 1e-12  # feasible: the hierarchy holds
    objective, best = _defining_problem(b0, w0, lam, M, s_b, s_w)
    assert objective(np.r_[b, w]) <= best + 1e-9  # and no feasible point the solver finds is better


def test_hier_prox_is_vectorized_over_features():
    rng = np.random.default_rng(0)
    skip, first = torch.tensor(rng.standard_normal((2, 7))), torch.tensor(rng.standard_normal((5, 7)))
    expected_skip, expected_first = skip.clone(), first.clone()
    for j in range(7):  # one feature at a time
        column_skip, column_first = expected_skip[:, j : j + 1].clone(), expected_first[:, j : j + 1].clone()
        hier_prox_(column_skip, column_first, step=0.8, M=2.0)
        expected_skip[:, j], expected_first[:, j] = column_skip[:, 0], column_first[:, 0]
    hier_prox_(skip, first, step=0.8, M=2.0)
    torch.testing.assert_close(skip, expected_skip)
    torch.testing.assert_close(first, expected_first)


def test_zero_threshold_is_where_zero_becomes_the_prox():
    rng = np.random.default_rng(1)
    g_skip, g_first = torch.tensor(rng.standard_normal((1, 4))), torch.tensor(rng.standard_normal((6, 4)))
    threshold = hier_zero_threshold(g_skip, g_first, M=3.0)
    for lam, all_zero in ((threshold * 1.001, True), (threshold * 0.99, False)):
        skip, first = -g_skip.clone(), -g_first.clone()  # one gradient step from zero (step 1)
        hier_prox_(skip, first, step=lam, M=3.0)
        assert bool((skip == 0).all() and (first == 0).all()) == all_zero


def test_only_proximal_mode_and_the_right_tensors():
    model = SkipMLP(4, (3,))
    with pytest.raises(ValueError, match="HierarchicalLasso is a constraint that only mode='proximal' enforces"):
        Regularizer(model, Rule(HierarchicalLasso(0.1), select=["skip.weight", "body.0.weight"]), mode="loss")
    with pytest.raises(ValueError, match="HierarchicalLasso must select exactly the weights 'skip.weight' and"):
        Regularizer(model, Rule(HierarchicalLasso(0.1), select=["skip.weight"]))
    with pytest.raises(ValueError, match="M must be a finite number > 0, got 0"):
        HierarchicalLasso(0.1, M=0)
    reg = Regularizer(model, Rule(HierarchicalLasso(0.1), select=["skip.weight", "body.0.weight"]))
    with pytest.warns(ExactStepWarning, match="uses their mean"):
        reg.attach(torch.optim.Adam(model.parameters()))


def test_hierarchy_holds_after_every_step():
    torch.manual_seed(0)
    model = SkipMLP(6, (8,))
    rule = Rule(HierarchicalLasso(0.05, M=2.0), select=["skip.weight", "body.0.weight"])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    Regularizer(model, rule).attach(opt)
    X, y = torch.randn(64, 6), torch.randn(64, 1)
    for _ in range(50):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(X), y).backward()
        opt.step()
        bound = 2.0 * torch.linalg.vector_norm(model.skip.weight, dim=0)
        assert torch.all(model.body[0].weight.abs().amax(dim=0) <= bound + 1e-7)


def test_hierarchical_selection_recovers_the_truth_and_is_no_worse_than_group_lasso():
    """5 relevant features of 50 (nonlinear, each with a main effect), n = 600: CV with
    relaxed refits at λ_1se, SkipMLP + hierarchy (SGD: an exact prox) against an MLP +
    group lasso. The figures over more seeds are in benchmarks/bench_hierarchical.py."""
    data = make_synthetic(600, 50, noise=0.5, seed=0)
    fresh = make_synthetic(2000, 50, noise=0.5, seed=100)
    mean, std, y_mean, y_std = data.X.mean(0), data.X.std(0), data.y.mean(), data.y.std()
    X, y = (data.X - mean) / std, (data.y - y_mean) / y_std
    Xf = torch.tensor((fresh.X - mean) / std, dtype=torch.float32)
    yf = torch.tensor((fresh.y - y_mean) / y_std, dtype=torch.float32)
    common = dict(cv=3, n_lambdas=8, lambda_min_ratio=1e-2, relax=True, seed=0)
    hierarchical = cross_validate(
        lambda: SkipMLP(50, (16,)),
        X,
        y,
        penalty=Rule(HierarchicalLasso(M=10), select=["skip.weight", "body.0.weight"]),
        train_config=PATH_CONFIG.replace(optimizer="sgd", lr=0.05, optimizer_kwargs={"momentum": 0.9}),
        **common,
    )
    group = cross_validate(lambda: MLP(50, (16,)), X, y, penalty=GroupLasso(groups="input"), **common)
    truth = [0, 1, 2, 3, 4]
    assert any(point.features == truth for point in hierarchical.path.points)  # on the path
    assert hierarchical.selected_features == truth and group.selected_features == truth  # and chosen
    errors = {
        name: evaluate(result.model, Xf, yf, "mse")
        for name, result in (("hierarchical", hierarchical), ("group", group))
    }
    print(f"fresh-data MSE (standardized y): {errors}")
    assert errors["hierarchical"] <= errors["group"] * 1.05  # no worse, up to noise


def test_estimator_hierarchical_penalty_fits_and_prunes():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 8))
    y = X[:, 0] + np.tanh(2 * X[:, 1]) + 0.1 * rng.standard_normal(200)
    model = ShrinkageMLPRegressor(
        (16,), penalty="hierarchical", lambda_=1.0, M=5.0, optimizer="sgd", learning_rate=0.05, random_state=0
    ).fit(X, y)
    assert isinstance(model.model_, SkipMLP) and model.score(X, y) > 0.8
    assert model.selected_features_[:2].all() and model.selected_features_.sum() < 8
    pruned = model.prune(measure=False)
    kept = np.flatnonzero(model.selected_features_).tolist()
    assert pruned.prune_report_.kept_features == kept
    with torch.no_grad():  # the smaller network reads the kept columns
        out = pruned.model_.module(torch.tensor(X[:, kept], dtype=torch.float32)).numpy().ravel()
    np.testing.assert_allclose(out, model.predict(X), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pruned.predict(X), model.predict(X), rtol=1e-6, atol=1e-9)  # from the full X

"""λ conversions against the other libraries' own definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from shrinkage.convert import (
    from_keras_l1l2,
    from_sklearn_enet,
    from_sklearn_lasso,
    from_sklearn_logistic,
    from_torch_weight_decay,
    to_sklearn_enet,
)


def test_simple_conversions():
    assert from_sklearn_lasso(0.1) == pytest.approx(0.2)
    assert from_torch_weight_decay(0.01) == pytest.approx(0.005)
    assert from_keras_l1l2(0.01, 0.03) == pytest.approx((0.04, 0.25))
    assert from_keras_l1l2() == (0.0, 1.0)
    lam, rho = from_sklearn_enet(0.1, 1.0)
    assert (lam, rho) == pytest.approx((0.2, 1.0))  # l1_ratio = 1 is the Lasso mapping


@pytest.mark.parametrize("alpha, l1_ratio", [(0.1, 0.5), (2.0, 0.0), (0.3, 0.9)])
def test_enet_conversion_round_trips_and_matches_objectives(alpha, l1_ratio, rng):
    lam, rho = from_sklearn_enet(alpha, l1_ratio)
    assert to_sklearn_enet(lam, rho) == pytest.approx((alpha, l1_ratio))
    # the two objectives differ by exactly a factor 2 at any point
    X, y, w = rng.standard_normal((20, 3)), rng.standard_normal(20), rng.standard_normal(3)
    r = y - X @ w
    sklearn = r @ r / 40 + alpha * l1_ratio * np.abs(w).sum() + alpha * (1 - l1_ratio) / 2 * w @ w
    ours = r @ r / 20 + lam * (rho * np.abs(w).sum() + (1 - rho) * w @ w)
    assert ours == pytest.approx(2 * sklearn)


def test_logistic_conversion_reaches_sklearn_l1_logistic(rng):
    """Our L1 + mean BCE with λ = 1/(C·n) has sklearn's L1 logistic solution."""
    from shrinkage import L1, Regularizer

    n, C = 200, 0.5
    X = rng.standard_normal((n, 6))
    y = (X[:, 0] - 2 * X[:, 1] + 0.5 * rng.standard_normal(n) > 0).astype(float)
    sk = LogisticRegression(
        l1_ratio=1.0, C=C, solver="liblinear", tol=1e-10, max_iter=10_000, intercept_scaling=1e4
    ).fit(X, y)
    model = torch.nn.Linear(6, 1).double()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    Regularizer(model, L1(from_sklearn_logistic(C, n))).attach(opt)
    Xt, yt = torch.tensor(X), torch.tensor(y).reshape(-1, 1)
    for _ in range(4000):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(Xt), yt).backward()
        opt.step()
    coef = model.weight.detach().numpy().ravel()
    assert np.max(np.abs(coef - sk.coef_.ravel())) / np.max(np.abs(sk.coef_)) < 1e-3
    assert np.array_equal(coef == 0, sk.coef_.ravel() == 0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: from_sklearn_lasso(-1), "alpha must be a finite number >= 0, got -1"),
        (lambda: from_sklearn_enet(0.1, 2), "l1_ratio must be a finite number in [0, 1], got 2"),
        (lambda: from_sklearn_logistic(0, 10), "C must be a finite number > 0, got 0"),
        (lambda: from_sklearn_logistic(1.0, 0), "n_samples must be an integer >= 1, got 0"),
    ],
)
def test_bad_values(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)

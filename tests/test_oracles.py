"""Proximal training reaches the regularized optimum that independent solvers find.

A linear model (one ``nn.Linear``), mean-squared error, full batch, float64: with the
conversions in :mod:`shrinkage.convert`, our objective is exactly scikit-learn's (times
a constant), so the proximal fixed point must be scikit-learn's solution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import ElasticNet as SkElasticNet
from sklearn.linear_model import Lasso, MultiTaskLasso
from torch import nn

import shrinkage.optim as shrinkage_optim
from shrinkage import L1, ElasticNet, GroupLasso, Regularizer, SparseGroupLasso
from shrinkage.convert import from_sklearn_enet, from_sklearn_lasso

OPTIMIZERS = {
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.1), 1500, 0.999),
    "sgd-nesterov": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True), 1500, 0.999),
    "adam": (lambda ps: torch.optim.Adam(ps, lr=0.05), 1500, 0.998),
    "adamw": (lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.0), 1500, 0.998),
    "rmsprop": (lambda ps: torch.optim.RMSprop(ps, lr=0.02), 2000, 0.997),
    "adagrad": (lambda ps: torch.optim.Adagrad(ps, lr=0.5), 1500, 0.999),
    "adamax": (lambda ps: torch.optim.Adamax(ps, lr=0.05), 2000, 0.999),
}


def regression(n=100, p=10, k=1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    W = np.zeros((p, k))
    W[[0, 1, 4, 8]] = rng.standard_normal((4, k)) * 2
    Y = X @ W + 0.5 * rng.standard_normal((n, k)) + 1.0
    return X, Y


def fit(penalty, X, Y, optimizer, *, grad_only=False):
    """Full-batch proximal training of a linear model; returns (weight, bias) as NumPy."""
    make, steps, gamma = OPTIMIZERS[optimizer]
    torch.manual_seed(0)
    model = nn.Linear(X.shape[1], Y.shape[1]).double()
    opt = make(model.parameters())
    Regularizer(model, penalty).attach(opt)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(Xt), Yt).backward()
        opt.step()
        scheduler.step()
    return model.weight.detach().numpy(), model.bias.detach().numpy()


def assert_same_solution(ours: np.ndarray, theirs: np.ndarray):
    relative = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
    assert relative < 1e-4, f"max relative difference {relative:.2e}"
    assert np.array_equal(ours == 0, theirs == 0), "zero patterns differ"


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_l1_reaches_sklearn_lasso(optimizer):
    X, y = regression()
    alpha = 0.1
    sk = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(X, y.ravel())
    assert (sk.coef_ == 0).sum() >= 4  # the test means something: several exact zeros
    weight, bias = fit(L1(from_sklearn_lasso(alpha)), X, y, optimizer)
    assert_same_solution(weight.ravel(), sk.coef_)
    assert bias[0] == pytest.approx(sk.intercept_, rel=1e-4)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
@pytest.mark.parametrize("l1_ratio", [0.3, 0.8])
def test_elastic_net_reaches_sklearn_elastic_net(optimizer, l1_ratio):
    X, y = regression(seed=1)
    alpha = 0.15
    sk = SkElasticNet(alpha=alpha, l1_ratio=l1_ratio, tol=1e-12, max_iter=100_000).fit(X, y.ravel())
    assert (sk.coef_ == 0).sum() >= 2
    lam, rho = from_sklearn_enet(alpha, l1_ratio)
    weight, _ = fit(ElasticNet(lam, l1_ratio=rho), X, y, optimizer)
    assert_same_solution(weight.ravel(), sk.coef_)


@pytest.mark.parametrize("optimizer", ["sgd", "sgd-nesterov", "adam"])
def test_group_lasso_reaches_sklearn_multitask_lasso(optimizer):
    """Input groups of a (k, p) weight are sklearn's MultiTaskLasso rows.

    sklearn: (1/2n)‖Y − XW‖²_F + α·Σ_j ‖W_j‖. MSELoss averages over n·k entries, so
    times 2/k it is ours with λ·√k = 2α/k, i.e. λ = 2α / k^1.5.
    """
    k = 3
    X, Y = regression(k=k, seed=2)
    alpha = 0.3
    sk = MultiTaskLasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(X, Y)
    assert (np.linalg.norm(sk.coef_, axis=0) == 0).sum() >= 4
    weight, _ = fit(GroupLasso(2 * alpha / k**1.5, groups="input"), X, Y, optimizer)
    assert_same_solution(weight, sk.coef_)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sparse_group_lasso_satisfies_kkt(optimizer):
    """No off-the-shelf solver: check the optimality conditions at the solution."""
    k = 3
    X, Y = regression(k=k, seed=3)
    lam, rho = 0.08, 0.4
    weight, bias = fit(SparseGroupLasso(lam, l1_ratio=rho, groups="input"), X, Y, optimizer)
    W = torch.tensor(weight, requires_grad=True)
    residual = torch.tensor(X) @ W.T + torch.tensor(bias) - torch.tensor(Y)
    (residual**2).mean().backward()
    grad = W.grad.numpy()  # ∇ of the data loss
    size = math.sqrt(k)
    zero_groups = 0
    for j in range(X.shape[1]):
        w, g = weight[:, j], grad[:, j]
        if np.all(w == 0):
            zero_groups += 1
            # 0 ∈ g + λρ·[−1, 1] + λ(1−ρ)√k·B  ⇔  ‖S(g, λρ)‖ ≤ λ(1−ρ)√k
            soft = np.sign(g) * np.maximum(np.abs(g) - lam * rho, 0)
            assert np.linalg.norm(soft) <= lam * (1 - rho) * size * (1 + 1e-6)
        else:
            group_term = lam * (1 - rho) * size * w / np.linalg.norm(w)
            nonzero = w != 0
            np.testing.assert_allclose(g[nonzero] + lam * rho * np.sign(w[nonzero]) + group_term[nonzero], 0, atol=1e-7)
            assert np.all(np.abs(g[~nonzero] + group_term[~nonzero]) <= lam * rho * (1 + 1e-6))
    assert zero_groups >= 3


def test_lr_only_prox_after_adam_misses_the_optimum(monkeypatch):
    """Why the per-element step matters: the naive prox converges elsewhere."""
    X, y = regression()
    sk = Lasso(alpha=0.1, tol=1e-12, max_iter=100_000).fit(X, y.ravel())
    monkeypatch.setattr(shrinkage_optim, "_RULES", ((torch.optim.SGD, shrinkage_optim._sgd),))
    with pytest.warns(shrinkage_optim.ExactStepWarning):
        weight, _ = fit(L1(from_sklearn_lasso(0.1)), X, y, "adam")
    relative = np.max(np.abs(weight.ravel() - sk.coef_)) / np.max(np.abs(sk.coef_))
    assert relative > 1e-2


@pytest.mark.parametrize("penalty_name", ["l1", "elasticnet"])
def test_stationarity_is_zero_at_scikit_learns_optimum_and_not_elsewhere(penalty_name):
    """The path's convergence measure against an independent solver's solution."""
    from shrinkage.path import stationarity

    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 8))
    y = X[:, :3] @ np.array([2.0, -1.0, 0.5]) + 40.0 + 0.3 * rng.standard_normal(150)  # raw: a large intercept
    if penalty_name == "l1":
        sk = Lasso(alpha=0.05, tol=1e-14, max_iter=100_000).fit(X, y)
        penalty = L1(from_sklearn_lasso(0.05))
    else:
        sk = SkElasticNet(alpha=0.05, l1_ratio=0.3, tol=1e-14, max_iter=100_000).fit(X, y)
        penalty = ElasticNet(*from_sklearn_enet(0.05, 0.3))
    model = nn.Linear(8, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(sk.coef_)[None])
        model.bias.fill_(float(sk.intercept_))
    reg = Regularizer(model, penalty)
    data = torch.tensor(X), torch.tensor(y).reshape(-1, 1)
    assert stationarity(model, reg, *data, "mse", 0.01) < 1e-9
    with torch.no_grad():
        model.bias.add_(0.5)  # only the intercept off: the large intercept must not hide it
    assert stationarity(model, reg, *data, "mse", 0.01) > 1e-4

"""FISTA (shrinkage.solvers) against closed forms and scikit-learn's solvers.

A linear model (one ``nn.Linear``, float64), full batch: the problems are convex, so the
solver must land on the optimum another solver finds. Relative error is
``‖ours − theirs‖ / ‖theirs‖``; the conversions are shrinkage.convert's.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.linear_model import ElasticNet as SkElasticNet
from sklearn.linear_model import Lasso, LogisticRegression, MultiTaskLasso
from torch import nn

from shrinkage import L1, L2, ElasticNet, GroupLasso, InputError, Regularizer, Rule
from shrinkage.convert import from_sklearn_enet, from_sklearn_lasso, from_sklearn_logistic
from shrinkage.path import PathConfig, regularization_path, stationarity
from shrinkage.solvers import FISTA_CONFIG, FistaResult, fista, largest_relative_change
from shrinkage.train import Diverged, TrainConfig, make_optimizer, train


def relative(ours, theirs) -> float:
    ours, theirs = np.ravel(ours), np.ravel(theirs)
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def standardized(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(0)) / X.std(0)


def diabetes(target: str) -> tuple[np.ndarray, np.ndarray]:
    """Standardized X; the target raw (≈ 152 ± 77) or standardized."""
    X, y = load_diabetes(return_X_y=True)
    return standardized(X), (y if target == "raw" else (y - y.mean()) / y.std())


def solve(penalty, X, y, loss="mse", outputs=1, **kwargs) -> tuple[nn.Linear, FistaResult]:
    model = nn.Linear(X.shape[1], outputs).double()
    reg = Regularizer(model, penalty) if penalty is not None else None
    result = fista(model, torch.tensor(X), torch.tensor(y), loss=loss, regularizer=reg, **kwargs)
    return model, result


def weights(model: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    return model.weight.detach().numpy(), model.bias.detach().numpy()


# ------------------------------------------------------------------ closed forms
def test_least_squares_and_ridge_reach_their_closed_forms():
    X, y = diabetes("raw")
    Xc, yc = X - X.mean(0), y - y.mean()
    n, lam = len(y), 0.3
    for penalty, ridge in [(None, 0.0), (L2(lam), lam)]:
        model, result = solve(penalty, X, y)
        # mean (y − Xw − b)² + λ‖w‖²: (XcᵀXc/n + λI) w = Xcᵀyc/n, b = ȳ − x̄ᵀw
        w = np.linalg.solve(Xc.T @ Xc / n + ridge * np.eye(X.shape[1]), Xc.T @ yc / n)
        coef, bias = weights(model)
        assert result.converged
        assert relative(coef, w) < 1e-6 and relative(bias, y.mean() - X.mean(0) @ w) < 1e-9


# ------------------------------------------------------------------ scikit-learn
@pytest.mark.parametrize("target", ["raw", "standardized"])
def test_lasso(target):
    X, y = diabetes(target)
    alpha = 0.5 if target == "raw" else 0.005
    sk = Lasso(alpha=alpha, tol=1e-14, max_iter=1_000_000).fit(X, y)
    model, result = solve(L1(from_sklearn_lasso(alpha)), X, y)
    coef, bias = weights(model)
    assert result.converged and result.stationarity <= FISTA_CONFIG.tol
    assert relative(coef, sk.coef_) < 1e-5  # measured: 8e-8 (raw), 2e-8 (standardized)
    assert abs(bias[0] - sk.intercept_) <= 1e-6 * max(abs(sk.intercept_), 1.0)
    assert np.array_equal(coef.ravel() != 0, sk.coef_ != 0)  # exact zeros, the same ones


@pytest.mark.parametrize("target", ["raw", "standardized"])
def test_elastic_net(target):
    X, y = diabetes(target)
    alpha, l1_ratio = (0.2, 0.7) if target == "raw" else (0.01, 0.7)
    sk = SkElasticNet(alpha=alpha, l1_ratio=l1_ratio, tol=1e-14, max_iter=1_000_000).fit(X, y)
    model, result = solve(ElasticNet(*from_sklearn_enet(alpha, l1_ratio)), X, y)
    coef, bias = weights(model)
    assert result.converged
    assert relative(coef, sk.coef_) < 1e-5
    assert abs(bias[0] - sk.intercept_) <= 1e-6 * max(abs(sk.intercept_), 1.0)
    assert np.array_equal(coef.ravel() != 0, sk.coef_ != 0)


def test_l1_logistic_regression():
    """bce-mean + λ‖w‖₁ with λ = 1/(C·n) is LogisticRegression(l1, C); saga leaves the
    intercept unpenalized, as we do."""
    X, y = load_breast_cancer(return_X_y=True)
    X, C = standardized(X), 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = LogisticRegression(l1_ratio=1.0, C=C, solver="saga", tol=1e-10, max_iter=100_000).fit(X, y)
    model, result = solve(L1(from_sklearn_logistic(C, len(y))), X, y.astype(float), loss="bce")
    coef, bias = weights(model)
    assert result.converged
    assert relative(coef, sk.coef_) < 1e-4  # saga stops at its own tolerance: measured 2e-6
    assert relative(bias, sk.intercept_) < 1e-4
    assert np.array_equal(coef.ravel() != 0, sk.coef_.ravel() != 0)


def test_multinomial_l1_logistic_regression():
    """cross_entropy on K logits: softmax intercepts are defined up to a shared constant,
    so those are compared centred."""
    X, y = load_wine(return_X_y=True)
    X, C = standardized(X), 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = LogisticRegression(l1_ratio=1.0, C=C, solver="saga", tol=1e-12, max_iter=100_000).fit(X, y)
    model, result = solve(L1(from_sklearn_logistic(C, len(y))), X, y, loss="cross_entropy", outputs=3)
    coef, bias = weights(model)
    assert result.converged
    assert relative(coef, sk.coef_) < 1e-4
    assert relative(bias - bias.mean(), sk.intercept_ - sk.intercept_.mean()) < 1e-4
    assert np.array_equal(coef != 0, sk.coef_ != 0)


def test_group_lasso_is_multitask_lasso():
    """Input groups of a (k, p) weight: MultiTaskLasso(alpha) is GroupLasso(2·alpha/k^1.5)
    (the mean squared error averages over n·k entries; a group has √k in its weight)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 8))
    Y = X[:, :3] @ rng.standard_normal((3, 3)) + 5.0 + 0.3 * rng.standard_normal((120, 3))
    alpha, k = 0.2, Y.shape[1]
    sk = MultiTaskLasso(alpha=alpha, tol=1e-14, max_iter=1_000_000).fit(X, Y)
    model, result = solve(GroupLasso(2 * alpha / k**1.5, groups="input"), X, Y, outputs=k)
    coef, bias = weights(model)
    assert result.converged
    assert relative(coef, sk.coef_) < 1e-5 and relative(bias, sk.intercept_) < 1e-6
    assert np.array_equal((coef != 0).any(0), (sk.coef_ != 0).any(0))  # whole features out


# ------------------------------------------------------------------ the measure
def test_it_stops_on_the_paths_stationarity_and_the_objective_never_rises():
    X, y = diabetes("raw")
    model, result = solve(L1(1.0), X, y, tol=1e-9)
    reg = Regularizer(model, L1(1.0))
    measured = stationarity(model, reg, torch.tensor(X), torch.tensor(y), "mse", FISTA_CONFIG.lr)
    assert measured <= 1e-9 and measured == pytest.approx(result.stationarity, rel=1e-3, abs=1e-12)
    objective = np.add(result.train_loss, result.penalty)
    assert len(objective) == result.epochs and result.best_epoch == result.epochs - 1
    assert np.all(np.diff(objective) <= 1e-12 * objective[0])  # monotone (rounding aside)
    assert result.restarts >= 1 and result.evaluations > result.epochs


def test_a_fit_cut_short_says_how_far_it_is():
    X, y = diabetes("raw")
    model, result = solve(L1(1.0), X, y, max_iter=3)
    assert not result.converged and not result.stopped_early and result.epochs == 3
    reg = Regularizer(model, L1(1.0))
    measured = stationarity(model, reg, torch.tensor(X), torch.tensor(y), "mse", FISTA_CONFIG.lr)
    assert measured == pytest.approx(result.stationarity) and measured > 1e-3


def test_a_centred_target_converges_although_its_intercept_has_no_scale():
    """The optimal intercept of a centred target is 0; in floating point it rounds around
    0, and relative to itself it never settles. Measured against the model's size it
    does: also when λ is past λ_max and every weight is 0 too."""
    X, y = diabetes("standardized")
    for alpha in (0.005, 10.0):  # 10 > alpha_max: the optimum is all zero
        model, result = solve(L1(from_sklearn_lasso(alpha)), X, y)
        assert result.converged and result.epochs < 1000
        coef, bias = weights(model)
        assert abs(bias[0]) < 1e-9  # the optimum: 0
    assert np.all(coef == 0)


def test_largest_relative_change():
    w, b = torch.tensor([3.0, 4.0], dtype=torch.float64), torch.tensor([1e-12], dtype=torch.float64)
    assert float(largest_relative_change([w, b], [w, b])) == 0.0
    assert float(largest_relative_change([w, b], [w + torch.tensor([0.0, 0.05]), b])) == pytest.approx(0.01)
    # a tensor under a thousandth of the whole: measured against that thousandth (5e-3)
    assert float(largest_relative_change([w, b], [w, b + 5e-5])) == pytest.approx(0.01)
    # no scale at all but the reference's
    zero = torch.zeros(2, dtype=torch.float64)
    assert math.isinf(float(largest_relative_change([zero], [zero + 1.0])))
    assert float(largest_relative_change([zero], [zero + 1e-6], [w])) == pytest.approx(1e-6 * 2**0.5 / 5e-3)


# ------------------------------------------------------------------ how it trains
def test_validation_is_scored_and_held_weights_stay_zero():
    """after_step holds column 0 at zero: the fit is Lasso on the other columns."""
    X, y = diabetes("raw")
    model = nn.Linear(X.shape[1], 1).double()
    reg = Regularizer(model, L1(1.0))

    @torch.no_grad()
    def hold() -> None:
        model.weight[:, 0] = 0.0

    data = torch.tensor(X), torch.tensor(y)
    result = fista(model, *data, regularizer=reg, validation=data, after_step=hold)
    sk = Lasso(alpha=0.5, tol=1e-14, max_iter=1_000_000).fit(X[:, 1:], y)
    assert result.converged  # the constrained problem's stationarity: the held weight's step projected too
    assert model.weight[0, 0] == 0 and relative(model.weight.detach()[0, 1:], sk.coef_) < 1e-5
    assert len(result.val_loss) == len(result.train_loss) == result.epochs
    assert result.val_loss == pytest.approx(result.train_loss)  # the same data, the same points


def test_train_runs_fista_from_its_config():
    X, y = diabetes("raw")
    model = nn.Linear(X.shape[1], 1).double()
    reg = Regularizer(model, L1(1.0))
    result = train(model, torch.tensor(X), torch.tensor(y), regularizer=reg, config=FISTA_CONFIG)
    assert isinstance(result, FistaResult) and result.converged
    sk = Lasso(alpha=0.5, tol=1e-14, max_iter=1_000_000).fit(X, y)
    assert relative(model.weight.detach(), sk.coef_) < 1e-5


def test_a_path_with_fista_is_lassos_path():
    """A given grid, no dense start: each λ warm-started from the last, none held out."""
    X, y = diabetes("raw")
    alphas = np.array([0.05, 0.5, 2.0])
    config = PathConfig(
        lambdas=tuple(from_sklearn_lasso(a) for a in alphas),
        dense_start=False,
        val_fraction=0.0,
        train_config=FISTA_CONFIG,
        dense_config=FISTA_CONFIG,
    )
    model = nn.Linear(X.shape[1], 1).double()
    path = regularization_path(model, X, y, penalty=L1(), config=config, keep_states=True)
    for alpha, point in zip(alphas, path.points):
        sk = Lasso(alpha=alpha, tol=1e-14, max_iter=1_000_000).fit(X, y)
        assert point.state is not None and relative(point.state["weight"], sk.coef_) < 1e-5
        assert point.stationarity <= FISTA_CONFIG.tol


def test_a_non_finite_start_is_a_divergence():
    X, y = diabetes("raw")
    y[3] = np.inf
    model = nn.Linear(X.shape[1], 1).double()
    start = model.weight.detach().clone()
    with pytest.raises(Diverged, match=r"epoch 0: the objective at the start is (nan|inf)"):
        fista(model, torch.tensor(X), torch.tensor(y), regularizer=Regularizer(model, L1(1.0)))
    assert torch.equal(model.weight.detach(), start)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_solution():
    X, y = diabetes("raw")
    cpu, _ = solve(L1(1.0), X, y)
    model = nn.Linear(X.shape[1], 1).double().cuda()
    data = torch.tensor(X, device="cuda"), torch.tensor(y, device="cuda")
    result = fista(model, *data, regularizer=Regularizer(model, L1(1.0)))
    assert result.converged
    assert relative(model.weight.detach().cpu(), cpu.weight.detach()) < 1e-6


# ------------------------------------------------------------------ errors
def test_errors_name_the_parameter():
    model = nn.Linear(3, 1)
    X, y = torch.randn(10, 3), torch.randn(10)
    with pytest.raises(InputError, match=r"^batch_size must be None \(full batch\) with optimizer='fista', got 64$"):
        TrainConfig(optimizer="fista", batch_size=64)
    with pytest.raises(InputError, match=r"^optimizer_kwargs must be empty with optimizer='fista', got"):
        TrainConfig(optimizer="fista", batch_size=None, optimizer_kwargs={"momentum": 0.9})
    with pytest.raises(InputError, match=r"^optimizer 'fista' is a full-batch solver that train\(\) runs itself"):
        make_optimizer("fista", model.parameters(), lr=1.0)
    with pytest.raises(InputError, match=r"^optimizer must be None with config.optimizer='fista'"):
        train(model, X, y, config=FISTA_CONFIG, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    loss_mode = Regularizer(model, Rule(L1(0.1), mode="loss"))
    with pytest.raises(InputError, match=r"terms must be in mode 'proximal', got 'loss'"):
        fista(model, X, y, regularizer=loss_mode)
    for name, value, rule in [("tol", -1.0, ">= 0"), ("max_iter", 0, ">= 1"), ("step_size", 0.0, "> 0")]:
        with pytest.raises(InputError, match=rf"^{name} must be .*{rule}, got"):
            fista(model, X, y, **{name: value})
    with pytest.raises(InputError, match=r"^loss must be one of"):
        fista(model, X, y, loss="hinge")

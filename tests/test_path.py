"""Regularization paths: against scikit-learn's paths, and their bookkeeping."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine
from sklearn.linear_model import enet_path, lasso_path

from shrinkage import L1, L2, ElasticNet, GroupLasso, InputError
from shrinkage.convert import to_sklearn_enet
from shrinkage.models import MLP
from shrinkage.path import (
    FIT_CONFIG,
    PathConfig,
    PathPoint,
    _RelaxedFits,
    capped_epochs,
    folds_relaxed_epochs,
    lambda_grid,
    next_lambda,
    regularization_path,
)
from shrinkage.train import TrainConfig, TrainResult

# Full-batch proximal gradient (SGD, no momentum) run until the objective changes by
# less than 1e-12 (relative) for 50 epochs: on these well-conditioned problems that
# leaves the weights within ~1e-6 of the optimum (measured: 1e-7 to 2e-6), so 1e-4
# relative to the largest coefficient is a safe bound that still catches any error in
# the prox, the step or the λ conversion (those show up at 1e-2 and above).
EXACT = TrainConfig(
    optimizer="sgd", lr=0.1, batch_size=None, max_epochs=20_000, patience=50, tol=1e-12, monitor="objective"
)


def linear_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((100, 10)) + 0.5  # not centered: the intercept matters
    coef = np.array([3, -2, 0, 0, 1.5, 0, 0, 0, 0.5, 0])
    y = X @ coef + 0.5 * rng.standard_normal(100) + 2.0
    return X, y


def sklearn_path(penalty, X, y, lambdas):
    """scikit-learn's coefficients at our λ (ascending), on centered data (its intercept)."""
    Xc, yc = X - X.mean(0), y - y.mean()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(penalty, L1):
            _, coefs, _ = lasso_path(Xc, yc, alphas=lambdas / 2, tol=1e-14, max_iter=100_000)
            alpha_max = lasso_path(Xc, yc, n_alphas=1)[0][0]
            lam_max = 2 * alpha_max
        else:
            alphas, ratio = zip(*(to_sklearn_enet(lam, penalty.l1_ratio) for lam in lambdas))
            _, coefs, _ = enet_path(Xc, yc, l1_ratio=ratio[0], alphas=np.array(alphas), tol=1e-14, max_iter=100_000)
            alpha_max = enet_path(Xc, yc, l1_ratio=ratio[0], n_alphas=1)[0][0]
            lam_max = alpha_max * (1 + ratio[0])  # our λ for sklearn's alpha_max
    return coefs[:, ::-1].T, lam_max  # sklearn orders by decreasing alpha


@pytest.mark.parametrize("penalty", [L1(), ElasticNet(l1_ratio=0.5), ElasticNet(l1_ratio=0.2)], ids=repr)
def test_linear_path_matches_sklearn(penalty):
    X, y = linear_problem()
    path = regularization_path(
        torch.nn.Linear(10, 1).double(),
        X,
        y,
        penalty=penalty,
        n_lambdas=8,
        lambda_min_ratio=1e-2,
        val_fraction=0,
        train_config=EXACT,
        dense_start=False,
        keep_states=True,
        extend=0,
    )
    theirs, lam_max = sklearn_path(penalty, X, y, path.lambdas)
    assert path.lambda_max == pytest.approx(lam_max, rel=1e-12)  # the exact λ_max
    assert path.lambdas[-1] == pytest.approx(lam_max, rel=1e-12)
    for point, coef in zip(path.points, theirs):
        ours = point.state["weight"].numpy().ravel()
        if point.lambda_ < 0.999 * path.lambda_max:
            assert np.max(np.abs(ours - coef)) < 1e-4 * np.max(np.abs(coef))
            assert np.array_equal(ours == 0, coef == 0)
            intercept = y.mean() - X.mean(0) @ coef
            assert point.state["bias"].item() == pytest.approx(intercept, abs=1e-4)
        else:  # at λ_max the optimum is 0; the last coordinate reaches its kink slowly
            assert np.max(np.abs(ours)) < 1e-4


def test_grid_is_geometric_and_increasing():
    grid = lambda_grid(2.0, n_lambdas=5, lambda_min_ratio=1e-4)
    np.testing.assert_allclose(grid, [2e-4, 2e-3, 2e-2, 2e-1, 2.0])


def test_automatic_path_extends_until_all_zero_then_stops():
    X, y = linear_problem()
    path = regularization_path(
        torch.nn.Linear(10, 1).double(),
        X,
        y,
        penalty=L1(),
        n_lambdas=6,
        lambda_min_ratio=1e-2,
        val_fraction=0,
        train_config=EXACT.replace(max_epochs=50),
        dense_start=False,
    )
    # 50 epochs leave a weight at its kink alive at λ_max: the path goes one step further
    assert len(path) == 7 and path.lambdas[-1] > path.lambda_max
    assert path.points[-1].n_nonzero == 0 and path.points[-2].n_nonzero > 0


def test_network_path_records_and_ends_without_features():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6))
    y = np.tanh(2 * X[:, 0]) + X[:, 1] + 0.1 * rng.standard_normal(200)
    seen = []
    path = regularization_path(
        lambda: MLP(6, (8,)),
        X,
        y,
        penalty=GroupLasso(groups="input"),
        n_lambdas=8,
        train_config=TrainConfig(lr=1e-2, batch_size=50, max_epochs=60, patience=5, monitor="objective"),
        feature_names=list("abcdef"),
        callback=seen.append,
    )
    assert sorted(seen, key=lambda point: point.lambda_) == path.points  # in the order trained
    assert len(path) == 8  # n_lambdas honoured: λ added below the grid when the model got constant early
    assert path.dense is not None and path.dense.n_features == 6 and path.dense.lambda_ == 0.0
    assert path.points[-1].n_features == 0  # an automatic path ends with no input left
    assert all(b > a for a, b in zip(path.lambdas, path.lambdas[1:]))
    first = path.points[0]
    assert first.state is None  # weights only when asked
    assert first.epochs >= 1 and first.seconds > 0 and np.isnan(first.test_loss)
    assert first.feature_names == [list("abcdef")[j] for j in first.features]
    record = first.record()
    assert "state" not in record and record["lambda_"] == first.lambda_
    left_out = {"state", "relaxed_state", "train_curve", "val_curve", "feature_norms"}
    assert list(record) == [f.name for f in dataclasses.fields(first) if f.name not in left_out] + ["n_features"]
    assert record["features"] == first.features and record["features"] is not first.features  # a copy
    assert record["stationarity"] == first.stationarity >= 0  # measured at every point, stored with it
    assert all(np.isfinite(point.stationarity) for point in [path.dense, *path.points])
    exits = path.feature_exit_lambdas()
    assert np.all(np.isfinite(exits)) and exits.min() >= path.lambdas[0]
    # the two real inputs are the last to go
    assert set(np.argsort(exits)[-2:]) == {0, 1}


def test_callback_can_stop_the_path():
    X, y = linear_problem()
    seen = []

    def stop_at_third(point):
        seen.append(point)
        return len(seen) == 3

    path = regularization_path(
        torch.nn.Linear(10, 1),
        X,
        y,
        penalty=L1(),
        n_lambdas=10,
        val_fraction=0,
        dense_start=False,
        train_config=TrainConfig(max_epochs=5),
        callback=stop_at_third,
    )
    assert len(path) == 3


@pytest.mark.parametrize("rows, threads_during", [(60, 1), (80_000, 2)])
def test_a_small_path_trains_on_one_thread_and_gives_the_count_back(rows, threads_during):
    """Small work (rows × width below 2**22) on one torch thread, as the batched engine:
    threads that wait on each other at every operation made small fits far slower on busy
    cores. Larger work keeps the caller's threads; the count is restored either way."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, 3))
    y = X[:, 0] + 0.1 * rng.standard_normal(rows)
    seen = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        regularization_path(
            MLP(3, (64,)),
            X,
            y,
            penalty=L1(),
            lambdas=[0.01],
            dense_start=False,
            train_config=TrainConfig(max_epochs=1),
            callback=lambda point: seen.append(torch.get_num_threads()),
        )
        assert seen == [threads_during] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_user_grid_and_test_scores():
    X, y = linear_problem()
    path = regularization_path(
        torch.nn.Linear(10, 1),
        X[:80],
        y[:80],
        penalty=L2(),
        lambdas=[0.01, 0.1, 1.0],
        test=(X[80:], y[80:]),
        train_config=TrainConfig(max_epochs=5),
    )
    np.testing.assert_allclose(path.lambdas, [0.01, 0.1, 1.0])
    assert path.lambda_max is None
    assert all(np.isfinite(p.test_loss) for p in path.points)


def test_same_seed_same_path():
    X, y = linear_problem()
    kwargs = dict(penalty=L1(), n_lambdas=5, train_config=TrainConfig(max_epochs=10, lr=1e-2), keep_states=True, seed=3)
    a = regularization_path(lambda: MLP(10, (4,)), X, y, **kwargs)
    b = regularization_path(lambda: MLP(10, (4,)), X, y, **kwargs)
    assert [p.record() | {"seconds": 0} for p in a.points] == [p.record() | {"seconds": 0} for p in b.points]
    for p, q in zip(a.points, b.points):
        assert all(torch.equal(p.state[k], q.state[k]) for k in p.state)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_classification_paths(task):
    X, y = load_wine(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    if task == "binary":
        y = (y == 0).astype(int)
    out = 1 if task == "binary" else 3
    path = regularization_path(
        lambda: MLP(13, (8,), out),
        X,
        y,
        task=task,
        penalty=L1(),
        n_lambdas=5,
        train_config=TrainConfig(lr=1e-2, max_epochs=30, patience=5, monitor="objective"),
    )
    assert path.points[0].val_loss < 0.5  # cross-entropy of a good classifier
    assert path.points[-1].n_nonzero < path.points[0].n_nonzero


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_a_points_training_loss_is_evaluates(task):
    """A point's training loss comes from the gradient pass its stationarity makes: it is
    :func:`~shrinkage.train.evaluate`'s mean loss of the point's weights on the training
    rows (the oracle), to the last bit."""
    from shrinkage.train import evaluate

    X, y = load_wine(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    loss, out, target = {
        "regression": ("mse", 1, torch.tensor(X[:, 0] * 2.0)),
        "binary": ("bce", 1, torch.tensor((y == 0).astype(np.float64))),
        "multiclass": ("cross_entropy", 3, torch.tensor(y)),
    }[task]
    path = regularization_path(
        lambda: MLP(13, (8,), out).double(),
        X,
        target.numpy(),
        task=task,
        penalty=L1(),
        n_lambdas=4,
        val_fraction=0.0,
        keep_states=True,
        train_config=TrainConfig(lr=1e-2, max_epochs=20, patience=5, monitor="objective"),
    )
    model = MLP(13, (8,), out).double()
    for point in path.points:
        model.load_state_dict(point.state)
        assert point.train_loss == evaluate(model, torch.tensor(X), target, loss)


def test_relaxed_fit_is_recorded():
    X, y = linear_problem()
    path = regularization_path(
        lambda: MLP(10, (4,)),
        X[:80],
        y[:80],
        penalty=GroupLasso(),
        lambdas=[0.05, 0.5],
        relax=True,
        test=(X[80:], y[80:]),
        train_config=TrainConfig(lr=1e-2, max_epochs=20),
        keep_states=True,
    )
    for point in path.points:
        assert np.isfinite(point.relaxed_val_loss) and np.isfinite(point.relaxed_test_loss)
        weight = point.relaxed_state["0.weight"]
        dropped = [j for j in range(10) if j not in point.features]
        assert torch.all(weight[:, dropped] == 0)  # unused inputs stay exactly zero


Xg, yg = linear_problem()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(X=np.zeros((0, 3)), y=np.zeros(0)),
            ValueError,
            "X must be non-empty, got an array of shape (0, 3)",
        ),
        (
            dict(X=np.ones(5), y=np.ones(5)),
            ValueError,
            "X must be a 2-D array (rows × features), got an array of shape (5,)",
        ),
        (
            dict(X=np.array([[1.0, np.nan]] * 4), y=np.ones(4)),
            ValueError,
            "X must be free of NaN and infinite values, got 4 such value(s)",
        ),
        (
            dict(X=np.ones((4, 2)), y=np.array([1.0, np.inf, 0, 0])),
            ValueError,
            "y must be free of NaN and infinite values, got 1 such value(s)",
        ),
        (
            dict(X=np.ones((4, 2)), y=np.ones(3)),
            ValueError,
            "y must have one value per row of X (4), got 3 values",
        ),
        (dict(X=[["a", "b"]], y=[1]), TypeError, "X must be a 2-D array of numbers, got"),
        (
            dict(lambdas=[0.1, 0.0, 1.0]),
            ValueError,
            "lambdas must be a non-empty, strictly increasing sequence of finite numbers > 0",
        ),
        (dict(lambdas=[1.0, 0.1]), ValueError, "lambdas must be a non-empty, strictly increasing sequence"),
        (dict(lambdas=[-1.0]), ValueError, "lambdas must be a non-empty, strictly increasing sequence"),
        (dict(lambdas=[], dense_start=False), ValueError, "lambdas must be a non-empty"),
        (dict(penalty="l1"), TypeError, "penalty must be a Penalty (L1(), GroupLasso(), …) or rules, got 'l1'"),
        (
            dict(task="binary", y=np.zeros(100)),
            ValueError,
            "y must have at least two classes, got one class: 0",
        ),
        (
            dict(task="binary", y=np.arange(100) % 3),
            ValueError,
            "y must be 0 or 1 for task='binary', got classes [0.0, 1.0, 2.0]",
        ),
        (
            dict(task="multiclass", y=np.full(100, 0.5)),
            ValueError,
            "y must be integer class indices >= 0 for task='multiclass'",
        ),
        (
            dict(task="ranking"),
            ValueError,
            "task must be one of 'regression', 'binary', 'multiclass', got 'ranking'",
        ),
        (dict(val_fraction=1.0), ValueError, "val_fraction must be a finite number in [0, 1), got 1.0"),
        (dict(n_lambdas=0), ValueError, "n_lambdas must be an integer >= 1, got 0"),
        (
            dict(lambda_min_ratio=2.0),
            ValueError,
            "lambda_min_ratio must be a finite number in (0, 1), got 2.0",
        ),
        (dict(model="mlp"), TypeError, "model must be an nn.Module or a callable returning one, got 'mlp'"),
        (
            dict(model=lambda: torch.nn.Linear(10, 2)),
            ValueError,
            "model must output 1 column(s) per row for task='regression', got output of shape (1, 2)",
        ),
        (
            dict(feature_names=["a"]),
            ValueError,
            "feature_names must have one name per column of X (10), got 1 names",
        ),
    ],
)
def test_bad_input(kwargs, error, message):
    args = dict(model=torch.nn.Linear(10, 1), X=Xg, y=yg, penalty=L1(), train_config=TrainConfig(max_epochs=1))
    args.update(kwargs)
    with pytest.raises(error) as info:
        regularization_path(args.pop("model"), args.pop("X"), args.pop("y"), **args)
    assert message in str(info.value)


def test_progress_is_quiet_unless_asked(capsys):
    X, y = linear_problem()
    kwargs = dict(penalty=L1(), lambdas=[0.1, 1.0], train_config=TrainConfig(max_epochs=2))
    regularization_path(torch.nn.Linear(10, 1), X, y, **kwargs)  # stderr is not a terminal here
    assert capsys.readouterr().err == ""
    regularization_path(torch.nn.Linear(10, 1), X, y, progress=True, **kwargs)  # asked: it runs


# ------------------------------------------------------------- the path's steps alone
def _point_at(lam: float, *, features=(0, 1), nonzero: int = 3, diverged: bool = False) -> PathPoint:
    return PathPoint(
        lam, 0.0, 0.0, 0.0, 0.0, nonzero, 4, 0, 0, list(features), [], 0, 1, 0.0, diverged=diverged
    )  # fmt: skip


def test_next_lambda_walks_the_grid_then_extends_while_weights_survive():
    grid = np.array([0.01, 0.1, 1.0])
    steps = dict(extend=2, automatic=True, sparsifying=True, ratio=10.0)
    points = [_point_at(lam) for lam in grid]
    assert [next_lambda(grid, points[:k], **steps) for k in range(3)] == [0.01, 0.1, 1.0]
    assert next_lambda(grid, points, **steps) == pytest.approx(10.0)  # weights survive λ_max: go on
    points += [_point_at(10.0), _point_at(100.0)]
    assert next_lambda(grid, points, **steps) is None  # `extend` used up
    assert next_lambda(grid, points[:3], **{**steps, "sparsifying": False}) is None  # L2: no zero to reach
    assert next_lambda(grid, points[:3], **{**steps, "automatic": False}) is None  # a given grid is the grid


def test_next_lambda_stops_an_automatic_path_once_nothing_is_left():
    grid = np.array([0.01, 0.1, 1.0])
    for ended in (_point_at(0.01, features=()), _point_at(0.01, nonzero=0)):
        assert next_lambda(grid, [ended], automatic=True) is None
        assert next_lambda(grid, [ended], automatic=False) == 0.1  # a given grid is walked to its end
    # a diverged λ says nothing about the weights: the path goes on
    assert next_lambda(grid, [_point_at(0.01, features=(), diverged=True)], automatic=True) == 0.1


def test_relaxed_fits_are_made_once_per_feature_set_and_length():
    fitted = []

    def fit(features, config):
        fitted.append((features, config.max_epochs))
        return torch.nn.Linear(3, 1), TrainResult(epochs=min(config.max_epochs, 20), best_epoch=7)

    config = TrainConfig(max_epochs=50)
    fits = _RelaxedFits(fit, lambda model: (1.0, 2.0), config, keep_states=False)
    assert fits([0, 2]) == (1.0, 2.0, None, 8)  # stopped early: the best epoch's weights, after 8
    assert fits((0, 2))[:2] == (1.0, 2.0) and fits([1])[:2] == (1.0, 2.0)
    assert fits([1], 30)[:2] == (1.0, 2.0)  # at most 30 epochs: a fit of its own
    assert fits([1], 80)[:2] == (1.0, 2.0)  # a cap above max_epochs: the fit stopped early already
    assert fitted == [([0, 2], 50), ([1], 50), ([1], 30)] and len(fits) == 3
    kept = _RelaxedFits(fit, lambda model: (1.0, 2.0), config, keep_states=True)([0])[2]
    assert set(kept) == {"weight", "bias"}


def test_the_full_data_relaxed_fit_trains_no_longer_than_its_longest_fold():
    def at(lambda_, epochs, diverged=False):
        point = PathPoint(lambda_, *[0.0] * 4, *[0] * 4, [], [], 0, 0, 0.0, diverged=diverged)
        point.relaxed_epochs = epochs
        return point

    folds = [[at(0.1, 10), at(0.2, 30)], [at(0.1, 20), at(0.2, None)], [at(0.1, 41), at(0.2, 5, diverged=True)]]
    # the longest of the folds' fits at each λ; none where no fold has one
    assert folds_relaxed_epochs([0.1, 0.2, 0.3], folds) == [41, 30, None]
    assert capped_epochs(FIT_CONFIG, 25) == FIT_CONFIG.replace(max_epochs=25)
    assert capped_epochs(FIT_CONFIG, 10**6) == FIT_CONFIG


def test_path_config_validates_and_takes_keyword_overrides():
    config = PathConfig(n_lambdas=5, lambdas=[0.1, 1])
    assert config.lambdas == (0.1, 1.0) and config.replace(relax=True).relax
    with pytest.raises(InputError, match="PathConfig has no option 'n_lambda'; its options are lambdas, n_lambdas"):
        config.replace(n_lambda=3)
    with pytest.raises(InputError, match=r"config must be a PathConfig \(a TrainConfig goes in train_config="):
        regularization_path(torch.nn.Linear(2, 1), np.zeros((4, 2)), np.zeros(4), penalty=L1(), config=TrainConfig())
    with pytest.raises(InputError, match="on_divergence must be one of 'raise', 'skip', got 'ignore'"):
        PathConfig(on_divergence="ignore")
    with pytest.raises(InputError, match="train_config must be a TrainConfig, got 3"):
        PathConfig(train_config=3)


def test_the_model_lives_on_the_path():
    X, y = linear_problem()[:2]
    start = torch.nn.Linear(X.shape[1], 1)
    path = regularization_path(start, X, y, penalty=L1(), lambdas=[0.01, 0.1], keep_states=True, seed=1)
    assert isinstance(path.model, torch.nn.Linear) and path.model is not start  # the given model is copied
    # the model is the path's last point: its weights are the ones recorded at the largest λ
    torch.testing.assert_close(path.model.state_dict(), path.points[-1].state, rtol=0, atol=0)
    assert not torch.equal(path.points[0].state["weight"], path.points[-1].state["weight"])

"""Cross-validation: glmnet's λ_min / λ_1se rule, feature recovery, determinism, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes

from shrinkage import L1, GroupLasso
from shrinkage.cv import cross_validate, one_standard_error
from shrinkage.models import MLP
from shrinkage.study.datasets import make_synthetic
from shrinkage.train import TrainConfig, evaluate


def test_one_standard_error_by_hand():
    lambdas = np.array([0.1, 0.2, 0.4, 0.8])
    scores = np.array([[1.0, 0.8, 0.9, 2.0], [1.2, 0.6, 0.8, 2.2], [1.1, 1.0, 0.95, 1.9]])
    weights = np.array([10, 10, 20])
    mean, se, i_min, i_1se = one_standard_error(scores, lambdas, weights)
    # glmnet: cvm = weighted mean; cvsd = sqrt(weighted mean of squared deviations / (K - 1))
    expected_mean = (10 * scores[0] + 10 * scores[1] + 20 * scores[2]) / 40
    deviations = (scores - expected_mean) ** 2
    expected_se = np.sqrt((10 * deviations[0] + 10 * deviations[1] + 20 * deviations[2]) / 40 / 2)
    np.testing.assert_allclose(mean, expected_mean)
    np.testing.assert_allclose(se, expected_se)
    # by hand: means 1.1, 0.85, 0.9, 2.0; se at the best = sqrt(1.1/40/2) = 0.1173,
    # so every λ with mean <= 0.967 qualifies and the largest is 0.4
    np.testing.assert_allclose(mean, [1.1, 0.85, 0.9, 2.0])
    assert se[1] == pytest.approx(math.sqrt(1.1 / 40 / 2))
    assert (i_min, i_1se) == (1, 2)


def test_one_standard_error_picks_the_largest_lambdas():
    lambdas = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    scores = np.array([[1.0, 0.5, 0.5, 0.55, 3.0], [1.0, 0.5, 0.5, 0.65, 3.0]])
    _, se, i_min, i_1se = one_standard_error(scores, lambdas)
    assert i_min == 2  # a tie at the minimum goes to the larger λ
    assert se[i_min] == 0.0 and i_1se == 2
    # the best mean (0.5) now has se 0.1: λ = 0.8 (mean 0.58) qualifies although
    # λ = 0.4 (0.7) between them does not; glmnet takes the largest qualifying λ
    scores = np.array([[1.0, 0.4, 0.7, 0.58, 3.0], [1.0, 0.6, 0.7, 0.58, 3.0]])
    _, se, i_min, i_1se = one_standard_error(scores, lambdas)
    assert se[1] == pytest.approx(0.1)
    assert (i_min, i_1se) == (1, 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cv_lambda_1se_keeps_exactly_the_true_features(seed):
    """5 relevant features of 50, a nonlinear target with noise, n = 600."""
    data = make_synthetic(600, 50, noise=0.5, seed=seed)
    X = (data.X - data.X.mean(0)) / data.X.std(0)
    y = (data.y - data.y.mean()) / data.y.std()
    result = cross_validate(  # the default training configs
        lambda: MLP(50, (16,)),
        X,
        y,
        penalty=GroupLasso(groups="input"),
        cv=5,
        n_lambdas=20,
        lambda_min_ratio=1e-2,
        relax=True,
        n_jobs=2,
        seed=seed,
    )
    assert result.lambda_1se >= result.lambda_min
    assert result.lambda_1se in result.lambdas and result.lambda_min in result.lambdas
    assert result.selected_features == data.true_features
    # and the selected (relaxed) model predicts well on fresh data from the same source
    fresh = make_synthetic(2000, 50, noise=0.5, seed=100 + seed)
    Xf = torch.tensor((fresh.X - data.X.mean(0)) / data.X.std(0), dtype=torch.float32)
    yf = torch.tensor((fresh.y - data.y.mean()) / data.y.std(), dtype=torch.float32)
    assert evaluate(result.model, Xf, yf, "mse") < 0.15


def _small(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((90, 6))
    y = X[:, 0] - 2 * X[:, 1] + 0.3 * rng.standard_normal(90)
    return X, y


def test_results_do_not_depend_on_n_jobs_and_repeat_with_the_seed():
    X, y = _small()
    kwargs = dict(
        penalty=L1(),
        cv=3,
        n_lambdas=5,
        train_config=TrainConfig(lr=1e-2, max_epochs=15, monitor="objective"),
        dense_config=TrainConfig(
            lr=3e-2, batch_size=None, max_epochs=100, patience=10
        ),  # (the default's 2000 took most)
    )
    a = cross_validate(lambda: MLP(6, (4,)), X, y, n_jobs=1, **kwargs)
    b = cross_validate(lambda: MLP(6, (4,)), X, y, n_jobs=2, **kwargs)
    c = cross_validate(lambda: MLP(6, (4,)), X, y, n_jobs=1, **kwargs)
    for other in (b, c):
        np.testing.assert_array_equal(a.lambdas, other.lambdas)
        np.testing.assert_array_equal(a.scores, other.scores)
        assert (a.index_min, a.index_1se) == (other.index_min, other.index_1se)
        for p, q in zip(a.folds, other.folds):
            assert [r.features for r in p.points] == [r.features for r in q.points]
        assert all(torch.equal(s, t) for s, t in zip(a.model.state_dict().values(), other.model.state_dict().values()))


def test_cv_result_fields_and_selection():
    X, y = _small()
    result = cross_validate(
        lambda: MLP(6, (4,)),
        X,
        y,
        penalty=L1(),
        cv=3,
        n_lambdas=5,
        selection="min",
        train_config=TrainConfig(lr=1e-2, max_epochs=15, monitor="objective"),
    )
    assert result.scores.shape == (3, len(result.lambdas))
    assert result.fold_sizes.tolist() == [30, 30, 30]
    assert result.lambda_ == result.lambda_min and result.index == result.index_min
    assert result.selected_features == result.path.points[result.index_min].features
    # the returned model is the full-data path's model at that λ
    state = result.path.points[result.index_min].state
    assert all(torch.equal(state[k], v) for k, v in result.model.state_dict().items())


def test_stratified_binary_cv():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 5))
    y = (X[:, 0] + 0.5 * rng.standard_normal(120) > 0.8).astype(int)  # unbalanced classes
    result = cross_validate(
        lambda: MLP(5, (4,)),
        X,
        y,
        task="binary",
        penalty=L1(),
        cv=4,
        n_lambdas=4,
        train_config=TrainConfig(lr=1e-2, max_epochs=10, monitor="objective"),
    )
    assert np.all(np.isfinite(result.scores))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(cv=1), ValueError, "cv must be an integer >= 2, got 1"),
        (dict(cv=100), ValueError, "cv must be at most the number of samples (n_samples=90), got 100"),
        (dict(cv=2.5), TypeError, "cv must be an integer >= 2, got 2.5"),
        (dict(selection="best"), ValueError, "selection must be one of '1se', 'min', got 'best'"),
        (
            dict(task="binary", X=np.zeros((4, 6)), y=np.r_[np.zeros(2), np.ones(2)]),
            ValueError,
            "cv must be at most the size of the largest class (2) for stratified folds, got 3",
        ),
        (
            dict(task="binary", y=np.zeros(90)),
            ValueError,
            "y must have at least two classes, got one class: 0",
        ),
        (dict(X=np.zeros((0, 6)), y=np.zeros(0)), ValueError, "X must be non-empty"),
        (dict(lambdas=[0.2, 0.1]), ValueError, "lambdas must be a non-empty, strictly increasing sequence"),
        # (a new user's trial: an empty grid was "training diverged at every λ of the grid")
        (dict(lambdas=[]), ValueError, "lambdas must be non-empty for cross-validation, which chooses among them"),
    ],
)
def test_bad_input(kwargs, error, message):
    X, y = _small()
    args = dict(X=X, y=y, penalty=L1(), cv=3, train_config=TrainConfig(max_epochs=1))
    args.update(kwargs)
    with pytest.raises(error) as info:
        cross_validate(lambda: MLP(6, (2,)), args.pop("X"), args.pop("y"), **args)
    assert message in str(info.value)


def test_a_class_smaller_than_cv_warns_and_folds_as_scikit_learn():
    """StratifiedKFold's rule: a class with fewer rows than folds is a warning (some folds
    lack it), and the folds are StratifiedKFold's, index for index."""
    from sklearn.model_selection import StratifiedKFold

    X, _ = _small()
    y = np.r_[np.zeros(88), np.ones(2)]
    with pytest.warns(UserWarning, match=r"the smallest class has 2 rows, fewer than cv=3: some folds have none"):
        result = cross_validate(
            lambda: MLP(6, (2,)),
            X,
            y,
            penalty=L1(),
            task="binary",
            cv=3,
            n_lambdas=2,
            seed=4,
            train_config=TrainConfig(max_epochs=2),
        )
    assert result.scores.shape[0] == 3 and np.isfinite(result.scores).all()
    with pytest.warns(UserWarning, match="least populated class"):
        expected = list(StratifiedKFold(3, shuffle=True, random_state=4).split(X, y))
    from shrinkage.cv import _folds

    with pytest.warns(UserWarning):
        ours = _folds(y.astype(int), "binary", 3, 4)
    for (train, test), (their_train, their_test) in zip(ours, expected, strict=True):
        np.testing.assert_array_equal(train, their_train)
        np.testing.assert_array_equal(test, their_test)


def _noise_free(engine: str = "sequential"):
    """Noise-free linear data: the less penalty the better, so λ_min is the grid's edge.
    Trained by SGD (the sequential engine) or Adam (which the batched engine takes)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 3))
    sgd = engine == "sequential"
    kind = dict(optimizer="sgd", lr=0.2) if sgd else dict(optimizer="adam", lr=3e-2)
    train_config = TrainConfig(**kind, batch_size=None, max_epochs=200, patience=20)
    return X, X @ np.array([1.0, -2.0, 0.5]), dict(penalty=L1(), cv=3, train_config=train_config, dense_start=False)


@pytest.mark.parametrize("grid", ["given", "automatic, not extended"])
def test_lambda_min_at_the_grids_smallest_lambda_warns(grid):
    from shrinkage.cv import GridEdgeWarning

    X, y, settings = _noise_free()
    settings |= dict(lambdas=(0.01, 0.03, 0.1, 0.3)) if grid == "given" else dict(n_lambdas=4, extend=0)
    # what to change: the grid given, or the automatic grid's ratio
    how = r"\(smaller values in lambdas=\)" if grid == "given" else r"\(a smaller lambda_min_ratio, or lambdas=\.\.\.\)"
    with pytest.warns(
        GridEdgeWarning, match=rf"lambda_min is the grid's smallest λ \([^)]*\): .*extend the grid down {how}"
    ):
        result = cross_validate(torch.nn.Linear(3, 1), X, y, **settings)
    assert result.at_grid_edge and result.index_min == 0 and len(result.lambdas) == 4


def test_the_grid_edge_is_a_minimum_at_or_tied_with_the_smallest_lambda_or_a_grid_of_constant_models():
    from shrinkage.cv import grid_edge

    lambdas, every = [0.1, 0.2, 0.4], np.ones(3, bool)
    kept = np.array([False, False, False])  # the full-data model uses some input at every λ
    assert grid_edge(lambdas, np.array([0.4, 0.5, 0.6]), every, 0, kept) == "lambda_min is the grid's smallest λ (0.1)"
    # relaxed refits of one feature set score alike: λ_min is the larger of the tied λ
    tied = grid_edge(lambdas, np.array([0.4, 0.4, 0.6]), every, 1, kept)
    assert tied == "the grid's smallest λ (0.1) ties lambda_min (0.2) for the lowest CV loss"
    assert (
        grid_edge(lambdas, np.array([0.4, 0.4, 0.6]), np.array([False, True, True]), 1, kept) is None
    )  # not choosable
    assert grid_edge(lambdas, np.array([0.6, 0.4, 0.5]), every, 1, kept) is None  # a minimum inside the grid
    flat = np.array([1.01, 1.0, 1.02])  # flat noise, nothing used
    constant = grid_edge(lambdas, flat, every, 1, np.ones(3, bool))
    assert constant == "every λ of the grid (down to 0.1) gives a model that uses no input"
    assert grid_edge(lambdas, flat, every, 1) is None  # (which models are constant not known)
    assert grid_edge(lambdas[:1], np.array([0.4]), every[:1], 0, kept[:1]) is None  # one λ: no edge to speak of


def test_a_refit_is_judged_by_the_level_or_the_shape_of_its_loss_along_the_path():
    """A full-data refit whose validation rows are harder than the folds' (its loss above
    every fold's at every λ) is consistent where its loss follows the folds' curve; one
    that jumps above the folds' where their curve does not rise (a cliff) is not. (A new
    user's trial: the level test alone left out 19 of 20 λ and returned a constant
    model.) A loss at the folds' level is consistent however low its own lowest."""
    from shrinkage.cv import consistent_refits

    scores = np.array([[0.50, 0.45, 0.47, 0.60, 1.00], [0.40, 0.38, 0.41, 0.55, 0.98], [0.45, 0.43, 0.44, 0.58, 1.02]])
    se = np.full(5, 0.02)
    harder = scores.mean(axis=0) + 0.3  # the folds' curve, shifted up past the worst fold's
    assert (harder[:4] > scores.max(axis=0)[:4] + se[:4]).all()  # what the level test left out
    assert consistent_refits(scores, se, harder).all()
    cliff = harder.copy()
    cliff[1] += 0.2  # the refit lost a feature at the second λ only
    assert consistent_refits(scores, se, cliff).tolist() == [True, False, True, True, True]
    assert consistent_refits(scores, se, np.full(5, math.nan)).all()  # no validation rows: nothing to judge
    with_nan = harder.copy()
    with_nan[0] = math.nan
    assert consistent_refits(scores, se, with_nan).all()
    optimistic = scores.mean(axis=0)
    optimistic[0] -= 0.2  # early stopping on its own rows, where it had the most inputs
    assert consistent_refits(scores, se, optimistic).all()
    assert consistent_refits(scores, se, optimistic + np.array([0, 0.3, 0, 0, 0])).tolist()[1] is False  # a cliff


def test_a_full_data_model_that_uses_no_input_where_the_folds_use_some_is_not_chosen():
    """Its CV loss would be the folds', while it predicts a constant (a new user's trial:
    training MSE 1.00 against a CV loss of 0.50; one fold had collapsed too, so the loss
    test of consistent_refits let it pass)."""
    from types import SimpleNamespace

    from shrinkage.cv import _summary

    def path(used, losses):
        points = [
            SimpleNamespace(lambda_=0.1 * 2**i, features=f, diverged=False, test_loss=loss, val_loss=math.nan)
            for i, (f, loss) in enumerate(zip(used, losses))
        ]
        return SimpleNamespace(points=points, lambdas=np.array([p.lambda_ for p in points]))

    folds = [
        path([[0], [0], []], [0.3, 0.4, 1.0]),
        path([[0], [], []], [0.35, 1.0, 1.0]),
        path([[1], [1], []], [0.3, 0.5, 1.0]),
    ]
    full = path([[], [0], []], [math.nan] * 3)  # collapsed at the smallest λ only
    summary = _summary(full, folds, np.array([10, 10, 10]), relax=False)
    assert summary.admissible.tolist() == [False, True, True]  # (the largest λ: constant everywhere, allowed)
    assert summary.index_min == 1


def test_a_lowest_cv_loss_left_out_for_its_full_data_model_is_noted_and_warned_when_it_matters(monkeypatch):
    """A new user's trial: 5 of 10 λ, the 4 smallest among them, were left out (their
    full-data model's own validation loss above the folds'), λ_min's loss 3× the lowest,
    and nothing said so.
    The path's notes say it whenever the lowest loss is left out; an
    InconsistentRefitWarning when λ_min's loss is higher by more than its standard error."""
    from shrinkage import cv
    from shrinkage.cv import InconsistentRefitWarning, _excluded_minimum

    lambdas, se = np.array([0.1, 0.2, 0.4, 0.8]), np.full(4, 0.01)
    mean = np.array([0.04, 0.05, 0.12, 0.5])
    assert _excluded_minimum(lambdas, mean, se, np.ones(4, bool), 0) is None
    note, warns = _excluded_minimum(lambdas, mean, se, np.array([False, False, True, True]), 2)
    assert warns and note == (
        "the lowest cross-validated loss (0.04, at λ=0.1) is at a λ whose full-data model does not agree with the "
        "folds' (result.admissible; 2 of 4 λ are left out): lambda_min (0.4) has 0.12 ± 0.01"
    )
    close = np.array([0.04, 0.045, 0.3, 0.5])  # within λ_min's standard error: a note only
    assert _excluded_minimum(lambdas, close, se, np.array([False, True, True, True]), 1)[1] is False
    assert _excluded_minimum(lambdas, np.full(4, np.nan), se, np.zeros(4, bool), 0) is None

    # through cross_validate: every refit but the largest λ's judged inconsistent
    monkeypatch.setattr(cv, "consistent_refits", lambda scores, se, losses: np.arange(scores.shape[1]) == 3)
    X, y, settings = _noise_free()
    with pytest.warns(InconsistentRefitWarning, match=r"the lowest cross-validated loss \([^)]*, at λ=0\.01\)"):
        result = cross_validate(torch.nn.Linear(3, 1), X, y, lambdas=(0.01, 0.03, 0.1, 0.3), **settings)
    assert result.index_min == 3 and result.path.notes[-1].startswith("the lowest cross-validated loss")


@pytest.mark.parametrize("engine", ["sequential", "batched"])
def test_an_automatic_grid_whose_cv_minimum_is_its_edge_goes_on_below_it(engine):
    """The grid continues below its smallest λ at its own ratio, a tenth of n_lambdas
    at a time, until the CV minimum is inside it or ``extend`` λ were added (then the
    warning says so). The λ added are what a cross-validation of that lower grid alone
    gives (each path's lower segment from its start), and the grid's own λ are as without
    the extension."""
    from shrinkage.cv import GridEdgeWarning

    X, y, settings = _noise_free(engine)
    edge = cross_validate(torch.nn.Linear(3, 1), X, y, n_lambdas=8, extend=0, **settings)
    assert edge.index_min == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cross_validate(torch.nn.Linear(3, 1), X, y, n_lambdas=8, **settings)
    assert result.engine == edge.engine == engine
    added = int((result.lambdas < edge.lambdas[0] * (1 - 1e-9)).sum())
    assert 1 <= added <= 7  # 1 at a time (8 / 10, at least 1), at most n_lambdas - 1 (< extend=10)
    ratio = edge.lambdas[1] / edge.lambdas[0]
    np.testing.assert_allclose(result.lambdas[: added + 1], edge.lambdas[0] * ratio ** np.arange(-added, 1), rtol=1e-12)
    # (extend=0 also kept the path from going past λ_max, which the default did here)
    np.testing.assert_array_equal(result.lambdas[added : added + 8], edge.lambdas)
    np.testing.assert_array_equal(result.scores[:, added : added + 8], edge.scores)
    for i in range(added):  # one λ a round, each its own lower segment
        alone = cross_validate(torch.nn.Linear(3, 1), X, y, lambdas=(result.lambdas[i],), **settings)
        np.testing.assert_array_equal(result.scores[:, i], alone.scores[:, 0])
    assert all(len(fold.points) == len(result.lambdas) for fold in result.folds)
    said = f"{added} smaller λ {'was' if added == 1 else 'were'} added below it"
    assert any(said in note for note in result.path.notes)
    edge_warnings = [w for w in caught if issubclass(w.category, GridEdgeWarning)]
    if result.index_min == 0:
        message = str(edge_warnings[0].message)
        assert added == 7 and "with the 7 λ added below the automatic grid" in message and "own span" in message
    else:
        assert not edge_warnings


def test_read_only_data_is_copied_at_the_boundary():
    """pandas' copy-on-write and memory maps give read-only arrays, on which torch warns
    (and must not write): check_X hands on a writable copy, the caller's array untouched;
    a writable array is not copied."""
    from shrinkage._arrays import check_X

    X, _ = _small()
    frozen = X.copy()
    frozen.flags.writeable = False
    checked = check_X(frozen)
    assert checked.flags.writeable and not frozen.flags.writeable and checked is not frozen
    np.testing.assert_array_equal(checked, X)
    assert check_X(X) is X


def test_a_constant_predictions_fold_losses_are_scikit_learns_dummy_models():
    """The baseline the chosen model is held against: scikit-learn's DummyRegressor (the
    mean) and DummyClassifier (the class shares) scored on the same folds."""
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.metrics import log_loss, mean_squared_error

    from shrinkage.cv import _constant_losses

    rng = np.random.default_rng(0)
    y_reg, y_cls = rng.standard_normal(40), rng.integers(0, 3, 40)
    folds = [(np.arange(10, 40), np.arange(10)), (np.arange(30), np.arange(30, 40))]
    for task, y, dummy, score in (
        ("regression", y_reg, DummyRegressor(), mean_squared_error),
        ("multiclass", y_cls, DummyClassifier(strategy="prior"), lambda t, p: log_loss(t, p, labels=[0, 1, 2])),
    ):
        expected = []
        for train, test in folds:
            fitted = dummy.fit(np.zeros((len(train), 1)), y[train])
            rows = np.zeros((len(test), 1))
            expected.append(
                score(y[test], fitted.predict(rows) if task == "regression" else fitted.predict_proba(rows))
            )
        np.testing.assert_allclose(_constant_losses(y, task, folds), expected, rtol=1e-12)


def test_a_chosen_model_worse_than_a_constant_is_named():
    """On a target of pure noise the chosen λ's loss is above a constant prediction's: a
    NoSignalWarning says so, with both losses. On diabetes, whose inputs predict, none."""
    from shrinkage.cv import NoSignalWarning

    rng = np.random.default_rng(2)
    torch.manual_seed(2)
    X, noise = rng.standard_normal((60, 8)), rng.standard_normal(60)
    settings = dict(penalty=L1(), n_lambdas=6, cv=3)
    with pytest.warns(NoSignalWarning, match=r"above a constant prediction's \(the training rows' mean\) 0\.7684"):
        cross_validate(lambda: MLP(8, (8,), 1), X, noise, **settings)
    X, y = load_diabetes(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoSignalWarning)
        cross_validate(lambda: MLP(10, (8,), 1), X, y / 100, **settings)


@pytest.mark.parametrize("engine", ["batched", "sequential"])
def test_the_progress_bar_counts_the_work_as_it_is_done(engine, monkeypatch):
    """One bar: the sequential engine counts the paths as each ends; the batched engine,
    which trains them together, also counts the full-data path's λ as each is trained
    (its bar used to jump from 0 to the end). The bar ends full."""
    import contextlib

    from shrinkage import cv as cv_module

    class Bar:
        def __init__(self, total: int):
            self.total, self.done, self.steps = total, 0, []

        def advance(self, n: int = 1) -> None:
            self.done += n
            self.steps.append(self.done)

        def grow(self, n: int = 1) -> None:
            self.total += n

    bars: list[Bar] = []

    @contextlib.contextmanager
    def recording(total, description, *, enabled=None):
        bars.append(Bar(total))
        yield bars[-1]

    monkeypatch.setattr(cv_module, "progress_bar", recording)
    X, y = load_diabetes(return_X_y=True)
    X, y = (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()
    config = dict(n_lambdas=6, train_config=TrainConfig(max_epochs=20, batch_size=None))
    result = cross_validate(
        lambda: MLP(10, (4,), 1), X, y, penalty=L1(), cv=3, engine=engine, n_jobs=1, progress=True, **config
    )
    assert result.engine == engine and len(bars) == 1
    bar = bars[0]
    assert bar.done == bar.total  # ends full
    expected = 4 + (len(result.path.lambdas) if engine == "batched" else 0)  # the paths, and the λ trained together
    assert bar.total == expected, (bar.total, len(result.path.lambdas))
    assert len(bar.steps) >= (len(result.path.lambdas) if engine == "batched" else 4)  # step by step


@pytest.mark.parametrize("engine", ["batched", "sequential"])
def test_the_full_data_relaxed_fit_trains_no_longer_than_the_folds(engine):
    # separable classes: without a penalty only early stopping bounds a relaxed fit, and
    # one stopped on the full data's few validation rows, all separated, trained on until
    # its test loss was several times the folds' (a new user's breast_cancer study)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    settings = dict(task="binary", penalty=L1(), cv=3, lambdas=(0.003, 0.01, 0.03, 0.1), relax=True, engine=engine)
    dense = TrainConfig(lr=3e-2, batch_size=None, max_epochs=300, patience=30)
    path = TrainConfig(lr=1e-2, batch_size=None, max_epochs=60, monitor="objective")
    result = cross_validate(lambda: MLP(4, (8,)), X, y, dense_config=dense, train_config=path, **settings)
    folds = np.array([[point.relaxed_epochs for point in fold.points] for fold in result.folds])
    assert (folds > 0).all() and result.path.dense.relaxed_epochs is None  # (no relaxed fit of the dense start)
    full = np.array([point.relaxed_epochs for point in result.path.points])
    longest = folds.max(axis=0)
    assert (full <= longest).all()  # never longer than every fold's
    assert (full == longest).any()  # and the cap binds: its own validation rows would let it go on
    chosen = result.path.points[result.index]
    assert all(torch.equal(chosen.relaxed_state[k], v) for k, v in result.model.state_dict().items())

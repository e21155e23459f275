"""The scikit-learn estimators: sklearn's own checks, pipelines, oracles, selection, errors."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_wine
from sklearn.exceptions import NotFittedError
from sklearn.feature_selection import SelectFromModel
from sklearn.linear_model import Lasso, LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from shrinkage import InputError
from shrinkage.convert import from_sklearn_lasso, from_sklearn_logistic
from shrinkage.estimators import (
    ShrinkageMLPClassifier,
    ShrinkageMLPClassifierCV,
    ShrinkageMLPRegressor,
    ShrinkageMLPRegressorCV,
)

SMALL = dict(hidden_layer_sizes=(8,), max_iter=100, random_state=0)


@parametrize_with_checks(
    [
        ShrinkageMLPRegressor(**SMALL),
        ShrinkageMLPClassifier(**SMALL),
        # the linear configuration at its defaults: FISTA
        ShrinkageMLPRegressor((), random_state=0),
        ShrinkageMLPClassifier((), random_state=0),
    ]
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        check(estimator)


@parametrize_with_checks([ShrinkageMLPRegressorCV(random_state=0), ShrinkageMLPClassifierCV(random_state=0)])
def test_sklearn_estimator_checks_of_the_cv_estimators_at_their_defaults(estimator, check):
    """Every check at the default settings (20 λ, 5 folds, 64 hidden units): 2 to 2.7
    min of the suite on 2 cores (`make sklearn-checks` runs them alone)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        check(estimator)


# ------------------------------------------------------------------------ the API
def regression(n=200, p=10, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    y = 2 * np.tanh(X[:, 0]) - X[:, 1] + 0.5 * X[:, 2] ** 2 + 0.1 * rng.standard_normal(n)
    return X, y


def test_pipeline_grid_search_and_cross_val_score():
    X, y = regression()
    pipe = make_pipeline(StandardScaler(), ShrinkageMLPRegressor(**SMALL))
    grid = GridSearchCV(
        pipe,
        {"shrinkagemlpregressor__lambda_": [1e-3, 1e-1], "shrinkagemlpregressor__penalty": ["l1", "group"]},
        cv=3,
    ).fit(X, y)
    assert grid.best_score_ > 0.5
    assert set(grid.best_params_) == {"shrinkagemlpregressor__lambda_", "shrinkagemlpregressor__penalty"}
    scores = cross_val_score(make_pipeline(StandardScaler(), ShrinkageMLPRegressor(**SMALL)), X, y, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.5)


def test_clone_and_pickle_give_identical_predictions():
    X, y = regression()
    model = ShrinkageMLPRegressor(**SMALL).fit(X, y)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(model.predict(X), again.predict(X))
    fresh = clone(model)
    assert fresh.get_params() == model.get_params() and not hasattr(fresh, "model_")
    np.testing.assert_array_equal(fresh.fit(X, y).predict(X), model.predict(X))  # same seed, same fit


def test_l1_drops_noise_columns():
    """Half of the columns are pure noise: the selection keeps (nearly) none of them."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 20))
    # columns 0-9 matter (some nonlinearly), columns 10-19 are noise
    y = X[:, 0] + np.sin(2 * X[:, 1]) + X[:, 2] * X[:, 3] + X[:, 2] + X[:, 3] + 0.5 * X[:, 4]
    y += 0.5 * X[:, 5] + 0.5 * X[:, 6] + np.tanh(X[:, 7]) + X[:, 8] - X[:, 9] + 0.1 * rng.standard_normal(400)
    model = ShrinkageMLPRegressor((16,), penalty="l1", lambda_=0.1, random_state=0).fit(X, y / y.std())
    selected = np.flatnonzero(model.selected_features_)
    assert len([j for j in selected if j >= 10]) <= 1, selected  # (nearly) no noise column
    assert all(j in selected for j in range(10)), selected  # every real one
    # (element-wise L1 needs a λ this strong to clear whole columns, and shrinks the
    # fit with them; penalty="group" removes columns at a smaller λ)
    assert model.score(X, y / y.std()) > 0.7


def test_linear_configuration_reproduces_sklearn_lasso():
    """hidden_layer_sizes=() is a linear model: Lasso's coefficients to 1e-4 relative."""
    X, y = regression(100, 8)
    alpha = 0.05
    sk = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(X, y)
    ours = ShrinkageMLPRegressor(
        (),
        penalty="l1",
        lambda_=from_sklearn_lasso(alpha),
        optimizer="sgd",
        learning_rate=0.1,
        early_stopping=False,
        max_iter=20_000,
        n_iter_no_change=50,
        tol=1e-12,
        random_state=0,
    ).fit(X, y)
    coef = ours.model_[0].weight.detach().double().numpy().ravel()
    # 1e-4 relative, as for the optimizer tests (measured here: 6e-7, float32 weights)
    assert np.max(np.abs(coef - sk.coef_)) < 1e-4 * np.max(np.abs(sk.coef_))
    assert np.array_equal(np.abs(coef) < 1e-6, sk.coef_ == 0)


def test_linear_configuration_reproduces_l1_logistic_regression():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6))
    y = (X[:, 0] - 2 * X[:, 1] + 0.5 * rng.standard_normal(300) > 0).astype(int)
    C = 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = LogisticRegression(
            l1_ratio=1.0, C=C, solver="liblinear", tol=1e-10, max_iter=10_000, intercept_scaling=1e4
        ).fit(X, y)
    ours = ShrinkageMLPClassifier(
        (),
        penalty="l1",
        lambda_=from_sklearn_logistic(C, 300),
        optimizer="sgd",
        learning_rate=1.0,
        early_stopping=False,
        max_iter=20_000,
        n_iter_no_change=50,
        tol=1e-12,
        random_state=0,
    ).fit(X, y)
    coef = ours.model_[0].weight.detach().double().numpy().ravel()
    # 1e-3 relative (measured: 8e-5): liblinear stops at its own tolerance and still
    # penalizes the intercept a little, even scaled by 1e4
    assert np.max(np.abs(coef - sk.coef_.ravel())) < 1e-3 * np.max(np.abs(sk.coef_))
    assert np.array_equal(np.abs(coef) < 1e-6, sk.coef_.ravel() == 0)


def test_classifier_with_string_labels():
    X, y = load_wine(return_X_y=True)
    labels = np.array(["barolo", "grignolino", "barbera"])[y]
    model = make_pipeline(StandardScaler(), ShrinkageMLPClassifier(**SMALL)).fit(X, labels)
    clf = model[-1]
    assert clf.classes_.tolist() == ["barbera", "barolo", "grignolino"]
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(model.predict(X)) <= set(clf.classes_)
    assert model.score(X, labels) > 0.9


def test_binary_classifier_probabilities():
    X, y = load_wine(return_X_y=True)
    y = np.where(y == 0, "yes", "no")
    model = make_pipeline(StandardScaler(), ShrinkageMLPClassifier(**SMALL)).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_array_equal(model.predict(X), model[-1].classes_[proba.argmax(axis=1)])


def test_transform_names_and_select_from_model():
    X, y = regression()
    frame = pd.DataFrame(X, columns=[f"col_{j}" for j in range(10)])
    model = ShrinkageMLPRegressor((16,), lambda_=3e-2, random_state=0).fit(frame, y)
    assert model.feature_names_in_.tolist() == list(frame.columns)
    kept = model.get_feature_names_out()
    assert kept.tolist() == [c for c, s in zip(frame.columns, model.selected_features_) if s]
    assert model.transform(frame).shape == (200, len(kept))
    assert model.feature_importances_.sum() == pytest.approx(1.0)
    assert np.all(model.feature_importances_[~model.selected_features_] == 0)
    selector = SelectFromModel(ShrinkageMLPRegressor((16,), lambda_=3e-2, random_state=0)).fit(frame, y)
    # penalty "l1": SelectFromModel's threshold is 1e-5, so it keeps what the net uses
    assert selector.get_feature_names_out().tolist() == kept.tolist()


def test_warm_start_and_partial_fit():
    X, y = regression()
    model = ShrinkageMLPRegressor(**SMALL, warm_start=True).fit(X, y)
    first = model.model_
    model.set_params(lambda_=0.1).fit(X, y)  # continues from the fitted net
    assert model.model_ is not first and model.selected_features_.sum() <= 10
    online = ShrinkageMLPRegressor((8,), lambda_=1e-2, random_state=0)
    for start in range(0, 200, 50):
        online.partial_fit(X[start : start + 50], y[start : start + 50])
    assert online.n_iter_ == 4 and len(online.loss_curve_) == 4
    assert online.predict(X).shape == (200,)
    with pytest.raises(ValueError, match="classes must be given on the first call to partial_fit"):
        ShrinkageMLPClassifier(**SMALL).partial_fit(X, (y > 0).astype(int))


def test_cv_estimator_attributes():
    X, y = regression()
    model = ShrinkageMLPRegressorCV((8,), penalty="group", cv=3, n_lambdas=5, fit_config="same", random_state=0)
    model.fit(X, y)
    n = len(model.lambdas_)
    assert model.cv_scores_.shape == (3, n) and model.cv_mean_.shape == (n,) and model.cv_se_.shape == (n,)
    assert model.lambda_1se_ >= model.lambda_min_ and model.lambda_ == model.lambda_1se_
    assert model.selected_features_[:2].all()  # the two strongest inputs survive
    chosen = ShrinkageMLPRegressorCV((8,), cv=3, n_lambdas=5, selection="min", fit_config="same", random_state=0)
    chosen.fit(X, y)
    assert chosen.lambda_ == chosen.lambda_min_


def test_training_defaults_single_fits_and_cv_paths():
    """A single fit starts from a dense fit: 500 epochs, patience 30. The CV estimators
    warm-start each λ of their path from the last, as every path does (PATH_CONFIG):
    200 epochs per λ, patience 10. FISTA's linear fits: 10,000 iterations either way."""
    from shrinkage.path import PATH_CONFIG

    single, cv = ShrinkageMLPRegressor(), ShrinkageMLPClassifierCV()
    assert (single._train_config().max_epochs, single._train_config().patience) == (500, 30)
    assert (cv._train_config().max_epochs, cv._train_config().patience) == (200, 10)
    assert (PATH_CONFIG.max_epochs, PATH_CONFIG.patience) == (200, 10)
    assert ShrinkageMLPRegressorCV((), penalty="l1")._train_config().max_epochs == 10_000
    assert ShrinkageMLPRegressorCV(max_iter=50)._train_config().max_epochs == 50
    # and a fit runs to it: with tol=0 and a patience longer than the cap, every λ of the
    # full path and of each fold trains exactly max_iter's default epochs
    X, y = regression(60, 3)
    model = ShrinkageMLPRegressorCV((4,), cv=2, n_lambdas=2, tol=0.0, n_iter_no_change=1000, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (capped fits warn)
        model.fit(X, y)
    epochs = [p.epochs for path in (model.path_, *model.cv_result_.folds) for p in path.points]
    assert epochs and set(epochs) == {200}


@pytest.mark.parametrize(
    "estimator, message",
    [
        (
            ShrinkageMLPRegressor(lambda_=-1.0),
            "lambda_ must be a finite number >= 0, got -1.0",
        ),
        (
            ShrinkageMLPRegressor(penalty="lasso"),
            "penalty must be one of 'none', 'l1', 'l2', 'elasticnet', 'group', 'sparse_group', 'hierarchical', got 'lasso'",
        ),
        (
            ShrinkageMLPClassifier(l1_ratio=2.0),
            "l1_ratio must be a finite number in [0, 1], got 2.0",
        ),
        (
            ShrinkageMLPRegressor(hidden_layer_sizes=(8, 0)),
            "hidden_layer_sizes must be a sequence of positive integers, got (8, 0)",
        ),
        (
            ShrinkageMLPRegressor(mode="decoupled"),
            "mode='decoupled' is weight decay and supports only L2, got L1(lambda_=0.001)",
        ),
        (
            ShrinkageMLPRegressorCV(cv=1),
            "cv must be an integer >= 2, got 1",
        ),
        (
            ShrinkageMLPRegressorCV(penalty="none"),
            "penalty must be one of 'l1', 'l2', 'elasticnet', 'group', 'sparse_group', 'hierarchical', got 'none'",
        ),
        (
            ShrinkageMLPRegressor(learning_rate=0),
            "learning_rate must be a finite number > 0, got 0",
        ),
    ],
)
def test_invalid_parameters_raise_at_fit(estimator, message):
    X, y = regression(40, 4)
    with pytest.raises(InputError) as info:
        estimator.fit(X, y)
    assert message in str(info.value)


@pytest.mark.parametrize("estimator", [ShrinkageMLPRegressor(max_iter=2), ShrinkageMLPRegressorCV(max_iter=2, cv=2)])
def test_a_regressor_refuses_text_targets_naming_y(estimator):
    """(A new user's trial: a bare "could not convert string to float".)"""
    X, _ = regression(10, 3)
    with pytest.raises(InputError, match=r"y must hold numbers for a regressor, got <U1 values: \['a', 'b', 'c'\]"):
        estimator.fit(X, np.array(list("abcdeabcde")))


def test_predict_before_fit_raises_not_fitted():
    for estimator in (ShrinkageMLPRegressor(), ShrinkageMLPClassifierCV()):
        with pytest.raises(NotFittedError):
            estimator.predict(np.zeros((2, 3)))


def test_a_fit_that_runs_out_of_epochs_warns_with_its_distance_from_the_optimum():
    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 4))
    y = X[:, 0] - X[:, 1] + 0.1 * rng.standard_normal(80)
    with pytest.warns(
        ConvergenceWarning,
        match=r"used all max_iter=3 epochs and is still .* above tol=0.0001 .*increase max_iter, with a lower learning_rate",
    ):
        ShrinkageMLPRegressor(hidden_layer_sizes=(4,), penalty="l1", lambda_=1e-3, max_iter=3).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a network stopped early: no warning
        ShrinkageMLPRegressor(hidden_layer_sizes=(4,), penalty="l1", lambda_=1e-3, n_iter_no_change=1).fit(X, y)
    # a target far from unit scale is named, and what trains on it standardized
    for scale, named in ((100.0, True), (0.01, True), (1.0, False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ShrinkageMLPRegressor(hidden_layer_sizes=(4,), lambda_=1e-3, max_iter=3).fit(X, scale * y)
        (message,) = [str(w.message) for w in caught if w.category is ConvergenceWarning]
        assert ("y's standard deviation is" in message and "TransformedTargetRegressor" in message) == named


def test_every_activation_builds_the_layer_it_names():
    from shrinkage.models import ACTIVATIONS

    X, y = regression(40, 3)
    for name, layer in ACTIVATIONS.items():
        model = ShrinkageMLPRegressor((4,), activation=name, max_iter=2, random_state=0).fit(X, y)
        assert [type(m) for m in model.model_.modules() if type(m) in ACTIVATIONS.values()] == [layer]

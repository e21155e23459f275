"""The estimators' prune(): a fitted copy that reads the full X and predicts as the original."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shrinkage import InputError
from shrinkage.estimators import (
    ShrinkageMLPClassifier,
    ShrinkageMLPClassifierCV,
    ShrinkageMLPRegressor,
    ShrinkageMLPRegressorCV,
)
from shrinkage.models import MLP
from shrinkage.prune import PruneReport, SelectColumns

SMALL = dict(hidden_layer_sizes=(8,), penalty="group", max_iter=100, random_state=0)
SMALL_CV = dict(
    hidden_layer_sizes=(8,), penalty="group", lambdas=(0.01, 0.03, 0.1), max_iter=30, cv=3, fit_config="same"
)
RTOL = 1e-6  # the pruned copy predicts as the original to float rounding


def data(task: str, n: int = 200, p: int = 8, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Columns x0, x1, x2 matter, the others are noise (the group penalty drops them)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    z = X[:, 0] - X[:, 1] + 0.5 * X[:, 2]
    y = {
        "regression": z + 0.1 * rng.standard_normal(n),
        "binary": np.where(z > 0, "yes", "no"),
        "multiclass": np.digitize(z, [-0.7, 0.7]),
    }[task]
    return pd.DataFrame(X, columns=[f"col_{j}" for j in range(p)]), y


def fitted(estimator, task: str):
    X, y = data(task)
    with warnings.catch_warnings():  # short fits: a ConvergenceWarning is expected
        warnings.simplefilter("ignore")
        return estimator.fit(X, y), X, y


def assert_same_predictions(pruned, original, X) -> None:
    if hasattr(original, "predict_proba"):
        np.testing.assert_allclose(pruned.predict_proba(X), original.predict_proba(X), rtol=RTOL, atol=0)
        np.testing.assert_array_equal(pruned.predict(X), original.predict(X))
    else:
        np.testing.assert_allclose(pruned.predict(X), original.predict(X), rtol=RTOL, atol=0)


CASES = [
    (ShrinkageMLPRegressor(**SMALL, lambda_=0.05), "regression"),
    (ShrinkageMLPClassifier(**SMALL, lambda_=0.02), "binary"),
    (ShrinkageMLPClassifier(**SMALL, lambda_=0.02), "multiclass"),
    (ShrinkageMLPRegressorCV(**SMALL_CV, random_state=0), "regression"),
    (ShrinkageMLPClassifierCV(**SMALL_CV, random_state=0), "multiclass"),
    # the linear configuration (FISTA, float64) and LassoNet's SkipMLP
    (ShrinkageMLPRegressor((), penalty="l1", lambda_=0.05), "regression"),
    (
        ShrinkageMLPRegressor(
            (8,), penalty="hierarchical", lambda_=1.0, M=5.0, optimizer="sgd", learning_rate=0.05, max_iter=100
        ),
        "regression",
    ),
]
IDS = ["regressor", "binary", "multiclass", "regressor-cv", "classifier-cv", "linear", "hierarchical"]


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
@pytest.mark.parametrize("estimator, task", CASES, ids=IDS)
def test_pruned_copy_reads_the_full_X_and_predicts_as_the_original(estimator, task):
    original, X, y = fitted(estimator, task)
    network = original.model_
    pruned = original.prune(measure=False)
    assert type(pruned) is type(original) and pruned is not original
    assert original.model_ is network and not hasattr(original, "prune_report_")  # the original is not changed

    kept = np.flatnonzero(original.selected_features_).tolist()
    assert 0 < len(kept) < X.shape[1]  # the data has dropped features
    report = pruned.prune_report_
    assert isinstance(report, PruneReport) and report.kept_features == kept and report.n_features == X.shape[1]
    assert report.kept_feature_names == [f"col_{j}" for j in kept]
    assert isinstance(pruned.model_, SelectColumns) and pruned.model_.columns == kept
    assert sum(p.numel() for p in pruned.model_.parameters()) == report.params_after < report.params_before

    assert_same_predictions(pruned, original, X)
    assert_same_predictions(pruned, original, X.to_numpy())  # without column names too
    assert pruned.score(X, y) == pytest.approx(original.score(X, y), rel=RTOL)
    pd.testing.assert_frame_equal(
        pruned.set_output(transform="pandas").transform(X), X[[f"col_{j}" for j in kept]], check_exact=True
    )
    assert pruned.get_feature_names_out().tolist() == original.get_feature_names_out().tolist()
    assert pruned.n_features_in_ == original.n_features_in_ == X.shape[1]
    assert pruned.feature_names_in_.tolist() == original.feature_names_in_.tolist()
    np.testing.assert_array_equal(pruned.feature_importances_, original.feature_importances_)
    assert pruned.get_params() == original.get_params()
    if hasattr(original, "classes_"):
        np.testing.assert_array_equal(pruned.classes_, original.classes_)
    with pytest.raises(InputError, match=f"X has {len(kept)} features, but .* is expecting 8 features"):
        pruned.predict(X.to_numpy()[:, kept])  # the kept columns alone are not its input


def test_pruned_copy_replaces_the_estimator_in_a_pipeline():
    X, y = data("multiclass")
    pipe = make_pipeline(StandardScaler(), ShrinkageMLPClassifier(**SMALL, lambda_=0.02)).fit(X, y)
    small = make_pipeline(pipe[0], pipe[-1].prune(measure=False))
    np.testing.assert_allclose(small.predict_proba(X), pipe.predict_proba(X), rtol=RTOL, atol=0)
    assert small.score(X, y) == pipe.score(X, y)
    # fitting the pipeline refits every step: a new full network, as with any estimator
    small.fit(X, y)
    assert type(small[-1].model_) is MLP and not hasattr(small[-1], "prune_report_")
    np.testing.assert_array_equal(small.predict_proba(X), pipe.predict_proba(X))  # same seed, same fit


def test_clone_is_unfitted_and_pickle_keeps_the_pruned_network():
    original, X, _ = fitted(ShrinkageMLPRegressor(**SMALL, lambda_=0.05), "regression")
    pruned = original.prune(measure=False)
    fresh = clone(pruned)
    assert fresh.get_params() == pruned.get_params()
    assert not hasattr(fresh, "model_") and not hasattr(fresh, "prune_report_")
    with pytest.raises(NotFittedError):
        fresh.predict(X)
    again = pickle.loads(pickle.dumps(pruned))
    assert isinstance(again.model_, SelectColumns) and again.prune_report_ == pruned.prune_report_
    np.testing.assert_array_equal(again.predict(X), pruned.predict(X))


def test_refitting_the_pruned_copy_trains_a_new_full_network():
    original, X, _ = fitted(ShrinkageMLPRegressor(**SMALL, lambda_=0.05), "regression")
    pruned = original.prune(measure=False)
    fitted(pruned, "regression")
    assert type(pruned.model_) is MLP and not hasattr(pruned, "prune_report_")
    assert pruned.model_[0].in_features == X.shape[1]
    np.testing.assert_array_equal(pruned.predict(X), original.predict(X))  # same seed, same fit


def test_warm_start_and_partial_fit_refuse_a_pruned_network():
    original, X, y = fitted(ShrinkageMLPRegressor(**SMALL, lambda_=0.05, warm_start=True), "regression")
    pruned = original.prune(measure=False)
    message = (
        "{} cannot continue from a pruned network (prune() changed its widths); fit with warm_start=False "
        "trains a new one, or continue the estimator prune() was called on"
    )
    with pytest.raises(InputError) as info:
        pruned.fit(X, y)
    assert str(info.value) == message.format("warm_start=True")
    with pytest.raises(InputError) as info:
        pruned.partial_fit(X, y)
    assert str(info.value) == message.format("partial_fit")
    assert isinstance(pruned.model_, SelectColumns)  # nothing changed
    assert_same_predictions(pruned, original, X)


def test_every_feature_dropped_gives_a_constant_from_the_full_X():
    original, X, _ = fitted(ShrinkageMLPRegressor(**SMALL, lambda_=100.0), "regression")
    assert not original.selected_features_.any()
    pruned = original.prune(measure=False)
    assert pruned.prune_report_.kept_features == [] and pruned.model_.columns == []
    prediction = pruned.predict(X)
    assert prediction.shape == (len(X),) and np.all(prediction == prediction[0])
    np.testing.assert_allclose(prediction, original.predict(X), rtol=RTOL, atol=0)
    again = pruned.prune(measure=True)  # a network with no inputs left, pruned and timed again
    np.testing.assert_array_equal(again.predict(X), prediction)


def test_pruning_twice_keeps_the_columns_and_the_predictions():
    original, X, _ = fitted(ShrinkageMLPClassifier(**SMALL, lambda_=0.02), "binary")
    once = original.prune(measure=False)
    twice = once.prune(measure=False)
    assert twice.prune_report_.kept_features == once.prune_report_.kept_features
    assert twice.prune_report_.kept_feature_names == once.prune_report_.kept_feature_names
    assert twice.prune_report_.params_after == once.prune_report_.params_after  # nothing left to remove
    assert_same_predictions(twice, original, X)


def test_measure_times_both_networks():
    original, _, _ = fitted(ShrinkageMLPRegressor(**SMALL, lambda_=0.05), "regression")
    report = original.prune().prune_report_
    assert report.latency_before_ms is not None and report.latency_after_ms is not None
    assert report.latency_device == "cpu" and "CPU latency" in report.summary()


# ------------------------------------------------------------------ SelectColumns
def test_select_columns_indexes_dimension_one_and_keeps_its_columns_out_of_the_state_dict():
    net = torch.nn.Linear(2, 1)
    model = SelectColumns([3, 0], net)
    x = torch.randn(5, 4)
    torch.testing.assert_close(model(x), net(x[:, [3, 0]]))
    assert set(model.state_dict()) == {"module.weight", "module.bias"}  # the columns are architecture
    assert model.to(torch.float64)(x.double()).dtype == torch.float64 and model.index.dtype == torch.long
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        empty = SelectColumns([], torch.nn.Linear(0, 1))
    assert empty(x).shape == (5, 1)


@pytest.mark.parametrize(
    "columns, kind, message",
    [
        ([0, -1], InputError, "columns must be a sequence of distinct integers >= 0, got [0, -1]"),
        ([1, 1], InputError, "columns must be a sequence of distinct integers >= 0, got [1, 1]"),
        ([True], InputError, "columns must be a sequence of distinct integers >= 0, got [True]"),
        ([0.5], TypeError, "columns must be a sequence of distinct integers >= 0, got [0.5]"),
    ],
)
def test_select_columns_rejects_bad_columns(columns, kind, message):
    with pytest.raises(kind) as info:
        SelectColumns(columns, torch.nn.Linear(1, 1))
    assert str(info.value) == message

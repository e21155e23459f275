"""Divergence: a fit whose loss or weights stop being finite stops with an error that
says where (penalty, fold, λ, epoch) and keeps its best weights; a path can instead
record the λ as failed and go on; a study keeps what it had finished."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shrinkage import L2
from shrinkage.cv import _fold_path, cross_validate
from shrinkage.models import MLP
from shrinkage.path import PathConfig, regularization_path
from shrinkage.study.cli import main
from shrinkage.study.store import Store
from shrinkage.train import Diverged, TrainConfig, train

# L2 as a plain gradient under SGD: w ← w·(1 − 2·lr·λ) diverges once 2·lr·λ > 2, i.e.
# λ > 10 at lr 0.1; the small λ are stable. A divergence with a known cause and place.
SGD = TrainConfig(optimizer="sgd", lr=0.1, batch_size=None, max_epochs=300, patience=300)
GRID = [0.01, 0.1, 30.0, 40.0]


@pytest.fixture
def data(rng):
    X = rng.standard_normal((80, 4))
    return X, X[:, 0] - X[:, 1] + 0.1 * rng.standard_normal(80)


def _finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_train_raises_with_the_epoch_and_keeps_the_best_weights(data):
    X, y = (torch.tensor(a, dtype=torch.float32) for a in data)
    model = MLP(4, (8,))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(optimizer="sgd", lr=1e4, batch_size=None, max_epochs=50, patience=50)
    with pytest.raises(Diverged, match=r"training diverged at epoch \d+: the (data loss is (nan|inf)|weights)") as info:
        train(model, X, y, config=config)
    assert _finite(model)  # the best epoch's weights, or the start when none was finite
    if info.value.epoch == 0:
        assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())


def test_the_error_crosses_process_boundaries_intact():
    error = Diverged("the data loss is nan", 7, ("λ=30",)).within("fold 2 of 5")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.where == ("fold 2 of 5", "λ=30") and again.epoch == 7
    assert str(error).startswith("training diverged at fold 2 of 5, λ=30, epoch 7: the data loss is nan")


def test_path_raises_naming_lambda(data):
    X, y = data
    with pytest.raises(Diverged, match=r"training diverged at λ=30, epoch \d+"):
        regularization_path(lambda: MLP(4, (8,)), X, y, penalty=L2(), mode="gradient", lambdas=GRID, train_config=SGD)


def test_path_can_record_the_failed_lambda_and_go_on(data):
    X, y = data
    path = regularization_path(
        lambda: MLP(4, (8,)), X, y, penalty=L2(), mode="gradient", lambdas=GRID, train_config=SGD,
        on_divergence="skip",
    )  # fmt: skip
    model = path.model
    assert [p.lambda_ for p in path.points] == GRID  # every λ has its point
    assert [p.diverged for p in path.points] == [False, False, True, True]
    for point in path.points[:2]:
        assert math.isfinite(point.val_loss) and math.isfinite(point.train_loss)
    for point in path.points[2:]:
        assert math.isnan(point.val_loss) and point.epochs >= 1
        assert point.record()["diverged"] is True
    assert _finite(model)  # nothing non-finite is handed on


def test_cv_never_selects_a_failed_lambda(data):
    X, y = data
    result = cross_validate(
        lambda: MLP(4, (8,)), X, y, penalty=L2(), mode="gradient", lambdas=GRID, train_config=SGD,
        on_divergence="skip", cv=3, n_jobs=1,
    )  # fmt: skip
    assert result.lambda_min in GRID[:2] and result.lambda_1se in GRID[:2]
    assert not result.admissible[2:].any()
    assert _finite(result.model)
    with pytest.raises(Diverged, match="training diverged at the full data, λ=30, epoch"):
        cross_validate(
            lambda: MLP(4, (8,)), X, y, penalty=L2(), mode="gradient", lambdas=GRID, train_config=SGD, cv=3, n_jobs=1
        )


def test_a_fold_names_itself(data):
    X, y = data
    config = PathConfig(mode="gradient", lambdas=GRID, train_config=SGD)
    job = {"model": lambda: MLP(4, (8,)), "path": dict(penalty=L2(), config=config, progress=False)}
    with pytest.raises(Diverged, match=r"training diverged at fold 2 of 3, λ=30, epoch \d+"):
        _fold_path(1, 3, np.arange(60), np.arange(60, 80), X, y, job)


def test_study_stops_with_one_line_and_keeps_finished_penalties(tmp_path, monkeypatch):
    import shrinkage.study.runner as study

    def diverging(*args, **kwargs):
        raise Diverged("the data loss is nan", 3, ("fold 2 of 3", "λ=0.05"))

    monkeypatch.setattr(study, "cross_validate", diverging)  # the unpenalized baseline still runs
    out = tmp_path / "out"
    args = ["study", "--penalties", "none,l1", "--hidden", "4", "--cv", "3", "--n-lambdas", "3", "--n-jobs", "1"]
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("shrinkage: error")]
    assert lines == [
        "shrinkage: error: training diverged at penalty 'l1', fold 2 of 3, λ=0.05, epoch 3: the data loss is nan; "
        "the fit's best weights are kept. Lower lr or λ, or check the data for extreme values"
    ]
    assert "Traceback" not in result.output
    with Store(out / "results.sqlite", create=False) as store:
        assert [run["penalty"] for run in store.runs(1)] == ["none"]  # finished work is kept


def test_the_study_hands_on_divergence_to_its_paths(tmp_path, monkeypatch):
    """StudyConfig.on_divergence reaches every penalized path (it once stopped at the config)."""
    import shrinkage.study.runner as runner
    from shrinkage.study import Store, StudyConfig

    seen = []

    def capture(*args, config, **kwargs):
        seen.append(config.on_divergence)
        raise Diverged("the data loss is nan", 1)

    monkeypatch.setattr(runner, "cross_validate", capture)
    config = StudyConfig(penalties=("l1",), hidden=(4,), cv=2, n_lambdas=2, n_jobs=1, on_divergence="skip")
    with Store(tmp_path / "s.sqlite") as store, pytest.raises(Diverged):
        runner.run_study(config, store, progress=False)
    assert seen == ["skip"]

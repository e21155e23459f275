"""The SQLite results store: round trips, atomic runs, refusing files that are not ours."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from shrinkage.study.store import Store, StoreError


def _run(penalty="l1"):
    return dict(
        penalty=penalty,
        rules=[{"penalty": {"name": "l1", "lambda_": 1.0}, "select": None}],
        lambdas=np.array([0.1, 0.2]),
        cv_mean=[0.5, float("nan")],
        cv_se=[0.01, 0.02],
        admissible=[True, False],
        lambda_min=0.1,
        lambda_1se=0.2,
        lambda_chosen=0.2,
        selection="1se",
        cv_loss=0.5,
        cv_loss_se=0.01,
        test_loss=0.4,
        test_score=0.6,
        fraction_zero=0.25,
        features=["a", "b"],
        n_features=2,
        weights=np.array([0.0, 1.5, -2.0, 0.0], dtype=np.float32),
        seconds=1.5,
    )


def _points():
    return [
        {
            "fold": f,
            "idx": i,
            "lambda": 0.1 * (i + 1),
            "train_loss": 0.3,
            "val_loss": 0.4,
            "test_loss": 0.5,
            "relaxed_val_loss": float("nan"),
            "relaxed_test_loss": None,
            "penalty": 0.01,
            "n_nonzero": 3,
            "n_penalized": 4,
            "zero_groups": 0,
            "n_groups": 0,
            "n_features": 2,
            "features": [0, 1],
            "feature_norms": [0.5, 0.25, 0.0],
            "epochs": 7,
            "seconds": 0.1,
        }
        for f in (-1, 0, 1)
        for i in range(2)
    ]


def test_round_trip(tmp_path):
    path = tmp_path / "results.sqlite"
    with Store(path) as store:
        study = store.add_study(key="k1", name="data", config={"cv": 5}, data={"task": "regression"})
        run_id = store.add_run(study, _run(), _points())
        store.set_status(study, "complete")
    with Store(path, create=False) as store:
        assert store.find_study("k1") == study and store.find_study("nope") is None
        (row,) = store.studies()
        assert (row["name"], row["status"], row["n_runs"], row["config"]) == ("data", "complete", 1, {"cv": 5})
        (run,) = store.runs(study)
        assert run["lambdas"] == [0.1, 0.2] and run["cv_mean"] == [0.5, None]  # NaN stored as NULL
        assert run["features"] == ["a", "b"] and run["admissible"] == [True, False]
        np.testing.assert_array_equal(run["weights"], [0.0, 1.5, -2.0, 0.0])
        points = store.points(run_id)
        assert len(points) == 6 and points[0]["fold"] == -1
        assert points[0]["feature_norms"] == [0.5, 0.25, 0.0] and points[0]["relaxed_val_loss"] is None
        assert len(store.points(run_id, fold=1)) == 2


def test_rewriting_a_run_replaces_it_whole(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        study = store.add_study(key="k", name="d", config={}, data={})
        store.add_run(study, _run(), _points())
        store.add_run(study, {**_run(), "test_loss": 0.1}, _points()[:1])
        (run,) = store.runs(study)
        assert run["test_loss"] == 0.1 and len(store.points(run["id"])) == 1


def test_a_failed_run_leaves_nothing(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        study = store.add_study(key="k", name="d", config={}, data={})
        bad = _points()
        bad[-1]["fold"] = "not an int"
        with pytest.raises(ValueError):
            store.add_run(study, _run(), bad)
        assert store.runs(study) == []
        assert store._connection.execute("SELECT COUNT(*) FROM points").fetchone()[0] == 0


def test_wal_mode(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        assert store._connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("hello, I am a text file"), "is not a shrinkage results store (not an SQLite file)"),
        (
            lambda p: sqlite3.connect(p).execute("CREATE TABLE x (a)").connection.commit(),
            "is an SQLite file but not a shrinkage results store",
        ),
        (lambda p: p.mkdir(), "store must be a file, got the directory"),
    ],
)
def test_files_that_are_not_ours_are_refused_untouched(tmp_path, make, message):
    path = tmp_path / "other.db"
    make(path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(StoreError) as info:
        Store(path)
    assert message in str(info.value)
    if before is not None:
        assert path.read_bytes() == before


def test_missing_store_is_not_created_when_reading(tmp_path):
    with pytest.raises(FileNotFoundError, match="store '.*nothing.sqlite' does not exist"):
        Store(tmp_path / "nothing.sqlite", create=False)
    assert not (tmp_path / "nothing.sqlite").exists()

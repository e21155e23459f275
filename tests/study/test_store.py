"""The SQLite results store: round trips, atomic runs, refusing files that are not ours,
the declared columns against the live schema, and upgrading stores of older releases."""

from __future__ import annotations

import pickle
import sqlite3
import threading
from contextlib import closing

import numpy as np
import pytest
from old_stores import DIVERGED, MODELS, make_old_store

from shrinkage.study.store import _TABLES, SCHEMA_VERSION, Store, StoreError


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
        (
            lambda p: sqlite3.connect(p).execute("CREATE TABLE meta (key, value)").connection.commit(),
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


def _versions(path) -> tuple[int, str]:
    """The file's ``PRAGMA user_version`` and the version in its ``meta`` table."""
    with closing(sqlite3.connect(path)) as db:
        user_version = db.execute("PRAGMA user_version").fetchone()[0]
        return user_version, db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]


def _live_columns(path) -> dict[str, list[tuple[str, str, str | None]]]:
    """Each table's (name, type, default) as SQLite reports them."""
    with closing(sqlite3.connect(path)) as db:
        return {
            table.name: [row[1:3] + row[4:5] for row in db.execute(f"PRAGMA table_info({table.name})")]
            for table in _TABLES
        }


# ---------------------------------------------------------------------------- schema
def test_the_declared_columns_are_the_live_schema(tmp_path):
    path = tmp_path / "s.sqlite"
    Store(path).close()
    assert _live_columns(path) == {
        table.name: [(c.name, c.sql_type, None if c.default is None else str(c.default)) for c in table.columns]
        for table in _TABLES
    }
    assert SCHEMA_VERSION == 9 and _versions(path) == (9, "9")


def test_version_4_has_the_columns_of_version_3(tmp_path):
    # the oracle: the schemas the releases wrote, by hand (only the default is new)
    make_old_store(tmp_path / "v3.sqlite", 3)
    make_old_store(tmp_path / "v4.sqlite", 4)
    old, new = _live_columns(tmp_path / "v3.sqlite"), _live_columns(tmp_path / "v4.sqlite")
    assert old["points"][-1] == ("diverged", "INTEGER", None) and new["points"][-1] == ("diverged", "INTEGER", "0")
    old["points"][-1] = new["points"][-1]
    assert old == new


def test_version_5_adds_the_stationarity_of_each_point(tmp_path):
    make_old_store(tmp_path / "v4.sqlite", 4)
    make_old_store(tmp_path / "v5.sqlite", 5)
    old, new = _live_columns(tmp_path / "v4.sqlite"), _live_columns(tmp_path / "v5.sqlite")
    assert new["points"][-1] == ("stationarity", "REAL", None)
    new["points"].pop()
    assert old == new


def test_version_6_adds_the_engine_of_each_run(tmp_path):
    make_old_store(tmp_path / "v5.sqlite", 5)
    make_old_store(tmp_path / "v6.sqlite", 6)
    old, new = _live_columns(tmp_path / "v5.sqlite"), _live_columns(tmp_path / "v6.sqlite")
    assert new["runs"][-2:] == [("engine", "TEXT", None), ("engine_note", "TEXT", None)]
    del new["runs"][-2:]
    assert old == new


def test_version_7_adds_the_test_predictions_of_each_run(tmp_path):
    make_old_store(tmp_path / "v6.sqlite", 6)
    make_old_store(tmp_path / "v7.sqlite", 7)
    old, new = _live_columns(tmp_path / "v6.sqlite"), _live_columns(tmp_path / "v7.sqlite")
    assert new["runs"][-1] == ("test_predictions", "TEXT", None)
    new["runs"].pop()
    assert old == new


def test_version_8_adds_how_each_runs_grid_was_made(tmp_path):
    make_old_store(tmp_path / "v7.sqlite", 7)
    make_old_store(tmp_path / "v8.sqlite", 8)
    old, new = _live_columns(tmp_path / "v7.sqlite"), _live_columns(tmp_path / "v8.sqlite")
    assert new["runs"][-1] == ("grid_notes", "TEXT", None)
    new["runs"].pop()
    assert old == new


def test_version_9_adds_the_epochs_of_each_points_relaxed_fit(tmp_path):
    make_old_store(tmp_path / "v8.sqlite", 8)
    Store(tmp_path / "v9.sqlite").close()
    old, new = _live_columns(tmp_path / "v8.sqlite"), _live_columns(tmp_path / "v9.sqlite")
    assert new["points"][-1] == ("relaxed_epochs", "INTEGER", None)
    new["points"].pop()
    assert old == new


# ---------------------------------------------------------------------------- older stores
@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6, 7, 8])
def test_an_older_store_is_upgraded_in_place(tmp_path, version):
    path = tmp_path / f"v{version}.sqlite"
    make_old_store(path, version)
    assert _versions(path) == (version if version >= 4 else 0, str(version))
    with Store(path) as store:
        (study,) = store.studies()
        assert (study["key"], study["name"], study["status"], study["n_runs"]) == ("old-key", "diabetes", "complete", 1)
        assert (study["config"], study["data"]) == ({"cv": 5}, {"task": "regression"})
        (run,) = store.runs(study["id"])
        assert run["rules"] == [{"penalty": {"name": "l1", "lambda_": 1.0}, "select": None}]
        assert run["cv_mean"] == [0.5, None] and run["admissible"] == [True, False]
        assert run["features"] == ["age", "bmi"]
        assert (run["lambda_chosen"], run["n_features"], run["seconds"]) == (0.2, 2, 2.5)
        np.testing.assert_array_equal(run["weights"], [0.0, 1.5])
        models = (None, None) if version == 1 else (MODELS["model"], MODELS["penalized"])
        assert (run["model"], run["penalized"]) == models  # version 1 stored no model
        points = store.points(run["id"])
        assert [(p["fold"], p["idx"]) for p in points] == [(-1, 0), (-1, 1), (0, 0), (0, 1)]
        assert points[0]["features"] == [1] and points[0]["feature_norms"] == [0.0, 1.5]
        assert [p["diverged"] for p in points] == (DIVERGED if version >= 3 else [0, 0, 0, 0])  # before 3: none did
        assert all(p["stationarity"] is None for p in points)  # not measured before version 5
        assert (run["engine"], run["engine_note"]) == (None, None)  # not recorded before version 6
        assert run["test_predictions"] is None  # not stored before version 7 (nor by this hand-made one)
        assert run["grid_notes"] is None  # not recorded before version 8 (nor by this hand-made one)
        assert all(p["relaxed_epochs"] is None for p in points)  # not recorded before version 9

        new_run = {**_run("group"), "model": b"m", "penalized": b"p"}
        new_id = store.add_run(study["id"], new_run, [{**_points()[0], "diverged": True}])
        assert [r["penalty"] for r in store.runs(study["id"])] == ["l1", "group"]
        assert (store.runs(study["id"])[1]["model"], store.points(new_id)[0]["diverged"]) == (b"m", 1)
        assert store.add_study(key="new", name="d", config={}, data={}) == 2
    assert _versions(path) == (SCHEMA_VERSION, str(SCHEMA_VERSION))
    declared = {table.name: {c.name: c.sql_type for c in table.columns} for table in _TABLES}
    assert {name: {c[0]: c[1] for c in columns} for name, columns in _live_columns(path).items()} == declared
    with Store(path) as store:  # opened again: nothing left to do
        assert len(store.runs(1)) == 2


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6])
def test_an_older_store_opened_read_only_is_read_as_it_is(tmp_path, version):
    path = tmp_path / f"v{version}.sqlite"
    make_old_store(path, version)
    before = path.read_bytes()
    with Store(path, read_only=True) as store:
        (run,) = store.runs(1)
        assert run["lambdas"] == [0.1, 0.2] and run["model"] == (None if version == 1 else MODELS["model"])
        assert [p["diverged"] for p in store.points(run["id"])] == (DIVERGED if version >= 3 else [0, 0, 0, 0])
        with pytest.raises(StoreError) as info:
            store.set_status(1, "running")
        assert str(info.value) == f"store {str(path)!r}: attempt to write a readonly database"
    assert path.read_bytes() == before and _versions(path) == (version if version >= 4 else 0, str(version))


def test_read_only_never_creates(tmp_path):
    with pytest.raises(FileNotFoundError, match="store '.*nothing.sqlite' does not exist"):
        Store(tmp_path / "nothing.sqlite", read_only=True)
    assert not (tmp_path / "nothing.sqlite").exists()


def test_openers_at_once_upgrade_an_older_store_once(tmp_path):
    path = tmp_path / "v1.sqlite"
    make_old_store(path, 1)
    errors = []

    def open_it():
        try:
            Store(path).close()
        except Exception as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and _versions(path) == (SCHEMA_VERSION, str(SCHEMA_VERSION))
    with Store(path, read_only=True) as store:
        assert store.runs(1)[0]["model"] is None


@pytest.mark.parametrize("read_only", [False, True])
def test_a_newer_store_is_refused_untouched(tmp_path, read_only):
    path = tmp_path / "future.sqlite"
    Store(path).close()
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    with pytest.raises(StoreError) as info:
        Store(path, read_only=read_only)
    assert str(info.value) == (
        f"store {str(path)!r} has schema version {SCHEMA_VERSION + 1}; this version of shrinkage reads versions 1 "
        f"to {SCHEMA_VERSION} "
        "(upgrade shrinkage to open it)"
    )
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("weights", pickle.dumps({"w": 1.5}), "runs.weights must hold"),  # a pickle is not float32 numbers
        ("weights", b"\x00\x00\xc0\x7f", "runs.weights must hold finite float32 numbers"),  # NaN
        ("cv_mean", "[0.5, ", "runs.cv_mean must hold a json value"),
        ("cv_mean", "[" * 100_000 + "]" * 100_000, "runs.cv_mean must hold a json value"),  # too deep to parse
        # values of the wrong type or shape, each of which a reader used to fail on (found by test_fuzz)
        ("cv_mean", '{"a": 1}', "runs.cv_mean must hold a JSON list of numbers"),
        ("features", "[1, 2]", "runs.features must hold a JSON list of strings"),
        ("admissible", "[1]", "runs.admissible must hold a JSON list of true/false"),
        ("penalty", None, "runs.penalty must hold the name of a penalty"),
        ("penalty", "l7", "runs.penalty must hold the name of a penalty"),
        ("selection", "best", "runs.selection must hold '1se' or 'min'"),
        ("test_loss", "low", "runs.test_loss must hold a number"),
        ("n_features", 2.5, "runs.n_features must hold a whole number"),
        ("model", "text", "runs.model must hold bytes"),
        ("lambda_chosen", -5.0, "runs.lambda_chosen must hold a number >= 0"),
        # lists of another length than the grid (a report drew them against it: an internal error, found by test_fuzz)
        ("cv_se", "[0.1]", "runs.cv_se of run 1 must hold one value per λ of runs.lambdas (2), not 1"),
        ("lambdas", "[0.1, 0.2, 0.3]", "runs.cv_mean of run 1 must hold one value per λ of runs.lambdas (3), not 2"),
        ("admissible", "[true]", "runs.admissible of run 1 must hold one value per λ of runs.lambdas (2), not 1"),
    ],
)
def test_a_damaged_value_is_a_store_error_naming_its_column(tmp_path, column, value, message):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        study = store.add_study(key="k", name="d", config={}, data={"task": "regression"})
        store.add_run(study, _run(), _points())
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE runs SET {column} = ?", (value,))
    with Store(path, read_only=True) as store, pytest.raises(StoreError) as info:
        store.runs(1)
    assert str(info.value).startswith(f"store {str(path)!r} is damaged: {message}")


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("config", None, "studies.config must hold a JSON object"),
        ("data", "[1]", "studies.data must hold a JSON object"),
        ("status", "done", "studies.status must hold 'running' or 'complete'"),
        ("name", b"\x00", "studies.name must hold text"),  # (a number would be stored as text)
    ],
)
def test_a_damaged_study_is_a_store_error_naming_its_column(tmp_path, column, value, message):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.add_study(key="k", name="d", config={}, data={"task": "regression"})
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(f"UPDATE studies SET {column} = ?", (value,))
    with Store(path, read_only=True) as store, pytest.raises(StoreError) as info:
        store.studies()
    assert str(info.value).startswith(f"store {str(path)!r} is damaged: {message}")


def test_a_report_of_a_summary_without_its_task_is_a_store_error(tmp_path):
    from shrinkage.study.report import build_report

    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        study = store.add_study(key="k", name="d", config={}, data={"name": "d", "columns": [], "encoded_features": []})
        store.add_run(study, _run(), _points())
        with pytest.raises(StoreError, match=r"study 1's data summary must have 'task' \(str\), lacks it"):
            build_report(store, study, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_every_finished_run_is_in_the_store_file_itself(tmp_path):
    """After a crash, the runs committed so far are in the .sqlite file, not only in its
    -wal file: a copy of the file alone holds them."""
    import shutil

    path = tmp_path / "s.sqlite"
    with Store(path) as store:  # still open: as if the process were killed now
        study = store.add_study(key="k", name="d", config={}, data={"task": "regression"})
        store.add_run(study, _run(), _points())
        copy = tmp_path / "copy" / "s.sqlite"
        copy.parent.mkdir()
        shutil.copy(path, copy)  # the file alone, without its -wal
        with Store(copy, read_only=True) as copied:
            assert [r["penalty"] for r in copied.runs(study)] == ["l1"]


def test_reading_a_closed_store_leaves_no_side_files(tmp_path):
    """Read without -wal or -shm files beside it (SQLite's immutable mode): nothing is left
    behind by `runs` or `report`, and a store on read-only media, where they cannot be
    made, is read."""
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.add_run(store.add_study(key="k", name="d", config={}, data={}), _run(), _points())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite"]
    with Store(path, read_only=True) as store:
        assert [r["penalty"] for r in store.runs(1)] == ["l1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite"]


def _written_store(path) -> bytes:
    with Store(path) as store:
        study = store.add_study(key="k", name="d", config={}, data={})
        for penalty in ("l1", "l2", "none"):
            store.add_run(study, {**_run(), "penalty": penalty}, _points())
    return path.read_bytes()


@pytest.mark.parametrize("read_only", [True, False])
@pytest.mark.parametrize(
    "cut, message",
    [
        (lambda data: data[: len(data) // 8192 * 4096], r"it holds \d+ of the \d+ bytes its header declares"),
        (lambda data: data[:5000], "its 5000 bytes are not whole 4096-byte pages"),
        (lambda data: data[:60], "its 60 bytes are not whole"),
        (lambda data: data[:16] + b"\x00\x00" + data[18:], "its header gives a page size of 0 bytes"),
    ],
)
def test_a_truncated_store_is_called_damaged_and_left_as_it_is(tmp_path, read_only, cut, message):
    path = tmp_path / "s.sqlite"
    damaged = cut(_written_store(path))
    path.write_bytes(damaged)
    with pytest.raises(StoreError, match=f"store '.*s.sqlite' is damaged: {message}"):
        Store(path, read_only=read_only)
    assert path.read_bytes() == damaged


@pytest.mark.parametrize("read_only", [True, False])
def test_a_store_missing_a_table_is_damaged_and_the_table_not_made_again(tmp_path, read_only):
    path = tmp_path / "s.sqlite"
    _written_store(path)
    with closing(sqlite3.connect(path)) as db:
        db.execute("DROP TABLE runs")
        db.commit()
    with pytest.raises(StoreError, match="store '.*' is damaged: its table runs is missing"):
        Store(path, read_only=read_only)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'runs'").fetchone()[0] == 0

"""Results stores as older shrinkage releases wrote them, built by hand.

The schemas are copied as they were from ``src/shrinkage/store.py`` (version 1: commit
340c049, version 2: a22ea9d, version 3: d5ec4e8, version 4: a3874eb, version 5: 20f351e, version 6: fb37829, version 7: 74ec698), not derived from the
code under test. Releases before version 4 kept the version in the ``meta`` table only
(``PRAGMA user_version`` 0).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np

_STUDIES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY, key TEXT UNIQUE, name TEXT, created TEXT,
    config TEXT, data TEXT, status TEXT);
"""

SCHEMAS = {
    1: _STUDIES
    + """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, study_id INTEGER REFERENCES studies(id), penalty TEXT,
    rules TEXT, lambdas TEXT, cv_mean TEXT, cv_se TEXT, admissible TEXT,
    lambda_min REAL, lambda_1se REAL, lambda_chosen REAL, selection TEXT,
    cv_loss REAL, cv_loss_se REAL, test_loss REAL, test_score REAL,
    fraction_zero REAL, features TEXT, n_features INTEGER, weights BLOB, seconds REAL,
    UNIQUE (study_id, penalty));
CREATE TABLE IF NOT EXISTS points (
    run_id INTEGER REFERENCES runs(id), fold INTEGER, idx INTEGER, lambda REAL,
    train_loss REAL, val_loss REAL, test_loss REAL,
    relaxed_val_loss REAL, relaxed_test_loss REAL,
    penalty REAL, n_nonzero INTEGER, n_penalized INTEGER, zero_groups INTEGER,
    n_groups INTEGER, n_features INTEGER, features TEXT, feature_norms TEXT,
    epochs INTEGER, seconds REAL,
    PRIMARY KEY (run_id, fold, idx));
""",
    2: _STUDIES
    + """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, study_id INTEGER REFERENCES studies(id), penalty TEXT,
    rules TEXT, lambdas TEXT, cv_mean TEXT, cv_se TEXT, admissible TEXT,
    lambda_min REAL, lambda_1se REAL, lambda_chosen REAL, selection TEXT,
    cv_loss REAL, cv_loss_se REAL, test_loss REAL, test_score REAL,
    fraction_zero REAL, features TEXT, n_features INTEGER, weights BLOB, model BLOB, penalized BLOB,
    seconds REAL, UNIQUE (study_id, penalty));
CREATE TABLE IF NOT EXISTS points (
    run_id INTEGER REFERENCES runs(id), fold INTEGER, idx INTEGER, lambda REAL,
    train_loss REAL, val_loss REAL, test_loss REAL,
    relaxed_val_loss REAL, relaxed_test_loss REAL,
    penalty REAL, n_nonzero INTEGER, n_penalized INTEGER, zero_groups INTEGER,
    n_groups INTEGER, n_features INTEGER, features TEXT, feature_norms TEXT,
    epochs INTEGER, seconds REAL,
    PRIMARY KEY (run_id, fold, idx));
""",
    3: _STUDIES
    + """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, study_id INTEGER REFERENCES studies(id), penalty TEXT,
    rules TEXT, lambdas TEXT, cv_mean TEXT, cv_se TEXT, admissible TEXT,
    lambda_min REAL, lambda_1se REAL, lambda_chosen REAL, selection TEXT,
    cv_loss REAL, cv_loss_se REAL, test_loss REAL, test_score REAL,
    fraction_zero REAL, features TEXT, n_features INTEGER, weights BLOB, model BLOB, penalized BLOB,
    seconds REAL, UNIQUE (study_id, penalty));
CREATE TABLE IF NOT EXISTS points (
    run_id INTEGER REFERENCES runs(id), fold INTEGER, idx INTEGER, lambda REAL,
    train_loss REAL, val_loss REAL, test_loss REAL,
    relaxed_val_loss REAL, relaxed_test_loss REAL,
    penalty REAL, n_nonzero INTEGER, n_penalized INTEGER, zero_groups INTEGER,
    n_groups INTEGER, n_features INTEGER, features TEXT, feature_norms TEXT,
    epochs INTEGER, seconds REAL, diverged INTEGER,
    PRIMARY KEY (run_id, fold, idx));
""",
    # version 4: the tables as the store wrote them (sqlite_master at commit a3874eb); the
    # version now also in PRAGMA user_version
    4: """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE studies (id INTEGER PRIMARY KEY, key TEXT UNIQUE, name TEXT, created TEXT, config TEXT, data TEXT,
    status TEXT);
CREATE TABLE runs (id INTEGER PRIMARY KEY, study_id INTEGER REFERENCES studies(id), penalty TEXT, rules TEXT,
    lambdas TEXT, cv_mean TEXT, cv_se TEXT, admissible TEXT, lambda_min REAL, lambda_1se REAL, lambda_chosen REAL,
    selection TEXT, cv_loss REAL, cv_loss_se REAL, test_loss REAL, test_score REAL, fraction_zero REAL,
    features TEXT, n_features INTEGER, weights BLOB, model BLOB, penalized BLOB, seconds REAL,
    UNIQUE (study_id, penalty));
CREATE TABLE points (run_id INTEGER REFERENCES runs(id), fold INTEGER, idx INTEGER, lambda REAL, train_loss REAL,
    val_loss REAL, test_loss REAL, relaxed_val_loss REAL, relaxed_test_loss REAL, penalty REAL, n_nonzero INTEGER,
    n_penalized INTEGER, zero_groups INTEGER, n_groups INTEGER, n_features INTEGER, features TEXT,
    feature_norms TEXT, epochs INTEGER, seconds REAL, diverged INTEGER DEFAULT 0,
    PRIMARY KEY (run_id, fold, idx));
PRAGMA user_version = 4;
""",
}

# version 5: version 4 and each point's stationarity (checked against sqlite_master at commit 20f351e)
SCHEMAS[5] = (
    SCHEMAS[4]
    .replace("diverged INTEGER DEFAULT 0,", "diverged INTEGER DEFAULT 0, stationarity REAL,")
    .replace("PRAGMA user_version = 4;", "PRAGMA user_version = 5;")
)

# version 6: version 5 and each run's engine (checked against sqlite_master at commit fb37829)
SCHEMAS[6] = (
    SCHEMAS[5]
    .replace("penalized BLOB, seconds REAL,", "penalized BLOB, seconds REAL, engine TEXT, engine_note TEXT,")
    .replace("PRAGMA user_version = 5;", "PRAGMA user_version = 6;")
)
assert "engine_note" in SCHEMAS[6]

# version 7: version 6 and each run's test predictions (checked against sqlite_master at commit 74ec698)
SCHEMAS[7] = (
    SCHEMAS[6]
    .replace("engine TEXT, engine_note TEXT,", "engine TEXT, engine_note TEXT, test_predictions TEXT,")
    .replace("PRAGMA user_version = 6;", "PRAGMA user_version = 7;")
)
assert "test_predictions" in SCHEMAS[7]

# version 8: version 7 and each run's grid notes (the columns version 8 of this code declares)
SCHEMAS[8] = (
    SCHEMAS[7]
    .replace("test_predictions TEXT,", "test_predictions TEXT, grid_notes TEXT,")
    .replace("PRAGMA user_version = 7;", "PRAGMA user_version = 8;")
)
assert "grid_notes" in SCHEMAS[8]

# What the old release wrote: JSON as text, the weights as float32 bytes.
RUN = {
    "penalty": "l1",
    "rules": '[{"penalty": {"name": "l1", "lambda_": 1.0}, "select": null}]',
    "lambdas": "[0.1, 0.2]",
    "cv_mean": "[0.5, null]",
    "cv_se": "[0.01, 0.02]",
    "admissible": "[true, false]",
    "lambda_min": 0.1,
    "lambda_1se": 0.2,
    "lambda_chosen": 0.2,
    "selection": "1se",
    "cv_loss": 0.5,
    "cv_loss_se": 0.01,
    "test_loss": 0.4,
    "test_score": 0.6,
    "fraction_zero": 0.5,
    "features": '["age", "bmi"]',
    "n_features": 2,
    "weights": np.array([0.0, 1.5], dtype=np.float32).tobytes(),
    "seconds": 2.5,
}
MODELS = {"model": b"chosen model, safetensors", "penalized": b"penalized fit, safetensors"}
POINTS = [
    {
        "fold": fold,
        "idx": idx,
        "lambda": 0.1 * (idx + 1),
        "train_loss": 0.3,
        "val_loss": 0.4,
        "test_loss": 0.5,
        "relaxed_val_loss": None,
        "relaxed_test_loss": None,
        "penalty": 0.01,
        "n_nonzero": 1,
        "n_penalized": 2,
        "zero_groups": 0,
        "n_groups": 0,
        "n_features": 1,
        "features": "[1]",
        "feature_norms": "[0.0, 1.5]",
        "epochs": 7,
        "seconds": 0.1,
    }
    for fold in (-1, 0)
    for idx in range(2)
]
DIVERGED = [0, 0, 0, 1]  # version 3: the last point's fit diverged


def _insert(db: sqlite3.Connection, table: str, row: dict) -> int:
    names = ", ".join(row)
    marks = ", ".join("?" * len(row))
    return int(db.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(row.values())).lastrowid)


def make_old_store(path: Path, version: int) -> None:
    """A store at ``version`` (1 to 8) with one complete study, one l1 run and its points."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMAS[version])
        db.execute("INSERT OR IGNORE INTO meta VALUES ('format', 'shrinkage-store')")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(version),))
        study_id = _insert(
            db,
            "studies",
            {
                "key": "old-key",
                "name": "diabetes",
                "created": "2026-11-20T10:00:00+00:00",
                "config": '{"cv": 5}',
                "data": '{"task": "regression"}',
                "status": "complete",
            },
        )
        run_id = _insert(db, "runs", {"study_id": study_id, **RUN, **(MODELS if version >= 2 else {})})
        for point, diverged in zip(POINTS, DIVERGED):
            _insert(db, "points", {"run_id": run_id, **point, **({"diverged": diverged} if version >= 3 else {})})
        db.commit()

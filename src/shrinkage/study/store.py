"""The results store: one SQLite file that holds studies, their runs and every path point.

Schema (version 2)::

    meta    (key TEXT PRIMARY KEY, value TEXT)
            -- format = 'shrinkage-store', schema_version = '2'
    studies (id INTEGER PRIMARY KEY, key TEXT UNIQUE, name TEXT, created TEXT,
             config TEXT,   -- JSON: the StudyConfig
             data TEXT,     -- JSON: data set summary (task, rows, features, groups, notes)
             status TEXT)   -- 'running' or 'complete'
    runs    (id INTEGER PRIMARY KEY, study_id INTEGER, penalty TEXT,
             rules TEXT,                      -- JSON: the penalties at λ = 1
             lambdas TEXT,                    -- JSON: the λ grid
             cv_mean TEXT, cv_se TEXT,        -- JSON: mean and SE of the CV loss per λ
             admissible TEXT,                 -- JSON: λ eligible for selection
             lambda_min REAL, lambda_1se REAL, lambda_chosen REAL, selection TEXT,
             cv_loss REAL, cv_loss_se REAL,   -- at the chosen λ
             test_loss REAL, test_score REAL, -- held-out test split
             fraction_zero REAL,              -- penalized weights exactly zero
             features TEXT,                   -- JSON: original columns kept
             n_features INTEGER,
             weights BLOB,                    -- float32: the penalized fit's layer weights
             model BLOB, penalized BLOB,      -- safetensors: the chosen model (relaxed when
                                              -- relaxed) and the penalized fit
             seconds REAL,
             UNIQUE (study_id, penalty))
    points  (run_id INTEGER, fold INTEGER,    -- fold -1: the full-data path
             idx INTEGER, lambda REAL,
             train_loss REAL, val_loss REAL, test_loss REAL,
             relaxed_val_loss REAL, relaxed_test_loss REAL,
             penalty REAL, n_nonzero INTEGER, n_penalized INTEGER,
             zero_groups INTEGER, n_groups INTEGER, n_features INTEGER,
             features TEXT, feature_norms TEXT,  -- JSON
             epochs INTEGER, seconds REAL,
             diverged INTEGER,                -- 1: the fit at this λ diverged (losses NULL)
             PRIMARY KEY (run_id, fold, idx))

Every run is written in one transaction (with its points), in WAL mode, so a reader
never sees half a run. A file that lacks the ``meta`` marker is refused: it is not
ours, and we write nothing to it.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from shrinkage.validation import InputError

__all__ = ["SCHEMA_VERSION", "Store", "StoreError"]

SCHEMA_VERSION = "3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY, key TEXT UNIQUE, name TEXT, created TEXT,
    config TEXT, data TEXT, status TEXT);
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
"""

_RUN_JSON = ("rules", "lambdas", "cv_mean", "cv_se", "admissible", "features")
_POINT_FIELDS = (
    "lambda",
    "train_loss",
    "val_loss",
    "test_loss",
    "relaxed_val_loss",
    "relaxed_test_loss",
    "penalty",
    "n_nonzero",
    "n_penalized",
    "zero_groups",
    "n_groups",
    "n_features",
    "features",
    "feature_norms",
    "epochs",
    "seconds",
    "diverged",
)


class StoreError(InputError):
    """The file is not a results store this version can use."""


def _json(value: Any) -> str:
    """JSON with NaN/inf as null (SQLite and browsers read it) and NumPy values as plain."""

    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple, np.ndarray)):
            return [clean(x) for x in v]
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return float(v) if math.isfinite(v) else None
        if isinstance(v, np.bool_):
            return bool(v)
        return v

    return json.dumps(clean(value))


def _real(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


class Store:
    """A results store at ``path`` (created if missing).

    Raises
    ------
    StoreError
        ``path`` exists but is not a shrinkage store (or has another schema version).
    """

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"store must be a file, got the directory {str(self.path)!r}")
        exists = self.path.exists() and self.path.stat().st_size > 0
        if not exists and not create:
            state = "is empty" if self.path.exists() else "does not exist"
            raise FileNotFoundError(f"store {str(self.path)!r} {state}")
        if exists:
            self._check_ours()
        try:
            self._connection = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as error:
            raise StoreError(f"store {str(self.path)!r} cannot be opened: {error}") from None
        self._connection.row_factory = sqlite3.Row
        with self._transaction() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('format', 'shrinkage-store')")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))

    def _check_ours(self) -> None:
        try:
            with open(self.path, "rb") as f:
                header = f.read(16)
        except OSError as error:
            raise StoreError(f"store {str(self.path)!r} cannot be read: {error.strerror}") from None
        if header != b"SQLite format 3\x00":
            raise StoreError(f"{str(self.path)!r} is not a shrinkage results store (not an SQLite file)")
        try:
            connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            rows = dict(connection.execute("SELECT key, value FROM meta").fetchall())
            connection.close()
        except sqlite3.Error:
            raise StoreError(f"{str(self.path)!r} is an SQLite file but not a shrinkage results store") from None
        if rows.get("format") != "shrinkage-store":
            raise StoreError(f"{str(self.path)!r} is an SQLite file but not a shrinkage results store")
        if rows.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"store {str(self.path)!r} has schema version {rows.get('schema_version')!r}; "
                f"this version of shrinkage reads version {SCHEMA_VERSION!r}"
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._connection:  # commits, or rolls back on an exception
                yield self._connection
        except sqlite3.Error as error:
            raise StoreError(f"store {str(self.path)!r}: {error}") from None

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------------- studies
    def find_study(self, key: str) -> int | None:
        row = self._connection.execute("SELECT id FROM studies WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row["id"])

    def add_study(self, *, key: str, name: str, config: dict, data: dict) -> int:
        """The study with ``key``, added unless it is there (two processes starting the
        same study at once get the same id)."""
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO studies (key, name, created, config, data, status) "
                "VALUES (?, ?, ?, ?, ?, 'running')",
                (key, name, created, _json(config), _json(data)),
            )
            return int(db.execute("SELECT id FROM studies WHERE key = ?", (key,)).fetchone()["id"])

    def set_status(self, study_id: int, status: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE studies SET status = ? WHERE id = ?", (status, study_id))

    def studies(self) -> list[dict[str, Any]]:
        rows = self._connection.execute(
            "SELECT s.*, (SELECT COUNT(*) FROM runs r WHERE r.study_id = s.id) AS n_runs FROM studies s ORDER BY id"
        ).fetchall()
        return [self._study(row) for row in rows]

    def study(self, study_id: int) -> dict[str, Any]:
        row = self._connection.execute(
            "SELECT s.*, (SELECT COUNT(*) FROM runs r WHERE r.study_id = s.id) AS n_runs FROM studies s WHERE id = ?",
            (study_id,),
        ).fetchone()
        if row is None:
            raise ValueError(f"study must be the id of a study in {str(self.path)!r}, got {study_id}")
        return self._study(row)

    @staticmethod
    def _study(row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        out["config"], out["data"] = json.loads(out["config"]), json.loads(out["data"])
        return out

    # -------------------------------------------------------------------- runs
    def add_run(self, study_id: int, run: dict[str, Any], points: list[dict[str, Any]]) -> int:
        """Store one penalty's run and its path points (fold -1: the full data) at once."""
        columns = [
            "penalty",
            "rules",
            "lambdas",
            "cv_mean",
            "cv_se",
            "admissible",
            "lambda_min",
            "lambda_1se",
            "lambda_chosen",
            "selection",
            "cv_loss",
            "cv_loss_se",
            "test_loss",
            "test_score",
            "fraction_zero",
            "features",
            "n_features",
            "weights",
            "model",
            "penalized",
            "seconds",
        ]
        values = []
        for column in columns:
            value = run.get(column)
            if column in _RUN_JSON:
                value = _json(value)
            elif column == "weights":
                value = np.asarray(value, dtype=np.float32).tobytes() if value is not None else None
            elif isinstance(value, (float, np.floating)):
                value = _real(value)
            values.append(value)
        with self._transaction() as db:
            db.execute(
                "DELETE FROM points WHERE run_id IN (SELECT id FROM runs WHERE study_id = ? AND penalty = ?)",
                (study_id, run["penalty"]),
            )
            db.execute("DELETE FROM runs WHERE study_id = ? AND penalty = ?", (study_id, run["penalty"]))
            cursor = db.execute(
                f"INSERT INTO runs (study_id, {', '.join(columns)}) VALUES (?, {', '.join('?' * len(columns))})",
                (study_id, *values),
            )
            run_id = int(cursor.lastrowid)
            db.executemany(
                f"INSERT INTO points (run_id, fold, idx, {', '.join(_POINT_FIELDS)}) "
                f"VALUES ({', '.join('?' * (len(_POINT_FIELDS) + 3))})",
                [
                    (
                        run_id,
                        int(p["fold"]),
                        int(p["idx"]),
                        *(
                            _json(p.get(f))
                            if f in ("features", "feature_norms")
                            else (_real(p.get(f)) if isinstance(p.get(f), (float, np.floating)) else p.get(f))
                            for f in _POINT_FIELDS
                        ),
                    )
                    for p in points
                ],
            )
        return run_id

    def runs(self, study_id: int) -> list[dict[str, Any]]:
        rows = self._connection.execute("SELECT * FROM runs WHERE study_id = ? ORDER BY id", (study_id,)).fetchall()
        out = []
        for row in rows:
            run = dict(row)
            for key in _RUN_JSON:
                run[key] = json.loads(run[key]) if run[key] is not None else None
            run["weights"] = np.frombuffer(run["weights"], dtype=np.float32) if run["weights"] else np.zeros(0)
            out.append(run)
        return out

    def points(self, run_id: int, fold: int | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM points WHERE run_id = ?", [run_id]
        if fold is not None:
            query, args = query + " AND fold = ?", [run_id, fold]
        rows = self._connection.execute(query + " ORDER BY fold, idx", args).fetchall()
        out = []
        for row in rows:
            point = dict(row)
            point["features"] = json.loads(point["features"]) if point["features"] else []
            point["feature_norms"] = json.loads(point["feature_norms"]) if point["feature_norms"] else []
            out.append(point)
        return out

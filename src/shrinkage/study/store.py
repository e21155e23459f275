"""The results store: one SQLite file that holds studies, their runs and every path point.

Four tables, each declared once below as a tuple of columns (``_META``, ``_STUDIES``,
``_RUNS``, ``_POINTS``); the ``CREATE TABLE`` statements, the inserts and the decoding of
rows read back (JSON parsed, float32 blobs as arrays) are all built from those tuples::

    meta     format = 'shrinkage-store', schema_version (for older shrinkage releases)
    studies  one per data set and configuration
    runs     one per penalty of a study, UNIQUE (study_id, penalty)
    points   one per λ of the full-data path (fold -1) and of each CV fold

The schema version is ``PRAGMA user_version`` (9). Stores written before version 4 carry
their version only in ``meta`` (user_version 0): version 1 lacks ``runs.model`` and
``runs.penalized``, versions 1 and 2 lack ``points.diverged``, versions 1 to 4 lack
``points.stationarity``, versions 1 to 5 ``runs.engine`` and ``runs.engine_note``, 1 to 6
``runs.test_predictions``, 1 to 7 ``runs.grid_notes``, 1 to 8 ``points.relaxed_epochs``.
Such a store is upgraded in place,
one named step per version, in one transaction, when it is opened for writing; opened
with ``read_only=True`` it is left as it is and a column it lacks reads as that column's
default. A store newer than this code is refused, and so is a file that lacks the
``meta`` marker: it is not ours, and we write nothing to it. A store shorter than its
SQLite header declares, missing a table, or whose pages SQLite cannot read is "damaged".

Every run is written in one transaction (with its points), in WAL mode, so a reader
never sees half a run. A closed store is read in SQLite's immutable mode: no ``-wal`` or
``-shm`` file is made beside it (none can be on read-only media).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from shrinkage.presets import PRESETS
from shrinkage.validation import InputError

__all__ = ["SCHEMA_VERSION", "Store", "StoreError"]

SCHEMA_VERSION = 9
_FORMAT = "shrinkage-store"


class StoreError(InputError):
    """The file is not a results store this version can use."""


# ---------------------------------------------------------------------------- values
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


def _int(value: Any) -> int | float | None:
    # a float (NaN included) is kept as a float, as SQLite's INTEGER affinity would keep it
    return _real(value) if isinstance(value, (float, np.floating)) else int(value)


def _float32(value: Any) -> bytes:
    return np.asarray(value, dtype=np.float32).tobytes()


def _array(raw: bytes) -> np.ndarray:
    if not raw:
        return np.zeros(0)
    if not isinstance(raw, bytes) or len(raw) % 4:
        raise _Damaged("a float32 array's bytes")
    if raw[:1] == b"\x80" and raw[1] in range(2, 6) and raw.endswith(b"."):  # a pickle's frame, never unpickled
        raise _Damaged("a float32 array's bytes, not a pickle")
    values = np.frombuffer(raw, dtype=np.float32)
    if not np.isfinite(values).all():  # weights of a finished fit are finite: other bytes (a pickle) are not
        raise _Damaged("finite float32 numbers")
    return values


class _Damaged(ValueError):
    """A column's value is not what the store writes there (see :meth:`_Table.decode`)."""


def _typed(kind: type | tuple[type, ...], what: str) -> Callable[[Any], Any]:
    """A decoder that returns a stored value of ``kind`` as it is, else ``_Damaged(what)``."""

    def decode(raw: Any) -> Any:
        if not isinstance(raw, kind):
            raise _Damaged(what)
        return raw

    return decode


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _list_of(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(test(x) for x in value)


def _is_rule(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("penalty"), dict)


def _one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda value: value in choices


# what a reader relies on beyond the value's type, per column: (what it must be, test); a
# column whose shape ends in "?" may also be null (a fold's point, a row of an older store)
_SHAPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "penalty": ("the name of a penalty (none, l1, …)", _one_of(*PRESETS)),
    "status": ("'running' or 'complete'", _one_of("running", "complete")),
    "selection": ("'1se' or 'min'", _one_of("1se", "min")),
    "fold": ("a whole number from -1", lambda v: isinstance(v, int) and v >= -1),
    "lambda": ("a number >= 0", lambda v: v is None or (_number(v) and v >= 0)),
    "object": ("a JSON object", lambda v: isinstance(v, dict)),
    "rules": ("a JSON list of rules, each with a penalty", _list_of(_is_rule)),
    "list": ("a JSON list", _list_of(lambda x: True)),
    "numbers": ("a JSON list of numbers", _list_of(lambda x: x is None or _number(x))),
    "strings": ("a JSON list of strings", _list_of(lambda x: isinstance(x, str))),
    "indices": ("a JSON list of column numbers", _list_of(lambda x: _number(x) and x == int(x) and x >= 0)),
    "flags": ("a JSON list of true/false", _list_of(lambda x: isinstance(x, bool))),
}


def _same(value: Any) -> Any:
    return value


# kind: (SQL type, Python value → stored value, stored value → Python value); None stays NULL
_KINDS: dict[str, tuple[str, Callable[[Any], Any], Callable[[Any], Any]]] = {
    "int": ("INTEGER", _int, _typed(int, "a whole number")),
    "float": ("REAL", _real, _typed((int, float), "a number")),
    "text": ("TEXT", _same, _typed(str, "text")),
    "json": ("TEXT", _json, json.loads),
    "blob": ("BLOB", _same, _typed(bytes, "bytes")),  # bytes as they are (safetensors files)
    "float32": ("BLOB", _float32, _array),  # a float32 array; empty when NULL
}


# ---------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class _Column:
    """One column: its name, the kind of value it holds (a key of ``_KINDS``), an SQL
    constraint, and the default that rows written before the column existed read as."""

    name: str
    kind: str
    constraint: str = ""
    default: int | None = None
    shape: str | None = None  # what the value must be beyond its kind: a key of _SHAPES

    @property
    def sql_type(self) -> str:
        return _KINDS[self.kind][0]

    @property
    def definition(self) -> str:
        default = "" if self.default is None else f"DEFAULT {self.default}"
        return " ".join(part for part in (self.name, self.sql_type, self.constraint, default) if part)

    def encode(self, value: Any) -> Any:
        if value is None and self.kind != "json":  # JSON keeps None as 'null'
            return None
        return _KINDS[self.kind][1](value)

    def decode(self, raw: Any) -> Any:
        value = None if raw is None and self.kind != "float32" else _KINDS[self.kind][2](raw)
        if self.shape is None or (value is None and self.shape.endswith("?")):
            return value
        what, test = _SHAPES[self.shape.rstrip("?")]
        if not test(value):
            raise _Damaged(what)
        return value


@dataclass(frozen=True)
class _Table:
    """A table's columns and table constraints. ``id``, where there is one, is the row id
    SQLite assigns; every other column is written by :meth:`row`."""

    name: str
    columns: tuple[_Column, ...]
    constraints: tuple[str, ...] = ()

    def column(self, name: str) -> _Column:
        return next(column for column in self.columns if column.name == name)

    def create(self) -> str:
        return f"CREATE TABLE {self.name} ({', '.join([c.definition for c in self.columns] + list(self.constraints))})"

    def add_column(self, name: str) -> str:
        return f"ALTER TABLE {self.name} ADD COLUMN {self.column(name).definition}"

    def insert(self, verb: str = "INSERT") -> str:
        names = [c.name for c in self.columns if c.name != "id"]
        return f"{verb} INTO {self.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"

    def row(self, record: Mapping[str, Any], **keys: Any) -> tuple[Any, ...]:
        """The values :meth:`insert` takes: ``keys`` as they are (the parent's id), the
        other columns encoded from ``record`` (a missing one is NULL)."""
        return tuple(
            keys[c.name] if c.name in keys else c.encode(record.get(c.name)) for c in self.columns if c.name != "id"
        )

    def decode(self, row: sqlite3.Row, where: str = "store") -> dict[str, Any]:
        """``row`` as a dict, its columns decoded; a column the file lacks is its default.
        A value that is not what the store writes is a :class:`StoreError` naming the
        table and column (``where``: the store)."""
        found = dict(row)
        decoded = {}
        for c in self.columns:
            try:
                decoded[c.name] = c.decode(found.get(c.name, c.default))
            except (ValueError, TypeError, RecursionError) as error:
                rule = str(error) if isinstance(error, _Damaged) else f"a {c.kind} value"
                raise StoreError(f"{where} is damaged: {self.name}.{c.name} must hold {rule}") from None
        return {**found, **decoded}


def _check_grid(run: dict[str, Any], where: str) -> None:
    """A run's per-λ columns hold one value per λ of its grid (the report draws them
    against each other): a :class:`StoreError` naming the column otherwise."""
    lambdas = run["lambdas"]
    for name in ("cv_mean", "cv_se", "admissible"):
        values = run[name]
        if lambdas is not None and values is not None and len(values) != len(lambdas):
            raise StoreError(
                f"{where} is damaged: runs.{name} of run {run['id']} must hold one value per λ of runs.lambdas "
                f"({len(lambdas)}), not {len(values)}"
            )


_META = _Table("meta", (_Column("key", "text", "PRIMARY KEY"), _Column("value", "text")))

_STUDIES = _Table(
    "studies",
    (
        _Column("id", "int", "PRIMARY KEY"),
        _Column("key", "text", "UNIQUE"),  # hash of the config and the data
        _Column("name", "text"),
        _Column("created", "text"),  # ISO 8601, UTC
        _Column("config", "json", shape="object"),  # the StudyConfig
        _Column("data", "json", shape="object"),  # data set summary (task, rows, features, groups, notes)
        _Column("status", "text", shape="status"),
    ),
)

_RUNS = _Table(
    "runs",
    (
        _Column("id", "int", "PRIMARY KEY"),
        _Column("study_id", "int", "REFERENCES studies(id)"),
        _Column("penalty", "text", shape="penalty"),
        _Column("rules", "json", shape="rules"),  # the penalties at λ = 1
        _Column("lambdas", "json", shape="numbers"),  # the λ grid
        _Column("cv_mean", "json", shape="numbers"),  # mean of the CV loss per λ
        _Column("cv_se", "json", shape="numbers"),  # its standard error per λ
        _Column("admissible", "json", shape="flags"),  # λ eligible for selection
        _Column("lambda_min", "float", shape="lambda"),
        _Column("lambda_1se", "float", shape="lambda"),
        _Column("lambda_chosen", "float", shape="lambda"),
        _Column("selection", "text", shape="selection"),
        _Column("cv_loss", "float"),  # at the chosen λ
        _Column("cv_loss_se", "float"),
        _Column("test_loss", "float"),  # held-out test split
        _Column("test_score", "float"),
        _Column("fraction_zero", "float"),  # penalized weights exactly zero
        _Column("features", "json", shape="strings"),  # original columns kept
        _Column("n_features", "int"),
        _Column("weights", "float32"),  # the penalized fit's layer weights
        _Column("model", "blob"),  # safetensors: the chosen model (relaxed when relaxed); v2
        _Column("penalized", "blob"),  # safetensors: the penalized fit; v2
        _Column("seconds", "float"),
        _Column("engine", "text"),  # how the folds trained: batched or sequential (NULL: not recorded); v6
        _Column("engine_note", "text"),  # why not batched, when not; v6
        # the chosen model's predictions on the test rows, as `shrinkage predict` gives them; v7
        _Column("test_predictions", "json", shape="list?"),
        # how the automatic λ grid was adapted, in words (RegularizationPath.notes); v8
        _Column("grid_notes", "json", shape="strings?"),
    ),
    ("UNIQUE (study_id, penalty)",),
)

_POINTS = _Table(
    "points",
    (
        _Column("run_id", "int", "REFERENCES runs(id)"),
        _Column("fold", "int", shape="fold"),  # -1: the full-data path
        _Column("idx", "int", shape="fold"),  # -1: a run without a grid
        _Column("lambda", "float"),
        _Column("train_loss", "float"),
        _Column("val_loss", "float"),
        _Column("test_loss", "float"),
        _Column("relaxed_val_loss", "float"),
        _Column("relaxed_test_loss", "float"),
        _Column("penalty", "float"),
        _Column("n_nonzero", "int"),
        _Column("n_penalized", "int"),
        _Column("zero_groups", "int"),
        _Column("n_groups", "int"),
        _Column("n_features", "int"),
        _Column("features", "json", shape="indices?"),
        _Column("feature_norms", "json", shape="numbers?"),
        _Column("epochs", "int"),
        _Column("seconds", "float"),
        _Column("diverged", "int", default=0),  # 1: the fit at this λ diverged (losses NULL); v3
        _Column("stationarity", "float"),  # how far the fit is from a stationary point (path.stationarity); v5
        _Column("relaxed_epochs", "int"),  # the epochs its relaxed fit trained (PathPoint.relaxed_epochs); v9
    ),
    ("PRIMARY KEY (run_id, fold, idx)",),
)

_TABLES = (_META, _STUDIES, _RUNS, _POINTS)
_STUDIES_WITH_RUNS = "SELECT s.*, (SELECT COUNT(*) FROM runs r WHERE r.study_id = s.id) AS n_runs FROM studies s"


# ---------------------------------------------------------------------------- migrations
def _add_models(db: sqlite3.Connection) -> None:
    """Version 1 → 2: the chosen model and the penalized fit (NULL: not stored)."""
    db.execute(_RUNS.add_column("model"))
    db.execute(_RUNS.add_column("penalized"))


def _add_diverged(db: sqlite3.Connection) -> None:
    """Version 2 → 3: which fits diverged (0 for older points: a divergence stopped the study)."""
    db.execute(_POINTS.add_column("diverged"))


def _version_in_header(db: sqlite3.Connection) -> None:
    """Version 3 → 4: the version moves to ``PRAGMA user_version``; the tables stay as they are."""


def _add_stationarity(db: sqlite3.Connection) -> None:
    """Version 4 → 5: each fit's distance from a stationary point (NULL: not measured)."""
    db.execute(_POINTS.add_column("stationarity"))


def _add_engine(db: sqlite3.Connection) -> None:
    """Version 5 → 6: which cross-validation engine trained each run (NULL: not recorded)."""
    db.execute(_RUNS.add_column("engine"))
    db.execute(_RUNS.add_column("engine_note"))


def _add_test_predictions(db: sqlite3.Connection) -> None:
    """Version 6 → 7: the chosen model's predictions on the test rows (NULL: not stored)."""
    db.execute(_RUNS.add_column("test_predictions"))


def _add_grid_notes(db: sqlite3.Connection) -> None:
    """Version 7 → 8: how each run's λ grid was adapted (NULL: not recorded)."""
    db.execute(_RUNS.add_column("grid_notes"))


def _add_relaxed_epochs(db: sqlite3.Connection) -> None:
    """Version 8 → 9: the epochs each point's relaxed fit trained (NULL: not recorded)."""
    db.execute(_POINTS.add_column("relaxed_epochs"))


_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _add_models,
    2: _add_diverged,
    3: _version_in_header,
    4: _add_stationarity,
    5: _add_engine,
    6: _add_test_predictions,
    7: _add_grid_notes,
    8: _add_relaxed_epochs,
}  # version → the step to version + 1


def _set_version(db: sqlite3.Connection, version: int) -> None:
    db.execute(f"PRAGMA user_version = {int(version)}")
    # mirrored in meta, where shrinkage before version 4 looks (and refuses a newer store)
    db.execute(_META.insert("INSERT OR REPLACE"), ("schema_version", str(version)))


# ---------------------------------------------------------------------------- the store
class Store:
    """A results store at ``path``: studies, their runs and every path point.

    Parameters
    ----------
    path : str or Path
        The SQLite file.
    create : bool, default=True
        Create the store if ``path`` is missing or empty; otherwise that is an error.
    read_only : bool, default=False
        Open without writing anything: an older store is read as it is (a column it lacks
        reads as that column's default) rather than upgraded. Implies ``create=False``.

    Raises
    ------
    StoreError
        ``path`` is a folder, is not a shrinkage store, or holds a store newer than this
        version of shrinkage.
    FileNotFoundError
        ``path`` is missing or empty and the store is not to be created.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "results.sqlite"
    >>> with Store(path) as store:
    ...     study = store.add_study(key="k", name="diabetes", config={}, data={})
    ...     [row["name"] for row in store.studies()]
    ['diabetes']
    """

    def __init__(self, path: str | Path, *, create: bool = True, read_only: bool = False):
        self.path = Path(path)
        self._where = f"store {str(self.path)!r}"
        if self.path.is_dir():
            raise StoreError(f"store must be a file, got the directory {str(self.path)!r}")
        exists = self.path.exists() and self.path.stat().st_size > 0
        if not exists and (read_only or not create):
            state = "is empty" if self.path.exists() else "does not exist"
            raise FileNotFoundError(f"store {str(self.path)!r} {state}")
        if exists:
            self._check_sqlite()
        try:
            if read_only:
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                if not any(self.path.with_name(self.path.name + end).exists() for end in ("-wal", "-shm")):
                    # no connection has the store open and nothing is pending in a -wal
                    # file: read the file as it is, without the -wal and -shm files SQLite
                    # would otherwise leave beside it (and cannot make on read-only media)
                    uri += "&immutable=1"
                self._connection = sqlite3.connect(uri, uri=True, timeout=30)
            else:
                self._connection = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as error:
            raise StoreError(f"store {str(self.path)!r} cannot be opened: {error}") from None
        self._connection.row_factory = sqlite3.Row
        try:
            if read_only:
                self._version(self._connection)
            else:
                self._set_up(new=not exists)
        except BaseException:
            self._connection.close()
            raise

    def _check_sqlite(self) -> None:
        """StoreError unless the file starts as an SQLite file, whole as its header declares."""
        try:
            with open(self.path, "rb") as f:
                header = f.read(100)
        except OSError as error:
            raise StoreError(f"store {str(self.path)!r} cannot be read: {error.strerror}") from None
        if header[:16] != b"SQLite format 3\x00":
            raise StoreError(f"{str(self.path)!r} is not a shrinkage results store (not an SQLite file)")
        page = int.from_bytes(header[16:18], "big")
        page = 65536 if page == 1 else page
        size = self.path.stat().st_size
        declared = int.from_bytes(header[28:32], "big") * page if header[24:28] == header[92:96] else 0
        if page < 512 or page & (page - 1):  # a power of two from 512 in any SQLite file
            held = f"its header gives a page size of {page} bytes"
        elif len(header) < 100 or size % page:
            held = f"its {size} bytes are not whole {page}-byte pages"
        elif size < declared:
            held = f"it holds {size} of the {declared} bytes its header declares"
        else:
            return
        raise StoreError(f"store {str(self.path)!r} is damaged: {held} (a truncated or partly copied file?)")

    def _damaged(self, error: Exception) -> StoreError:
        detail = " ".join(str(error).split())  # one line (SQLite may quote the damaged text)
        detail = detail if len(detail) <= 200 else detail[:200] + "…"
        return StoreError(f"store {str(self.path)!r} is damaged or cannot be read: {detail}")

    def _read(self, query: str, args: tuple | list = ()) -> list[sqlite3.Row]:
        """The rows of a query; StoreError if SQLite cannot read them (a damaged file:
        broken pages, text that is not UTF-8)."""
        try:
            return self._connection.execute(query, args).fetchall()
        except (sqlite3.Error, UnicodeDecodeError) as error:
            raise self._damaged(error) from None

    def _version(self, db: sqlite3.Connection) -> int:
        """The schema version of the open file; StoreError unless this code reads it."""
        not_ours = StoreError(f"{str(self.path)!r} is an SQLite file but not a shrinkage results store")
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "meta" not in tables:
                raise not_ours
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except (sqlite3.Error, UnicodeDecodeError) as error:
            raise self._damaged(error) from None
        try:
            version = version or int(meta.get("schema_version", 0))
        except (TypeError, ValueError):
            raise not_ours from None
        if meta.get("format") != _FORMAT or version < 1:
            raise not_ours
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {str(self.path)!r} has schema version {version}; this version of shrinkage "
                f"reads versions 1 to {SCHEMA_VERSION} (upgrade shrinkage to open it)"
            )
        missing = [table.name for table in _TABLES if table.name not in tables]
        if missing:
            which = f"table {missing[0]} is" if len(missing) == 1 else f"tables {', '.join(missing)} are"
            raise StoreError(f"store {str(self.path)!r} is damaged: its {which} missing")
        return version

    def _set_up(self, *, new: bool) -> None:
        """Create the tables of a new store, or upgrade an older one, in one transaction."""
        with self._transaction() as db:
            db.execute("BEGIN IMMEDIATE")  # a second process opening the file waits, then finds it done
            if new and not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                for table in _TABLES:
                    db.execute(table.create())
                db.execute(_META.insert(), ("format", _FORMAT))
                _set_version(db, SCHEMA_VERSION)
            for version in range(self._version(db), SCHEMA_VERSION):
                _MIGRATIONS[version](db)
                _set_version(db, version + 1)
        with self._transaction() as db:
            db.execute("PRAGMA journal_mode=WAL")  # not inside a transaction

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._connection:  # commits, or rolls back on an exception
                yield self._connection
            # the committed pages go from the -wal file into the store itself: a copy of
            # the .sqlite file alone, after a crash, holds every finished run
            self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as error:
            raise StoreError(f"store {str(self.path)!r}: {' '.join(str(error).split())}") from None

    def close(self) -> None:
        """Close the file."""
        self._connection.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------------- studies
    def find_study(self, key: str) -> int | None:
        """The id of the study with ``key``, or None."""
        row = next(iter(self._read("SELECT id FROM studies WHERE key = ?", (key,))), None)
        return None if row is None else int(row["id"])

    def add_study(self, *, key: str, name: str, config: dict, data: dict) -> int:
        """The study with ``key``, added unless it is there (two processes starting the
        same study at once get the same id).

        Parameters
        ----------
        key : str
            What identifies the study (a hash of its config and data).
        name : str
            The data set's name.
        config, data : dict
            The study's configuration and the data set summary, stored as JSON.

        Returns
        -------
        int
            The study's id.
        """
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        study = dict(key=key, name=name, created=created, config=config, data=data, status="running")
        with self._transaction() as db:
            db.execute(_STUDIES.insert("INSERT OR IGNORE"), _STUDIES.row(study))
            return int(db.execute("SELECT id FROM studies WHERE key = ?", (key,)).fetchone()["id"])

    def set_status(self, study_id: int, status: str) -> None:
        """Mark a study ``'running'`` or ``'complete'``."""
        with self._transaction() as db:
            db.execute("UPDATE studies SET status = ? WHERE id = ?", (status, study_id))

    def studies(self) -> list[dict[str, Any]]:
        """Every study, oldest first, each with ``n_runs``, its number of stored runs."""
        rows = self._read(f"{_STUDIES_WITH_RUNS} ORDER BY id")
        return [_STUDIES.decode(row, self._where) for row in rows]

    def study(self, study_id: int) -> dict[str, Any]:
        """The study with id ``study_id``, with ``n_runs`` (ValueError if there is none)."""
        row = None
        if -(2**63) <= study_id < 2**63:  # (beyond SQLite's integers there is none)
            row = next(iter(self._read(f"{_STUDIES_WITH_RUNS} WHERE id = ?", (study_id,))), None)
        if row is None:
            raise InputError(f"study must be the id of a study in {str(self.path)!r}, got {study_id}")
        return _STUDIES.decode(row, self._where)

    # -------------------------------------------------------------------- runs
    def add_run(self, study_id: int, run: dict[str, Any], points: list[dict[str, Any]]) -> int:
        """Store one penalty's run and its path points (fold -1: the full data) at once.

        Parameters
        ----------
        study_id : int
            The study the run belongs to; a run of the same penalty there is replaced.
        run : dict
            The run's columns (``penalty``, ``lambdas``, ``weights``, ``model``, …); a
            missing one is stored as NULL, a non-finite float as NULL.
        points : list of dict
            One per λ and fold (``fold``, ``idx``, ``lambda``, the losses, …).

        Returns
        -------
        int
            The run's id.
        """
        run_row = _RUNS.row(run, study_id=study_id)
        with self._transaction() as db:
            db.execute(
                "DELETE FROM points WHERE run_id IN (SELECT id FROM runs WHERE study_id = ? AND penalty = ?)",
                (study_id, run["penalty"]),
            )
            db.execute("DELETE FROM runs WHERE study_id = ? AND penalty = ?", (study_id, run["penalty"]))
            inserted = db.execute(_RUNS.insert(), run_row).lastrowid
            assert inserted is not None  # an INSERT sets lastrowid
            run_id = int(inserted)
            db.executemany(_POINTS.insert(), [_POINTS.row(point, run_id=run_id) for point in points])
        return run_id

    def runs(self, study_id: int) -> list[dict[str, Any]]:
        """The study's runs in the order they were stored; JSON columns parsed,
        ``weights`` a float32 array, ``model`` and ``penalized`` bytes (or None)."""
        rows = self._read("SELECT * FROM runs WHERE study_id = ? ORDER BY id", (study_id,))
        runs = [_RUNS.decode(row, self._where) for row in rows]
        for run in runs:
            _check_grid(run, self._where)
        return runs

    def points(self, run_id: int, fold: int | None = None) -> list[dict[str, Any]]:
        """The run's path points (only ``fold``'s if given), by fold then λ index."""
        query, args = "SELECT * FROM points WHERE run_id = ?", [run_id]
        if fold is not None:
            query, args = query + " AND fold = ?", [run_id, fold]
        rows = self._read(query + " ORDER BY fold, idx", args)
        return [_POINTS.decode(row, self._where) for row in rows]

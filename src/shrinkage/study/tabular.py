"""Tables in, model-ready arrays out: reading CSV/Parquet, the task, encoding, groups.

A :class:`Table` is data as the user has it: named columns of any type and a target.
An :class:`Encoder`, fitted on training rows only, turns its features into numbers —
numeric columns imputed (median) and standardized, other columns one-hot encoded
(missing values as their own level) — and remembers which encoded columns came from
which original column. Those blocks are the *groups* of a group lasso on input
features, so a categorical feature is kept or dropped whole, under its own name.

Files are read as data: a cell holding ``=SUM(A1:A9)`` is the string it is, never
evaluated.
"""

from __future__ import annotations

import lzma
import re
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shrinkage.train import TASKS as LEARNING_TASKS
from shrinkage.validation import Described, InputError, check_choice, fail

from .._warnings import warn
from .datasets import Dataset

__all__ = [
    "MISSING_LEVEL",
    "Encoder",
    "Table",
    "infer_task",
    "is_parquet",
    "read_frame",
    "read_table",
    "table_from_dataset",
]

TASKS = ("auto", *LEARNING_TASKS)  # "auto": inferred from the target column
#: Below this many rows a text column distinct in most rows is kept (it may be a real level)
_ID_MIN_ROWS = 20
#: The level a missing value of a categorical column is encoded as
MISSING_LEVEL = "(missing)"


@dataclass
class Table:
    """Features and target as read (a pandas DataFrame and Series)."""

    features: Any  # pandas.DataFrame
    target: Any  # pandas.Series
    name: str
    task: str
    classes: list | None = None  # sorted labels, for classification
    true_features: list[str] | None = None  # known truth (synthetic data)
    notes: list[str] = field(default_factory=list)  # what was dropped or changed, and why
    dropped: list[str] = field(default_factory=list)  # constant and identifier columns, not used

    @property
    def n_samples(self) -> int:
        return len(self.target)

    def drop_constant_on(self, rows: np.ndarray) -> None:
        """Drop the feature columns constant on ``rows`` (the training rows), as reading
        drops those constant on every row: encoded, such a column is 0 on every training
        row, so its weights never train, yet it moves the predictions of other rows
        (random weights unpenalized, or whatever a penalty's prox made of a zero
        gradient). Noted and warned as reading's drops are."""
        seen = self.features.iloc[rows]
        columns = [c for c in self.features.columns if seen[c].nunique(dropna=False) <= 1]
        if not columns:
            return
        if len(columns) == self.features.shape[1]:
            raise InputError(
                f"every feature column is constant on the {len(rows)} training rows: nothing to learn from"
            )
        names = [str(c) for c in columns]
        note = (
            f"dropped {len(columns)} column(s) constant on the {len(rows)} training rows (not on every row): "
            + ", ".join(names)
        )
        warn(note, UserWarning)
        self.notes.append(note)
        self.dropped += names
        self.features = self.features.drop(columns=columns)

    def y(self) -> np.ndarray:
        """Target values (regression) or class indices into ``classes``."""
        values = self.target.to_numpy()
        if self.task == "regression":
            return values.astype(np.float64)
        if self.classes is None:
            raise fail("classes", f"the sorted labels of a {self.task} target", None)
        index = {label: k for k, label in enumerate(self.classes)}
        return np.array([index[v] for v in values], dtype=np.int64)


def infer_task(target: Any) -> str:
    """``regression`` for real-valued targets; ``binary``/``multiclass`` for labels.

    Non-numeric targets are labels. A numeric target is labels when it holds whole
    numbers only and at most 10 distinct values (e.g. 0/1, ratings 1–5).
    """
    import pandas as pd

    values = target.dropna()
    n_unique = values.nunique()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and not (n_unique <= 10 and np.all(np.mod(values.to_numpy(dtype=float), 1) == 0)):
        return "regression"
    return "binary" if n_unique == 2 else "multiclass"


def _finish(
    features,
    target,
    name: str,
    task: str,
    true_features=None,
    categorical: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> Table:
    """Checks every table passes, from a file or a bundled set; the ``categorical``
    columns (text) are neither read as numbers nor dropped as identifiers. ``notes``: how
    the file was read, first among the table's notes."""
    import pandas as pd

    check_choice("task", task, TASKS)
    target_name = str(target.name)
    missing = int(target.isna().sum())
    if missing:
        raise InputError(
            f"target column {target_name!r} must have no missing values, got {missing}; drop or fill those rows "
            "first (empty cells and text such as NA, N/A, NULL or nan are read as missing)"
        )
    if target.nunique() < 2:
        raise fail(
            f"target column {target_name!r}",
            "at least two distinct values",
            Described(f"only the value {target.iloc[0]} ({len(target)} row(s))"),
            verb="have",
        )
    if features.shape[1] == 0:
        raise InputError(f"the table must have feature columns besides the target {target_name!r}, got none")
    _check_encodable(features)
    notes = list(notes)
    features = _numbers_in_text(features, notes, keep=categorical)
    dropped: list[str] = []
    # constant columns say nothing; text distinct in most rows (an id, a name) says nothing
    # about other rows, and one-hot it would be a column per row or two
    for what, unused, left, asked in (  # (asked: applies to the categorical columns asked for)
        ("constant column(s)", lambda values: values.nunique(dropna=False) <= 1, "constant", True),
        (
            "identifier column(s) (text with a distinct value in at least half of the rows)",
            _is_identifier,
            "constant or an identifier",
            False,
        ),
        (
            "unnamed column(s) of row numbers (a saved index)",
            _is_saved_index,
            "constant, an identifier or an index",
            False,
        ),
    ):
        columns = [str(c) for c in features.columns if unused(features[c]) and (asked or c not in categorical)]
        if columns:
            note = f"dropped {len(columns)} {what}: {', '.join(columns)}"
            warn(note, UserWarning)
            notes.append(note)
            dropped += columns
            features = features.drop(columns=columns)
            if features.shape[1] == 0:
                raise InputError(f"every feature column is {left}: nothing to learn from")
    if task in ("auto", "regression"):
        target = _numeric_target(target, notes)
    task = infer_task(target) if task == "auto" else task
    classes = None
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
            raise fail("task", "'binary' or 'multiclass' for a non-numeric target", "regression")
        target = target.astype(np.float64)
        infinite = np.flatnonzero(~np.isfinite(target.to_numpy()))
        if len(infinite):
            raise InputError(
                f"target column {target_name!r} must hold finite numbers, got {target.iloc[infinite[0]]} at row "
                f"{infinite[0] + 1} of the data"
            )
    else:
        classes = sorted(target.astype(object).unique().tolist(), key=str)
        if task == "binary" and len(classes) != 2:
            raise fail("task", f"'multiclass' for a target with {len(classes)} classes", "binary")
        target = target.astype(object)
    return Table(
        features.reset_index(drop=True),
        target.reset_index(drop=True),
        name,
        task,
        classes,
        true_features,
        notes,
        dropped,
    )


_CONTAINERS = (list, tuple, dict, set, np.ndarray)


def _check_encodable(features) -> None:
    """Refuse columns a study cannot encode as they are, naming them and what to do:
    dates and durations (one level per value, one-hot), infinite numbers, and lists or
    mappings in cells."""
    import pandas as pd

    for column in features.columns:
        values = features[column]
        if pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_timedelta64_dtype(values):
            kind = "durations" if pd.api.types.is_timedelta64_dtype(values) else "dates"
            raise InputError(
                f"column {str(column)!r} holds {kind}, which a study does not encode (each would be a level of "
                "its own): turn them into numbers (such as days since a date) or drop the column"
            )
        if pd.api.types.is_float_dtype(values) and np.isinf(values.to_numpy()).any():
            row = int(np.flatnonzero(np.isinf(values.to_numpy()))[0])
            raise InputError(
                f"column {str(column)!r} holds an infinite number at row {row + 1} of the data: a study needs "
                "finite numbers (leave the cell empty for a missing value)"
            )
        present = values.dropna()
        if values.dtype == object and len(present) and _is_dates(present):
            raise InputError(
                f"column {str(column)!r} holds dates, which a study does not encode (each would be a level of "
                "its own): turn them into numbers (such as days since a date) or drop the column"
            )
        if (
            values.dtype == object
            and len(present)
            and isinstance(present.iloc[0], (list, tuple, dict, set, np.ndarray))
        ):
            raise InputError(
                f"column {str(column)!r} holds {type(present.iloc[0]).__name__}s in its cells, which a study does "
                "not encode: spread them into columns of their own or drop the column"
            )


#: A text column is numbers with a few typos when at least this share of its values are numbers
_NUMERIC_SHARE = 0.9
_THOUSANDS = r"^[+-]?[1-9]\d{0,2}(,\d{3})+(\.\d*)?$"  # 1,234,567.5 (not 0,558: a decimal comma)
_PERCENT = r"^[+-]?(\d+\.?\d*|\.\d+)\s*%$"  # 12.5% or 12.5 % (read as 12.5)
_DATE = r"^(\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4})([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?$"


def _is_dates(present) -> bool:
    """At least ``_NUMERIC_SHARE`` of a text column's values written as dates
    (``2024-01-31``, ``31/01/2024``, with or without a time)."""
    text = present.astype("string").str.strip()
    return bool(text.str.match(_DATE, na=False).mean() >= _NUMERIC_SHARE)


def _numeric_target(target, notes: list[str]):
    """A text target that is numbers (written with thousands separators, say) as numbers,
    with a note; one that is numbers but for a few values (``unknown``, a typo) is refused
    naming them: read as labels, each number would be a class of its own."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        return target
    numbers = _as_numbers(target)
    # (labels that are a few numbers, 0/1/2 with a stray "other", stay labels)
    if numbers.notna().sum() >= _NUMERIC_SHARE * len(target) and numbers.nunique() > 10:
        if numbers.notna().all():
            note = f"read target column {str(target.name)!r} as numbers ({_written_as(target)})"
            warn(note, UserWarning)
            notes.append(note)
            return numbers.astype(np.float64)
        raise InputError(
            f"target column {str(target.name)!r} must be numbers or labels, got numbers but for "
            f"{int(numbers.isna().sum())} value(s) ({_which(target, numbers.isna())}): fix or drop those rows"
        )
    return target


def _as_numbers(values):
    """A text column's values as numbers (thousands separators and percent signs read),
    NaN where a value is not one."""
    import pandas as pd

    text = values.astype("string").str.strip()
    text = text.where(~text.str.match(_THOUSANDS, na=False), text.str.replace(",", "", regex=False))
    text = text.where(~text.str.match(_PERCENT, na=False), text.str.replace(r"\s*%$", "", regex=True))
    return pd.to_numeric(text, errors="coerce")


def _which(values, bad) -> str:
    """Up to five of the ``bad`` values (a mask of ``values``) and the row of the first."""
    shown = ", ".join(repr(v) for v in values[bad].astype(str).unique()[:5])
    return f"{shown}; the first at row {int(np.flatnonzero(bad.to_numpy())[0]) + 1} of the data"


def _written_as(values) -> str:
    """How a text column of numbers writes them, for its note."""
    text = values.dropna().astype("string").str.strip()
    forms = [name for name, form in (("thousands separators", _THOUSANDS), ("percent signs", _PERCENT))
             if text.str.match(form, na=False).any()]  # fmt: skip
    return f"written with {' and '.join(forms)}" if forms else "written as text"


def _numbers_in_text(features, notes: list[str], keep: Sequence[str] = ()):
    """Text columns that are numbers (written with thousands separators, or with a few
    values that are not numbers, such as ``n/a?``) become numeric, but those in ``keep``:
    one-hot, each number would be a level of its own. The values that are not numbers
    become missing values, and a note (and a warning) names them."""
    import pandas as pd

    for column in features.columns:
        values = features[column]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values) or column in keep:
            continue
        present = values.notna()
        if not present.any():
            continue
        numbers = _as_numbers(values)
        parsed = numbers.notna() & present
        if parsed.sum() < _NUMERIC_SHARE * present.sum():
            # numbers with the other decimal mark than the file's count as numbers here
            commas = present & ~parsed & values.astype("string").str.strip().str.match(_COMMA_NUMBER, na=False)
            distinct = numbers.nunique() + values[commas].nunique()
            if (parsed | commas).sum() >= _MOSTLY * present.sum() and distinct > 10:
                _refuse_mostly_numbers(values, present & ~parsed, commas)
            continue
        bad = values[present & ~parsed]
        if bad.empty:
            note = f"read column {str(column)!r} as numbers ({_written_as(values)})"
        else:
            shown = ", ".join(repr(v) for v in bad.astype(str).unique()[:5])
            note = (
                f"read column {str(column)!r} as numbers: {len(bad)} value(s) that are not numbers "
                f"({shown}) became missing values"
            )
        warn(note, UserWarning)
        notes.append(note)
        features = features.assign(**{column: numbers.astype(np.float64)})
    return features


#: A text column with many distinct numbers in at least this share of its values, but
#: under ``_NUMERIC_SHARE``, is refused: one-hot, each number would be a level of its own
_MOSTLY = 0.5
_COMMA_NUMBER = r"^[+-]?\d+,\d+$"


def _refuse_mostly_numbers(values, bad, commas) -> None:
    """The error for a feature column of numbers but for too many values to drop (``bad``),
    or of numbers written with both decimal marks (``commas``: the ones with a comma)."""
    name = str(values.name)
    if commas.any():
        points = values.notna() & ~bad
        both = f"{int(points.sum())} with a decimal point and " if points.any() else ""
        raise InputError(
            f"column {name!r} must be numbers written with one decimal mark, got {both}{int(commas.sum())} with a "
            f"decimal comma ({_which(values, commas)}): write the file with one decimal mark"
        )
    raise InputError(
        f"column {name!r} must be numbers or labels, got numbers in {int((~bad & values.notna()).sum())} rows but "
        f"not in {int(bad.sum())} ({_which(values, bad)}): fix those values (a missing value's cell left empty), "
        f"or, if the column holds codes rather than quantities, name it in categorical (--categorical {name})"
    )


def _is_identifier(values) -> bool:
    """Text, in ``_ID_MIN_ROWS`` rows or more, with a distinct value in at least half of
    them: an id, a name, free text. One-hot, its levels would be a column per row or two,
    none of which can say anything about a new row."""
    import pandas as pd

    return (
        len(values) >= _ID_MIN_ROWS
        and not pd.api.types.is_numeric_dtype(values)
        and 2 * values.nunique() >= len(values)
    )


@contextmanager
def _quiet_overflow() -> Iterator[None]:
    """No NumPy overflow warnings while numbers near 1e300 are scaled: the study checks the
    encoded values and names the column (``runner._check_scaled``)."""
    with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
        yield


def _is_saved_index(values) -> bool:
    """A column without a name in the header (pandas calls it ``Unnamed: 0``) that counts
    the rows from 0 or 1: the row names a DataFrame was saved with."""
    import pandas as pd

    if not re.fullmatch(r"Unnamed: \d+", str(values.name)) or not pd.api.types.is_integer_dtype(values):
        return False
    numbers = values.to_numpy()
    return any(np.array_equal(numbers, np.arange(start, start + len(numbers))) for start in (0, 1))


def read_table(path: str | Path, target: str, *, task: str = "auto", categorical: Sequence[str] = ()) -> Table:
    """Read a CSV or Parquet file with a ``target`` column; the ``categorical`` columns
    as text, as written (categories, whatever they hold).

    Raises a ``ValueError`` or ``FileNotFoundError`` naming the problem for a missing
    file, a directory, an unreadable or empty file, an unknown target or categorical
    column, a target with missing values or a single value.
    """
    path = Path(path)
    frame = read_frame(path, text_columns=categorical)
    columns = list(frame.columns)
    shown = ", ".join(repr(c) for c in columns[:12]) + (", …" if len(columns) > 12 else "")
    if target not in columns:
        raise InputError(f"target column {target!r} is not in {path.name}; its columns are {shown}")
    for column in categorical:
        if column not in columns:
            raise InputError(f"categorical column {column!r} is not in {path.name}; its columns are {shown}")
        if column == target:
            raise fail("categorical", f"feature columns, not the target {target!r}", ",".join(categorical))
    read = list(frame.attrs.get("notes", ()))
    return _finish(frame.drop(columns=[target]), frame[target], path.name, task, categorical=categorical, notes=read)


def read_frame(path: str | Path, *, text_columns: Sequence[str] = ()):
    """A CSV or Parquet file as a pandas DataFrame with text column names; in a CSV, the
    ``text_columns`` are read as text as they are written (``"007"``, not 7).

    Raises a ``ValueError`` or ``FileNotFoundError`` naming the problem for a missing
    file, a directory, an unreadable or empty file.
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    if path.is_dir():
        raise fail("data file", "a file", Described(f"the directory {str(path)!r}"))
    kind = _special_kind(path)
    if kind is not None:  # reading a pipe or a device would block or never end
        raise fail("data file", "a regular file", Described(f"{kind} {str(path)!r}"))
    suffix = _suffix(path)
    if suffix in _PARQUET and path.suffix.lower() in _COMPRESSED:  # (Parquet compresses its columns itself)
        raise fail("data file", "a Parquet file as written, not compressed again", Described(repr(path.name)))
    try:
        if suffix in _PARQUET:
            frame = _read_parquet(path)
        elif suffix in (".csv", ".txt", ".tsv", ""):
            frame = _read_csv(path, sep="\t" if suffix == ".tsv" else ",", text_columns=text_columns)
        else:
            raise fail("data file", "a .csv, .tsv or .parquet file", Described(repr(path.name)))
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as error:
        raise InputError(f"data file {str(path)!r} cannot be read as a table: {str(error).splitlines()[0]}") from None
    except (EOFError, zlib.error, lzma.LZMAError) as error:  # a compressed file cut short or damaged
        raise InputError(f"data file {str(path)!r} cannot be decompressed (cut short?): {error}") from None
    except (OSError, ValueError) as error:
        if isinstance(error, (FileNotFoundError, InputError)) or "must be" in str(error):
            raise
        raise InputError(f"data file {str(path)!r} cannot be read: {str(error).splitlines()[0]}") from None
    if frame.shape[0] == 0:
        raise InputError(f"data file {str(path)!r} has no rows")
    frame.columns = [str(c) for c in frame.columns]
    _check_distinct(path, list(frame.columns))  # (a Parquet file may repeat a name too)
    for column in text_columns:  # (a CSV's are read as text already; a Parquet file's as typed)
        if column in frame.columns:
            frame[column] = frame[column].map(str, na_action="ignore").astype(object)
    return _plain_types(frame)


#: the suffixes of a Parquet file
_PARQUET = (".parquet", ".pq")


def _suffix(path: Path) -> str:
    """The suffix that says a data file's format: ``data.csv.gz`` is a compressed CSV."""
    suffix = path.suffix.lower()
    if suffix in _COMPRESSED and len(path.suffixes) > 1:
        suffix = path.suffixes[-2].lower()
    return suffix


def is_parquet(path: str | Path) -> bool:
    """Whether :func:`read_frame` reads ``path`` as a Parquet file (through pyarrow)."""
    return _suffix(Path(path)) in _PARQUET


def _plain_types(frame):
    """pandas' nullable column types (Parquet's Int64, Float64, boolean, string) as NumPy
    ones, their missing values NaN: numbers as float64, the others as text."""
    import pandas as pd

    for column in frame.columns:
        values = frame[column]
        if not pd.api.types.is_extension_array_dtype(values.dtype) or isinstance(values.dtype, pd.CategoricalDtype):
            continue
        numeric = pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype)
        plain = values.astype("float64") if numeric else values.astype(object).where(values.notna(), np.nan)
        frame[column] = plain
    return frame


def _special_kind(path: Path) -> str | None:
    """What ``path`` (its links followed) is when it is not a regular file."""
    import stat

    mode = path.stat().st_mode
    for test, name in ((stat.S_ISFIFO, "the pipe"), (stat.S_ISCHR, "the device"), (stat.S_ISBLK, "the device"),
                       (stat.S_ISSOCK, "the socket")):  # fmt: skip
        if test(mode):
            return name
    return None


def _read_parquet(path: Path):
    """A Parquet file through pyarrow; without pyarrow, a ModuleNotFoundError naming it."""
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except ImportError as error:  # pandas raises a plain ImportError for a missing engine
        if isinstance(error, ModuleNotFoundError) or "pyarrow" not in str(error):
            raise
        raise ModuleNotFoundError(f"reading Parquet needs pyarrow: {error}", name="pyarrow") from None


#: file suffixes of compressed data, and the first bytes of the formats a CSV may be in
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
_COMPRESSIONS = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
_NOT_CSV = (
    (b"PK\x03\x04", "a zip archive (an Excel workbook?): save the sheet as CSV, or unzip it"),
    (b"PAR1", "a Parquet file: name it .parquet"),
)


def _read_csv(path: Path, sep: str, text_columns: Sequence[str] = ()):
    """CSV as plain data: UTF-8 (with or without BOM), else Latin-1, or UTF-16 with its
    BOM; compressed with gzip, bzip2, xz or zstd (whatever its name says); nothing evaluated."""
    import pandas as pd

    with open(path, "rb") as file:
        head = file.read(8)
    for magic, what in _NOT_CSV:
        if head.startswith(magic):
            raise InputError(f"data file {str(path)!r} must be CSV text, but it is {what}")
    compression = next((kind for magic, kind in _COMPRESSIONS if head.startswith(magic)), None)
    utf16 = head[:2] in (b"\xff\xfe", b"\xfe\xff")
    decimal = "."
    if sep == ",":  # (a .tsv file is tab-separated by its name)
        sep, decimal = _separator(path, compression, "utf-16" if utf16 else "latin-1")
    notes: list[str] = []
    if decimal == ",":
        notes.append(
            f"read {path.name} with decimal commas (3,5 is 3.5): it is separated by semicolons, and its numbers "
            "are written with commas"
        )
        warn(notes[-1], UserWarning)
    for encoding in ("utf-16",) if utf16 else ("utf-8-sig", "latin-1"):
        try:
            types = dict.fromkeys(text_columns, str)
            read = {"sep": sep, "decimal": decimal, "encoding": encoding, "compression": compression}
            # index_col=False: a comma at the end of each row is not a column of row names
            frame = pd.read_csv(path, **read, low_memory=False, dtype=types or None, index_col=False)
            # pandas renames a repeated name ("y", "y" → "y", "y.1"): the header as written
            header = pd.read_csv(path, **read, header=None, nrows=1, dtype=str, na_filter=False)
        except UnicodeDecodeError:
            continue
        _check_distinct(path, [str(c) for c in header.iloc[0]])
        frame.attrs["notes"] = notes  # how it was read, for the study's notes (read_table)
        return frame
    raise InputError(f"data file {str(path)!r} is neither UTF-8 nor Latin-1 text")


def _separator(path: Path, compression: str | None, encoding: str) -> tuple[str, str]:
    """The separator of a CSV's header line — the comma, or a semicolon (Excel in many
    locales), a tab or a bar where the header holds more of it than of commas — and its
    decimal mark: the comma in a semicolon-separated file whose first rows write numbers
    so (:func:`_decimal_commas`), as those locales do; else the point."""
    import bz2
    import gzip

    openers: dict[str | None, Callable[..., Any]] = {None: open, "gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}
    opener = openers.get(compression)
    if opener is None:  # (zstd: no reader in the standard library) the comma
        return ",", "."
    try:
        with opener(path, "rt", encoding=encoding, errors="replace", newline="") as file:
            header = file.readline(1 << 16)
            rows = [file.readline(1 << 16) for _ in range(_DECIMAL_ROWS)]
    except (OSError, EOFError, zlib.error, lzma.LZMAError):  # read again, and refused, by pandas
        return ",", "."
    counts = {sep: header.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=lambda sep: counts[sep])
    if counts[best] <= counts[","]:
        return ",", "."
    return best, "," if best == ";" and _decimal_commas(rows) else "."


#: the rows after the header in which a semicolon-separated file's decimal mark is looked for
_DECIMAL_ROWS = 200


def _decimal_commas(rows: list[str]) -> bool:
    """Whether a semicolon-separated file's rows write numbers with decimal commas: a field
    is digits, a comma, digits (``3,5``), and no field is a number with a decimal point
    (``7.04``: then ``4,807`` is four thousand)."""
    fields = [field.strip() for row in rows for field in row.strip().split(";")]
    if any(re.fullmatch(r"[+-]?\d*\.\d+", field) for field in fields):
        return False
    return any(re.fullmatch(r"[+-]?\d+,\d+", field) for field in fields)


def _check_distinct(path: Path, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"data file {str(path)!r} must have distinct column names, got {name!r} twice")
        seen.add(name)


def table_from_dataset(data: Dataset) -> Table:
    """A bundled or synthetic :class:`~shrinkage.study.datasets.Dataset` as a table."""
    import pandas as pd

    features = pd.DataFrame(data.X, columns=data.feature_names)
    if data.task == "regression":
        target = pd.Series(data.y, name="target")
    else:
        labels = np.asarray(data.classes, dtype=object)[data.y] if data.classes else data.y
        target = pd.Series(labels, name="target")
    truth = [data.feature_names[j] for j in data.true_features] if data.true_features else None
    return _finish(features, target, data.name, data.task, truth)


def _as_levels(values):
    """Categorical values (a pandas Series or DataFrame) as the levels the encoding knows:
    each value's string, a missing one :data:`MISSING_LEVEL` (the study's encoder and a
    shipped model's :class:`~shrinkage.study.predictor.Predictor` read text the same way)."""
    values = values.astype(object)
    return values.where(values.isna(), values.astype(str)).fillna(MISSING_LEVEL)


class Encoder:
    """Impute, one-hot encode and standardize a table's features; fitted on training rows.

    As scikit-learn's ``SimpleImputer`` (median; a level of its own for a missing
    category), ``StandardScaler`` and ``OneHotEncoder(handle_unknown="ignore")`` in a
    ``ColumnTransformer`` do, value for value (the tests compare the two), in NumPy:
    scikit-learn's import would cost the study's command a second and about 75 MB. A
    numeric column without any value in the training rows is imputed with 0 (the
    column, constant, is then all zeros).

    Attributes
    ----------
    feature_names : list of str
        Encoded columns: a numeric column keeps its name, a level of a categorical
        column is ``"column=level"``.
    groups : list of list of int
        For each original column, its encoded columns (in ``group_names`` order).
    group_names : list of str
        The original column names.
    """

    def __init__(self, missing: str = "impute"):
        self.missing = check_choice("missing", missing, ("impute", "error"))

    def fit(self, frame) -> Encoder:
        import pandas as pd

        if self.missing == "error":
            counts = frame.isna().sum()
            bad = counts[counts > 0]
            if len(bad):
                listed = ", ".join(f"{c!r} ({n})" for c, n in bad.items())
                raise InputError(f"feature columns must have no missing values with missing='error', got {listed}")
        self.numeric = [
            c
            for c in frame.columns
            if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
        ]
        self.categorical = [c for c in frame.columns if c not in self.numeric]
        with _quiet_overflow():
            X = self._numbers(frame)
            self.fill = np.zeros(X.shape[1])
            if X.shape[1] and X.shape[0]:  # SimpleImputer's median: NumPy's masked median per column
                median = np.ma.median(np.ma.masked_array(X, mask=np.isnan(X)), axis=0)
                self.fill = np.ma.getdata(median).astype(np.float64).reshape(-1)
                self.fill[np.ma.getmaskarray(median).reshape(-1)] = 0.0
            X = np.asfortranarray(np.where(np.isnan(X), self.fill, X))
            # StandardScaler: mean and variance in two passes, the second corrected for the
            # rounding of the first; near-constant columns (by the bound of Chan, Golub and
            # LeVeque, as scikit-learn) keep a scale of 1
            n = X.shape[0]
            self.mean = X.sum(axis=0) / n
            deviations = np.asfortranarray(X - self.mean)
            correction = deviations.sum(axis=0)
            variance = ((deviations**2).sum(axis=0) - correction**2 / n) / n
            eps = np.finfo(np.float64).eps
            constant = variance <= n * eps * variance + (n * self.mean * eps) ** 2
            self.scale = np.where(constant, 1.0, np.sqrt(variance))
        texts = self._texts(frame)
        self.levels = [np.unique(texts[:, j]) for j in range(len(self.categorical))]
        self.feature_names = list(self.numeric)
        self.groups = [[j] for j in range(len(self.numeric))]
        self.group_names = list(self.numeric)
        start = len(self.numeric)
        for column, levels in zip(self.categorical, self.levels):
            self.feature_names += [f"{column}={level}" for level in levels]
            self.groups.append(list(range(start, start + len(levels))))
            self.group_names.append(column)
            start += len(levels)
        return self

    def columns(self) -> list[dict]:
        """The fitted encoding of each original column, as plain data (the ``columns`` of
        a :class:`~shrinkage.study.predictor.Preprocessing`): a numeric column's
        imputed value, mean and scale; a categorical column's levels."""
        described: list[dict] = [
            {
                "name": str(column),
                "kind": "numeric",
                "fill": float(self.fill[k]),
                "mean": float(self.mean[k]),
                "scale": float(self.scale[k]),
            }
            for k, column in enumerate(self.numeric)
        ]
        for column, levels in zip(self.categorical, self.levels):
            described.append({"name": str(column), "kind": "categorical", "levels": [str(v) for v in levels]})
        return described

    def _numbers(self, frame) -> np.ndarray:
        """The numeric columns as float64, one column contiguous (``(rows, columns)`` in
        Fortran order, as pandas hands them to scikit-learn: the sums add in its order)."""
        return np.asfortranarray(frame[self.numeric].to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)

    def _texts(self, frame) -> np.ndarray:
        return _as_levels(frame[self.categorical]).to_numpy(dtype=object)

    def transform(self, frame) -> np.ndarray:
        with _quiet_overflow():
            X = self._numbers(frame)
            numeric = (np.where(np.isnan(X), self.fill, X) - self.mean) / self.scale
        texts = self._texts(frame)
        onehot = [(texts[:, [j]] == levels[None, :]).astype(np.float64) for j, levels in enumerate(self.levels)]
        # (the layout scikit-learn's ColumnTransformer gave: numeric columns alone stay one
        # column contiguous, which the networks' float32 sums depend on, in the last digits)
        return np.hstack([numeric, *onehot]) if onehot else np.asfortranarray(numeric)

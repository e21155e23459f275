"""Reading user tables: tasks, encoding, groups, missing values, bad files."""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shrinkage.study.tabular import Encoder, infer_task, read_table
from shrinkage.validation import InputError


@pytest.fixture
def frame(rng):
    n = 60
    return pd.DataFrame(
        {
            "age": rng.integers(20, 70, n).astype(float),
            "city": rng.choice(["Oslo", "Lima", "Pune"], n),
            "income": rng.normal(50, 10, n),
            "constant": 1.0,
            "y": rng.normal(size=n),
        }
    )


def test_csv_one_hot_groups_and_constant_column(tmp_path, frame):
    frame.loc[3, "age"] = np.nan
    frame.loc[5, "city"] = np.nan
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    with pytest.warns(UserWarning, match=r"dropped 1 constant column\(s\): constant"):
        table = read_table(path, "y")
    assert table.task == "regression" and list(table.features.columns) == ["age", "city", "income"]
    assert table.notes == ["dropped 1 constant column(s): constant"]
    encoder = Encoder().fit(table.features)
    X = encoder.transform(table.features)
    assert encoder.group_names == ["age", "income", "city"]
    assert encoder.feature_names == ["age", "income", "city=(missing)", "city=Lima", "city=Oslo", "city=Pune"]
    assert encoder.groups == [[0], [1], [2, 3, 4, 5]]
    assert X.shape == (60, 6) and np.isfinite(X).all()
    np.testing.assert_allclose(X[:, :2].mean(0), 0, atol=1e-12)  # standardized after median imputation
    assert X[5, 2] == 1.0  # the missing city is its own level
    with pytest.raises(
        ValueError,
        match=r"feature columns must have no missing values with missing='error', got 'age' \(1\), 'city' \(1\)",
    ):
        Encoder("error").fit(table.features)


def test_parquet_and_classification_targets(tmp_path, frame):
    frame["label"] = np.where(frame["income"] > 50, "high", "low")
    path = tmp_path / "data.parquet"
    frame.drop(columns=["y", "constant"]).to_parquet(path)
    table = read_table(path, "label")
    assert table.task == "binary" and table.classes == ["high", "low"]
    assert set(table.y()) == {0, 1}
    assert table.y()[frame["label"].to_numpy() == "low"].tolist() == [1] * int((frame["label"] == "low").sum())


@pytest.mark.parametrize(
    "values, task",
    [
        ([1.5, 2.25, 3.0, 4.5], "regression"),
        ([0, 1, 1, 0], "binary"),
        ([1, 2, 3, 1, 2, 3], "multiclass"),
        (list(range(50)), "regression"),
        (["a", "b", "c"], "multiclass"),
        ([True, False], "binary"),
    ],
)
def test_task_inference(values, task):
    assert infer_task(pd.Series(values)) == task


def test_formulas_and_latin1_are_read_as_data(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_bytes("note,x,y\n=SUM(A1:A9),1,2.5\n@cmd,2,3.5\ncaf\xe9,3,1.0\n=1+1,4,0.5\n".encode("latin-1"))
    table = read_table(path, "y")
    assert table.features["note"].tolist() == ["=SUM(A1:A9)", "@cmd", "café", "=1+1"]


@pytest.mark.parametrize(
    "setup, target, error, message",
    [
        (lambda p: None, "y", FileNotFoundError, "data file '{path}' does not exist"),
        (lambda p: p.mkdir(), "y", ValueError, "data file must be a file, got the directory '{path}'"),
        (lambda p: p.write_text(""), "y", ValueError, "data file '{path}' cannot be read as a table"),
        (lambda p: p.write_text("a,b\n"), "b", ValueError, "data file '{path}' has no rows"),
        (
            lambda p: p.write_text("a,b\n1,2\n3,4\n"),
            "c",
            ValueError,
            "target column 'c' is not in data.csv; its columns are 'a', 'b'",
        ),
        (
            lambda p: p.write_text("a,b\n1,2\n3,2\n"),
            "b",
            ValueError,
            "target column 'b' must have at least two distinct values, got only the value 2 (2 row(s))",
        ),
        (
            lambda p: p.write_text("a,b\n1,2\n3,\n5,1\n"),
            "b",
            ValueError,
            "target column 'b' must have no missing values, got 1",
        ),
        (
            lambda p: p.write_text("b\n1\n2\n"),
            "b",
            ValueError,
            "the table must have feature columns besides the target 'b', got none",
        ),
        (
            lambda p: p.write_text("a,b\n1,1\n1,2\n"),
            "b",
            ValueError,
            "every feature column is constant: nothing to learn from",
        ),
    ],
)
def test_bad_files(tmp_path, setup, target, error, message):
    path = tmp_path / "data.csv"
    setup(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error) as info:
            read_table(path, target)
    assert message.format(path=path) in str(info.value)


def test_unknown_extension(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    with pytest.raises(ValueError, match=r"data file must be a .csv, .tsv or .parquet file, got 'data.xlsx'"):
        read_table(path, "y")


@pytest.mark.parametrize(("rows", "dropped"), [(25, True), (19, False)])
def test_identifier_columns_are_dropped_with_a_note(tmp_path, rows, dropped):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "name": [f"house {i // 2}" for i in range(rows)],  # a distinct value in half of the rows
            "number": np.arange(rows),  # unique too, but a number: kept
            "x": rng.normal(size=rows),
            "y": rng.normal(size=rows),
        }
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_table(tmp_path / "t.csv", "y")
    assert ("name" not in table.features.columns) == dropped and "number" in table.features.columns
    assert table.dropped == (["name"] if dropped else [])
    note = "dropped 1 identifier column(s) (text with a distinct value in at least half of the rows): name"
    assert (note in table.notes) == dropped and any(note in str(w.message) for w in caught) == dropped


def test_repeated_column_names_are_refused(tmp_path):
    """pandas would rename the second 'y' to 'y.1', and the target's copy would become a feature."""
    (tmp_path / "t.csv").write_text("a,y,y\n1,2,3\n4,5,6\n")
    with pytest.raises(ValueError, match=r"data file '.*t.csv' must have distinct column names, got 'y' twice"):
        read_table(tmp_path / "t.csv", "y")
    (tmp_path / "n.csv").write_text("a,nan,NA,y\n1,2,3,4\n5,6,7,8\n")  # names pandas reads as missing: distinct
    assert list(read_table(tmp_path / "n.csv", "y").features.columns) == ["a", "nan", "NA"]


def test_text_columns_that_are_numbers_are_read_as_numbers(tmp_path):
    """A typo (``n/a?``) or thousands separators made every number a one-hot level."""
    rng = np.random.default_rng(0)
    a = [f"{v:.3f}" for v in rng.normal(size=40)]
    a[7] = "n/a?"
    frame = pd.DataFrame({"a": a, "b": [f"{1000 * (i + 1):,}" for i in range(40)], "c": ["x", "y"] * 20})
    frame["y"] = rng.normal(size=40)
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.warns(UserWarning, match=r"read column 'a' as numbers: 1 value\(s\) that are not numbers \('n/a\?'\)"):
        table = read_table(tmp_path / "t.csv", "y")
    assert table.features["a"].dtype == np.float64 and table.features["a"].isna().sum() == 1
    assert table.features["b"].tolist() == [1000.0 * (i + 1) for i in range(40)]
    assert "read column 'b' as numbers (written with thousands separators)" in table.notes
    assert not pd.api.types.is_numeric_dtype(table.features["c"])  # text: stays a categorical column


def test_pipes_and_devices_are_refused_without_reading(tmp_path):
    """Reading a FIFO blocks for ever; a link to /dev/zero grows without bound."""
    import os

    os.mkfifo(tmp_path / "pipe.csv")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    for name, kind in (("pipe.csv", "the pipe"), ("zero.csv", "the device")):
        with pytest.raises(ValueError, match=f"data file must be a regular file, got {kind} '.*{name}'"):
            read_table(tmp_path / name, "y")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (pd.date_range("2020-01-01", periods=30, freq="D"), "column 'c' holds dates, which a study does not encode"),
        (pd.to_timedelta(np.arange(30), unit="h"), "column 'c' holds durations, which a study does not encode"),
        ([[1, 2]] * 30, "column 'c' holds ndarrays in its cells, which a study does not encode"),
    ],
)
def test_columns_a_study_cannot_encode_are_refused_naming_them(tmp_path, values, message):
    """Dates became one one-hot level per value; a list column failed with 'unhashable type'."""
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"a": np.arange(30.0), "c": values, "y": np.arange(30.0) % 7})
    frame.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(ValueError) as info:
        read_table(tmp_path / "t.parquet", "y")
    assert message in str(info.value)


def test_a_comma_at_the_end_of_each_row_is_not_a_column_of_row_names(tmp_path):
    """pandas took the first column as row names: every column shifted, the target's
    values in the column before it (test R² −0.75, no warning)."""
    rows = "".join(f"{3 * i},{i},{i % 4}," + "\n" for i in range(30))
    (tmp_path / "t.csv").write_text("y,a,b\n" + rows)
    table = read_table(tmp_path / "t.csv", "y")
    assert list(table.features.columns) == ["a", "b"]
    assert table.target.tolist() == [3.0 * i for i in range(30)] and table.features["a"].tolist() == list(range(30))


def test_nullable_parquet_columns_are_read_as_numbers_and_text(tmp_path):
    pytest.importorskip("pyarrow")
    n = 30
    frame = pd.DataFrame(
        {
            "flag": pd.array([True, False, None] * (n // 3), dtype="boolean"),
            "word": pd.array(["u", "v", None] * (n // 3), dtype="string"),
            "count": pd.array([1, None, 3] * (n // 3), dtype="Int64"),
            "y": np.arange(n, dtype=float),
        }
    )
    frame.to_parquet(tmp_path / "t.parquet")
    table = read_table(tmp_path / "t.parquet", "y")
    assert table.features["count"].dtype == np.float64 and table.features["count"].isna().sum() == n // 3
    assert table.features["flag"].dtype == object and table.features["word"].dtype == object
    assert table.features["word"].isna().sum() == n // 3  # NaN, not pd.NA: the encoder takes it
    encoded = Encoder().fit(table.features)
    assert np.isfinite(encoded.transform(table.features)).all()


def test_compressed_and_utf16_csv_files_are_read_and_other_formats_named(tmp_path):
    import gzip
    import zipfile

    rows = "a,b,y\n" + "".join(f"{i},{i % 3},{2 * i}\n" for i in range(25))
    expected = read_table(_written(tmp_path / "plain.csv", rows.encode()), "y").features
    for name, data in [
        ("gzip-named.csv", gzip.compress(rows.encode())),  # a gzip file whatever its name says
        ("data.csv.gz", gzip.compress(rows.encode())),
        ("utf16.csv", rows.encode("utf-16")),  # with its byte-order mark
    ]:
        pd.testing.assert_frame_equal(read_table(_written(tmp_path / name, data), "y").features, expected)
    with zipfile.ZipFile(tmp_path / "book.csv", "w") as book:
        book.writestr("[Content_Types].xml", "<Types/>")
    with pytest.raises(ValueError, match=r"'.*book.csv' must be CSV text, but it is a zip archive \(an Excel workbook"):
        read_table(tmp_path / "book.csv", "y")
    pytest.importorskip("pyarrow")
    pd.read_csv(tmp_path / "plain.csv").to_parquet(tmp_path / "parquet.csv")
    with pytest.raises(ValueError, match=r"must be CSV text, but it is a Parquet file: name it .parquet"):
        read_table(tmp_path / "parquet.csv", "y")


def _written(path, data: bytes):
    path.write_bytes(data)
    return path


def test_percentages_are_numbers_and_a_saved_index_is_dropped(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"rate": [f"{v:.1f}%" for v in rng.uniform(0, 100, 30)], "y": rng.normal(size=30)})
    frame.to_csv(tmp_path / "t.csv")  # with pandas' row names: a column without a name
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        table = read_table(tmp_path / "t.csv", "y")
    assert list(table.features.columns) == ["rate"] and table.dropped == ["Unnamed: 0"]
    assert table.features["rate"].tolist() == [float(v[:-1]) for v in frame["rate"]]
    assert "read column 'rate' as numbers (written with percent signs)" in table.notes


def test_a_target_read_as_missing_says_which_text_is_missing(tmp_path):
    (tmp_path / "t.csv").write_text("a,y\n" + "".join(f"{i},{'NA' if i % 2 else 'EU'}\n" for i in range(20)))
    with pytest.raises(ValueError, match=r"got 10; drop or fill those rows first \(empty cells and text such as NA"):
        read_table(tmp_path / "t.csv", "y")


def test_separators_are_read_from_the_header_and_a_cut_archive_is_refused(tmp_path):
    import gzip

    rows = [("a", "b", "y")] + [(str(i), str(i % 3), str(2 * i)) for i in range(25)]
    expected = read_table(_written(tmp_path / "comma.csv", _joined(rows, ",")), "y").features
    for sep in (";", "\t", "|"):  # Excel writes semicolons in many locales
        table = read_table(_written(tmp_path / "other.csv", _joined(rows, sep)), "y")
        pd.testing.assert_frame_equal(table.features, expected)
    cut = gzip.compress(_joined(rows, ","))[:60]
    with pytest.raises(ValueError, match=r"'.*cut.csv.gz' cannot be decompressed \(cut short\?\)"):
        read_table(_written(tmp_path / "cut.csv.gz", cut), "y")


def test_a_semicolon_file_with_decimal_commas_reads_its_numbers(tmp_path):
    """Excel in the locales that separate by semicolons writes 3,5 for 3.5: such a file
    reads the numbers it means (and says so), where it became text columns before; a
    semicolon file with decimal points, or with a comma inside a text field, reads as
    it did."""
    rng = np.random.default_rng(0)
    values = np.round(rng.standard_normal((30, 2)), 3)
    rows = [("a", "b", "name", "y")] + [
        (f"{a}", f"{b}", f"Smith, J{i}" if i % 2 else "x", f"{a + b:.3f}") for i, (a, b) in enumerate(values)
    ]
    expected = read_table(_written(tmp_path / "comma.csv", _joined(rows, ";")), "y")
    assert np.allclose(expected.features[["a", "b"]].to_numpy(dtype=float), values)
    european = [tuple(v.replace(".", ",") if v[-1].isdigit() else v for v in row) for row in rows]
    with pytest.warns(UserWarning, match=r"read eu.csv with decimal commas \(3,5 is 3.5\)"):
        table = read_table(_written(tmp_path / "eu.csv", _joined(european, ";")), "y")
    pd.testing.assert_frame_equal(table.features, expected.features)
    pd.testing.assert_series_equal(table.target, expected.target)
    assert table.notes[0].startswith("read eu.csv with decimal commas")  # the store and the report say it too
    assert not any("decimal" in note for note in expected.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no decimal commas where a comma is only in the text
        texts = [("name", "y")] + [("Smith, J", "1.5"), ("Doe, A", "2.5")] * 10
        assert read_table(_written(tmp_path / "text.csv", _joined(texts, ";")), "y").target.iloc[0] == 1.5


def test_a_semicolon_file_with_points_and_thousands_commas_is_not_read_with_decimal_commas(tmp_path):
    """A number with a decimal point in the first rows says the commas are thousands
    (4,807 is four thousand); a text target that is all numbers is read as numbers (it
    raised an IndexError); 0,558 is never a thousands number (it was 558)."""
    rng = np.random.default_rng(1)
    rows = [("x", "big", "y")] + [
        (f"{rng.normal():.2f}", f"{rng.integers(1, 9)},{rng.integers(100, 999)}", f"{rng.normal():.2f}")
        for _ in range(40)
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_table(_written(tmp_path / "points.csv", _joined(rows, ";")), "y")
    assert not [w for w in caught if "decimal commas" in str(w.message)]
    assert table.features["big"].tolist() == [float(r[1].replace(",", "")) for r in rows[1:]]
    # a text target that is all numbers (thousands separators) is read as numbers
    lines = [("x", "y")] + [(str(i), f"{1000 * i + 7 * i:,}") for i in range(1, 30)]
    with pytest.warns(UserWarning, match=r"read target column 'y' as numbers \(written with thousands separators\)"):
        table = read_table(_written(tmp_path / "target.csv", _joined(lines, "\t")), "y")
    assert table.task == "regression" and table.target.tolist() == [float(1007 * i) for i in range(1, 30)]
    lines = [("a", "y")] + [(f"{1000 * i + 123:,}", str(i)) for i in range(1, 30)] + [("0,558", "0")]
    with pytest.warns(UserWarning, match=r"read column 'a' as numbers: 1 value\(s\) that are not numbers \('0,558'\)"):
        assert read_table(_written(tmp_path / "t.csv", _joined(lines, "\t")), "y").features["a"].isna().sum() == 1


def _mixed_marks(path, commas_first: bool):
    """400 rows, ``;``-separated; column b: whole numbers or decimal points in one part, decimal
    commas (2 decimals, never a thousands number) in the other."""
    rng = np.random.default_rng(0)
    rows = [("a", "b", "y")]
    for i in range(400):
        b = rng.normal()
        comma = (i < 250) if commas_first else (i >= 250)
        text = f"{b:.2f}".replace(".", ",") if comma else (f"{b:.2f}" if commas_first else str(round(3 * b)))
        rows.append((str(rng.integers(0, 10)), text, str(i % 7)))
    return _written(path, _joined(rows, ";")), [row[1] for row in rows[1:] if "," in row[1]]


def test_a_column_of_numbers_but_for_many_values_is_refused_not_one_hot(tmp_path):
    """Decimal commas only after the rows the decimal mark is read from: the column was
    numbers in 250 rows and text in 150, and became 138 one-hot levels without a word;
    decimal commas first and points after: one-hot, or dropped as an identifier. Now both
    are refused, naming the column, both counts, the values and the first row; named
    categorical it is labels as asked. Placeholders for missing values in a third of the
    rows are refused with what to do; a few numbers with a stray label stay labels."""
    path, commas = _mixed_marks(tmp_path / "late.csv", commas_first=False)
    with pytest.raises(InputError) as caught:
        read_table(path, "y")
    shown = ", ".join(repr(v) for v in list(dict.fromkeys(commas))[:5])  # the first five, each once
    assert str(caught.value) == (
        "column 'b' must be numbers written with one decimal mark, got 250 with a decimal point and 150 with a "
        f"decimal comma ({shown}; the first at row 251 of the data): write the file with one decimal mark"
    )
    assert read_table(path, "y", categorical=["b"]).features["b"].dtype == object  # labels, as asked
    with pytest.raises(InputError, match=r"^column 'b' must be numbers written with one decimal mark, got 150 with "
                       r"a decimal point and 250 with a decimal comma \(.*; the first at row 1 of the data\)"):  # fmt: skip
        read_table(_mixed_marks(tmp_path / "early.csv", commas_first=True)[0], "y")
    rng = np.random.default_rng(1)
    holes = [("c", "y")] + [("?" if i % 3 == 0 else f"{rng.normal():.3f}", str(i % 7)) for i in range(90)]
    with pytest.raises(InputError) as caught:
        read_table(_written(tmp_path / "holes.csv", _joined(holes, ",")), "y")
    assert str(caught.value) == (
        "column 'c' must be numbers or labels, got numbers in 60 rows but not in 30 ('?'; the first at row 1 of the "
        "data): fix those values (a missing value's cell left empty), or, if the column holds codes rather than "
        "quantities, name it in categorical (--categorical c)"
    )
    few = [("a", "y")] + [(str(i % 3) if i % 4 else "other", str(i % 5)) for i in range(60)]
    assert read_table(_written(tmp_path / "few.csv", _joined(few, ",")), "y").features["a"].dtype == object


def test_categorical_columns_are_read_as_written_and_kept(tmp_path):
    """Codes written as numbers (a zip code "007"): read as numbers by default; named in
    ``categorical`` they stay text as written, one-hot, and are kept even when distinct in
    most rows (an identifier otherwise) — from a CSV, and from a Parquet file's numbers."""
    from shrinkage.study.config import StudyConfig

    rng = np.random.default_rng(0)
    codes = [f"{c:03d}" for c in rng.permutation(60)[:40]] * 2  # 40 codes, each in 2 of 80 rows
    frame = pd.DataFrame({"zip": codes, "x": rng.standard_normal(80), "y": rng.standard_normal(80)})
    frame.to_csv(tmp_path / "z.csv", index=False)
    assert read_table(tmp_path / "z.csv", "y").features["zip"].dtype == np.int64  # 7, not "007"
    table = read_table(tmp_path / "z.csv", "y", categorical=["zip"])
    assert table.features["zip"].tolist() == codes and not table.dropped
    encoder = Encoder().fit(table.features)
    assert {c["name"]: c["kind"] for c in encoder.columns()} == {"zip": "categorical", "x": "numeric"}
    assert encoder.transform(table.features).shape == (80, 40 + 1)
    frame.assign(zip=frame["zip"].astype(int)).to_parquet(tmp_path / "z.parquet")
    parquet = read_table(tmp_path / "z.parquet", "y", categorical=["zip"])
    assert parquet.features["zip"].tolist() == [str(int(c)) for c in codes]
    from shrinkage.study.runner import prepare_study

    prepared = prepare_study(StudyConfig(data=str(tmp_path / "z.csv"), target="y", categorical=("zip",)))
    levels = [name[4:] for name in prepared.summary["encoded_features"] if name.startswith("zip=")]
    assert levels and set(levels) <= set(codes) and any(level.startswith("0") for level in levels)  # as written
    with pytest.raises(ValueError, match=r"categorical column 'zap' is not in z.csv; its columns are 'zip', 'x', 'y'"):
        read_table(tmp_path / "z.csv", "y", categorical=["zap"])
    with pytest.raises(ValueError, match=r"categorical must be feature columns, not the target 'y', got 'zip,y'"):
        read_table(tmp_path / "z.csv", "y", categorical=["zip", "y"])
    with pytest.raises(ValueError, match=r"categorical must be given with a data file \(data=, --data\), got 'zip'"):
        StudyConfig(categorical=("zip",))
    with pytest.raises(ValueError, match=r"categorical must be a list without repeats, got 'zip,x,zip'"):
        StudyConfig(data="z.csv", target="y", categorical=("zip", "x", "zip"))


def _joined(rows, sep: str) -> bytes:
    return "".join(sep.join(row) + "\n" for row in rows).encode()


def test_dates_in_a_csv_and_a_numeric_target_with_a_stray_value_are_refused_naming_them(tmp_path):
    days = [f"{1 + i % 28:02d}/01/2024" for i in range(40)]
    pd.DataFrame({"when": days, "x": range(40), "y": range(40)}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ValueError, match="column 'when' holds dates, which a study does not encode"):
        read_table(tmp_path / "d.csv", "y")
    y = [f"{0.5 * i:.1f}" for i in range(40)]
    y[17] = "unknown"
    pd.DataFrame({"x": range(40), "y": y}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(
        ValueError,
        match=r"target column 'y' must be numbers or labels, got numbers but for 1 value\(s\) \('unknown'; "
        r"the first at row 18 of the data\)",
    ):
        read_table(tmp_path / "t.csv", "y")
    pd.DataFrame({"x": range(40), "rate": [f"{i} %" for i in range(40)], "y": range(40)}).to_csv(tmp_path / "p.csv")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert read_table(tmp_path / "p.csv", "y").features["rate"].tolist() == list(map(float, range(40)))


def test_an_infinite_target_is_refused_naming_its_row(tmp_path):
    (tmp_path / "t.csv").write_text("a,y\n" + "".join(f"{i},{'inf' if i == 6 else i}\n" for i in range(30)))
    with pytest.raises(ValueError, match=r"target column 'y' must hold finite numbers, got inf at row 7 of the data"):
        read_table(tmp_path / "t.csv", "y")


def _sklearn_encoding(frame: pd.DataFrame, numeric: list, categorical: list) -> ColumnTransformer:
    """The scikit-learn pipeline the Encoder reproduces (fitted on ``frame``)."""
    from shrinkage.study.tabular import MISSING_LEVEL

    pipeline = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value=MISSING_LEVEL),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                categorical,
            ),
        ],
        sparse_threshold=0.0,
    )
    return pipeline.fit(_as_text(frame, numeric, categorical))


def _as_text(frame: pd.DataFrame, numeric: list, categorical: list) -> pd.DataFrame:
    values = frame[categorical].astype(object)
    return pd.concat([frame[numeric], values.where(values.isna(), values.astype(str))], axis=1)


@pytest.mark.parametrize("seed", range(40))
def test_the_encoder_is_scikit_learns_imputer_scaler_and_one_hot_value_for_value(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 300))
    columns: dict = {}
    for j in range(int(rng.integers(1, 6))):
        values = rng.standard_normal(n) * 10 ** rng.uniform(-3, 6) + rng.uniform(-1e4, 1e4)
        if rng.random() < 0.3:
            values = np.round(values)
        if rng.random() < 0.2:
            values[:] = values[0]  # constant: a scale of 1
        if rng.random() < 0.5:
            values[rng.random(n) < 0.1] = np.nan
        columns[f"x{j}"] = values
    columns["count"] = rng.integers(0, 5, n)
    for j in range(int(rng.integers(0, 3))):
        levels = rng.choice(np.array(["b", "a", "zz", "B", "é"], dtype=object), n)
        levels[rng.random(n) < 0.1] = None
        columns[f"c{j}"] = levels
    frame = pd.DataFrame(columns)
    train, new = frame.iloc[: max(2, n // 2)], frame.iloc[max(2, n // 2) :]
    if train[[c for c in frame.columns if c.startswith("x")]].isna().all().any():
        return  # scikit-learn drops a column without any value; the Encoder keeps it (zeros)
    ours = Encoder().fit(train)
    theirs = _sklearn_encoding(train, ours.numeric, ours.categorical)
    for rows in (train, new):  # new rows: unseen levels are none of the known ones
        expected = np.asarray(theirs.transform(_as_text(rows, ours.numeric, ours.categorical)), dtype=np.float64)
        got = ours.transform(rows)
        assert np.array_equal(got, expected, equal_nan=True)
        # the same memory layout too: the networks' float32 sums depend on it in the last digits
        assert got.flags["F_CONTIGUOUS"] == expected.flags["F_CONTIGUOUS"]


def test_a_numeric_column_without_values_in_the_training_rows_is_imputed_with_zero():
    frame = pd.DataFrame({"a": [np.nan, np.nan, 1.0], "b": [1.0, 2.0, 3.0]})
    encoder = Encoder().fit(frame.iloc[:2])
    assert encoder.transform(frame)[:, 0].tolist() == [0.0, 0.0, 1.0]
    assert encoder.columns()[0] == {"name": "a", "kind": "numeric", "fill": 0.0, "mean": 0.0, "scale": 1.0}


def test_the_default_data_set_is_scikit_learns_load_diabetes_without_importing_it():
    from sklearn.datasets import load_diabetes

    from shrinkage.study.datasets import load_dataset

    ours, theirs = load_dataset("diabetes"), load_diabetes()
    assert np.array_equal(ours.X, theirs.data) and np.array_equal(ours.y, theirs.target)
    assert ours.feature_names == list(theirs.feature_names)
    assert ours.description == theirs.DESCR.splitlines()[0]


def _last_line_printed(code: str) -> str:
    """The last line that ``python -c code`` prints (it must succeed)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("data", ["bundled", "parquet"])
def test_a_study_imports_neither_scikit_learn_nor_triton_nor_numba_nor_pyarrow_but_for_parquet(tmp_path, data):
    """The ``shrinkage`` program's study: each costs the process memory (75, 50, 130 and
    34 MB) and import time; it needs none of them on the CPU (a regression test: each
    one crept in once), but pyarrow to read a Parquet file."""
    from sklearn.datasets import load_wine

    arguments = ["--penalties", "l1,group", "--n-lambdas", "4", "--cv", "3"]
    if data == "parquet":
        load_wine(as_frame=True).frame.to_parquet(tmp_path / "wine.parquet")
        arguments = ["--data", str(tmp_path / "wine.parquet"), "--target", "target", "--penalties", "l1"]
        arguments += ["--n-lambdas", "3", "--cv", "2"]
    code = (
        "import sys\n"
        "from shrinkage.__main__ import main\n"
        "try:\n"
        f"    main(['study', '--out', {str(tmp_path / 'out')!r}, '--quiet', '--n-jobs', '1', *{arguments!r}])\n"
        "finally:\n"
        "    loaded = {m.split('.')[0] for m, module in sys.modules.items() if module is not None}\n"
        "    print(sorted(loaded & {'sklearn', 'scipy', 'triton', 'numba', 'pyarrow'}))\n"
    )
    assert _last_line_printed(code) == ("['pyarrow']" if data == "parquet" else "[]")
    assert (tmp_path / "out" / "report.html").exists()


def test_a_study_called_from_python_leaves_pyarrow_to_its_process(tmp_path):
    """Called as a function (not the program), the study's process is the caller's: pyarrow
    stays importable after it (for Parquet, for the caller's own code)."""
    code = (
        "import sys\n"
        "from shrinkage.study.cli import main\n"
        "try:\n"
        f"    main(['study', '--out', {str(tmp_path / 'out')!r}, '--quiet', '--n-jobs', '1', '--penalties', 'l1', "
        "'--n-lambdas', '3', '--cv', '2'])\n"
        "except SystemExit as done:\n"
        "    assert done.code == 0\n"
        "import pyarrow\n"
        "print(pyarrow.__name__)\n"
    )
    assert _last_line_printed(code) == "pyarrow"


def test_a_studys_worker_keeps_pyarrow_out_where_the_study_does(tmp_path):
    """Where the study's process keeps pyarrow out (the command line), so do its workers;
    where it has pyarrow (a library user's with pandas), they have it too: its pandas
    objects need it to be unpickled there."""
    code = (
        "import sys\n"
        "from shrinkage.study.workers import Workers, keep_pyarrow_out\n"
        "keep_pyarrow_out()\n"
        "import pandas\n"
        "with Workers(2) as workers:\n"
        "    print(workers.pool.submit(lambda: (__import__('pandas'), sys.modules.get('pyarrow'))[1]).result())\n"
    )
    assert _last_line_printed(code) == "None"  # pandas imported there without pyarrow

    from shrinkage.study.workers import Workers

    frame = pd.DataFrame({"text": ["a", "b"]})  # (text backed by pyarrow where pandas has it)
    with Workers(2) as workers:
        assert workers.pool is not None
        assert workers.pool.submit(_rows, frame).result() == 2


def _rows(frame) -> int:
    return len(frame)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc's malloc only"
)
def test_a_studys_process_gives_freed_tensors_back():
    """glibc raises its mmap threshold to the largest block freed, after which tensors of
    up to that size come from the heap (whose freed memory it seldom gives back): the
    study's processes keep it fixed, so 1 MB tensors made after a 4 MB one was freed are
    still mapped (glibc's count of mapped bytes grows by them). (Without it they come
    from the heap, unless the heap cannot grow: glibc then maps them too, so that case
    is not asserted.)"""
    code = (
        "import ctypes, torch\n"
        "from shrinkage.study.workers import fixed_mmap_threshold\n"
        "class Info(ctypes.Structure):\n"
        "    _fields_ = [(n, ctypes.c_size_t) for n in ('arena ordblks smblks hblks hblkhd usmblks fsmblks "
        "uordblks fordblks keepcost').split()]\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.mallinfo2.restype = Info\n"
        "fixed_mmap_threshold()\n"
        "big = torch.empty(4 << 20, dtype=torch.uint8)\n"
        "del big\n"
        "mapped = libc.mallinfo2().hblkhd\n"
        "small = [torch.empty(1 << 20, dtype=torch.uint8) for _ in range(8)]\n"
        "print(libc.mallinfo2().hblkhd - mapped >= 8 << 20)\n"
    )
    assert _last_line_printed(code) == "True"

"""Shipping a study's model: the preprocessing description, ``Predictor``, and the
``export`` / ``predict`` commands — against the study's own encoder and its stored test
predictions, on raw rows of the user's file."""

from __future__ import annotations

import json
import pickle
import sqlite3
import warnings
from contextlib import closing

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from shrinkage import InputError
from shrinkage.models import MLP, SkipMLP
from shrinkage.prune import load_model, model_bytes, save_model
from shrinkage.study import StudyConfig, run_study
from shrinkage.study.cli import main
from shrinkage.study.predictor import Predictor, Preprocessing, UnseenLevelWarning, load_predictor
from shrinkage.study.store import Store
from shrinkage.study.tabular import Encoder


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _messy(n: int, seed: int) -> pd.DataFrame:
    """Numeric columns (one with missing values), a categorical one with a missing level,
    an identifier (dropped by the study), a multiclass target."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "id": [f"row-{seed}-{i}" for i in range(n)],
            "size": rng.normal(10.0, 3.0, n),
            "weight": rng.normal(size=n),
            "colour": rng.choice(["red", "green", "blue"], n).astype(object),
            "noise": rng.normal(size=n),
        }
    )
    frame.loc[rng.choice(n, n // 10, replace=False), "size"] = np.nan
    frame.loc[rng.choice(n, n // 12, replace=False), "colour"] = np.nan
    score = frame["size"].fillna(10.0) / 3.0 + 2.0 * frame["weight"] + (frame["colour"] == "red")
    frame["kind"] = np.where(score < 3.0, "low", np.where(score < 4.5, "mid", "high"))
    return frame


@pytest.fixture(scope="module")
def messy_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ship")
    frame = _messy(150, 0)
    path = folder / "train.csv"
    frame.to_csv(path, index=False)
    config = StudyConfig(
        data=str(path), target="kind", penalties=("l1", "group"), hidden=(6,), cv=2, n_lambdas=4, n_jobs=1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Store(folder / "results.sqlite") as store:
            study_id = run_study(config, store, progress=False)
            data = store.study(study_id)["data"]
            runs = {r["penalty"]: r for r in store.runs(study_id)}
    return {
        "folder": folder,
        "csv": path,
        "frame": frame,
        "store": folder / "results.sqlite",
        "data": data,
        "runs": runs,
    }


# ---------------------------------------------------------------------------- the description
def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": [1.0, np.nan, 3.0, 4.0, -2.0, 0.5],
            "b": ["x", "y", None, "x", "z", "y"],
            "c": [True, False, True, True, False, False],
            "d": [10, 20, 30, 40, 50, 60],
        }
    )


def test_the_description_encodes_as_the_study_encoder_bit_for_bit():
    frame = _frame()
    encoder = Encoder().fit(frame.iloc[:4])
    preprocessing = Preprocessing(tuple(encoder.columns()), "regression", {"name": "y", "mean": 0.0, "scale": 1.0})
    assert preprocessing.encoded_names == encoder.feature_names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnseenLevelWarning)  # "z": not in the four training rows
        got = preprocessing.encode(frame[["d", "c", "b", "a"]])  # any column order
    np.testing.assert_array_equal(got, encoder.transform(frame))
    assert Preprocessing.from_dict(json.loads(json.dumps(preprocessing.to_dict()))) == preprocessing


def test_unseen_levels_are_zeros_with_a_warning_or_an_error():
    frame = _frame()
    preprocessing = Preprocessing(
        tuple(Encoder().fit(frame.iloc[:2]).columns()), "regression", {"name": "y", "mean": 0.0, "scale": 1.0}
    )
    with pytest.warns(UnseenLevelWarning, match=r"'b' \(2 row\(s\)\)"):  # None ("(missing)") and "z" unseen
        X = preprocessing.encode(frame)
    b = [j for j, name in enumerate(preprocessing.encoded_names) if name.startswith("b=")]
    assert X[:, b].sum(axis=1).tolist() == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    with pytest.raises(
        InputError, match=r"column 'b' holds a missing value \(row 3 of the data\), which the model never"
    ):
        preprocessing.encode(frame, unseen="error")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["a"]), "data lacks the column(s) the model reads: 'a'"),
        (lambda f: f.assign(a=["1", "2", "n/a?", "4", "5", "6"]), "column 'a' must hold numbers, got 'n/a?' (row 3"),
        (lambda f: f.assign(a=[1, 2, np.inf, 4, 5, 6]), "column 'a' must hold finite numbers"),
        (lambda f: f.set_axis(["a", "b", "c", "a"], axis=1), "data must have distinct column names, got 'a' twice"),
    ],
)
def test_bad_rows_are_refused_naming_the_column(change, message):
    frame = _frame()
    preprocessing = Preprocessing(
        tuple(Encoder().fit(frame).columns()), "regression", {"name": "y", "mean": 0.0, "scale": 1.0}
    )
    with pytest.raises(InputError) as info:
        preprocessing.encode(change(frame))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_numbers_written_as_text_are_read_as_numbers():
    frame = _frame()
    preprocessing = Preprocessing(
        tuple(Encoder().fit(frame).columns()), "regression", {"name": "y", "mean": 0.0, "scale": 1.0}
    )
    as_text = frame.assign(a=["1", None, "3", "4", "-2", "0.5"], d=frame["d"].astype(str))
    np.testing.assert_array_equal(preprocessing.encode(as_text), preprocessing.encode(frame))


def test_a_pruned_network_needs_only_the_columns_it_reads():
    frame = _frame()
    preprocessing = Preprocessing(
        tuple(Encoder().fit(frame).columns()), "regression", {"name": "y", "mean": 0.0, "scale": 1.0}
    )
    names = preprocessing.encoded_names
    kept = [names.index("d"), names.index("a")]
    pruned = preprocessing.with_inputs(kept)
    assert pruned.feature_names == ["d", "a"]
    np.testing.assert_array_equal(
        pruned.encode(frame[["a", "d"]]), preprocessing.encode(frame)[:, kept]
    )  # b and c: not needed
    assert pruned.with_inputs([1]).feature_names == ["a"]  # pruned again: relative to its own inputs


def _description() -> dict:
    return {
        "format": 1,
        "columns": [
            {"name": "a", "kind": "numeric", "fill": 0.0, "mean": 1.0, "scale": 2.0},
            {"name": "b", "kind": "categorical", "levels": ["x", "y"]},
        ],
        "inputs": None,
        "task": "multiclass",
        "classes": ["p", "q", "r"],
        "target": {"name": "k", "mean": 0.0, "scale": 1.0},
        "ignored": [],
    }


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("format",), 2, "format"),
        (("columns",), [], "columns"),
        (("columns", 0, "scale"), 0.0, "columns[0].scale"),
        (("columns", 0, "mean"), "1", "columns[0].mean"),
        (("columns", 0, "fill"), float("nan"), "columns[0].fill"),
        (("columns", 1, "levels"), ["x", "x"], "columns[1].levels"),
        (("columns", 1, "kind"), "date", "columns[1].kind"),
        (("columns", 1, "name"), "a", "columns[1].name"),
        (("task",), "ranking", "task"),
        (("classes",), ["p", "p", "r"], "classes"),
        (("inputs",), [0, 7], "inputs"),
        (("inputs",), [True], "inputs"),
        (("target",), {"name": "k", "mean": 0.0, "scale": -1.0}, "target"),
        (("ignored",), "x", "ignored"),
    ],
)
def test_a_bad_description_is_refused_naming_its_field(path, value, field):
    data = _description()
    where = data
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = value
    with pytest.raises(InputError) as info:
        Preprocessing.from_dict(data)
    assert f"bad preprocessing description: {field} must be" in str(info.value)


# ---------------------------------------------------------------------------- Predictor
def test_predictions_are_in_the_targets_units_and_labels():
    torch.manual_seed(0)
    frame = _frame()
    columns = tuple(Encoder().fit(frame).columns())
    n = len(Preprocessing(columns, "regression", {"name": "y", "mean": 0, "scale": 1}).encoded_names)
    regression = Predictor(
        MLP(n, (5,), 1), Preprocessing(columns, "regression", {"name": "y", "mean": 7.0, "scale": 2.0})
    )
    out = regression.outputs(frame)[:, 0]
    np.testing.assert_allclose(regression.predict(frame), out * 2.0 + 7.0, rtol=0, atol=1e-12)
    three = Predictor(
        SkipMLP(n, (4,), 3),
        Preprocessing(columns, "multiclass", {"name": "y", "mean": 0.0, "scale": 1.0}, ("a", "b", "c")),
    )
    logits = three.outputs(frame)
    proba = three.predict_proba(frame)
    np.testing.assert_allclose(proba, torch.softmax(torch.as_tensor(logits), 1).numpy(), rtol=1e-12)
    assert three.predict(frame).tolist() == [("a", "b", "c")[k] for k in logits.argmax(axis=1)]
    binary = Predictor(
        MLP(n, (4,), 1), Preprocessing(columns, "binary", {"name": "y", "mean": 0.0, "scale": 1.0}, ("no", "yes"))
    )
    table = binary.table(frame.assign(key=range(6)), id_column="key")
    assert list(table.columns) == ["key", "prediction", "probability_no", "probability_yes"]
    assert ((table["probability_yes"] > 0.5) == (table["prediction"] == "yes")).all()
    with pytest.raises(InputError, match="predict_proba needs a classifier"):
        regression.predict_proba(frame)


def test_a_predictor_round_trips_through_its_file(tmp_path):
    torch.manual_seed(1)
    frame = _frame()
    preprocessing = Preprocessing(
        tuple(Encoder().fit(frame).columns()), "binary", {"name": "y", "mean": 0.0, "scale": 1.0}, ("0", "1")
    )
    predictor = Predictor(MLP(len(preprocessing.encoded_names), (3,), 1), preprocessing)
    back = load_predictor(predictor.save(tmp_path / "m.safetensors"))
    assert back.preprocessing == preprocessing
    np.testing.assert_array_equal(back.predict_proba(frame), predictor.predict_proba(frame))


def test_numbers_that_overflow_are_refused_naming_the_row():
    frame = _frame()
    columns = list(Encoder().fit(frame).columns())
    columns[0] = {**columns[0], "mean": 1e308, "scale": 1e-308}  # a tampered scale: x − mean overflows
    preprocessing = Preprocessing(tuple(columns), "regression", {"name": "y", "mean": 0.0, "scale": 1.0})
    with pytest.raises(InputError, match=r"column 'a' overflows the model's scaling at row 1 of the data"):
        preprocessing.encode(frame)
    columns[0] = {**columns[0], "mean": 0.0, "scale": 1e-300}  # finite inputs near 1e300
    huge = Predictor(
        MLP(len(preprocessing.encoded_names), (3,), 1),
        Preprocessing(tuple(columns), "regression", {"name": "y", "mean": 0.0, "scale": 1.0}),
    )
    with torch.no_grad():
        huge.model[0].weight.fill_(3e38)  # × 1e300: beyond float64
    with pytest.raises(InputError, match="the model gives a non-finite output at row 1 of the data"):
        huge.predict(frame)


def _tampered(kind: str) -> bytes:
    frame = _frame()
    preprocessing = Preprocessing(
        tuple(Encoder().fit(frame).columns()), "regression", {"name": "y", "mean": 0.0, "scale": 1.0}
    )
    n = len(preprocessing.encoded_names)
    if kind == "pickle":
        return pickle.dumps({"weight": torch.zeros(3)})
    if kind == "no preprocessing":
        return model_bytes(MLP(n, (3,), 1))
    if kind == "wrong inputs":
        return model_bytes(MLP(n + 2, (3,), 1), metadata={"preprocessing": preprocessing.to_dict()})
    if kind == "wrong outputs":
        return model_bytes(MLP(n, (3,), 2), metadata={"preprocessing": preprocessing.to_dict()})
    if kind == "nan weight":
        network = MLP(n, (3,), 1)
        with torch.no_grad():
            network[0].weight[0, 0] = float("nan")
        return model_bytes(network, metadata={"preprocessing": preprocessing.to_dict()})
    description = preprocessing.to_dict()
    description["columns"][0]["scale"] = "big"
    return model_bytes(MLP(n, (3,), 1), metadata={"preprocessing": description})


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("pickle", "is not a safetensors file"),
        ("no preprocessing", "carries no preprocessing description"),
        ("wrong inputs", "describes 8 network inputs, but its network has 10 inputs"),
        ("wrong outputs", "describes a regression model with 1 output(s), got 2"),
        ("nan weight", "holds non-finite numbers (NaN or infinity) in its tensor '0.weight'"),
        ("bad field", "bad preprocessing description: columns[0].scale must be a finite number > 0"),
    ],
)
def test_tampered_model_files_are_refused_in_one_line(tmp_path, kind, message):
    path = tmp_path / "model.safetensors"
    path.write_bytes(_tampered(kind))
    with pytest.raises(InputError, match="model file") as info:
        load_predictor(path)
    assert message in str(info.value)
    pd.DataFrame(_frame()).assign(y=1.0).to_csv(tmp_path / "rows.csv", index=False)
    result = run("predict", path, "--data", tmp_path / "rows.csv")
    assert result.exit_code == 2 and result.output.count("\n") == 1 and message in result.output


# ---------------------------------------------------------------------------- the study, shipped
def _stored(messy_study, penalty: str) -> list:
    return messy_study["runs"][penalty]["test_predictions"]


def test_the_study_drops_the_identifier_and_describes_its_preprocessing(messy_study):
    _, metadata = load_model(bytes(messy_study["runs"]["l1"]["model"]))
    described = Preprocessing.from_dict(metadata["preprocessing"])
    assert [c["name"] for c in described.columns] == ["size", "weight", "noise", "colour"]
    assert described.ignored == ("id",) and described.classes == ("high", "low", "mid")
    assert described.columns[3]["levels"] == ["(missing)", "blue", "green", "red"]


@pytest.mark.parametrize("penalty", ["l1", "group"])
def test_predict_reproduces_the_stored_test_predictions_exactly(messy_study, tmp_path, penalty):
    model_path = tmp_path / f"{penalty}.safetensors"
    assert run("export", messy_study["store"], "--penalty", penalty, "--out", model_path).exit_code == 0
    test_rows = messy_study["frame"].iloc[messy_study["data"]["test_rows"]]
    rows = tmp_path / "test_rows.csv"
    test_rows.drop(columns=["kind"]).sample(frac=1.0, axis=1, random_state=0).to_csv(
        rows, index=False
    )  # columns shuffled
    result = run("predict", model_path, "--data", rows, "--out", tmp_path / "out.csv")
    assert result.exit_code == 0, result.output
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out["id"]) == list(test_rows["id"])  # the identifier, beside each prediction
    assert list(out["prediction"]) == _stored(messy_study, penalty)
    probabilities = out[[f"probability_{c}" for c in ("high", "low", "mid")]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)


def test_a_pruned_export_predicts_the_same_from_the_raw_rows(messy_study, tmp_path):
    full, pruned = tmp_path / "full.safetensors", tmp_path / "pruned.safetensors"
    assert run("export", messy_study["store"], "--penalty", "l1", "--out", full).exit_code == 0
    assert run("export", messy_study["store"], "--penalty", "l1", "--prune", "--out", pruned).exit_code == 0
    frame = _messy(40, seed=5)  # new rows
    np.testing.assert_allclose(
        load_predictor(pruned).predict_proba(frame), load_predictor(full).predict_proba(frame), rtol=1e-6, atol=1e-9
    )


def test_new_rows_with_an_unseen_level_and_missing_values(messy_study, tmp_path):
    model_path = tmp_path / "m.safetensors"
    run("export", messy_study["store"], "--penalty", "l1", "--out", model_path)
    frame = _messy(12, seed=7).drop(columns=["kind"])
    frame.loc[0, "colour"] = "purple"  # never seen
    frame.loc[1, ["size", "colour"]] = [np.nan, np.nan]  # missing: imputed, the "(missing)" level
    frame["extra"] = "ignored"
    frame["id"] = [f"{i:03d}" for i in range(12)]  # written with leading zeros: copied as written
    frame.loc[11, "id"] = "1e3"
    frame.to_csv(tmp_path / "new.csv", index=False)
    result = run("predict", model_path, "--data", tmp_path / "new.csv")
    assert result.exit_code == 0
    assert "shrinkage: warning: values the model never saw in training" in result.output
    assert "'colour' (1 row(s))" in result.output
    lines = [line for line in result.output.splitlines() if not line.startswith("shrinkage:")]
    assert lines[0] == "id,prediction,probability_high,probability_low,probability_mid" and len(lines) == 13
    assert lines[1].startswith("000,") and lines[12].startswith("1e3,")
    result = run("predict", model_path, "--data", tmp_path / "new.csv", "--unseen", "error")
    assert result.exit_code == 2
    assert "column 'colour' holds the value 'purple' (row 1 of the data), which the model never saw" in result.output
    frame.drop(columns=["size"]).to_csv(tmp_path / "lacking.csv", index=False)
    result = run("predict", model_path, "--data", tmp_path / "lacking.csv")
    assert result.exit_code == 2 and "data lacks the column(s) the model reads: 'size'" in result.output


def test_export_refuses_what_it_cannot_do(messy_study, tmp_path):
    result = run("export", messy_study["store"], "--out", tmp_path / "m.safetensors")
    assert result.exit_code == 2 and "--penalty is required to export from a store" in result.output
    save_model(nn.Sequential(nn.Linear(2, 1)), tmp_path / "bare.safetensors")
    result = run("export", tmp_path / "bare.safetensors", "--penalty", "l1", "--out", tmp_path / "x.safetensors")
    assert result.exit_code == 2 and "is not a store (export a model file without them)" in result.output
    result = run("predict", tmp_path / "bare.safetensors", "--data", messy_study["csv"])
    assert result.exit_code == 2 and "carries no preprocessing description" in result.output


def test_export_takes_its_format_from_the_suffix_unless_given(messy_study, tmp_path):
    pytest.importorskip("onnx")
    assert run("export", messy_study["store"], "--penalty", "l1", "--out", tmp_path / "m.onnx").exit_code == 0
    assert (tmp_path / "m.onnx").read_bytes()[:8] != b"\x00" * 8 and not _is_safetensors(tmp_path / "m.onnx")
    result = run(
        "export", messy_study["store"], "--penalty", "l1", "--format", "onnx", "--out", tmp_path / "m.safetensors"
    )
    assert result.exit_code == 2 and "--out must not end in .safetensors for --format onnx" in result.output


def _is_safetensors(path) -> bool:
    try:
        load_model(path)
    except InputError:
        return False
    return True


def test_no_command_writes_over_a_file_it_reads(messy_study, tmp_path):
    """--out naming the store, the model or the rows a command reads is refused, and the
    file stays as it was (it was replaced by the output before)."""
    store = tmp_path / "results.sqlite"
    store.write_bytes(messy_study["store"].read_bytes())
    model, rows = tmp_path / "m.safetensors", tmp_path / "rows.csv"
    assert run("export", store, "--penalty", "l1", "--out", model).exit_code == 0
    _messy(5, seed=3).drop(columns=["kind"]).assign(prediction=1.0).to_csv(rows, index=False)
    (tmp_path / "link.sqlite").symlink_to(store)
    files = {path: path.read_bytes() for path in (store, model, rows)}
    for args, what in [
        (("export", store, "--penalty", "l1", "--out", tmp_path / "link.sqlite"), "source"),
        (("export", model, "--out", model), "source"),
        (("prune", store, "--penalty", "l1", "--out", store), "store"),
        (("report", store, "--out", store), "store"),
        (("predict", model, "--data", rows, "--out", rows), "data"),
        (("predict", model, "--data", rows, "--out", model), "model"),
    ]:
        result = run(*args)
        assert result.exit_code == 2 and f"--out must not be the {what} the command reads" in result.output, args
    assert all(path.read_bytes() == data for path, data in files.items())
    result = run("report", store, "--study", "99", "--out", tmp_path / "r.html")
    assert result.exit_code == 2 and "--study must be the id of a study in" in result.output
    with closing(sqlite3.connect(store)) as db, db:
        db.execute("UPDATE runs SET model = ? WHERE penalty = 'l1'", (b"\x00" * 64,))
    result = run("export", store, "--penalty", "l1", "--out", tmp_path / "again.safetensors")
    assert result.exit_code == 2 and "is damaged: runs.model of the 'l1' run of study 1: model bytes" in result.output
    result = run("predict", model, "--data", rows, "--id", "prediction")
    assert result.exit_code == 2, result.output
    assert "--id must not be the name of an output column, got 'prediction'" in result.output


def test_a_regression_study_predicts_in_the_targets_units(truth_study, tmp_path):
    model_path = tmp_path / "l1.safetensors"
    assert run("export", truth_study["store"], "--penalty", "l1", "--out", model_path).exit_code == 0
    with sqlite3.connect(truth_study["store"]) as db:
        (data,) = db.execute("SELECT data FROM studies").fetchone()
        (stored,) = db.execute("SELECT test_predictions FROM runs WHERE penalty = 'l1'").fetchone()
    frame = pd.read_csv(truth_study["config"].data)
    test_rows = frame.iloc[json.loads(data)["test_rows"]]
    predicted = load_predictor(model_path).predict(test_rows)
    assert predicted.tolist() == json.loads(stored)
    y = test_rows["y"].to_numpy()
    assert 1.0 - np.sum((y - predicted) ** 2) / np.sum((y - y.mean()) ** 2) > 0.8  # in y's own units

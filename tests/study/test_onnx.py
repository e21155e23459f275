"""ONNX export: the graph of a Predictor (preprocessing, network, outputs) run by
onnxruntime gives the Predictor's own predictions (the oracle: float64 PyTorch) to
float32 rounding, and the file needs neither shrinkage nor torch to run."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from shrinkage import InputError
from shrinkage.models import MLP, SkipMLP
from shrinkage.study.cli import main
from shrinkage.study.predictor import MISSING_LEVEL, Predictor, Preprocessing

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from shrinkage.study.onnx import export_onnx  # noqa: E402

RTOL = 1e-5  # the bound: ONNX (float32) against PyTorch (float64), relative

COLUMNS = (
    {"name": "age", "kind": "numeric", "fill": 41.0, "mean": 43.2, "scale": 12.9},
    {"name": "colour", "kind": "categorical", "levels": [MISSING_LEVEL, "blue", "red"]},
    {"name": "income", "kind": "numeric", "fill": 3.0, "mean": 2.5, "scale": 0.7},
    {"name": "size", "kind": "categorical", "levels": ["1", "2", "3"]},  # numbers, compared as text
    {"name": "unused", "kind": "numeric", "fill": 0.0, "mean": 0.0, "scale": 1.0},
)
# encoded columns: age 0, colour 1-3, income 4, size 5-7, unused 8
INPUTS = {
    "all": None,
    "pruned": (5, 0, 4, 2, 3, 7, 1),  # as after pruning: fewer columns, in another order; `unused` unread
    "categorical only": (3, 1, 6),
    "numeric only": (4, 0),
}
TASKS = {"regression": None, "binary": ("no", "yes"), "multiclass": ("a", "b", "c")}
TARGET = {"name": "y", "mean": 100.0, "scale": 20.0}


def _rows(rng: np.random.Generator, n: int = 120) -> pd.DataFrame:
    """Rows as a user has them: missing numbers, a missing and an unseen colour, sizes as ints."""
    frame = pd.DataFrame(
        {
            "age": rng.normal(43, 13, n),
            "colour": rng.choice(["blue", "red", "green"], n).astype(object),
            "income": rng.normal(2.5, 0.7, n),
            "size": rng.choice([1, 2, 3], n),
            "unused": rng.normal(size=n),
        }
    )
    frame.loc[::7, "age"] = np.nan
    frame.loc[1::5, "income"] = np.nan
    frame.loc[2::6, "colour"] = None
    return frame


@pytest.fixture
def frame(rng) -> pd.DataFrame:
    return _rows(rng)


def _feeds(session, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The graph's inputs from ``frame``: numbers as float32 with NaN; text as str, a missing value "(missing)"."""
    feeds = {}
    for item in session.get_inputs():
        values = frame[item.name]
        if item.type == "tensor(string)":
            text = values.astype(object).where(values.isna(), values.astype(str)).fillna(MISSING_LEVEL)
            feeds[item.name] = text.to_numpy(object)[:, None]
        else:
            feeds[item.name] = values.to_numpy(np.float32)[:, None]
    return feeds


def _run(path, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, _feeds(session, frame))))


def _expected(predictor: Predictor, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unseen colour
        if predictor.task == "regression":
            return {"prediction": predictor.predict(frame)}
        return {"probabilities": predictor.predict_proba(frame), "label": predictor.predict(frame)}


def _assert_same(got: dict, expected: dict) -> float:
    """Equal outputs (labels identical, numbers to RTOL); the largest relative difference."""
    assert set(got) == set(expected)
    worst = 0.0
    for name, want in expected.items():
        assert got[name].shape == want.shape, name
        if name == "label":
            assert got[name].tolist() == want.tolist()
            continue
        assert got[name].dtype == np.float32
        relative = np.abs(got[name] - want) / np.abs(want)
        worst = max(worst, float(relative.max()))
    assert worst <= RTOL
    return worst


def _predictor(task: str, inputs, architecture=MLP, **options) -> Predictor:
    """A random network, its outputs spread over a few units and centred on the rows of the
    ``frame`` fixture (median 0), so that labels and probabilities vary."""
    n_inputs = 9 if inputs is None else len(inputs)
    net = architecture(n_inputs, (16, 8), 3 if task == "multiclass" else 1, **options)
    predictor = Predictor(net, Preprocessing(COLUMNS, task, TARGET, TASKS[task], inputs))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.mul_(3.0)
        [*_, last] = (m for m in net.modules() if isinstance(m, nn.Linear) and m.bias is not None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unseen colour
            out = predictor.outputs(_rows(np.random.default_rng(0)))
        last.bias.sub_(torch.as_tensor(np.median(out, axis=0), dtype=last.bias.dtype))
    return predictor


@pytest.mark.parametrize("architecture", [MLP, SkipMLP])
@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("inputs", list(INPUTS))
def test_outputs_equal_the_predictors(tmp_path, frame, task, architecture, inputs):
    predictor = _predictor(task, INPUTS[inputs], architecture, activation="tanh")
    path = export_onnx(predictor, tmp_path / "model.onnx")
    expected = _expected(predictor, frame)
    _assert_same(_run(path, frame), expected)
    if task != "regression":
        assert len(set(expected["label"])) > 1  # the comparison covers more than one class


def test_inputs_are_the_columns_the_network_reads_and_outputs_are_named(tmp_path):
    session = ort.InferenceSession(str(export_onnx(_predictor("multiclass", INPUTS["pruned"]), tmp_path / "m.onnx")))
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [
        ("age", "tensor(float)", ["N", 1]),
        ("colour", "tensor(string)", ["N", 1]),
        ("income", "tensor(float)", ["N", 1]),
        ("size", "tensor(string)", ["N", 1]),
    ]  # `unused` is not read: no input
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [
        ("probabilities", "tensor(float)", ["N", 3]),
        ("label", "tensor(string)", ["N"]),
    ]
    session = ort.InferenceSession(str(export_onnx(_predictor("regression", (4,)), tmp_path / "r.onnx")))
    assert [i.name for i in session.get_inputs()] == ["income"]
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [("prediction", "tensor(float)", ["N"])]


def test_encoding_by_hand(tmp_path):
    """One linear unit per encoded column, read off the outputs: the imputed and standardized
    number, and the one-hot levels (an unseen value and a missing one not in the levels: zeros)."""
    columns = (
        {"name": "x", "kind": "numeric", "fill": 5.0, "mean": 1.0, "scale": 2.0},
        {"name": "c", "kind": "categorical", "levels": ["p", "q"]},
    )
    net = nn.Sequential(nn.Linear(3, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3)), net[0].bias.zero_()
    predictor = Predictor(net, Preprocessing(columns, "multiclass", TARGET, ("x", "p", "q")))
    session = ort.InferenceSession(str(export_onnx(predictor, tmp_path / "m.onnx")))
    x = np.array([[3.0], [np.nan], [0.0], [1.0]], dtype=np.float32)
    c = np.array([["q"], ["p"], ["r"], [MISSING_LEVEL]], dtype=object)
    probabilities, label = session.run(None, {"x": x, "c": c})
    logits = np.log(probabilities)
    z = np.array([[1.0, 0, 1], [2.0, 1, 0], [-0.5, 0, 0], [0.0, 0, 0]])  # (x or 5 − 1) / 2; one-hot of q, p, none, none
    assert np.allclose(logits - logits.mean(axis=1, keepdims=True), z - z.mean(axis=1, keepdims=True), atol=1e-6)
    assert label.tolist() == ["x", "x", "p", "x"]  # ties go to the first class, as numpy's argmax


LAYERS = [
    nn.ReLU(),
    nn.ReLU6(),
    nn.Tanh(),
    nn.Sigmoid(),
    nn.LogSigmoid(),
    nn.SiLU(),
    nn.Mish(),
    nn.GELU(),
    nn.GELU(approximate="tanh"),
    nn.SELU(),
    nn.ELU(alpha=0.7),
    nn.CELU(alpha=1.3),
    nn.LeakyReLU(0.2),
    nn.PReLU(8),
    nn.PReLU(),
    nn.Softplus(beta=2.0, threshold=1.0),
    nn.Softsign(),
    nn.Tanhshrink(),
    nn.Hardswish(),
    nn.Hardsigmoid(),
    nn.Hardtanh(-0.5, 0.8),
    nn.Threshold(0.1, -2.0),
    nn.Softshrink(0.3),
    nn.Hardshrink(0.3),
    nn.BatchNorm1d(8),
    nn.BatchNorm1d(8, affine=False),
    nn.Identity(),
    nn.Flatten(),
    nn.Dropout(0.5),
    nn.AlphaDropout(0.5),
    nn.Sequential(nn.Tanh(), nn.Dropout(0.1)),
]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: repr(layer).replace("\n", ""))
def test_every_layer_it_writes_computes_as_torch(tmp_path, frame, layer):
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.uniform_(0.2, 1.5)
        for name, buffer in layer.named_buffers():
            if name in ("running_mean", "running_var"):
                buffer.uniform_(0.5, 2.0)
    net = nn.Sequential(nn.Linear(2, 8), layer, nn.Linear(8, 1))
    with torch.no_grad():
        net[0].weight.mul_(4.0)  # inputs over the activations' kinks and tails
    predictor = Predictor(net, Preprocessing(COLUMNS, "regression", TARGET, inputs=(0, 4)))
    _assert_same(_run(export_onnx(predictor, tmp_path / "m.onnx"), frame), _expected(predictor, frame))


def test_a_layer_it_cannot_write_is_an_input_error_naming_it(tmp_path):
    net = nn.Sequential(nn.Linear(2, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    predictor = Predictor(net, Preprocessing(COLUMNS, "regression", TARGET, inputs=(0, 4)))
    with pytest.raises(
        InputError,
        match=r"^ONNX export cannot write the layer LayerNorm \(layer 1 of the network\); it writes: AlphaDropout, BatchNorm1d, CELU, ",
    ):
        export_onnx(predictor, tmp_path / "m.onnx")
    predictor.model = nn.Sequential(nn.Linear(2, 4), nn.Flatten(0), nn.Linear(4, 1))
    with pytest.raises(InputError, match=r"^ONNX export cannot write the layer Flatten \(layer 1 of the network\)"):
        export_onnx(predictor, tmp_path / "m.onnx")
    predictor.model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4, track_running_stats=False))
    with pytest.raises(InputError, match=r"^ONNX export cannot write the layer BatchNorm1d without running statistics"):
        export_onnx(predictor, tmp_path / "m.onnx")

    class Custom(nn.Module):
        def forward(self, x):
            return x[:, :1]

    predictor.model = Custom()
    with pytest.raises(
        InputError, match=r"^ONNX export writes an nn.Sequential \(an MLP\) or a SkipMLP, got the model Custom$"
    ):
        export_onnx(predictor, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_column_named_like_an_output_is_refused(tmp_path):
    columns = ({"name": "label", "kind": "numeric", "fill": 0.0, "mean": 0.0, "scale": 1.0},)
    predictor = Predictor(nn.Sequential(nn.Linear(1, 1)), Preprocessing(columns, "binary", TARGET, ("n", "y")))
    with pytest.raises(
        InputError,
        match=r"^ONNX export names its outputs probabilities, label; the model reads a column named 'label': rename",
    ):
        export_onnx(predictor, tmp_path / "m.onnx")
    export_onnx(Predictor(predictor.model, Preprocessing(columns, "regression", TARGET)), tmp_path / "m.onnx")


def test_metadata_names_the_task_classes_and_columns(tmp_path):
    predictor = _predictor("binary", INPUTS["pruned"])
    model = onnx.load(export_onnx(predictor, tmp_path / "m.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    import shrinkage

    assert props["task"] == "binary" and json.loads(props["classes"]) == ["no", "yes"]
    assert json.loads(props["inputs"]) == ["age", "colour", "income", "size"]
    assert json.loads(props["features"]) == predictor.preprocessing.feature_names
    assert Preprocessing.from_dict(json.loads(props["preprocessing"])) == predictor.preprocessing
    assert props["missing_level"] == MISSING_LEVEL and props["target"] == "y"
    assert props["shrinkage_version"] == model.producer_version == shrinkage.__version__
    assert model.producer_name == "shrinkage"
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17), ("ai.onnx.ml", 3)]


def test_without_onnx_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` fails as if it were not installed
    with pytest.raises(
        ModuleNotFoundError,
        match=r"^ONNX export needs the onnx extra: pip install 'shrinkage\[onnx\]' \(missing onnx\)$",
    ) as caught:
        export_onnx(_predictor("regression", None), tmp_path / "m.onnx")
    assert caught.value.name == "onnx"


RUN_WITHOUT_SHRINKAGE = """
import json, sys
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
feeds = {
    "age": np.array([[30.0], [np.nan], [60.0]], dtype=np.float32),
    "colour": np.array([["red"], ["(missing)"], ["green"]], dtype=object),
    "income": np.array([[1.0], [2.0], [np.nan]], dtype=np.float32),
    "size": np.array([["3"], ["1"], ["2"]], dtype=object),
}
probabilities, label = session.run(["probabilities", "label"], feeds)
assert "shrinkage" not in sys.modules and "torch" not in sys.modules, sorted(sys.modules)
print(json.dumps({"probabilities": probabilities.tolist(), "label": label.tolist()}))
"""


def test_the_file_runs_in_onnxruntime_without_shrinkage_or_torch(tmp_path):
    predictor = _predictor("multiclass", INPUTS["pruned"], SkipMLP)
    path = export_onnx(predictor, tmp_path / "m.onnx")
    done = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_SHRINKAGE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    rows = pd.DataFrame(
        {"age": [30.0, None, 60.0], "colour": ["red", None, "green"], "income": [1.0, 2.0, None], "size": [3, 1, 2]}
    )
    expected = _expected(predictor, rows)
    _assert_same(
        {"probabilities": np.asarray(got["probabilities"], np.float32), "label": np.asarray(got["label"])}, expected
    )


def test_the_export_command_writes_the_onnx_file(tmp_path, frame):
    predictor = _predictor("binary", INPUTS["pruned"], SkipMLP)
    source = predictor.save(tmp_path / "model.safetensors")
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(main, ["export", str(source), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output == f"written {out}\n"
    _assert_same(_run(out, frame), _expected(predictor, frame))

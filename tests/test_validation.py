"""One validation layer: every bad input at the library's and the CLI's boundary gets
one message of one shape — the parameter, the rule, the value received — on one line,
as the right exception (library) or exit code 2 (command line).

The library table is here; the command line's is in ``test_cli.py`` (``_bad``) plus the
cases below that need files; the estimators follow scikit-learn's own messages
(``InputError``, the library's shape), and pass scikit-learn's estimator checks.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shrinkage import L1, L2, ElasticNet, GroupLasso, HierarchicalLasso, InputError, Regularizer, Rule, make_penalty
from shrinkage.convert import from_sklearn_lasso, from_torch_weight_decay
from shrinkage.cv import cross_validate
from shrinkage.estimators import ShrinkageMLPClassifierCV, ShrinkageMLPRegressor, ShrinkageMLPRegressorCV
from shrinkage.models import MLP
from shrinkage.path import PathConfig, regularization_path
from shrinkage.prune import load_model, prune, save_model
from shrinkage.study import StudyConfig
from shrinkage.study.cli import main
from shrinkage.study.datasets import load_dataset, make_synthetic
from shrinkage.study.store import Store, StoreError
from shrinkage.study.tabular import read_table
from shrinkage.train import TrainConfig

RNG = np.random.default_rng(0)
X = RNG.standard_normal((20, 3))
Y = RNG.standard_normal(20)
WITH_NAN = np.where(np.eye(20, 3) > 0, np.nan, X)
WITH_INF = np.where(np.eye(20, 3) > 0, np.inf, X)


def net():
    return MLP(3, (4,))


def path(**kwargs):
    arguments = dict(X=X, y=Y, penalty=L1())
    arguments.update(kwargs)
    return regularization_path(net, arguments.pop("X"), arguments.pop("y"), **arguments)


def _files(tmp):
    """Bad files of every kind, made once per test."""
    (tmp / "empty.csv").write_text("")
    (tmp / "folder.csv").mkdir()
    (tmp / "garbage.parquet").write_bytes(bytes(range(256)))
    (tmp / "data.parquet.gz").write_bytes(b"\x1f\x8b" + bytes(30))  # (its content is not read)
    (tmp / "noy.csv").write_text("a,b\n1,2\n3,4\n")
    (tmp / "text.sqlite").write_text("not a database")
    sqlite3.connect(tmp / "other.sqlite").execute("CREATE TABLE t (x)").connection.commit()
    (tmp / "empty.safetensors").write_bytes(b"")
    (tmp / "model.onnx").write_bytes(b"\x08\x08\x12\x09shrinkage")  # an ONNX protobuf's first fields

    class Payload:  # a pickle that would run a command when loaded
        def __reduce__(self):
            return os.system, (f"touch {tmp / 'PWNED'}",)

    (tmp / "payload.pt").write_bytes(pickle.dumps(Payload()))
    torch.save({"w": torch.zeros(2)}, tmp / "plain.pt")  # a torch pickle, even a harmless one


API = [
    # penalties
    ("L1 λ < 0", lambda t: L1(-1.0), ValueError, "lambda_ must be a finite number >= 0, got -1.0"),
    ("L1 λ NaN", lambda t: L1(float("nan")), ValueError, "lambda_ must be a finite number >= 0, got nan"),
    ("L2 λ inf", lambda t: L2(float("inf")), ValueError, "lambda_ must be a finite number >= 0, got inf"),
    ("L1 λ a string", lambda t: L1("0.1"), TypeError, "lambda_ must be a finite number >= 0, got '0.1'"),
    ("L1 λ beyond float32", lambda t: L1(1e300), ValueError, "lambda_ must be at most 3.403e+38 (float32's largest"),
    ("ρ > 1", lambda t: ElasticNet(0.1, 1.5), ValueError, "l1_ratio must be a finite number in [0, 1], got 1.5"),
    ("groups unknown", lambda t: GroupLasso(0.1, groups="rows"), ValueError, "groups must be one of 'input', 'unit'"),
    ("groups empty", lambda t: GroupLasso(0.1, groups=[[]]), ValueError, "groups must be 'input', 'unit' or a list"),
    ("groups of 0.5", lambda t: GroupLasso(0.1, groups=[[0.5, 1]]), TypeError, "(whole numbers), got [[0.5, 1]]"),
    ("M = 0", lambda t: HierarchicalLasso(0.1, M=0), ValueError, "M must be a finite number > 0, got 0"),
    ("penalty name", lambda t: make_penalty("lasso"), ValueError, "must be one of 'l1', 'l2'"),
    # regularizer and selection
    ("mode typo", lambda t: Regularizer(net(), L1(0.1), mode="prox"), ValueError, "mode must be one of 'loss'"),
    ("select matches nothing", lambda t: Regularizer(net(), Rule(L1(), select="nope*")), ValueError, "matches no"),
    ("tensor claimed twice", lambda t: Regularizer(net(), [Rule(L1()), Rule(L2())]), ValueError, "selected by rule 0"),
    ("decoupled L1", lambda t: Regularizer(net(), L1(), mode="decoupled"), ValueError, "supports only L2"),
    ("model not a Module", lambda t: Regularizer("model", L1()), TypeError, "model must be a torch.nn.Module"),
    ("hierarchy in loss mode", lambda t: Regularizer(net(), HierarchicalLasso(), mode="loss"), ValueError, "only"),
    # data
    ("X with NaN", lambda t: path(X=WITH_NAN), ValueError, "X must be free of NaN and infinite values, got 3"),
    ("X with inf", lambda t: path(X=WITH_INF), ValueError, "X must be free of NaN and infinite values, got 3"),
    ("y with NaN", lambda t: path(y=np.r_[np.nan, Y[1:]]), ValueError, "y must be free of NaN"),
    ("rows mismatch", lambda t: path(y=Y[:10]), ValueError, "y must have one value per row of X (20), got 10"),
    ("empty X", lambda t: path(X=X[:0], y=Y[:0]), ValueError, "X must be non-empty, got an array of shape (0, 3)"),
    ("X 1-D", lambda t: path(X=X[:, 0]), ValueError, "X must be a 2-D array (rows × features)"),
    ("X of strings", lambda t: path(X=np.full((20, 3), "a")), TypeError, "got an array of shape (20, 3) and dtype"),
    ("model width ≠ X", lambda t: path(X=RNG.standard_normal((20, 5))), ValueError, "model must accept X's rows"),
    ("feature names", lambda t: path(feature_names=["a"]), ValueError, "feature_names must have one name per column"),
    # paths and CV
    ("λ < 0", lambda t: path(lambdas=[-1.0, 1.0]), ValueError, "lambdas must be a non-empty, strictly increasing"),
    ("λ decreasing", lambda t: path(lambdas=[1.0, 0.1]), ValueError, "lambdas must be a non-empty, strictly"),
    ("n_lambdas 0", lambda t: path(n_lambdas=0), ValueError, "n_lambdas must be an integer >= 1, got 0"),
    ("ratio ≥ 1", lambda t: path(lambda_min_ratio=2.0), ValueError, "lambda_min_ratio must be a finite number in (0"),
    ("task", lambda t: path(task="ranking"), ValueError, "task must be one of 'regression', 'binary'"),
    ("on_divergence", lambda t: path(on_divergence="ignore"), ValueError, "on_divergence must be one of 'raise'"),
    ("val_fraction 1", lambda t: path(val_fraction=1.0), ValueError, "val_fraction must be a finite number in [0, 1)"),
    ("cv 1", lambda t: cross_validate(net, X, Y, penalty=L1(), cv=1), ValueError, "cv must be an integer >= 2"),
    ("cv > n", lambda t: cross_validate(net, X, Y, penalty=L1(), cv=50), ValueError, "cv must be at most the number"),
    ("selection", lambda t: cross_validate(net, X, Y, penalty=L1(), selection="best"), ValueError, "selection must"),
    (
        "one class",
        lambda t: cross_validate(net, X, np.zeros(20), penalty=L1(), task="binary"),
        ValueError,
        "y must have at least two classes, got one class: 0",
    ),
    # training, models, data sets, conversions
    ("lr 0", lambda t: TrainConfig(lr=0), ValueError, "lr must be a finite number > 0, got 0"),
    ("lr NaN", lambda t: TrainConfig(lr=float("nan")), ValueError, "lr must be a finite number > 0, got nan"),
    ("batch 0", lambda t: TrainConfig(batch_size=0), ValueError, "batch_size must be an integer >= 1, got 0"),
    ("halvings", lambda t: TrainConfig(lr_halvings=-1), ValueError, "lr_halvings must be an integer >= 0, got -1"),
    ("halvings big", lambda t: TrainConfig(lr_halvings=31), ValueError, "lr_halvings must be at most 30 (the"),
    (
        "halvings fista",
        lambda t: TrainConfig(optimizer="fista", batch_size=None, lr_halvings=2),
        ValueError,
        "lr_halvings must be 0 with optimizer='fista' (it runs to tol), got 2",
    ),
    ("optimizer", lambda t: TrainConfig(optimizer="lbfgs"), ValueError, "optimizer must be one of 'sgd', 'adam'"),
    ("width 0", lambda t: MLP(3, (0,)), ValueError, "hidden must be an integer >= 1, got 0"),
    ("activation", lambda t: MLP(3, (4,), activation="swish"), ValueError, "activation must be one of 'relu'"),
    ("n_samples 1", lambda t: make_synthetic(1), ValueError, "n_samples must be an integer >= 2, got 1"),
    ("data set name", lambda t: load_dataset("iris"), ValueError, "dataset must be one of 'diabetes'"),
    ("alpha < 0", lambda t: from_sklearn_lasso(-1), ValueError, "alpha must be a finite number >= 0, got -1"),
    ("weight decay NaN", lambda t: from_torch_weight_decay(float("nan")), ValueError, "weight_decay must be"),
    # files
    ("missing data file", lambda t: read_table(t / "none.csv", "y"), FileNotFoundError, "does not exist"),
    ("empty data file", lambda t: read_table(t / "empty.csv", "y"), ValueError, "cannot be read as a table"),
    ("folder as data file", lambda t: read_table(t / "folder.csv", "y"), ValueError, "must be a file, got the dir"),
    ("corrupt parquet", lambda t: read_table(t / "garbage.parquet", "y"), ValueError, "cannot be read"),
    (
        "gzipped parquet",
        lambda t: read_table(t / "data.parquet.gz", "y"),
        ValueError,
        "data file must be a Parquet file as written, not compressed again, got 'data.parquet.gz'",
    ),
    ("wrong target column", lambda t: read_table(t / "noy.csv", "y"), ValueError, "its columns are 'a', 'b'"),
    ("store: a folder", lambda t: Store(t / "folder.csv"), StoreError, "store must be a file, got the directory"),
    ("store: text", lambda t: Store(t / "text.sqlite"), StoreError, "is not a shrinkage results store"),
    ("store: not ours", lambda t: Store(t / "other.sqlite"), StoreError, "an SQLite file but not a shrinkage"),
    ("store: missing", lambda t: Store(t / "none.sqlite", create=False), FileNotFoundError, "does not exist"),
    ("store: empty", lambda t: Store(t / "empty.csv", create=False), FileNotFoundError, "is empty"),
    ("model: pickle payload", lambda t: load_model(t / "payload.pt"), ValueError, "is not a safetensors file"),
    ("model: torch pickle", lambda t: load_model(t / "plain.pt"), ValueError, "is not a safetensors file"),
    ("model: empty", lambda t: load_model(t / "empty.safetensors"), ValueError, "is not a safetensors file"),
    ("model: ONNX", lambda t: load_model(t / "model.onnx"), ValueError, "is an ONNX file, for ONNX runtimes"),
    ("model: missing", lambda t: load_model(t / "none.safetensors"), FileNotFoundError, "does not exist"),
    ("save into a folder", lambda t: save_model(net(), t / "folder.csv"), OSError, "is a folder: name a file"),
    ("prune a Conv", lambda t: prune(torch.nn.Conv2d(1, 1, 3)), TypeError, "prune supports an nn.Sequential"),
    ("prune names", lambda t: prune(net(), feature_names=["a"]), ValueError, "feature_names must have one name"),
    # study config
    ("study cv", lambda t: StudyConfig(cv=1), ValueError, "cv must be an integer >= 2, got 1"),
    ("study penalty", lambda t: StudyConfig(penalties=("lasso",)), ValueError, "penalty must be one of 'none'"),
    ("study test_size", lambda t: StudyConfig(test_size=1.5), ValueError, "test_size must be a finite number in (0"),
    ("study target", lambda t: StudyConfig(data="x.csv"), ValueError, "target must name the target column"),
]


@pytest.mark.parametrize("case, build, kind, message", API, ids=[c[0] for c in API])
def test_library_bad_input(tmp_path, case, build, kind, message):
    _files(tmp_path)
    with pytest.raises(kind) as info:
        build(tmp_path)
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text  # one line
    assert not (tmp_path / "PWNED").exists()  # nothing in a file ran


CLI = [
    (["study", "--data", "{tmp}/empty.csv", "--target", "y"], "data file '{tmp}/empty.csv' cannot be read as a table"),
    (["study", "--data", "{tmp}/folder.csv", "--target", "y"], "data file must be a file, got the directory"),
    (["study", "--data", "{tmp}/garbage.parquet", "--target", "y"], "cannot be read: "),
    (["study", "--test-size", "1.5"], "--test-size must be a finite number in (0, 1), got 1.5"),
    (["study", "--l1-ratio", "2"], "--l1-ratio must be a finite number in (0, 1], got 2.0"),
    (["study", "--n-lambdas", "0"], "--n-lambdas must be an integer >= 2, got 0"),
    (["study", "--lambda-min-ratio", "0"], "--lambda-min-ratio must be a finite number in [1e-100, 1), got 0.0"),
    (["study", "--selection", "best"], "Invalid value for '--selection': 'best' is not one of '1se', 'min'"),
    (["study", "--hidden", "0"], "hidden must be an integer >= 1, got 0"),
    (["study", "--on-divergence", "ignore"], "Invalid value for '--on-divergence': 'ignore' is not one of"),
    (["report", "{tmp}/folder.csv"], "store must be a file, got the directory"),
    (["runs", "{tmp}/empty.csv"], "store '{tmp}/empty.csv' is empty"),
    (["prune", "{tmp}/text.sqlite", "--penalty", "l1"], "is not a shrinkage results store (not an SQLite file)"),
    (["geometry", "--center", "x"], "--center must be 2 finite numbers 'x,y', got 'x'"),
    (["geometry", "--lambda", "-1"], "--lambda must be a finite number >= 0, got -1.0"),
]


@pytest.mark.parametrize("args, message", CLI, ids=[" ".join(a[:3]) for a, _ in CLI])
def test_command_line_bad_input(tmp_path, args, message):
    _files(tmp_path)
    result = CliRunner().invoke(main, [a.format(tmp=tmp_path) for a in args])
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("shrinkage: warning: ")]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("shrinkage: error: "), result.output
    assert message.format(tmp=tmp_path) in lines[0], lines[0]


def test_the_tables_are_as_large_as_claimed():
    """The count the README and the issue's closing note give (the CLI table of
    test_cli.py adds its own cases)."""
    assert len(API) >= 60 and len(CLI) >= 15
    assert len({c[0] for c in API}) == len(API)  # distinct cases


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: StudyConfig(seed=-1), "seed must be an integer >= 0, got -1"),
        (lambda: StudyConfig(seed=2**40), "seed must be an integer in [0, 2**32 - 1], got 1099511627776"),
        (lambda: StudyConfig(n_jobs=0), "n_jobs must be None or a non-zero integer (-1: every core), got 0"),
        (lambda: StudyConfig(target="y"), "target must be given with a data file (data=, --data), got 'y'"),
        (lambda: StudyConfig(penalties=("l1", "l1")), "penalties must be a list without repeats, got 'l1,l1'"),
        (lambda: PathConfig(seed=-1), "seed must be an integer >= 0, got -1"),
        (lambda: PathConfig(device="tpu0"), "device must be a torch device such as 'cpu', 'cuda' or 'cuda:1'"),
        (lambda: ShrinkageMLPRegressor(device="nope").fit(np.ones((8, 2)), np.arange(8.0)), "device must be"),
        (
            lambda: cross_validate(MLP(2, (4,)), np.ones((8, 2)), np.arange(8.0), penalty=L1(), n_jobs=0),
            "n_jobs must be None or a non-zero integer",
        ),
        (
            lambda: regularization_path(MLP(2, (4,)), np.ones((8, 2)), np.arange(8.0), penalty=L1(), select="0.weight"),
            "select= is no longer an option: use Rule(penalty, select=...) as the penalty",
        ),
        (
            lambda: regularization_path(MLP(2, (4,)), np.ones((8, 2)), np.arange(8.0), penalty=L1(), return_model=True),
            "return_model= is no longer an option: use the path's .model",
        ),
    ],
)
def test_seeds_jobs_devices_and_removed_options_are_input_errors(build, message):
    with pytest.raises(InputError) as info:
        build()
    assert message in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_a_cuda_device_on_a_machine_without_one_is_an_input_error():
    with pytest.raises(InputError, match="device must be a device this machine has"):
        PathConfig(device="cuda")


# ------------------------------------------------------------- where warnings point
def _attach(model, optimizer):
    return Regularizer(model, [Rule(L1(0.1), "weight")]).attach(optimizer(model.parameters()))


def _caught(run) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return list(caught)


@pytest.mark.parametrize(
    "make",
    [
        # a grid edge found by cross_validate, called directly and from an estimator's fit
        lambda X, y: cross_validate(MLP(4, (), 1), X, y, penalty=L1(), lambdas=(1e-5, 0.5), cv=2, n_jobs=1),
        lambda X, y: ShrinkageMLPRegressorCV(hidden_layer_sizes=(), lambdas=(1e-5, 0.5), cv=2).fit(X, y),
        # a class smaller than cv, from an estimator's fit
        lambda X, y: ShrinkageMLPClassifierCV(
            hidden_layer_sizes=(), n_lambdas=2, cv=3, max_iter=5, optimizer="adam"
        ).fit(X, np.arange(len(y)) < 2),
        # an optimizer the prox has no exact step for, at attach
        lambda X, y: _attach(torch.nn.Linear(4, 1), torch.optim.Adadelta),
    ],
)
def test_a_warning_names_the_users_line_not_the_librarys(make):
    """However deep in the package a warning arises, it is attributed to the caller's
    line (so that warning filters and "once per location" act on the user's code)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4))
    y = X[:, 0] + 0.1 * rng.standard_normal(40)
    caught = _caught(lambda: make(X, y))
    assert caught, "the case must warn"
    assert {w.filename for w in caught} == {__file__}, [(w.filename, str(w.message)[:60]) for w in caught]

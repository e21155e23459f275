"""The command line: the study's options generated from StudyConfig, the study end to end
on a small table, and usage errors as one line on stderr with exit code 2."""

from __future__ import annotations

import dataclasses
import os
import re
import sqlite3
from collections import Counter

import click
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from shrinkage.prune import load_model
from shrinkage.study import runner
from shrinkage.study.cli import main, study
from shrinkage.study.config import StudyConfig, resolve_device
from shrinkage.study.store import Store

FAST = ["--hidden", "4", "--cv", "3", "--n-lambdas", "4", "--n-jobs", "1", "--quiet"]


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=90), "b": rng.normal(size=90), "kind": rng.choice(["u", "v"], 90)})
    frame["y"] = frame["a"] - frame["b"] + (frame["kind"] == "u") + 0.1 * rng.normal(size=90)
    frame["const"] = 3.0  # dropped with a warning
    path = tmp_path / "small.csv"
    frame.to_csv(path, index=False)
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# the options of `study` that are not StudyConfig fields
CLI_ONLY = {"out_dir", "store_path", "cluster", "write_report", "quiet"}


def test_every_config_field_is_exactly_one_study_option_with_the_same_default():
    fields = [field.name for field in dataclasses.fields(StudyConfig)]
    options = Counter(param.name for param in study.params if isinstance(param, click.Option))
    assert {name: options[name] for name in fields} == dict.fromkeys(fields, 1)
    assert set(options) - set(fields) == CLI_ONLY and all(options[name] == 1 for name in CLI_ONLY)
    parsed = study.make_context("study", []).params  # the defaults, converted as the command line converts them
    assert {name: parsed[name] for name in fields} == dataclasses.asdict(StudyConfig())


def test_study_options_convert_to_the_config_fields():
    args = "--no-relax --penalties none,l1,sparse_group --hidden 8,4 --n-jobs 1 --lambda-min-ratio 0.1 --task binary"
    parsed = study.make_context("study", args.split()).params
    config = StudyConfig(**{field.name: parsed[field.name] for field in dataclasses.fields(StudyConfig)})
    assert config == StudyConfig(
        relax=False,
        penalties=("none", "l1", "sparse_group"),
        hidden=(8, 4),
        n_jobs=1,
        lambda_min_ratio=0.1,
        task="binary",
    )


def test_choices_of_the_options_are_the_values_the_config_accepts():
    for field in dataclasses.fields(StudyConfig):
        for choice in field.metadata.get("choices", ()):
            value = (choice,) if field.name == "penalties" else choice
            assert getattr(StudyConfig(**{field.name: value}), field.name) == value


def test_study_help_comes_from_the_config_docstring_and_shows_the_defaults():
    result = run("study", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # click wraps the help to the terminal's width
    for shown in (
        "--lambda-min-ratio FLOAT The path's smallest λ as a fraction of its largest, in [1e-100, 1).",
        "[default: 0.01]",
        "--penalties NAME,… Presets of shrinkage.presets to compare",
        "Among: none, l1, l2, elasticnet, group, sparse_group, hierarchical. [default: none,l1,l2,elasticnet,group]",
        "--hidden INT,… Hidden layer widths of the MLP",
        "--relax / --no-relax Score, select and keep relaxed models",
        "[default: relax]",
        "--cv INTEGER Cross-validation folds (shrinkage.cv.cross_validate). [default: 5]",
        "--selection [1se|min] The λ chosen:",
        "[default: 1se]",
        "--n-jobs INTEGER Processes on the CPU (joblib's count: -1 uses every core): the penalties train in up "
        "to that many processes at once",
        "Not given: every core on the CPU; on a GPU (cuda, mps) one process, the folds one after another",
        "--device DEVICE Where the networks train: cpu, cuda (or cuda:1, …), mps, or auto",
        "[default: cpu]",
        "--out PATH Folder for the store and the report. [default: shrinkage-study]",
    ):
        assert shown in text, shown
    # fields documented together share their text
    data, target = (param for param in study.params if param.name in ("data", "target"))
    assert data.help == "A CSV or Parquet file to study instead of a bundled set."
    assert target.help == "The target column of the data file (required with it)."


def _spy(monkeypatch, name: str, seen: list) -> None:
    """Record the path config and n_jobs that the runner passes to ``shrinkage.study.runner.<name>``."""
    real = getattr(runner, name)

    def spy(*args, **kwargs):
        seen.append((name, kwargs["config"].device, kwargs["n_jobs"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, name, spy)


def test_study_end_to_end_then_runs_and_report(tmp_path, table, monkeypatch):
    out = tmp_path / "out"
    seen: list = []
    for name in ("cross_validate", "cross_validate_unpenalized"):
        _spy(monkeypatch, name, seen)
    args = ["--data", table, "--target", "y", "--penalties", "none,l1,group", "--device", "auto"]
    result = run("study", *args, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert "shrinkage: warning: dropped 1 constant column(s): const" in result.stderr
    assert "shrinkage study 1 — small.csv (regression, 90 rows)" in result.output
    for penalty, model in (("none", "unpenalized fit"), ("l1", "relaxed refit"), ("group", "relaxed refit")):
        assert re.search(rf"│ {penalty} +│ [^│]+│ {model} +│", result.output), (penalty, result.output)
    caption = " ".join(result.output.split("┘")[-1].split())  # under the table, wrapped to the terminal
    assert caption.startswith("device cpu. CV loss and test R²: the model named in 'model'"), caption
    assert "weights = 0 and features kept: the penalized fit at the chosen λ." in caption
    # auto is the CPU here; every path of the study trained there, with the n_jobs asked for
    expected = torch.device(
        "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    )
    assert {(torch.device(device), n_jobs) for _, device, n_jobs in seen} == {(expected, 1)}
    assert Counter(name for name, _, _ in seen) == {"cross_validate_unpenalized": 1, "cross_validate": 2}
    assert (out / "report.html").is_file() and (out / "results.sqlite").is_file()
    with Store(out / "results.sqlite", create=False) as store:
        assert [r["penalty"] for r in store.runs(1)] == ["none", "l1", "group"]
        study_row = store.study(1)
        assert (study_row["config"]["device"], study_row["data"]["device"]) == ("auto", expected.type)
    html = (out / "report.html").read_text()
    assert f'<tr data-option="device"><th>device</th><td class="text"><code>auto (used: {expected.type})' in html
    assert f"<code>{table} (90 rows × 3 feature columns, target y)</code>" in html
    assert 'data-option="dataset"' not in html  # the bundled set's option did not apply

    listed = run("runs", out / "results.sqlite")
    assert listed.exit_code == 0 and "small.csv" in listed.output and "3/3" in listed.output
    rebuilt = run("report", out / "results.sqlite", "--out", tmp_path / "again.html")
    assert rebuilt.exit_code == 0 and (tmp_path / "again.html").read_text() == (out / "report.html").read_text()

    pruned_path = tmp_path / "l1.safetensors"
    pruned = run("prune", out / "results.sqlite", "--penalty", "l1", "--out", pruned_path)
    assert pruned.exit_code == 0, pruned.output
    assert "kept features:" in pruned.output and "parameters" in pruned.output
    model, metadata = load_model(pruned_path)
    kept = metadata["features"]
    assert metadata["pruned"] and set(kept) <= {"a", "b", "kind=u", "kind=v"}
    assert next(model.parameters()).shape[1] == len(kept)


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_geometry_writes_the_picture(tmp_path, suffix):
    result = run("geometry", "--out", tmp_path / f"g{suffix}")
    assert result.exit_code == 0, result.output
    assert "L1 optimum (" in result.output and ", 0.0000)" in result.output  # a coordinate exactly zero
    assert (tmp_path / f"g{suffix}").stat().st_size > 1000


def _readonly_folder(tmp_path):
    if os.geteuid() == 0:  # root writes anywhere but a read-only file system
        return "/proc/shrinkage-cannot-write-here"
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "out"


def _bad(tmp_path, table):
    not_ours = tmp_path / "other.sqlite"
    sqlite3.connect(not_ours).execute("CREATE TABLE t (x)").connection.commit()
    text = tmp_path / "text.sqlite"
    text.write_text("not a database")
    single = tmp_path / "single.csv"
    single.write_text("a,y\n1,5\n2,5\n3,5\n")
    nan_target = tmp_path / "nan.csv"
    nan_target.write_text("a,y\n1,5\n2,\n3,4\n")
    file_out = tmp_path / "a-file"
    file_out.write_text("")
    infinite = tmp_path / "inf.csv"
    infinite.write_text("a,y\n1,5\ninf,4\n" + "".join(f"{i},{i % 3}\n" for i in range(30)))
    rare = tmp_path / "rare.csv"  # labels with one row each: a numeric target read as classes?
    rare.write_text("a,y\n" + "".join(f"{i},c{i % 20}\n" for i in range(40)))
    return [
        (["study", "--data", infinite, "--target", "y"], "column 'a' holds an infinite number at row 2 of the data"),
        (
            ["study", "--data", rare, "--target", "y", "--task", "multiclass"],
            "target column 'y' must have at least 5 training rows of each class for 5 folds, but its class",
        ),
        (["study", "--n-lambdas", "0"], "shrinkage: error: --n-lambdas must be an integer >= 2, got 0"),
        (["study", "--hidden", "4,,4"], "Invalid value for '--hidden': '4,,4' is not a comma-separated list"),
        (["predict", tmp_path, "--data", table], "model file '{tmp}' is a folder: name a model file"),
        (["study", "--device", "meta"], "--device must be a device that holds numbers (the meta device holds none)"),
        (["study", "--device", "cpu:3"], "--device must be 'cpu' (the CPU has no numbered devices), got 'cpu:3'"),
        (["report", not_ours, "--study", "99999999999999999999"], "not a shrinkage results store"),
        (
            ["study", "--data", tmp_path / "missing.csv", "--target", "y"],
            "data file '{tmp}/missing.csv' does not exist",
        ),
        (["study", "--dataset", "iris"], "Invalid value for '--dataset': 'iris' is not one of 'diabetes'"),
        (
            ["study", "--data", table, "--target", "nope"],
            "target column 'nope' is not in small.csv; its columns are 'a', 'b', 'kind', 'y', 'const'",
        ),
        (
            ["study", "--data", single, "--target", "y"],
            "target column 'y' must have at least two distinct values, got only the value 5 (3 row(s))",
        ),
        (["study", "--data", nan_target, "--target", "y"], "target column 'y' must have no missing values, got 1"),
        (["study", "--data", tmp_path, "--target", "y"], "data file must be a file, got the directory"),
        (["study", "--data", table], "target must name the target column of the data file, got None"),
        (
            ["study", "--data", table, "--target", "y", "--penalties", "lasso"],
            "penalty must be one of 'none', 'l1', 'l2', 'elasticnet', 'group', 'sparse_group', 'hierarchical', got 'lasso'",
        ),
        (["study", "--cv", "1"], "cv must be an integer >= 2, got 1"),
        (["study", "--cv", "many"], "Invalid value for '--cv': 'many' is not a valid integer"),
        (["study", "--hidden", "8,x"], "Invalid value for '--hidden': '8,x' is not a comma-separated list of integers"),
        (["study", "--hidden", "8,0"], "hidden must be an integer >= 1, got 0"),
        (
            ["study", "--data", table, "--target", "y", "--store", not_ours, "--out", tmp_path / "o1", *FAST],
            "is an SQLite file but not a shrinkage results store",
        ),
        (["runs", text], "is not a shrinkage results store (not an SQLite file)"),
        (["runs", tmp_path / "none.sqlite"], "store '{tmp}/none.sqlite' does not exist"),
        (["report", not_ours], "is an SQLite file but not a shrinkage results store"),
        (["study", "--data", table, "--target", "y", "--out", file_out], "--out must be a folder, got the file"),
        (["study", "--data", table, "--target", "y", "--out", _readonly_folder(tmp_path)], "cannot be created"),
        (["geometry", "--out", tmp_path / "g.jpg"], "--out must end in .png or .svg"),
        (["geometry", "--hessian", "1,2,1"], "hessian must be symmetric positive definite"),
        (["geometry", "--center", "inf,0"], "--center must be 2 finite numbers 'x,y', got 'inf,0'"),
        (["geometry", "--hessian", "1,2"], "--hessian must be 3 finite numbers 'a,b,c', got '1,2'"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["prune", tmp_path / "none.sqlite", "--penalty", "l1"], "store '{tmp}/none.sqlite' does not exist"),
        (["prune", not_ours, "--penalty", "l1"], "is an SQLite file but not a shrinkage results store"),
        (["study", "--device", "gpu"], "--device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got 'gpu'"),
        *(
            [
                (
                    ["study", "--device", "cuda"],
                    "--device must be a device this machine has (torch sees no CUDA device), got 'cuda'",
                )
            ]
            if not torch.cuda.is_available()
            else []
        ),
        *(
            [
                (
                    ["study", "--device", "mps"],
                    "--device must be a device this machine has (torch sees no MPS device), got 'mps'",
                )
            ]
            if not torch.backends.mps.is_available()
            else []
        ),
    ]


def test_usage_errors_are_one_line_with_exit_code_2(tmp_path, table):
    for args, message in _bad(tmp_path, table):
        result = CliRunner().invoke(main, [str(a) for a in args])
        lines = [line for line in result.output.strip().splitlines() if not line.startswith("shrinkage: warning: ")]
        assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1 and lines[0].startswith("shrinkage: error: "), (args, result.output)
        assert message.format(tmp=tmp_path) in lines[0], (args, lines[0])
        assert "Traceback" not in result.output


@pytest.mark.parametrize(("cuda", "mps", "device"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_device_is_cuda_else_mps_else_the_cpu(monkeypatch, cuda, mps, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto") == device
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"  # a name as it is


def test_folds_run_in_one_process_on_a_gpu_unless_n_jobs_is_given():
    assert StudyConfig().n_jobs is None
    assert (StudyConfig().jobs("cpu"), StudyConfig().jobs("cuda"), StudyConfig().jobs("mps")) == (-1, 1, 1)
    given = min(3, os.cpu_count() or 1)  # (at most one process per core)
    assert (StudyConfig(n_jobs=3).jobs("cpu"), StudyConfig(n_jobs=3).jobs("cuda")) == (given, given)


def test_an_unavailable_device_is_refused_by_the_config_too():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(
        ValueError, match=r"^device must be a device this machine has \(torch sees no CUDA device\), got 'cuda'$"
    ):
        StudyConfig(device="cuda")
    assert StudyConfig(device=torch.device("cpu")).device == "cpu"  # stored by its name


def test_a_warning_raised_in_a_worker_process_is_one_line_naming_its_penalty(table, tmp_path):
    """λ_min at the grid's edge in the penalties a worker trains: the study's process shows
    the warning as its own line, in the study's order, with the penalty. (The edge: a
    linear model on a grid of λ near λ_max, where its CV loss falls all the way down,
    and past the λ by which the grid goes on below: one, its own span.) Without the
    report: the store alone, and the line that names it."""
    import subprocess
    import sys

    args = ["--data", table, "--target", "y", "--penalties", "l1,l2", "--hidden", "", "--cv", "3", "--no-relax"]
    args += ["--n-lambdas", "2", "--lambda-min-ratio", "0.9", "--n-jobs", "2", "--quiet", "--no-report"]
    args += ["--out", tmp_path / "out"]
    result = subprocess.run(
        [sys.executable, "-m", "shrinkage", "study", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "grid's smallest" in line]
    assert warned and all(re.match(r"shrinkage: warning: (l1|l2): lambda_min is the grid's", w) for w in warned)
    assert "GridEdgeWarning" not in result.stderr and "runner.py" not in result.stderr
    assert (tmp_path / "out" / "results.sqlite").is_file() and not (tmp_path / "out" / "report.html").exists()
    assert "report:" not in result.stdout and "store:" in result.stdout
    hint = f"no report drawn (--no-report); `shrinkage report {tmp_path / 'out' / 'results.sqlite'} --out "
    assert hint in result.stdout

"""How the command line reports errors: a bad input, a file or SQLite problem, a missing
optional package as one line with exit code 2; a diverged fit as one line with exit code
1; anything else as a bug (exit code 1, the traceback saved to a log file, or printed
with ``--debug``). The failures are injected deep inside a study run."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile

import pytest
from click.testing import CliRunner

from shrinkage.study.cli import main
from shrinkage.study.store import StoreError
from shrinkage.train import Diverged
from shrinkage.validation import InputError

# a study on the bundled diabetes data that fails at its first penalty, before any fit
QUICK = ["--dataset", "diabetes", "--penalties", "none", "--hidden", "4", "--cv", "2", "--n-lambdas", "2"]
QUICK += ["--n-jobs", "1", "--quiet"]
BUG = "shrinkage: internal error (a bug, please report it): "
DIVERGED = (
    "shrinkage: error: training diverged at penalty 'none', fold 1, epoch 3: loss is nan; the fit's best "
    "weights are kept. Lower lr or λ, or check the data for extreme values"
)
STUDY_EXTRA = (
    "shrinkage: error: the study command needs the study extra: pip install 'shrinkage[study]' (missing pyarrow)"
)
DASK_EXTRA = (
    "shrinkage: error: the study command needs the distributed extra: pip install 'shrinkage[distributed]' "
    "(missing distributed)"
)


def _failing(error: BaseException):
    def fail(*args, **kwargs):
        raise error

    return fail


def _study(monkeypatch, tmp_path, error: BaseException, *options: str):
    """Run `shrinkage [options] study …` with ``error`` raised inside run_study."""
    monkeypatch.setattr("shrinkage.study.runner.cross_validate_unpenalized", _failing(error))
    return CliRunner().invoke(main, [*options, "study", *QUICK, "--out", str(tmp_path / "out")])


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (
            InputError("lambda_ must be a finite number >= 0, got -1.0"),
            2,
            "shrinkage: error: lambda_ must be a finite number >= 0, got -1.0",
        ),
        (
            StoreError("'x.sqlite' is not a shrinkage results store"),
            2,
            "shrinkage: error: 'x.sqlite' is not a shrinkage results store",
        ),
        (OSError(28, "No space left on device"), 2, "shrinkage: error: [Errno 28] No space left on device"),
        (sqlite3.OperationalError("database is locked"), 2, "shrinkage: error: database is locked"),
        (ModuleNotFoundError("No module named 'pyarrow'", name="pyarrow"), 2, STUDY_EXTRA),
        (ModuleNotFoundError("No module named 'distributed.client'", name="distributed.client"), 2, DASK_EXTRA),
        (Diverged("loss is nan", 3, ("fold 1",)), 1, DIVERGED),
    ],
    ids=["input", "store", "oserror", "sqlite", "pyarrow", "dask", "diverged"],
)
def test_errors_of_the_user_or_the_numerics_are_one_line(monkeypatch, tmp_path, error, code, line):
    result = _study(monkeypatch, tmp_path, error)
    assert (result.exit_code, result.stderr) == (code, line + "\n")
    assert not (tmp_path / "out" / "shrinkage-error.log").exists()


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (ValueError("boom"), "ValueError: boom"),
        (TypeError("unsupported operand"), "TypeError: unsupported operand"),
        (KeyError("penalty"), "KeyError: 'penalty'"),
        (
            ModuleNotFoundError("No module named 'torchvision'", name="torchvision"),
            "ModuleNotFoundError: No module named 'torchvision'",
        ),
        (ImportError("cannot import name 'x' from 'pandas'"), "ImportError: cannot import name 'x' from 'pandas'"),
        (RuntimeError(), "RuntimeError"),
    ],
    ids=["ValueError", "TypeError", "KeyError", "not-optional", "ImportError", "no-message"],
)
def test_anything_else_is_a_bug_with_its_traceback_in_the_output_folder(monkeypatch, tmp_path, error, shown):
    result = _study(monkeypatch, tmp_path, error)
    log = tmp_path / "out" / "shrinkage-error.log"
    assert result.exit_code == 1
    assert result.stderr == f"{BUG}{shown}; rerun with --debug for the traceback (saved to {log})\n"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in run_study" in text and text.endswith(f"{shown}\n")


def test_debug_prints_the_traceback_and_saves_nothing(monkeypatch, tmp_path):
    result = _study(monkeypatch, tmp_path, ValueError("boom"), "--debug")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):" and "in run_study" in result.stderr
    assert lines[-2:] == ["ValueError: boom", f"{BUG}ValueError: boom"]
    assert not (tmp_path / "out" / "shrinkage-error.log").exists()


def test_debug_shows_where_an_input_error_comes_from_with_the_same_exit_code(monkeypatch, tmp_path):
    result = _study(monkeypatch, tmp_path, InputError("lambda_ must be a finite number >= 0, got -1.0"), "--debug")
    assert result.exit_code == 2
    assert result.stderr.startswith("Traceback (most recent call last):") and "in run_study" in result.stderr
    assert result.stderr.endswith("\nshrinkage: error: lambda_ must be a finite number >= 0, got -1.0\n")


def test_a_bug_outside_a_study_saves_its_traceback_to_a_temporary_file(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(
        "shrinkage.study.geometry.showcase_lambda", _failing(ZeroDivisionError("float division by zero"))
    )
    result = CliRunner().invoke(main, ["geometry", "--out", str(tmp_path / "g.png")])
    (log,) = tmp_path.glob("shrinkage-error-*.log")
    assert result.exit_code == 1
    assert result.stderr == (
        f"{BUG}ZeroDivisionError: float division by zero; rerun with --debug for the traceback (saved to {log})\n"
    )
    assert "in geometry" in log.read_text()


def _python(*args: str, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_python_m_shrinkage_reports_a_bug_with_exit_code_1(tmp_path):
    # the failure is injected at interpreter start (sitecustomize), the command run as users run it
    (tmp_path / "sitecustomize.py").write_text(
        "import shrinkage.study.runner\n\n\n"
        "def cross_validate_unpenalized(*args, **kwargs):\n"
        "    raise ValueError('boom')\n\n\n"
        "shrinkage.study.runner.cross_validate_unpenalized = cross_validate_unpenalized\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    done = _python("-m", "shrinkage", "study", *QUICK, "--out", "out", cwd=tmp_path, env=env)
    log = tmp_path / "out" / "shrinkage-error.log"
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"{BUG}ValueError: boom; rerun with --debug for the traceback (saved to out/{log.name})\n"
    assert "in cross_validate_unpenalized\n    raise ValueError('boom')" in log.read_text()


def test_without_click_the_command_says_which_extra_to_install(monkeypatch, capsys):
    from shrinkage.__main__ import main as launcher

    monkeypatch.setitem(sys.modules, "click", None)  # `import click` fails as when it is not installed
    monkeypatch.delitem(sys.modules, "shrinkage.study.cli")  # imported afresh by the launcher
    with pytest.raises(SystemExit) as exit:
        launcher(["study", "--help"])
    assert exit.value.code == 2
    assert capsys.readouterr() == (
        "",
        "shrinkage: error: the command line needs the study extra: pip install 'shrinkage[study]' (missing click)\n",
    )


def test_ctrl_c_while_the_command_line_loads_ends_as_a_later_one(monkeypatch, capsys):
    """Ctrl-C while the command line's modules load (pandas, click, …): "shrinkage:
    aborted" and exit code 1, as the command ends on Ctrl-C later, not an import traceback."""
    import types

    from shrinkage.__main__ import main as launcher

    class Loading(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "shrinkage.study.cli", Loading("shrinkage.study.cli"))
    with pytest.raises(SystemExit) as exit:
        launcher(["study", "--help"])
    assert exit.value.code == 1
    assert capsys.readouterr() == ("", "shrinkage: aborted\n")


def test_a_parquet_file_without_pyarrow_names_the_extra(monkeypatch, tmp_path):
    """pandas says only "Unable to find a usable engine"; the user is told what to install."""
    import pandas as pd

    data = tmp_path / "data.parquet"
    pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [0.0, 1.0, 0.0, 1.0]}).to_parquet(data)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "fastparquet", None)
    result = CliRunner().invoke(main, ["study", "--data", str(data), "--target", "y", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == STUDY_EXTRA


def test_a_penalty_the_data_cannot_take_fails_before_any_training(tmp_path):
    """hierarchical selects single columns; a categorical column is a one-hot group."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=60), "city": rng.choice(["a", "b", "c"], 60)})
    frame["y"] = frame["x"] + rng.normal(size=60)
    frame.to_csv(tmp_path / "d.csv", index=False)
    out = tmp_path / "out"
    args = ["study", "--data", str(tmp_path / "d.csv"), "--target", "y", "--penalties", "none,hierarchical"]
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("shrinkage: error: penalty 'hierarchical' selects single input columns"), line
    assert line.endswith("(one-hot groups: the categorical column(s) 'city')"), line
    assert not (out / "results.sqlite").exists()  # nothing trained, nothing stored


def test_reading_commands_leave_an_old_store_as_it_is(tmp_path):
    from old_stores import make_old_store  # tests/study is on sys.path (rootdir import mode)

    store = tmp_path / "v1.sqlite"
    make_old_store(store, 1)
    before = store.read_bytes()
    result = CliRunner().invoke(main, ["runs", str(store)])
    assert result.exit_code == 0, result.output
    assert store.read_bytes() == before  # not upgraded: an older shrinkage can still open it

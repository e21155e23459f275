"""The command line: output, and usage errors as one line with exit code 2."""

from __future__ import annotations

from click.testing import CliRunner

from shrinkage.cli import main


def test_demo_prints_one_row_per_penalty():
    result = CliRunner().invoke(main, ["demo", "--max-epochs", "3"])
    assert result.exit_code == 0, result.output
    for penalty in ("none", "l1", "l2", "elasticnet"):
        assert f"│ {penalty}" in result.output
    assert "weights = 0" in result.output


def test_unknown_dataset_is_a_usage_error():
    result = CliRunner().invoke(main, ["demo", "--dataset", "iris"])
    assert result.exit_code == 2
    assert "'iris' is not one of" in result.output


def test_library_errors_become_one_line_and_exit_2():
    result = CliRunner().invoke(main, ["demo", "--max-epochs", "0"])
    assert result.exit_code == 2
    assert result.output.strip() == "shrinkage: error: max_epochs must be an integer >= 1, got 0"

"""Docs cannot drift from the code: docstring examples and README code blocks run here."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import shrinkage

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(m.name for m in pkgutil.walk_packages(shrinkage.__path__, "shrinkage."))


@pytest.mark.parametrize("name", ["shrinkage", *MODULES])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = _python_blocks(ROOT / "README.md")
    assert blocks, "the README has python examples"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})


def _shell_commands(path: Path) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.DOTALL)
    return [
        line.split("#")[0].strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip().startswith("shrinkage ")
    ]


def test_readme_command_lines_run(tmp_path, monkeypatch):
    """Every `shrinkage …` line of the README, as written, from a folder that has examples/."""
    import shlex

    from click.testing import CliRunner

    from shrinkage.study.cli import main

    commands = _shell_commands(ROOT / "README.md")
    assert commands, "the README shows the command line"
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    for command in commands:
        result = CliRunner().invoke(main, shlex.split(command)[1:])
        assert result.exit_code == 0, (command, result.output)


def test_example_data_is_what_its_script_makes(tmp_path):
    import runpy
    import sys

    out = tmp_path / "houses.csv"
    argv = sys.argv
    try:
        sys.argv = ["make_houses.py", str(out)]
        runpy.run_path(str(ROOT / "examples" / "make_houses.py"), run_name="__main__")
    finally:
        sys.argv = argv
    assert out.read_text() == (ROOT / "examples" / "houses.csv").read_text()

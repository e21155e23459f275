"""Docs cannot drift from the code.

- every module's docstring examples pass (doctest);
- every ```python block of the README and of the docs pages runs, page by page: the blocks
  of one page share one namespace, in order, in an empty folder;
- every ``shrinkage …`` line of their ```bash blocks runs as written, all pages in the
  site's order in one folder that has examples/ (so a page may use what an earlier one
  made: ``shrinkage runs houses-study/…`` after the study);
- the site builds with ``mkdocs build --strict`` (no warning, no broken reference), once per
  test session, and its API reference has an anchor for every public module and every
  name in its ``__all__``.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import shrinkage

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(m.name for m in pkgutil.walk_packages(shrinkage.__path__, "shrinkage."))
# the public API: every module whose dotted name has no part starting with "_"
PUBLIC_MODULES = ["shrinkage", *(m for m in MODULES if not any(p.startswith("_") for p in m.split(".")))]


def _nav_pages() -> list[Path]:
    """The site's pages in navigation order (mkdocs.yml), then the README."""

    def walk(items) -> list[str]:
        out: list[str] = []
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            out += walk(value) if isinstance(value, list) else [value]
        return out

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    return [ROOT / "docs" / page for page in walk(nav)] + [ROOT / "README.md"]


PAGES = _nav_pages()


def _blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("name", ["shrinkage", *MODULES])
def test_docstring_examples(name):
    if name == "shrinkage._triton_kernels":  # the CUDA kernels: Triton, which CI does not install
        pytest.importorskip("triton")
    if name == "shrinkage._numba_kernels":  # the CPU kernels: Numba (the `fast` extra)
        pytest.importorskip("numba")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_every_page_is_in_the_site():
    on_disk = {p for p in (ROOT / "docs").rglob("*.md") if "_griffe" not in p.parts}
    assert on_disk == set(PAGES) - {ROOT / "README.md"}


PYTHON_PAGES = [page for page in PAGES if _blocks(page, "python")]


def test_the_guides_have_examples():
    guides = [page for page in PAGES if page.parent.name == "guide"]
    assert guides and set(guides) <= set(PYTHON_PAGES), "every guide page shows runnable code"


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_name)
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # Lightning on torch's pytree (as test_lightning)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    """From a folder that has examples/, as the command lines."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for index, block in enumerate(_blocks(page, "python")):
        exec(compile(block, f"{_name(page)}, python block {index + 1}", "exec"), namespace)


def _shell_commands(path: Path) -> list[str]:
    return [
        line.split("#")[0].strip()
        for block in _blocks(path, "bash")
        for line in block.splitlines()
        if line.strip().startswith("shrinkage ")
    ]


def test_command_lines_run(tmp_path, monkeypatch):
    """Every `shrinkage …` line of the docs and the README, as written, from a folder that
    has examples/, in the order the pages give them; a line that several pages repeat (the
    houses study) runs once."""
    import shlex

    from click.testing import CliRunner

    from shrinkage.study.cli import main

    commands = list({command: (page, command) for page in PAGES for command in _shell_commands(page)}.values())
    assert commands, "the docs show the command line"
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    for page, command in commands:
        result = CliRunner().invoke(main, shlex.split(command)[1:])
        assert result.exit_code == 0, (_name(page), command, result.output)


def test_example_data_is_what_its_script_makes(tmp_path):
    import runpy

    out = tmp_path / "houses.csv"
    argv = sys.argv
    try:
        sys.argv = ["make_houses.py", str(out)]
        runpy.run_path(str(ROOT / "examples" / "make_houses.py"), run_name="__main__")
    finally:
        sys.argv = argv
    assert out.read_text() == (ROOT / "examples" / "houses.csv").read_text()


# --------------------------------------------------------------------------- the site


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> tuple[Path, int, str]:
    """The site, built once per test session (under xdist: once for all workers).

    Returns the site folder, mkdocs' exit code and its output.
    """
    from filelock import FileLock  # a dependency of torch

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the session's root
    folder, log = shared / "docs-site", shared / "docs-site.log"
    with FileLock(str(shared / "docs-site.lock")):
        if not log.exists():
            build = subprocess.run(
                [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                 "--site-dir", str(folder)],
                cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
            )  # fmt: skip
            log.write_text(f"{build.returncode}\n{build.stdout}{build.stderr}", encoding="utf-8")
        code, _, output = log.read_text(encoding="utf-8").partition("\n")
    return folder, int(code), output


def test_site_builds_strict(site):
    """`mkdocs build --strict`: any warning (a broken link or reference, a docstring griffe
    cannot parse, a page outside the nav) fails the build."""
    _, code, output = site
    problems = [line for line in output.splitlines() if "WARNING" in line or "ERROR" in line or "Aborted" in line]
    assert code == 0, "\n".join(problems) or output


def test_reference_has_an_anchor_for_every_public_name(site):
    folder, code, _ = site
    assert code == 0, "the site did not build (see test_site_builds_strict)"
    anchors: set[str] = set()
    for page in (folder / "reference").rglob("*.html"):
        anchors |= set(re.findall(r'\bid="([^"]+)"', page.read_text(encoding="utf-8")))
    missing = []
    for name in PUBLIC_MODULES:
        exported = getattr(importlib.import_module(name), "__all__", None)
        assert exported is not None, f"{name} is public: it lists its API in __all__"
        missing += [path for path in [name, *(f"{name}.{member}" for member in exported)] if path not in anchors]
    assert not missing, f"not in the API reference (docs/reference/): {missing}"

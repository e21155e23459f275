"""The layout the package promises: the library apart from the study application.

``import shrinkage`` (and every library module) pulls in none of the app's
dependencies; the app in ``shrinkage.study`` reaches the library only through its
public modules; every public module declares its public names.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import shrinkage

SRC = Path(shrinkage.__file__).parent
APP_DEPENDENCIES = {"pandas", "matplotlib", "jinja2", "click", "sqlite3", "pyarrow"}
LIBRARY = sorted(
    m.name
    for m in pkgutil.walk_packages(shrinkage.__path__, "shrinkage.")
    if not m.name.startswith("shrinkage.study") and m.name != "shrinkage.__main__"
)


def _imported_by(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_shrinkage_pulls_in_none_of_the_apps_dependencies():
    assert _imported_by("import shrinkage") & APP_DEPENDENCIES == set()


def test_no_library_module_pulls_in_the_apps_dependencies():
    """None beyond what scikit-learn imports by itself (its model_selection imports pandas
    when it is installed)."""
    # the framework callbacks: their own extras, whose frameworks import what they need
    # (transformers imports Jinja2 for its chat templates); the CUDA kernels: Triton,
    # which CI does not install
    integrations = ("shrinkage.lightning", "shrinkage.huggingface", "shrinkage.skorch")
    optional = [m for m in LIBRARY if m not in (*integrations, "shrinkage._triton_kernels")]
    sklearn = _imported_by("import sklearn.model_selection, sklearn.feature_selection, sklearn.utils.validation")
    assert (_imported_by("; ".join(f"import {m}" for m in optional)) - sklearn) & APP_DEPENDENCIES == set()


def _imports(path: Path) -> list[str]:
    """Every module a file imports, relative imports resolved to absolute names."""
    parts = ["shrinkage", *path.relative_to(SRC).with_suffix("").parts]
    package = parts[:-1]  # a module's package; for __init__, the package itself
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            found.append(".".join([*base, *([node.module] if node.module else [])]))
    return found


@pytest.mark.parametrize("path", sorted((SRC / "study").rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_the_app_uses_only_the_librarys_public_modules(path):
    # shared with the app, no API: shrinkage._files (the library's atomic file writes) and
    # shrinkage._warnings (warnings attributed to the caller's line)
    shared = ("shrinkage._files", "shrinkage._warnings")
    for module in _imports(path):
        if module.startswith("shrinkage") and not module.startswith("shrinkage.study") and module not in shared:
            private = [part for part in module.split(".") if part.startswith("_") and part != "__main__"]
            assert not private, f"{path.name} imports the private {module}"


@pytest.mark.parametrize("path", sorted(SRC.glob("*.py")), ids=lambda p: p.name)
def test_the_library_never_imports_the_app(path):
    if path.name == "__main__.py":  # the console script: it starts the app
        return
    assert not [m for m in _imports(path) if m.startswith("shrinkage.study")], path.name


@pytest.mark.parametrize("name", [m for m in LIBRARY if not m.split(".")[-1].startswith("_")] + ["shrinkage.study"])
def test_every_public_module_declares_its_public_names(name):
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list), f"{name} has no __all__"
    for public in module.__all__:
        assert hasattr(module, public), f"{name}.__all__ lists {public!r}, which it does not define"

"""The ``shrinkage`` command (console script and ``python -m shrinkage``).

The command line itself is :mod:`shrinkage.study.cli`; it needs the ``study`` extra
(click, pandas, …). This launcher imports it only when run, so that without the extra
the command says in one line what to install (exit code 2) instead of a traceback.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

__all__ = ["OPTIONAL_PACKAGES", "main", "missing_extra"]

#: Optional packages (top-level import names) → the extra of ``shrinkage`` that installs them.
OPTIONAL_PACKAGES = {
    "click": "study",
    "pandas": "study",
    "pyarrow": "study",
    "matplotlib": "study",
    "jinja2": "study",
    "dask": "distributed",
    "distributed": "distributed",
    "pytorch_lightning": "lightning",
    "numba": "fast",
    "onnx": "onnx",
    "onnxruntime": "onnx",
}


def missing_extra(error: BaseException, *, needs: str) -> str | None:
    """The one-line message for an optional package that is not installed, else None.

    ``needs`` says what needs it (``"the command line"``).

    >>> missing_extra(ModuleNotFoundError("No module named 'click'", name="click"), needs="the command line")
    "shrinkage: error: the command line needs the study extra: pip install 'shrinkage[study]' (missing click)"
    >>> missing_extra(ModuleNotFoundError("No module named 'shrinkage.nope'", name="shrinkage.nope"), needs="x")
    """
    if not isinstance(error, ModuleNotFoundError):
        return None
    name = (error.name or "").partition(".")[0]
    extra = OPTIONAL_PACKAGES.get(name)
    if extra is None:
        return None
    return f"shrinkage: error: {needs} needs the {extra} extra: pip install 'shrinkage[{extra}]' (missing {name})"


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line on ``argv`` (default: the process's arguments) and exit."""
    try:
        from shrinkage.study.cli import OWN_PROCESS
        from shrinkage.study.cli import main as command_line
    except KeyboardInterrupt:  # Ctrl-C while the command line loads: ended as it ends one later
        print("shrinkage: aborted", file=sys.stderr)
        sys.exit(1)
    except ModuleNotFoundError as error:
        line = missing_extra(error, needs="the command line")
        if line is None:  # not an optional package: a broken install or a bug
            raise
        print(line, file=sys.stderr)
        sys.exit(2)
    try:
        command_line.main(args=None if argv is None else list(argv), obj=OWN_PROCESS)
    finally:
        # the interpreter's last collections walk every object torch, pandas and matplotlib
        # made (1.1 s after a default study on 2 cores): nothing is left to collect that
        # matters once the command is done, so its objects are moved out of their reach
        gc.freeze()


if __name__ == "__main__":
    main()

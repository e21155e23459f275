"""Warnings that name the user's line: the first frame outside this package."""

from __future__ import annotations

import os
import sys
import warnings

# as the package's modules' code names its files (the same sys.path entry as this one's)
_PACKAGE = os.path.dirname(__file__) + os.sep


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """:func:`warnings.warn` attributed to the first caller outside shrinkage (what
    Python 3.12's ``skip_file_prefixes`` does): the user's line that made the fit or
    the call, however deep in the package the warning arose."""
    frame = sys._getframe(1)  # whoever called warn: stacklevel 2 of warnings.warn here
    level = 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)

"""Files written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, data: bytes, *, what: str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, renamed
    into place: a crash or a full disk leaves the old file (or none), never a part.

    An unwritable place is a :class:`PermissionError` naming ``what`` and the path.
    """
    path = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    except OSError as error:
        raise PermissionError(f"{what} {str(path)!r} cannot be written: {error.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644 & ~_umask())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise PermissionError(f"{what} {str(path)!r} cannot be written: {error.strerror}") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

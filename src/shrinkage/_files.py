"""Files written whole or not at all."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, data: bytes, *, what: str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, renamed
    into place: a crash or a full disk leaves the old file (or none), never a part.

    A symbolic link is followed (the file it names is replaced, the link kept); a device
    or a pipe (``/dev/null``) is written to as it is, not replaced, and ``/dev/stdout`` or
    ``/dev/stderr`` is the process's own stream (appended to where it is a file). An
    unwritable place is a :class:`PermissionError` naming ``what`` and the path.
    """
    given, path = Path(path), Path(os.path.realpath(path))
    stream = {"/dev/stdout": sys.stdout, "/dev/stderr": sys.stderr}.get(str(given))
    if stream is not None:  # the process's own stream (a pipe, a terminal, or `>> file`, appended to)
        stream.flush()
        stream.buffer.write(data)
        stream.buffer.flush()
        return given
    if path.is_dir():
        raise IsADirectoryError(f"{what} {str(given)!r} is a folder: name a file")
    if path.exists() and not path.is_file():
        try:
            with open(path, "wb") as device:
                device.write(data)
        except OSError as error:
            raise PermissionError(f"{what} {str(given)!r} cannot be written: {error.strerror}") from None
        return given
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as error:
        raise PermissionError(f"{what} {str(given)!r} cannot be written: {error.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644 & ~_umask())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise PermissionError(f"{what} {str(given)!r} cannot be written: {error.strerror}") from None
    return given


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

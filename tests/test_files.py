"""Files written whole or not at all (``shrinkage._files``): models, predictions, ONNX
files and reports."""

from __future__ import annotations

import os

import pytest

from shrinkage import _files


def test_a_failed_write_leaves_the_old_file_and_no_part(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    target.write_text("the good report")

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_files.os, "replace", crash)
    with pytest.raises(PermissionError, match=r"report '.*report.html' cannot be written: No space left on device"):
        _files.write_atomically(target, b"half a rep", what="report")
    assert target.read_text() == "the good report" and os.listdir(tmp_path) == ["report.html"]


def test_a_write_replaces_the_file_with_ordinary_permissions(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    _files.write_atomically(target, b"new", what="model file")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.safetensors"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o644 & ~mask
    with pytest.raises(PermissionError, match="cannot be written"):
        _files.write_atomically(tmp_path / "missing" / "x", b"", what="model file")


def test_a_link_is_followed_and_kept(tmp_path):
    (tmp_path / "real.csv").write_text("old")
    (tmp_path / "link.csv").symlink_to("real.csv")
    assert _files.write_atomically(tmp_path / "link.csv", b"new", what="predictions file") == tmp_path / "link.csv"
    assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "real.csv").read_bytes() == b"new"


def test_a_pipe_is_written_to_not_replaced(tmp_path):
    """As /dev/null or /dev/stdout would be: a device or a pipe stays what it is."""
    import threading

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()))
    reader.start()
    _files.write_atomically(pipe, b"through", what="report")
    reader.join(timeout=10)
    assert received == [b"through"] and pipe.is_fifo()


def test_a_folder_is_refused_naming_it(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"report '.*' is a folder: name a file"):
        _files.write_atomically(tmp_path, b"x", what="report")


def test_dev_stdout_is_the_process_stream_appended_to(monkeypatch):
    """`--out /dev/stdout >> file` appends (the link, followed, was replaced with a new
    file), and into a pipe it writes (the link led nowhere)."""
    import io
    import sys

    buffer = io.BytesIO(b"before\n")
    buffer.seek(0, io.SEEK_END)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buffer))
    _files.write_atomically("/dev/stdout", b"after\n", what="predictions file")
    assert buffer.getvalue() == b"before\nafter\n"

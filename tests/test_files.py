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

"""Checks and conversions for user data (X, y) at the library's boundary."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .train import TASKS
from .validation import Described, check_choice, fail


def check_X(X: Any, name: str = "X") -> np.ndarray:
    """A non-empty 2-D array of finite real numbers, as float64."""
    if isinstance(X, Tensor):
        X = X.detach().cpu().numpy()
    try:
        array = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail(name, "a 2-D array of numbers", _describe(X), kind=TypeError) from None
    if array.ndim != 2:
        raise fail(name, "a 2-D array (rows × features)", Described(f"an array of shape {array.shape}"))
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise fail(name, "non-empty", Described(f"an array of shape {array.shape}"))
    bad = int((~np.isfinite(array)).sum())
    if bad:
        raise fail(name, "free of NaN and infinite values", Described(f"{bad} such value(s)"))
    # a read-only array (pandas' copy-on-write, a memory map) is copied: torch warns on one
    return np.require(array, requirements="W")


def check_y(y: Any, task: str, n_rows: int, name: str = "y", *, held_out: bool = False) -> np.ndarray:
    """Targets for ``task``: finite floats (regression) or class indices 0..K-1.

    ``held_out``: rows that are only scored (validation, test), which may hold a single
    class — a small class need not be in every fold."""
    check_choice("task", task, TASKS)
    if isinstance(y, Tensor):
        y = y.detach().cpu().numpy()
    try:
        array = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail(name, "an array of numbers", _describe(y), kind=TypeError) from None
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise fail(name, "a 1-D array", Described(f"an array of shape {array.shape}"))
    if array.shape[0] != n_rows:
        raise fail(name, f"one value per row of X ({n_rows})", Described(f"{array.shape[0]} values"), verb="have")
    bad = int((~np.isfinite(array)).sum())
    if bad:
        raise fail(name, "free of NaN and infinite values", Described(f"{bad} such value(s)"))
    if task == "regression":
        return array
    if not np.all(array == np.round(array)) or array.min() < 0:
        raise fail(name, f"integer class indices >= 0 for task={task!r}", _describe(np.unique(array)))
    classes = np.unique(array)
    if classes.size < 2 and not held_out:
        raise fail(name, "at least two classes", Described(f"one class: {classes[0]:g}"), verb="have")
    if task == "binary" and not set(classes.tolist()) <= {0.0, 1.0}:
        raise fail(name, "0 or 1 for task='binary'", Described(f"classes {classes.tolist()}"))
    return array.astype(np.int64)


def to_tensors(
    X: np.ndarray, y: np.ndarray, *, device: torch.device | str | None, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Arrays as tensors on ``device``; class indices stay integers."""
    X_t = torch.as_tensor(X, dtype=dtype, device=device)
    y_t = torch.as_tensor(y, device=device)
    y_t = y_t.long() if y.dtype.kind in "iu" else y_t.to(dtype)
    return X_t, y_t


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return Described(f"an array of shape {value.shape} and dtype {value.dtype}")
    text = " ".join(repr(value).split())
    return Described(text if len(text) <= 60 else text[:57] + "...")

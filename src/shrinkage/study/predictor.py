"""A study's model as something to ship: the network with the preprocessing of its inputs.

A model file is weights-only safetensors (:func:`shrinkage.prune.save_model`); a study's
models carry in its JSON metadata a *preprocessing description*, so that a
:class:`Predictor` read back from the file takes raw rows as the user has them — the
columns of the CSV the study read — and gives predictions in the target's own units
or labels. The description is plain data, checked field by field when read::

    {"format": 1,
     "columns": [{"name": "age", "kind": "numeric", "fill": 41.0, "mean": 43.2, "scale": 12.9},
                 {"name": "colour", "kind": "categorical", "levels": ["(missing)", "blue", "red"]}],
     "inputs": [0, 2, 3],            # the encoded columns the network reads (null: all)
     "task": "multiclass", "classes": ["a", "b", "c"],
     "target": {"name": "y", "mean": 0.0, "scale": 1.0},
     "ignored": ["constant_column"]}

Encoding, as the study's :class:`~shrinkage.study.tabular.Encoder` does on its training
rows: a numeric column's missing values become ``fill`` (its training median), then
``(x − mean) / scale``; a categorical column becomes one 0/1 column per level, its
values compared as text, a missing value being the level ``"(missing)"``. A level not
seen in training (``"(missing)"`` included when training had no missing value) gives
all-zero columns — the network sees none of the levels — or, with ``unseen="error"``,
an error naming the column and the value. Columns not in the description are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from shrinkage._files import write_atomically
from shrinkage.prune import load_model, model_bytes
from shrinkage.validation import InputError, InputTypeError, check_choice

from .._warnings import warn
from .tabular import MISSING_LEVEL, _as_levels, _as_numbers

__all__ = ["MISSING_LEVEL", "Predictor", "Preprocessing", "UnseenLevelWarning", "load_predictor"]

FORMAT = 1
_TASKS = ("regression", "binary", "multiclass")


class UnseenLevelWarning(UserWarning):
    """Rows held categorical values the model never saw in training (encoded as none of
    its levels)."""


@dataclass(frozen=True)
class Preprocessing:
    """What a model's inputs went through (module docstring), and what its outputs mean.

    Attributes
    ----------
    columns : tuple of dict
        The input columns in encoding order: ``{"name", "kind": "numeric", "fill",
        "mean", "scale"}`` or ``{"name", "kind": "categorical", "levels"}``.
    inputs : tuple of int or None
        The encoded columns the network reads, in order (a pruned network reads fewer);
        None: all of them.
    task : {"regression", "binary", "multiclass"}
    classes : tuple of str or None
        The class labels, in the order of the network's outputs (classification).
    target : dict
        ``{"name", "mean", "scale"}``: a regression network predicts
        ``(y − mean) / scale``.
    ignored : tuple of str
        Columns the study dropped (constant on every row or on the training rows, or an identifier: text with a
        distinct value in at least half of the rows):
        not read.
    """

    columns: tuple[dict, ...]
    task: str
    target: dict
    classes: tuple[str, ...] | None = None
    inputs: tuple[int, ...] | None = None
    ignored: tuple[str, ...] = ()

    @property
    def encoded_names(self) -> list[str]:
        """Every encoded column: a numeric column's name, ``"column=level"`` per level."""
        names: list[str] = []
        for column in self.columns:
            if column["kind"] == "numeric":
                names.append(column["name"])
            else:
                names += [f"{column['name']}={level}" for level in column["levels"]]
        return names

    @property
    def feature_names(self) -> list[str]:
        """The encoded columns the network reads, in its input order."""
        names = self.encoded_names
        return names if self.inputs is None else [names[j] for j in self.inputs]

    def with_inputs(self, kept: list[int]) -> Preprocessing:
        """The description for a network that reads only ``kept`` of this one's inputs."""
        current = list(range(len(self.encoded_names))) if self.inputs is None else list(self.inputs)
        return Preprocessing(
            self.columns, self.task, self.target, self.classes, tuple(current[j] for j in kept), self.ignored
        )

    # ------------------------------------------------------------------ plain data
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "columns": [dict(c) for c in self.columns],
            "inputs": None if self.inputs is None else list(self.inputs),
            "task": self.task,
            "classes": None if self.classes is None else list(self.classes),
            "target": dict(self.target),
            "ignored": list(self.ignored),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "model file") -> Preprocessing:
        """A description read from a file, checked field by field: any fault is an
        :class:`~shrinkage.InputError` in one line naming the field."""

        def bad(field: str, rule: str, value: Any) -> InputError:
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            return InputError(f"{where} has a bad preprocessing description: {field} must be {rule}, got {shown}")

        if not isinstance(data, dict):
            raise bad("the description", "an object", type(data).__name__)
        if data.get("format") != FORMAT:
            raise bad("format", f"{FORMAT}", data.get("format"))
        columns = data.get("columns")
        if not isinstance(columns, list) or not columns:
            raise bad("columns", "a non-empty list", columns)
        checked = []
        names = set()
        for k, column in enumerate(columns):
            field = f"columns[{k}]"
            if not isinstance(column, dict) or not isinstance(column.get("name"), str):
                raise bad(field, "an object with a text name", column)
            if column["name"] in names:
                raise bad(f"{field}.name", "unique", column["name"])
            names.add(column["name"])
            if column.get("kind") == "numeric":
                for key in ("fill", "mean", "scale"):
                    value = column.get(key)
                    if not _finite(value) or (key == "scale" and cast(float, value) <= 0):
                        raise bad(f"{field}.{key}", "a finite number" + (" > 0" if key == "scale" else ""), value)
                checked.append(
                    {
                        "name": column["name"],
                        "kind": "numeric",
                        **{k: float(column[k]) for k in ("fill", "mean", "scale")},
                    }
                )
            elif column.get("kind") == "categorical":
                levels = column.get("levels")
                if (
                    not isinstance(levels, list)
                    or not levels
                    or not all(isinstance(v, str) for v in levels)
                    or len(set(levels)) != len(levels)
                ):
                    raise bad(f"{field}.levels", "a non-empty list of distinct texts", levels)
                checked.append({"name": column["name"], "kind": "categorical", "levels": list(levels)})
            else:
                raise bad(f"{field}.kind", "'numeric' or 'categorical'", column.get("kind"))
        task = data.get("task")
        if task not in _TASKS:
            raise bad("task", "one of " + ", ".join(map(repr, _TASKS)), task)
        classes = data.get("classes")
        if task == "regression":
            if classes is not None:
                raise bad("classes", "null for regression", classes)
        elif (
            not isinstance(classes, list)
            or not all(isinstance(c, str) for c in classes)
            or len(classes) < 2
            or len(set(classes)) != len(classes)
            or (task == "binary" and len(classes) != 2)
        ):
            raise bad("classes", f"distinct texts, {'two' if task == 'binary' else 'at least two'}", classes)
        target = data.get("target")
        if (
            not isinstance(target, dict)
            or not isinstance(target.get("name"), str)
            or not _finite(target.get("mean"))
            or not _finite(target.get("scale"))
            or target["scale"] <= 0
        ):
            raise bad("target", "an object with a text name, a finite mean and a scale > 0", target)
        n_encoded = sum(1 if c["kind"] == "numeric" else len(c["levels"]) for c in checked)
        inputs = data.get("inputs")
        if inputs is not None and (
            not isinstance(inputs, list)
            or not all(isinstance(j, int) and not isinstance(j, bool) and 0 <= j < n_encoded for j in inputs)
            or len(set(inputs)) != len(inputs)
        ):
            raise bad("inputs", f"null or distinct column numbers in [0, {n_encoded})", inputs)
        ignored = data.get("ignored", [])
        if not isinstance(ignored, list) or not all(isinstance(c, str) for c in ignored):
            raise bad("ignored", "a list of texts", ignored)
        return cls(
            tuple(checked),
            task,
            {"name": target["name"], "mean": float(target["mean"]), "scale": float(target["scale"])},
            None if classes is None else tuple(classes),
            None if inputs is None else tuple(inputs),
            tuple(ignored),
        )

    # ------------------------------------------------------------------ encoding
    def encode(self, frame: Any, *, unseen: str = "zeros") -> np.ndarray:
        """The network's input for the rows of ``frame`` (a pandas DataFrame with at least
        the columns the network reads, in any order), float64 ``(rows, inputs)``: a pruned
        network's description still lists every column, but only the columns it reads
        are needed.

        A missing column, a numeric column holding text, or (with ``unseen="error"``) a
        level not seen in training raises an :class:`~shrinkage.InputError` naming the
        column; with ``unseen="zeros"`` such rows get all-zero columns for that column
        and an :class:`UnseenLevelWarning` counts them.
        """
        import pandas as pd

        check_choice("unseen", unseen, ("zeros", "error"))
        if not isinstance(frame, pd.DataFrame):
            raise InputTypeError(f"data must be a pandas DataFrame, got {type(frame).__name__}")
        names = [str(c) for c in frame.columns]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise InputError(f"data must have distinct column names, got {', '.join(map(repr, duplicated))} twice")
        frame = frame.set_axis(names, axis=1)
        spans = self._spans()
        wanted = set(range(spans[-1][1])) if self.inputs is None else set(self.inputs)
        needed = [c for c, (lo, hi) in zip(self.columns, spans) if wanted.intersection(range(lo, hi))]
        missing = [c["name"] for c in needed if c["name"] not in names]
        if missing:
            raise InputError(f"data lacks the column(s) the model reads: {', '.join(map(repr, missing))}")
        encoded = np.zeros((len(frame), spans[-1][1]))
        unseen_rows: dict[str, int] = {}
        for column, (lo, _) in zip(self.columns, spans):
            if column not in needed:
                continue
            values = frame[column["name"]]
            if column["kind"] == "numeric":
                encoded[:, lo] = _numeric(values, column)
                continue
            text = _as_levels(values)
            levels = column["levels"]
            known = text.isin(levels).to_numpy()
            if not known.all():
                row = int(np.flatnonzero(~known)[0])
                if unseen == "error":
                    value = text.iloc[row]
                    held = "a missing value" if value == MISSING_LEVEL else f"the value {value!r}"
                    raise InputError(
                        f"column {column['name']!r} holds {held} (row {row + 1} of the data), which the model "
                        f"never saw in training (its levels: {', '.join(map(repr, levels[:10]))}"
                        f"{', …' if len(levels) > 10 else ''})"
                    )
                unseen_rows[column["name"]] = int((~known).sum())
            codes = text.map({level: k for k, level in enumerate(levels)}).fillna(-1).to_numpy(dtype=np.int64)
            rows = np.flatnonzero(codes >= 0)
            encoded[rows, lo + codes[rows]] = 1.0
        if unseen_rows:
            listed = ", ".join(f"{c!r} ({n} row(s))" for c, n in unseen_rows.items())
            warn(f"values the model never saw in training, encoded as none of its levels: {listed}", UnseenLevelWarning)
        return encoded if self.inputs is None else encoded[:, list(self.inputs)]

    def _spans(self) -> list[tuple[int, int]]:
        """Each column's encoded columns ``[start, stop)``."""
        spans, start = [], 0
        for column in self.columns:
            width = 1 if column["kind"] == "numeric" else len(column["levels"])
            spans.append((start, start + width))
            start += width
        return spans


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numeric(values: Any, column: dict) -> np.ndarray:
    """A numeric column, imputed and standardized as the study's encoder did (the same
    operations: ``x − mean``, then ``/ scale``, in float64)."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        converted = _as_numbers(values)  # as the study read it: thousands separators too
        bad = converted.isna() & values.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"column {column['name']!r} must hold numbers, got {values.iloc[row]!r} (row {row + 1} of the data)"
            )
        values = converted
    x = values.to_numpy(dtype=np.float64, na_value=np.nan).copy()
    if np.isinf(x).any():
        row = int(np.flatnonzero(np.isinf(x))[0])
        name = column["name"]
        raise InputError(f"column {name!r} must hold finite numbers, got {x[row]} (row {row + 1} of the data)")
    x[np.isnan(x)] = column["fill"]
    with np.errstate(over="ignore"):  # an overflow is refused below, naming the row
        x -= column["mean"]
        x /= column["scale"]
    if not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x))[0])
        raise InputError(
            f"column {column['name']!r} overflows the model's scaling at row {row + 1} of the data "
            f"(mean {column['mean']:g}, scale {column['scale']:g})"
        )
    return x


class Predictor:
    """A network and its :class:`Preprocessing`: predictions from raw rows.

    Read one with :func:`load_predictor` from a file that ``shrinkage export`` or
    ``shrinkage prune`` wrote (or a study's stored model).

    Examples
    --------
    >>> import pandas as pd
    >>> from torch import nn
    >>> prep = Preprocessing(
    ...     ({"name": "x", "kind": "numeric", "fill": 0.0, "mean": 1.0, "scale": 2.0},),
    ...     "regression", {"name": "y", "mean": 10.0, "scale": 3.0})
    >>> net = nn.Sequential(nn.Linear(1, 1))
    >>> _ = nn.init.ones_(net[0].weight), nn.init.zeros_(net[0].bias)
    >>> Predictor(net, prep).predict(pd.DataFrame({"x": [3.0, None]})).tolist()
    [13.0, 8.5]
    """

    def __init__(self, model: nn.Module, preprocessing: Preprocessing):
        self.model = model.eval()
        self.preprocessing = preprocessing

    @property
    def task(self) -> str:
        """``"regression"``, ``"binary"`` or ``"multiclass"``."""
        return self.preprocessing.task

    @property
    def classes(self) -> list[str] | None:
        """The class labels in the order of the network's outputs (None: regression)."""
        return None if self.preprocessing.classes is None else list(self.preprocessing.classes)

    @torch.no_grad()
    def outputs(self, frame: Any, *, unseen: str = "zeros") -> np.ndarray:
        """The network's raw outputs (standardized values or logits), float64
        ``(rows, outputs)``, computed in float64."""
        return self._outputs(self.preprocessing.encode(frame, unseen=unseen))

    @torch.no_grad()
    def _outputs(self, X: np.ndarray) -> np.ndarray:
        weights = {k: v.double() for k, v in self.model.state_dict().items()}
        out = torch.func.functional_call(self.model, weights, (torch.as_tensor(X, dtype=torch.float64),)).numpy()
        finite = np.isfinite(out).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise InputError(f"the model gives a non-finite output at row {row + 1} of the data (its numbers overflow)")
        return out

    def predict(self, frame: Any, *, unseen: str = "zeros") -> np.ndarray:
        """Predicted values in the target's units (regression) or class labels."""
        return self._predict(self.outputs(frame, unseen=unseen))

    def predict_encoded(self, X: np.ndarray) -> np.ndarray:
        """:meth:`predict` for rows its preprocessing has already encoded (the study's own
        test rows, as the network reads them)."""
        return self._predict(self._outputs(X))

    def predict_proba(self, frame: Any, *, unseen: str = "zeros") -> np.ndarray:
        """Class probabilities ``(rows, classes)``, in the order of ``classes``."""
        if self.task == "regression":
            raise InputError("predict_proba needs a classifier; this model is a regression")
        return self._proba(self.outputs(frame, unseen=unseen))

    def _predict(self, out: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            target = self.preprocessing.target
            return out[:, 0] * target["scale"] + target["mean"]
        assert self.preprocessing.classes is not None
        index = (out[:, 0] > 0).astype(int) if out.shape[1] == 1 else out.argmax(axis=1)
        return np.asarray(self.preprocessing.classes, dtype=object)[index]

    def _proba(self, out: np.ndarray) -> np.ndarray:
        if out.shape[1] == 1:
            positive = 1.0 / (1.0 + np.exp(-out[:, 0]))
            return np.stack([1.0 - positive, positive], axis=1)
        shifted = np.exp(out - out.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def table(self, frame: Any, *, id_column: str | None = None, unseen: str = "zeros") -> Any:
        """Predictions as a DataFrame: ``id_column`` (when given) as it is in ``frame``,
        ``prediction``, and for a classifier ``probability_<label>`` per class."""
        import pandas as pd

        out = self.outputs(frame, unseen=unseen)
        result = pd.DataFrame({"prediction": self._predict(out)})
        if self.task != "regression":
            for label, column in zip(self.classes or [], self._proba(out).T):
                result[f"probability_{label}"] = column
        if id_column is not None:
            if id_column in result.columns:
                raise InputError(f"id_column must not be the name of an output column, got {id_column!r}")
            result.insert(0, id_column, frame[id_column].to_numpy())
        return result

    def to_bytes(self, metadata: dict | None = None) -> bytes:
        """The model file's bytes: weights and the description (``metadata`` merged in)."""
        return model_bytes(
            self.model,
            metadata={
                **(metadata or {}),
                "features": self.preprocessing.feature_names,
                "task": self.task,
                "classes": self.classes,
                "preprocessing": self.preprocessing.to_dict(),
            },
        )

    def save(self, path: str | Path, metadata: dict | None = None) -> Path:
        """Write the model file (weights-only safetensors with the description) to ``path``."""
        return write_atomically(Path(path), self.to_bytes(metadata), what="model file")


def load_predictor(source: str | Path | bytes) -> Predictor:
    """Read a model file with its preprocessing (no pickle: tensors and checked JSON).

    Raises :class:`~shrinkage.InputError` in one line for a file that is not a model
    file, whose description is malformed, or that carries no preprocessing (a model
    exported by :func:`shrinkage.prune.save_model` alone, or by a study stored before
    models carried it).
    """
    where = "model bytes" if isinstance(source, bytes) else f"model file {str(source)!r}"
    model, metadata = load_model(source)
    description = metadata.get("preprocessing")
    if description is None:
        raise InputError(
            f"{where} carries no preprocessing description (written by save_model alone, or by a study "
            "stored before models carried it): rerun the study, then export its model"
        )
    preprocessing = Preprocessing.from_dict(description, where)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(f"{where} holds non-finite numbers (NaN or infinity) in its tensor {name!r}")
    n_inputs = len(preprocessing.feature_names)
    first = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
    if first is None or first.in_features != n_inputs:
        got = "no linear layer" if first is None else f"{first.in_features} inputs"
        raise InputError(f"{where} describes {n_inputs} network inputs, but its network has {got}")
    outputs = [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features
    wanted = len(preprocessing.classes or ()) if preprocessing.task == "multiclass" else 1
    if outputs != wanted:
        raise InputError(f"{where} describes a {preprocessing.task} model with {wanted} output(s), got {outputs}")
    return Predictor(model, preprocessing)

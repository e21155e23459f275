"""A :class:`~shrinkage.study.predictor.Predictor` as an ONNX file: the network with the
preprocessing of its inputs, for onnxruntime (or any ONNX runtime with the ``ai.onnx.ml``
domain) and no shrinkage, no torch.

The graph takes the raw columns the network reads and gives what :meth:`Predictor.predict`
and :meth:`Predictor.predict_proba` give. Its **inputs** are one per column the network
reads (a pruned network reads fewer), named by the column, in the description's order,
each of shape ``[N, 1]``:

- a numeric column is ``float32``, a missing value ``NaN``: it becomes the column's
  ``fill`` (its training median), then ``(x − mean) / scale``;
- a categorical column is ``string``, the value as text (``str(value)``, as the
  Predictor compares them), a missing value the text ``"(missing)"``: one 0/1 column
  per level, and all zeros for a value not seen in training (the network sees none of
  the levels), as the Predictor's ``unseen="zeros"``.

Its **outputs** are, for a regression, ``prediction`` (``float32 [N]``, in the target's
units); for a classifier, ``probabilities`` (``float32 [N, classes]``, in the order of
the classes) and ``label`` (``string [N]``, the most probable class; ties go to the
first, as the Predictor's).

The model's ``metadata_props`` hold ``task``, ``inputs`` (the input names, JSON),
``classes`` (JSON, classifiers), ``target``, ``features`` (the network's inputs, JSON),
``missing_level``, the whole ``preprocessing`` description (JSON) and
``shrinkage_version``.

The graph computes in float32 (the network's own precision) with standard operators
(opset 17, ``ai.onnx.ml`` opset 3, IR version 8); its outputs equal the Predictor's,
computed in float64, to float32 rounding. Unlike the Predictor it cannot refuse a row: an
infinite numeric value goes through the network as it is.

It needs the ``onnx`` extra (``pip install 'shrinkage[onnx]'``: onnx, and onnxruntime
to run the file).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from shrinkage import __version__
from shrinkage._files import write_atomically
from shrinkage.models import SkipMLP
from shrinkage.validation import InputError

from .predictor import MISSING_LEVEL, Predictor

if TYPE_CHECKING:
    import onnx

__all__ = ["export_onnx"]

_OPSET = {"": 17, "ai.onnx.ml": 3}  # the default domain's and ai.onnx.ml's
_IR_VERSION = 8  # what opset 17 needs: files that onnxruntime ≥ 1.13 reads
_OUTPUTS = {"regression": ("prediction",), "classification": ("probabilities", "label")}


def export_onnx(predictor: Predictor, path: str | Path) -> Path:
    """Write ``predictor`` (network and preprocessing) to ``path`` as an ONNX file.

    Parameters
    ----------
    predictor : Predictor
        The network (an ``nn.Sequential`` such as :class:`~shrinkage.models.MLP`, or a
        :class:`~shrinkage.models.SkipMLP`) and its :class:`~shrinkage.study.predictor.Preprocessing`.
    path : str or Path
        The file to write, whole or not at all.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        A layer that the export does not write (named), a column named like an output,
        or a network that reads no column.
    ModuleNotFoundError
        Without the ``onnx`` package (the ``onnx`` extra).

    Examples
    --------
    >>> import tempfile, onnxruntime, numpy as np
    >>> from torch import nn
    >>> from shrinkage.study.predictor import Predictor, Preprocessing
    >>> prep = Preprocessing(
    ...     ({"name": "x", "kind": "numeric", "fill": 0.0, "mean": 1.0, "scale": 2.0},),
    ...     "regression", {"name": "y", "mean": 10.0, "scale": 3.0})
    >>> net = nn.Sequential(nn.Linear(1, 1))
    >>> _ = nn.init.ones_(net[0].weight), nn.init.zeros_(net[0].bias)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     session = onnxruntime.InferenceSession(export_onnx(Predictor(net, prep), f"{folder}/m.onnx"))
    >>> x = np.array([[3.0], [np.nan]], dtype=np.float32)
    >>> session.run(["prediction"], {"x": x})[0].tolist()
    [13.0, 8.5]
    """
    onnx = _import_onnx()
    model = _Graph(onnx, predictor).model()
    onnx.checker.check_model(model, full_check=True)
    return write_atomically(Path(path), model.SerializeToString(), what="ONNX file")


def _import_onnx() -> Any:
    try:
        import onnx
    except ModuleNotFoundError as error:
        if error.name != "onnx":  # onnx is there but broken: its own error says more
            raise
        raise ModuleNotFoundError(
            "ONNX export needs the onnx extra: pip install 'shrinkage[onnx]' (missing onnx)", name="onnx"
        ) from None
    return onnx


class _Graph:
    """The nodes and constants of one export; values get fresh names that no column has."""

    def __init__(self, onnx_module: Any, predictor: Predictor):
        self.onnx, self.helper = onnx_module, onnx_module.helper
        self.predictor = predictor
        self.preprocessing = predictor.preprocessing
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self.taken = {c["name"] for c in self.preprocessing.columns}
        self.count = 0

    # ------------------------------------------------------------------ building blocks
    def name(self, hint: str) -> str:
        while True:
            self.count += 1
            name = f"{hint}_{self.count}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def constant(self, value: Any, hint: str = "const", dtype: Any = np.float32) -> str:
        name = self.name(hint)
        array = np.asarray(value, dtype=dtype)
        self.constants.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, domain: str = "", **attributes: Any) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], domain=domain, **attributes))
        return out

    def squeeze(self, x: str) -> str:
        """``x`` without its axis 1 (of size 1)."""
        return self.op("Squeeze", x, self.constant([1], "axes", np.int64))

    # ------------------------------------------------------------------ the model
    def model(self) -> onnx.ModelProto:
        helper, tensor = self.helper, self.onnx.TensorProto
        prep = self.preprocessing
        regression = prep.task == "regression"
        outputs = _OUTPUTS["regression" if regression else "classification"]
        columns, encoded = self.encoding()
        clash = sorted({c["name"] for c in columns} & set(outputs))
        if clash:
            raise InputError(
                f"ONNX export names its outputs {', '.join(outputs)}; the model reads a column named "
                f"{clash[0]!r}: rename that column in the data and rerun the study"
            )
        out = self.network(self.predictor.model, encoded)  # (N, outputs): standardized values or logits
        if regression:
            self.regression(out)
            results = [helper.make_tensor_value_info("prediction", tensor.FLOAT, ["N"])]
        else:
            self.classification(out)
            n_classes = len(prep.classes or ())
            results = [
                helper.make_tensor_value_info("probabilities", tensor.FLOAT, ["N", n_classes]),
                helper.make_tensor_value_info("label", tensor.STRING, ["N"]),
            ]
        inputs = [
            helper.make_tensor_value_info(
                c["name"], tensor.FLOAT if c["kind"] == "numeric" else tensor.STRING, ["N", 1], _input_doc(c)
            )
            for c in columns
        ]
        graph = helper.make_graph(
            self.nodes, "shrinkage", inputs, results, initializer=self.constants, doc_string=_graph_doc(prep)
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid(domain, version) for domain, version in _OPSET.items()],
            ir_version=_IR_VERSION,
            producer_name="shrinkage",
            producer_version=__version__,
        )
        helper.set_model_props(model, self.metadata([c["name"] for c in columns]))
        return model

    def metadata(self, inputs: list[str]) -> dict[str, str]:
        prep = self.preprocessing
        props = {
            "task": prep.task,
            "inputs": json.dumps(inputs),
            "target": prep.target["name"],
            "features": json.dumps(prep.feature_names),
            "missing_level": MISSING_LEVEL,
            "preprocessing": json.dumps(prep.to_dict()),
            "shrinkage_version": __version__,
        }
        if prep.classes is not None:
            props["classes"] = json.dumps(list(prep.classes))
        return props

    # ------------------------------------------------------------------ preprocessing
    def encoding(self) -> tuple[list[dict], str]:
        """The graph's inputs (the columns the network reads) and the network's input
        ``(N, inputs)``: the encoded columns, then the ones the network reads, in its order."""
        prep = self.preprocessing
        spans = prep._spans()
        wanted = list(range(spans[-1][1])) if prep.inputs is None else list(prep.inputs)
        columns = [c for c, (lo, hi) in zip(prep.columns, spans) if set(wanted).intersection(range(lo, hi))]
        if not columns:
            raise InputError("ONNX export needs a network that reads at least one column; this one reads none")
        if any(not c["name"] for c in columns):
            raise InputError("ONNX export names its inputs by the columns; a column has an empty name")
        # the encoded blocks: the numeric columns together (one column each), then each categorical column
        position: dict[int, int] = {}  # encoded column → its column in the concatenation of the blocks
        blocks: list[str] = []
        read = {c["name"] for c in columns}
        numeric = [(c, lo) for c, (lo, _) in zip(prep.columns, spans) if c["name"] in read and c["kind"] == "numeric"]
        if numeric:
            blocks.append(self.numeric([c for c, _ in numeric]))
            position.update({lo: k for k, (_, lo) in enumerate(numeric)})
        for column, (lo, hi) in zip(prep.columns, spans):
            if column["name"] in read and column["kind"] == "categorical":
                blocks.append(self.categorical(column))
                start = len(position)
                position.update({j: start + (j - lo) for j in range(lo, hi)})
        encoded = blocks[0] if len(blocks) == 1 else self.op("Concat", *blocks, axis=1)
        indices = [position[j] for j in wanted]
        if indices == list(range(len(position))):
            return columns, encoded
        return columns, self.op("Gather", encoded, self.constant(indices, "inputs", np.int64), axis=1)

    def numeric(self, columns: list[dict]) -> str:
        """``(N, numeric columns)``: NaN → fill, then (x − mean) / scale, as the Predictor."""
        x = columns[0]["name"] if len(columns) == 1 else self.op("Concat", *[c["name"] for c in columns], axis=1)
        fill = self.constant([c["fill"] for c in columns], "fill")
        x = self.op("Where", self.op("IsNaN", x), fill, x)
        x = self.op("Sub", x, self.constant([c["mean"] for c in columns], "mean"))
        return self.op("Div", x, self.constant([c["scale"] for c in columns], "scale"))

    def categorical(self, column: dict) -> str:
        """``(N, levels)``: 1 in the column of the row's level; all zeros for a value that is
        none of them (``zeros=1``)."""
        onehot = self.op(
            "OneHotEncoder", column["name"], domain="ai.onnx.ml", cats_strings=column["levels"], zeros=1
        )  # (N, 1, levels)
        return self.squeeze(onehot)

    # ------------------------------------------------------------------ outputs
    def regression(self, out: str) -> None:
        target = self.preprocessing.target
        value = self.squeeze(out)
        value = self.op("Mul", value, self.constant(target["scale"], "target_scale"))
        self.op("Add", value, self.constant(target["mean"], "target_mean"), out="prediction")

    def classification(self, out: str) -> None:
        classes = self.constant(list(self.preprocessing.classes or ()), "classes", object)
        n_outputs = _linears(self.predictor.model)[-1].out_features
        if n_outputs == 1:  # one logit: P(second class) = σ(z); σ(−z) for the first, exact in relative terms
            negative = self.op("Sigmoid", self.op("Neg", out))
            self.op("Concat", negative, self.op("Sigmoid", out), axis=1, out="probabilities")
            positive = self.squeeze(self.op("Greater", out, self.constant([[0.0]], "zero")))  # z > 0, as the Predictor
            index = self.op("Cast", positive, to=self.onnx.TensorProto.INT64)
        else:
            self.op("Softmax", out, axis=1, out="probabilities")
            index = self.op("ArgMax", out, axis=1, keepdims=0)  # the first of tied maxima, as numpy's argmax
        self.op("Gather", classes, index, axis=0, out="label")

    # ------------------------------------------------------------------ the network
    def network(self, model: nn.Module, x: str) -> str:
        if isinstance(model, SkipMLP):  # skip(x) + body(x)
            return self.op("Add", self.linear(model.skip, x), self.network(model.body, x))
        if not isinstance(model, nn.Sequential):
            raise InputError(
                f"ONNX export writes an nn.Sequential (an MLP) or a SkipMLP, got the model {type(model).__name__}"
            )
        for index, layer in enumerate(model):
            if isinstance(layer, nn.Sequential):
                x = self.network(layer, x)
                continue
            write = _LAYERS.get(type(layer))
            if write is None or (isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1)):
                raise InputError(
                    f"ONNX export cannot write the layer {type(layer).__name__} (layer {index} of the network); "
                    f"it writes: {', '.join(sorted(cls.__name__ for cls in _LAYERS))}"
                )
            x = write(self, layer, x)
        return x

    def linear(self, layer: nn.Linear, x: str) -> str:
        weight = self.constant(_array(layer.weight), "weight")  # W: (out, in), so x @ Wᵀ
        bias = [] if layer.bias is None else [self.constant(_array(layer.bias), "bias")]
        return self.op("Gemm", x, weight, *bias, transB=1)

    def batchnorm(self, layer: nn.BatchNorm1d, x: str) -> str:
        """``x · a + c`` with the running statistics (what the layer does in eval mode)."""
        if layer.running_mean is None or layer.running_var is None:
            raise InputError(
                "ONNX export cannot write the layer BatchNorm1d without running statistics "
                "(track_running_stats=False normalizes each batch by its own statistics)"
            )
        mean, var = _array(layer.running_mean, np.float64), _array(layer.running_var, np.float64)
        weight = _array(layer.weight, np.float64) if layer.weight is not None else np.ones_like(mean)
        bias = _array(layer.bias, np.float64) if layer.bias is not None else np.zeros_like(mean)
        a = weight / np.sqrt(var + layer.eps)
        scaled = self.op("Mul", x, self.constant(a, "bn_scale"))
        return self.op("Add", scaled, self.constant(bias - mean * a, "bn_shift"))

    def gelu(self, layer: nn.GELU, x: str) -> str:
        half = self.op("Mul", x, self.constant(0.5))
        if layer.approximate == "tanh":  # 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
            cube = self.op("Mul", self.op("Mul", x, x), x)
            inner = self.op("Add", x, self.op("Mul", cube, self.constant(0.044715)))
            curve = self.op("Tanh", self.op("Mul", inner, self.constant(math.sqrt(2 / math.pi))))
        else:  # 0.5·x·(1 + erf(x/√2))
            curve = self.op("Erf", self.op("Mul", x, self.constant(1 / math.sqrt(2))))
        return self.op("Mul", half, self.op("Add", curve, self.constant(1.0)))

    def softplus(self, x: str, beta: float = 1.0, threshold: float = math.inf) -> str:
        """torch's softplus: log(1 + exp(βx))/β, and x itself where βx > threshold."""
        scaled = x if beta == 1.0 else self.op("Mul", x, self.constant(beta))
        y = self.op("Softplus", scaled)
        y = y if beta == 1.0 else self.op("Div", y, self.constant(beta))
        if math.isinf(threshold):
            return y
        return self.op("Where", self.op("Greater", scaled, self.constant(threshold)), x, y)

    def clip(self, x: str, low: float, high: float) -> str:
        return self.op("Clip", x, self.constant(low), self.constant(high))


def _array(tensor: Any, dtype: Any = np.float32) -> np.ndarray:
    return tensor.detach().cpu().double().numpy().astype(dtype)


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _identity(graph: _Graph, layer: nn.Module, x: str) -> str:
    return x


# How each layer is written: (graph, layer, x) → the name of its output. The element-wise
# layers act on (N, features) as they would on any shape; dropout is the identity in eval mode.
_LAYERS: dict[type[nn.Module], Callable[[_Graph, Any, str], str]] = {
    nn.Linear: _Graph.linear,
    nn.BatchNorm1d: _Graph.batchnorm,
    nn.Identity: _identity,
    nn.Flatten: _identity,  # (N, features) with start_dim=1, end_dim=-1 only
    nn.Dropout: _identity,
    nn.Dropout1d: _identity,
    nn.Dropout2d: _identity,
    nn.AlphaDropout: _identity,
    nn.ReLU: lambda g, layer, x: g.op("Relu", x),
    nn.ReLU6: lambda g, layer, x: g.clip(x, 0.0, 6.0),
    nn.Hardtanh: lambda g, layer, x: g.clip(x, layer.min_val, layer.max_val),
    nn.Tanh: lambda g, layer, x: g.op("Tanh", x),
    nn.Sigmoid: lambda g, layer, x: g.op("Sigmoid", x),
    nn.LogSigmoid: lambda g, layer, x: g.op("Neg", g.softplus(g.op("Neg", x))),
    nn.SiLU: lambda g, layer, x: g.op("Mul", x, g.op("Sigmoid", x)),
    nn.Mish: lambda g, layer, x: g.op("Mul", x, g.op("Tanh", g.softplus(x))),
    nn.GELU: _Graph.gelu,
    nn.SELU: lambda g, layer, x: g.op("Selu", x),  # ONNX's default alpha and gamma are torch's
    nn.ELU: lambda g, layer, x: g.op("Elu", x, alpha=float(layer.alpha)),
    nn.CELU: lambda g, layer, x: g.op("Celu", x, alpha=float(layer.alpha)),
    nn.LeakyReLU: lambda g, layer, x: g.op("LeakyRelu", x, alpha=float(layer.negative_slope)),
    nn.PReLU: lambda g, layer, x: g.op("PRelu", x, g.constant(_array(layer.weight), "slope")),  # (features,) or (1,)
    nn.Softplus: lambda g, layer, x: g.softplus(x, float(layer.beta), float(layer.threshold)),
    nn.Softsign: lambda g, layer, x: g.op("Softsign", x),
    nn.Tanhshrink: lambda g, layer, x: g.op("Sub", x, g.op("Tanh", x)),
    nn.Hardswish: lambda g, layer, x: g.op("HardSwish", x),
    nn.Hardsigmoid: lambda g, layer, x: g.op("HardSigmoid", x, alpha=1 / 6, beta=0.5),
    nn.Threshold: lambda g, layer, x: g.op(
        "Where", g.op("Greater", x, g.constant(layer.threshold)), x, g.constant(layer.value)
    ),
    nn.Softshrink: lambda g, layer, x: g.op("Shrink", x, lambd=float(layer.lambd), bias=float(layer.lambd)),
    nn.Hardshrink: lambda g, layer, x: g.op("Shrink", x, lambd=float(layer.lambd), bias=0.0),
}


def _input_doc(column: dict) -> str:
    if column["kind"] == "numeric":
        return f"numeric; NaN for a missing value (imputed with {column['fill']:g})"
    levels = column["levels"]
    shown = ", ".join(map(repr, levels[:10])) + (", …" if len(levels) > 10 else "")
    return f"text, one of {shown}; {MISSING_LEVEL!r} for a missing value; any other value: none of the levels"


def _graph_doc(prep: Any) -> str:
    what = (
        f"prediction: {prep.target['name']} in its units"
        if prep.task == "regression"
        else f"probabilities of the classes {', '.join(prep.classes)}, and the label of the most probable one"
    )
    return f"A shrinkage model of {prep.target['name']} ({prep.task}) with its preprocessing; {what}."

"""Pruned export: zero weights turned into a physically smaller, faster model.

:func:`prune` removes from an MLP (an ``nn.Sequential`` of Linear and element-wise
layers, or a :class:`~shrinkage.models.SkipMLP`) every input feature and hidden unit
that no path of non-zero weights joins to an output:

- an input feature no path leaves: its column goes;
- a unit that reaches no output: it goes, it changes nothing;
- a unit that no input reaches but that reaches an output outputs a constant
  ``act(b)``: that constant is folded into the next layer's bias (exact for any
  element-wise activation), then it goes.

The pruned model takes only the kept features (``report.kept_features``, in order) and
gives the same outputs as the original on any input, to float rounding.
:func:`save_model` / :func:`load_model` write and read weights only (safetensors, the
architecture as a JSON description of whitelisted layers): loading never runs code.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .models import SkipMLP
from .structure import linear_chain, path_masks, reachable_inputs, unwrap
from .validation import InputError, InputTypeError, fail

__all__ = ["PruneReport", "flops_per_sample", "load_model", "model_bytes", "prune", "save_model"]


@dataclass
class PruneReport:
    """What pruning removed, and what it bought."""

    kept_features: list[int]
    kept_feature_names: list[str]
    n_features: int
    widths_before: list[int]
    widths_after: list[int]
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    latency_before_ms: float | None = None
    latency_after_ms: float | None = None
    latency_batch: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def flop_ratio(self) -> float:
        return self.flops_after / self.flops_before if self.flops_before else 1.0

    @property
    def latency_ratio(self) -> float | None:
        if self.latency_before_ms is None or not self.latency_before_ms:
            return None
        if self.latency_after_ms is None:
            raise fail("latency_after_ms", "measured along with latency_before_ms", None)
        return self.latency_after_ms / self.latency_before_ms

    def summary(self) -> str:
        lines = [
            f"input features: {len(self.kept_features)} of {self.n_features} kept",
            f"hidden widths:  {self.widths_before} → {self.widths_after}",
            f"parameters:     {self.params_before:,} → {self.params_after:,}",
            f"FLOPs/sample:   {self.flops_before:,} → {self.flops_after:,} (×{self.flop_ratio:.3f})",
        ]
        if self.latency_before_ms is not None:
            lines.append(
                f"CPU latency:    {self.latency_before_ms:.3f} ms → {self.latency_after_ms:.3f} ms "
                f"(×{self.latency_ratio:.3f}, median, batch of {self.latency_batch})"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------- counting
def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def flops_per_sample(model: nn.Module) -> int:
    """Floating-point operations of one row through the model's Linear layers:
    ``2·in·out`` (a multiply and an add per weight) plus ``out`` for the bias."""
    return sum(
        2 * m.in_features * m.out_features + (m.out_features if m.bias is not None else 0) for m in _linears(model)
    )


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def _latency_ms(models: Sequence[nn.Module], inputs: Sequence[Tensor], repeats: int) -> list[float]:
    """Median milliseconds per forward pass of each model, measured alternately."""
    samples: list[list[float]] = [[] for _ in models]
    for model, x in zip(models, inputs):
        for _ in range(3):  # warm up
            model(x)
    for _ in range(repeats):
        for k, (model, x) in enumerate(zip(models, inputs)):
            start = time.perf_counter()
            model(x)
            samples[k].append(1e3 * (time.perf_counter() - start))
    return [statistics.median(s) for s in samples]


# ---------------------------------------------------------------------- pruning
def _chain_of(model: nn.Module) -> list[nn.Module]:
    chain = linear_chain(model)
    if chain is None:
        raise InputTypeError(
            f"prune supports an nn.Sequential of Linear and element-wise layers (an MLP) or a SkipMLP, "
            f"got {type(model).__name__}"
        )
    assert isinstance(model, nn.Sequential)  # linear_chain accepts only an nn.Sequential
    return list(model)


def _linear(n_in: int, n_out: int, bias: bool, like: Tensor) -> nn.Linear:
    with warnings.catch_warnings():  # a layer left with no units or no inputs is legitimate
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.Linear(n_in, n_out, bias=bias, dtype=like.dtype, device=like.device)


def _slice_elementwise(module: nn.Module, keep: Tensor) -> nn.Module:
    """Element-wise modules carry over; a per-unit PReLU keeps its kept units' slopes."""
    module = copy.deepcopy(module)
    if isinstance(module, nn.PReLU) and module.num_parameters > 1:
        module.weight = nn.Parameter(module.weight.detach()[keep].clone())
        module.num_parameters = int(keep.sum())
    return module


@torch.no_grad()
def _prune_chain(modules: list[nn.Module], inputs: Tensor) -> tuple[nn.Sequential, list[int], list[int]]:
    """Prune a chain given the input features to keep; returns it and the widths before/after."""
    linears = [i for i, m in enumerate(modules) if isinstance(m, nn.Linear)]
    layers = [m for m in modules if isinstance(m, nn.Linear)]  # modules[i] for i in linears
    weights = [layer.weight.detach() for layer in layers]
    biases = [
        layer.bias.detach().clone()
        if layer.bias is not None
        else torch.zeros(layer.out_features, dtype=layer.weight.dtype)
        for layer in layers
    ]
    forward, backward = path_masks(weights)
    outputs = torch.ones(layers[-1].out_features, dtype=torch.bool)
    keep = [inputs] + [f & b for f, b in zip(forward[1:-1], backward[1:-1])] + [outputs]
    # units no input reaches but that reach an output are constants: fold them forward
    for k in range(1, len(layers)):
        constant = (~forward[k]) & backward[k]
        if constant.any():
            act = nn.Sequential(*[m for m in modules[linears[k - 1] + 1 : linears[k]]]).eval()
            values = act(biases[k - 1].unsqueeze(0))[0][constant]  # per-unit activations need all units
            biases[k] += weights[k][:, constant] @ values
    new_modules: list[nn.Module] = []
    for k, index in enumerate(linears):
        rows, cols = keep[k + 1], keep[k]
        linear = _linear(int(cols.sum()), int(rows.sum()), layers[k].bias is not None or k > 0, weights[k])
        linear.weight.copy_(weights[k][rows][:, cols])
        if linear.bias is not None:
            linear.bias.copy_(biases[k][rows])
        new_modules.append(linear)
        end = linears[k + 1] if k + 1 < len(linears) else len(modules)
        new_modules += [_slice_elementwise(m, rows) for m in modules[index + 1 : end]]
    before = [layer.out_features for layer in layers[:-1]]
    after = [int(k.sum()) for k in keep[1:-1]]
    return nn.Sequential(*new_modules), before, after


def prune(
    model: nn.Module,
    *,
    feature_names: Sequence[str] | None = None,
    measure: bool = True,
    batch_size: int = 256,
    repeats: int = 50,
) -> tuple[nn.Module, PruneReport]:
    """A physically smaller copy of ``model`` without its unused inputs and dead units.

    Parameters
    ----------
    model : nn.Sequential MLP or SkipMLP
        Not changed.
    feature_names : sequence of str, optional
        Names of the model's input features, for the report.
    measure : bool, default True
        Time both models on the CPU (median of ``repeats`` alternated forward passes
        on a batch of ``batch_size`` rows).

    Returns
    -------
    (nn.Module, PruneReport)
        The pruned model reads ``x[:, report.kept_features]``.
    """
    was_training = model.training
    model = copy.deepcopy(unwrap(model)).eval()  # a compiled or DDP-wrapped model: its own module
    pruned: nn.Module
    if isinstance(model, SkipMLP):
        kept = sorted(model.input_usage()[0])
        inputs = torch.zeros(model.in_features, dtype=torch.bool)
        inputs[kept] = True
        body, before, after = _prune_chain(list(model.body), inputs)
        pruned = copy.deepcopy(model)
        pruned.body = body
        pruned.skip = _linear(len(kept), model.out_features, False, model.skip.weight)
        with torch.no_grad():
            pruned.skip.weight.copy_(model.skip.weight[:, inputs])
        pruned.in_features, pruned.hidden = len(kept), tuple(after)
        n_features = model.in_features
    else:
        modules = _chain_of(model)
        linears = [m for m in modules if isinstance(m, nn.Linear)]
        kept = reachable_inputs([m.weight for m in linears])
        inputs = torch.zeros(linears[0].in_features, dtype=torch.bool)
        inputs[kept] = True
        pruned, before, after = _prune_chain(modules, inputs)
        n_features = linears[0].in_features
    if feature_names is not None and len(feature_names) != n_features:
        raise fail("feature_names", f"one name per input feature ({n_features})", list(feature_names), verb="have")
    names = [str(feature_names[j]) for j in kept] if feature_names is not None else [f"x{j}" for j in kept]
    report = PruneReport(
        kept_features=kept,
        kept_feature_names=names,
        n_features=n_features,
        widths_before=before,
        widths_after=after,
        params_before=_params(model),
        params_after=_params(pruned),
        flops_before=flops_per_sample(model),
        flops_after=flops_per_sample(pruned),
    )
    if measure:
        dtype = next(model.parameters()).dtype
        x = torch.randn(batch_size, n_features, dtype=dtype)
        report.latency_before_ms, report.latency_after_ms = _latency_ms([model, pruned], [x, x[:, kept]], repeats)
        report.latency_batch = batch_size
    pruned.train(was_training)
    return pruned, report


# ------------------------------------------------------------------ save / load
_ACTIVATIONS = {
    nn.ReLU: "relu",
    nn.Tanh: "tanh",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Sigmoid: "sigmoid",
    nn.Identity: "identity",
}
_BUILD = {name: cls for cls, name in _ACTIVATIONS.items()}


def _describe_chain(modules: Sequence[nn.Module]) -> list[dict]:
    out = []
    for m in modules:
        if isinstance(m, nn.Linear):
            out.append({"type": "linear", "in": m.in_features, "out": m.out_features, "bias": m.bias is not None})
        elif type(m) in _ACTIVATIONS:
            out.append({"type": _ACTIVATIONS[type(m)]})
        elif isinstance(m, nn.Dropout):
            out.append({"type": "dropout", "p": m.p})
        elif isinstance(m, nn.LeakyReLU):
            out.append({"type": "leaky_relu", "negative_slope": m.negative_slope})
        else:
            raise InputTypeError(f"save_model cannot describe a {type(m).__name__} layer")
    return out


def _build_chain(layers: list[dict], dtype: torch.dtype) -> nn.Sequential:
    modules: list[nn.Module] = []
    for layer in layers:
        kind = layer.get("type")
        if kind == "linear":
            modules.append(nn.Linear(int(layer["in"]), int(layer["out"]), bias=bool(layer["bias"]), dtype=dtype))
        elif kind in _BUILD:
            modules.append(_BUILD[kind]())
        elif kind == "dropout":
            modules.append(nn.Dropout(float(layer["p"])))
        elif kind == "leaky_relu":
            modules.append(nn.LeakyReLU(float(layer["negative_slope"])))
        else:
            raise InputError(f"model file describes an unknown layer type {kind!r}")
    return nn.Sequential(*modules)


def _description(model: nn.Module) -> dict:
    if isinstance(model, SkipMLP):
        return {
            "kind": "skip_mlp",
            "body": _describe_chain(list(model.body)),
            "skip": {"in": model.skip.in_features, "out": model.skip.out_features},
        }
    return {"kind": "sequential", "layers": _describe_chain(_chain_of(model))}


def model_bytes(model: nn.Module, *, metadata: dict | None = None) -> bytes:
    """``model`` (an MLP or SkipMLP) as safetensors bytes: weights plus a JSON architecture."""
    from safetensors.torch import save

    description = {"shrinkage_model": _description(model), "metadata": metadata or {}}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return save(tensors, metadata={"shrinkage": json.dumps(description)})


def save_model(model: nn.Module, path: str | Path, *, metadata: dict | None = None) -> Path:
    """Write ``model`` to ``path`` (see :func:`model_bytes`)."""
    path = Path(path)
    try:
        path.write_bytes(model_bytes(model, metadata=metadata))
    except OSError as error:
        raise PermissionError(f"model file {str(path)!r} cannot be written: {error.strerror}") from None
    return path


def load_model(source: str | Path | bytes) -> tuple[nn.Module, dict]:
    """Read a :func:`save_model` file (or :func:`model_bytes`); returns the model and its
    metadata.

    Only tensors and a JSON description of whitelisted layers are read — no pickle,
    so a file cannot run code.
    """
    from safetensors.torch import load

    if isinstance(source, bytes):
        data, where = source, "model bytes"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"model file {str(path)!r} does not exist")
        data, where = path.read_bytes(), f"model file {str(path)!r}"
    try:
        tensors = load(data)
        header = _safetensors_metadata(data).get("shrinkage")
    except Exception as error:  # safetensors raises its own error types for corrupt input
        raise InputError(f"{where} is not a safetensors file: {error}") from None
    if header is None:
        raise InputError(f"{where} has no shrinkage architecture description")
    description = json.loads(header)
    spec = description["shrinkage_model"]
    dtype = next(iter(tensors.values())).dtype if tensors else torch.float32
    if spec["kind"] == "sequential":
        model: nn.Module = _build_chain(spec["layers"], dtype)
    elif spec["kind"] == "skip_mlp":
        body = _build_chain(spec["body"], dtype)
        model = SkipMLP.__new__(SkipMLP)
        nn.Module.__init__(model)
        model.body = body
        model.skip = nn.Linear(int(spec["skip"]["in"]), int(spec["skip"]["out"]), bias=False, dtype=dtype)
        model.in_features, model.out_features = int(spec["skip"]["in"]), int(spec["skip"]["out"])
        model.hidden = tuple(m.out_features for m in body if isinstance(m, nn.Linear))[:-1]
    else:
        raise InputError(f"model file describes an unknown model kind {spec['kind']!r}")
    model.load_state_dict(tensors)
    return model.eval(), description.get("metadata", {})


def _safetensors_metadata(data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors blob (an 8-byte length, then a JSON header)."""
    length = int.from_bytes(data[:8], "little")
    if length <= 0 or length > len(data) - 8:
        raise ValueError("bad header length")
    return json.loads(data[8 : 8 + length]).get("__metadata__", {}) or {}

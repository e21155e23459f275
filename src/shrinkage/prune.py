"""Pruned export: zero weights turned into a physically smaller, faster model.

:func:`prune` removes from a sequential network every input and every unit (a hidden
neuron, or a channel of a CNN) that no path of non-zero weights joins to an output.
It takes an MLP (an ``nn.Sequential`` of Linear and element-wise layers, or a
:class:`~shrinkage.models.SkipMLP`) or a sequential CNN (``Conv1d``/``Conv2d``,
``BatchNorm1d``/``2d`` with running statistics, element-wise layers, max/average/
adaptive pooling, ``Flatten``, ``Linear``):

- an input (feature or channel) no path leaves: its columns go;
- a unit that reaches no output: it goes, it changes nothing;
- a unit that no input reaches but that reaches an output outputs a value that does not
  depend on the input (``act(b)``; for a dead filter, ``act(BN(b))`` over the whole map,
  pooled): its contribution is folded into the next layer's bias where that is exact
  (always for a ``Linear``; for a ``Conv`` when it adds the same value at every position,
  e.g. without zero padding), else one kept channel carries all of them (a zero-padded
  conv sees a constant map as a different value at its borders), then it goes.

The pruned model takes only the kept inputs (``report.kept_features``, in order) and
gives the same outputs as the original on any input, to float rounding (the
bookkeeping runs in float64 on a CPU copy; the pruned model has the original's device
and dtype). :func:`save_model` / :func:`load_model` write and read weights only
(safetensors, the architecture as a JSON description of whitelisted layers): loading
never runs code.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import operator
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from ._files import write_atomically
from .models import SkipMLP
from .structure import ELEMENTWISE, unwrap
from .validation import InputError, InputTypeError, fail

__all__ = ["PruneReport", "SelectColumns", "flops_per_sample", "load_model", "model_bytes", "prune", "save_model"]

_CONVS = (nn.Conv1d, nn.Conv2d)
_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_POOLS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)
#: Relative tolerance (float64) under which a folded contribution counts as the same at every position.
_TOL = 1e-9


@dataclass
class PruneReport:
    """What pruning removed, and what it bought.

    For a CNN the inputs are channels (``input_unit == "channels"``; the pruned model
    reads ``x[:, kept_features]``) and a convolution's width is its number of filters.
    """

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
    input_unit: str = "features"
    latency_device: str = "cpu"

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
            f"input {self.input_unit}: {len(self.kept_features)} of {self.n_features} kept",
            f"hidden widths:  {self.widths_before} → {self.widths_after}",
            f"parameters:     {self.params_before:,} → {self.params_after:,}",
            f"FLOPs/sample:   {self.flops_before:,} → {self.flops_after:,} (×{self.flop_ratio:.3f})",
        ]
        if self.latency_before_ms is not None:
            lines.append(
                f"{self.latency_device.upper()} latency:    {self.latency_before_ms:.3f} ms → "
                f"{self.latency_after_ms:.3f} ms (×{self.latency_ratio:.3f}, median, batch of {self.latency_batch})"
            )
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


# --------------------------------------------------------------------- counting
def _first_tensor(module: nn.Module) -> Tensor | None:
    """The module's first floating-point parameter or buffer (its device and dtype), if any."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    return next((t for t in tensors if t.is_floating_point()), None)


@torch.no_grad()
def _conv_positions(model: nn.Module, input_shape: Sequence[int]) -> dict[int, int]:
    """Output positions (``H_out·W_out``, or ``L_out``) of each conv, from one probe sample.

    Run in eval mode (a BatchNorm's statistics are not touched), then the modes are put back.
    """
    like = _first_tensor(model)
    positions: dict[int, int] = {}
    hooks = [
        m.register_forward_hook(lambda m, _, out: positions.__setitem__(id(m), out[0, 0].numel()))
        for m in model.modules()
        if isinstance(m, _CONVS)
    ]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        x = torch.zeros(1, *input_shape, dtype=like.dtype if like is not None else None, device=_device(model))
        model(x)
    except RuntimeError as error:
        raise _shape_error(input_shape, error) from None
    finally:
        for hook in hooks:
            hook.remove()
        for m, training in modes:
            m.training = training
    return positions


def flops_per_sample(model: nn.Module, input_shape: Sequence[int] | None = None) -> int:
    """Floating-point operations of one sample through the model's Linear and Conv layers.

    A Linear layer costs ``2·in·out`` (a multiply and an add per weight) plus ``out`` for
    the bias; a convolution the same per output position: ``(2·(in/groups)·k + 1)·out·P``
    with ``k`` the kernel's size (``k₁·k₂``), ``P`` the output positions (``H_out·W_out``)
    and the ``+ 1`` only with a bias. Activations, normalization and pooling are not
    counted. ``input_shape`` (one sample, e.g. ``(1, 8, 8)``) is needed for a model with
    convolutions, to know ``P``.
    """
    total = sum(
        2 * m.in_features * m.out_features + (m.out_features if m.bias is not None else 0)
        for m in model.modules()
        if isinstance(m, nn.Linear)
    )
    convs = [m for m in model.modules() if isinstance(m, _CONVS)]
    if convs:
        if input_shape is None:
            raise fail(
                "input_shape", "the shape of one input sample, e.g. (1, 8, 8), for a model with convolutions", None
            )
        positions = _conv_positions(model, _check_shape(input_shape))
        for m in convs:
            taps = math.prod(m.kernel_size) * (m.in_channels // m.groups)
            total += (2 * taps + (1 if m.bias is not None else 0)) * m.out_channels * positions.get(id(m), 0)
    return total


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _device(model: nn.Module) -> torch.device:
    like = _first_tensor(model)
    return like.device if like is not None else torch.device("cpu")


def _synchronize(x: Tensor) -> None:
    if x.device.type == "cuda":  # kernels run asynchronously: wait for them before reading the clock
        torch.cuda.synchronize(x.device)


@torch.no_grad()
def _latency_ms(models: Sequence[nn.Module], inputs: Sequence[Tensor], repeats: int) -> list[float]:
    """Median milliseconds per forward pass of each model, measured alternately."""
    samples: list[list[float]] = [[] for _ in models]
    for model, x in zip(models, inputs):
        for _ in range(3):  # warm up
            model(x)
    for _ in range(repeats):
        for k, (model, x) in enumerate(zip(models, inputs)):
            _synchronize(x)
            start = time.perf_counter()
            model(x)
            _synchronize(x)
            samples[k].append(1e3 * (time.perf_counter() - start))
    return [statistics.median(s) for s in samples]


# ------------------------------------------------------------------ the chain
_SUPPORTED = (
    "prune supports an nn.Sequential of Linear and element-wise layers (an MLP), a SkipMLP, or a sequential "
    "CNN (Conv1d/Conv2d, BatchNorm1d/2d, element-wise layers, pooling, Flatten, Linear)"
)


def _refusal(module: nn.Module, maps: bool, after_weights: bool) -> str | None:
    """Why ``module`` cannot be in a prunable chain (``None`` when it can); ``maps``: the
    values are feature maps (a CNN before its Flatten)."""
    if isinstance(module, _CONVS):
        if not maps:
            return "comes after the Flatten"
        return "is a grouped convolution (groups != 1)" if module.groups != 1 else None
    if isinstance(module, nn.Linear):
        return "reads feature maps (put a Flatten before it)" if maps else None
    if isinstance(module, _NORMS):
        if module.running_mean is None or module.running_var is None:
            return "normalizes with batch statistics (track_running_stats=False)"
        return "normalizes feature maps after the Flatten" if isinstance(module, nn.BatchNorm2d) and not maps else None
    if isinstance(module, _POOLS):
        if not maps:
            return "pools after the Flatten"
        return "returns indices" if getattr(module, "return_indices", False) else None
    if isinstance(module, nn.Flatten):
        if not maps or not after_weights:
            return "is a Flatten that does not follow a Conv"
        return "flattens other dimensions than 1 to -1" if (module.start_dim, module.end_dim) != (1, -1) else None
    return None if isinstance(module, ELEMENTWISE) else "is not one of these layers"


def _chain_of(model: nn.Module) -> list[nn.Module]:
    """The modules of a prunable ``nn.Sequential`` (raises a clear error for anything else)."""
    if not isinstance(model, nn.Sequential):
        raise InputTypeError(f"{_SUPPORTED}, got {type(model).__name__}")
    modules = list(model)
    if not any(isinstance(m, _WEIGHTED) for m in modules):
        raise InputTypeError(f"{_SUPPORTED}, got an nn.Sequential without Linear or Conv layers")
    maps, after_weights = any(isinstance(m, _CONVS) for m in modules), False
    for i, module in enumerate(modules):
        problem = _refusal(module, maps, after_weights)
        if problem is not None:
            raise InputTypeError(f"{_SUPPORTED}; layer {i} ({type(module).__name__}) {problem}")
        maps = maps and not isinstance(module, nn.Flatten)
        after_weights = after_weights or isinstance(module, _WEIGHTED)
    return modules


def _check_shape(shape: Any) -> tuple[int, ...]:
    rule = "the shape of one input sample (a tuple of positive integers such as (1, 8, 8))"
    try:
        parsed = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise fail("input_shape", rule, shape, kind=TypeError) from None
    if not parsed or any(n <= 0 for n in parsed) or any(isinstance(n, bool) for n in shape):
        raise fail("input_shape", rule, shape)
    return parsed


def _shape_error(shape: Sequence[int], error: Exception) -> InputError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return InputError(f"input_shape must be the shape of one sample the model accepts, got {tuple(shape)} ({first})")


def _input_shape_of(modules: list[nn.Module], given: Any) -> tuple[int, ...]:
    """One sample's shape: ``(in_features,)`` for an MLP, the given ``(C, *spatial)`` for a CNN."""
    first = next(m for m in modules if isinstance(m, _WEIGHTED))
    if isinstance(first, nn.Linear):
        if given is not None and _check_shape(given) != (first.in_features,):
            raise fail("input_shape", f"({first.in_features},) for a model whose first layer is a Linear", given)
        return (first.in_features,)
    rule = f"(channels, *spatial) of one input sample with {first.in_channels} channel(s) for this CNN"
    if given is None:
        raise fail("input_shape", rule + ", e.g. (1, 8, 8)", None)
    shape = _check_shape(given)
    if len(shape) != first.weight.ndim - 1 or shape[0] != first.in_channels:
        raise fail("input_shape", rule, given)
    return shape


# ---------------------------------------------------------------------- pruning
def _linear(n_in: int, n_out: int, bias: bool, like: Tensor) -> nn.Linear:
    with warnings.catch_warnings():  # a layer left with no units or no inputs is legitimate
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.Linear(n_in, n_out, bias=bias, dtype=like.dtype, device=like.device)


def _resized(module: nn.Module, n_in: int, n_out: int, bias: bool) -> nn.Linear | nn.Conv1d | nn.Conv2d:
    """A new float64 CPU layer like ``module`` (Linear or Conv) with other widths."""
    if isinstance(module, nn.Linear):
        return _linear(n_in, n_out, bias, torch.zeros((), dtype=torch.float64))
    conv = nn.Conv1d if isinstance(module, nn.Conv1d) else nn.Conv2d
    return conv(
        n_in,
        n_out,
        module.kernel_size,  # type: ignore[arg-type]
        stride=module.stride,  # type: ignore[arg-type]
        padding=module.padding,  # type: ignore[arg-type]
        dilation=module.dilation,  # type: ignore[arg-type]
        bias=bias,
        padding_mode=module.padding_mode,  # type: ignore[arg-type]
        dtype=torch.float64,
    )


def _sliced(module: nn.Module, keep: Tensor) -> nn.Module:
    """A per-unit module (BatchNorm, per-unit PReLU) for the kept units; others carry over."""
    module = copy.deepcopy(module)
    if isinstance(module, nn.PReLU) and module.num_parameters > 1:
        module.weight = nn.Parameter(module.weight.detach()[keep].clone())
        module.num_parameters = int(keep.sum())
    elif isinstance(module, _NORMS):
        for name in ("weight", "bias"):
            if getattr(module, name) is not None:
                setattr(module, name, nn.Parameter(getattr(module, name).detach()[keep].clone()))
        for name in ("running_mean", "running_var"):
            setattr(module, name, getattr(module, name)[keep].clone())
        module.num_features = int(keep.sum())
    return module


def _weight_mask(weight: Tensor) -> Tensor:
    """``(out, in)`` booleans: which input unit a unit reads through a non-zero weight (any kernel tap)."""
    return (weight != 0).flatten(2).any(2) if weight.ndim > 2 else weight != 0


def _passes(between: Sequence[nn.Module], units: int) -> Tensor:
    """Units whose value still depends on their layer's output: a BatchNorm with γ = 0
    makes a channel the constant β."""
    mask = torch.ones(units, dtype=torch.bool)
    for module in between:
        if isinstance(module, nn.Flatten):
            break
        if isinstance(module, _NORMS) and module.weight is not None:
            mask &= module.weight.detach() != 0
    return mask


@dataclass
class _Chain:
    """A chain's weighted layers and what flows between them, in float64 on the CPU.

    Boundary ``b`` is the input of weighted layer ``b`` (``b = 0``: the model's input;
    ``b = L``: the outputs). Its units are channels or features; the next layer reads
    each unit through ``spread[b]`` columns (``H·W`` after a Flatten, else 1).
    """

    modules: list[nn.Module]
    at: list[int]  # positions of the weighted layers in modules
    weights: list[Tensor]  # (out, in, *kernel), modified where constants are carried
    biases: list[Tensor]  # (out,), zeros where a layer has none, constants folded in
    spread: list[int]
    probes: list[Tensor]  # the input of each weighted layer for one sample of zeros

    def columns(self, units: Tensor, b: int) -> Tensor:
        return units.repeat_interleave(self.spread[b])

    def units(self, columns: Tensor, b: int) -> Tensor:
        return columns.view(-1, self.spread[b]).any(1)


def _analyse(modules: list[nn.Module], input_shape: Sequence[int]) -> _Chain:
    ref = [copy.deepcopy(m).to("cpu", torch.float64) for m in modules]
    at = [i for i, m in enumerate(ref) if isinstance(m, _WEIGHTED)]
    probes, x = [], torch.zeros(1, *input_shape, dtype=torch.float64)
    try:
        for i, module in enumerate(ref):
            if i in at:
                probes.append(x)
            x = module(x)
    except RuntimeError as error:
        raise _shape_error(input_shape, error) from None
    layers = [cast(nn.Linear | nn.Conv1d | nn.Conv2d, ref[i]) for i in at]
    weights = [layer.weight.detach().clone() for layer in layers]
    biases = [
        layer.bias.detach().clone() if layer.bias is not None else w.new_zeros(w.shape[0])
        for layer, w in zip(layers, weights)
    ]
    # (a layer left with no units, from a network pruned to nothing and pruned again: 1)
    spread = [1] + [
        weights[k].shape[1] // weights[k - 1].shape[0] if weights[k - 1].shape[0] else 1 for k in range(1, len(at))
    ]
    return _Chain(ref, at, weights, biases, spread, probes)


def _reach(chain: _Chain) -> tuple[list[Tensor], list[Tensor]]:
    """Per boundary, the units some input reaches and the units that reach some output."""
    n = len(chain.at)
    masks = [_weight_mask(w) for w in chain.weights]
    passes = [
        _passes(chain.modules[chain.at[b - 1] + 1 : chain.at[b]], chain.weights[b - 1].shape[0]) for b in range(1, n)
    ]
    forward = [torch.ones(chain.weights[0].shape[1], dtype=torch.bool)]
    for k in range(n):
        reached = (masks[k] & chain.columns(forward[k], k)).any(1)
        forward.append(reached & passes[k] if k + 1 < n else reached)
    backward = [torch.ones(chain.weights[-1].shape[0], dtype=torch.bool)]
    for k in reversed(range(n)):
        live = backward[0] & passes[k] if k + 1 < n else backward[0]
        backward.insert(0, chain.units((masks[k] & live[:, None]).any(0), k))
    return forward, backward


def _fold_into_conv(conv: nn.Module, weight: Tensor, bias: Tensor, maps: Tensor, fold: Tensor) -> tuple[Tensor, str]:
    """Remove the input channels ``fold`` (their maps, ``maps[0, fold]``, do not depend on
    the input) from a convolution: returns the channels that must stay, and a note.

    Their contribution is folded into ``bias`` when it is the same at every output
    position; else (a zero-padded conv sees a constant map as a smaller sum at its
    borders) one of them stays and carries all of them, when their maps are multiples of
    its map; else all those with a non-zero map stay. ``weight`` and ``bias`` change in place.
    """
    shape = (1, -1) + (1,) * (maps.ndim - 2)
    conv_forward: Callable[..., Tensor] = conv._conv_forward  # type: ignore[assignment]
    added = conv_forward(maps * fold.view(shape), weight, None).flatten(2)[0]  # (out, positions)
    scale = 1.0 + float(added.abs().max())
    none = torch.zeros_like(fold)
    if float((added.amax(1) - added.amin(1)).max()) <= _TOL * scale:
        bias += added.mean(1)
        return none, ""
    flat = maps[0].flatten(1)  # (channels, positions)
    carriers = fold & (flat != 0).any(1)
    r = int(carriers.nonzero()[0])
    alpha = (flat[carriers] @ flat[r]) / (flat[r] @ flat[r])  # map_c = α_c·map_r for each carrier c
    merged = weight.clone()
    merged[:, r] = (weight[:, carriers] * alpha.view(1, -1, *shape[2:])).sum(1)
    only_r = maps * (torch.arange(len(fold)) == r).view(shape)
    if float((conv_forward(only_r, merged, None).flatten(2)[0] - added).abs().max()) <= _TOL * scale:
        weight[:, r] = merged[:, r]
        keep = none.clone()
        keep[r] = True
        n = int(carriers.sum())
        return keep, f"channel {r} kept to carry the constant output of {n} dead filter(s) into a zero-padded conv"
    return carriers, f"{int(carriers.sum())} dead filter(s) kept: their constant maps are not multiples of one map"


@dataclass
class _Pruned:
    model: nn.Sequential
    inputs: Tensor  # kept inputs (boolean)
    widths_before: list[int]
    widths_after: list[int]
    notes: list[str]


@torch.no_grad()
def _prune_sequence(modules: list[nn.Module], input_shape: Sequence[int], inputs: Tensor | None = None) -> _Pruned:
    """Prune a chain (``inputs``: the inputs to keep, else those that reach an output)."""
    chain = _analyse(modules, input_shape)
    n = len(chain.at)
    forward, backward = _reach(chain)
    keep = [backward[0] if inputs is None else inputs.cpu()]
    keep += [forward[b] & backward[b] for b in range(1, n)] + [backward[n]]
    notes: list[str] = []
    # units no input reaches but that reach an output have input-independent values: fold them forward
    for b in range(1, n):
        fold = ~forward[b] & backward[b]
        layer, maps = chain.modules[chain.at[b]], chain.probes[b]
        if isinstance(layer, nn.Linear):
            columns = chain.columns(fold, b)
            chain.biases[b] += chain.weights[b][:, columns] @ maps[0, columns]
        elif fold.any():
            stay, note = _fold_into_conv(layer, chain.weights[b], chain.biases[b], maps, fold)
            keep[b] |= stay
            notes += [f"layer {chain.at[b]}: {note}"] if note else []
    # a convolution cannot have zero channels: keep one whose columns are zeroed
    for b in range(n):
        convs = isinstance(chain.modules[chain.at[b]], _CONVS) or (
            b > 0 and isinstance(chain.modules[chain.at[b - 1]], _CONVS)
        )
        if convs and not keep[b].any():
            keep[b][0] = True
            chain.weights[b][:, chain.columns(keep[b], b)] = 0
            notes.append(f"layer {chain.at[b]}: one unused channel kept (a convolution needs one), its weights zero")
    pruned: list[nn.Module] = []
    for b in range(n + 1):  # the modules before weighted layer b (b = n: after the last)
        start = chain.at[b - 1] + 1 if b > 0 else 0
        stop = chain.at[b] if b < n else len(modules)
        if b == n:  # every output is kept
            pruned += [copy.deepcopy(m) for m in chain.modules[start:stop]]
            break
        units = keep[b]
        for i in range(start, stop):
            if isinstance(chain.modules[i], nn.Flatten):
                units = chain.columns(units, b)  # channel c of (C, H, W) is columns c·H·W … (c+1)·H·W − 1
            pruned.append(_sliced(chain.modules[i], units))
        rows, columns = keep[b + 1], chain.columns(keep[b], b)
        weight, bias = chain.weights[b][rows][:, columns], chain.biases[b][rows]
        source = chain.modules[chain.at[b]]
        layer = _resized(source, int(columns.sum()), int(rows.sum()), source.bias is not None or bool(bias.any()))
        layer.weight.copy_(weight)
        if layer.bias is not None:
            layer.bias.copy_(bias)
        pruned.append(layer)
    for new, old in zip(pruned, modules):  # back to each layer's own device and dtype
        like = _first_tensor(old)
        if like is not None:
            new.to(device=like.device, dtype=like.dtype)
    widths = (chain.weights[b].shape[0] for b in range(n - 1))
    return _Pruned(nn.Sequential(*pruned), keep[0], list(widths), [int(k.sum()) for k in keep[1:-1]], notes)


def prune(
    model: nn.Module,
    *,
    input_shape: Sequence[int] | None = None,
    feature_names: Sequence[str] | None = None,
    measure: bool = True,
    batch_size: int = 256,
    repeats: int = 50,
) -> tuple[nn.Module, PruneReport]:
    """A physically smaller copy of ``model`` without its unused inputs and dead units.

    Parameters
    ----------
    model : nn.Sequential (MLP or CNN) or SkipMLP
        Not changed. A CNN is an ``nn.Sequential`` of ``Conv1d``/``Conv2d`` (``groups=1``),
        ``BatchNorm1d``/``2d`` (its running statistics are used: the model is pruned as in
        eval mode), element-wise layers, max/average/adaptive pooling, one ``Flatten`` and
        ``Linear`` layers. A filter is dead when it reads only zero weights (e.g. after a
        ``GroupLasso(groups="filter")``) or its BatchNorm has ``γ = 0``; its output does
        not depend on the input and is folded exactly into the next layer.
    input_shape : sequence of int, optional
        The shape of one sample without the batch dimension, e.g. ``(1, 8, 8)`` for 8×8
        grey images. Needed for a CNN (the spatial sizes of the maps: the columns of a
        flattened channel, the constants of dead filters, FLOPs, the timing batch); for
        an MLP it is ``(n_features,)``.
    feature_names : sequence of str, optional
        Names of the model's inputs (features, or a CNN's input channels), for the report.
    measure : bool, default True
        Time both models on the model's device (median of ``repeats`` alternated forward
        passes on a batch of ``batch_size`` samples).

    Returns
    -------
    (nn.Module, PruneReport)
        The pruned model (on the model's device and dtype) reads ``x[:, report.kept_features]``
        (kept input features, or a CNN's kept input channels) and gives the same outputs.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    >>> with torch.no_grad():
    ...     cnn[0].weight[1:3] = 0  # two dead filters (their biases are folded into the Linear)
    >>> small, report = prune(cnn, input_shape=(1, 8, 8), measure=False)
    >>> report.widths_before, report.widths_after, small[3].in_features
    ([4], [2], 72)
    >>> x = torch.randn(5, 1, 8, 8)
    >>> bool(torch.allclose(small(x[:, report.kept_features]), cnn(x), atol=1e-6))
    True
    """
    was_training = model.training
    model = copy.deepcopy(unwrap(model)).eval()  # a compiled or DDP-wrapped model: its own module
    pruned: nn.Module
    unit = "features"
    if isinstance(model, SkipMLP):
        if input_shape is not None and _check_shape(input_shape) != (model.in_features,):
            raise fail("input_shape", f"({model.in_features},) for a SkipMLP", input_shape)
        shape: tuple[int, ...] = (model.in_features,)
        inputs = torch.zeros(model.in_features, dtype=torch.bool)
        inputs[sorted(model.input_usage()[0])] = True
        body = _prune_sequence(list(model.body), shape, inputs)
        pruned = copy.deepcopy(model)
        pruned.body = body.model
        pruned.skip = _linear(int(inputs.sum()), model.out_features, False, model.skip.weight)
        with torch.no_grad():
            pruned.skip.weight.copy_(model.skip.weight[:, inputs.to(model.skip.weight.device)])
        pruned.in_features, pruned.hidden = int(inputs.sum()), tuple(body.widths_after)
        result = body
    else:
        modules = _chain_of(model)
        shape = _input_shape_of(modules, input_shape)
        result = _prune_sequence(modules, shape)
        pruned = result.model
        if isinstance(next(m for m in modules if isinstance(m, _WEIGHTED)), _CONVS):
            unit = "channels"
    kept = result.inputs.nonzero().flatten().tolist()
    n_features = shape[0]
    if feature_names is not None and len(feature_names) != n_features:
        raise fail("feature_names", f"one name per input {unit[:-1]} ({n_features})", list(feature_names), verb="have")
    names = [str(feature_names[j]) for j in kept] if feature_names is not None else [f"x{j}" for j in kept]
    pruned_shape = (len(kept), *shape[1:])
    report = PruneReport(
        kept_features=kept,
        kept_feature_names=names,
        n_features=n_features,
        widths_before=result.widths_before,
        widths_after=result.widths_after,
        params_before=_params(model),
        params_after=_params(pruned),
        flops_before=flops_per_sample(model, shape),
        flops_after=flops_per_sample(pruned, pruned_shape),
        notes=result.notes,
        input_unit=unit,
    )
    if measure:
        like = _first_tensor(model)
        x = torch.randn(batch_size, *shape, dtype=like.dtype if like is not None else None, device=_device(model))
        report.latency_before_ms, report.latency_after_ms = _latency_ms([model, pruned], [x, x[:, kept]], repeats)
        report.latency_batch, report.latency_device = batch_size, x.device.type
    pruned.train(was_training)
    return pruned, report


class SelectColumns(nn.Module):
    """``module(x[:, columns])``: a pruned network that reads the full input.

    :func:`prune` gives a model that reads only the kept inputs; wrapped in this module
    it takes the same input as the original model again (the estimators' ``prune()``
    keeps their network this way). Dimension 1 is indexed: the features of a table, the
    channels of an image batch.

    Parameters
    ----------
    columns : sequence of int
        The input positions ``module`` reads, in its order (``report.kept_features``);
        empty for a model that reads none (its output is then a constant).
    module : nn.Module
        The network; ``self.module``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    >>> with torch.no_grad():
    ...     net[0].weight[:, 1:3] = 0  # inputs 1 and 2 unused
    >>> small, report = prune(net, measure=False)
    >>> full = SelectColumns(report.kept_features, small)
    >>> full
    SelectColumns(
      columns=[0, 3]
      (module): Sequential(...)
    )
    >>> x = torch.randn(5, 4)
    >>> bool(torch.allclose(full(x), net(x), atol=1e-6))
    True
    """

    columns: list[int]
    module: nn.Module
    index: Tensor  # columns, as a tensor on the module's device

    def __init__(self, columns: Sequence[int], module: nn.Module):
        super().__init__()
        rule = "a sequence of distinct integers >= 0"
        try:
            parsed = [operator.index(c) for c in columns if not isinstance(c, bool)]
        except TypeError:
            raise fail("columns", rule, columns, kind=TypeError) from None
        if len(parsed) != len(columns) or any(c < 0 for c in parsed) or len(set(parsed)) != len(parsed):
            raise fail("columns", rule, columns)
        if not isinstance(module, nn.Module):
            raise fail("module", "an nn.Module", module, kind=TypeError)
        self.columns = parsed
        self.module = module
        # architecture, like a Linear's in_features: a buffer that follows .to(device), not in the state_dict
        index = torch.tensor(parsed, dtype=torch.long, device=_device(module))
        self.register_buffer("index", index, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.index_select(1, self.index))

    def extra_repr(self) -> str:
        return f"columns={self.columns}"


# ------------------------------------------------------------------ save / load
_ACTIVATIONS = {  # element-wise layers without settings
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",
    nn.Tanh: "tanh",
    nn.SiLU: "silu",
    nn.Mish: "mish",
    nn.SELU: "selu",
    nn.Sigmoid: "sigmoid",
    nn.LogSigmoid: "logsigmoid",
    nn.Hardswish: "hardswish",
    nn.Hardsigmoid: "hardsigmoid",
    nn.Softsign: "softsign",
    nn.Tanhshrink: "tanhshrink",
    nn.Identity: "identity",
}

# A layer's JSON description: its type and {key: (constructor argument, kind of value)}.
_CONV_FIELDS = {
    "in": ("in_channels", "count"),
    "out": ("out_channels", "count"),
    "kernel_size": ("kernel_size", "size"),
    "stride": ("stride", "size"),
    "padding": ("padding", "padding"),
    "dilation": ("dilation", "size"),
    "groups": ("groups", "count"),
    "bias": ("bias", "bool"),
    "padding_mode": ("padding_mode", "str"),
}
_NORM_FIELDS = {
    "num_features": ("num_features", "count"),
    "eps": ("eps", "float"),
    "momentum": ("momentum", "float?"),
    "affine": ("affine", "bool"),
    "track_running_stats": ("track_running_stats", "bool"),
}
_MAXPOOL_FIELDS = {
    "kernel_size": ("kernel_size", "size"),
    "stride": ("stride", "size"),
    "padding": ("padding", "size"),
    "dilation": ("dilation", "size"),
    "ceil_mode": ("ceil_mode", "bool"),
}
_AVGPOOL_FIELDS = {
    "kernel_size": ("kernel_size", "size"),
    "stride": ("stride", "size"),
    "padding": ("padding", "size"),
    "ceil_mode": ("ceil_mode", "bool"),
    "count_include_pad": ("count_include_pad", "bool"),
}
_ADAPTIVE_FIELDS = {"output_size": ("output_size", "output_size")}
_LAYERS: dict[str, tuple[type[nn.Module], dict[str, tuple[str, str]]]] = {
    "linear": (nn.Linear, {"in": ("in_features", "count"), "out": ("out_features", "count"), "bias": ("bias", "bool")}),
    "conv1d": (nn.Conv1d, _CONV_FIELDS),
    "conv2d": (nn.Conv2d, _CONV_FIELDS),
    "batchnorm1d": (nn.BatchNorm1d, _NORM_FIELDS),
    "batchnorm2d": (nn.BatchNorm2d, _NORM_FIELDS),
    "maxpool1d": (nn.MaxPool1d, _MAXPOOL_FIELDS),
    "maxpool2d": (nn.MaxPool2d, _MAXPOOL_FIELDS),
    "avgpool1d": (nn.AvgPool1d, _AVGPOOL_FIELDS),
    "avgpool2d": (nn.AvgPool2d, {**_AVGPOOL_FIELDS, "divisor_override": ("divisor_override", "count?")}),
    "adaptive_avgpool1d": (nn.AdaptiveAvgPool1d, _ADAPTIVE_FIELDS),
    "adaptive_avgpool2d": (nn.AdaptiveAvgPool2d, _ADAPTIVE_FIELDS),
    "adaptive_maxpool1d": (nn.AdaptiveMaxPool1d, _ADAPTIVE_FIELDS),
    "adaptive_maxpool2d": (nn.AdaptiveMaxPool2d, _ADAPTIVE_FIELDS),
    "flatten": (nn.Flatten, {"start_dim": ("start_dim", "int"), "end_dim": ("end_dim", "int")}),
    "prelu": (nn.PReLU, {"num_parameters": ("num_parameters", "count")}),
    "dropout": (nn.Dropout, {"p": ("p", "float")}),
    "dropout1d": (nn.Dropout1d, {"p": ("p", "float")}),
    "dropout2d": (nn.Dropout2d, {"p": ("p", "float")}),
    "leaky_relu": (nn.LeakyReLU, {"negative_slope": ("negative_slope", "float")}),
    "gelu": (nn.GELU, {"approximate": ("approximate", "gelu")}),
    "elu": (nn.ELU, {"alpha": ("alpha", "float")}),
    "celu": (nn.CELU, {"alpha": ("alpha", "float")}),
    "softplus": (nn.Softplus, {"beta": ("beta", "float"), "threshold": ("threshold", "float")}),
    "hardtanh": (nn.Hardtanh, {"min_val": ("min_val", "float"), "max_val": ("max_val", "float")}),
    "threshold": (nn.Threshold, {"threshold": ("threshold", "float"), "value": ("value", "float")}),
    "softshrink": (nn.Softshrink, {"lambd": ("lambd", "float")}),
    "hardshrink": (nn.Hardshrink, {"lambd": ("lambd", "float")}),
    "alpha_dropout": (nn.AlphaDropout, {"p": ("p", "float")}),
    **{name: (cls, {}) for cls, name in _ACTIVATIONS.items()},
}
_WITH_TENSORS = (nn.Linear, *_CONVS, *_NORMS, nn.PReLU)  # built on the meta device, then given the file's tensors


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _describe_layer(module: nn.Module) -> dict:
    kind = next((name for name, (cls, _) in _LAYERS.items() if type(module) is cls), None)
    if kind is None or (isinstance(module, _POOLS) and getattr(module, "return_indices", False)):
        known = ", ".join(sorted({cls.__name__ for cls, _ in _LAYERS.values()}))
        raise InputTypeError(
            f"save_model cannot describe the layer {type(module).__name__}"
            f"{' with return_indices=True' if kind is not None else ''}; it describes: {known}"
        )
    fields = _LAYERS[kind][1]
    out: dict[str, Any] = {"type": kind}
    for key, (argument, _) in fields.items():
        value = getattr(module, argument)
        out[key] = (value is not None) if argument == "bias" else _json_value(value)  # bias: a tensor or None
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_KINDS: dict[str, Callable[[Any], bool]] = {
    "count": lambda v: _is_int(v) and v >= 0,
    "count?": lambda v: v is None or (_is_int(v) and v > 0),
    "int": _is_int,
    "bool": lambda v: isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "float?": lambda v: v is None or _KINDS["float"](v),
    "str": lambda v: isinstance(v, str),
    "gelu": lambda v: v in ("none", "tanh"),
    "size": lambda v: _is_int(v) or (isinstance(v, list) and 0 < len(v) <= 3 and all(_is_int(n) for n in v)),
    "padding": lambda v: v in ("same", "valid") or _KINDS["size"](v),
    "output_size": lambda v: (
        v is None or _is_int(v) or (isinstance(v, list) and 0 < len(v) <= 3 and all(n is None or _is_int(n) for n in v))
    ),
}


def _build_layer(layer: Any) -> nn.Module:
    """One whitelisted layer from its JSON description, with its tensors on the meta device."""
    if not isinstance(layer, dict) or not isinstance(layer.get("type"), str) or layer["type"] not in _LAYERS:
        kind = layer.get("type") if isinstance(layer, dict) else layer
        raise InputError(f"model file describes an unknown layer type {kind!r}")
    cls, fields = _LAYERS[layer["type"]]
    unknown = sorted(set(layer) - set(fields) - {"type"})
    if unknown:
        raise InputError(f"model file describes a {layer['type']} layer with unknown field(s) {unknown}")
    arguments = {}
    for key, (argument, kind) in fields.items():
        if key not in layer or not _KINDS[kind](layer[key]):
            raise InputError(f"model file describes a {layer['type']} layer with a bad {key!r}: {layer.get(key)!r}")
        value = layer[key]
        arguments[argument] = tuple(value) if isinstance(value, list) else value
    if issubclass(cls, _WITH_TENSORS):
        arguments["device"] = "meta"  # nothing is allocated before the file's tensors are checked against it
    try:
        return cls(**arguments)
    except (TypeError, ValueError, RuntimeError) as error:
        raise InputError(f"model file describes a {layer['type']} layer that torch refuses: {error}") from None


def _build_chain(layers: Any) -> nn.Sequential:
    if not isinstance(layers, list):
        raise InputError(f"model file describes its layers as {type(layers).__name__}, not a list")
    return nn.Sequential(*[_build_layer(layer) for layer in layers])


def _description(model: nn.Module) -> dict:
    if isinstance(model, SkipMLP):
        return {
            "kind": "skip_mlp",
            "body": [_describe_layer(m) for m in model.body],
            "skip": {"in": model.skip.in_features, "out": model.skip.out_features},
        }
    if not isinstance(model, nn.Sequential):
        raise InputTypeError(f"save_model saves an nn.Sequential or a SkipMLP, got {type(model).__name__}")
    return {"kind": "sequential", "layers": [_describe_layer(m) for m in model]}


def model_bytes(model: nn.Module, *, metadata: dict | None = None) -> bytes:
    """``model`` (an MLP, a sequential CNN or a SkipMLP) as safetensors bytes: weights
    plus a JSON architecture."""
    from safetensors.torch import save

    model = unwrap(model)
    description = {"shrinkage_model": _description(model), "metadata": metadata or {}}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return save(tensors, metadata={"shrinkage": json.dumps(description)})


def save_model(model: nn.Module, path: str | Path, *, metadata: dict | None = None) -> Path:
    """Write ``model`` to ``path`` (see :func:`model_bytes`), whole or not at all (through
    a temporary file renamed into place)."""
    return write_atomically(Path(path), model_bytes(model, metadata=metadata), what="model file")


def _build_model(spec: Any) -> nn.Module:
    """The described model with its tensors on the meta device (nothing allocated yet)."""
    if not isinstance(spec, dict):
        raise InputError(f"model file describes its model as {type(spec).__name__}, not an object")
    if spec.get("kind") == "sequential":
        return _build_chain(spec.get("layers"))
    if spec.get("kind") != "skip_mlp":
        raise InputError(f"model file describes an unknown model kind {spec.get('kind')!r}")
    body = _build_chain(spec.get("body"))
    skip = spec.get("skip")
    if not isinstance(skip, dict) or not all(_KINDS["count"](skip.get(key)) for key in ("in", "out")):
        raise InputError(f"model file describes a bad skip layer: {skip!r}")
    model = SkipMLP.__new__(SkipMLP)
    nn.Module.__init__(model)
    model.body = body
    model.skip = nn.Linear(skip["in"], skip["out"], bias=False, device="meta")
    model.in_features, model.out_features = skip["in"], skip["out"]
    model.hidden = tuple(m.out_features for m in body if isinstance(m, nn.Linear))[:-1]
    return model


def load_model(source: str | Path | bytes) -> tuple[nn.Module, dict]:
    """Read a :func:`save_model` file (or :func:`model_bytes`); returns the model and its
    metadata.

    Only tensors and a JSON description of whitelisted layers are read — no pickle,
    so a file cannot run code. The description is checked field by field and the model
    is built without memory (on the meta device) until its tensors' names and shapes
    match the file's.
    """
    from safetensors.torch import load

    if isinstance(source, bytes):
        data, where = source, "model bytes"
    else:
        path = Path(source)
        if path.is_dir():
            raise InputError(f"model file {str(path)!r} is a folder: name a model file")
        if not path.is_file():
            raise FileNotFoundError(f"model file {str(path)!r} does not exist")
        data, where = path.read_bytes(), f"model file {str(path)!r}"
    try:
        tensors = load(data)
        header = _safetensors_metadata(data).get("shrinkage")
    except Exception as error:  # safetensors raises its own error types for corrupt input
        if not isinstance(source, bytes) and Path(source).suffix.lower() == ".onnx":
            raise InputError(
                f"{where} is an ONNX file, for ONNX runtimes (onnxruntime); this reads the safetensors "
                "model file that `shrinkage export` writes without --format onnx"
            ) from None
        raise InputError(f"{where} is not a safetensors file: {error}") from None
    if header is None:
        raise InputError(f"{where} has no shrinkage architecture description")
    try:
        description = json.loads(header)
        spec = description["shrinkage_model"]
    except (ValueError, TypeError, KeyError):
        raise InputError(f"{where} has a malformed architecture description") from None
    model = _build_model(spec)
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())  # one line
        raise InputError(f"{where} holds tensors that do not match its description: {detail}") from None
    metadata = description.get("metadata", {}) if isinstance(description, dict) else {}
    return model.eval(), metadata if isinstance(metadata, dict) else {}


def _safetensors_metadata(data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors blob (an 8-byte length, then a JSON header)."""
    length = int.from_bytes(data[:8], "little")
    if length <= 0 or length > len(data) - 8:
        raise ValueError("bad header length")
    return json.loads(data[8 : 8 + length]).get("__metadata__", {}) or {}

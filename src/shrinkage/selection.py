"""Which tensors a penalty touches — kept apart from what the penalty computes.

A *selector* is one of:

- ``None`` — the default: the weights of layers (Linear, Conv, Embedding, the
  ``in_proj_weight`` of ``nn.MultiheadAttention``, the ``weight_ih_l0`` of an LSTM, a
  custom layer's ``weight``), that is every trainable parameter with ``ndim >= 2``
  whose own name contains ``"weight"`` and that does not belong to a normalization
  layer (a parametrized weight, ``….parametrizations.weight.original``, counts by the
  name it parametrizes). Biases and normalization parameters are never selected by
  default, and neither are free parameters with other names — a positional embedding
  ``pos_embedding``, a ``cls_token`` — which are not layer weights; a name pattern
  selects them when they should be penalized.
- a string or list of strings — parameter-name patterns (:mod:`fnmatch` globs such as
  ``"encoder.*.weight"``, or exact names); biases are selected only if a pattern names
  them.
- an ``nn.Module`` subclass, or a tuple or list of them — the non-bias parameters held
  directly by modules of those types.
- a callable ``(name, parameter, module) -> bool``.

Frozen parameters (``requires_grad=False``) are never selected: a penalty cannot move
them. A selector that matches nothing is an error, naming the selector and the model's
parameters.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from torch import nn
from torch.nn.utils.parametrize import ParametrizationList

from .validation import InputError, InputTypeError, fail

__all__ = ["NORM_LAYERS", "Selector", "describe_selector", "select_parameters", "selector_from_config"]

Selector = (
    None
    | str
    | Sequence[str]
    | type[nn.Module]
    | tuple[type[nn.Module], ...]
    | Callable[[str, nn.Parameter, nn.Module], bool]
)

NORM_LAYERS: tuple[type[nn.Module], ...] = tuple(
    cls
    for cls in (
        nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm
        nn.LayerNorm,
        nn.GroupNorm,
        nn.LocalResponseNorm,
        getattr(nn, "RMSNorm", None),
    )
    if cls is not None
)

_RULE = "None, a parameter-name pattern, a list of patterns, an nn.Module type or a callable"


def _owned_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter, nn.Module]]:
    """Each parameter once, with its full name and the module that holds it."""
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        for local, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            yield (f"{prefix}.{local}" if prefix else local), param, module


def _is_bias(name: str) -> bool:
    return name.rsplit(".", 1)[-1].endswith("bias")


def _local_name(name: str, module: nn.Module) -> str:
    """The name the layer knows the tensor by: ``"weight"`` for ``"fc.weight"``, and also
    for ``"fc.parametrizations.weight.original"`` (torch.nn.utils.parametrize keeps the
    tensor in a ParametrizationList named after the attribute it computes)."""
    parts = name.rsplit(".", 2)
    if isinstance(module, ParametrizationList) and len(parts) == 3:
        return parts[1]
    return parts[-1]


def _is_layer_weight(name: str, p: nn.Parameter, m: nn.Module) -> bool:
    """The default selection: a layer's weight (named ``*weight*``, ndim >= 2, not a norm's)."""
    return p.ndim >= 2 and "weight" in _local_name(name, m) and not isinstance(m, NORM_LAYERS)


def _module_types(select: Any) -> tuple[type[nn.Module], ...] | None:
    """``select`` as a tuple of module types when it is one type, or a tuple or list of them."""
    items = (select,) if isinstance(select, type) else select
    if (
        isinstance(items, (tuple, list))
        and items
        and all(isinstance(t, type) and issubclass(t, nn.Module) for t in items)
    ):
        return tuple(items)
    return None


def _predicate(select: Selector) -> Callable[[str, nn.Parameter, nn.Module], bool]:
    if select is None:
        return _is_layer_weight
    if isinstance(select, str):
        select = [select]
    types = _module_types(select)
    if types is not None:
        return lambda name, p, m: isinstance(m, types) and not _is_bias(name)
    if isinstance(select, Sequence) and select and all(isinstance(s, str) for s in select):
        patterns = cast(list[str], list(select))  # every item a str: checked just above
        return lambda name, p, m: any(fnmatch.fnmatchcase(name, pat) for pat in patterns)
    if callable(select) and not isinstance(select, type):
        return select
    raise fail("select", _RULE, select, kind=TypeError)


def select_parameters(model: nn.Module, select: Selector = None) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs of ``model`` that ``select`` picks, in model order.

    Raises
    ------
    TypeError
        ``model`` is not an ``nn.Module``, ``select`` is none of the accepted forms, or a
        selected parameter is not a real floating-point tensor.
    ValueError
        The selector matches no trainable parameter, or a name pattern matches nothing.
    """
    if not isinstance(model, nn.Module):
        raise fail("model", "a torch.nn.Module", model, kind=TypeError)
    keep = _predicate(select)
    owned = list(_owned_parameters(model))
    matched = [(n, p) for n, p, m in owned if keep(n, p, m)]
    for name, param in matched:
        # the default selects layer weights, which are never integer; a selector that
        # names a non-float tensor is a mistake worth stopping on
        if select is not None and not param.dtype.is_floating_point:
            raise InputTypeError(
                f"parameter {name!r} must be a real floating-point tensor to be penalized, got dtype {param.dtype}"
            )
    chosen = [(n, p) for n, p in matched if p.requires_grad and p.dtype.is_floating_point]
    names = [n for n, _, _ in owned]
    if isinstance(select, (str, list, tuple)) and not isinstance(select, type):
        patterns = [select] if isinstance(select, str) else select
        for pattern in patterns:
            if isinstance(pattern, str) and not fnmatch.filter(names, pattern):
                raise InputError(
                    f"select pattern {pattern!r} matches no parameter of the model; its parameters are {_listed(names)}"
                )
    if not chosen:
        raise InputError(
            f"select {describe_selector(select, strict=False)!r} matches no trainable parameter "
            f"of the model; its parameters are {_listed(names)}"
        )
    return chosen


def _listed(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "") if names else "none"


# ---------------------------------------------------------------------------- config
def describe_selector(select: Selector, *, strict: bool = True) -> Any:
    """A plain, JSON-able form of ``select`` (inverted by :func:`selector_from_config`).

    Callables have no plain form: with ``strict`` that is a ``ValueError``, otherwise
    their ``repr`` is returned (for messages).
    """
    if select is None:
        return None
    if isinstance(select, str):
        return {"names": [select]}
    types = _module_types(select)
    if types is not None:
        return {"modules": [f"{t.__module__}.{t.__qualname__}" for t in types]}
    if isinstance(select, Sequence) and all(isinstance(s, str) for s in select):
        return {"names": list(select)}
    if strict:
        raise InputError(
            f"select {select!r} is a callable and cannot be written to a config; "
            "use parameter-name patterns or module types for a reproducible config"
        )
    return repr(select)


def selector_from_config(config: Any) -> Selector:
    """Inverse of :func:`describe_selector`."""
    if config is None:
        return None
    if isinstance(config, dict) and set(config) == {"names"}:
        return list(config["names"])
    if isinstance(config, dict) and set(config) == {"modules"}:
        return tuple(_import_type(path) for path in config["modules"])
    raise fail("select", "None, {'names': [...]} or {'modules': [...]}", config)


def _import_type(path: str) -> type[nn.Module]:
    # Resolve only from modules already imported: a config (perhaps from an untrusted
    # store) must never make us import, and so run, new code.
    import sys

    module_name, _, qualname = path.rpartition(".")
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split(".") if obj is not None else ():
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise fail("select module type", "an nn.Module class from an imported module", path)
    return obj

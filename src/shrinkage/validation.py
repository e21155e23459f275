"""Validation at the public boundary: one exception type and one message shape for every bad input.

Every bad input raises :class:`InputError` (a ``ValueError``: a value outside the rule)
or :class:`InputTypeError` (also a ``TypeError``: a value of the wrong kind), with the
message ``"<parameter> must be <rule>, got <value received>"``. Catch ``InputError`` to
catch both; anything else raised from shrinkage is a bug or an error of the numerics
(:class:`~shrinkage.train.Diverged`).

>>> import shrinkage
>>> try:
...     shrinkage.L1(-1.0)
... except shrinkage.InputError as error:
...     print(error)
lambda_ must be a finite number >= 0, got -1.0
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable
from typing import Any

__all__ = [
    "Described",
    "InputError",
    "InputTypeError",
    "check_bool",
    "check_choice",
    "check_device",
    "check_int",
    "check_n_jobs",
    "check_number",
    "check_seed",
    "fail",
]


class InputError(ValueError):
    """A bad input: a parameter, an argument or a file that breaks a documented rule.

    The message names the parameter, the rule and the value received. The command line
    reports it in one line with exit code 2.
    """


class InputTypeError(InputError, TypeError):
    """A bad input of the wrong kind (a ``TypeError`` too, as Python's own checks raise)."""


class Described(str):
    """A description of what was received, shown as is (not quoted) in a message."""

    def __repr__(self) -> str:
        return str(self)


def _shown(value: Any) -> str:
    """The received value as the message shows it (``repr``, shortened)."""
    text = " ".join(repr(value).split())  # one line, whatever the value's repr spans
    if isinstance(value, Described):  # composed by us: shown whole
        return text
    return text if len(text) <= 80 else text[:77] + "..."


def fail(name: str, rule: str, value: Any, *, kind: type[Exception] = InputError, verb: str = "be") -> Exception:
    """Return the standard exception for ``name`` breaking ``rule`` (caller raises it):
    ``"<name> must <verb> <rule>, got <value>"``.

    ``kind`` is :class:`InputError` (or ``TypeError``, which gives :class:`InputTypeError`).
    """
    kind = {ValueError: InputError, TypeError: InputTypeError}.get(kind, kind)
    return kind(f"{name} must {verb} {rule}, got {_shown(value)}")


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number within ``[low, high]`` (ends open where asked), as ``float``."""
    parts = ["a finite number"]
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    rule = (
        " ".join(parts)
        if high is None or low is None
        else (f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail(name, rule, value, kind=TypeError)
    number = float(value)
    if not math.isfinite(number):
        raise fail(name, rule, value)
    if low is not None and (number < low or (low_open and number == low)):
        raise fail(name, rule, value)
    if high is not None and (number > high or (high_open and number == high)):
        raise fail(name, rule, value)
    return number


def check_int(name: str, value: Any, *, low: int | None = None) -> int:
    """An integer (not a bool) ``>= low``."""
    rule = "an integer" if low is None else f"an integer >= {low}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise fail(name, rule, value, kind=TypeError)
    if low is not None and value < low:
        raise fail(name, rule, value)
    return int(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """One of the strings in ``choices``."""
    choices = tuple(choices)
    rule = "one of " + ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise fail(name, rule, value, kind=TypeError)
    if value not in choices:
        raise fail(name, rule, value)
    return value


def replace_fields(instance: Any, changes: dict[str, Any], what: str = "option") -> Any:
    """``dataclasses.replace`` with an :class:`InputTypeError` naming an unknown field and the known ones."""
    known = [f.name for f in dataclasses.fields(instance)]
    unknown = [name for name in changes if name not in known]
    if unknown:
        raise InputTypeError(
            f"{type(instance).__name__} has no {what} {unknown[0]!r}; its {what}s are {', '.join(known)}"
        )
    return dataclasses.replace(instance, **changes)


def check_seed(name: str, value: Any) -> int:
    """A seed NumPy, scikit-learn and torch all accept: an integer in [0, 2**32 - 1]."""
    seed = check_int(name, value, low=0)
    if seed > 2**32 - 1:
        raise fail(name, "an integer in [0, 2**32 - 1]", value)
    return seed


def check_n_jobs(name: str, value: Any) -> int | None:
    """joblib's ``n_jobs``: None, or a non-zero integer (-1: every core)."""
    if value is None:
        return None
    if check_int(name, value) == 0:
        raise fail(name, "None or a non-zero integer (-1: every core)", value)
    return int(value)


def check_device(name: str, value: Any) -> Any:
    """A torch device (a ``torch.device`` or its name) that this machine has."""
    import torch

    if not isinstance(value, (str, torch.device)):
        raise fail(name, "a torch device such as 'cpu' or 'cuda'", value, kind=TypeError)
    try:
        device = torch.device(value)
    except RuntimeError:
        raise fail(name, "a torch device such as 'cpu', 'cuda' or 'cuda:1'", value) from None
    if device.type == "meta":
        raise fail(name, "a device that holds numbers (the meta device holds none)", value)
    if device.type == "cpu" and device.index not in (None, 0):
        raise fail(name, "'cpu' (the CPU has no numbered devices)", value)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise fail(name, "a device this machine has (torch sees no CUDA device)", value)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise fail(name, f"a device this machine has (torch sees {torch.cuda.device_count()} CUDA devices)", value)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise fail(name, "a device this machine has (torch sees no MPS device)", value)
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(name, "True or False", value, kind=TypeError)
    return value

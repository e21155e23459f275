"""Sparse deltas as files: a fine-tuned model stored as what differs from its base.

Fine-tuning a pretrained model with an L1 penalty centred on the pretrained weights
(the ``proximal`` mode) leaves most entries bit for bit equal to the pretrained ones.
:func:`save_delta` writes one weights-only safetensors file holding only the entries that
differ; :func:`load_delta` rebuilds the fine-tuned state dict from the base and that file,
bit for bit, and :func:`apply_delta` loads it in place into a module holding the base.

What the file holds, per tensor of the model's state dict (parameters and buffers), in
the cheapest of four encodings (bytes of the stored tensors, plus about ``64 + len(name)``
bytes of safetensors header per stored tensor):

- ``none``: bit for bit equal to the base (compared as raw bits: ``-0.0`` against ``0.0``,
  or two NaNs with different payloads, are changes);
- ``positions``: the flat positions of the changed entries (``int32``; ``int64`` for a
  tensor of ``2**31`` entries or more) and their new values;
- ``mask``: the changed entries as a packed bitmask (``numpy.packbits``, ``uint8``, one
  bit per entry in row-major order) and their new values;
- ``dense``: the whole new tensor (always for a tensor the base lacks, or holds with
  another shape or dtype).

New values are stored, not differences: ``(w - w0) + w0`` is not always ``w`` in floating
point, and the rebuild is exact. Tensors the base has and the model lacks are recorded
as removed. The file records the base's fingerprint (BLAKE2b over the name, dtype, shape
and raw bytes of each base tensor the delta is built on), so that applying it to another
base is refused, and a checksum of its own tensors (and of which keys are tied to which),
so that a damaged file is refused rather than read as other numbers.

Tied tensors (keys of the state dict that hold one tensor: the same memory, offset, dtype,
shape and strides, as GPT-2's ``lm_head.weight`` and ``transformer.wte.weight``) are
stored once, under the first of their keys that the base holds with the same shape and
dtype (else under their first key); the file records the other keys as aliases of it, and
:func:`load_delta` returns the one rebuilt tensor under every key, so that
``load_state_dict`` keeps the tie. The base need not be tied the same way: the tensor is
rebuilt from the base's tensor under the key it is stored under (the base's tensors under
its other keys are not read, nor fingerprinted), and a model untied where the base is
tied is stored key by key as any other. :func:`apply_delta` refuses a model that ties keys
the fine-tuned model holds as different tensors (loading would keep one of them).

>>> import copy, os, tempfile, torch
>>> from shrinkage.delta import load_delta, save_delta
>>> base = torch.nn.Linear(1000, 100)
>>> tuned = copy.deepcopy(base)
>>> with torch.no_grad():
...     tuned.weight[:, :10] += 0.5  # fine-tuning moved 1,000 of the 100,100 entries
>>> path = os.path.join(tempfile.mkdtemp(), "tuned.safetensors")
>>> report = save_delta(tuned, base, path)
>>> print(report)
delta: 2.2 % of a full checkpoint (8.6 kB of 400.6 kB); 99.0 % of the entries unchanged
>>> report.encodings
{'none': 1, 'positions': 1, 'mask': 0, 'dense': 0}
>>> weights = load_delta(path, base)
>>> all(torch.equal(weights[k], v) for k, v in tuned.state_dict().items())
True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._files import write_atomically
from .validation import Described, InputError, check_bool, fail

__all__ = ["DeltaReport", "apply_delta", "load_delta", "save_delta"]

FORMAT = "shrinkage-delta"
# Files with tied tensors are version 1 too: version-1 files without them read as before,
# and the alias entries of those with them are refused as damage by an earlier reader
# (its checksum, or its description), never read with a key missing.
VERSION = "1"
ENCODINGS = ("none", "positions", "mask", "dense")
# why a tensor is in the file: built on the base's tensor, or stored whole because the
# base lacks it ("new") or holds it with another shape or dtype ("replaced")
_ORIGINS = ("delta", "new", "replaced")
# the safetensors header entry of one stored tensor, less its name:
# "<name>":{"dtype":"F32","shape":[1024],"data_offsets":[4096,8192]},
_ENTRY_BYTES = 64
_WIDE = 2**31  # a tensor this long or longer needs int64 positions
# the longest JSON header safetensors reads: a length above it is no safetensors file
_MAX_HEADER = 100_000_000
# the stored tensors of each encoding, named "<part>/<key>"
_PARTS = {"none": (), "positions": ("positions", "values"), "mask": ("mask", "values"), "dense": ("values",)}


def _dtypes() -> dict[str, torch.dtype]:
    """The dtypes a safetensors file holds, by the name the delta's description gives them."""
    names = ["float64", "float32", "float16", "bfloat16", "complex64", "bool"]
    names += ["int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8"]
    names += ["float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"]
    return {name: getattr(torch, name) for name in names if hasattr(torch, name)}


_DTYPES = _dtypes()
_DTYPE_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
# same-sized integers: entries are compared and copied as raw bits
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


# ---------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class DeltaReport:
    """What :func:`save_delta` wrote, and what it saved over a full checkpoint.

    A tied tensor (one tensor under several keys of the state dict) counts once, under the
    key it is stored under, in ``changed``, ``total``, ``encodings``, ``full_bytes``,
    ``added`` and ``replaced``, as a Hugging Face checkpoint saves it once.

    Attributes
    ----------
    path : Path
        The delta file.
    changed : int
        Entries stored: the changed entries, and every entry of a tensor stored whole
        because the base lacks it or holds it with another shape or dtype.
    total : int
        Entries of the model's state dict (parameters and buffers).
    encodings : dict of str to int
        Tensors per encoding (``none``, ``positions``, ``mask``, ``dense``).
    delta_bytes : int
        Bytes of the delta file.
    full_bytes : int
        Bytes of a full checkpoint: a safetensors file of the model's state dict (a tied
        tensor once) — its tensors' bytes and its header, laid out as safetensors writes it
        (to within a few bytes).
    added, replaced, removed : tuple of str
        Keys the base lacks; keys the base holds with another shape or dtype (both stored
        whole); keys of the base the model lacks (not in the file).
    tied : dict of str to str
        Keys that hold the same tensor as another key (tied weights), each mapped to the
        key the tensor is stored under; the file records them, and stores nothing more.
    """

    path: Path
    changed: int
    total: int
    encodings: dict[str, int]
    delta_bytes: int
    full_bytes: int
    added: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    tied: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Bytes of the delta file over bytes of a full checkpoint (``inf`` for a model without entries)."""
        return self.delta_bytes / self.full_bytes if self.full_bytes else math.inf

    @property
    def unchanged_fraction(self) -> float:
        """Fraction of the model's entries that the base holds bit for bit."""
        return 1 - self.changed / self.total if self.total else 1.0

    def __str__(self) -> str:
        text = (
            f"delta: {100 * self.ratio:.1f} % of a full checkpoint "
            f"({_size(self.delta_bytes)} of {_size(self.full_bytes)}); "
            f"{100 * self.unchanged_fraction:.1f} % of the entries unchanged"
        )
        for what, keys in (("new", self.added), ("replaced", self.replaced), ("removed", self.removed)):
            if keys:
                text += f"; {what}: " + ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        if self.tied:
            ties = [f"{alias} = {key}" for alias, key in self.tied.items()]
            text += "; tied: " + ", ".join(ties[:3]) + (f" and {len(ties) - 3} more" if len(ties) > 3 else "")
        return text


def _size(n: int) -> str:
    """Bytes as people read them (SI units: a kB is 1000 bytes)."""
    if n < 1000:
        return f"{n} B"
    amount, units = n / 1000, ["kB", "MB", "GB", "TB"]
    while amount >= 999.95 and len(units) > 1:
        amount, units = amount / 1000, units[1:]
    return f"{amount:.1f} {units[0]}"


# ---------------------------------------------------------------------------------------
# Public API


def save_delta(
    model: nn.Module | Mapping[str, Tensor], base: nn.Module | Mapping[str, Tensor], path: Any
) -> DeltaReport:
    """Write what ``model`` changed from ``base`` to ``path``: one weights-only safetensors file.

    Every tensor of the model's state dict (parameters and buffers) is stored in the
    cheapest of four encodings: ``none`` (bit for bit the base's), ``positions`` (flat
    positions of the changed entries and their new values), ``mask`` (a packed bitmask of
    the changed entries and their new values) or ``dense`` (the whole new tensor; always
    for a key the base lacks or holds with another shape or dtype). The cost of an
    encoding is the bytes of its stored tensors plus ``64 + len(key)`` per stored tensor
    (its header entry); for ``n`` entries of ``s`` bytes, ``c`` of them changed:
    ``positions`` ``c * (4 + s)``, ``mask`` ``ceil(n / 8) + c * s``, ``dense`` ``n * s``.

    Keys that hold one tensor (tied weights: the same memory, offset, dtype, shape and
    strides) are stored once, under the first of them that the base holds with the same
    shape and dtype (else the first of them), the others recorded as its aliases.

    Parameters
    ----------
    model : nn.Module or mapping of str to Tensor
        The fine-tuned model, or its state dict. Tensors on any device, of any dtype a
        safetensors file holds, contiguous or not; tied or not.
    base : nn.Module or mapping of str to Tensor
        The pretrained model the fine-tuning started from, or its state dict. Its keys
        that the model lacks are recorded as removed.
    path : str or os.PathLike
        The file to write (replaced whole, through a temporary file renamed into place).

    Returns
    -------
    DeltaReport
        Entries changed, tensors per encoding, and bytes of the delta and of a full
        checkpoint.
    """
    new = _state_dict("model", model)
    old = _state_dict("base", base)
    target = _path(path)
    if target.is_dir():
        raise InputError(f"delta file {str(target)!r} is a folder: name a file")
    aliases = _aliases(new, old)  # {tied key: the key its tensor is stored under}
    stored: dict[str, Tensor] = {}
    entries: dict[str, dict[str, Any]] = {}
    changed = 0
    for key, tensor in new.items():
        if tensor.dtype not in _DTYPE_NAMES:
            raise fail(f"model's {key!r}", "of a dtype a safetensors file holds", Described(str(tensor.dtype)))
        if key in aliases:
            entries[key] = {"alias": aliases[key]}
            continue
        origin = "new" if key not in old else "delta"
        if origin == "delta" and (old[key].shape != tensor.shape or old[key].dtype != tensor.dtype):
            origin = "replaced"
        encoding, parts, count = _encode(key, tensor, old[key] if origin == "delta" else None)
        stored.update(parts)
        changed += count
        dtype, shape = _DTYPE_NAMES[tensor.dtype], list(tensor.shape)
        entries[key] = {"encoding": encoding, "dtype": dtype, "shape": shape, "origin": origin}
    removed = [key for key in old if key not in new]
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "base": _digest(old, [k for k, e in entries.items() if e.get("origin") == "delta"]),
        "checksum": _checksum(stored, aliases),
        "tensors": json.dumps(entries),
        "removed": json.dumps(removed),
    }
    from safetensors.torch import save

    data = save(stored, metadata=metadata)
    write_atomically(target, data, what="delta file")
    counts = {encoding: 0 for encoding in ENCODINGS}
    for entry in entries.values():
        if "encoding" in entry:
            counts[entry["encoding"]] += 1
    once = [tensor for key, tensor in new.items() if key not in aliases]  # tied tensors once
    return DeltaReport(
        path=target,
        changed=changed,
        total=sum(t.numel() for t in once),
        encodings=counts,
        delta_bytes=len(data),
        full_bytes=_checkpoint_bytes({key: t for key, t in new.items() if key not in aliases}),
        added=tuple(k for k, e in entries.items() if e.get("origin") == "new"),
        replaced=tuple(k for k, e in entries.items() if e.get("origin") == "replaced"),
        removed=tuple(removed),
        tied=aliases,
    )


def load_delta(path: Any, base: nn.Module | Mapping[str, Tensor], *, check_base: bool = True) -> dict[str, Tensor]:
    """The fine-tuned state dict, rebuilt bit for bit from ``base`` and the delta at ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_delta`. A file that is not one, or is damaged (its
        tensors are checked against a checksum, its description field by field), is an
        :class:`~shrinkage.validation.InputError` naming the file and what is wrong.
    base : nn.Module or mapping of str to Tensor
        The pretrained model (or state dict) the delta was saved against; left untouched.
    check_base : bool, default True
        Refuse a base whose fingerprint differs from the one the delta was saved against.
        ``False`` applies the delta to any base that holds the tensors it needs, with the
        same shapes and dtypes.

    Returns
    -------
    dict of str to Tensor
        Every key of the fine-tuned model's state dict, in its order: new tensors, on the
        device of the base's tensor of the same key (of the base's first tensor for a key
        the base lacks). Tied keys map to one tensor object, so that
        ``model.load_state_dict`` keeps a tie.
    """
    check_bool("check_base", check_base)
    old = _state_dict("base", base)
    delta = _read(_path(path))
    _check_against(delta, old, check_base)
    default = next((t.device for t in old.values()), torch.device("cpu"))
    rebuilt = {
        key: _rebuild(entry, old.get(key), old[key].device if key in old else default)
        for key, entry in delta.entries.items()
    }
    return {key: rebuilt[delta.aliases.get(key, key)] for key in delta.keys}


def apply_delta(model: nn.Module, path: Any, *, check_base: bool = True) -> nn.Module:
    """Load the delta at ``path`` in place into ``model``, which holds the base's weights.

    ``model`` must have the fine-tuned model's architecture (its state dict has exactly
    the fine-tuned model's keys, with their shapes and dtypes); its own state dict is the
    base (see :func:`load_delta`). Tensors the base lacked (a new head) are overwritten
    whatever they hold. Nothing is changed unless everything can be.

    A tie of the model's is kept (its tensors are written in place). Keys the model ties
    must hold one tensor in the fine-tuned model too (or bit for bit equal ones), else the
    model is refused; keys the fine-tuned model ties and the model does not are each
    given the tensor's values, and stay untied.

    Returns
    -------
    nn.Module
        ``model``, its tensors (the same objects) now holding the fine-tuned values.
    """
    if not isinstance(model, nn.Module):
        raise fail("model", "an nn.Module", model, kind=TypeError)
    check_bool("check_base", check_base)
    own = model.state_dict()
    delta = _read(_path(path))
    where = f"delta file {str(delta.path)!r}"
    missing = [key for key in delta.keys if key not in own]
    known = set(delta.keys)
    extra = [key for key in own if key not in known]
    if missing or extra:
        detail = "; ".join(
            part
            for part in (
                f"it lacks {_keys(missing)}" if missing else "",
                f"it has {_keys(extra)}, which the fine-tuned model has not" if extra else "",
            )
            if part
        )
        raise InputError(f"model must have the fine-tuned model's tensors to apply {where}: {detail}")
    for key in delta.keys:
        entry = delta.entries[delta.aliases.get(key, key)]
        if own[key].dtype != entry.dtype or own[key].shape != entry.shape:
            raise InputError(
                f"model must have the fine-tuned model's tensors to apply {where}: its {key!r} is "
                f"{_kind(own[key].dtype, own[key].shape)}, the fine-tuned one {_kind(entry.dtype, entry.shape)}"
            )
    _check_against(delta, own, check_base)
    rebuilt = {key: _rebuild(entry, own[key], own[key].device) for key, entry in delta.entries.items()}
    weights = {key: rebuilt[delta.aliases.get(key, key)] for key in delta.keys}
    for group in _tie_groups(own):
        first, *others = group
        for key in others:
            if weights[key] is not weights[first] and not _same_bits(weights[key], weights[first]):
                raise InputError(
                    f"model must have the fine-tuned model's tensors to apply {where}: it ties {first!r} and "
                    f"{key!r} (one tensor), which the fine-tuned model holds as different tensors; untie them"
                )
    model.load_state_dict(weights, strict=True)
    return model


# ---------------------------------------------------------------------------------------
# Tied tensors: keys that hold one tensor


def _tie_groups(tensors: Mapping[str, Tensor]) -> list[list[str]]:
    """Keys that hold one tensor (the same memory and offset, dtype, shape and strides),
    in groups of two or more, each in state-dict order."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for key, tensor in tensors.items():
        if tensor.numel() == 0:  # nothing to share, and empty tensors may all sit at address 0
            continue
        where = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        groups.setdefault((*where, tensor.dtype, tuple(tensor.shape), tensor.stride()), []).append(key)
    return [keys for keys in groups.values() if len(keys) > 1]


def _aliases(new: Mapping[str, Tensor], old: Mapping[str, Tensor]) -> dict[str, str]:
    """``{key: the key its tensor is stored under}`` for every tied key of ``new`` but the
    one it is stored under: the first of its group that ``old`` holds as it is (same shape
    and dtype), so that it can be built on the base, else the group's first."""
    aliases: dict[str, str] = {}
    for group in _tie_groups(new):
        kept = next((k for k in group if k in old and _alike(old[k], new[k])), group[0])
        aliases.update({key: kept for key in group if key != kept})
    return aliases


def _alike(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype


def _same_bits(a: Tensor, b: Tensor) -> bool:
    """Same dtype, shape and raw bits (``-0.0`` is not ``0.0``; NaNs compare by payload)."""
    return _alike(a, b) and torch.equal(_bits(a), _bits(b).to(a.device))


# ---------------------------------------------------------------------------------------
# Saving: one tensor at a time


def _encode(key: str, new: Tensor, old: Tensor | None) -> tuple[str, dict[str, Tensor], int]:
    """The cheapest encoding of ``new`` against ``old`` (None: dense), its stored tensors
    (on the CPU) and the number of entries it stores."""
    n = new.numel()
    if old is None:
        return "dense", {f"values/{key}": _cpu_copy(new)}, n
    new_bits = _bits(new)  # (n,) integers, the raw bits of each entry
    changed = new_bits != _bits(old.to(new.device))
    count = int(changed.sum())
    encoding = _choose(key, n, count, new.element_size())
    if encoding == "none":
        return "none", {}, 0
    if encoding == "dense":
        return "dense", {f"values/{key}": _cpu_copy(new)}, count
    values = new_bits[changed].cpu().view(new.dtype)  # (count,) new values, bit for bit
    if encoding == "positions":
        positions = torch.nonzero(changed).flatten().cpu().to(_position_dtype(n))
        return "positions", {f"positions/{key}": positions, f"values/{key}": values}, count
    mask = torch.from_numpy(np.packbits(changed.cpu().numpy()))  # (ceil(n / 8),) uint8
    return "mask", {f"mask/{key}": mask, f"values/{key}": values}, count


def _costs(key: str, n: int, count: int, itemsize: int) -> dict[str, int]:
    """Bytes each encoding adds to the file: its stored tensors and their header entries."""
    entry = _ENTRY_BYTES + len(key.encode())
    width = torch.empty((), dtype=_position_dtype(n)).element_size()
    return {
        "dense": n * itemsize + entry,
        "positions": count * (width + itemsize) + 2 * entry,
        "mask": (n + 7) // 8 + count * itemsize + 2 * entry,
    }


def _choose(key: str, n: int, count: int, itemsize: int) -> str:
    """``none`` when nothing changed, else the cheapest (ties: dense, then positions)."""
    if count == 0:
        return "none"
    costs = _costs(key, n, count, itemsize)
    return min(costs, key=costs.__getitem__)


def _position_dtype(n: int) -> torch.dtype:
    return torch.int32 if n < _WIDE else torch.int64


def _bits(tensor: Tensor) -> Tensor:
    """``tensor`` flattened and seen as same-sized integers (a view where it can be)."""
    return tensor.detach().reshape(-1).view(_BITS[tensor.element_size()])


def _cpu_copy(tensor: Tensor) -> Tensor:
    """A contiguous CPU copy (never the tensor itself: safetensors refuses shared memory)."""
    return tensor.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)


def _digest(tensors: Mapping[str, Tensor], keys: Any) -> str:
    """BLAKE2b over the name, dtype, shape and raw bytes of ``tensors[k]`` for ``k`` in
    ``keys``, in sorted order (each piece preceded by its length, so no two differ alike)."""
    return _hash(tensors, keys).hexdigest()


def _checksum(stored: Mapping[str, Tensor], aliases: Mapping[str, Any]) -> str:
    """The file's checksum: :func:`_digest` of its stored tensors, then (where it has tied
    keys) the sorted ``[alias, key]`` pairs as JSON, so that a damaged tie is refused too.
    A file without tied keys has the checksum it had before ties were stored once."""
    digest = _hash(stored, stored)
    if aliases:
        text = json.dumps(sorted(aliases.items())).encode()
        digest.update(len(text).to_bytes(8, "little") + text)
    return digest.hexdigest()


def _hash(tensors: Mapping[str, Tensor], keys: Any) -> Any:
    digest = hashlib.blake2b(digest_size=32)
    for key in sorted(keys):
        tensor = tensors[key].detach()
        head = json.dumps([key, str(tensor.dtype), list(tensor.shape)]).encode()
        raw = tensor.reshape(-1).view(torch.uint8).cpu().numpy()  # (numel * itemsize,) bytes
        digest.update(len(head).to_bytes(8, "little") + head)
        digest.update(raw.size.to_bytes(8, "little"))
        digest.update(raw.data)
    return digest


# ---------------------------------------------------------------------------------------
# Reading: the file checked whole before any tensor is built


@dataclass(frozen=True)
class _Entry:
    key: str
    encoding: str
    origin: str
    dtype: torch.dtype
    shape: torch.Size
    positions: Tensor | None  # (count,) int64 flat positions; None for none and dense
    values: Tensor | None  # (count,) new values, or the whole tensor for dense


@dataclass(frozen=True)
class _Delta:
    path: Path
    keys: tuple[str, ...]  # every key of the fine-tuned model's state dict, in its order
    entries: dict[str, _Entry]  # the stored tensors, by the key each is stored under
    aliases: dict[str, str]  # {tied key: the key its tensor is stored under}
    base: str  # the base's fingerprint


def _read(path: Path) -> _Delta:
    where = f"delta file {str(path)!r}"
    if path.is_dir():
        raise InputError(f"{where} is a folder: name a delta file")
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist")
    stored, metadata = _load(where, path.read_bytes())
    if metadata.get("format") != FORMAT:
        raise InputError(f"{where} is not a shrinkage delta (its format is {metadata.get('format')!r}, not {FORMAT!r})")
    if metadata.get("version") != VERSION:
        raise InputError(
            f"{where} is a version {metadata.get('version')!r} delta; this shrinkage reads version {VERSION!r}"
        )
    damaged = f"{where} is damaged:"
    for name, what in (("base", "its base's fingerprint"), ("checksum", "its checksum")):
        value = metadata.get(name)
        if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise InputError(f"{damaged} {what} {_short(value)} is not 64 hexadecimal digits")
    try:
        described = json.loads(metadata.get("tensors", ""))
        removed = json.loads(metadata.get("removed", ""))
    except ValueError:
        raise InputError(f"{damaged} its description is not JSON") from None
    if not isinstance(described, dict):
        raise InputError(f"{damaged} its description is {_short(described)}, not an object")
    if not isinstance(removed, list) or not all(isinstance(k, str) for k in removed):
        raise InputError(f"{damaged} its list of removed tensors is {_short(removed)}")
    aliases = {key: spec["alias"] for key, spec in described.items() if _is_alias(spec)}
    if _checksum(stored, aliases) != metadata["checksum"]:
        raise InputError(f"{damaged} its tensors{' and ties' if aliases else ''} do not match their checksum")
    entries = {key: _entry(damaged, key, spec, stored) for key, spec in described.items() if key not in aliases}
    for key, target in aliases.items():
        if not isinstance(target, str) or target not in entries:
            raise InputError(f"{damaged} {key!r} is tied to {_short(target)}, which is not a tensor the file stores")
    expected = {name for entry in entries.values() for name in _names(entry)}
    unknown = sorted(set(stored) - expected)
    if unknown:
        raise InputError(f"{damaged} it holds a tensor {unknown[0]!r} that its description does not name")
    return _Delta(path=path, keys=tuple(described), entries=entries, aliases=aliases, base=metadata["base"])


def _load(where: str, data: bytes) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and ``__metadata__`` of a safetensors blob. One that starts as a
    safetensors file does (a plausible 8-byte header length, then ``{``) but does not read
    is damaged; anything else is not a safetensors file."""
    from safetensors.torch import load

    length = int.from_bytes(data[:8], "little")
    looks = len(data) > 8 and data[8:9] == b"{" and 2 <= length <= _MAX_HEADER
    if looks and 8 + length > len(data):
        raise InputError(f"{where} is damaged: it ends at byte {len(data)}, inside its header (of {length} bytes)")
    try:
        return load(data), _metadata(data)
    except Exception as error:  # safetensors raises its own error types for damaged input
        # "Error while deserializing header: invalid JSON in header: ..." -> "invalid JSON in header: ..."
        reason = re.sub(r"^Error while deserializing( header)?: ", "", " ".join(str(error).split()))
        raise InputError(f"{where} is {'damaged' if looks else 'not a safetensors file'}: {reason}") from None


def _is_alias(spec: Any) -> bool:
    """Whether a tensor's description says it is tied to another key: ``{"alias": key}``."""
    return isinstance(spec, dict) and set(spec) == {"alias"}


def _metadata(data: bytes) -> dict[str, Any]:
    """The ``__metadata__`` of a safetensors blob (an 8-byte length, then a JSON header)."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    return header.get("__metadata__") or {}


def _names(entry: _Entry) -> list[str]:
    """The names of the stored tensors that encode ``entry``."""
    return [f"{part}/{entry.key}" for part in _PARTS[entry.encoding]]


def _entry(damaged: str, key: str, spec: Any, stored: Mapping[str, Tensor]) -> _Entry:
    """One tensor's description, checked against the tensors that encode it."""
    name = f"{damaged} {key!r}"
    if not isinstance(spec, dict) or set(spec) != {"encoding", "dtype", "shape", "origin"}:
        raise InputError(f"{name} is described as {_short(spec)}, not by its encoding, dtype, shape and origin")
    encoding, origin, dtype, shape = spec["encoding"], spec["origin"], spec["dtype"], spec["shape"]
    if encoding not in ENCODINGS:
        raise InputError(f"{name} has an unknown encoding {_short(encoding)} (known: {', '.join(ENCODINGS)})")
    if origin not in _ORIGINS or (origin != "delta" and encoding != "dense"):
        raise InputError(f"{name} has an unknown origin {_short(origin)} for its encoding {encoding!r}")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise InputError(f"{name} has an unknown dtype {_short(dtype)}")
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
        raise InputError(f"{name} has a shape {_short(shape)} that is not a list of sizes")
    entry = _Entry(key, encoding, origin, _DTYPES[dtype], torch.Size(shape), None, None)
    for part in _names(entry):
        if part not in stored:
            raise InputError(f"{name} is encoded as {encoding!r} but the file lacks its tensor {part!r}")
    n = entry.shape.numel()
    if encoding == "none":
        return entry
    values = stored[f"values/{key}"]
    if values.dtype != entry.dtype:
        raise InputError(f"{name} is described as {dtype} but its values are {_DTYPE_NAMES.get(values.dtype)}")
    if encoding == "dense":
        if values.shape != entry.shape:
            raise InputError(f"{name} is described as of shape {tuple(shape)} but its values are {tuple(values.shape)}")
        return _Entry(key, encoding, origin, entry.dtype, entry.shape, None, values)
    if encoding == "positions":
        positions = stored[f"positions/{key}"]
        width = _position_dtype(n)
        if positions.dtype != width or positions.dim() != 1:
            raise InputError(
                f"{name} has positions of {positions.dtype} and shape {tuple(positions.shape)}, "
                f"not a list of {width} for its {n} entries"
            )
        positions = positions.long()
        increasing = bool((positions[1:] > positions[:-1]).all())
        if len(positions) and (not increasing or positions[0] < 0 or positions[-1] >= n):
            raise InputError(f"{name} has positions out of order or outside its {n} entries")
    else:
        mask = stored[f"mask/{key}"]
        if mask.dtype != torch.uint8 or mask.shape != ((n + 7) // 8,):
            raise InputError(
                f"{name} has a mask of {mask.dtype} and shape {tuple(mask.shape)}, not {(n + 7) // 8} bytes "
                f"for its {n} entries"
            )
        bits = np.unpackbits(mask.numpy())
        if bits[n:].any():
            raise InputError(f"{name} has a mask with bits set past its {n} entries")
        positions = torch.from_numpy(np.flatnonzero(bits))
    if values.shape != positions.shape:
        raise InputError(
            f"{name} has {values.numel()} values of shape {tuple(values.shape)} for {len(positions)} changed entries"
        )
    return _Entry(key, encoding, origin, entry.dtype, entry.shape, positions, values)


def _check_against(delta: _Delta, base: Mapping[str, Tensor], check_base: bool) -> None:
    """The base holds every tensor the delta is built on, as described, and (``check_base``)
    is the one the delta was saved against."""
    where = f"delta file {str(delta.path)!r}"
    built_on = [key for key, entry in delta.entries.items() if entry.origin == "delta"]
    missing = [key for key in built_on if key not in base]
    if missing:
        raise InputError(f"base must hold every tensor {where} is built on; it lacks {_keys(missing)}")
    for key in built_on:
        entry, tensor = delta.entries[key], base[key]
        if tensor.dtype != entry.dtype or tensor.shape != entry.shape:
            raise InputError(
                f"base must hold the tensors {where} is built on as they were; its {key!r} is "
                f"{_kind(tensor.dtype, tensor.shape)}, the delta's {_kind(entry.dtype, entry.shape)}"
            )
    if check_base:
        fingerprint = _digest(base, built_on)
        if fingerprint != delta.base:
            raise InputError(
                f"base must be the model {where} was saved against (fingerprint {delta.base[:16]}), "
                f"got another (fingerprint {fingerprint[:16]}); pass check_base=False to apply it anyway"
            )


def _rebuild(entry: _Entry, base: Tensor | None, device: torch.device) -> Tensor:
    """The fine-tuned tensor: a new tensor on ``device`` (the base's tensor is not touched)."""
    if entry.encoding == "dense":
        assert entry.values is not None  # checked by _entry
        return entry.values.to(device, memory_format=torch.contiguous_format, copy=True)
    assert base is not None  # checked by _check_against
    out = base.detach().to(device, memory_format=torch.contiguous_format, copy=True)
    if entry.encoding != "none":
        assert entry.positions is not None and entry.values is not None
        # written as raw bits: a copy through float registers could quieten a NaN
        _bits(out)[entry.positions.to(device)] = _bits(entry.values).to(device)
    return out


# ---------------------------------------------------------------------------------------
# Inputs


def _state_dict(name: str, value: Any) -> dict[str, Tensor]:
    """A module's state dict, or a mapping checked to be one (string keys, dense tensors)."""
    if isinstance(value, nn.Module):
        value = value.state_dict()
    elif not isinstance(value, Mapping):
        raise fail(name, "an nn.Module or a state dict (a mapping of names to tensors)", value, kind=TypeError)
    for key, tensor in value.items():
        if not isinstance(key, str) or not isinstance(tensor, Tensor):
            what = f"{key!r}: {type(tensor).__name__}" if isinstance(key, str) else f"a key {key!r}"
            raise fail(name, "a state dict of tensors named by strings", Described(f"one with {what}"), kind=TypeError)
        if tensor.layout != torch.strided or tensor.is_meta:
            raise fail(
                name,
                "a state dict of dense tensors holding numbers",
                Described(f"{key!r} as a {tensor.layout} tensor on {tensor.device}"),
            )
    return dict(value)


def _path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise fail("path", "a file path (a str or os.PathLike)", path, kind=TypeError)
    return Path(path)


def _keys(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _kind(dtype: torch.dtype, shape: torch.Size) -> str:
    return f"{_DTYPE_NAMES.get(dtype, dtype)} of shape {tuple(shape)}"


def _short(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


#: safetensors' names of torch's dtypes (the header's "dtype" field)
_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _checkpoint_bytes(tensors: Mapping[str, Tensor]) -> int:
    """The size of a safetensors file of ``tensors``: an 8-byte length, the JSON header
    (padded to 8 bytes) and the data, as the format lays them out."""
    header, offset = {}, 0
    for key, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        dtype = _SAFETENSORS_DTYPES.get(tensor.dtype, "F8_E4M3")
        header[key] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"))
    return 8 + len(text) + (-len(text)) % 8 + offset

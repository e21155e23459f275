"""Sparse deltas as files (``shrinkage.delta``): the fine-tuned weights rebuilt bit for bit
from the base, the cheapest encoding per tensor, tied weights stored once, and every
damaged or foreign file refused with an ``InputError``, never another exception."""

from __future__ import annotations

import copy
import json
import os
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from safetensors.torch import save_file
from torch import nn

from shrinkage import delta
from shrinkage.delta import DeltaReport, apply_delta, load_delta, save_delta
from shrinkage.validation import InputError

# ---------------------------------------------------------------------------------------
# Helpers: changes made at chosen entries, and an exact comparison


def raw(tensor: torch.Tensor) -> bytes:
    return tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()


def assert_identical(got: dict, expected: dict) -> None:
    """Same keys in the same order, same dtypes and shapes, the same bytes (and
    ``torch.equal`` where no NaN makes it false by definition)."""
    assert list(got) == list(expected)
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype and got[key].shape == tensor.shape, key
        assert raw(got[key]) == raw(tensor), key
        if not (tensor.is_floating_point() and tensor.isnan().any()):
            assert torch.equal(got[key].cpu(), tensor.detach().cpu()), key


BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def changed_at(tensor: torch.Tensor, positions, gen: torch.Generator) -> torch.Tensor:
    """A copy of ``tensor`` whose raw bits differ exactly at the flat ``positions`` (a random
    non-zero XOR: any pattern, NaNs and infinities included; 0/1 flipped for bool)."""
    out = tensor.clone()
    bits = out.reshape(-1).view(BITS[out.element_size()])
    positions = torch.as_tensor(positions, dtype=torch.long)
    if tensor.dtype == torch.bool:
        flips = torch.ones(len(positions), dtype=torch.uint8)
    else:
        width = 8 * out.element_size()
        flips = torch.randint(1, 2 ** min(width - 1, 62), (len(positions),), generator=gen).to(bits.dtype)
    bits[positions] ^= flips
    return out


def random_tensor(shape, dtype, gen: torch.Generator) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) < 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, generator=gen).to(dtype)
    return torch.randint(0, 100, shape, generator=gen).to(dtype)


def entry_bytes(key: str) -> int:
    return 64 + len(key)  # a stored tensor's header entry, as documented in save_delta


def cheapest(key: str, n: int, count: int, itemsize: int) -> str:
    """The documented rule, written out: bytes stored plus header entries."""
    if count == 0:
        return "none"
    width = 4 if n < 2**31 else 8
    costs = {
        "dense": n * itemsize + entry_bytes(key),
        "positions": count * (width + itemsize) + 2 * entry_bytes(key),
        "mask": -(-n // 8) + count * itemsize + 2 * entry_bytes(key),
    }
    return min(costs, key=costs.__getitem__)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# ---------------------------------------------------------------------------------------
# Bit for bit, per dtype and change pattern

DTYPES = [
    torch.float32,
    torch.bfloat16,
    torch.float16,
    torch.float64,
    torch.int64,
    torch.int32,
    torch.int8,
    torch.uint8,
    torch.bool,
]
SHAPE = (37, 29)  # 1073 entries: the mask's last byte is part padding


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("changed", [0, 1, 11, 320, 1073])
def test_a_delta_rebuilds_every_dtype_bit_for_bit_in_the_cheapest_encoding(tmp_path, gen, dtype, changed):
    n = SHAPE[0] * SHAPE[1]
    base = {"w": random_tensor(SHAPE, dtype, gen), "scalar": random_tensor((), dtype, gen)}
    positions = torch.randperm(n, generator=gen)[:changed].sort().values
    tuned = {"w": changed_at(base["w"], positions, gen), "scalar": base["scalar"].clone()}
    before = {k: v.clone() for k, v in base.items()}
    report = save_delta(tuned, base, tmp_path / "d.safetensors")
    assert_identical(load_delta(tmp_path / "d.safetensors", base), tuned)
    assert_identical(base, before)  # the base is not touched
    counts = dict.fromkeys(delta.ENCODINGS, 0)
    for encoding in ("none", cheapest("w", n, changed, base["w"].element_size())):  # the scalar is unchanged
        counts[encoding] += 1
    assert report.encodings == counts
    assert (report.changed, report.total) == (changed, n + 1)


def test_every_encoding_is_chosen_where_it_is_cheapest(tmp_path, gen):
    # float32, 4096 entries: positions 8c + 2h, mask 512 + 4c + 2h, dense 16384 + h
    base = {k: torch.randn(64, 64, generator=gen) for k in ("a", "b", "c", "d")}
    tuned = {
        "a": base["a"].clone(),
        "b": changed_at(base["b"], torch.arange(0, 4096, 97), gen),  # 43 changed: positions
        "c": changed_at(base["c"], torch.arange(0, 4096, 9), gen),  # 456 changed: mask
        "d": changed_at(base["d"], torch.arange(0, 4096, 1)[:4000], gen),  # 4000 changed: dense
    }
    report = save_delta(tuned, base, tmp_path / "d.safetensors")
    assert report.encodings == {"none": 1, "positions": 1, "mask": 1, "dense": 1}
    stored = safetensors_load((tmp_path / "d.safetensors").read_bytes())
    assert set(stored) == {"positions/b", "values/b", "mask/c", "values/c", "values/d"}
    assert stored["positions/b"].dtype == torch.int32 and stored["mask/c"].dtype == torch.uint8
    assert_identical(load_delta(tmp_path / "d.safetensors", base), tuned)


def encoded(key: str, new: torch.Tensor, old: torch.Tensor, encoding: str) -> dict[str, torch.Tensor]:
    """The stored tensors of ``encoding``, built here with NumPy (the oracle)."""
    new_bits, old_bits = (t.reshape(-1).view(torch.int32).numpy() for t in (new, old))
    changed = new_bits != old_bits
    values = torch.from_numpy(new_bits[changed].copy()).view(torch.float32)
    if encoding == "positions":
        return {f"positions/{key}": torch.from_numpy(np.flatnonzero(changed).astype(np.int32)), f"values/{key}": values}
    if encoding == "mask":
        return {f"mask/{key}": torch.from_numpy(np.packbits(changed)), f"values/{key}": values}
    return {f"values/{key}": new.clone()}


@pytest.mark.parametrize("changed", [5, 600, 4000])
def test_the_chosen_encoding_gives_the_smallest_file(tmp_path, gen, changed):
    """Every other encoding, written by hand as a valid delta, makes a larger file (and
    rebuilds the same weights)."""
    base = {"layer.weight": torch.randn(64, 64, generator=gen)}
    tuned = {"layer.weight": changed_at(base["layer.weight"], torch.randperm(4096, generator=gen)[:changed], gen)}
    report = save_delta(tuned, base, tmp_path / "chosen.safetensors")
    chosen = next(e for e, count in report.encodings.items() if count)
    metadata = delta._metadata((tmp_path / "chosen.safetensors").read_bytes())
    for other in {"positions", "mask", "dense"} - {chosen}:
        stored = encoded("layer.weight", tuned["layer.weight"], base["layer.weight"], other)
        entries = json.loads(metadata["tensors"])
        entries["layer.weight"]["encoding"] = other
        data = safetensors_save(
            stored,
            metadata={**metadata, "tensors": json.dumps(entries), "checksum": delta._digest(stored, stored)},
        )
        (tmp_path / f"{other}.safetensors").write_bytes(data)
        assert_identical(load_delta(tmp_path / f"{other}.safetensors", base), tuned)
        assert report.delta_bytes < len(data), other


def test_non_contiguous_and_empty_tensors(tmp_path, gen):
    base = {"t": torch.randn(12, 7, generator=gen).t(), "empty": torch.zeros(0, 3)}
    tuned = {"t": base["t"].clone(), "empty": torch.zeros(0, 3)}
    tuned["t"][3, 5] = 1.5
    assert not base["t"].is_contiguous()
    report = save_delta(tuned, base, tmp_path / "d.safetensors")
    assert report.changed == 1 and report.encodings["none"] == 1
    assert_identical(load_delta(tmp_path / "d.safetensors", base), tuned)


def test_signed_zeros_and_nan_payloads_are_compared_as_bits(tmp_path):
    quiet, other = torch.tensor([0x7FC00000, 0x7FC00001], dtype=torch.int32).view(torch.float32)
    base = {"w": torch.stack([torch.tensor(0.0), torch.tensor(0.0), quiet, quiet, torch.tensor(1.0)])}
    tuned = {"w": torch.stack([torch.tensor(-0.0), torch.tensor(0.0), other, quiet, torch.tensor(1.0)])}
    report = save_delta(tuned, base, tmp_path / "d.safetensors")
    assert report.changed == 2  # -0.0 for 0.0 and one NaN payload for another; the equal NaN is unchanged
    rebuilt = load_delta(tmp_path / "d.safetensors", base)
    assert_identical(rebuilt, tuned)
    assert torch.signbit(rebuilt["w"][0]) and rebuilt["w"].view(torch.int32)[2] == 0x7FC00001


# ---------------------------------------------------------------------------------------
# Models: a new head, buffers, a transformer


def sparse_finetune(model: nn.Module, fraction: float, gen: torch.Generator) -> nn.Module:
    """A copy of ``model`` with a random ``fraction`` of each parameter's entries moved."""
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        for p in tuned.parameters():
            moved = torch.rand(p.shape, generator=gen) < fraction
            p.copy_(torch.where(moved, p + 0.01 * torch.randn(p.shape, generator=gen), p))
    return tuned


def test_a_new_head_and_buffers_rebuild_a_model_with_the_same_outputs(tmp_path, gen):
    base = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    tuned = sparse_finetune(base, 0.05, gen)
    tuned[3] = nn.Linear(16, 5)  # another head: replaced (another shape)
    tuned.append(nn.Linear(5, 2))  # and a new layer: added
    tuned.train()(torch.randn(32, 8, generator=gen))  # the batch statistics move: every buffer changes
    state = dict(base.state_dict(), extra=torch.ones(3))  # a tensor the fine-tuned model dropped
    report = save_delta(tuned, state, tmp_path / "d.safetensors")
    assert report.added == ("4.weight", "4.bias") and report.replaced == ("3.weight", "3.bias")
    assert report.removed == ("extra",)
    assert str(report).endswith("; new: 4.weight, 4.bias; replaced: 3.weight, 3.bias; removed: extra")
    weights = load_delta(tmp_path / "d.safetensors", state)
    assert_identical(weights, tuned.state_dict())
    assert weights["1.num_batches_tracked"].dtype == torch.int64
    rebuilt = copy.deepcopy(tuned)
    for p in rebuilt.parameters():
        p.data.zero_()
    rebuilt.load_state_dict(weights)
    x = torch.randn(10, 8, generator=gen)
    assert torch.equal(rebuilt.eval()(x), tuned.eval()(x))


def test_apply_delta_loads_a_transformer_in_place(tmp_path, gen):
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
    base = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    tuned = sparse_finetune(base, 0.05, gen).eval()
    save_delta(tuned, base, tmp_path / "d.safetensors")
    target = copy.deepcopy(base)
    before = {name: p for name, p in target.named_parameters()}
    assert apply_delta(target, tmp_path / "d.safetensors") is target
    assert all(p is before[name] for name, p in target.named_parameters())  # in place
    assert_identical(target.state_dict(), tuned.state_dict())
    x = torch.randn(3, 5, 16, generator=gen)
    with torch.no_grad():
        assert torch.equal(target(x), tuned(x))


def test_apply_delta_needs_the_fine_tuned_architecture(tmp_path, gen):
    base = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    tuned = copy.deepcopy(base)
    tuned[1] = nn.Linear(4, 3)
    save_delta(tuned, base, tmp_path / "d.safetensors")
    path = str(tmp_path / "d.safetensors")
    with pytest.raises(
        InputError,
        match=re.escape(
            f"model must have the fine-tuned model's tensors to apply delta file {path!r}: "
            "its '1.weight' is float32 of shape (2, 4), the fine-tuned one float32 of shape (3, 4)"
        ),
    ):
        apply_delta(copy.deepcopy(base), path)
    with pytest.raises(InputError, match=r"it lacks '1.weight', '1.bias'$"):
        apply_delta(nn.Sequential(nn.Linear(4, 4)), path)
    target = copy.deepcopy(tuned)
    target[0].load_state_dict(base[0].state_dict())
    assert_identical(apply_delta(target, path).state_dict(), tuned.state_dict())


# ---------------------------------------------------------------------------------------
# Tied weights: GPT-2's lm_head.weight is transformer.wte.weight


def tiny_gpt2(*, tie: bool = True) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    config.tie_word_embeddings = tie
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture
def gpt2(gen):
    """(base, tuned): a tiny tied GPT-2 and a copy with 5 % of its entries moved."""
    torch.manual_seed(0)  # the model's initialization draws from the global generator
    base = tiny_gpt2()
    tuned = sparse_finetune(base, 0.05, gen).eval()
    assert tuned.lm_head.weight is tuned.transformer.wte.weight  # deepcopy keeps the tie
    return base, tuned


def tied(model: nn.Module) -> bool:
    return model.lm_head.weight is model.transformer.wte.weight


def same_logits(a: nn.Module, b: nn.Module, gen: torch.Generator) -> bool:
    ids = torch.randint(0, 64, (2, 9), generator=gen)
    with torch.no_grad():
        return torch.equal(a(ids).logits, b(ids).logits)


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_tied_weights_are_stored_and_counted_once(tmp_path, gpt2):
    base, tuned = gpt2
    report = save_delta(tuned, base, tmp_path / "d.safetensors")
    assert report.tied == {"lm_head.weight": "transformer.wte.weight"}
    assert str(report).endswith("; tied: lm_head.weight = transformer.wte.weight")
    stored = safetensors_load((tmp_path / "d.safetensors").read_bytes())
    assert "values/transformer.wte.weight" in stored
    assert not [name for name in stored if name.endswith("/lm_head.weight")]
    assert sum(report.encodings.values()) == len(tuned.state_dict()) - 1
    # a full checkpoint as Hugging Face saves it: the tied tensor once
    tuned.save_pretrained(tmp_path / "hf")
    checkpoint = safetensors_load((tmp_path / "hf" / "model.safetensors").read_bytes())
    assert "lm_head.weight" not in checkpoint
    # its size, header and all (metadata aside), to the padding's 8 bytes
    bare = tmp_path / "bare.safetensors"
    save_file(dict(checkpoint), str(bare))
    assert abs(report.full_bytes - os.path.getsize(bare)) <= 8
    assert report.total == sum(t.numel() for t in checkpoint.values())
    # the same weights untied (as version 1 stored a tie): the tensor twice, in file and counts
    twice = save_delta({k: v.clone() for k, v in tuned.state_dict().items()}, base, tmp_path / "twice.safetensors")
    stored_twice = safetensors_load((tmp_path / "twice.safetensors").read_bytes())
    again = nbytes(t for name, t in stored_twice.items() if name.endswith("/lm_head.weight"))  # mask and values
    assert again > 0 and report.delta_bytes <= twice.delta_bytes - again
    wte, wte0 = tuned.transformer.wte.weight, base.transformer.wte.weight
    assert twice.total - report.total == wte.numel()
    assert twice.changed - report.changed == int((wte != wte0).sum()) > 0
    assert abs(twice.full_bytes - report.full_bytes - wte.numel() * 4) < 100  # and its header entry
    assert twice.tied == {}


def test_a_tied_model_rebuilt_either_way_keeps_its_tie(tmp_path, gpt2, gen):
    base, tuned = gpt2
    path = tmp_path / "d.safetensors"
    save_delta(tuned, base, path)
    # in place
    target = copy.deepcopy(base)
    assert apply_delta(target, path) is target and tied(target)
    assert_identical(target.state_dict(), tuned.state_dict())
    assert same_logits(target, tuned, gen)
    # as a state dict, loaded into another model of the architecture
    weights = load_delta(path, base)
    assert weights["lm_head.weight"] is weights["transformer.wte.weight"]
    assert list(weights) == list(tuned.state_dict())
    torch.manual_seed(1)
    other = tiny_gpt2()
    other.load_state_dict(weights)
    assert tied(other)
    assert_identical(other.state_dict(), tuned.state_dict())
    assert same_logits(other, tuned, gen)
    # a version-1 file stores the tied tensor under both keys: it still applies
    save_delta({k: v.clone() for k, v in tuned.state_dict().items()}, base, tmp_path / "v1.safetensors")
    target = apply_delta(copy.deepcopy(base), tmp_path / "v1.safetensors")
    assert tied(target) and same_logits(target, tuned, gen)


def test_a_tie_the_base_does_not_have(tmp_path, gpt2, gen):
    base, tuned = gpt2
    # an untied base whose head differs from its embedding: the tensor is built on the embedding
    untied = tiny_gpt2(tie=False)
    untied.load_state_dict(base.state_dict())
    with torch.no_grad():
        untied.lm_head.weight.add_(1.0)
    report = save_delta(tuned, untied, tmp_path / "d.safetensors")
    assert report.tied == {"lm_head.weight": "transformer.wte.weight"} and report.encodings["dense"] == 0
    weights = load_delta(tmp_path / "d.safetensors", untied)
    assert_identical(weights, tuned.state_dict())
    assert weights["lm_head.weight"] is weights["transformer.wte.weight"]
    target = apply_delta(copy.deepcopy(untied), tmp_path / "d.safetensors")
    assert not tied(target) and same_logits(target, tuned, gen)  # the values, not the tie
    # a base that holds only the head: the tensor is stored under it
    state = {k: v for k, v in base.state_dict().items() if k != "transformer.wte.weight"}
    report = save_delta(tuned, state, tmp_path / "head.safetensors")
    assert report.tied == {"transformer.wte.weight": "lm_head.weight"} and report.added == ()
    weights = load_delta(tmp_path / "head.safetensors", state)
    assert_identical(weights, tuned.state_dict())
    assert weights["lm_head.weight"] is weights["transformer.wte.weight"]


def test_a_tied_model_is_refused_a_delta_that_unties(tmp_path, gpt2, gen):
    base, _ = gpt2
    tuned = tiny_gpt2(tie=False)
    tuned.load_state_dict(base.state_dict())
    with torch.no_grad():
        tuned.lm_head.weight[0, :3] += 1.0  # the head moved apart from the embedding
    path = tmp_path / "d.safetensors"
    report = save_delta(tuned, base, path)
    assert report.tied == {} and report.encodings["positions"] == 1
    assert_identical(load_delta(path, base), tuned.state_dict())
    with pytest.raises(
        InputError,
        match="^"
        + re.escape(
            f"model must have the fine-tuned model's tensors to apply delta file {str(path)!r}: it ties "
            "'transformer.wte.weight' and 'lm_head.weight' (one tensor), which the fine-tuned model holds as "
            "different tensors; untie them"
        )
        + "$",
    ):
        apply_delta(copy.deepcopy(base), path)
    target = tiny_gpt2(tie=False)  # an untied model holding the base takes it
    target.load_state_dict(base.state_dict())
    assert same_logits(apply_delta(target, path), tuned, gen)


# ---------------------------------------------------------------------------------------
# The base: fingerprinted


def test_another_base_is_refused_unless_asked(tmp_path, gen):
    base = nn.Linear(20, 10)
    tuned = sparse_finetune(base, 0.05, gen)
    path = tmp_path / "d.safetensors"
    save_delta(tuned, base, path)
    other = nn.Linear(20, 10)
    message = (
        re.escape(f"base must be the model delta file {str(path)!r} was saved against (fingerprint ")
        + "[0-9a-f]{16}"
        + re.escape("), got another (fingerprint ")
        + "[0-9a-f]{16}"
        + re.escape("); pass check_base=False to apply it anyway")
    )
    with pytest.raises(InputError, match=f"^{message}$"):
        load_delta(path, other)
    with pytest.raises(InputError, match=f"^{message}$"):
        apply_delta(copy.deepcopy(other), path)
    rebuilt = load_delta(path, other, check_base=False)
    moved = tuned.weight != base.weight
    assert torch.equal(rebuilt["weight"], torch.where(moved, tuned.weight, other.weight))
    with pytest.raises(InputError, match="^base must hold every tensor delta file .* is built on; it lacks 'bias'$"):
        load_delta(path, {"weight": base.weight}, check_base=False)
    with pytest.raises(
        InputError,
        match="^base must hold the tensors delta file .* is built on as they were; "
        r"its 'bias' is float16 of shape \(10,\), the delta's float32 of shape \(10,\)$",
    ):
        load_delta(path, {"weight": base.weight, "bias": base.bias.half()})
    with pytest.raises(InputError, match="^check_base must be True or False, got 'no'$"):
        load_delta(path, base, check_base="no")


# ---------------------------------------------------------------------------------------
# The report


def test_the_report_counts_bytes_and_entries(tmp_path, gen):
    base = {"w": torch.randn(100, 50, generator=gen), "b": torch.zeros(50, dtype=torch.bfloat16)}
    tuned = {"w": changed_at(base["w"], [3, 70, 999], gen), "b": base["b"].clone()}
    report = save_delta(tuned, base, tmp_path / "d.safetensors")
    assert isinstance(report, DeltaReport) and report.path == tmp_path / "d.safetensors"
    assert report.delta_bytes == os.path.getsize(tmp_path / "d.safetensors")
    save_file(tuned, str(tmp_path / "full.safetensors"))  # the full checkpoint it stands for
    assert abs(report.full_bytes - os.path.getsize(tmp_path / "full.safetensors")) <= 8
    assert (report.changed, report.total) == (3, 5050)
    assert report.ratio == report.delta_bytes / report.full_bytes
    assert re.fullmatch(
        r"delta: \d+\.\d % of a full checkpoint \(\d+ B of 20\.2 kB\); 99\.9 % of the entries unchanged", str(report)
    )
    with pytest.raises(AttributeError):
        report.changed = 0  # type: ignore[misc]


def test_a_95_percent_unchanged_float32_model_costs_under_10_percent(tmp_path, gen):
    base = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    tuned = sparse_finetune(base, 0.05, gen)
    report = save_delta(tuned, base, tmp_path / "d.safetensors")
    assert 0.94 < report.unchanged_fraction < 0.96
    assert report.ratio < 0.10


# ---------------------------------------------------------------------------------------
# Bad inputs


def test_bad_arguments_are_named(tmp_path):
    model = {"w": torch.ones(3)}
    with pytest.raises(InputError, match=re.escape(f"delta file {str(tmp_path)!r} is a folder: name a file")):
        save_delta(model, model, tmp_path)
    with pytest.raises(InputError, match=re.escape(f"delta file {str(tmp_path)!r} is a folder: name a delta file")):
        load_delta(tmp_path, model)
    with pytest.raises(FileNotFoundError, match="delta file '.*missing' does not exist"):
        load_delta(tmp_path / "missing", model)
    with pytest.raises(
        TypeError,
        match=r"^model must be an nn.Module or a state dict \(a mapping of names to tensors\), got \[1, 2\]$",
    ):
        save_delta([1, 2], model, tmp_path / "d")
    with pytest.raises(
        TypeError, match="^base must be a state dict of tensors named by strings, got one with 'w': list$"
    ):
        save_delta(model, {"w": [1.0]}, tmp_path / "d")
    with pytest.raises(TypeError, match=r"^path must be a file path \(a str or os.PathLike\), got 3$"):
        save_delta(model, model, 3)
    with pytest.raises(TypeError, match=r"^model must be an nn.Module, got \{'w'"):
        apply_delta(model, tmp_path / "d")  # type: ignore[arg-type]
    with pytest.raises(
        InputError, match="^model's 'z' must be of a dtype a safetensors file holds, got torch.complex128$"
    ):
        save_delta({"z": torch.zeros(2, dtype=torch.complex128)}, {}, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_files_that_are_not_deltas_are_refused(tmp_path):
    base = {"w": torch.ones(3)}
    (tmp_path / "text").write_text("not a delta")
    with pytest.raises(InputError, match=r"^delta file '.*text' is not a safetensors file: "):
        load_delta(tmp_path / "text", base)
    (tmp_path / "plain").write_bytes(safetensors_save(base))
    with pytest.raises(
        InputError,
        match=r"^delta file '.*plain' is not a shrinkage delta \(its format is None, not 'shrinkage-delta'\)$",
    ):
        load_delta(tmp_path / "plain", base)
    (tmp_path / "future").write_bytes(safetensors_save(base, metadata={"format": "shrinkage-delta", "version": "2"}))
    with pytest.raises(
        InputError, match=r"^delta file '.*future' is a version '2' delta; this shrinkage reads version '1'$"
    ):
        load_delta(tmp_path / "future", base)


def rewrite(path, tensors=None, entries=None):
    """Rewrite a delta file with edited tensors or description, and a checksum that fits
    them (a crafted file, not a damaged one)."""
    data = path.read_bytes()
    stored = safetensors_load(data)
    metadata = delta._metadata(data)
    if tensors:
        tensors(stored)
    described = json.loads(metadata["tensors"])
    if entries:
        entries(described)
    aliases = {key: spec["alias"] for key, spec in described.items() if delta._is_alias(spec)}
    metadata.update(tensors=json.dumps(described), checksum=delta._checksum(stored, aliases))
    path.write_bytes(safetensors_save(stored, metadata=metadata))


def _set(mapping, key, value):
    mapping[key] = value


CRAFTED = {
    "positions outside": (
        lambda s: s["positions/b"].__setitem__(-1, 4096),
        None,
        "'b' has positions out of order or outside its 4096 entries",
    ),
    "positions repeated": (
        lambda s: s["positions/b"].__setitem__(1, s["positions/b"][0]),
        None,
        "'b' has positions out of order or outside its 4096 entries",
    ),
    "positions of int64": (
        lambda s: _set(s, "positions/b", s["positions/b"].long()),
        None,
        "'b' has positions of torch.int64 and shape (43,), not a list of torch.int32 for its 4096 entries",
    ),
    "values short of the mask": (
        lambda s: _set(s, "values/c", s["values/c"][:-1].clone()),
        None,
        "'c' has 455 values of shape (455,) for 456 changed entries",
    ),
    "mask padding": (
        None,
        lambda e: e["c"].__setitem__("shape", [4095]),
        "'c' has a mask with bits set past its 4095 entries",
    ),
    "mask length": (
        lambda s: _set(s, "mask/c", s["mask/c"][:-1].clone()),
        None,
        "'c' has a mask of torch.uint8 and shape (511,), not 512 bytes for its 4096 entries",
    ),
    "unknown encoding": (
        None,
        lambda e: e["a"].__setitem__("encoding", "zip"),
        "'a' has an unknown encoding 'zip' (known: none, positions, mask, dense)",
    ),
    "dtype": (
        None,
        lambda e: e["d"].__setitem__("dtype", "float16"),
        "'d' is described as float16 but its values are float32",
    ),
    "dense shape": (
        None,
        lambda e: e["d"].__setitem__("shape", [4096]),
        "'d' is described as of shape (4096,) but its values are (64, 64)",
    ),
    "a missing tensor": (
        lambda s: s.pop("mask/c"),
        None,
        "'c' is encoded as 'mask' but the file lacks its tensor 'mask/c'",
    ),
    "an extra tensor": (
        lambda s: _set(s, "values/a", torch.ones(2)),
        None,
        "it holds a tensor 'values/a' that its description does not name",
    ),
    "a bad shape": (
        None,
        lambda e: e["a"].__setitem__("shape", [-1]),
        "'a' has a shape [-1] that is not a list of sizes",
    ),
    "wide positions": (
        None,
        lambda e: e["b"].__setitem__("shape", [2**31]),
        "'b' has positions of torch.int32 and shape (43,), not a list of torch.int64 for its 2147483648 entries",
    ),
    "a tie to nothing": (
        None,
        lambda e: e["c_tied"].__setitem__("alias", "x"),
        "'c_tied' is tied to 'x', which is not a tensor the file stores",
    ),
    "a tie to itself": (
        None,
        lambda e: e["c_tied"].__setitem__("alias", "c_tied"),
        "'c_tied' is tied to 'c_tied', which is not a tensor the file stores",
    ),
    "a tie to a tie": (
        None,
        lambda e: _set(e, "a", {"alias": "c_tied"}),
        "'a' is tied to 'c_tied', which is not a tensor the file stores",
    ),
    "a tie to a number": (
        None,
        lambda e: e["c_tied"].__setitem__("alias", 3),
        "'c_tied' is tied to 3, which is not a tensor the file stores",
    ),
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A delta with every encoding, a new, a replaced and a tied tensor: (its bytes, base, tuned)."""
    gen = torch.Generator().manual_seed(1)
    base = {k: torch.randn(64, 64, generator=gen) for k in ("a", "b", "c", "d")}
    base.update(head=torch.zeros(3, dtype=torch.bfloat16), gone=torch.ones(2))
    tuned = {
        "a": base["a"].clone(),
        "b": changed_at(base["b"], torch.arange(0, 4096, 97), gen),
        "c": changed_at(base["c"], torch.arange(0, 4096, 9), gen),
        "d": changed_at(base["d"], torch.arange(4000), gen),
        "head": torch.ones(5, dtype=torch.bfloat16),
        "new": torch.tensor([True, False]),
    }
    tuned["c_tied"] = tuned["c"]  # one tensor under two keys: stored under "c"
    path = tmp_path_factory.mktemp("delta") / "sample.safetensors"
    save_delta(tuned, base, path)
    return path.read_bytes(), base, tuned


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_files_are_refused_naming_what_is_wrong(tmp_path, sample, case):
    data, base, _ = sample
    path = tmp_path / "d.safetensors"
    path.write_bytes(data)
    tensors, entries, message = CRAFTED[case]
    rewrite(path, tensors, entries)
    with pytest.raises(InputError, match=f"^{re.escape(f'delta file {str(path)!r} is damaged: {message}')}$"):
        load_delta(path, base)


def test_a_tie_moved_to_another_tensor_fails_the_checksum(tmp_path, sample):
    data, base, _ = sample
    metadata = delta._metadata(data)
    entries = json.loads(metadata["tensors"])
    assert entries["c_tied"] == {"alias": "c"}
    entries["c_tied"] = {"alias": "b"}  # the same shape and dtype: only the checksum can tell
    path = tmp_path / "d.safetensors"
    path.write_bytes(safetensors_save(safetensors_load(data), metadata={**metadata, "tensors": json.dumps(entries)}))
    with pytest.raises(
        InputError,
        match=f"^{re.escape(f'delta file {str(path)!r} is damaged: its tensors and ties do not match their checksum')}$",
    ):
        load_delta(path, base)


def test_a_damaged_header_is_called_damaged(tmp_path, sample):
    data, base, _ = sample
    length = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + length]  # JSON, padded with spaces
    damaged = bytearray(data)
    damaged[8 + header.index(b'"dtype":"') + 1] ^= 0x01  # one tensor's "dtype" is now "etype"
    path = tmp_path / "d.safetensors"
    path.write_bytes(bytes(damaged))
    column = len(header.rstrip())  # a missing field is reported at the header's closing brace
    message = (
        f"delta file {str(path)!r} is damaged: invalid JSON in header: missing field `dtype` at line 1 column {column}"
    )
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        load_delta(path, base)
    path.write_bytes(data[:100])  # cut inside the header
    message = f"delta file {str(path)!r} is damaged: it ends at byte 100, inside its header (of {length} bytes)"
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        load_delta(path, base)
    path.write_bytes(data[:-1])  # cut inside the tensors
    with pytest.raises(InputError, match=f"^{re.escape(f'delta file {str(path)!r} is damaged: ')}"):
        load_delta(path, base)
    path.write_bytes(b"\x10" + bytes(7) + b"[not a header]  ")  # a plausible length, but no JSON object
    with pytest.raises(InputError, match=f"^{re.escape(f'delta file {str(path)!r} is not a safetensors file: ')}"):
        load_delta(path, base)


def refused_or_identical(path, base, tuned) -> None:
    """Damage is refused with an InputError, or was harmless (the same weights come back)."""
    try:
        weights = load_delta(path, base)
    except InputError as error:
        assert "\n" not in str(error) and str(path) in str(error)
        return
    assert_identical(weights, tuned)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("damaged") / "d.safetensors"


@settings(max_examples=150, derandomize=True, deadline=None)
@given(st.data())
def test_a_truncated_file_is_refused(sample, scratch, data):
    content, base, _ = sample
    scratch.write_bytes(content[: data.draw(st.integers(0, len(content) - 1))])
    with pytest.raises(InputError, match="^delta file .* is (not a safetensors file|damaged)"):
        load_delta(scratch, base)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.data())
def test_flipped_bytes_are_refused_or_harmless(sample, scratch, data):
    content, base, tuned = sample
    damaged = bytearray(content)
    for _ in range(data.draw(st.integers(1, 3))):
        # half the flips in the header (8 bytes of length, then JSON), half anywhere
        header = int.from_bytes(content[:8], "little") + 8
        at = data.draw(st.integers(0, header - 1) | st.integers(0, len(content) - 1))
        damaged[at] ^= data.draw(st.integers(1, 255))
    scratch.write_bytes(bytes(damaged))
    refused_or_identical(scratch, base, tuned)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 2**40)
    | st.sampled_from(["", "dense", "none", "delta", "float32", "zip"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["encoding", "shape", "x"]), inner),
    max_leaves=6,
)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.data())
def test_an_edited_description_is_refused_or_harmless(sample, scratch, data):
    content, base, tuned = sample
    metadata = delta._metadata(content)
    field = data.draw(st.sampled_from(["format", "version", "base", "checksum", "tensors", "removed", "tensors"]))
    if field == "tensors" and data.draw(st.booleans()):  # one field of one tensor's description
        entries = json.loads(metadata["tensors"])
        key = data.draw(st.sampled_from([*entries, "gone", "other"]))
        if key in entries and data.draw(st.booleans()):
            entries[key][data.draw(st.sampled_from(["encoding", "dtype", "shape", "origin", "x"]))] = data.draw(
                json_values
            )
        elif key in entries and data.draw(st.booleans()):
            del entries[key]
        else:
            entries[key] = data.draw(json_values)
        metadata["tensors"] = json.dumps(entries)
    elif data.draw(st.booleans()):  # the field's text, edited
        text = metadata[field]
        at = data.draw(st.integers(0, len(text)))
        metadata[field] = text[:at] + data.draw(st.text(max_size=3)) + text[at + data.draw(st.integers(0, 3)) :]
    else:
        metadata[field] = json.dumps(data.draw(json_values))
    scratch.write_bytes(safetensors_save(safetensors_load(content), metadata=metadata))
    refused_or_identical(scratch, base, tuned)


def test_the_sample_rebuilds(sample, scratch):
    content, base, tuned = sample
    scratch.write_bytes(content)
    weights = load_delta(scratch, base)
    assert_identical(weights, tuned)
    assert weights["c_tied"] is weights["c"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_against_a_cpu_base_rebuild_on_the_bases_device(tmp_path, gen):
    base = {"w": torch.randn(40, 30, generator=gen).bfloat16(), "n": torch.tensor(3)}
    tuned = {"w": changed_at(base["w"], [0, 17, 1199], gen).cuda(), "n": torch.tensor(4).cuda()}
    save_delta(tuned, base, tmp_path / "d.safetensors")
    on_cpu = load_delta(tmp_path / "d.safetensors", base)
    assert_identical(on_cpu, tuned)
    assert {t.device.type for t in on_cpu.values()} == {"cpu"}
    on_gpu = load_delta(tmp_path / "d.safetensors", {k: v.cuda() for k, v in base.items()})
    assert {t.device.type for t in on_gpu.values()} == {"cuda"}
    assert_identical(on_gpu, tuned)
    mixed = load_delta(tmp_path / "d.safetensors", {"w": base["w"].cuda(), "n": base["n"]})
    assert (mixed["w"].device.type, mixed["n"].device.type) == ("cuda", "cpu")  # each on its base tensor's device

"""Fuzz tests of the files a user may be handed: model files (mutations of their JSON
description, of their safetensors header and of their bytes) and results stores (any value
in any column of any row).

Every case loads, and then works, or is refused with the library's input error in one
line; the command line answers it with exit code 0 or 2, never a traceback; and no case
may allocate more than a bounded amount of memory: each runs under an address-space
limit (``resource.setrlimit``) 512 MiB above what the process held before it, while the
files are a few kilobytes and the tensors they really hold a few hundred bytes (the memory
bomb of the issue, a 244-byte file describing a 32768 × 32768 layer, took 4.4 GB).
Hypothesis runs derandomized; each test counts its outcomes and requires both kinds, so a
mutation that every case refuses early cannot pass for a fuzz test.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import struct
import warnings
from collections import Counter
from contextlib import closing, contextmanager, suppress
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from shrinkage import InputError
from shrinkage.models import SkipMLP
from shrinkage.prune import load_model, model_bytes
from shrinkage.study import StudyConfig, run_study
from shrinkage.study.cli import main
from shrinkage.study.predictor import load_predictor
from shrinkage.study.store import Store

_LIMIT = 512 << 20  # bytes of address space a case may add
_SCALE = float(os.environ.get("SHRINKAGE_FUZZ_SCALE", "1"))  # more cases: SHRINKAGE_FUZZ_SCALE=10


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )


@contextmanager
def _memory_limit():
    """No allocation beyond ``_LIMIT`` more bytes of address space than now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    held = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (held + _LIMIT, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _fuzz(examples: int, check) -> Counter:
    """Run ``check`` (a function of Hypothesis's ``data``, returning ``"loaded"`` or
    ``"refused"``) on ``examples`` × ``_SCALE`` cases under the memory limit; the count of
    each outcome."""
    outcomes: Counter = Counter()

    @_settings(int(examples * _SCALE))
    @given(data=st.data())
    def case(data):
        outcomes[check(data)] += 1

    with _memory_limit():
        case()
    return outcomes


def _refused(error: Exception) -> str:
    assert "\n" not in str(error).strip(), f"a message of more than one line: {error}"
    return "refused"


def _cli(*args) -> str:
    """Run a command; exit code 0 (``"loaded"``) or 2 (``"refused"``) and never a traceback."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code in (0, 2), f"exit code {result.exit_code}: {result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output, result.output
    return "loaded" if result.exit_code == 0 else "refused"


# ---------------------------------------------------------------------------- mutations
_SPECIAL = [0, -1, 1, 2, 3, 10**9, 2**31, 2**63, 32768, -(2**40), 0.5, 1e308, -0.0]
_LEAVES = (
    st.none()
    | st.booleans()
    | st.sampled_from(_SPECIAL)
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["F32", "F64", "I64", "U8", "BOOL", "F16", "weight", "bias", "linear", "relu", "numeric"])
)
_JSON = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _paths(value, prefix=()):
    """Every place in a JSON tree, as key/index tuples (the root is ``()``)."""
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _paths(inner, (*prefix, index))


def _mutate_json(data: st.DataObject, value):
    """``value`` (a JSON tree) with one place replaced, deleted, duplicated or given a new
    key; the replacement is often a neighbour of the number that was there."""
    value = json.loads(json.dumps(value))
    path = data.draw(st.sampled_from(list(_paths(value))), label="place")
    action = data.draw(st.sampled_from(["replace", "near", "delete", "add", "repeat"]), label="action")
    if not path:
        return data.draw(_JSON, label="root")
    *above, last = path
    parent = value
    for key in above:
        parent = parent[key]
    old = parent[last]
    if action == "near" and isinstance(old, (int, float)) and not isinstance(old, bool):
        parent[last] = data.draw(st.sampled_from([old + 1, old - 1, -old, old * 1000, 0, 2 * old]), label="near")
    elif action == "delete":
        del parent[last]
    elif action == "add" and isinstance(old, dict):
        old[data.draw(st.text(max_size=8), label="key")] = data.draw(_JSON, label="added")
    elif action == "repeat" and isinstance(old, list) and old:
        old.append(old[-1])
    else:
        parent[last] = data.draw(_JSON, label="replacement")
    return value


def _mutate_bytes(data: st.DataObject, blob: bytes) -> bytes:
    """``blob`` (a safetensors file) truncated, or with some bytes overwritten, inserted or
    removed, anywhere or among the tensors' bytes."""
    (length,) = struct.unpack("<Q", blob[:8])
    tensors = min(8 + length, len(blob))  # where the tensors' bytes start
    blob = bytearray(blob)
    action = data.draw(st.sampled_from(["truncate", "overwrite", "insert", "remove"]), label="bytes")
    at = data.draw(st.integers(0, len(blob)) | st.integers(tensors, len(blob)), label="at")
    if action == "truncate":
        return bytes(blob[:at])
    chunk = data.draw(st.binary(min_size=1, max_size=16), label="chunk")
    if action == "overwrite":
        blob[at : at + len(chunk)] = chunk
    elif action == "insert":
        blob[at:at] = chunk
    else:
        del blob[at : at + len(chunk)]
    return bytes(blob)


def _split(blob: bytes) -> tuple[dict, bytes]:
    """A safetensors file's JSON header and its tensor bytes."""
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + length]), blob[8 + length :]


def _join(header: dict, tensors: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + tensors


def _with_description(blob: bytes, description) -> bytes:
    header, tensors = _split(blob)
    header["__metadata__"]["shrinkage"] = json.dumps(description)
    return _join(header, tensors)


# ---------------------------------------------------------------------------- seeds
def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "size": rng.normal(10.0, 3.0, n),
            "colour": rng.choice(["red", "green", "blue"], n).astype(object),
            "noise": rng.normal(size=n),
        }
    )
    frame.loc[rng.choice(n, n // 10, replace=False), "size"] = np.nan
    frame["y"] = frame["size"].fillna(10.0) + 3.0 * (frame["colour"] == "red") + rng.normal(size=n)
    return frame


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """A small study's store and rows, its stored model files, and models of the other
    kinds a model file describes (a SkipMLP, a CNN)."""
    folder = tmp_path_factory.mktemp("fuzz")
    _frame(80, 0).to_csv(folder / "train.csv", index=False)
    _frame(12, 1).drop(columns="y").to_csv(folder / "rows.csv", index=False)
    config = StudyConfig(
        data=str(folder / "train.csv"), target="y", penalties=("none", "l1"), hidden=(4,), cv=2, n_lambdas=3, n_jobs=1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Store(folder / "results.sqlite") as store:
            study = run_study(config, store, progress=False)
            models = [bytes(run[kind]) for run in store.runs(study) for kind in ("model", "penalized") if run[kind]]
    torch.manual_seed(0)
    others = [
        model_bytes(SkipMLP(3, (4,), 2)),
        model_bytes(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))),
    ]
    return {
        "folder": folder,
        "store": folder / "results.sqlite",
        "rows": folder / "rows.csv",
        "models": models,
        "others": others,
    }


def _check_model(blob: bytes, rows: pd.DataFrame, predictor: bool) -> str:
    """Load a (mutated) model file: it works, or it is refused in one line."""
    try:
        if not predictor:
            load_model(blob)
            return "loaded"
        loaded = load_predictor(blob)
    except InputError as error:
        return _refused(error)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unseen levels of a mutated description
            predictions = loaded.table(rows)
    except InputError as error:
        return _refused(error)
    assert len(predictions) == len(rows)
    return "loaded"


def _fuzz_models(seeds, mutate, examples: int) -> Counter:
    """Load ``examples`` mutations of the seed files, in the library and on the command line."""
    rows = pd.read_csv(seeds["rows"])
    path = seeds["folder"] / "mutated.safetensors"
    out = seeds["folder"] / "predictions.csv"

    def check(data) -> str:
        predictor = data.draw(st.booleans(), label="predictor")
        pool = seeds["models"] if predictor else seeds["others"]
        blob = mutate(data, data.draw(st.sampled_from(pool), label="seed"))
        outcome = _check_model(blob, rows, predictor)
        path.write_bytes(blob)
        command = (
            ("predict", path, "--data", seeds["rows"], "--out", out) if predictor else ("export", path, "--out", out)
        )
        assert _cli(*command) == outcome, f"the library and the command line disagree on this file ({outcome})"
        return outcome

    return _fuzz(examples, check)


def _mutated_description(data, blob: bytes) -> bytes:
    header, _ = _split(blob)
    return _with_description(blob, _mutate_json(data, json.loads(header["__metadata__"]["shrinkage"])))


def _mutated_header(data, blob: bytes) -> bytes:
    header, tensors = _split(blob)
    return _join(_mutate_json(data, header), tensors)


# ---------------------------------------------------------------------------- model files
@pytest.mark.parametrize(
    "mutate, examples, loaded",
    [(_mutated_description, 250, 10), (_mutated_header, 150, 1), (_mutate_bytes, 150, 1)],
    ids=["description", "safetensors-header", "bytes"],
)
def test_a_mutated_model_file_loads_and_works_or_is_refused_in_one_line(seeds, mutate, examples, loaded):
    """Most mutations of the safetensors header or of the bytes are refused (the format
    is strict); some still load (a key added to the metadata, a byte of a weight)."""
    outcomes = _fuzz_models(seeds, mutate, examples)
    print(f"{mutate.__name__}: {dict(outcomes)}")
    assert outcomes["loaded"] >= loaded and outcomes["refused"] >= 10, outcomes


def test_a_description_of_a_huge_layer_is_refused_within_memory(seeds):
    """The issue's memory bomb: a small file whose description claims a 32768 × 32768 layer."""
    blob = seeds["others"][1]
    header, _ = _split(blob)
    description = json.loads(header["__metadata__"]["shrinkage"])
    description["shrinkage_model"]["layers"][-1].update({"in": 32768, "out": 32768})
    with _memory_limit(), pytest.raises(InputError, match="tensors that do not match its description"):
        load_model(_with_description(blob, description))


_LIMITED = """
import resource, sys
from pathlib import Path
from shrinkage.study.cli import main
held = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (held + {limit}, resource.RLIM_INFINITY))
main(sys.argv[1:])
"""


def test_the_command_line_refuses_a_memory_bomb_within_a_memory_limit(seeds, tmp_path):
    """In a process of its own, under an address-space limit: the bomb as a model file
    (``export``) and as a store's model blob (``export`` and ``report``) is refused, exit 2."""
    import subprocess
    import sys

    blob = seeds["models"][0]
    header, _ = _split(blob)
    description = json.loads(header["__metadata__"]["shrinkage"])
    description["shrinkage_model"]["layers"][0].update({"in": 32768, "out": 32768})
    bomb = _with_description(blob, description)
    (tmp_path / "bomb.safetensors").write_bytes(bomb)
    store = tmp_path / "bomb.sqlite"
    store.write_bytes(seeds["store"].read_bytes())
    with closing(sqlite3.connect(store)) as db, db:
        db.execute("UPDATE runs SET model = ?, penalized = ?", (bomb, bomb))
    script = _LIMITED.format(limit=_LIMIT)
    for args in (
        ["export", tmp_path / "bomb.safetensors", "--out", tmp_path / "out.safetensors"],
        ["export", store, "--penalty", "l1", "--out", tmp_path / "out.safetensors"],
        ["report", store, "--out", tmp_path / "report.html"],
    ):
        done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True)
        assert done.returncode == 2 and "do not match its description" in done.stderr, (args, done.stderr)


# ---------------------------------------------------------------------------- stores
_TABLES = {"studies": "id", "runs": "id", "points": "rowid"}


def _store_value(data: st.DataObject, old):
    """A value for a store column: anything SQLite holds, or a mutation of what is there."""
    kinds = ["none", "int", "float", "text", "blob"]
    if isinstance(old, str):
        kinds.append("json")
    if isinstance(old, bytes):
        kinds.append("bytes")
    if isinstance(old, bytes) and b'"__metadata__"' in old[:1000]:  # a model file
        kinds += ["description", "description"]
    kind = data.draw(st.sampled_from(kinds), label="kind")
    if kind == "json":
        try:
            return json.dumps(_mutate_json(data, json.loads(old)))
        except ValueError:
            return old + data.draw(st.text(max_size=4))
    if kind == "bytes":
        return _mutate_bytes(data, old)
    if kind == "description":
        return _mutated_description(data, old)
    return data.draw(
        {
            "none": st.none(),
            "int": st.sampled_from(_SPECIAL[:10]) | st.integers(-(2**63), 2**63 - 1),
            "float": st.floats(allow_nan=True, allow_infinity=True),
            "text": st.text(max_size=12) | st.sampled_from(["[]", "{}", "null", "[1, 2]", '{"task": 1}', "NaN"]),
            "blob": st.binary(max_size=40),
        }[kind],
        label=kind,
    )


def _mutate_store(data: st.DataObject, source: Path, folder: Path) -> tuple[Path, str]:
    """A new copy of ``source`` in ``folder`` with one value of one row replaced (a new
    file each time: nothing of an earlier case, such as a -wal file, can reach it), and
    the table of that row."""
    target = folder / f"mutated-{len(list(folder.glob('mutated-*')))}.sqlite"
    target.write_bytes(source.read_bytes())
    with closing(sqlite3.connect(target)) as db, db:
        table = data.draw(st.sampled_from(sorted(_TABLES)), label="table")
        key = _TABLES[table]
        columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
        column = data.draw(st.sampled_from(columns), label="column")
        ids = [row[0] for row in db.execute(f"SELECT {key} FROM {table} ORDER BY {key}")]
        row = data.draw(st.sampled_from(ids), label="row")
        (old,) = db.execute(f"SELECT {column} FROM {table} WHERE {key} = ?", (row,)).fetchone()
        with suppress(sqlite3.IntegrityError, OverflowError):  # a repeated key, a number SQLite cannot hold
            db.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (_store_value(data, old), row))
    return target, table


def _read_store(path: Path) -> str:
    """Everything the library reads from a store: it reads, or it is a StoreError (or,
    for a file cut to nothing, the FileNotFoundError ``Store`` documents for an empty file)."""
    try:
        with Store(path, read_only=True) as store:
            for study in store.studies():
                store.study(study["id"])
                for run in store.runs(study["id"]):
                    store.points(run["id"])
    except (InputError, FileNotFoundError) as error:
        return _refused(error)
    return "loaded"


def test_a_store_with_any_value_in_any_column_reads_or_is_a_store_error(seeds):
    folder = seeds["folder"] / "stores"
    folder.mkdir()
    out = seeds["folder"] / "exported.safetensors"

    def check(data) -> str:
        path, table = _mutate_store(data, seeds["store"], folder)
        outcome = _read_store(path)
        _cli("runs", path)
        penalty = data.draw(st.sampled_from(["none", "l1"]), label="penalty")
        exported = _cli("export", path, "--penalty", penalty, "--out", out)
        if table != "points":  # which export does not read
            assert outcome == "loaded" or exported == "refused", "export used a study or run the library refuses"
        return outcome

    outcomes = _fuzz(300, check)
    print(f"store rows: {dict(outcomes)}")
    assert outcomes["loaded"] >= 20 and outcomes["refused"] >= 20, outcomes


def test_a_report_of_a_store_with_any_value_in_any_column_is_written_or_refused(seeds):
    """Fewer cases: a report draws its figures (about 1.5 s each)."""
    folder = seeds["folder"] / "reported"
    folder.mkdir()
    out = seeds["folder"] / "report.html"

    def check(data) -> str:
        path, _ = _mutate_store(data, seeds["store"], folder)
        out.unlink(missing_ok=True)
        outcome = _cli("report", path, "--out", out)
        assert out.exists() == (outcome == "loaded")
        return outcome

    outcomes = _fuzz(8, check)
    print(f"reports: {dict(outcomes)}")
    assert outcomes["loaded"] >= 1, outcomes


def test_a_store_file_with_damaged_bytes_reads_or_is_a_store_error(seeds):
    """Bytes of the SQLite file itself overwritten, inserted, removed or cut off."""
    folder = seeds["folder"] / "damaged"
    folder.mkdir()

    def check(data) -> str:
        path = folder / f"damaged-{len(list(folder.iterdir()))}.sqlite"
        path.write_bytes(_mutate_bytes(data, seeds["store"].read_bytes()))
        outcome = _read_store(path)
        runs = _cli("runs", path)
        assert outcome == "refused" or runs == "loaded"  # (runs reads the studies only)
        return outcome

    outcomes = _fuzz(100, check)
    print(f"store bytes: {dict(outcomes)}")
    assert outcomes["loaded"] >= 5 and outcomes["refused"] >= 5, outcomes

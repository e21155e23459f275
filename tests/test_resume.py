"""Interrupted studies resume: a study process killed with SIGKILL at several points
and started again ends with exactly the rows of an uninterrupted run, and recomputes
nothing it had stored. Same command, same seed: identical stored results. Two
processes writing one store at once leave it whole."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

PENALTIES = "none,l1,group"  # no penalty, an element-wise and a group penalty
# (the store only: what these tests compare; the report's test below writes one)
ARGS = [
    "--penalties",
    PENALTIES,
    "--hidden",
    "4",
    "--cv",
    "3",
    "--n-lambdas",
    "4",
    "--n-jobs",
    "1",
    "--quiet",
    "--no-report",
]
# what differs between two runs of one command: row ids, timings, dates
VOLATILE = {"id", "run_id", "study_id", "seconds", "created"}


def _study(out: Path, store: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "shrinkage", "study", *ARGS, "--out", str(out), "--store", str(store)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _runs(store: Path) -> list[tuple[int, str, float]]:
    """(id, penalty, seconds) of the stored runs, read while another process may write."""
    if not store.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)) as db:
            return db.execute("SELECT id, penalty, seconds FROM runs ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # schema not there yet
        return []


def _kill_after(store: Path, out: Path, n_runs: int) -> list[tuple[int, str, float]]:
    """Start the study, SIGKILL it as soon as ``n_runs`` runs are stored; the runs then."""
    process = _study(out, store)
    deadline = time.monotonic() + 300
    while len(_runs(store)) < n_runs and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the study ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return _runs(store)


def _finish(store: Path, out: Path) -> None:
    process = _study(out, store)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err.decode()


def _content(store: Path) -> dict[str, list[tuple]]:
    """Every stored row, less what legitimately differs between runs."""
    with sqlite3.connect(store) as db:
        db.row_factory = sqlite3.Row
        tables = {}
        for table, order in (("studies", "key"), ("runs", "penalty"), ("points", "run_id, fold, idx")):
            rows = [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY {order}")]
            kept = [tuple(v for k, v in r.items() if k not in VOLATILE) for r in rows]
            if table == "points":  # run ids differ; name each point's run by its penalty
                names = dict(db.execute("SELECT id, penalty FROM runs").fetchall())
                kept = sorted((names[r["run_id"]], *k) for r, k in zip(rows, kept))
            tables[table] = kept
        return tables


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, list[tuple]]:
    folder = tmp_path_factory.mktemp("reference")
    _finish(folder / "results.sqlite", folder)
    return _content(folder / "results.sqlite")


def test_killed_study_resumes_to_exactly_the_uninterrupted_rows(tmp_path, reference):
    store = tmp_path / "results.sqlite"
    seen: dict[str, tuple[int, float]] = {}
    for n_runs in (0, 1, 2):  # killed: before any run is stored, after the first, after the second
        runs = _kill_after(store, tmp_path, n_runs)
        assert len(runs) >= n_runs
        for run_id, penalty, seconds in runs:
            if penalty in seen:  # stored before an earlier kill: not recomputed since
                assert seen[penalty] == (run_id, seconds), penalty
            seen[penalty] = (run_id, seconds)
    assert len(seen) < len(PENALTIES.split(",")), "every penalty was stored before the last kill: nothing to resume"
    _finish(store, tmp_path)
    for run_id, penalty, seconds in _runs(store):
        if penalty in seen:
            assert seen[penalty] == (run_id, seconds), penalty  # resumed, not redone
    assert _content(store) == reference
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT status FROM studies").fetchall() == [("complete",)]


def test_two_processes_writing_one_store_and_the_same_seed_gives_the_same_rows(tmp_path, reference):
    """Two processes run the same study into one store at once; it stays whole, and
    every row equals the reference run's: the same command and seed, other processes,
    identical stored results."""
    store = tmp_path / "shared.sqlite"
    first, second = _study(tmp_path / "a", store), _study(tmp_path / "b", store)
    for process in (first, second):
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err.decode()
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert _content(store) == reference  # one study, each penalty once, the same numbers


def _marked(mark: str) -> list[int]:
    """Processes whose environment carries ``mark`` (the study and what it started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_a_killed_study_leaves_no_worker_process_behind(tmp_path):
    """With --n-jobs 2 a worker process trains penalties too; SIGKILL of the study's
    process must not leave it waiting for work forever."""
    mark = f"SHRINKAGE_TEST_MARK={os.getpid()}-{time.monotonic_ns()}"
    args = [*ARGS[: ARGS.index("--n-jobs")], "--n-jobs", "2", *ARGS[ARGS.index("--n-jobs") + 2 :]]
    command = [
        sys.executable,
        "-m",
        "shrinkage",
        "study",
        *args,
        "--out",
        str(tmp_path),
        "--store",
        str(tmp_path / "s.sqlite"),
    ]
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while len(_marked(mark)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the worker has started
    assert process.poll() is None and len(_marked(mark)) >= 2, "no worker process started"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 60  # a liveness bound, not a speed figure: the worker checks every second
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _marked(mark) == []


def test_a_terminated_study_ends_as_an_interrupted_one_its_store_closed(tmp_path):
    """SIGTERM (``kill``): "aborted", exit code 1, the finished runs kept and no -wal or
    -shm file left beside the store (they held its last runs after a kill before)."""
    store = tmp_path / "results.sqlite"
    process = _study(tmp_path, store)
    deadline = time.monotonic() + 300
    while not _runs(store) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the study ended before it could be terminated"
    os.kill(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1 and err.decode().strip().endswith("shrinkage: aborted"), err.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]
    assert len(_runs(store)) >= 1


def test_a_report_killed_while_it_is_written_leaves_the_old_report_whole(tmp_path):
    """SIGKILL at three moments spread over a `shrinkage report` command, the old report in
    place: each time the report is the old one or a whole new one, never a part (a kill
    while it was written left a 0-byte file in place of a good report, 3 runs of 3)."""
    store = tmp_path / "results.sqlite"
    small = ["--penalties", "none,l1", "--hidden", "4", "--cv", "2", "--n-lambdas", "3", "--n-jobs", "1", "--quiet"]
    study = [sys.executable, "-m", "shrinkage", "study", *small, "--out", str(tmp_path)]
    subprocess.run(study, check=True, capture_output=True)
    report = tmp_path / "report.html"
    old = report.read_bytes()
    command = [sys.executable, "-m", "shrinkage", "report", str(store), "--out", str(report)]
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True)
    whole = time.monotonic() - started
    for delay in np.linspace(0.5, whole, 3):
        report.write_bytes(old)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.kill()
        process.wait()
        written = report.read_bytes()
        assert written == old or (written.rstrip().endswith(b"</html>") and len(written) > len(old) // 2), delay

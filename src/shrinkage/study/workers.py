"""The worker processes of a study: its penalties train in them, and its report's
figures are drawn in them.

A light module (no scikit-learn, no runner): ``shrinkage study`` starts its workers
before it imports the rest of the study, so that their start (a second or two of
imports each) overlaps its own. The pool is loky's (joblib's processes: no ``if
__name__ == "__main__"`` needed in the caller's script), an executor of our own, so
that joblib's shared one is left as it expects.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import joblib
from joblib.externals.loky import ProcessPoolExecutor  # type: ignore[import-untyped]

from .config import StudyConfig

__all__ = ["Workers", "fixed_mmap_threshold", "keep_pyarrow_out", "study_processes", "worker_reuse"]


def study_processes(config: StudyConfig, device: str, pending: int, *, local: bool = True) -> int:
    """How many processes train ``pending`` penalties: on the CPU, ``n_jobs`` (default:
    every core), at most one per penalty; one on any other device, or when joblib's
    active backend is not ``local`` (Dask, Ray: it receives the sequential engine's
    folds)."""
    if device != "cpu" or pending <= 1 or not local:
        return 1
    return max(1, min(pending, joblib.effective_n_jobs(config.jobs(device))))


class Workers:
    """``processes − 1`` worker processes beside this one, each running ``threads``
    torch threads (the machine's cores split between the processes); ``pool`` is
    ``None`` for one process.
    """

    def __init__(self, processes: int):
        self.processes = max(1, processes)
        self.threads = max(1, (os.cpu_count() or 1) // self.processes)
        # a worker keeps pyarrow out where this process did (the command line): pandas
        # objects backed by pyarrow (a library user's) need it to be unpickled
        kept_out = "pyarrow" in sys.modules and sys.modules["pyarrow"] is None
        self.pool = (
            ProcessPoolExecutor(
                self.processes - 1, initializer=_start_worker, initargs=(self.threads, os.getpid(), kept_out)
            )
            if self.processes > 1
            else None
        )
        if self.pool is not None:
            with _interrupts_ignored():  # a terminal's Ctrl-C reaches every process of the group:
                self.pool.submit(int)  # the study's handles it (it kills its workers), theirs ignore it

    def close(self, *, finished: bool = True) -> None:
        """Let the workers go (idle, they exit on their own: nothing here waits for
        them), or kill them when the study did not finish."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, kill_workers=not finished)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close(finished=kind is None)


@contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """SIGINT ignored while worker processes start: they inherit it (Python leaves an
    ignored SIGINT ignored), so a Ctrl-C in their first seconds prints no traceback of
    their imports. Only the main thread may set it; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


#: A worker process's unpenalized fits, shared by the penalties it trains (a worker
#: serves one study: its pool is the study's); a :class:`shrinkage.batched.Reuse`.
_REUSE: list[Any] = []


def worker_reuse() -> Any:
    """This worker process's :class:`~shrinkage.batched.Reuse`."""
    return _REUSE[0]


def keep_pyarrow_out() -> None:
    """Keep pyarrow out of this process, when pandas is not imported yet: pandas imports
    pyarrow, where installed, at its own import (to read its version; 34 MB of memory),
    and a study needs it only to read a Parquet file. ``import pyarrow`` then fails here
    as if it were not installed (pandas stores text without it), for the rest of the
    process: only a process that is the study's alone calls this (the ``shrinkage``
    program, its workers)."""
    if "pandas" not in sys.modules:
        sys.modules.setdefault("pyarrow", None)  # type: ignore[arg-type]


#: mallopt's parameter for glibc's mmap threshold
_M_MMAP_THRESHOLD = -3


def fixed_mmap_threshold() -> None:
    """Keep glibc's malloc at a fixed mmap threshold (its default, 128 KiB) in this
    process: a block larger than that is mapped and, once freed, given back. The
    threshold otherwise rises to the largest block freed so far, and tensors of up to
    that size then come from the heap, whose freed memory is seldom given back: the
    batched engine's tensors (a few MB, a new size whenever a model leaves the stack)
    grew a study's process by 20 to 200 MB. Nothing happens where the C library is not
    glibc. Only a process that is the study's alone calls this (the ``shrinkage``
    program, its workers): the setting is the whole process's, for good."""
    import ctypes

    try:
        glibc = sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
        if glibc:
            ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    except (ValueError, OSError, AttributeError):  # not glibc after all: nothing to set
        pass


def _start_worker(threads: int, parent: int, pyarrow_out: bool) -> None:
    """A worker process's setup: pyarrow kept out where the study's process keeps it out
    (:func:`keep_pyarrow_out`), its torch threads, the imports its tasks need, and a
    watch on the study's process: when that one dies without shutting the pool down
    (SIGKILL), the worker exits too instead of waiting for work forever."""
    if pyarrow_out:
        keep_pyarrow_out()
    fixed_mmap_threshold()
    import atexit
    import gc

    import torch

    from shrinkage.batched import Reuse

    from . import runner  # noqa: F401  (its tasks' module, imported while the study prepares)

    torch.set_num_threads(threads)
    _REUSE.append(Reuse())
    # the interpreter's last collections at exit would walk every object of torch and
    # of the study's data (a second, which the study's process waits for at its exit)
    atexit.register(gc.freeze)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="shrinkage-parent-watch").start()

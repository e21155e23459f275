"""The main job: compare no penalty, L1, L2, elastic net and group lasso (by default; any
preset of :mod:`shrinkage.presets`) on one data set.

:func:`run_study` reads the data (a bundled set, a synthetic set with known truth, or a
CSV/Parquet file), holds out a test split, encodes the features on the training rows
only, then for each penalty chooses λ by K-fold cross-validation on a path
(:func:`~shrinkage.cv.cross_validate`; relaxed for the sparsifying penalties), keeps
the model at λ_1se (or λ_min) and scores it on the test split. Everything lands in a
:class:`~shrinkage.study.store.Store` as it finishes: the config, the data summary, every
fold's and the full data's path points, the chosen models' metrics, features and
weights. The report is built from the store alone.

The group lasso acts on input features: the one-hot columns of one categorical
feature form one group (kept or dropped whole), and the hidden layers' units form the
groups of the later layers.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np
import torch
from torch import nn

from shrinkage import _numba
from shrinkage.batched import Reuse
from shrinkage.cv import backend_is_local, cross_validate, cross_validate_unpenalized, one_standard_error
from shrinkage.models import MLP, SkipMLP
from shrinkage.path import PathConfig, PathPoint, RegularizationPath
from shrinkage.penalties import GroupLasso
from shrinkage.presets import get_preset
from shrinkage.splits import shuffle_split
from shrinkage.train import Diverged, evaluate, loss_for_task
from shrinkage.validation import InputError, fail

from .._warnings import warn
from .config import StudyConfig, resolve_device
from .datasets import load_dataset
from .predictor import Predictor, Preprocessing
from .store import Store
from .tabular import Encoder, Table, read_table, table_from_dataset
from .workers import Workers, study_processes, worker_reuse

__all__ = ["StudyConfig", "load_table", "prepare_study", "run_study"]


def load_table(config: StudyConfig) -> Table:
    """The study's data as a :class:`~shrinkage.study.tabular.Table`."""
    if config.data is not None:
        assert config.target is not None  # StudyConfig requires a target with a data file
        return read_table(config.data, config.target, task=config.task, categorical=config.categorical)
    assert config.dataset is not None  # StudyConfig requires a bundled set without a data file
    table = table_from_dataset(load_dataset(config.dataset))
    if config.task not in ("auto", table.task):
        raise fail("task", f"'{table.task}' (or 'auto') for the bundled set {config.dataset!r}", config.task)
    return table


def _fingerprint(table: Table) -> str:
    """A digest of the data: its column names and each row's values, hashed column by
    column by pandas (a second for a million rows; writing the table out as CSV to hash
    it took 30 s)."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(json.dumps([*map(str, table.features.columns), str(table.target.name)]).encode())
    for values in (table.features, table.target.astype(str)):
        digest.update(pd.util.hash_pandas_object(values, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class _Prepared:
    table: Table
    encoder: Encoder
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    y_scale: tuple[float, float] = (0.0, 1.0)
    summary: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing | None = None  # what a shipped model's inputs go through


def _missing_cells(table: Table, missing: str) -> dict[str, int]:
    """Missing feature values per column (of those the study uses) over all the table's rows;
    refused with ``missing="error"``."""
    counts = {str(c): int(n) for c, n in table.features.isna().sum().items() if n}
    if counts and missing == "error":
        listed = ", ".join(f"{c!r} ({n})" for c, n in counts.items())
        raise InputError(
            f"feature columns must have no missing values with missing='error', got {listed} "
            f"(missing cells per column, over all {table.n_samples} rows)"
        )
    return counts


def prepare_study(config: StudyConfig) -> _Prepared:
    """Read, split and encode the study's data (every data error surfaces here)."""
    table = load_table(config)
    fingerprint = _fingerprint(table)  # the data as read
    y = table.y()
    _check_rows(config, table.n_samples)
    # a split that keeps the classes' shares needs two rows of each class, and as many
    # test and training rows as classes
    test = math.ceil(table.n_samples * config.test_size)
    classes = len(np.unique(y)) if table.task != "regression" else 0
    stratifiable = classes and np.bincount(y).min() >= 2 and min(test, table.n_samples - test) >= classes
    stratify = y if stratifiable else None
    # scikit-learn's train_test_split, row for row
    train_rows, test_rows = shuffle_split(table.n_samples, config.test_size, config.seed, stratify)
    table.drop_constant_on(train_rows)
    missing = _missing_cells(table, config.missing)
    encoder = Encoder(config.missing).fit(table.features.iloc[train_rows])
    _check_encoding_fits(encoder, table.n_samples)
    X_train = encoder.transform(table.features.iloc[train_rows])
    X_test = encoder.transform(table.features.iloc[test_rows])
    _check_scaled(encoder, X_train, X_test)
    y_train, y_test = y[train_rows], y[test_rows]
    _check_classes(config, table, y_train)
    scale = (0.0, 1.0)
    if table.task == "regression":  # standardized, so that λ means the same on any data
        scale = _mean_and_scale(y_train, table)
        y_train, y_test = (y_train - scale[0]) / scale[1], (y_test - scale[0]) / scale[1]
    summary = {
        "name": table.name,
        "task": table.task,
        "n_samples": table.n_samples,
        "n_train": len(train_rows),
        "n_test": len(test_rows),
        "columns": encoder.group_names,
        "encoded_features": encoder.feature_names,
        "groups": encoder.groups,
        "classes": [str(c) for c in table.classes] if table.classes else None,
        "true_features": table.true_features,
        "target_scale": list(scale),
        "notes": table.notes,
        "missing": missing,  # imputed cells per column, over all rows (the imputer learns on the training rows)
        "fingerprint": fingerprint,
        "test_rows": [int(r) for r in test_rows],  # the data's rows (from 0) held out for the test
    }
    preprocessing = Preprocessing(
        tuple(encoder.columns()),
        table.task,
        {"name": str(table.target.name), "mean": scale[0], "scale": scale[1]},
        None if table.classes is None else tuple(str(c) for c in table.classes),
        None,
        tuple(table.dropped),
    )
    prepared = _Prepared(table, encoder, X_train, y_train, X_test, y_test, scale, summary, preprocessing)
    _check_network_fits(config, X_train.shape[1], len(table.classes or ()) if table.task == "multiclass" else 1)
    for name in config.penalties:  # a penalty the data cannot take fails now, before any training
        _penalty_rules(config, prepared, name)
    return prepared


def _check_rows(config: StudyConfig, rows: int) -> None:
    """Enough rows for the test split (two, for a test score) and the folds (two
    training rows and one validation row each), else an error naming all three."""
    test = math.ceil(rows * config.test_size)
    if test < 2 or rows - test < 2 * config.cv:
        least = max(math.ceil(2 / config.test_size), 2 * config.cv + 2)
        while least - math.ceil(least * config.test_size) < 2 * config.cv:
            least += 1
        raise InputError(
            f"the data must have at least {least} rows for a test split of {config.test_size:g} and "
            f"{config.cv} folds, got {rows} (fewer folds, --cv, or a larger --test-size may do)"
        )


def _check_scaled(encoder: Encoder, *encoded: np.ndarray) -> None:
    """Finite encoded values, else an error naming the column whose numbers overflow when
    standardized (their squares, near 1e300, are beyond float64)."""
    for X in encoded:
        bad = np.flatnonzero(~np.isfinite(X).all(axis=0))
        if len(bad):
            raise InputError(
                f"column {encoder.feature_names[int(bad[0])]!r} is too large to standardize (its numbers overflow "
                "float64 when squared): rescale it, such as to thousands or millions"
            )


def _check_classes(config: StudyConfig, table: Table, y_train: np.ndarray) -> None:
    """Each class in at least ``cv`` training rows (the folds keep the classes' shares),
    else an error naming the target and its rarest class: a target read as labels by
    mistake (numbers with a stray value, text unique to each row) shows here."""
    if table.task == "regression":
        return
    counts = np.bincount(y_train, minlength=len(table.classes or ()))
    if counts.min() < config.cv:
        rare = (table.classes or [])[int(counts.argmin())]
        raise InputError(
            f"target column {str(table.target.name)!r} must have at least {config.cv} training rows of each class "
            f"for {config.cv} folds, but its class {str(rare)!r} has {counts.min()} (of {len(counts)} classes): "
            "merge rare classes, use fewer folds (--cv), or --task regression for a numeric target"
        )


def _mean_and_scale(y, table: Table) -> tuple[float, float]:
    """The training target's mean and standard deviation, computed without overflow on a
    target near float64's largest numbers (its squares would overflow)."""
    peak = float(np.abs(y).max())
    if peak == 0.0:
        return 0.0, 1.0
    mean, std = peak * float(np.mean(y / peak)), peak * float(np.std(y / peak))
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise InputError(f"target column {str(table.target.name)!r} is too large to standardize (up to {peak:g})")
    return mean, std or 1.0


#: Bytes a float32 parameter takes to train: the weight, its gradient, Adam's two moments
_TRAINING_BYTES = 16


def _machine_memory() -> int | None:
    """This machine's memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def _check_network_fits(config: StudyConfig, n_features: int, n_outputs: int) -> None:
    """Refuse hidden layers whose network cannot train in this machine's memory, before
    any is built (``--hidden 100000,100000`` would ask for 40 GB of weights alone)."""
    widths = [n_features, *config.hidden, n_outputs]
    parameters = sum((a + 1) * b for a, b in itertools.pairwise(widths)) + n_features * n_outputs  # (+ a skip layer)
    needed = parameters * _TRAINING_BYTES
    memory = _machine_memory()
    if memory is not None and needed > memory:
        raise InputError(
            f"hidden must give a network this machine can train, got {','.join(map(str, config.hidden))}: "
            f"{parameters:.3g} parameters need about {needed / 1e9:.3g} GB to train, and this machine has "
            f"{memory / 1e9:.3g} GB of memory"
        )


#: bytes per cell of the encoded table: float64 from the encoder, its copies while the
#: columns are joined, and the float32 tensors training reads
_ENCODED_BYTES = 28


def _check_encoding_fits(encoder: Encoder, rows: int) -> None:
    """Refuse a table whose one-hot encoding cannot be held in this machine's memory (a
    text column with tens of thousands of levels), naming the widest column, before it
    is encoded."""
    needed = rows * len(encoder.feature_names) * _ENCODED_BYTES
    memory = _machine_memory()
    if memory is not None and needed > memory:
        name, levels = max(zip(encoder.group_names, map(len, encoder.groups)), key=lambda named: named[1])
        raise InputError(
            f"the encoded data must fit in this machine's memory: {len(encoder.feature_names)} encoded columns "
            f"(column {name!r} alone is {levels}, one per level) over {rows} rows need about {needed / 1e9:.3g} GB, "
            f"and this machine has {memory / 1e9:.3g} GB (drop the column, or group its rare levels)"
        )


def _network(config: StudyConfig, prepared: _Prepared, kind: str) -> Callable[[], nn.Module]:
    """A factory of the study's fresh networks: an MLP, or a SkipMLP for ``kind="skip_mlp"``."""
    n_features = prepared.X_train.shape[1]
    outputs = 1
    if prepared.table.task == "multiclass":
        assert prepared.table.classes is not None  # a classification table lists them (table.y() used them)
        outputs = len(prepared.table.classes)

    def factory() -> nn.Module:
        return (SkipMLP if kind == "skip_mlp" else MLP)(n_features, config.hidden, outputs)

    return factory


def _penalty_rules(config: StudyConfig, prepared: _Prepared, name: str) -> tuple[Callable[[], nn.Module], list | None]:
    """The network factory and the rules (at λ = 1) of one penalty of the study."""
    preset = get_preset(name)
    factory = _network(config, prepared, preset.model)
    try:
        rules = preset.rules(factory(), 1.0, l1_ratio=config.l1_ratio, feature_groups=prepared.encoder.groups)
    except InputError as error:
        grouped = [c for c, g in zip(prepared.encoder.group_names, prepared.encoder.groups) if len(g) > 1]
        where = f" (one-hot groups: the categorical column(s) {', '.join(map(repr, grouped))})" if grouped else ""
        raise InputError(f"{error}{where}") from None
    return factory, rules


def _test_metrics(model: nn.Module, prepared: _Prepared, task: str) -> tuple[float, float]:
    """(test loss, test score): standardized MSE and R², or cross-entropy and accuracy."""
    X = torch.as_tensor(prepared.X_test, dtype=torch.float32)
    y = torch.as_tensor(prepared.y_test)
    loss = evaluate(model, X, y if task != "regression" else y.float(), loss_for_task(task))
    with torch.no_grad():
        out = model.eval()(X).double().numpy()
    if task == "regression":
        residual = prepared.y_test - out[:, 0]
        return loss, float(1.0 - residual @ residual / np.sum((prepared.y_test - prepared.y_test.mean()) ** 2))
    predicted = (out[:, 0] > 0).astype(int) if out.shape[1] == 1 else out.argmax(axis=1)
    return loss, float(np.mean(predicted == prepared.y_test))


def _columns_kept(features: Sequence[int], groups: list[list[int]], names: list[str]) -> list[str]:
    used = set(features)
    return [name for name, members in zip(names, groups) if used.intersection(members)]


def _point_rows(path: RegularizationPath, fold: int, include_dense: bool = False) -> list[dict[str, Any]]:
    rows = []
    points: list[tuple[int, PathPoint]] = list(enumerate(path.points))
    if include_dense and path.dense is not None:
        points = [(-1, path.dense), *points]
    for idx, point in points:
        record = point.record()
        record["lambda"] = record.pop("lambda_")
        record.pop("feature_names")
        record.update(fold=fold, idx=idx, features=point.features, feature_norms=point.feature_norms)
        rows.append(record)
    return rows


def _weights(model: nn.Module) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in model.parameters() if p.ndim >= 2]).float().numpy()


@contextmanager
def _naming_divergence(where: str) -> Iterator[None]:
    try:
        yield
    except Diverged as error:
        raise error.within(where) from None


def run_study(
    config: StudyConfig,
    store: Store,
    *,
    prepared: _Prepared | None = None,
    progress: bool | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    workers: Workers | None = None,
) -> int:
    """Run (or resume) a study into ``store``; returns its id.

    A study is identified by its config and a fingerprint of its data: running the
    same study again continues it, skipping the penalties already stored.
    ``prepared`` is :func:`prepare_study`'s result when the caller made it already;
    ``on_run`` is called with each run's stored summary as it finishes; ``workers``
    are worker processes started by the caller (:class:`~shrinkage.study.workers.Workers`), else the study
    starts its own where it trains in several processes.
    """
    prepared = prepared if prepared is not None else prepare_study(config)
    table = prepared.table
    device = resolve_device(config.device)
    # results do not depend on n_jobs; they do on the device used (not on how it was named:
    # "auto" or "cuda"), and a CPU study keeps the key it had before devices were an option
    # (a study without categorical columns, the key it had before those were one; their
    # order does not matter)
    identity = {k: v for k, v in config.to_dict().items() if k not in ("n_jobs", "device")}
    if device != "cpu":
        identity["device"] = device
    if config.categorical:
        identity["categorical"] = sorted(config.categorical)
    else:
        del identity["categorical"]
    fingerprint = json.dumps([identity, prepared.summary["fingerprint"]], sort_keys=True)
    key = hashlib.sha256(fingerprint.encode()).hexdigest()[:20]
    study_id = store.find_study(key)
    if study_id is None:
        data = {**prepared.summary, "device": device}
        study_id = store.add_study(key=key, name=table.name, config=config.to_dict(), data=data)
    done = {run["penalty"] for run in store.runs(study_id)}
    pending = [name for name in config.penalties if name not in done]
    for run, points in _runs(config, prepared, pending, device, progress, workers):
        store.add_run(study_id, run, points)
        if on_run is not None:
            on_run(run)
    store.set_status(study_id, "complete")
    return study_id


def _processes(config: StudyConfig, device: str, pending: int) -> int:
    """How many processes train the pending penalties (:func:`~shrinkage.study.workers.study_processes`
    under joblib's active backend)."""
    return study_processes(config, device, pending, local=backend_is_local())


def _runs(
    config: StudyConfig,
    prepared: _Prepared,
    pending: list[str],
    device: str,
    progress: bool | None,
    workers: Workers | None = None,
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each pending penalty's run, in the study's order.

    With several processes (:func:`_processes`, or the caller's ``workers``), every
    process takes the next penalty from one queue, the longest to train first
    (:func:`_longest_first`), so that no process is left with a long one at the end;
    this one trains whenever the run it must hand on next is not ready, and each trains
    once. Each process runs ``cores // processes`` torch threads (the batched engine's
    small stacks one), so the penalties do not fight for the same cores; the folds of a
    penalty that falls back to the sequential engine share the same budget (``n_jobs``).
    """
    own = workers is None
    if workers is None:
        workers = Workers(_processes(config, device, len(pending)))
    processes = min(workers.processes, _processes(config, device, len(pending)))
    jobs = config.jobs(device)
    common: dict[str, Any] = dict(
        task=prepared.table.task,
        cv=config.cv,
        feature_names=prepared.encoder.feature_names,
        n_jobs=jobs if processes == 1 else max(1, joblib.effective_n_jobs(jobs) // processes),
        progress=progress if processes == 1 else False,
    )
    reuse = Reuse()  # every penalty starts from the same dense fits; relaxed fits recur too
    if processes == 1 or workers.pool is None:
        for name in pending:
            yield _raised_again(name, _run_recorded(config, prepared, name, device, {**common, "reuse": reuse}))
        if own:
            workers.close()
        return
    pool = workers.pool
    results: list[Future] = [Future() for _ in pending]
    queue = _Queue(_longest_first(pending))

    def feed() -> None:  # one per worker: the next penalty of the queue, one at a time
        while (i := queue.take()) is not None:
            try:
                results[i].set_result(pool.submit(_run_remote, config, prepared, pending[i], device, common).result())
            except BaseException as error:  # handed to this process, which raises it in order
                results[i].set_exception(error)

    feeders = [threading.Thread(target=feed, daemon=True) for _ in range(processes - 1)]
    for feeder in feeders:
        feeder.start()
    previous = torch.get_num_threads()
    torch.set_num_threads(workers.threads)
    finished = False
    try:
        for i in range(len(pending)):
            while not results[i].done() and (j := queue.take()) is not None:  # train while waiting
                here = {**common, "reuse": reuse}
                try:
                    results[j].set_result(_run_recorded(config, prepared, pending[j], device, here))
                except Exception as error:  # raised in order, as a worker's
                    results[j].set_exception(error)
            yield _raised_again(pending[i], results[i].result())
        finished = True
    finally:
        queue.close()  # after an error (or an interruption) the workers start nothing more
        torch.set_num_threads(previous)
        if own:
            workers.close(finished=finished)


def _longest_first(pending: Sequence[str]) -> list[int]:
    """The positions of ``pending`` by the time their penalties usually take, longest
    first: the group penalties (a Newton root per group in each prox), then the other
    sparsifying ones (relaxed refits on the feature sets they select), then the rest.
    Order only: the results do not depend on it."""

    def rank(name: str) -> int:
        preset = get_preset(name)
        if preset.penalty is None:
            return 0
        if issubclass(preset.penalty, GroupLasso) or preset.placement == "skip":
            return 3
        return 2 if preset.sparsifying() else 1

    return sorted(range(len(pending)), key=lambda i: -rank(pending[i]))


class _Queue:
    """Indices handed out in a given order, each once (thread-safe); closed, it hands out
    nothing more."""

    def __init__(self, order: Sequence[int]):
        self._lock = threading.Lock()
        self._order = list(order)

    def take(self) -> int | None:
        with self._lock:
            return self._order.pop(0) if self._order else None

    def close(self) -> None:
        with self._lock:
            self._order.clear()


_Recorded = tuple[tuple[dict[str, Any], list[dict[str, Any]]], list[tuple[str, type[Warning]]]]


def _run_recorded(
    config: StudyConfig, prepared: _Prepared, name: str, device: str, common: dict[str, Any]
) -> _Recorded:
    """:func:`_run_penalty`, with the warnings it raised (message, category) kept rather
    than shown: :func:`_runs` raises them again in the study's order, naming the penalty,
    in this process (a worker's would otherwise go, unformatted, to its stderr).

    The proxes run torch's code, not the Numba kernels: a study's process stays without
    Numba's 130 MB."""
    with warnings.catch_warnings(record=True) as caught, _numba.unused():
        run = _run_penalty(config, prepared, name, device, common)
    return run, [(str(w.message), w.category) for w in caught]


def _run_remote(config: StudyConfig, prepared: _Prepared, name: str, device: str, common: dict[str, Any]) -> _Recorded:
    """:func:`_run_recorded` in a worker process, sharing fits with the worker's other penalties."""
    return _run_recorded(config, prepared, name, device, {**common, "reuse": worker_reuse()})


def _raised_again(name: str, recorded: _Recorded) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run of :func:`_run_recorded`, its warnings raised again with the penalty's name."""
    run, caught = recorded
    for message, category in caught:
        warn(f"{name}: {message}", category)
    return run


def _run_penalty(
    config: StudyConfig, prepared: _Prepared, name: str, device: str, common: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One penalty's run: cross-validation, the chosen model scored on the test split;
    the run's summary and its path points, as the store takes them. Seeded alone, so
    that the run does not depend on the ones before it or on the process it runs in."""
    task = prepared.table.task
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    with _naming_divergence(f"penalty {name!r}"):
        preset = get_preset(name)
        factory, rules = _penalty_rules(config, prepared, name)
        if rules is None:
            scores, sizes, full, engine, engine_note = cross_validate_unpenalized(
                factory,
                prepared.X_train,
                prepared.y_train,
                config=PathConfig(seed=config.seed, device=device),
                **common,
            )
            # dense_start=True: the full fit's record is its dense point; the path returns its model
            assert full.model is not None and full.dense is not None
            model = penalized = full.model.cpu()  # scored and stored on the CPU
            mean, se, _, _ = one_standard_error(scores[:, None], np.array([0.0]), sizes)
            record = full.dense
            run = dict(
                penalty="none",
                rules=[],
                lambdas=[0.0],
                cv_mean=mean,
                cv_se=se,
                admissible=[True],
                lambda_min=0.0,
                lambda_1se=0.0,
                lambda_chosen=0.0,
                selection=config.selection,
                cv_loss=mean[0],
                cv_loss_se=se[0],
                engine=engine,
                engine_note=engine_note,
            )
            points = _point_rows(full, -1, include_dense=True)
            points += [dict(fold=k, idx=-1, **{"lambda": 0.0, "test_loss": float(s)}) for k, s in enumerate(scores)]
        else:
            sparsifying = preset.sparsifying(l1_ratio=config.l1_ratio)
            result = cross_validate(
                factory,
                prepared.X_train,
                prepared.y_train,
                penalty=rules,
                selection=config.selection,
                config=PathConfig(
                    n_lambdas=config.n_lambdas,
                    # L2 has no λ where weights vanish to end its grid: it gets twice the decades
                    lambda_min_ratio=config.lambda_min_ratio if sparsifying else config.lambda_min_ratio**2,
                    relax=config.relax and sparsifying,
                    on_divergence=config.on_divergence,
                    seed=config.seed,
                    device=device,
                ),
                **common,
            )
            model, record = result.model.cpu(), result.path.points[result.index]  # scored and stored on the CPU
            penalized = copy.deepcopy(model)  # the penalized fit (the chosen model may be relaxed)
            assert record.state is not None  # cross_validate keeps the full path's weights at every λ
            penalized.load_state_dict(record.state)
            run = dict(
                penalty=name,
                rules=[{"penalty": r.penalty.get_config(), "select": r.select} for r in rules],
                lambdas=result.lambdas,
                cv_mean=result.mean,
                cv_se=result.se,
                admissible=result.admissible,
                lambda_min=result.lambda_min,
                lambda_1se=result.lambda_1se,
                lambda_chosen=result.lambda_,
                selection=config.selection,
                cv_loss=result.mean[result.index],
                cv_loss_se=result.se[result.index],
                engine=result.engine,
                engine_note=result.engine_note,
                grid_notes=result.path.notes,
            )
            points = _point_rows(result.path, -1, include_dense=True)
            for k, fold in enumerate(result.folds):
                points += _point_rows(fold, k)
    test_loss, test_score = _test_metrics(model, prepared, task)
    weights = _weights(penalized)
    metadata = {"penalty": name, "lambda": run["lambda_chosen"], "target_scale": list(prepared.y_scale)}
    assert prepared.preprocessing is not None  # prepare_study describes it
    shipped = Predictor(model, prepared.preprocessing)
    predictions = shipped.predict_encoded(prepared.X_test)  # what `shrinkage predict` gives on those rows
    run.update(
        model=shipped.to_bytes(metadata),
        penalized=Predictor(penalized, prepared.preprocessing).to_bytes(metadata),
        test_loss=test_loss,
        test_score=test_score,
        test_predictions=predictions.tolist(),
        fraction_zero=float(np.mean(weights == 0)) if weights.size else 0.0,
        features=_columns_kept(record.features, prepared.encoder.groups, prepared.encoder.group_names),
        n_features=len(_columns_kept(record.features, prepared.encoder.groups, prepared.encoder.group_names)),
        weights=weights,
        seconds=time.perf_counter() - start,
    )
    return run, points

"""Row splits exactly as scikit-learn makes them, without importing scikit-learn.

:mod:`shrinkage.cv` (its folds), :mod:`shrinkage.path` (the rows held out for early
stopping) and the study (its test split) split rows as scikit-learn's ``KFold`` and
``StratifiedKFold`` (``shuffle=True``) and ``train_test_split`` do, index for index
from the same seed: a model of yours can be compared with theirs on the same folds
(``kfold(len(y), 5, seed)`` are :func:`~shrinkage.cv.cross_validate`'s folds for
regression, ``stratified_kfold(y, 5, seed)`` for classes). Importing scikit-learn costs a
second and about 75 MB (it loads much of SciPy), which the study's command would pay for
these few lines; the tests compare every function here with scikit-learn's over many
sizes, class balances and seeds.

The functions take valid input (some class with at least ``k`` rows — a smaller class is
dealt to fewer folds, as scikit-learn does —, ``0 < test_size < 1``, …): their callers
check it and name the parameter.

>>> [test.tolist() for _, test in kfold(6, 3, seed=0)]
[[2, 5], [1, 3], [0, 4]]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .validation import InputError

__all__ = ["kfold", "shuffle_split", "stratified_kfold"]

Folds = list[tuple[np.ndarray, np.ndarray]]


def _random_state(seed: Any) -> np.random.RandomState:
    """scikit-learn's ``check_random_state``: NumPy's global state for ``None``, a new
    ``RandomState`` for an integer, a given one as it is."""
    if seed is None:
        return np.random.mtrand._rand
    if isinstance(seed, np.random.RandomState):
        return seed
    return np.random.RandomState(seed)


def _from_test_folds(test_folds: np.ndarray, k: int) -> Folds:
    """(training rows, test rows) of each fold, both increasing, from each row's fold."""
    return [(np.flatnonzero(test_folds != i), np.flatnonzero(test_folds == i)) for i in range(k)]


def kfold(n_rows: int, k: int, seed: Any) -> Folds:
    """``KFold(k, shuffle=True, random_state=seed).split`` on ``n_rows`` rows."""
    order = np.arange(n_rows)
    _random_state(seed).shuffle(order)
    sizes = np.full(k, n_rows // k, dtype=int)
    sizes[: n_rows % k] += 1
    test_folds = np.empty(n_rows, dtype=int)
    for i, end in enumerate(np.cumsum(sizes)):
        test_folds[order[end - sizes[i] : end]] = i
    return _from_test_folds(test_folds, k)


def stratified_kfold(y: np.ndarray, k: int, seed: Any) -> Folds:
    """``StratifiedKFold(k, shuffle=True, random_state=seed).split`` on labels ``y``: each
    class dealt round-robin over the folds in sorted order, then its fold numbers
    shuffled."""
    rng = _random_state(seed)
    y = np.asarray(y).ravel()
    _, first, inverse = np.unique(y, return_index=True, return_inverse=True)
    _, order_of_appearance = np.unique(first, return_inverse=True)
    encoded = order_of_appearance[inverse.ravel()]  # 0 is the first label to appear, …
    n_classes = len(first)
    ordered = np.sort(encoded)
    allocation = np.asarray([np.bincount(ordered[i::k], minlength=n_classes) for i in range(k)])
    test_folds = np.empty(len(y), dtype="i")
    for c in range(n_classes):
        folds_of_class = np.arange(k).repeat(allocation[:, c])
        rng.shuffle(folds_of_class)
        test_folds[encoded == c] = folds_of_class
    return _from_test_folds(test_folds, k)


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """scikit-learn's approximate mode of the multivariate hypergeometric: ``draws``
    spread over the classes in proportion to ``counts``, the remainders' largest first
    (ties broken by ``rng``)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    missing = int(draws - floored.sum())
    if missing > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            now = min(len(tied), missing)
            floored[rng.choice(tied, size=now, replace=False)] += 1
            missing -= now
            if missing == 0:
                break
    return floored.astype(int)


def shuffle_split(
    n_rows: int, test_size: float, seed: Any, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The (training, test) row indices of ``train_test_split(..., test_size=test_size,
    random_state=seed, stratify=stratify)`` (``test_size`` a fraction in (0, 1);
    ``stratify`` one label per row), in its order."""
    if stratify is not None and np.ndim(stratify) != 1:  # (scikit-learn stratifies on rows of several columns)
        raise InputError(f"stratify must be one label per row (1-D), got shape {np.shape(stratify)}")
    n_test = math.ceil(test_size * n_rows)
    n_train = n_rows - n_test
    rng = _random_state(seed)
    if stratify is None:
        permutation = rng.permutation(n_rows)
        return permutation[n_test : n_test + n_train], permutation[:n_test]
    _, labels, counts = np.unique(np.asarray(stratify), return_inverse=True, return_counts=True)
    by_class = np.split(np.argsort(labels.ravel(), kind="stable"), np.cumsum(counts)[:-1])
    train_counts = _approximate_mode(counts, n_train, rng)
    test_counts = _approximate_mode(counts - train_counts, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for rows, n_i, t_i in zip(by_class, train_counts, test_counts):
        shuffled = rows.take(rng.permutation(len(rows)), mode="clip")
        train.extend(shuffled[:n_i])
        test.extend(shuffled[n_i : n_i + t_i])
    return rng.permutation(train), rng.permutation(test)

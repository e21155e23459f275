"""The row splits of shrinkage.splits against scikit-learn's (the oracle): the same
indices, in the same order, from the same seed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from shrinkage.splits import kfold, shuffle_split, stratified_kfold


def _same(ours, theirs) -> bool:
    theirs = list(theirs)
    return len(ours) == len(theirs) and all(
        np.array_equal(a, c) and np.array_equal(b, d) for (a, b), (c, d) in zip(ours, theirs)
    )


@st.composite
def labelled(draw, min_per_class: int = 2):
    """Labels of 2–5 classes (integers or text), every class at least ``min_per_class``
    rows, in a random order."""
    counts = draw(st.lists(st.integers(min_per_class, 40), min_size=2, max_size=5))
    names = draw(st.sampled_from([np.arange(5), np.array(["b", "a", "zz", "B", "é"], dtype=object)]))
    y = np.repeat(names[: len(counts)], counts)
    return y[np.random.default_rng(draw(st.integers(0, 1000))).permutation(len(y))]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 400), k=st.integers(2, 10), seed=st.integers(0, 2**31 - 1))
def test_kfold_is_scikit_learns_shuffled_kfold(n, k, seed):
    k = min(k, n)
    assert _same(kfold(n, k, seed), KFold(k, shuffle=True, random_state=seed).split(np.zeros((n, 1))))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), k=st.integers(2, 6), seed=st.integers(0, 2**31 - 1))
def test_stratified_kfold_is_scikit_learns(data, k, seed):
    y = data.draw(labelled(min_per_class=k))
    theirs = StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros((len(y), 1)), y)
    assert _same(stratified_kfold(y, k, seed), theirs)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(4, 400), fraction=st.floats(0.05, 0.6), seed=st.integers(0, 2**31 - 1))
def test_shuffle_split_is_train_test_split(n, fraction, seed):
    train, test = train_test_split(np.arange(n), test_size=fraction, random_state=seed)
    ours = shuffle_split(n, fraction, seed)
    assert np.array_equal(ours[0], train) and np.array_equal(ours[1], test)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), fraction=st.floats(0.1, 0.5), seed=st.integers(0, 2**31 - 1))
def test_stratified_shuffle_split_is_train_test_split(data, fraction, seed):
    y = data.draw(labelled())
    classes, n = len(np.unique(y)), len(y)
    test_rows = int(np.ceil(fraction * n))
    if min(test_rows, n - test_rows) < classes:  # scikit-learn refuses (and so do the callers)
        return
    train, test = train_test_split(np.arange(n), test_size=fraction, random_state=seed, stratify=y)
    ours = shuffle_split(n, fraction, seed, stratify=y)
    assert np.array_equal(ours[0], train) and np.array_equal(ours[1], test)


@pytest.mark.parametrize("split", ["kfold", "stratified", "shuffle"])
def test_no_seed_draws_from_numpys_global_state_as_scikit_learn_does(split):
    y = np.repeat([0, 1, 2], 10)
    np.random.seed(7)
    if split == "kfold":
        ours, theirs = kfold(30, 3, None), KFold(3, shuffle=True).split(y.reshape(-1, 1))
    elif split == "stratified":
        ours, theirs = stratified_kfold(y, 3, None), StratifiedKFold(3, shuffle=True).split(y.reshape(-1, 1), y)
    else:
        ours = [shuffle_split(30, 0.25, None)]
        np.random.seed(7)
        theirs = [tuple(train_test_split(np.arange(30), test_size=0.25))]
        assert _same(ours, theirs)
        return
    ours = list(ours)
    np.random.seed(7)
    theirs = list(theirs)
    assert _same(ours, theirs)


def test_labels_for_a_stratified_split_are_one_per_row():
    from shrinkage.validation import InputError

    with pytest.raises(InputError, match=r"stratify must be one label per row \(1-D\), got shape \(6, 1\)"):
        shuffle_split(6, 0.5, 0, stratify=np.zeros((6, 1)))

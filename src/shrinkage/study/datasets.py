"""Data sets: the ones scikit-learn ships, and synthetic ones with known truth.

Everything here works offline. Arrays are float64 NumPy; the training code converts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shrinkage.validation import check_choice, check_int, check_number

__all__ = ["BUNDLED", "Dataset", "load_dataset", "make_synthetic"]


@dataclass
class Dataset:
    """Features, target and what is known about them.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        Real values for regression; class indices ``0..K-1`` for classification.
    feature_names : list of str
    task : {"regression", "binary", "multiclass"}
    name : str
    true_features : list of int or None
        For synthetic data: the columns the target depends on.
    classes : list or None
        Original class labels (``classes[k]`` is label of index k).
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    task: str
    name: str
    true_features: list[int] | None = None
    classes: list | None = None
    description: str = field(default="", repr=False)

    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]


def _sklearn(loader, name: str, task: str) -> Dataset:
    bunch = loader()
    names = [str(f) for f in bunch.feature_names]
    y = np.asarray(bunch.target)
    classes = None
    if task != "regression":
        classes = [str(c) for c in getattr(bunch, "target_names", np.unique(y))]
    return Dataset(
        np.asarray(bunch.data, dtype=np.float64),
        y.astype(np.float64 if task == "regression" else np.int64),
        names,
        task,
        name,
        classes=classes,
        description=bunch.DESCR.splitlines()[0] if getattr(bunch, "DESCR", None) else "",
    )


def _nonlinear(X: np.ndarray) -> np.ndarray:
    """2·sin(1.5·x₀) + 2·tanh(2·x₁) + x₂·x₃ + x₂ + x₃ + 1.5·max(x₄, 0)."""
    return (
        2 * np.sin(1.5 * X[:, 0])
        + 2 * np.tanh(2 * X[:, 1])
        + X[:, 2] * X[:, 3]
        + X[:, 2]
        + X[:, 3]
        + 1.5 * np.maximum(X[:, 4], 0)
    )


def make_synthetic(
    n_samples: int = 1000,
    n_features: int = 50,
    *,
    noise: float = 0.5,
    kind: str = "nonlinear",
    task: str = "regression",
    seed: int = 0,
) -> Dataset:
    """A data set with known truth: the target depends on features 0–4 only.

    ``kind="nonlinear"`` (default): ``x ~ N(0, 1)^p`` and
    ``y = 2·sin(1.5·x₀) + 2·tanh(2·x₁) + x₂·x₃ + x₂ + x₃ + 1.5·max(x₄, 0) + noise·ε``,
    ``ε ~ N(0, 1)``: saturating, periodic, interacting and kinked effects, each with a
    main effect.

    ``kind="friedman1"``: scikit-learn's ``make_friedman1``,
    ``y = 10·sin(π·x₀·x₁) + 20·(x₂ − ½)² + 10·x₃ + 5·x₄ + noise·ε`` with
    ``x ~ U(0, 1)^p``. Its x₂ acts only through a symmetric U (no linear trend at all),
    which first-layer sparsity tends to drop before noise features: a hard case, kept
    for honest comparisons.

    For ``task="binary"`` the label is whether the noiseless target lies above its
    median.
    """
    from sklearn.datasets import make_friedman1

    n_samples = check_int("n_samples", n_samples, low=2)
    n_features = check_int("n_features", n_features, low=5)
    noise = check_number("noise", noise, low=0.0)
    check_choice("kind", kind, ("nonlinear", "friedman1"))
    check_choice("task", task, ("regression", "binary"))
    rng = np.random.default_rng(seed)
    if kind == "nonlinear":
        X = rng.standard_normal((n_samples, n_features))
        clean = _nonlinear(X)
    else:
        X, clean = make_friedman1(n_samples, n_features, noise=0.0, random_state=seed)
    y = clean + noise * rng.standard_normal(n_samples)
    classes = None
    if task == "binary":
        y = (clean > np.median(clean)).astype(np.int64)
        classes = ["0", "1"]
    return Dataset(
        X,
        y,
        [f"x{j}" for j in range(n_features)],
        task,
        "synthetic" if kind == "nonlinear" else "friedman1",
        true_features=[0, 1, 2, 3, 4],
        classes=classes,
        description=f"synthetic ({kind}): y depends on x0..x4 only",
    )


def _diabetes() -> Dataset:
    """scikit-learn's ``load_diabetes()``, read from its files without importing it (the
    default study's data: the import would cost it a second and 75 MB): the features
    centred and scaled as its ``scale`` does, then divided by √n."""
    import gzip
    from importlib.util import find_spec

    spec = find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets"
    with gzip.open(folder / "data" / "diabetes_data_raw.csv.gz", "rt", encoding="utf-8") as file:
        X = np.loadtxt(file)
    with gzip.open(folder / "data" / "diabetes_target.csv.gz", "rt", encoding="utf-8") as file:
        y = np.loadtxt(file)
    std = np.nanstd(X, axis=0)  # (scale's corrections, for data far from its means, do not apply here)
    X -= np.nanmean(X, axis=0)
    X /= std
    X /= X.shape[0] ** 0.5
    with open(folder / "descr" / "diabetes.rst", encoding="utf-8") as file:
        description = file.readline().rstrip("\n")
    names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    return Dataset(X, y.astype(np.float64), names, "regression", "diabetes", description=description)


def _bundled():
    def from_sklearn(loader: str, name: str, task: str) -> Callable[[], Dataset]:
        def load() -> Dataset:
            from sklearn import datasets

            return _sklearn(getattr(datasets, loader), name, task)

        return load

    return {
        "diabetes": _diabetes,
        "breast_cancer": from_sklearn("load_breast_cancer", "breast_cancer", "binary"),
        "wine": from_sklearn("load_wine", "wine", "multiclass"),
        "digits": from_sklearn("load_digits", "digits", "multiclass"),
        "synthetic": make_synthetic,
        "friedman1": lambda: make_synthetic(kind="friedman1", noise=1.0),
    }


BUNDLED = ("diabetes", "breast_cancer", "wine", "digits", "synthetic", "friedman1")


def load_dataset(name: str) -> Dataset:
    """A bundled data set by name: ``diabetes`` (regression, 442 × 10),
    ``breast_cancer`` (binary, 569 × 30), ``wine`` (3 classes, 178 × 13), ``digits``
    (10 classes, 1797 × 64), ``synthetic`` (1000 × 50, 5 true features, nonlinear) or
    ``friedman1`` (1000 × 50, 5 true features); see :func:`make_synthetic`."""
    check_choice("dataset", name, BUNDLED)
    return _bundled()[name]()

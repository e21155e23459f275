"""The options of a study: :class:`StudyConfig`, one frozen dataclass.

Every field is an option of ``shrinkage study``: :mod:`shrinkage.study.cli` generates
the command line from the fields (name, type, default), their metadata (``choices``:
the values a field takes, or each item of a tuple takes; ``metavar``: the placeholder
``--help`` shows) and the Parameters section of the docstring below (the help text).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from shrinkage.presets import PRESETS
from shrinkage.train import TASKS
from shrinkage.validation import (
    InputError,
    check_bool,
    check_choice,
    check_device,
    check_int,
    check_n_jobs,
    check_number,
    check_seed,
    fail,
)

from .datasets import BUNDLED

__all__ = ["DEFAULT_PENALTIES", "PENALTY_CHOICES", "StudyConfig", "resolve_device"]

#: The penalties a study can compare: every preset of :mod:`shrinkage.presets`.
PENALTY_CHOICES = tuple(PRESETS)
#: What ``shrinkage study`` compares when not told.
DEFAULT_PENALTIES = ("none", "l1", "l2", "elasticnet", "group")


@dataclass(frozen=True)
class StudyConfig:
    """What a study compares and how (every field is an option of ``shrinkage study``).

    Parameters
    ----------
    dataset : str, optional
        A bundled data set (:mod:`shrinkage.study.datasets`), used when no ``data``
        file is given.
    data : str, optional
        A CSV or Parquet file to study instead of a bundled set.
    target : str, optional
        The target column of the ``data`` file (required with it).
    categorical : tuple of str
        Columns of the ``data`` file to read as categories whatever they hold: codes
        written as numbers (``007``, a zip code, a product number) are kept as written,
        one-hot encoded, never read as numbers nor dropped as identifiers
        (comma-separated on the command line).
    task : {"auto", "regression", "binary", "multiclass"}
        What the target is; ``auto`` infers it from the values
        (:func:`shrinkage.study.tabular.infer_task`).
    missing : {"impute", "error"}
        Missing feature values: impute them (the median of a numeric column, a level
        of its own in a categorical one), or refuse the data.
    penalties : tuple of str
        Presets of :mod:`shrinkage.presets` to compare (comma-separated on the command
        line).
    hidden : tuple of int
        Hidden layer widths of the MLP (comma-separated on the command line).
    l1_ratio : float
        ρ of the elastic net: the share of L1 in its penalty, in (0, 1].
    cv : int
        Cross-validation folds (:func:`shrinkage.cv.cross_validate`).
    n_lambdas : int
        λ values on each penalty's path.
    lambda_min_ratio : float
        The path's smallest λ as a fraction of its largest, in [1e-100, 1). L2, whose grid
        has no natural end where weights vanish, spans ``lambda_min_ratio²``: twice
        the decades.
    selection : {"1se", "min"}
        The λ chosen: the largest within one standard error of the best CV loss
        (``1se``), or the best (``min``).
    relax : bool
        Score, select and keep relaxed models (refit without penalty on the features
        each λ selects) for the penalties that select features.
    test_size : float
        Fraction of rows held out for the test score (stratified for classes).
    seed : int
        Seed of the split, the folds and the initial weights.
    n_jobs : int or None
        Processes on the CPU (joblib's count: -1 uses every core): the penalties train in
        up to that many processes at once, and the folds of a penalty that runs them one
        path each share them; more than the machine's cores count as one per core. Not
        given: every core on the CPU; on a GPU (cuda, mps) one
        process, the folds one after another (processes sharing one GPU would each hold
        their own copy of its context and compete for it). Results do not depend on it.
    on_divergence : {"raise", "skip"}
        A fit whose loss or weights stop being finite stops the study with an error
        naming penalty, fold, λ and epoch (penalties already stored stay), or is
        recorded as a failed λ that is never selected (see
        :func:`~shrinkage.path.regularization_path`).
    device : str
        Where the networks train: ``cpu``, ``cuda`` (or ``cuda:1``, …), ``mps``, or
        ``auto`` (CUDA if torch sees it, else MPS if torch sees it, else the CPU). The
        report names the device used.
    """

    dataset: str | None = field(default="diabetes", metadata={"choices": BUNDLED})
    data: str | None = field(default=None, metadata={"metavar": "FILE"})
    target: str | None = field(default=None, metadata={"metavar": "COLUMN"})
    categorical: tuple[str, ...] = field(default=(), metadata={"metavar": "COLUMN,…"})
    task: str = field(default="auto", metadata={"choices": ("auto", *TASKS)})
    missing: str = field(default="impute", metadata={"choices": ("impute", "error")})
    penalties: tuple[str, ...] = field(default=DEFAULT_PENALTIES, metadata={"choices": PENALTY_CHOICES})
    hidden: tuple[int, ...] = (32,)
    l1_ratio: float = 0.5
    cv: int = 5
    n_lambdas: int = 20
    lambda_min_ratio: float = 1e-2
    selection: str = field(default="1se", metadata={"choices": ("1se", "min")})
    relax: bool = True
    test_size: float = 0.2
    seed: int = 0
    n_jobs: int | None = None
    on_divergence: str = field(default="raise", metadata={"choices": ("raise", "skip")})
    device: str = field(default="cpu", metadata={"metavar": "DEVICE"})

    def __post_init__(self) -> None:
        if self.data is None:
            check_choice("dataset", self.dataset, BUNDLED)
            if self.target is not None:
                raise fail("target", "given with a data file (data=, --data)", self.target)
            if self.categorical:
                raise fail("categorical", "given with a data file (data=, --data)", ",".join(self.categorical))
        elif self.target is None:
            raise InputError("target must name the target column of the data file, got None")
        if len(set(self.categorical)) != len(self.categorical):
            raise fail("categorical", "a list without repeats", ",".join(self.categorical))
        check_choice("task", self.task, ("auto", *TASKS))
        check_choice("missing", self.missing, ("impute", "error"))
        check_choice("on_divergence", self.on_divergence, ("raise", "skip"))
        if not self.penalties:
            raise fail("penalties", "a non-empty list of " + ", ".join(PENALTY_CHOICES), self.penalties)
        for name in self.penalties:
            check_choice("penalty", name, PENALTY_CHOICES)
        if len(set(self.penalties)) != len(self.penalties):
            raise fail("penalties", "a list without repeats", ",".join(self.penalties))
        for width in self.hidden:
            check_int("hidden", width, low=1)
        check_number("l1_ratio", self.l1_ratio, low=0.0, high=1.0, low_open=True)
        check_int("cv", self.cv, low=2)
        check_int("n_lambdas", self.n_lambdas, low=2)
        # from 1e-100: the grid of a penalty that keeps every weight spans its square
        check_number("lambda_min_ratio", self.lambda_min_ratio, low=1e-100, high=1.0, high_open=True)
        check_choice("selection", self.selection, ("1se", "min"))
        check_bool("relax", self.relax)
        check_number("test_size", self.test_size, low=0.0, high=1.0, low_open=True, high_open=True)
        check_seed("seed", self.seed)
        check_n_jobs("n_jobs", self.n_jobs)
        if self.device != "auto":
            object.__setattr__(self, "device", str(check_device("device", self.device)))  # a torch.device as its name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def jobs(self, device: str) -> int | None:
        """The folds' ``n_jobs`` on ``device``: as given (at most one process per core:
        more would only compete for them), else every core on the CPU and one process on
        any other device."""
        if self.n_jobs is not None:
            return min(self.n_jobs, os.cpu_count() or 1) if self.n_jobs > 0 else self.n_jobs
        return -1 if device == "cpu" else 1


def resolve_device(device: str) -> str:
    """The device ``auto`` stands for here (CUDA, else MPS, else the CPU); any other name as it is.

    >>> resolve_device("cpu")
    'cpu'
    """
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"

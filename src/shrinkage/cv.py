"""K-fold cross-validation of a regularization path: λ_min, λ_1se and the refit model.

Built on :func:`~shrinkage.path.regularization_path`, the way glmnet's ``cv.glmnet``
is built on ``glmnet``:

1. the path is fitted on all the training data — it fixes the λ grid (automatic grids
   end where no feature is left) and, warm-started λ after λ, *is* the refit: the
   model at any λ of the grid is the full-data path's state there;
2. the same grid is run on every fold (stratified for classification), each fold
   scored on its held-out part by the data loss (mean squared error or
   cross-entropy) — folds run through joblib, so the active joblib backend (local
   processes, Dask, Ray) decides where;
3. the mean and standard error over folds give ``lambda_min`` (best mean) and
   ``lambda_1se`` (the largest λ whose mean is within one standard error of the
   best, glmnet's rule) — among the λ whose full-data refit is consistent with the
   folds (see :func:`consistent_refits`; a guard for non-convex paths that never
   binds for linear models);
4. with ``relax``, each λ's solution is also retrained without penalty on its own
   selected features (the others held at exactly zero), and those relaxed models are
   what is scored and returned.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import joblib
import numpy as np
import torch
from torch import nn

from . import batched
from ._arrays import check_X, check_y
from ._progress import progress_bar
from ._warnings import warn
from .path import (
    ModelSpec,
    PathConfig,
    RegularizationPath,
    _as_rules,
    _counted,
    _fresh_model,
    cpu_threads,
    folds_relaxed_epochs,
    path_fit,
    refits_by_folds,
    regularization_path,
    resolve_config,
    widest,
)
from .penalties import L1, Penalty
from .regularizer import Rule
from .splits import kfold, stratified_kfold
from .train import Diverged
from .validation import Described, InputError, check_choice, check_int, check_n_jobs, fail

__all__ = [
    "CVResult",
    "GridEdgeWarning",
    "InconsistentRefitWarning",
    "NoSignalWarning",
    "UnpenalizedCV",
    "backend_is_local",
    "consistent_refits",
    "cross_validate",
    "cross_validate_unpenalized",
    "grid_edge",
    "one_standard_error",
]


def one_standard_error(
    scores: np.ndarray,
    lambdas: np.ndarray,
    weights: np.ndarray | None = None,
    admissible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """glmnet's cross-validation summary of a ``(n_folds, n_lambdas)`` loss matrix.

    With fold weights ``w_k`` (the fold sizes; equal by default)::

        mean(λ) = Σ_k w_k·s_k(λ) / Σ_k w_k
        se(λ)   = sqrt( Σ_k w_k·(s_k(λ) − mean(λ))² / Σ_k w_k / (K − 1) )

    ``lambda_min`` is the largest λ with the smallest mean; ``lambda_1se`` the largest λ
    whose mean is at most ``mean(λ_min) + se(λ_min)`` (``cv.glmnet``'s ``cvm``,
    ``cvsd``, ``lambda.min`` and ``lambda.1se``). With an ``admissible`` mask both are
    chosen among the admissible λ only (all of them when none is).

    Returns
    -------
    mean, se : ndarray of shape (n_lambdas,)
    index_min, index_1se : int
        Positions in ``lambdas``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    lambdas = np.asarray(lambdas, dtype=np.float64)
    n_folds = scores.shape[0]
    if n_folds < 2:
        raise fail("scores", "from at least 2 folds", Described(f"{n_folds} fold(s)"))
    w = np.ones(n_folds) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = (w[:, None] * scores).sum(0) / w.sum()
    se = np.sqrt((w[:, None] * (scores - mean) ** 2).sum(0) / w.sum() / (n_folds - 1))
    allowed = np.ones(len(lambdas), bool) if admissible is None or not np.any(admissible) else admissible
    candidates = np.where(allowed & np.isfinite(mean), mean, np.inf)  # a diverged λ scores NaN
    best = np.flatnonzero(candidates <= candidates.min())
    index_min = int(best[np.argmax(lambdas[best])])
    within = np.flatnonzero(candidates <= mean[index_min] + se[index_min])
    index_1se = int(within[np.argmax(lambdas[within])])
    return mean, se, index_min, index_1se


def consistent_refits(scores: np.ndarray, se: np.ndarray, refit_losses: np.ndarray) -> np.ndarray:
    """Which λ have a full-data refit that looks like the folds: its own validation loss
    at most the worst fold's held-out loss (``scores``, folds × λ) plus one standard error
    ``se`` — or, along the path, rising above its lowest by at most what the folds' mean
    held-out loss rises above its lowest, plus one standard error.

    For a convex model the full-data solution follows the folds' and this holds
    everywhere; a network's path can fall off a cliff (lose a real feature) at a λ
    where the folds did not, and that refit must not be the one returned: its loss
    jumps above the folds' and rises where theirs does not. Either test alone misjudges
    the refit's few validation rows. Rows harder than the average put its loss above
    every fold's at every λ but where all models are constant (a new user's trial: by
    level alone 19 of 20 λ left out, and a constant model returned where the CV loss said
    0.46 against its 0.90). Early stopping on those rows lowers its loss most where it has
    the most inputs, so its lowest is optimistic (by shape alone, a relaxed path chose
    noise features). Refits without a validation loss (NaN) are admissible.
    """
    refit_losses = np.asarray(refit_losses, dtype=np.float64)
    known = ~np.isnan(refit_losses)
    if not known.any():
        return np.ones(len(refit_losses), bool)
    level = refit_losses <= scores.max(axis=0) + se
    mean = scores.mean(axis=0)
    shape = refit_losses - refit_losses[known].min() <= mean - np.nanmin(mean) + se
    return ~known | level | shape


class GridEdgeWarning(UserWarning):
    """λ_min is the smallest λ of the grid: a smaller λ may predict better still.

    Extend the grid down (a smaller ``lambda_min_ratio``, or ``lambdas=``) — or take it
    as the data saying that this penalty barely helps.
    """


class InconsistentRefitWarning(UserWarning):
    """The λ with the lowest cross-validated loss is not selectable: its full-data model
    does not agree with the folds' (see :func:`consistent_refits`), and λ_min, taken
    among the λ whose models do, has a loss higher by more than its standard error.

    The full-data model's own validation rows (``val_fraction`` of the rows) may have
    judged it by chance; or the full-data path did lose a feature there. Compare
    ``result.mean`` with ``result.admissible``; a larger ``val_fraction`` (or
    ``relax=True``) steadies the check.
    """


class NoSignalWarning(UserWarning):
    """The chosen λ's cross-validated loss is above a constant prediction's by more than
    the constant's standard error (the training rows' mean, or their class shares, scored
    on the same folds). The data may hold no signal this model can use; a constant model
    (or fewer inputs, or another model) is then the better choice.
    """


def _constant_losses(y: np.ndarray, task: str, folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Each fold's held-out loss of a constant prediction fitted on its training rows: their
    mean (mean squared error over the outputs), or their class shares (cross-entropy; a
    class absent from the training rows gets a share of 1e-12)."""
    if task == "regression":
        target = y.reshape(len(y), -1)
        return np.array([np.mean((target[test] - target[train].mean(axis=0)) ** 2) for train, test in folds])
    labels = y.astype(np.int64)
    losses = []
    for train, test in folds:
        shares = np.clip(np.bincount(labels[train], minlength=labels.max() + 1) / len(train), 1e-12, 1.0)
        losses.append(-np.mean(np.log(shares[labels[test]])))
    return np.array(losses)


class UnpenalizedCV(NamedTuple):
    """What :func:`cross_validate_unpenalized` returns; it unpacks as
    ``scores, fold_sizes, path, engine, engine_note``."""

    #: Each fold's held-out loss.
    scores: np.ndarray
    #: Each fold's held-out rows.
    fold_sizes: np.ndarray
    #: The full-data fit: its record in ``path.dense``, its model in ``path.model``.
    path: RegularizationPath
    #: Which engine trained the folds, as :attr:`CVResult.engine`.
    engine: str
    #: Why not the batched one, as :attr:`CVResult.engine_note`.
    engine_note: str


@dataclass
class CVResult:
    """What cross-validation found.

    Attributes
    ----------
    lambdas : ndarray (n_lambdas,)
    scores : ndarray (n_folds, n_lambdas)
        Held-out data loss of each fold at each λ.
    fold_sizes : ndarray (n_folds,)
    mean, se : ndarray (n_lambdas,)
    lambda_min, lambda_1se : float
    index_min, index_1se : int
    path : RegularizationPath
        The full-data path (with each λ's weights).
    folds : list of RegularizationPath
        Each fold's path (without weights).
    selection : {"min", "1se"}
    model : nn.Module
        The full-data path's model at the selected λ (relaxed, with ``relax``).
    relaxed : bool
    admissible : ndarray of bool (n_lambdas,)
        The λ eligible for selection (see :func:`consistent_refits`).
    engine : str
        How the folds were trained: ``"batched"`` (one stacked network,
        :mod:`shrinkage.batched`) or ``"sequential"`` (one path per fold).
    engine_note : str
        Why the folds were not batched (empty when they were, or when asked for
        ``engine="sequential"``).
    """

    lambdas: np.ndarray
    scores: np.ndarray
    fold_sizes: np.ndarray
    mean: np.ndarray
    se: np.ndarray
    index_min: int
    index_1se: int
    path: RegularizationPath
    folds: list[RegularizationPath]
    selection: str
    model: nn.Module = field(repr=False)
    relaxed: bool = False
    admissible: np.ndarray | None = None
    engine: str = "sequential"
    engine_note: str = ""

    @property
    def lambda_min(self) -> float:
        return float(self.lambdas[self.index_min])

    @property
    def lambda_1se(self) -> float:
        return float(self.lambdas[self.index_1se])

    @property
    def at_grid_edge(self) -> bool:
        """The held-out loss may still fall below the grid (a :class:`GridEdgeWarning` was
        issued): see :func:`grid_edge`."""
        admissible = np.ones(len(self.lambdas), bool) if self.admissible is None else self.admissible
        return grid_edge(self.lambdas, self.mean, admissible, self.index_min, _constant(self.path)) is not None

    @property
    def index(self) -> int:
        """Position of the selected λ."""
        return self.index_min if self.selection == "min" else self.index_1se

    @property
    def lambda_(self) -> float:
        return float(self.lambdas[self.index])

    @property
    def selected_features(self) -> list[int]:
        """Input features the selected model uses."""
        return self.path.points[self.index].features


def _folds(y: np.ndarray, task: str, cv: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if task != "regression":
        # scikit-learn's StratifiedKFold rule: refused when no class fills the folds, a
        # warning when some class is too small to be in every fold
        counts = np.bincount(y)
        counts = counts[counts > 0]
        if counts.max() < cv:
            raise InputError(
                f"cv must be at most the size of the largest class ({counts.max()}) for stratified folds, got {cv}"
            )
        if counts.min() < cv:
            smallest = int(counts.min())
            warn(
                f"the smallest class has {smallest} row{'s' if smallest > 1 else ''}, fewer than cv={cv}: some "
                "folds have none of it (scikit-learn's StratifiedKFold warns the same)",
                UserWarning,
            )
        return stratified_kfold(y, cv, seed)  # scikit-learn's StratifiedKFold(shuffle=True)
    return kfold(len(y), cv, seed)  # scikit-learn's KFold(shuffle=True)


def _fold_path(
    index: int, n_folds: int, train_idx, test_idx, X, y, job: dict[str, Any]
) -> tuple[int, RegularizationPath]:
    """One fold's path, on one torch thread (so results do not depend on n_jobs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = regularization_path(
            job["model"], X[train_idx], y[train_idx], test=(X[test_idx], y[test_idx]), **job["path"]
        )
    except Diverged as error:
        raise error.within(f"fold {index + 1} of {n_folds}") from None
    finally:
        torch.set_num_threads(threads)
    path.model = None  # the folds' models are not kept: only their scores are
    return index, path


def _full_path(model: ModelSpec, X, y, **kwargs: Any) -> RegularizationPath:
    try:
        return regularization_path(model, X, y, **kwargs)
    except Diverged as error:
        raise error.within("the full data") from None


def _fold_paths(model: ModelSpec, X, y, folds, kwargs: dict[str, Any], n_jobs, bar) -> list[RegularizationPath]:
    """Every fold's path through joblib, in fold order (the sequential engine)."""
    jobs = (
        joblib.delayed(_fold_path)(k, len(folds), tr, te, X, y, {"model": model, "path": kwargs})
        for k, (tr, te) in enumerate(folds)
    )
    results = []
    for result in joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs):
        results.append(result)
        bar.advance(1)
    return [p for _, p in sorted(results, key=lambda r: r[0])]


#: joblib backends that run on this machine: under any other (Dask, Ray), ``engine="auto"``
#: sends the folds there, one path each, rather than batching them here.
_LOCAL_BACKENDS = ("LokyBackend", "MultiprocessingBackend", "ThreadingBackend", "SequentialBackend")


def backend_is_local() -> bool:
    """Whether joblib's active backend runs its tasks on this machine (its default, loky,
    or processes, threads, none); not a cluster's (Dask, Ray), which then receives the
    folds of the sequential engine, one path each."""
    return type(joblib.parallel.get_active_backend()[0]).__name__ in _LOCAL_BACKENDS


def _batched(
    model: ModelSpec, X, y, folds, kwargs: dict[str, Any], engine: str, bar: Any = None
) -> tuple[tuple[RegularizationPath, list[RegularizationPath]] | None, str]:
    """The full path and the fold paths from the batched engine, or ``None`` and why not;
    its λ count on ``bar`` (see :func:`cross_validate`)."""
    if engine == "sequential":
        return None, ""
    rules, config = _as_rules(kwargs["penalty"]), kwargs["config"]
    note = batched.unsupported(_fresh_model(model), rules, config, X.shape[0], X)
    if engine == "auto" and not note and not backend_is_local():
        backend = type(joblib.parallel.get_active_backend()[0]).__name__
        return None, f"the active joblib backend ({backend}) takes the folds, one path each"
    if note and engine == "batched":
        raise InputError(f"engine='batched' cannot train these folds: {note}; use engine='auto' or 'sequential'")
    if note:
        return None, note
    try:
        paths = batched.joint_paths(
            model,
            X,
            y,
            folds,
            rules=rules,
            task=kwargs["task"],
            config=config,
            feature_names=kwargs.get("feature_names"),
            reuse=kwargs.get("reuse"),
            bar=bar,
        )
    except batched.Unbatchable as error:  # a fit diverged: the sequential engine says where and how
        return None, f"{error}; the paths were trained one by one"
    return paths, ""


#: An automatic grid extended below (see :func:`cross_validate`) takes ``n_lambdas`` /
#: this more λ at a time (2 of the default 20: enough to see the loss rise again), up to
#: ``PathConfig.extend`` in all and no more than its own span (``n_lambdas - 1`` steps of
#: its ratio: a coarse grid of 3 λ a decade apart goes 2 decades further, not 10).
_EXTENSION_PARTS = 10


def _bound(config: PathConfig) -> str:
    """What limits the λ added below an automatic grid, in words."""
    if config.extend <= config.n_lambdas - 1:
        return f"{config.extend} (cross_validate's extend option)"
    return f"n_lambdas - 1 = {config.n_lambdas - 1}, the grid's own span"


def _paths(
    *, model: ModelSpec, X, y, folds, config: PathConfig, common: dict[str, Any], reuse, engine: str, n_jobs, bar
) -> tuple[RegularizationPath, list[RegularizationPath], str, str]:
    """The full-data path (every λ's weights kept) and the fold paths on its grid: the
    batched engine's where it applies (:func:`_batched`), else the sequential one's.
    Returns them, the engine that ran and why not batched."""
    joint, note = _batched(
        model, X, y, folds, {"config": config.replace(keep_states=True), "reuse": reuse, **common}, engine, bar
    )
    if joint is not None:
        bar.advance(len(folds) + 1)
        return joint[0], joint[1], "batched", note
    # the full data's relaxed fits stop at the longest of the folds' at their λ: after them
    later = refits_by_folds(config)
    full_config = config.replace(keep_states=True, relax=config.relax and not later)
    full = _full_path(model, X, y, config=full_config, progress=False, **common)
    bar.advance(1)
    fold_config = config.replace(lambdas=tuple(full.lambdas), keep_states=False)
    paths = _fold_paths(model, X, y, folds, {"config": fold_config, **common}, n_jobs, bar)
    if later:
        lead = path_fit(model, X, y, _as_rules(common["penalty"]), common["task"], full_config.replace(relax=True))
        rows = lead.data["train"][0]
        with cpu_threads(rows.device, rows.shape[0] * widest(lead.net)):
            lead.relax_again(full.points, folds_relaxed_epochs(full.lambdas, [p.points for p in paths]))
    return full, paths, "sequential", note


class _Summary(NamedTuple):
    scores: np.ndarray  # (folds, λ): each fold's held-out loss
    admissible: np.ndarray
    mean: np.ndarray
    se: np.ndarray
    index_min: int
    index_1se: int
    constant: np.ndarray  # (λ,): the full-data model uses no input (or diverged)


def _constant(path: RegularizationPath) -> np.ndarray:
    """At each λ of ``path``, whether its model uses no input (a diverged fit counts too)."""
    return np.array([len(point.features) == 0 or point.diverged for point in path.points])


def _summary(full: RegularizationPath, paths: list[RegularizationPath], sizes: np.ndarray, relax: bool) -> _Summary:
    """The folds' held-out losses at each λ (relaxed models' with ``relax``) and the
    selection among the λ that may be chosen: not diverged on any fold nor on the full
    data, with a full-data refit consistent with the folds (:func:`consistent_refits`),
    and not a full-data model that uses no input where most folds' models use some."""
    held_out, own = ("relaxed_test_loss", "relaxed_val_loss") if relax else ("test_loss", "val_loss")
    grid = full.lambdas
    scores = np.array([[getattr(point, held_out) for point in p.points] for p in paths])
    diverged = np.array([[point.diverged for point in path.points] for path in [full, *paths]])
    # numpy's stubs type .any(axis=0) as "bool | array"; on this 2-D array it is a 1-D array
    failed: np.ndarray = diverged.any(axis=0)  # type: ignore[assignment]
    if failed.all():
        raise FloatingPointError("training diverged at every λ of the grid (on some fold or on the full data)")
    _, se, _, _ = one_standard_error(scores, grid, sizes)
    admissible = consistent_refits(scores, se, np.array([getattr(point, own) for point in full.points]))
    # the steepest cliff: a full-data model that uses no input where most folds' use some
    # (its CV loss is theirs, not a constant model's; one fold that collapsed too lets the
    # loss test pass)
    constant = _constant(full)
    folds_use = np.mean([~_constant(path) for path in paths], axis=0) > 0.5
    admissible &= ~failed & ~(constant & folds_use)
    if not admissible.any():  # no consistent refit left: any λ that did not diverge
        admissible = ~failed
    mean, se, index_min, index_1se = one_standard_error(scores, grid, sizes, admissible)
    return _Summary(scores, admissible, mean, se, index_min, index_1se, constant)


def grid_edge(
    lambdas: Sequence[float] | np.ndarray,
    mean: Sequence[float] | np.ndarray,
    admissible: Sequence[bool] | np.ndarray,
    index_min: int,
    constant: np.ndarray | None = None,
) -> str | None:
    """Why a smaller λ than the grid's (increasing ``lambdas``) may predict better, or
    None: the smallest λ has the lowest mean CV loss (λ_min, or a λ tied with it — the
    relaxed refits of one feature set score alike), or every λ gives a full-data model
    that uses no input (``constant``, per λ, where known: the grid lies where the penalty
    removes everything, and the CV curve is flat noise)."""
    if len(lambdas) < 2:
        return None
    if index_min == 0:
        return f"lambda_min is the grid's smallest λ ({lambdas[0]:.4g})"
    if bool(admissible[0]) and mean[0] <= mean[index_min]:
        return (
            f"the grid's smallest λ ({lambdas[0]:.4g}) ties lambda_min ({lambdas[index_min]:.4g}) for the lowest "
            "CV loss"
        )
    if constant is not None and constant.all():
        return f"every λ of the grid (down to {lambdas[0]:.4g}) gives a model that uses no input"
    return None


def _excluded_minimum(
    lambdas: np.ndarray, mean: np.ndarray, se: np.ndarray, admissible: np.ndarray, index_min: int
) -> tuple[str, bool] | None:
    """Where the λ of the lowest mean CV loss is not admissible: what to note, and whether
    to warn (λ_min's loss higher by more than its standard error); else None."""
    finite = np.isfinite(mean)
    if not finite.any():
        return None
    best = int(np.argmin(np.where(finite, mean, np.inf)))
    if admissible[best]:
        return None
    note = (
        f"the lowest cross-validated loss ({mean[best]:.4g}, at λ={lambdas[best]:.4g}) is at a λ whose full-data "
        f"model does not agree with the folds' (result.admissible; {int((~admissible).sum())} of {len(lambdas)} λ "
        f"are left out): lambda_min ({lambdas[index_min]:.4g}) has {mean[index_min]:.4g} ± {se[index_min]:.2g}"
    )
    return note, bool(mean[best] < mean[index_min] - se[index_min])


def _check_data(X: Any, y: Any, task: str, cv: int) -> tuple[np.ndarray, np.ndarray, int]:
    X_np = check_X(X)
    y_np = check_y(y, task, X_np.shape[0])
    cv = check_int("cv", cv, low=2)
    if cv > X_np.shape[0]:
        raise fail("cv", f"at most the number of samples (n_samples={X_np.shape[0]})", cv)
    return X_np, y_np, cv


def cross_validate_unpenalized(
    model: ModelSpec,
    X: Any,
    y: Any,
    *,
    task: str = "regression",
    cv: int = 5,
    config: PathConfig | None = None,
    feature_names: Sequence[str] | None = None,
    n_jobs: int | None = None,
    progress: bool | None = None,
    engine: str = "auto",
    reuse: batched.Reuse | None = None,
    **options: Any,
) -> UnpenalizedCV:
    """The same folds without any penalty: the baseline a penalty has to beat.

    ``config``, ``reuse`` and ``options`` as for :func:`cross_validate` (only
    ``val_fraction``, ``dense_config``, ``device`` and ``seed`` matter here). Returns the held-out loss
    of each fold, the fold sizes, the full-data fit (its record in ``path.dense``, its
    model in ``path.model``) and the engine that ran (:class:`UnpenalizedCV`). With the same ``seed`` and
    ``cv`` these are exactly the dense starts of :func:`cross_validate`'s paths.
    """
    X_np, y_np, cv = _check_data(X, y, task, cv)
    check_n_jobs("n_jobs", n_jobs)
    check_choice("engine", engine, batched.ENGINES)
    config = resolve_config(config, options).replace(lambdas=(), dense_start=True, relax=False, keep_states=False)
    folds = _folds(y_np, task, cv, config.seed)
    common = dict(penalty=L1(0.0), task=task, config=config, feature_names=feature_names)
    with progress_bar(cv + 1, "cross-validation (no penalty)", enabled=progress) as bar:
        joint, note = _batched(model, X_np, y_np, folds, {**common, "reuse": reuse}, engine)
        if joint is not None:
            full, paths = joint
            bar.advance(cv + 1)
        else:
            full = _full_path(model, X_np, y_np, progress=False, **common)
            bar.advance(1)
            paths = _fold_paths(model, X_np, y_np, folds, common, n_jobs, bar)
    dense_fits = [p.dense for p in paths if p.dense is not None]
    assert len(dense_fits) == len(paths)  # dense_start=True: every fold's path has its dense fit
    scores = np.array([d.test_loss for d in dense_fits])
    used = "batched" if joint is not None else "sequential"
    return UnpenalizedCV(scores, np.array([len(te) for _, te in folds]), full, used, note)


def cross_validate(
    model: ModelSpec,
    X: Any,
    y: Any,
    *,
    penalty: Penalty | Rule | Sequence[Rule],
    task: str = "regression",
    cv: int = 5,
    selection: str = "1se",
    config: PathConfig | None = None,
    feature_names: Sequence[str] | None = None,
    n_jobs: int | None = None,
    progress: bool | None = None,
    engine: str = "auto",
    reuse: batched.Reuse | None = None,
    **options: Any,
) -> CVResult:
    """K-fold cross-validation of a regularization path; see the module docstring.

    Parameters
    ----------
    model, X, y, penalty, task, feature_names
        As for :func:`~shrinkage.path.regularization_path`.
    cv : int, default 5
        Number of folds K >= 2 (stratified for classification).
    selection : {"1se", "min"}, default "1se"
        Which λ the returned model has.
    config : PathConfig, optional
        The paths' settings, as for :func:`~shrinkage.path.regularization_path` (a
        divergence names its fold, or "the full data"; with
        ``on_divergence="skip"``, a λ that diverged on any fold or on the full data is
        never selected). Inside every fold, ``val_fraction`` of the fold's training
        rows serve for early stopping; the fold's held-out rows are only scored. With
        ``relax=True``, relaxed models are scored, selected and returned: at each λ,
        the solution retrained without penalty on its selected features only (the
        unused inputs held at zero). Shrinkage biases the kept weights; the relaxed
        fit removes that bias, so the CV curve then rewards the right feature set
        rather than the right amount of shrinkage (glmnet's ``relax=TRUE``,
        LassoNet's debiasing). It costs one more fit per feature set and fold.
    n_jobs : int, optional
        For the sequential engine: folds in parallel through joblib (``-1``: all cores;
        the active joblib backend, e.g. Dask, decides where). Each fold trains on one
        torch thread, so results do not depend on ``n_jobs``. The batched engine runs
        in this process (small stacks on one torch thread) and ignores it.
    progress : bool, optional
        Progress bars; default only when stderr is a terminal.
    engine : {"auto", "batched", "sequential"}, default "auto"
        How the folds train: ``"batched"``, the full-data path and the K folds as one
        stacked network (:mod:`shrinkage.batched`: full-batch Adam, mode ``proximal``,
        element-wise and group penalties, models without dropout or buffers) — 2.5×
        faster on the default study of diabetes (2 cores), and the way to use a GPU;
        its models match the sequential engine's up to float rounding, which early
        stopping can amplify (see the guide); ``"sequential"``, one path per fold (the
        reference); ``"auto"``, batched where it applies (else sequential, and a fit
        that diverges is rerun sequentially) — and sequential under a joblib backend
        that runs elsewhere (Dask, Ray), which then receives the folds.
        ``CVResult.engine`` says which ran, ``CVResult.engine_note`` why not batched.
    reuse : shrinkage.batched.Reuse, optional
        Unpenalized fits (the dense starts, the relaxed refits) shared with other
        cross-validations of the same model, data and folds given the same object: they
        do not depend on the penalty, so comparing penalties trains them once (the
        study does). Batched engine only.
    **options
        Fields of :class:`~shrinkage.path.PathConfig` (``n_lambdas=30``, ``relax=True``,
        …), applied over ``config``.
    """
    X_np, y_np, cv = _check_data(X, y, task, cv)
    check_choice("selection", selection, ("1se", "min"))
    check_n_jobs("n_jobs", n_jobs)
    check_choice("engine", engine, batched.ENGINES)
    config = resolve_config(config, options)
    if config.lambdas is not None and len(config.lambdas) == 0:  # (a path's empty grid is its dense fit alone)
        raise fail("lambdas", "non-empty for cross-validation, which chooses among them", config.lambdas)
    folds = _folds(y_np, task, cv, config.seed)
    sizes = np.array([len(te) for _, te in folds])
    common = dict(penalty=penalty, task=task, feature_names=feature_names)
    # (a grid extended below shares its unpenalized fits with the first: the batched engine's)
    reuse = reuse if reuse is not None else batched.Reuse()
    train = functools.partial(
        _paths, model=model, X=X_np, y=y_np, folds=folds, common=common, reuse=reuse, engine=engine, n_jobs=n_jobs
    )

    # the bar counts the paths (cv + 1); the batched engine, which trains them together,
    # adds the full-data path's λ to it and counts them as they are trained
    with progress_bar(cv + 1, "cross-validation", enabled=progress) as bar:
        full, paths, used, note = train(config=config, bar=bar)
        summary = _summary(full, paths, sizes, config.relax)
        added, most = 0, min(config.extend, config.n_lambdas - 1)
        edge = grid_edge(full.lambdas, summary.mean, summary.admissible, summary.index_min, summary.constant)
        first = edge
        while edge is not None and config.lambdas is None and added < most:
            # an automatic grid whose CV minimum is its smallest λ goes on below it, a few
            # λ of its ratio at a time: each path's lower segment from its dense start
            grid = full.lambdas
            step = min(max(1, -(-config.n_lambdas // _EXTENSION_PARTS)), most - added)
            lower = grid[0] / (grid[1] / grid[0]) ** np.arange(step, 0, -1)
            bar.grow(cv + 1)
            starts = config.dense_start or full.dense is not None  # (as the grid's first λ did)
            more = train(config=config.replace(lambdas=tuple(lower), dense_start=starts), bar=bar)
            for path, below in zip([full, *paths], [more[0], *more[1]], strict=True):
                path.points[:0] = below.points
            if more[2] != used:  # (the extension's fits diverged in the batched engine)
                used, note = more[2], more[3]
            added += step
            summary = _summary(full, paths, sizes, config.relax)
            edge = grid_edge(full.lambdas, summary.mean, summary.admissible, summary.index_min, summary.constant)
        if added:
            full.notes.append(
                f"at the automatic grid's edge ({first}): {_counted(added, 'smaller λ')} added below it (down to "
                f"{full.points[0].lambda_:.4g}; at most {_bound(config)})"
            )
    grid = full.lambdas
    scores, admissible, mean, se, index_min, index_1se, _ = summary
    excluded = _excluded_minimum(grid, mean, se, admissible, index_min)
    if excluded is not None:
        full.notes.append(excluded[0])
        if excluded[1]:
            warn(excluded[0], InconsistentRefitWarning)
    if edge is not None:
        tried = f", with the {added} λ added below the automatic grid (the most it takes: {_bound(config)})"
        how = "a smaller lambda_min_ratio, or lambdas=..."
        if config.lambdas is not None:
            how = "smaller values in lambdas="
        warn(
            f"{edge}{tried if added else ''}: the cross-validated loss may fall further below it; extend the grid "
            f"down ({how})",
            GridEdgeWarning,
        )

    index = index_min if selection == "min" else index_1se
    base_mean, base_se, _, _ = one_standard_error(_constant_losses(y_np, task, folds)[:, None], np.zeros(1), sizes)
    if mean[index] > base_mean[0] + base_se[0]:
        what = "the training rows' mean" if task == "regression" else "the training rows' class shares"
        warn(
            f"the chosen λ ({grid[index]:.4g})'s cross-validated loss {mean[index]:.4g} is above a constant "
            f"prediction's ({what}) {base_mean[0]:.4g} ± {base_se[0]:.2g}: the chosen model predicts held-out rows "
            "worse than a constant; the data may hold no signal this model can use (a constant model, or fewer "
            "inputs, may do better)",
            NoSignalWarning,
        )
    chosen = full.points[index]
    state = chosen.relaxed_state if config.relax else chosen.state
    # the full path returns its model and keeps every λ's weights (keep_states=True);
    # the chosen λ did not diverge, so its weights are there
    assert full.model is not None and state is not None
    selected = copy.deepcopy(full.model)
    selected.load_state_dict(state)
    return CVResult(
        lambdas=grid,
        scores=scores,
        fold_sizes=sizes,
        mean=mean,
        se=se,
        index_min=index_min,
        index_1se=index_1se,
        path=full,
        folds=paths,
        selection=selection,
        model=selected,
        relaxed=config.relax,
        admissible=admissible,
        engine=used,
        engine_note=note,
    )

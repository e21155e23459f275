"""Regularization paths: one model trained along a grid of λ, dense → sparse, warm-started.

The path is the primitive the rest is built on: cross-validation runs it on every
fold, the estimators run it with one λ. A path

1. trains the model without penalty (the dense start, unless told not to);
2. finds λ_max, the λ at which the penalized weights are all zero: exactly, from the
   data loss's gradient at zero, for a linear model (with the intercept at its optimum);
   for a network, the same bound taken at the dense solution, one penalized tensor at a
   time, then confirmed by training — if weights survive at the grid's end, the path
   goes on along the same geometric ratio until none do (or ``extend`` more steps);
3. trains at each λ of the geometric grid ``λ_max·lambda_min_ratio … λ_max`` in
   increasing order, each λ starting from the previous solution, with early stopping
   on the validation objective (data loss + penalty) and a cap on epochs;
4. stops once no input feature is used any more (the model no longer depends on its
   input; larger λ change nothing) or every penalized weight is zero. For a network,
   λ_max is only a bound and this often happens before the grid's end: then the
   missing λ are added below the grid at the same ratio, trained from the same start,
   so that the path holds ``n_lambdas`` λ ending where the model became constant
   (``RegularizationPath.notes`` says so).

Every λ leaves a :class:`PathPoint`: losses, penalty, non-zeros, the input features
still used, epochs and wall time — and the weights, when ``keep_states`` asks.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from ._arrays import check_X, check_y, to_tensors
from ._progress import _Bar, counted_on, progress_bar
from .penalties import Penalty
from .regularizer import MODES, Regularizer, Rule, as_rules
from .solvers import largest_relative_change
from .splits import shuffle_split
from .structure import input_parameter_of, input_parameters_of, linear_chain
from .train import (
    LOSSES,
    SOLVERS,
    Diverged,
    TrainConfig,
    TrainResult,
    as_targets,
    evaluate,
    loss_for_task,
    make_optimizer,
    train,
)
from .validation import (
    Described,
    InputError,
    InputTypeError,
    check_bool,
    check_choice,
    check_device,
    check_int,
    check_number,
    check_seed,
    fail,
    replace_fields,
)

__all__ = [
    "FIT_CONFIG",
    "PATH_CONFIG",
    "PathConfig",
    "PathPoint",
    "RegularizationPath",
    "column_norms",
    "lambda_grid",
    "lambda_max",
    "next_lambda",
    "regularization_path",
    "relaxed_fit",
    "stationarity",
]

ModelSpec = nn.Module | Callable[[], nn.Module]

#: Training at each λ of a path: warm-started, so short; stops on the objective.
PATH_CONFIG = TrainConfig(lr=1e-2, batch_size=None, max_epochs=200, patience=10, monitor="objective")
#: Training from scratch without penalty (dense start, relaxed fits).
FIT_CONFIG = TrainConfig(lr=3e-2, batch_size=None, max_epochs=2000, patience=100, monitor="loss")

ON_DIVERGENCE = ("raise", "skip")


@dataclass(frozen=True)
class PathConfig:
    """How a path is made: everything but the model, the data and the penalty.

    :func:`regularization_path` and :func:`~shrinkage.cv.cross_validate` take one
    (``config=``) and any of its fields as keyword arguments, which override it::

        config = PathConfig(n_lambdas=30, relax=True)
        regularization_path(model, X, y, penalty=L1(), config=config, seed=1)

    Parameters
    ----------
    lambdas : sequence of float, optional
        The grid, strictly increasing. Default: automatic (see the module docstring).
        Empty (with ``dense_start``): only the dense fit, in ``RegularizationPath.dense``.
    n_lambdas : int, default 20
    lambda_min_ratio : float in (0, 1), default 1e-3
        The automatic grid: ``n_lambdas`` geometric values from
        ``λ_max·lambda_min_ratio`` to ``λ_max``.
    extend : int, default 10
        How many more λ (same ratio) an automatic path may take past λ_max while
        penalized weights survive; and, in :func:`~shrinkage.cv.cross_validate`, below
        its smallest λ while the cross-validated loss is lowest there (no more than
        ``n_lambdas - 1`` λ there: the grid's own span). 0: neither.
    mode : str, default "proximal"
        How the penalty reaches the optimizer (:data:`~shrinkage.regularizer.MODES`).
    val_fraction : float in [0, 1), default 0.1
        Rows held out for early stopping when no ``validation`` data is given; 0
        trains on all rows and stops early on the training objective.
    train_config : TrainConfig, default :data:`PATH_CONFIG`
        Training at each λ (Adam, lr 1e-2, full batch, early stopping on the
        validation objective). One optimizer serves the whole path, so its state
        carries from λ to λ.
    dense_config : TrainConfig, default :data:`FIT_CONFIG`
        Training of the dense start and of relaxed fits, from scratch without penalty
        (full-batch Adam, lr 3e-2, patience 100 — on tabular data of a few thousand
        rows several times faster than mini-batches and no worse; pass mini-batches
        for large data).
    dense_start : bool, default True
        Train without penalty first. An automatic grid for a network needs it.
    relax : bool, default False
        At each λ also fit the relaxed model (see :func:`relaxed_fit`) and record its
        losses.
    keep_states : bool, default False
        Keep each λ's ``state_dict`` (on the CPU): memory grows with the path.
    on_divergence : {"raise", "skip"}, default "raise"
        When a fit's loss or weights stop being finite (:class:`~shrinkage.train.Diverged`):
        ``"raise"`` stops with an error naming λ and the epoch; ``"skip"`` records the
        λ as a failed point (``diverged=True``, losses NaN, the weights it started
        from), resets the optimizer's state and goes on to the next λ. The dense fit
        always raises.
    device : str or torch.device, optional
    seed : int, default 0
        Seeds the model's initialization (for factories), splits and mini-batches.
    """

    lambdas: tuple[float, ...] | None = None
    n_lambdas: int = 20
    lambda_min_ratio: float = 1e-3
    extend: int = 10
    mode: str = "proximal"
    val_fraction: float = 0.1
    train_config: TrainConfig = PATH_CONFIG
    dense_config: TrainConfig = FIT_CONFIG
    dense_start: bool = True
    relax: bool = False
    keep_states: bool = False
    on_divergence: str = "raise"
    device: str | torch.device | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_bool("dense_start", self.dense_start)
        if self.lambdas is not None:
            grid = _check_lambdas(self.lambdas, self.dense_start)
            object.__setattr__(self, "lambdas", tuple(float(lam) for lam in grid))
        check_int("n_lambdas", self.n_lambdas, low=1)
        check_number("lambda_min_ratio", self.lambda_min_ratio, low=0.0, high=1.0, low_open=True, high_open=True)
        check_int("extend", self.extend, low=0)
        check_choice("mode", self.mode, MODES)
        check_number("val_fraction", self.val_fraction, low=0.0, high=1.0, high_open=True)
        for name in ("train_config", "dense_config"):
            if not isinstance(getattr(self, name), TrainConfig):
                raise fail(name, "a TrainConfig", getattr(self, name), kind=TypeError)
        check_bool("relax", self.relax)
        check_bool("keep_states", self.keep_states)
        check_choice("on_divergence", self.on_divergence, ON_DIVERGENCE)
        if self.device is not None:
            check_device("device", self.device)
        check_seed("seed", self.seed)

    def replace(self, **changes: Any) -> PathConfig:
        """A copy with some fields changed (validated again)."""
        return replace_fields(self, changes)


def resolve_config(config: PathConfig | None, options: dict[str, Any]) -> PathConfig:
    """``config`` (default :class:`PathConfig`) with the keyword ``options`` applied."""
    if config is None:
        config = PathConfig()
    elif not isinstance(config, PathConfig):
        hint = " (a TrainConfig goes in train_config= or dense_config=)" if isinstance(config, TrainConfig) else ""
        raise fail("config", "a PathConfig" + hint, config, kind=TypeError)
    for gone in options.keys() & _REMOVED_OPTIONS.keys():
        raise InputTypeError(f"{gone}= is no longer an option: use {_REMOVED_OPTIONS[gone]}")
    return config.replace(**options) if options else config


#: Former keyword arguments of the path functions, and what replaces them.
_REMOVED_OPTIONS = {"select": "Rule(penalty, select=...) as the penalty", "return_model": "the path's .model"}


@dataclass
class PathPoint:
    """The solution at one λ.

    Attributes
    ----------
    lambda_ : float
    train_loss, val_loss : float
        Data loss (no penalty) on the training data and on the early-stopping data.
    test_loss : float
        Data loss on the ``test`` data given to the path (NaN without it): a CV fold's
        held-out part, for instance.
    penalty : float
        λ·R of the solution.
    n_nonzero, n_penalized : int
        Non-zero and total penalized weights.
    zero_groups, n_groups : int
        For group penalties; 0 otherwise.
    features : list of int
        Input features on a path of non-zero weights to an output.
    feature_names : list of str
    dead_units : int
    epochs : int
    seconds : float
        Wall time of this λ's training (and relaxed fit).
    state : dict or None
        The model's ``state_dict`` (CPU copies) when the path kept states.
    relaxed_val_loss, relaxed_test_loss : float
        With ``relax``: the losses of the relaxed model — retrained from this solution
        without penalty, the unused input features held at zero (NaN otherwise).
    relaxed_state : dict or None
        The relaxed model's weights, when the path kept states.
    relaxed_epochs : int or None
        With ``relax``: the epochs the relaxed model trained, up to the weights it kept
        (None otherwise). A path's relaxed fits stop early on its validation rows; in
        :func:`~shrinkage.cv.cross_validate`, the full-data path's relaxed fit at a λ
        also stops at the longest of the folds' at that λ (see :func:`relaxed_fit`).
    train_curve, val_curve : list of float
        Data loss per epoch of this λ's training (training: averaged over the epoch's
        batches; validation: at the epoch's end).
    feature_norms : list of float
        ‖column j‖₂ of the input weight for each input feature: what a path plot draws.
    stationarity : float
        How far this fit is from a stationary point of its objective (see
        :func:`~shrinkage.path.stationarity`): 0 at the optimum; NaN when not measured (a diverged fit).
    """

    lambda_: float
    train_loss: float
    val_loss: float
    test_loss: float
    penalty: float
    n_nonzero: int
    n_penalized: int
    zero_groups: int
    n_groups: int
    features: list[int]
    feature_names: list[str]
    dead_units: int
    epochs: int
    seconds: float
    state: dict[str, Tensor] | None = field(default=None, repr=False)
    relaxed_val_loss: float = math.nan
    relaxed_test_loss: float = math.nan
    diverged: bool = False
    relaxed_state: dict[str, Tensor] | None = field(default=None, repr=False)
    train_curve: list[float] = field(default_factory=list, repr=False)
    val_curve: list[float] = field(default_factory=list, repr=False)
    feature_norms: list[float] = field(default_factory=list, repr=False)
    stationarity: float = math.nan
    relaxed_epochs: int | None = None

    @property
    def n_features(self) -> int:
        return len(self.features)

    def record(self) -> dict[str, Any]:
        """The point as a plain dict (no weights), e.g. for a results store."""
        # not dataclasses.asdict, which deep-copies the weights and curves left out here
        left_out = ("state", "relaxed_state", "train_curve", "val_curve", "feature_norms")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in left_out}
        out.update(features=list(self.features), feature_names=list(self.feature_names), n_features=self.n_features)
        return out


@dataclass
class RegularizationPath:
    """A regularization path: the points in increasing λ and how they were made.

    Attributes
    ----------
    points : list of PathPoint
        One per λ, in increasing λ.
    rules : list of Rule
        The penalties at λ = 1; each point scales them by its λ.
    lambda_max : float or None
        The automatic grid's λ_max (``None`` for a given grid).
    dense : PathPoint or None
        The dense start (λ = 0).
    n_features : int
    feature_names : list of str
    model : nn.Module or None
        The trained model, at the path's last λ (the dense fit for an empty grid).
    notes : list of str
        How the automatic grid was adapted, in words: λ added past λ_max while weights
        survived, or added below the grid when the model became constant before the
        grid's end (a network's λ_max is only a bound), so that ``n_lambdas`` λ are
        trained.
    """

    points: list[PathPoint]
    rules: list[Rule]
    lambda_max: float | None
    dense: PathPoint | None
    n_features: int
    feature_names: list[str]
    model: nn.Module | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def lambdas(self) -> np.ndarray:
        return np.array([p.lambda_ for p in self.points])

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> PathPoint:
        return self.points[index]

    def records(self) -> list[dict[str, Any]]:
        return [p.record() for p in self.points]

    def feature_exit_lambdas(self) -> np.ndarray:
        """For each input feature, the first λ of the path at which it is no longer used
        (``inf`` if it survives the whole path): an importance ranking (LassoNet's)."""
        out = np.full(self.n_features, np.inf)
        for point in self.points:
            used = np.zeros(self.n_features, dtype=bool)
            used[point.features] = True
            out[(~used) & np.isinf(out)] = point.lambda_
        return out


# ---------------------------------------------------------------------------- λ grid
def lambda_grid(lambda_max: float, *, n_lambdas: int = 20, lambda_min_ratio: float = 1e-3) -> np.ndarray:
    """``n_lambdas`` values from ``lambda_max·lambda_min_ratio`` to ``lambda_max``, geometric."""
    lambda_max = check_number("lambda_max", lambda_max, low=0.0, low_open=True)
    n = check_int("n_lambdas", n_lambdas, low=1)
    ratio = check_number("lambda_min_ratio", lambda_min_ratio, low=0.0, high=1.0, low_open=True, high_open=True)
    return np.geomspace(lambda_max * ratio, lambda_max, n) if n > 1 else np.array([lambda_max])


def _is_linear(model: nn.Module) -> bool:
    chain = linear_chain(model)
    return isinstance(model, nn.Linear) or (chain is not None and len(chain) == 1)


@torch.no_grad()
def _intercept_at_zero_(layer: nn.Linear, y: Tensor, loss: str) -> None:
    """Set a linear layer's weight to 0 and its bias to the optimum for that weight."""
    layer.weight.zero_()
    if layer.bias is None:
        return
    if loss == "mse":
        layer.bias.copy_(y.to(layer.bias.dtype).mean(0))
    elif loss == "bce":
        p = y.float().mean().clamp(1e-6, 1 - 1e-6)
        layer.bias.fill_(float(torch.log(p / (1 - p))))
    else:  # softmax intercepts: log class frequencies
        counts = torch.bincount(y.long(), minlength=layer.bias.numel()).float().clamp_min(1e-6)
        layer.bias.copy_(torch.log(counts / counts.sum()))


def _data_gradient(
    model: nn.Module, X: Tensor, y: Tensor, loss: str, params: Sequence[Tensor]
) -> tuple[list[Tensor], float]:
    """∇ of the mean data loss over all of (X, y) w.r.t. ``params`` (chunked), and that
    mean loss, as :func:`~shrinkage.train.evaluate` gives it (the same forward passes)."""
    criterion = LOSSES[loss](reduction="sum")
    grads = [torch.zeros_like(p) for p in params]
    total = 0.0
    was_training = model.training
    model.eval()
    for start in range(0, X.shape[0], 4096):
        out = model(X[start : start + 4096])
        target = as_targets(y[start : start + 4096], loss, out.dtype)
        summed = criterion(out, target)
        total += float(summed.detach())
        parts = torch.autograd.grad(summed / X.shape[0], params, allow_unused=True)
        for g, part in zip(grads, parts):
            if part is not None:
                g.add_(part)
    model.train(was_training)
    return grads, total / X.shape[0]


def stationarity(model: nn.Module, reg: Regularizer, X: Tensor, y: Tensor, loss: str, step: float) -> float:
    """How far ``model`` is from a stationary point of ``mean ℓ + Σ λ·R``, one number for
    every penalty: the largest, over trainable tensors ``w``, of
    ``‖w − prox_{s·λR}(w − s·∇f(w))‖ / ‖w‖``.

    That is the relative change one full-batch proximal-gradient step of size ``s`` would
    still make to each tensor (the data loss's gradient ``∇f`` over all of ``(X, y)``;
    the prox of each of ``reg``'s terms on its tensors, none on the others), taken per
    tensor so that a large intercept does not hide unconverged weights. It is 0 exactly
    at a stationary point — the optimum, for a convex problem — for any ``s``; the path
    takes ``s`` = its training learning rate. A tensor smaller than a thousandth of the
    norm of all trainable tensors together (or of their gradient step, if larger) is
    measured against that thousandth instead
    (:func:`~shrinkage.solvers.largest_relative_change`): at or rounding around zero —
    the intercept of a centred target — it has no scale of its own. Computed in float64.
    """
    return _stationarity_and_loss(model, reg, X, y, loss, step)[0]


def _stationarity_and_loss(
    model: nn.Module, reg: Regularizer, X: Tensor, y: Tensor, loss: str, step: float
) -> tuple[float, float]:
    """:func:`stationarity`, and the mean data loss on ``(X, y)`` its gradient pass gave."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads, mean_loss = _data_gradient(model, X, y, loss, params)
    with torch.no_grad():
        before = [p.detach().double() for p in params]
        stepped = [b - step * g.double() for b, g in zip(before, grads)]
        moved = {id(p): s.clone() for p, s in zip(params, stepped)}
        for term in reg.terms:
            if term.penalty.lambda_ > 0 and all(id(p) in moved for p in term.params):
                targets = [moved[id(p)] for p in term.params]
                term.penalty.prox_(targets, term.layouts, step=[step] * len(targets))
        return float(largest_relative_change(before, [moved[id(p)] for p in params], stepped)), mean_loss


def scaled(rules: Sequence[Rule], lambda_: float) -> list[Rule]:
    """The rules with every penalty at strength ``lambda_`` (a path's point)."""
    return [Rule(r.penalty.with_lambda(lambda_), r.select, r.mode, r.overlap) for r in rules]


def lambda_max(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    penalty: Penalty | Rule | Sequence[Rule],
    loss: str = "mse",
) -> float:
    """The λ at which the penalized weights of ``model`` become all zero.

    For each penalized tensor, the data loss's gradient is taken with that tensor set
    to zero (the others as they are in ``model``), and ``penalty.zero_threshold`` gives
    the λ beyond which zero is optimal for it; the result is the largest. For a linear
    model pass it with its intercept at the optimum (the path does): then this is the
    exact λ_max (scikit-learn's ``alpha_max`` after conversion).

    L2 never gives zeros; its λ_max is taken as ten times the L1 value ``10·max|g|``.
    For a standardized linear model ridge shrinks each direction of curvature ``d`` by
    ``d / (d + λ)``, and ``max|g| <= 2`` there, so this is where every weight is
    shrunk about tenfold or more: the over-regularized end. (glmnet's convention,
    ``max|g| / 0.001``, puts the whole grid beyond that for networks.)
    """
    rules = [
        Rule(r.penalty, r.select, "proximal" if r.penalty.proximal_only else "loss", r.overlap)
        for r in scaled(_as_rules(penalty), 1.0)
    ]
    reg = Regularizer(model, rules, mode="loss")
    best = 0.0
    for term in reg.terms:
        # a coupled penalty's tensors are zero together; the others one at a time
        sets = [list(range(len(term.params)))] if term.penalty.coupled else [[i] for i in range(len(term.params))]
        for members in sets:
            params = [term.params[i] for i in members]
            saved = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p in params:
                    p.zero_()
            grads, _ = _data_gradient(model, X, y, loss, params)
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
            layouts = None if term.layouts is None else [term.layouts[i] for i in members]
            value = term.penalty.zero_threshold(grads, layouts)
            if math.isinf(value):  # L2 never zeroes: see the docstring
                value = 10.0 * max(float(g.abs().max()) for g in grads)
            best = max(best, value)
    if best <= 0:
        raise InputError("lambda_max is 0: the data loss has zero gradient at zero weights (constant target?)")
    return best


# ------------------------------------------------------------------------------ path
def _fresh_model(model: ModelSpec) -> nn.Module:
    if isinstance(model, nn.Module):
        return copy.deepcopy(model)
    if callable(model):
        built = model()
        if not isinstance(built, nn.Module):
            raise fail("model", "an nn.Module or a callable returning one", built, kind=TypeError)
        return built
    raise fail("model", "an nn.Module or a callable returning one", model, kind=TypeError)


def _check_output(model: nn.Module, X: Tensor, y: Tensor, task: str) -> None:
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(X[:1])  # eval: a batch norm in training mode refuses a single row
    except RuntimeError as error:  # most often: the model expects another number of inputs
        raise InputError(
            f"model must accept X's rows ({X.shape[1]} features), got an error from its forward pass: "
            + " ".join(str(error).split())
        ) from None
    finally:
        model.train(was_training)
    expected = int(y.max()) + 1 if task == "multiclass" else 1
    if out.ndim != 2 or out.shape[1] < expected or (task != "multiclass" and out.shape[1] != 1):
        raise InputError(
            f"model must output {'at least ' if task == 'multiclass' else ''}{expected} column(s) "
            f"per row for task={task!r}, got output of shape {tuple(out.shape)}"
        )


def _check_lambdas(lambdas: Any, dense_start: bool) -> np.ndarray:
    """Strictly increasing positive λ; empty only with a dense start (the dense fit alone)."""
    rule = "a non-empty, strictly increasing sequence of finite numbers > 0 (dense → sparse)"
    try:
        array = np.asarray(lambdas, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail("lambdas", rule, lambdas, kind=TypeError) from None
    if array.ndim == 1 and array.size == 0 and dense_start:
        return array
    if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise fail("lambdas", rule, lambdas)
    if np.any(np.diff(array) <= 0):
        raise fail("lambdas", rule, lambdas)
    return array


def split_validation(
    X: np.ndarray, y: np.ndarray, task: str, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of the rows for early stopping (stratified for classes, when
    every class has two rows and the held-out part can hold one of each)."""
    stratify = None
    if task != "regression":
        counts = np.bincount(y)
        counts = counts[counts > 0]
        if counts.min() >= 2 and math.ceil(fraction * len(y)) >= len(counts):
            stratify = y
    train, val = shuffle_split(len(y), fraction, seed, stratify)  # scikit-learn's train_test_split
    return X[train], y[train], X[val], y[val]


@torch.no_grad()
def _state_copy(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class Measures(NamedTuple):
    """What a path point measures of its model besides its weights: mean losses (NaN
    without such rows), :func:`stationarity` and the penalty's value λ·R."""

    train_loss: float
    val_loss: float
    test_loss: float
    stationarity: float
    penalty: float


def _point(
    lambda_: float,
    model: nn.Module,
    reg: Regularizer,
    data: dict[str, tuple[Tensor, Tensor] | None],
    loss: str,
    feature_names: list[str],
    result: TrainResult,
    seconds: float,
    keep_state: bool,
    step: float,
) -> PathPoint:
    # the training loss from the stationarity's gradient pass: one forward pass, not two
    measured, train_loss = (
        _stationarity_and_loss(model, reg, *data["train"], loss, step) if data["train"] is not None else (math.nan,) * 2
    )
    val_loss, test_loss = _score(model, data["val"], loss), _score(model, data["test"], loss)
    measures = Measures(train_loss, val_loss, test_loss, measured, sum(reg.values().values()))
    return point_of(lambda_, model, reg, measures, feature_names, result, seconds, keep_state)


def point_of(
    lambda_: float,
    model: nn.Module,
    reg: Regularizer,
    measures: Measures,
    feature_names: list[str],
    result: TrainResult,
    seconds: float,
    keep_state: bool,
) -> PathPoint:
    """The point of ``model`` (its weights) at ``lambda_``, with its ``measures``; its
    sparsity as ``reg`` (the path's terms on ``model``, at any λ) reports it."""
    report = reg.sparsity(feature_names=feature_names)
    # known: regularization_path refused a model without an identified input weight
    assert report.features_used is not None and report.features_used_names is not None
    return PathPoint(
        lambda_=float(lambda_),
        train_loss=measures.train_loss,
        val_loss=measures.val_loss,
        test_loss=measures.test_loss,
        penalty=measures.penalty,
        n_nonzero=report.numel - report.zeros,
        n_penalized=report.numel,
        zero_groups=sum(z for z, _ in report.groups.values()),
        n_groups=sum(n for _, n in report.groups.values()),
        features=report.features_used,
        feature_names=report.features_used_names,
        dead_units=report.dead_units,
        epochs=result.epochs,
        seconds=seconds,
        state=_state_copy(model) if keep_state else None,
        train_curve=list(result.train_loss),
        val_curve=list(result.val_loss),
        feature_norms=column_norms(model),
        stationarity=measures.stationarity,
    )


def column_norms(model: nn.Module) -> list[float]:
    """‖column j‖₂ of the model's input weight, per input feature (empty without one)."""
    found = input_parameter_of(model)
    if found is None:
        return []
    weight = found[1].detach()
    return weight.double().pow(2).sum(dim=[d for d in range(weight.ndim) if d != 1]).sqrt().cpu().tolist()


def _no_input_layer() -> InputError:
    return InputError(
        "model's input weight (the one whose columns are X's features) cannot be identified from its structure "
        "(see shrinkage.structure.input_parameter_of); give the model an input_parameter attribute naming it, "
        "e.g. input_parameter = 'encoder.0.weight'"
    )


def _score(model: nn.Module, pair: tuple[Tensor, Tensor] | None, loss: str) -> float:
    return evaluate(model, pair[0], pair[1], loss) if pair is not None else math.nan


def relaxed_fit(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    features: Sequence[int],
    loss: str,
    validation: tuple[Tensor, Tensor] | None,
    config: TrainConfig,
    seed: int = 0,
    start: dict[str, Tensor] | None = None,
) -> nn.Module:
    """The relaxed (debiased) model: ``model`` retrained without penalty, the input
    features not in ``features`` held at exactly zero (their columns in every weight
    that reads the inputs, see :func:`~shrinkage.structure.input_parameters_of`).

    Shrinkage that selects features also biases the kept weights toward zero; the
    relaxed fit keeps the selection and drops the bias (Meinshausen's relaxed lasso,
    glmnet's ``relax=TRUE``; LassoNet users call it debiasing). It starts from
    ``start`` weights when given (the path passes the network's initial weights:
    a penalized network's dead units sit at a saddle that training would not leave),
    else from ``model``'s own.

    Without a penalty nothing but early stopping bounds the fit: on classes the kept
    features separate, the loss falls toward 0 as the weights grow, and a fit stopped on
    a few validation rows that happen to be separated trains until it is far too sure.
    So :func:`~shrinkage.cv.cross_validate` stops the full-data path's relaxed fit, the
    model it returns, at the longest of its folds' relaxed fits at that λ
    (``PathPoint.relaxed_epochs``) if its own validation rows have not stopped it
    before: no longer than any fit the CV curve scored.
    """
    training = dict(X=X, y=y, loss=loss, validation=validation, config=config, seed=seed)
    return _relaxed_training(model, features, start, **training)[0]


def _relaxed_training(
    model: nn.Module, features: Sequence[int], start: dict[str, Tensor] | None, **training: Any
) -> tuple[nn.Module, TrainResult]:
    """:func:`relaxed_fit`'s model and how its training went (``training``: the
    arguments of :func:`~shrinkage.train.train`)."""
    relaxed = copy.deepcopy(model)
    if start is not None:
        relaxed.load_state_dict(start)
    weights = [w for _, w in input_parameters_of(relaxed)]  # every weight that reads the inputs
    if not weights:
        raise _no_input_layer()
    keep = set(features)
    dropped = [j for j in range(weights[0].shape[1]) if j not in keep]

    @torch.no_grad()
    def hold_dropped_at_zero() -> None:
        for weight in weights:
            weight[:, dropped] = 0.0

    hold_dropped_at_zero()
    return relaxed, train(relaxed, after_step=hold_dropped_at_zero, **training)


def capped_epochs(config: TrainConfig, epochs: int) -> TrainConfig:
    """``config`` stopped after at most ``epochs`` epochs (early stopping as before)."""
    return config.replace(max_epochs=min(config.max_epochs, epochs))


def kept_epochs(result: TrainResult, config: TrainConfig) -> int:
    """The epochs a fit trained up to the weights it returned."""
    return result.best_epoch + 1 if config.restore_best and config.optimizer not in SOLVERS else result.epochs


def refits_by_folds(config: PathConfig) -> bool:
    """Whether cross-validation caps the full-data relaxed fits at the folds' epochs:
    with ``relax``, and an optimizer that stops early (a solver runs to its tolerance)."""
    return config.relax and config.dense_config.optimizer not in SOLVERS


def folds_relaxed_epochs(
    lambdas: Sequence[float] | np.ndarray, folds: Sequence[Sequence[PathPoint]]
) -> list[int | None]:
    """At each of ``lambdas``, the most epochs a fold's relaxed fit at that λ trained
    (None where no fold has a relaxed fit there: a diverged fit, a path that ended
    before it): how long the full-data relaxed fit may train."""
    epochs: dict[float, list[int]] = {}
    for points in folds:
        for point in points:
            if not point.diverged and point.relaxed_epochs is not None:
                epochs.setdefault(point.lambda_, []).append(point.relaxed_epochs)
    return [max(epochs[lam]) if lam in epochs else None for lam in lambdas]


def _prepare(
    X: Any, y: Any, task: str, validation, val_fraction: float, test, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray] | None]:
    X_np = check_X(X)
    y_np = check_y(y, task, X_np.shape[0])
    arrays: dict[str, tuple[np.ndarray, np.ndarray] | None] = {"all": (X_np, y_np), "val": None, "test": None}
    if validation is not None:
        X_val = check_X(validation[0], "X_val")
        arrays["train"] = (X_np, y_np)
        arrays["val"] = (X_val, check_y(validation[1], task, X_val.shape[0], "y_val", held_out=True))
    elif val_fraction > 0:
        if X_np.shape[0] < 2:
            raise fail(
                "X",
                "at least 2 rows to hold out a validation fraction",
                Described("n_samples=1"),
                verb="have",
            )
        X_tr, y_tr, X_val, y_val = split_validation(X_np, y_np, task, val_fraction, seed)
        arrays["train"], arrays["val"] = (X_tr, y_tr), (X_val, y_val)
    else:
        arrays["train"] = (X_np, y_np)
    if test is not None:
        X_te = check_X(test[0], "X_test")
        arrays["test"] = (X_te, check_y(test[1], task, X_te.shape[0], "y_test", held_out=True))
    return arrays


# ----------------------------------------------------------------- the path's steps
def next_lambda(
    grid: np.ndarray,
    points: Sequence[PathPoint],
    *,
    extend: int = 0,
    automatic: bool = False,
    sparsifying: bool = True,
    ratio: float | None = None,
) -> float | None:
    """The λ after ``points`` on ``grid``, or ``None`` when the path is done.

    The grid is walked in order; past its end, an automatic path of a sparsifying
    penalty goes on at the grid's ratio while penalized weights survive (up to
    ``extend`` more λ; ``ratio`` defaults to the grid's own). An automatic path stops
    early once a fitted point has no input feature or no penalized weight left: larger
    λ change nothing.

    >>> grid = lambda_grid(1.0, n_lambdas=3, lambda_min_ratio=0.01)
    >>> [float(lam) for lam in grid], next_lambda(grid, [])
    ([0.01, 0.1, 1.0], 0.01)
    """
    index = len(points)
    last = points[-1] if points else None
    if automatic and last is not None and _path_ends(last):
        return None
    if index < len(grid):
        return float(grid[index])
    if automatic and sparsifying and last is not None and index < len(grid) + extend:
        step = ratio if ratio is not None else float(grid[-1] / grid[-2])
        return last.lambda_ * step
    return None


def _ended(point: PathPoint) -> bool:
    """No input feature used, or no penalized weight left: larger λ change nothing."""
    return point.n_features == 0 or point.n_nonzero == 0


def _path_ends(point: PathPoint) -> bool:
    """Where an automatic path stops: a fitted point that has ended (:func:`_ended`)."""
    return not point.diverged and _ended(point)


class _RelaxedFits:
    """Relaxed fits along a path, one per feature set and length of training: the fit
    depends only on those (same start, same seed), and along a path many λ share one."""

    def __init__(
        self,
        fit: Callable[[list[int], TrainConfig], tuple[nn.Module, TrainResult]],
        score: Callable[[nn.Module], tuple[float, float]],
        config: TrainConfig,
        keep_states: bool = False,
    ):
        self._fit, self._score, self._config, self._keep = fit, score, config, keep_states
        self._done: dict[tuple[tuple[int, ...], int], _Relaxed] = {}

    def __len__(self) -> int:
        return len(self._done)

    def __call__(self, features: Sequence[int], epochs: int | None = None) -> _Relaxed:
        """(validation loss, test loss, weights or None, epochs trained) of the relaxed
        model on ``features``, stopped early (and at ``epochs`` epochs)."""
        config = self._config if epochs is None else capped_epochs(self._config, epochs)
        key = (tuple(features), config.max_epochs)
        if key not in self._done:
            model, result = self._fit(list(features), config)
            state = _state_copy(model) if self._keep else None
            self._done[key] = (*self._score(model), state, kept_epochs(result, config))
        return self._done[key]


#: A relaxed fit's record: validation loss, test loss, weights (or None), epochs trained.
_Relaxed = tuple[float, float, dict[str, Tensor] | None, int]


def set_relaxed(point: PathPoint, relaxed: _Relaxed) -> None:
    """Put a relaxed fit's record on ``point``."""
    point.relaxed_val_loss, point.relaxed_test_loss, point.relaxed_state, point.relaxed_epochs = relaxed


class _PathFit:
    """One path's training state: the network, its data, one optimizer for every λ."""

    def __init__(self, net: nn.Module, rules: list[Rule], data: dict, names: list[str], task: str, config: PathConfig):
        self.net, self.rules, self.data, self.names, self.config = net, rules, data, names, config
        self.loss = loss_for_task(task)
        self.initial = _state_copy(net) if config.relax else None
        # one optimizer for the whole path: its state (momentum, Adam's moments) carries
        # from λ to λ like the weights do, so no λ starts with a cold optimizer's jolt.
        # Made at the first λ: the batched engine, which drives its own Adam, never makes
        # it (torch's first optimizer costs about a second of imports).
        self._made: torch.optim.Optimizer | None = None
        self.relaxed = _RelaxedFits(self._relaxed_model, self._relaxed_scores, config.dense_config, config.keep_states)

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The path's torch optimizer; none for a full-batch solver (``fista``), which
        :func:`~shrinkage.train.train` runs itself and which carries no state between λ."""
        train_config = self.config.train_config
        if train_config.optimizer in SOLVERS:
            return None
        if self._made is None:
            self._made = make_optimizer(
                train_config.optimizer, self.net.parameters(), lr=train_config.lr, **train_config.optimizer_kwargs
            )
        return self._made

    def reset_optimizer(self) -> None:
        self._made = None  # a fresh one at the next λ

    def snapshot(self) -> dict[str, Tensor]:
        return _state_copy(self.net)

    def restore(self, state: dict[str, Tensor]) -> None:
        self.net.load_state_dict(state)

    def regularizer(self, lambda_: float) -> Regularizer:
        return Regularizer(self.net, scaled(self.rules, lambda_), mode=self.config.mode)

    def _point(self, lambda_: float, reg: Regularizer, result: TrainResult, seconds: float, keep: bool) -> PathPoint:
        config = self.config.dense_config if lambda_ == 0.0 else self.config.train_config
        return _point(lambda_, self.net, reg, self.data, self.loss, self.names, result, seconds, keep, config.lr)

    def dense_fit(self) -> PathPoint:
        """Train without penalty (λ = 0) from the initial weights."""
        X, y = self.data["train"]
        start = time.perf_counter()
        try:
            result = train(
                self.net,
                X,
                y,
                loss=self.loss,
                validation=self.data["val"],
                config=self.config.dense_config,
                seed=self.config.seed,
            )
        except Diverged as error:
            raise error.within("the dense fit (λ=0)") from None
        seconds = time.perf_counter() - start
        return self._point(0.0, self.regularizer(0.0), result, seconds, self.config.keep_states)

    def lambda_max(self) -> float:
        """λ_max of the current weights: exact for a linear model (weights at 0, intercept at its optimum)."""
        X, y = self.data["train"]
        probe = self.net
        if _is_linear(probe):
            probe = copy.deepcopy(probe)
            if isinstance(probe, nn.Linear):
                layer = probe
            else:
                chain = linear_chain(probe)
                assert chain is not None  # _is_linear: a Sequential with exactly one Linear layer
                layer = chain[0]
            _intercept_at_zero_(layer, y, self.loss)
        return lambda_max(probe, X, y, penalty=self.rules, loss=self.loss)

    def fit_at(self, lambda_: float, index: int) -> PathPoint:
        """Train at ``lambda_`` from the current weights; a divergence is raised or recorded."""
        X, y = self.data["train"]
        reg = self.regularizer(lambda_)
        start = time.perf_counter()
        try:
            result = train(
                self.net,
                X,
                y,
                loss=self.loss,
                regularizer=reg,
                validation=self.data["val"],
                config=self.config.train_config,
                seed=self.config.seed + index + 1,
                optimizer=self.optimizer,
            )
        except Diverged as error:
            if self.config.on_divergence == "raise":
                raise error.within(f"λ={lambda_:.4g}") from None
            point = self.diverged_point(lambda_, reg, error)
        else:
            point = self._point(lambda_, reg, result, 0.0, self.config.keep_states)
            if self.config.relax:
                set_relaxed(point, self.relaxed(point.features))
        point.seconds = time.perf_counter() - start
        return point

    def fit_through(
        self,
        lambdas: Sequence[float],
        index: int,
        until: Callable[[PathPoint], bool] | None = None,
        advance: Callable[[int], Any] | None = None,
    ) -> list[PathPoint]:
        """:meth:`fit_at` at each λ in turn, up to the first point ``until`` calls the
        path's end (``advance(1)`` after each)."""
        points: list[PathPoint] = []
        for offset, lam in enumerate(lambdas):
            points.append(self.fit_at(float(lam), index + offset))
            if advance is not None:
                advance(1)
            if until is not None and until(points[-1]):
                break
        return points

    def diverged_point(self, lambda_: float, reg: Regularizer, error: Diverged) -> PathPoint:
        """The failed λ's record: the weights it started from, losses NaN, ``diverged``.

        The network is back at its last finite weights; the optimizer's state may not
        be, so it starts afresh.
        """
        self.reset_optimizer()
        kept = self._point(lambda_, reg, TrainResult(error.epoch + 1, 0), 0.0, False)
        nan = math.nan  # what the kept weights score says nothing of this λ
        return replace(kept, train_loss=nan, val_loss=nan, test_loss=nan, penalty=nan, stationarity=nan, diverged=True)

    def relax_again(self, points: Sequence[PathPoint], epochs: Sequence[int | None]) -> None:
        """The relaxed fit of each of ``points`` again, stopped at its ``epochs`` at the
        latest (None: as on the path), on the points (a diverged point has none)."""
        for point, n in zip(points, epochs, strict=True):
            if not point.diverged:
                set_relaxed(point, self.relaxed(point.features, n))

    def _relaxed_model(self, features: list[int], config: TrainConfig) -> tuple[nn.Module, TrainResult]:
        X, y = self.data["train"]
        training = dict(X=X, y=y, loss=self.loss, validation=self.data["val"], config=config, seed=self.config.seed)
        return _relaxed_training(self.net, features, self.initial, **training)

    def _relaxed_scores(self, model: nn.Module) -> tuple[float, float]:
        return _score(model, self.data["val"], self.loss), _score(model, self.data["test"], self.loss)


def _as_rules(penalty: Any) -> list[Rule]:
    try:
        rules = as_rules(penalty)
    except (TypeError, ValueError):
        raise fail("penalty", "a Penalty (L1(), GroupLasso(), …) or rules", penalty, kind=TypeError) from None
    _check_uncentered(rules)
    return rules


def _check_uncentered(rules: Sequence[Rule]) -> None:
    """A path starts where the penalized weights are zero; a centred penalty's start is its centre."""
    for rule in rules:
        if rule.penalty.centered:
            raise InputError(
                f"paths and cross-validation start from zero weights, got {rule.penalty!r} centred on "
                "reference weights; fine-tune with a Regularizer (attach it to your optimizer) instead"
            )


def _names(feature_names: Sequence[str] | None, n_features: int) -> list[str]:
    names = [str(f) for f in feature_names] if feature_names is not None else [f"x{j}" for j in range(n_features)]
    if len(names) != n_features:
        raise fail(
            "feature_names",
            f"one name per column of X ({n_features})",
            Described(f"{len(names)} names"),
            verb="have",
        )
    return names


#: Below this many elements in a layer's activations (models × rows × width: a stack of
#: fits counts each), the CPU trains on one thread: such operations gain little from a
#: second thread, and on a machine whose cores are busy with other work, threads that
#: wait for each other at every operation made a study ten times slower and a small
#: estimator's cross-validation 2.5 times slower (measured on 2 shared cores).
_ONE_THREAD_BELOW = 1 << 22


@contextmanager
def cpu_threads(device: torch.device, activations: int) -> Iterator[None]:
    """One torch thread for small work on the CPU (see :data:`_ONE_THREAD_BELOW`)."""
    if device.type != "cpu" or activations >= _ONE_THREAD_BELOW:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def widest(model: nn.Module) -> int:
    """The largest dimension of any of the model's parameters: a bound on a layer's width."""
    return max(max(p.shape, default=1) for p in model.parameters())


def regularization_path(
    model: ModelSpec,
    X: Any,
    y: Any,
    *,
    penalty: Penalty | Rule | Sequence[Rule],
    task: str = "regression",
    config: PathConfig | None = None,
    validation: tuple[Any, Any] | None = None,
    test: tuple[Any, Any] | None = None,
    feature_names: Sequence[str] | None = None,
    callback: Callable[[PathPoint], bool | None] | None = None,
    progress: bool | None = None,
    **options: Any,
) -> RegularizationPath:
    """Train a model along a grid of λ, dense → sparse, each λ warm-started from the last.

    The objective at each λ is ``mean_i ℓ(f(x_i), y_i) + λ·R(selected weights)``.

    Parameters
    ----------
    model : nn.Module or callable
        A model to copy (it is not changed) or a factory of fresh models. Its output:
        one column for regression and binary tasks (a logit), K for K classes. Its
        input weight, whose columns are X's features, must be known from its structure
        or declared (:func:`~shrinkage.structure.input_parameter_of`): the path counts
        the features each λ keeps.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        Values for regression; class indices 0..K-1 otherwise.
    penalty : Penalty, Rule or list of Rule
        The penalty family; its own λ is ignored (the grid sets it). A bare penalty
        goes on the default selection (layer weights); rules put different penalties
        on different tensors, all scaled by the same λ (see :mod:`shrinkage.presets`).
    task : {"regression", "binary", "multiclass"}
        Sets the loss: mean squared error, binary or multi-class cross-entropy.
    config : PathConfig, optional
        The grid, the mode, the training, relaxation, divergence handling, device and
        seed (see :class:`PathConfig`).
    validation : (X_val, y_val), optional
        Early-stopping data. Without it, ``config.val_fraction`` of the rows are held out.
    test : (X_test, y_test), optional
        Data only scored (``PathPoint.test_loss``), never trained on.
    feature_names : sequence of str, optional
    callback : callable, optional
        Called with each :class:`PathPoint` in the order trained (λ added below the
        grid come last); return ``True`` to stop the path.
    progress : bool, optional
        A progress bar over λ; default: only when stderr is a terminal.
    **options
        Fields of :class:`PathConfig` (``n_lambdas=30``, ``relax=True``, …), applied
        over ``config``.

    Returns
    -------
    RegularizationPath
        The points, with the trained model (at the last λ) in ``.model``.
    """
    config = resolve_config(config, options)
    rules = _as_rules(penalty)
    fit = path_fit(model, X, y, rules, task, config, validation=validation, test=test, feature_names=feature_names)
    rows = fit.data["train"][0]
    with cpu_threads(rows.device, rows.shape[0] * widest(fit.net)):
        points, dense, lam_max, notes = walk(fit, rules, config, progress=progress, callback=callback)
    n_features = len(fit.names)
    return RegularizationPath(
        points, scaled(rules, 1.0), lam_max, dense, n_features, fit.names, model=fit.net, notes=notes
    )


def path_fit(
    model: ModelSpec,
    X: Any,
    y: Any,
    rules: list[Rule],
    task: str,
    config: PathConfig,
    *,
    validation: tuple[Any, Any] | None = None,
    test: tuple[Any, Any] | None = None,
    feature_names: Sequence[str] | None = None,
) -> _PathFit:
    """A path's training state, its arguments checked: the fresh network (seeded), the
    data split and on the device, one optimizer for the λ."""
    arrays = _prepare(X, y, task, validation, config.val_fraction, test, config.seed)
    everything = arrays["all"]
    assert everything is not None  # _prepare always sets "all" (and "train")
    names = _names(feature_names, everything[0].shape[1])
    torch.manual_seed(config.seed)
    net = _fresh_model(model).to(config.device)
    dtype = next(net.parameters()).dtype
    data = {
        key: to_tensors(*pair, device=config.device, dtype=dtype) if (pair := arrays[key]) is not None else None
        for key in ("train", "val", "test")
    }
    train_data = data["train"]
    assert train_data is not None  # _prepare always sets "train"
    _check_output(net, *train_data, task)
    Regularizer(net, rules, mode=config.mode)  # a bad selection or mode fails now, not after the dense fit
    if input_parameter_of(net) is None:  # a path counts the input features each λ keeps
        raise _no_input_layer()
    return _PathFit(net, rules, data, names, task, config)


class PathTraining(Protocol):
    """What :func:`walk` drives: a path's training state (:class:`_PathFit`, or the batched
    engine's stack of the full-data model and the folds). ``snapshot``/``restore`` save
    and put back the weights; ``reset_optimizer`` starts the optimizer afresh."""

    net: nn.Module

    def dense_fit(self) -> PathPoint: ...

    def lambda_max(self) -> float: ...

    def fit_through(
        self,
        lambdas: Sequence[float],
        index: int,
        until: Callable[[PathPoint], bool] | None = None,
        advance: Callable[[int], Any] | None = None,
    ) -> list[PathPoint]:
        """Train at each of ``lambdas`` (increasing; the first is the path's ``index``-th
        point), warm-started, up to the first point ``until`` calls the path's end;
        ``advance(1)`` after each. Returns the points."""
        ...

    def snapshot(self) -> Any: ...

    def restore(self, state: Any) -> None: ...

    def reset_optimizer(self) -> None: ...


def _counted(n: int, what: str) -> str:
    """``n what was`` or ``n what were``: a number of things in a note."""
    return f"{n} {what} {'was' if n == 1 else 'were'}"


def walk(
    fit: PathTraining,
    rules: list[Rule],
    config: PathConfig,
    *,
    progress: bool | None = None,
    callback: Callable[[PathPoint], bool | None] | None = None,
    bar: _Bar | None = None,
) -> tuple[list[PathPoint], PathPoint | None, float | None, list[str]]:
    """The path's steps over ``fit`` (a :class:`_PathFit`, or a stacked fit that trains
    other models alongside): the dense start, the grid — automatic from λ_max, extended
    past it while weights survive, extended below it when the model becomes constant
    before ``n_lambdas`` — and the λ in that order. Returns the points (increasing λ),
    the dense point, λ_max (automatic grids) and the notes. The λ count on ``bar`` (a
    caller's progress bar, grown by them) where given, else on a bar of their own
    (``progress``)."""
    grid = np.asarray(config.lambdas) if config.lambdas is not None else None
    dense = fit.dense_fit() if config.dense_start or (grid is None and not _is_linear(fit.net)) else None
    lam_max = None
    if grid is None:
        lam_max = fit.lambda_max()
        grid = lambda_grid(lam_max, n_lambdas=config.n_lambdas, lambda_min_ratio=config.lambda_min_ratio)
    automatic = lam_max is not None
    steps: dict[str, Any] = dict(
        extend=config.extend,
        automatic=automatic,
        sparsifying=any(r.penalty.sparsifying for r in rules),
        ratio=grid[-1] / grid[-2] if len(grid) > 1 else 1.0 / config.lambda_min_ratio,
    )
    points: list[PathPoint] = []
    notes: list[str] = []
    start = fit.snapshot() if automatic else None  # where the first λ starts, for a lower segment
    stopped = False

    def until(point: PathPoint) -> bool:  # the callback's stop, or an automatic path's end
        nonlocal stopped
        if not point.diverged and callback is not None and callback(point):
            stopped = True
            return True
        return automatic and _path_ends(point)

    counted = progress_bar(len(grid), "λ path", enabled=progress) if bar is None else counted_on(bar, len(grid))
    with counted as bar:
        while not stopped and (lam := next_lambda(grid, points, **steps)) is not None:
            if len(points) < len(grid):  # the rest of the grid in one go (a stacked fit: each model at its pace)
                points += fit.fit_through(grid[len(points) :].tolist(), len(points), until, bar.advance)
            else:  # weights survive past λ_max: the path goes on
                bar.grow(1)
                points += fit.fit_through([lam], len(points), until, bar.advance)
        if len(points) > len(grid):
            notes.append(
                f"weights survived the grid's largest λ ({grid[-1]:.4g}): "
                f"{_counted(len(points) - len(grid), 'larger λ')} added"
            )
        missing = config.n_lambdas - len(points)
        if automatic and start is not None and not stopped and missing > 0 and _ended(points[-1]):
            lower = points[0].lambda_ / steps["ratio"] ** np.arange(missing, 0, -1)
            bar.grow(missing)
            points[:0] = _lower_segment(fit, start, lower, len(points), bar, callback)
            notes.append(
                f"λ_max ({lam_max:.4g}, a bound taken at the dense fit) was above the λ at which the model became "
                f"constant ({points[-1].lambda_:.4g}): {_counted(len(points) - missing, 'λ of the grid')} trained, and "
                f"{_counted(missing, 'smaller λ')} added below it (down to {points[0].lambda_:.4g}) to keep n_lambdas"
            )
    return points, dense, lam_max, notes


def _lower_segment(
    fit: PathTraining,
    start: Any,
    lambdas: np.ndarray,
    first_index: int,
    bar: Any,
    callback: Callable[[PathPoint], bool | None] | None,
) -> list[PathPoint]:
    """Train ``lambdas`` (increasing) from the path's starting weights, warm-started λ
    after λ as the path itself, then put the network back at the path's last λ."""
    end = fit.snapshot()
    fit.restore(start)
    fit.reset_optimizer()  # as at the path's first λ

    def until(point: PathPoint) -> bool:
        return not point.diverged and callback is not None and bool(callback(point))

    segment = fit.fit_through([float(lam) for lam in lambdas], first_index, until, bar.advance)
    fit.restore(end)
    return segment

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
   input; larger λ change nothing) or every penalized weight is zero.

Every λ leaves a :class:`PathPoint`: losses, penalty, non-zeros, the input features
still used, epochs and wall time — and the weights, when ``keep_states`` asks.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

from ._arrays import check_X, check_y, to_tensors
from ._progress import progress_bar
from .penalties import Penalty
from .regularizer import MODES, Regularizer, Rule, as_rules
from .selection import Selector
from .structure import input_parameter_of, input_parameters_of, linear_chain
from .train import (
    LOSSES,
    Diverged,
    TrainConfig,
    TrainResult,
    as_targets,
    evaluate,
    loss_for_task,
    make_optimizer,
    train,
)
from .validation import Described, check_bool, check_choice, check_int, check_number, fail

__all__ = [
    "FIT_CONFIG",
    "PATH_CONFIG",
    "Path",
    "PathPoint",
    "column_norms",
    "lambda_grid",
    "lambda_max",
    "regularization_path",
    "relaxed_fit",
]

ModelSpec = nn.Module | Callable[[], nn.Module]

#: Training at each λ of a path: warm-started, so short; stops on the objective.
PATH_CONFIG = TrainConfig(lr=1e-2, batch_size=None, max_epochs=200, patience=10, monitor="objective")
#: Training from scratch without penalty (dense start, relaxed fits).
FIT_CONFIG = TrainConfig(lr=3e-2, batch_size=None, max_epochs=2000, patience=100, monitor="loss")


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
    train_curve, val_curve : list of float
        Data loss per epoch of this λ's training (training: averaged over the epoch's
        batches; validation: at the epoch's end).
    feature_norms : list of float
        ‖column j‖₂ of the input weight for each input feature: what a path plot draws.
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

    @property
    def n_features(self) -> int:
        return len(self.features)

    def record(self) -> dict[str, Any]:
        """The point as a plain dict (no weights), e.g. for a results store."""
        out = asdict(self)
        for key in ("state", "relaxed_state", "train_curve", "val_curve", "feature_norms"):
            out.pop(key)
        out["n_features"] = self.n_features
        return out


@dataclass
class Path:
    """A regularization path: the points in increasing λ and how they were made."""

    points: list[PathPoint]
    rules: list[Rule]  # the penalties, at λ = 1; each point scales them by its λ
    lambda_max: float | None
    dense: PathPoint | None
    n_features: int
    feature_names: list[str]

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


def _data_gradient(model: nn.Module, X: Tensor, y: Tensor, loss: str, params: list[Tensor]) -> list[Tensor]:
    """∇ of the mean data loss over all of (X, y) w.r.t. ``params`` (chunked)."""
    criterion = LOSSES[loss](reduction="sum")
    grads = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()
    for start in range(0, X.shape[0], 4096):
        out = model(X[start : start + 4096])
        target = as_targets(y[start : start + 4096], loss, out.dtype)
        parts = torch.autograd.grad(criterion(out, target) / X.shape[0], params, allow_unused=True)
        for g, part in zip(grads, parts):
            if part is not None:
                g.add_(part)
    model.train(was_training)
    return grads


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
        for r in scaled(as_rules(penalty), 1.0)
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
            grads = _data_gradient(model, X, y, loss, params)
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
            layouts = None if term.layouts is None else [term.layouts[i] for i in members]
            value = term.penalty.zero_threshold(grads, layouts)
            if math.isinf(value):  # L2 never zeroes: see the docstring
                value = 10.0 * max(float(g.abs().max()) for g in grads)
            best = max(best, value)
    if best <= 0:
        raise ValueError("lambda_max is 0: the data loss has zero gradient at zero weights (constant target?)")
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
    try:
        with torch.no_grad():
            out = model(X[:1])
    except RuntimeError as error:  # most often: the model expects another number of inputs
        raise ValueError(
            f"model must accept X's rows ({X.shape[1]} features), got an error from its forward pass: "
            + " ".join(str(error).split())
        ) from None
    expected = int(y.max()) + 1 if task == "multiclass" else 1
    if out.ndim != 2 or out.shape[1] < expected or (task != "multiclass" and out.shape[1] != 1):
        raise ValueError(
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
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=fraction, random_state=seed, stratify=stratify)
    return X_train, y_train, X_val, y_val


@torch.no_grad()
def _state_copy(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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
) -> PathPoint:
    report = reg.sparsity(feature_names=feature_names)
    return PathPoint(
        lambda_=float(lambda_),
        train_loss=_score(model, data["train"], loss),
        val_loss=_score(model, data["val"], loss),
        test_loss=_score(model, data["test"], loss),
        penalty=sum(reg.values().values()),
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
    )


def column_norms(model: nn.Module) -> list[float]:
    """‖column j‖₂ of the model's input weight, per input feature (empty without one)."""
    found = input_parameter_of(model)
    if found is None:
        return []
    weight = found[1].detach()
    return weight.double().pow(2).sum(dim=[d for d in range(weight.ndim) if d != 1]).sqrt().cpu().tolist()


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
    """
    relaxed = copy.deepcopy(model)
    if start is not None:
        relaxed.load_state_dict(start)
    weights = [w for _, w in input_parameters_of(relaxed)]  # every weight that reads the inputs
    keep = set(features)
    dropped = [j for j in range(weights[0].shape[1]) if j not in keep]

    @torch.no_grad()
    def hold_dropped_at_zero() -> None:
        for weight in weights:
            weight[:, dropped] = 0.0

    hold_dropped_at_zero()
    train(
        relaxed,
        X,
        y,
        loss=loss,
        validation=validation,
        config=config,
        seed=seed,
        after_step=hold_dropped_at_zero,
    )
    return relaxed


def _prepare(
    X: Any, y: Any, task: str, validation, val_fraction: float, test, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray] | None]:
    X_np = check_X(X)
    y_np = check_y(y, task, X_np.shape[0])
    arrays: dict[str, tuple[np.ndarray, np.ndarray] | None] = {"all": (X_np, y_np), "val": None, "test": None}
    if validation is not None:
        X_val = check_X(validation[0], "X_val")
        arrays["train"] = (X_np, y_np)
        arrays["val"] = (X_val, check_y(validation[1], task, X_val.shape[0], "y_val"))
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
        arrays["test"] = (X_te, check_y(test[1], task, X_te.shape[0], "y_test"))
    return arrays


def regularization_path(
    model: ModelSpec,
    X: Any,
    y: Any,
    *,
    penalty: Penalty | Rule | Sequence[Rule],
    task: str = "regression",
    lambdas: Sequence[float] | None = None,
    n_lambdas: int = 20,
    lambda_min_ratio: float = 1e-3,
    extend: int = 10,
    select: Selector = None,
    mode: str = "proximal",
    validation: tuple[Any, Any] | None = None,
    val_fraction: float = 0.1,
    test: tuple[Any, Any] | None = None,
    config: TrainConfig | None = None,
    dense_config: TrainConfig | None = None,
    dense_start: bool = True,
    relax: bool = False,
    feature_names: Sequence[str] | None = None,
    keep_states: bool = False,
    callback: Callable[[PathPoint], bool | None] | None = None,
    on_divergence: str = "raise",
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool | None = None,
    return_model: bool = False,
) -> Path | tuple[Path, nn.Module]:
    """Train a model along a grid of λ, dense → sparse, each λ warm-started from the last.

    The objective at each λ is ``mean_i ℓ(f(x_i), y_i) + λ·R(selected weights)``.

    Parameters
    ----------
    model : nn.Module or callable
        A model to copy (it is not changed) or a factory of fresh models. Its output:
        one column for regression and binary tasks (a logit), K for K classes.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        Values for regression; class indices 0..K-1 otherwise.
    penalty : Penalty, Rule or list of Rule
        The penalty family; its own λ is ignored (the grid sets it). Rules put
        different penalties on different tensors, all scaled by the same λ (e.g. a
        group lasso over one-hot blocks on the first layer, unit groups after it).
    task : {"regression", "binary", "multiclass"}
        Sets the loss: mean squared error, binary or multi-class cross-entropy.
    lambdas : sequence of float, optional
        The grid, strictly increasing. Default: automatic (see the module docstring).
        Empty (with ``dense_start``): only the dense fit, in ``Path.dense``.
    n_lambdas, lambda_min_ratio : int, float
        The automatic grid: ``n_lambdas`` geometric values from
        ``λ_max·lambda_min_ratio`` to ``λ_max``.
    extend : int, default 10
        How many more λ (same ratio) an automatic path may take past λ_max while
        penalized weights survive.
    select : selector, optional
        Which tensors a bare ``penalty`` touches (default: layer weights); rules carry
        their own.
    mode : str, default "proximal"
    validation : (X_val, y_val), optional
        Early-stopping data. Without it, ``val_fraction`` of the rows are held out.
    val_fraction : float in [0, 1), default 0.1
        0 trains on all rows and stops early on the training objective.
    test : (X_test, y_test), optional
        Data only scored (``PathPoint.test_loss``), never trained on.
    config : TrainConfig, optional
        Training at each λ (default :data:`PATH_CONFIG`: Adam, lr 1e-2, batches of
        128, early stopping on the validation objective). One optimizer serves the
        whole path, so its state carries from λ to λ.
    dense_config : TrainConfig, optional
        Training of the dense start and of relaxed fits, from scratch without penalty
        (default :data:`FIT_CONFIG`: full-batch Adam, lr 3e-2, patience 100 — on
        tabular data of a few thousand rows several times faster than mini-batches and
        no worse; pass mini-batches for large data).
    dense_start : bool, default True
        Train without penalty first. An automatic grid for a network needs it.
    relax : bool, default False
        At each λ also fit the relaxed model (see :func:`relaxed_fit`) and record its
        losses.
    feature_names : sequence of str, optional
    keep_states : bool, default False
        Keep each λ's ``state_dict`` (on the CPU): memory grows with the path.
    callback : callable, optional
        Called with each :class:`PathPoint`; return ``True`` to stop the path.
    on_divergence : {"raise", "skip"}, default "raise"
        When a fit's loss or weights stop being finite (:class:`~shrinkage.train.Diverged`):
        ``"raise"`` stops with an error naming λ and the epoch; ``"skip"`` records the
        λ as a failed point (``diverged=True``, losses NaN, the weights it started
        from), resets the optimizer's state and goes on to the next λ. The dense fit
        always raises.
    device : torch device, optional
    seed : int, default 0
        Seeds the model's initialization (for factories), splits and mini-batches.
    progress : bool, optional
        A progress bar over λ; default: only when stderr is a terminal.
    return_model : bool, default False
        Also return the model at the last λ.

    Returns
    -------
    Path, or (Path, nn.Module) with ``return_model``.
    """
    if isinstance(penalty, Penalty):
        penalty = Rule(penalty, select)
    elif select is not None:
        raise ValueError("select applies to a bare penalty; rules carry their own selection")
    try:
        rules = as_rules(penalty)
    except (TypeError, ValueError):
        raise fail("penalty", "a Penalty (L1(), GroupLasso(), …) or rules", penalty, kind=TypeError) from None
    if mode not in MODES:
        raise fail("mode", "one of " + ", ".join(repr(m) for m in MODES), mode)
    grid = _check_lambdas(lambdas, dense_start) if lambdas is not None else None
    extend = check_int("extend", extend, low=0)
    if grid is None:  # checked now, used after the dense fit
        lambda_grid(1.0, n_lambdas=n_lambdas, lambda_min_ratio=lambda_min_ratio)
    val_fraction = check_number("val_fraction", val_fraction, low=0.0, high=1.0, high_open=True)
    for name, flag in (("dense_start", dense_start), ("relax", relax), ("keep_states", keep_states)):
        check_bool(name, flag)
    seed = check_int("seed", seed)
    check_choice("on_divergence", on_divergence, ("raise", "skip"))
    config = config if config is not None else PATH_CONFIG
    dense_config = dense_config if dense_config is not None else FIT_CONFIG
    arrays = _prepare(X, y, task, validation, val_fraction, test, seed)
    n_features = arrays["all"][0].shape[1]
    names = [str(f) for f in feature_names] if feature_names is not None else [f"x{j}" for j in range(n_features)]
    if len(names) != n_features:
        raise fail(
            "feature_names",
            f"one name per column of X ({n_features})",
            Described(f"{len(names)} names"),
            verb="have",
        )

    torch.manual_seed(seed)
    net = _fresh_model(model).to(device)
    initial = _state_copy(net) if relax else None
    dtype = next(net.parameters()).dtype
    data = {
        key: to_tensors(*arrays[key], device=device, dtype=dtype) if arrays[key] is not None else None
        for key in ("train", "val", "test")
    }
    loss = loss_for_task(task)
    X_tr, y_tr = data["train"]
    _check_output(net, X_tr, y_tr, task)

    def regularizer(lam: float) -> Regularizer:
        return Regularizer(net, scaled(rules, lam), mode=mode)

    Regularizer(net, rules, mode=mode)  # a bad selection or mode fails now, not after the dense fit

    dense = None
    if dense_start or (grid is None and not _is_linear(net)):
        start = time.perf_counter()
        try:
            result = train(net, X_tr, y_tr, loss=loss, validation=data["val"], config=dense_config, seed=seed)
        except Diverged as error:
            raise error.within("the dense fit (λ=0)") from None
        dense = _point(0.0, net, regularizer(0.0), data, loss, names, result, time.perf_counter() - start, keep_states)

    lam_max = None
    if grid is None:
        probe = net
        if _is_linear(net):  # exact: weights at 0, intercept at its optimum
            probe = copy.deepcopy(net)
            _intercept_at_zero_(probe if isinstance(probe, nn.Linear) else linear_chain(probe)[0], y_tr, loss)
        lam_max = lambda_max(probe, X_tr, y_tr, penalty=rules, loss=loss)
        grid = lambda_grid(lam_max, n_lambdas=n_lambdas, lambda_min_ratio=lambda_min_ratio)
    automatic = lam_max is not None
    sparsifying = any(r.penalty.sparsifying for r in rules)
    ratio = grid[-1] / grid[-2] if len(grid) > 1 else 1.0 / lambda_min_ratio

    # one optimizer for the whole path: its state (momentum, Adam's moments) carries
    # from λ to λ like the weights do, so no λ starts with a cold optimizer's jolt
    optimizer = make_optimizer(config.optimizer, net.parameters(), lr=config.lr, **config.optimizer_kwargs)
    points: list[PathPoint] = []
    relaxed_fits: dict[tuple[int, ...], tuple[float, float, dict | None]] = {}
    with progress_bar(len(grid), "λ path", enabled=progress) as bar:
        for index in itertools.count():
            if index < len(grid):
                lam = float(grid[index])
            elif automatic and sparsifying and index < len(grid) + extend and not _ended(points[-1]):
                lam = points[-1].lambda_ * ratio  # weights survive past λ_max: go on
                bar.grow(1)
            else:
                break
            reg = regularizer(lam)
            start = time.perf_counter()
            try:
                result = train(
                    net,
                    X_tr,
                    y_tr,
                    loss=loss,
                    regularizer=reg,
                    validation=data["val"],
                    config=config,
                    seed=seed + index + 1,
                    optimizer=optimizer,
                )
            except Diverged as error:
                if on_divergence == "raise":
                    raise error.within(f"λ={lam:.4g}") from None
                # the net is back at its last finite weights; the optimizer's state may not be
                optimizer = make_optimizer(config.optimizer, net.parameters(), lr=config.lr, **config.optimizer_kwargs)
                kept = _point(lam, net, reg, data, loss, names, TrainResult(error.epoch + 1, 0), 0.0, False)
                nan = math.nan  # what the kept weights score says nothing of this λ
                point = replace(kept, train_loss=nan, val_loss=nan, test_loss=nan, penalty=nan)
                point.diverged, point.seconds = True, time.perf_counter() - start
                points.append(point)
                bar.advance(1)
                continue
            point = _point(lam, net, reg, data, loss, names, result, 0.0, keep_states)
            if relax:
                # the relaxed fit depends only on the feature set (same start, same
                # seed): along a path many λ share one, so each set is fitted once
                key = tuple(point.features)
                if key not in relaxed_fits:
                    relaxed = relaxed_fit(
                        net,
                        X_tr,
                        y_tr,
                        features=point.features,
                        loss=loss,
                        validation=data["val"],
                        config=dense_config,
                        seed=seed,
                        start=initial,
                    )
                    relaxed_fits[key] = (
                        _score(relaxed, data["val"], loss),
                        _score(relaxed, data["test"], loss),
                        _state_copy(relaxed) if keep_states else None,
                    )
                point.relaxed_val_loss, point.relaxed_test_loss, point.relaxed_state = relaxed_fits[key]
            point.seconds = time.perf_counter() - start
            points.append(point)
            bar.advance(1)
            if callback is not None and callback(point):
                break
            if automatic and _ended(point):
                break
    path = Path(points, scaled(rules, 1.0), lam_max, dense, n_features, names)
    return (path, net) if return_model else path


def _ended(point: PathPoint) -> bool:
    """No input feature used, or no penalized weight left: larger λ change nothing."""
    return point.n_features == 0 or point.n_nonzero == 0

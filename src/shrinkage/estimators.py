"""scikit-learn estimators: regularized MLPs, their cross-validated variants, feature selection.

Four estimators, built the way scikit-learn builds ``Lasso``/``LassoCV`` on one path
primitive:

- :class:`ShrinkageMLPRegressor` and :class:`ShrinkageMLPClassifier` fit one λ: they
  run :func:`~shrinkage.path.regularization_path` with that single λ (a dense start,
  then the penalized fit from it);
- :class:`ShrinkageMLPRegressorCV` and :class:`ShrinkageMLPClassifierCV` run
  :func:`~shrinkage.cv.cross_validate` and keep the model at ``lambda_1se`` (or
  ``lambda_min``).

Each minimizes ``mean_i ℓ(f(x_i), y_i) + λ·R(W)`` over the weights ``W`` of every layer
(never biases), with ℓ the squared error (regressors) or the cross-entropy
(classifiers; one logit for two classes) and ``R`` chosen by ``penalty``:

=================  ==================================================================
``"none"``         no penalty
``"l1"``           ``Σ|w|`` — exact zeros (proximal mode)
``"l2"``           ``Σw²``
``"elasticnet"``   ``ρ·Σ|w| + (1 − ρ)·Σw²``, ``ρ = l1_ratio``
``"group"``        ``Σ_g √|g|·‖w_g‖`` over input groups: a column of each weight
                   matrix, so whole input features (first layer) and whole hidden
                   units (later layers) drop out
``"sparse_group"`` ``ρ·Σ|w| + (1 − ρ)·group``
``"hierarchical"`` LassoNet: a :class:`~shrinkage.models.SkipMLP` whose features enter
                   the hidden layers only through their linear skip weight (bound
                   ``M``), selected by ``λ·Σ_j ‖skip_j‖`` (:class:`~shrinkage.HierarchicalLasso`)
=================  ==================================================================

With ``hidden_layer_sizes=()`` the network is one ``nn.Linear`` and the objective is
convex: the linear configuration. By default (``optimizer="auto"``) it is trained by
:func:`~shrinkage.solvers.fista` in float64 on all the training rows until its
stationarity is at most 1e-8, its inputs centred on their column means (exactly: the
intercept absorbs the shift, and the model is given back for the inputs as they are) —
scikit-learn's ``Lasso``, ``ElasticNet`` and
``LogisticRegression(penalty="l1")`` solutions, and with the CV variants ``LassoCV``'s
and ``ElasticNetCV``'s choice on the same folds (conversions in :mod:`shrinkage.convert`).
Networks train with Adam and early stopping.

They are also feature selectors (``transform`` keeps the input features the network
still uses, ``SelectFromModel`` works with ``feature_importances_``). Inputs are not
scaled here: put a ``StandardScaler`` in front, as for any penalized model.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import SelectorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from ._warnings import warn
from .batched import ENGINES
from .cv import cross_validate
from .models import ACTIVATIONS, MLP, SkipMLP
from .path import FIT_CONFIG, PATH_CONFIG, PathConfig, PathPoint, RegularizationPath, column_norms, regularization_path
from .penalties import L1
from .presets import PRESETS, get_preset
from .prune import SelectColumns, prune
from .regularizer import MODES, Regularizer, Rule
from .solvers import FISTA_CONFIG
from .train import OPTIMIZERS, SOLVERS, TrainConfig, loss_for_task, make_optimizer, train
from .validation import (
    InputError,
    InputTypeError,
    check_bool,
    check_choice,
    check_device,
    check_int,
    check_n_jobs,
    check_number,
    fail,
)

__all__ = [
    "ShrinkageMLPClassifier",
    "ShrinkageMLPClassifierCV",
    "ShrinkageMLPRegressor",
    "ShrinkageMLPRegressorCV",
]

PENALTY_NAMES = tuple(PRESETS)
#: The ``optimizer`` values: "auto" picks FISTA for the linear configuration (see ``_solver``).
OPTIMIZER_NAMES = ("auto", *OPTIMIZERS, *SOLVERS)
#: ``tol`` and ``max_iter`` when None: a torch optimizer's (early-stopping gain, epochs
#: of a fit from a dense start) and FISTA's (stationarity at a unit step, iterations:
#: :data:`~shrinkage.solvers.FISTA_CONFIG`). The CV estimators' torch optimizers train
#: each λ of a path warm-started from the last: :data:`~shrinkage.path.PATH_CONFIG`'s
#: 200 epochs (``_CrossValidated._epochs``).
DEFAULTS = {"optimizer": (1e-4, 500), "fista": (FISTA_CONFIG.tol, FISTA_CONFIG.max_epochs)}

#: A regression target's standard deviation outside this range is named when a network's
#: fit does not converge (on diabetes' raw target, std 77: 7.4 s, unconverged, test R²
#: 0.32; standardized: 3.1 s, converged, 0.35).
_UNIT_SCALE = (0.1, 10.0)


@contextmanager
def _input_errors() -> Iterator[None]:
    """scikit-learn's data checks, their errors raised as :class:`~shrinkage.validation.InputError`."""
    try:
        yield
    except InputError:
        raise
    except TypeError as error:
        raise InputTypeError(str(error)) from None
    except ValueError as error:
        raise InputError(str(error)) from None


def _hidden_sizes(name: str, value: Any) -> tuple[int, ...]:
    sizes = (value,) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise fail(name, "a sequence of positive integers", value, kind=TypeError) from None
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and int(s) >= 1 for s in sizes):
        raise fail(name, "a sequence of positive integers", value)
    return tuple(int(s) for s in sizes)


def _optional_int(low: int):
    def check(name: str, value: Any) -> int | None:
        return None if value is None else check_int(name, value, low=low)

    return check


_Estimator = TypeVar("_Estimator", bound="_ShrinkageMLP")


def _random_state(name: str, value: Any) -> Any:
    if value is None or isinstance(value, np.random.RandomState):
        return value
    check_int(name, value, low=0)
    if value > np.iinfo(np.uint32).max:
        raise fail(name, "None, an integer in [0, 2**32 - 1] or a numpy RandomState", value)
    return value


def _flag(name: str, value: Any) -> bool:
    return check_bool(name, bool(value) if isinstance(value, np.bool_) else value)


def _verbose(name: str, value: Any) -> int:
    return int(_flag(name, value)) if isinstance(value, (bool, np.bool_)) else check_int(name, value, low=0)


def _choices(options):
    return lambda name, value: check_choice(name, value, options)


def _number(**bounds):
    return lambda name, value: check_number(name, value, **bounds)


#: Each parameter's check (shrinkage.validation's message shape, raised at fit).
_COMMON_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "hidden_layer_sizes": _hidden_sizes,
    "l1_ratio": _number(low=0.0, high=1.0),
    "M": _number(low=0.0, low_open=True),
    "mode": _choices(MODES),
    "activation": _choices(ACTIVATIONS),
    "optimizer": _choices(OPTIMIZER_NAMES),
    "learning_rate": _number(low=0.0, low_open=True),
    "batch_size": _optional_int(1),
    "max_iter": _optional_int(1),
    "early_stopping": _flag,
    "validation_fraction": _number(low=0.0, high=1.0, low_open=True, high_open=True),
    "n_iter_no_change": lambda name, value: check_int(name, value, low=1),
    "tol": lambda name, value: None if value is None else check_number(name, value, low=0.0),
    "random_state": _random_state,
    "device": check_device,
    "verbose": _verbose,
}


def _rules(estimator, model: nn.Module, lambda_: float) -> list[Rule] | None:
    """The rules of the estimator's penalty preset (:mod:`shrinkage.presets`) on ``model``."""
    preset = get_preset(estimator.penalty)
    return preset.rules(model, lambda_, l1_ratio=estimator.l1_ratio, M=estimator.M)


@torch.no_grad()
def _move_intercepts_(fitted: list[Any], means: np.ndarray, sign: float) -> None:
    """``b ← b + sign·W·m`` in each linear configuration (an :class:`~shrinkage.models.MLP`
    without hidden layers, or its ``state_dict``), each tensor once.

    FISTA fits the linear configuration on centred inputs ``x − m``: an exact
    reparametrization, ``W·x + b = W·(x − m) + (b + W·m)``, that takes away the coupling of
    the intercept with the weights which makes uncentred inputs ill-conditioned (columns
    with mean 100 would need thousands of iterations). ``sign=-1`` turns a fit on the
    centred inputs into the user's model, ``+1`` the other way (a warm start).
    """
    seen: set[tuple[str, int]] = set()
    for item in fitted:
        state = item.state_dict() if isinstance(item, nn.Module) else item  # a module's: its own tensors
        weight, bias = state["0.weight"], state["0.bias"]
        if (str(bias.device), bias.data_ptr()) in seen:  # a relaxed fit's state serves several λ
            continue
        seen.add((str(bias.device), bias.data_ptr()))
        bias.add_(weight @ torch.as_tensor(means, dtype=weight.dtype, device=weight.device), alpha=sign)


def _recorded_states(path: RegularizationPath) -> list[dict]:
    """Every state a path recorded (its points' weights and relaxed weights)."""
    points = [p for p in (path.dense, *path.points) if p is not None]
    return [state for p in points for state in (p.state, p.relaxed_state) if state is not None]


def _importances(model: nn.Module, selected: np.ndarray) -> np.ndarray:
    """‖column j of the input weight‖₂ for the selected features, normalized to sum 1.

    With standardized inputs this is the size of feature j's push on the first layer;
    a feature the network no longer uses (no path of non-zero weights to the output)
    scores 0, so the ranking agrees with ``selected_features_``.
    """
    importances = np.asarray(column_norms(model)) * selected
    total = importances.sum()
    return importances / total if total > 0 else importances


class _ShrinkageMLP(SelectorMixin, BaseEstimator):
    """What all four estimators share: data handling, the network, prediction, selection."""

    _task_kind: str  # "regression" or "classification"

    # ----------------------------------------------------------------- configuration
    def _linear(self) -> bool:
        """The linear configuration: one ``nn.Linear`` (no hidden layer, no skip network),
        whose objective is convex."""
        hidden = _hidden_sizes("hidden_layer_sizes", self.hidden_layer_sizes)
        return not hidden and get_preset(self.penalty).model == "mlp"

    def _solver(self) -> str:
        """The optimizer ``optimizer`` resolves to: for ``"auto"``, FISTA for the linear
        configuration trained full-batch in mode proximal, Adam otherwise."""
        if self.optimizer != "auto":
            if self.optimizer in SOLVERS:
                if self.batch_size is not None:
                    raise fail("batch_size", f"None (full batch) with optimizer={self.optimizer!r}", self.batch_size)
                if self.mode != "proximal":
                    raise fail("mode", f"'proximal' with optimizer={self.optimizer!r} (it applies the prox)", self.mode)
            return self.optimizer
        full_batch = self.batch_size is None and self.mode == "proximal"
        return "fista" if self._linear() and full_batch else "adam"

    def _means(self, X: np.ndarray) -> np.ndarray | None:
        """The column means FISTA's linear fits centre the inputs on (see
        :func:`_move_intercepts_`); ``None`` for the other fits."""
        return X.mean(axis=0) if self._linear() and self._solver() in SOLVERS else None

    def _tol(self) -> float:
        """``tol``, or its default for the solver."""
        return self.tol if self.tol is not None else DEFAULTS[self._kind()][0]

    #: ``max_iter``'s default for a torch optimizer, in epochs
    _epochs = DEFAULTS["optimizer"][1]

    def _max_iter(self) -> int:
        """``max_iter``, or its default for the solver."""
        if self.max_iter is not None:
            return self.max_iter
        return self._epochs if self._kind() == "optimizer" else DEFAULTS["fista"][1]

    def _kind(self) -> str:
        return "fista" if self._solver() in SOLVERS else "optimizer"

    def _train_config(self) -> TrainConfig:
        """Training at the penalized λ: early stopping on the objective; FISTA to ``tol``
        (its stationarity measured at a unit step, where its line search starts)."""
        fista = self._solver() in SOLVERS
        return TrainConfig(
            optimizer=self._solver(),
            lr=FISTA_CONFIG.lr if fista else self.learning_rate,
            batch_size=self.batch_size,
            max_epochs=self._max_iter(),
            patience=self.n_iter_no_change,
            tol=self._tol(),
            monitor="objective",
        )

    def _fit_config(self) -> TrainConfig:
        """Training without penalty (the dense start, relaxed fits): on the data loss."""
        return self._train_config().replace(monitor="loss")

    def _path_config(self, **fields: Any) -> PathConfig:
        """The path settings the estimator's parameters give (``fields`` added).

        FISTA runs every fit to ``tol`` on all the training rows: it holds none out for
        early stopping, and a convex fit needs no dense start.
        """
        fista = self._solver() in SOLVERS
        if fista and self._linear() and fields.get("lambdas") != ():
            fields["dense_start"] = False
        return PathConfig(
            mode=self.mode,
            val_fraction=self.validation_fraction if self.early_stopping and not fista else 0.0,
            train_config=self._train_config(),
            dense_config=self._fit_config(),
            device=self.device,
            **fields,
        )

    def _warn_if_unconverged(self, point: PathPoint, target: np.ndarray) -> None:
        """scikit-learn's ``ConvergenceWarning`` when the fit that became the model ends
        more than ``tol`` from a stationary point (:func:`~shrinkage.path.stationarity`, 0
        at the optimum) after using every one of its ``max_iter`` epochs — or, for the
        linear configuration (a convex objective with one optimum), at all. A regression
        target far from unit scale is named: Adam's steps suit one near it."""
        tol = self._tol()
        if point.diverged or not point.stationarity > tol:
            return
        max_iter = self._max_iter()
        capped = point.epochs >= max_iter
        if not (capped or self._linear()):
            return
        fista = self._solver() in SOLVERS
        why = (
            f"used all max_iter={max_iter} {'iterations' if fista else 'epochs'}"
            if capped
            else f"stopped early after {point.epochs} epochs"
        )
        if fista:
            advice = "increase max_iter"
        elif self._linear():
            advice = (
                "its objective is convex with one optimum: optimizer='fista' trains it there (the default, "
                "optimizer='auto', does with batch_size=None and mode='proximal')"
            )
        else:
            advice = "increase max_iter, with a lower learning_rate (Adam's fixed step circles a stationary point)"
            spread = float(np.std(target)) if self._task_kind == "regression" else 1.0
            if not _UNIT_SCALE[0] <= spread <= _UNIT_SCALE[1]:
                advice = (
                    f"y's standard deviation is {spread:.3g}, and Adam's steps (learning_rate) suit a target near "
                    "unit scale: TransformedTargetRegressor(this estimator, transformer=StandardScaler()) trains on "
                    f"the standardized target; or {advice}"
                )
        warn(
            f"{type(self).__name__}: the fit at λ={point.lambda_:.4g} {why} and is still {point.stationarity:.2g} "
            f"from a stationary point, above tol={tol:g} (see shrinkage.path.stationarity); {advice}",
            ConvergenceWarning,
        )

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _dtype(self) -> torch.dtype:
        """float64 for FISTA (its default tolerance is below float32's resolution), else float32."""
        return torch.float64 if self._solver() in SOLVERS else torch.float32

    def _factory(self, n_features: int, n_outputs: int, dtype: torch.dtype = torch.float32):
        hidden, activation = _hidden_sizes("hidden_layer_sizes", self.hidden_layer_sizes), self.activation
        model = SkipMLP if get_preset(self.penalty).model == "skip_mlp" else MLP
        return lambda: model(n_features, hidden, n_outputs, activation=activation).to(dtype)

    def _check_params(self) -> None:
        """Every parameter against its rule (an :class:`~shrinkage.validation.InputError` naming it)."""
        for name, check in self._checks.items():
            check(name, getattr(self, name))

    # ----------------------------------------------------------------- data
    def _validate(self, X, y, *, reset: bool):
        """scikit-learn's checks of X and y, their errors as :class:`~shrinkage.validation.InputError`."""
        with _input_errors():
            return validate_data(self, X, y, reset=reset, dtype=np.float64, y_numeric=self._task_kind == "regression")

    def _encode_y(self, y: np.ndarray) -> tuple[np.ndarray, str, int]:
        """Targets for the path (values or class indices), the task and the outputs."""
        if self._task_kind == "regression":
            try:
                return y.astype(np.float64), "regression", 1
            except (TypeError, ValueError):  # (text, which scikit-learn's y_numeric lets through)
                raise InputError(
                    f"y must hold numbers for a regressor, got {y.dtype} values: {y[:3].tolist()}"
                ) from None
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            raise InputError(f"y holds labels not in classes_ {self.classes_.tolist()}: {np.unique(y[unknown])}")
        task = "binary" if len(self.classes_) == 2 else "multiclass"
        return np.searchsorted(self.classes_, y), task, 1 if task == "binary" else len(self.classes_)

    def _set_classes(self, y: np.ndarray) -> None:
        if self._task_kind == "classification":
            with _input_errors():
                check_classification_targets(y)
            self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                raise InputError(f"y must have at least two classes, got one class: {self.classes_[0]}")

    def _feature_names(self, n_features: int) -> list[str]:
        names = getattr(self, "feature_names_in_", None)
        return [str(n) for n in names] if names is not None else [f"x{j}" for j in range(n_features)]

    # ----------------------------------------------------------------- fitted state
    def _set_fitted(self, model: nn.Module, records: list, features: list[int], n_features: int) -> None:
        """Fitted attributes from the model and the path records that made it."""
        self.model_ = model.eval()
        self.selected_features_ = np.zeros(n_features, dtype=bool)
        self.selected_features_[features] = True
        self.feature_importances_ = _importances(model, self.selected_features_)
        self.loss_curve_ = [loss for r in records for loss in r.train_curve]
        self.validation_scores_ = [loss for r in records for loss in r.val_curve]
        self.n_iter_ = sum(r.epochs for r in records)
        if hasattr(self, "prune_report_"):  # a new fit of a pruned estimator: a full network again
            del self.prune_report_

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def prune(self: _Estimator, *, measure: bool = True) -> _Estimator:
        """A fitted copy of this estimator whose network has lost its unused inputs and
        dead units (:func:`shrinkage.prune.prune`).

        The copy reads the same ``X`` and predicts the same, to float rounding: its
        ``model_`` is a :class:`~shrinkage.prune.SelectColumns` that takes the kept
        columns of ``X`` (``prune_report_.kept_features``, the selected features) and
        runs the smaller network (``model_.module``) on them, so it replaces this
        estimator anywhere, in a ``Pipeline`` too. Every other fitted attribute is copied;
        this estimator is not changed.

        Parameters
        ----------
        measure : bool, default True
            Time both networks on their device, for the report.

        Returns
        -------
        estimator
            Of this class, with ``prune_report_``: a :class:`~shrinkage.prune.PruneReport`
            of the inputs kept (indices of the columns of ``X``) and the widths,
            parameters, FLOPs and (with ``measure``) latency before and after.

        Notes
        -----
        ``sklearn.base.clone`` of the copy, as of any estimator, is unfitted with the same
        parameters; its ``fit`` (and the copy's own) trains a new full network, which
        ``prune()`` may prune again. ``warm_start`` and ``partial_fit`` cannot continue
        from the smaller network (its widths are no longer ``hidden_layer_sizes``): they
        raise. The copy's own ``prune()`` prunes its smaller network, on the same columns.
        """
        check_is_fitted(self)
        network, columns = self.model_, list(range(self.n_features_in_))
        if isinstance(network, SelectColumns):  # already pruned: prune its network, on its columns
            columns = network.columns
            network = network.module
        names = self._feature_names(self.n_features_in_)
        small, report = prune(network, feature_names=[names[j] for j in columns], measure=measure)
        kept = [columns[j] for j in report.kept_features]
        pruned = copy.deepcopy(self)
        pruned.model_ = SelectColumns(kept, small).eval()
        pruned.prune_report_ = dataclasses.replace(report, kept_features=kept, n_features=self.n_features_in_)
        return pruned

    def _check_not_pruned(self, what: str) -> None:
        """Refuse to continue training a pruned network (``what``: the method or parameter)."""
        if hasattr(self, "prune_report_"):
            raise InputError(
                f"{what} cannot continue from a pruned network (prune() changed its widths); fit with "
                "warm_start=False trains a new one, or continue the estimator prune() was called on"
            )

    def _fit_data(self, X, y) -> tuple[np.ndarray, np.ndarray, str, int]:
        """Checked parameters and data for a new fit: X, the encoded target, the task and
        the number of network outputs."""
        self._check_params()
        if getattr(self, "warm_start", False) and hasattr(self, "model_"):
            self._check_not_pruned("warm_start=True")
        X, y = self._validate(X, y, reset=True)
        self._set_classes(y)
        return (X, *self._encode_y(y))

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self)
        return self.selected_features_

    @torch.no_grad()
    def _outputs(self, X: Any) -> np.ndarray:
        """The network's raw outputs (values or logits), ``(n_samples, n_outputs)``.

        Computed in float64 whatever the training precision: a row's prediction then
        does not depend on which other rows share its batch (float32 matrix products
        round differently for different batch sizes).
        """
        check_is_fitted(self)
        with _input_errors():
            X = validate_data(self, X, reset=False, dtype=np.float64)
        device = next(self.model_.parameters()).device
        weights = {k: v.double() for k, v in self.model_.state_dict().items()}
        inputs = torch.as_tensor(np.require(X, requirements="W"), device=device)  # a read-only array is copied
        out = torch.func.functional_call(self.model_, weights, (inputs,))
        return out.cpu().numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.target_tags.required = True
        return tags


class _SingleLambda(_ShrinkageMLP):
    """Fit at one λ: the path with one point (after a dense start)."""

    def fit(self, X, y):
        """Fit the network at ``lambda_``; see the class docstring for the objective."""
        X, target, task, outputs = self._fit_data(X, y)
        warm = self.warm_start and hasattr(self, "model_")
        dtype = self._dtype()
        model = copy.deepcopy(self.model_).to(dtype) if warm else self._factory(X.shape[1], outputs, dtype)
        means = self._means(X)
        if warm and means is not None:
            _move_intercepts_([model], means, +1.0)
        rules = _rules(self, model if warm else model(), self.lambda_)
        lambdas = [self.lambda_] if rules is not None and self.lambda_ > 0 else []
        seed = self._seed()
        path = regularization_path(
            model,
            X if means is None else X - means,
            target,
            penalty=rules if rules is not None else L1(0.0),
            task=task,
            config=self._path_config(lambdas=tuple(lambdas), dense_start=not warm or not lambdas, seed=seed),
            feature_names=self._feature_names(X.shape[1]),
            progress=self.verbose > 0,
        )
        records = [r for r in (path.dense, *path.points) if r is not None]
        self.path_ = path
        assert path.model is not None  # regularization_path returns its trained model
        if means is not None:
            _move_intercepts_([path.model, *_recorded_states(path)], means, -1.0)
        self._set_fitted(path.model, records, records[-1].features, X.shape[1])
        self.penalty_value_ = records[-1].penalty
        self._warn_if_unconverged(records[-1], target)
        self._optimizer, self._partial_seed = None, seed  # for partial_fit after fit
        return self

    def _partial_config(self) -> TrainConfig:
        """One epoch with a torch optimizer ("auto": Adam); FISTA has no epochs to give."""
        if self.optimizer in SOLVERS:
            raise fail("optimizer", "a torch optimizer or 'auto' for partial_fit", self.optimizer)
        optimizer = "adam" if self.optimizer == "auto" else self.optimizer
        tol = self.tol if self.tol is not None else DEFAULTS["optimizer"][0]
        return TrainConfig(
            optimizer=optimizer,
            lr=self.learning_rate,
            batch_size=self.batch_size,
            max_epochs=1,
            patience=self.n_iter_no_change,
            tol=tol,
            monitor="objective",
            restore_best=False,
        )

    def _partial_fit(self, X, y, classes=None):
        config = self._partial_config()
        first = not hasattr(self, "model_")
        self._check_not_pruned("partial_fit")
        if self._task_kind == "classification" and first:
            if classes is None:
                raise InputError("classes must be given on the first call to partial_fit")
            self._set_classes(np.asarray(classes))
        X, y = self._validate(X, y, reset=first)
        target, task, outputs = self._encode_y(y)
        if first:
            self._partial_seed = self._seed()
            torch.manual_seed(self._partial_seed)
            self.model_ = self._factory(X.shape[1], outputs)().to(self.device)
            self.loss_curve_, self.n_iter_ = [], 0
        model = self.model_.train()
        if getattr(self, "_optimizer", None) is None:  # kept between calls, like the weights
            self._optimizer = make_optimizer(config.optimizer, model.parameters(), lr=config.lr)
        rules = _rules(self, model, self.lambda_)
        reg = Regularizer(model, rules, mode=self.mode) if rules is not None else None
        parameter = next(model.parameters())
        self._partial_seed += 1
        result = train(
            model,
            torch.as_tensor(X, dtype=parameter.dtype, device=parameter.device),
            torch.as_tensor(target, device=parameter.device),
            loss=loss_for_task(task),
            regularizer=reg,
            config=config,
            seed=self._partial_seed,
            optimizer=self._optimizer,
        )
        report = (reg if reg is not None else Regularizer(model, L1(0.0))).sparsity()
        self.model_ = model.eval()
        self.selected_features_ = np.zeros(X.shape[1], dtype=bool)
        assert report.features_used is not None  # MLP and SkipMLP declare their input weight
        self.selected_features_[report.features_used] = True
        self.feature_importances_ = _importances(model, self.selected_features_)
        self.loss_curve_ = [*self.loss_curve_, *result.train_loss]
        self.n_iter_ += result.epochs
        return self


class _CrossValidated(_ShrinkageMLP):
    """λ chosen by K-fold cross-validation on a path (:func:`~shrinkage.cv.cross_validate`)."""

    # each λ warm-started from the last: a short fit, as in every path of the library
    _epochs = PATH_CONFIG.max_epochs

    def fit(self, X, y):
        """Cross-validate the path and keep the model at the selected λ."""
        X, target, task, outputs = self._fit_data(X, y)
        factory = self._factory(X.shape[1], outputs, self._dtype())
        # unpenalized fits: the library's defaults for networks; FISTA's convex fits keep FISTA
        options: dict[str, Any] = {}
        if self.fit_config == "default" and self._solver() not in SOLVERS:
            options["dense_config"] = FIT_CONFIG
        rules = _rules(self, factory(), 1.0)
        assert rules is not None  # _CV_CHECKS refuses penalty="none"
        means = self._means(X)  # the full data's: on every fold an exact shift too
        result = cross_validate(
            factory,
            X if means is None else X - means,
            target,
            penalty=rules,
            task=task,
            cv=self.cv,
            selection=self.selection,
            config=self._path_config(
                lambdas=None if self.lambdas is None else tuple(self.lambdas),
                n_lambdas=self.n_lambdas,
                lambda_min_ratio=self.lambda_min_ratio,
                relax=self.relax,
                seed=self._seed(),
            ),
            feature_names=self._feature_names(X.shape[1]),
            n_jobs=self.n_jobs,
            progress=self.verbose > 0,
            engine=self.engine,
            **options,
        )
        if means is not None:
            models = [m for m in (result.model, result.path.model) if m is not None]
            _move_intercepts_([*models, *_recorded_states(result.path)], means, -1.0)
        self.cv_result_ = result
        self.lambdas_ = result.lambdas
        self.cv_scores_ = result.scores
        self.cv_mean_ = result.mean
        self.cv_se_ = result.se
        self.lambda_min_ = result.lambda_min
        self.lambda_1se_ = result.lambda_1se
        self.lambda_ = result.lambda_
        self.path_ = result.path
        point = result.path.points[result.index]
        self._set_fitted(copy.deepcopy(result.model), [point], point.features, X.shape[1])
        if result.relaxed:  # model_ is the relaxed refit: the epochs it trained
            assert point.relaxed_epochs is not None  # the chosen λ did not diverge
            self.n_iter_ = point.relaxed_epochs
        self.penalty_value_ = point.penalty
        self._warn_if_unconverged(point, target)
        return self


# ------------------------------------------------------------------------ concrete
class _RegressorMethods(RegressorMixin):
    _task_kind = "regression"

    def predict(self, X) -> np.ndarray:
        """Predicted values, shape ``(n_samples,)``."""
        return self._outputs(X)[:, 0]


class _ClassifierMethods(ClassifierMixin):
    _task_kind = "classification"

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape ``(n_samples, n_classes)``, columns in ``classes_``."""
        out = self._outputs(X)
        if out.shape[1] == 1:
            p = 1.0 / (1.0 + np.exp(-out[:, 0]))
            return np.column_stack([1.0 - p, p])
        out = out - out.max(axis=1, keepdims=True)
        e = np.exp(out)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """The most probable class label of each row."""
        best = np.argmax(self.predict_proba(X), axis=1)
        return self.classes_[best]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags


_SINGLE_CHECKS = {
    **_COMMON_CHECKS,
    "penalty": _choices(PENALTY_NAMES),
    "lambda_": _number(low=0.0),
    "warm_start": _flag,
}

_CV_CHECKS = {
    **_COMMON_CHECKS,
    "penalty": _choices([name for name in PENALTY_NAMES if name != "none"]),
    "lambdas": lambda name, value: value,  # checked by PathConfig, with the path's rule
    "n_lambdas": lambda name, value: check_int(name, value, low=2),
    "lambda_min_ratio": _number(low=0.0, high=1.0, low_open=True, high_open=True),
    "cv": lambda name, value: check_int(name, value, low=2),
    "selection": _choices(("1se", "min")),
    "relax": _flag,
    "fit_config": _choices(("default", "same")),
    "n_jobs": check_n_jobs,
    "engine": _choices(ENGINES),
}

_COMMON_DOC = """
    hidden_layer_sizes : tuple of int, default (64,)
        Widths of the hidden layers; ``()`` makes a linear model.
    l1_ratio : float in [0, 1], default 0.5
        ρ, for ``"elasticnet"`` and ``"sparse_group"``.
    M : float > 0, default 10
        The hierarchy bound of ``"hierarchical"`` (LassoNet): a feature's first-layer
        weights stay within ``M`` times its skip weight. Exact with ``optimizer="sgd"``.
    mode : {"proximal", "loss", "gradient", "decoupled"}, default "proximal"
        How the penalty reaches the weights; only ``"proximal"`` gives exact zeros.
    activation : {"relu", "tanh", "sigmoid", "gelu", "silu"}, default "relu"
    optimizer : {"auto", "fista", "adam", "adamw", "sgd", "rmsprop", "adagrad"}, default "auto"
        ``"fista"``: the full-batch accelerated proximal-gradient solver
        (:func:`~shrinkage.solvers.fista`), in float64, run to ``tol`` on all the training
        rows — for the linear configuration, the optimum scikit-learn's solvers find. It
        needs ``batch_size=None`` and ``mode="proximal"``; ``learning_rate``,
        ``early_stopping`` and ``n_iter_no_change`` do not apply (no rows are held out,
        nothing stops early). The others are torch optimizers with early stopping.
        ``"auto"``: ``"fista"`` for the linear configuration (``hidden_layer_sizes=()``,
        any penalty but ``"hierarchical"``) with ``batch_size=None`` and
        ``mode="proximal"``, else ``"adam"``.
    learning_rate : float, default 1e-2
        For the torch optimizers.
    batch_size : int or None, default None
        ``None`` trains full-batch (fast for tabular data of a few thousand rows).
    max_iter : int, optional
        Cap per fit: on epochs for a torch optimizer (default 500; in the CV estimators
        200 per λ, each λ warm-started from the last), on iterations for FISTA (default
        10,000).
    early_stopping : bool, default True
        Hold out ``validation_fraction`` of the training rows and stop when the
        validation objective stalls; otherwise watch the training objective (torch
        optimizers).
    validation_fraction : float in (0, 1), default 0.1
    n_iter_no_change : int, default 30 (10 in the CV estimators)
        Patience, in epochs (torch optimizers).
    tol : float, optional
        For a torch optimizer (default 1e-4), the relative improvement that resets the
        patience; for FISTA (default 1e-8), the stationarity at a unit step
        (:func:`~shrinkage.path.stationarity`) it runs to. Also the convergence test: a fit
        that used all ``max_iter`` epochs or iterations — or, for the linear configuration
        (a convex objective), any fit — and ends more than ``tol`` from a stationary
        point gives scikit-learn's ``ConvergenceWarning``.
    random_state : int, RandomState or None
        Seeds initialization, splits and mini-batches.
    device : str, default "cpu"
        Where the network trains ("cuda", "mps", …).
    verbose : int, default 0
        Progress bars when > 0.
"""

_COMMON_ATTRIBUTES = """
    model_ : torch.nn.Module
        The fitted network: an :class:`~shrinkage.models.MLP`, or a
        :class:`~shrinkage.models.SkipMLP` for ``penalty="hierarchical"``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When X had column names (a pandas DataFrame).
    selected_features_ : ndarray of bool (n_features_in_,)
        Input features the network uses: a path of non-zero weights to an output.
    feature_importances_ : ndarray (n_features_in_,)
        Norm of each selected input's first-layer weights, normalized to sum 1 (0 for
        unused inputs).
    loss_curve_, validation_scores_ : list of float
        Training and validation data loss per epoch.
    n_iter_ : int
        Epochs trained.
    penalty_value_ : float
        λ·R of the fitted weights.
    path_ : RegularizationPath
        The path record(s) behind the fit.
    prune_report_ : PruneReport
        Only on the copy :meth:`prune` returns (whose ``model_`` is then a
        :class:`~shrinkage.prune.SelectColumns`): what pruning removed.
"""


class ShrinkageMLPRegressor(_RegressorMethods, _SingleLambda):
    __doc__ = f"""An MLP regressor with an L1, L2, elastic-net or group penalty.

    Minimizes ``(1/n)·Σ_i (y_i − f(x_i))² + lambda_·R(W)`` (see :mod:`shrinkage.estimators`
    for ``R``). With ``hidden_layer_sizes=()`` and ``penalty="l1"`` this is scikit-learn's
    ``Lasso(alpha=lambda_/2)``, and with ``penalty="elasticnet"`` its
    ``ElasticNet(alpha=lambda_·(2 − ρ)/2, l1_ratio=ρ/(2 − ρ))``, ``ρ = l1_ratio``
    (:func:`~shrinkage.convert.to_sklearn_enet`): by default FISTA solves it to their
    optimum.

    Parameters
    ----------
    penalty : {{"l1", "l2", "elasticnet", "group", "sparse_group", "hierarchical", "none"}}, default "l1"
    lambda_ : float >= 0, default 1e-3
        The strength λ.
    {_COMMON_DOC}
    warm_start : bool, default False
        Start a new ``fit`` from the fitted network (no dense start): stepping
        ``lambda_`` up by hand traces a path. ``partial_fit`` trains one epoch.

    Attributes
    ----------
    {_COMMON_ATTRIBUTES}

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from shrinkage.estimators import ShrinkageMLPRegressor
    >>> X, y = make_regression(200, 10, n_informative=3, noise=1.0, random_state=0)
    >>> reg = ShrinkageMLPRegressor((16,), lambda_=1e-2, random_state=0).fit(X, y / y.std())
    >>> reg.predict(X[:2]).shape
    (2,)
    """

    _checks = _SINGLE_CHECKS

    def __init__(
        self,
        hidden_layer_sizes=(64,),
        *,
        penalty="l1",
        lambda_=1e-3,
        l1_ratio=0.5,
        M=10.0,
        mode="proximal",
        activation="relu",
        optimizer="auto",
        learning_rate=1e-2,
        batch_size=None,
        max_iter=None,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=30,
        tol=None,
        warm_start=False,
        random_state=None,
        device="cpu",
        verbose=0,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.penalty = penalty
        self.lambda_ = lambda_
        self.l1_ratio = l1_ratio
        self.M = M
        self.mode = mode
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def partial_fit(self, X, y):
        """One epoch on ``(X, y)`` with the penalty, continuing from the last call."""
        self._check_params()
        return self._partial_fit(X, y)


class ShrinkageMLPClassifier(_ClassifierMethods, _SingleLambda):
    __doc__ = f"""An MLP classifier with an L1, L2, elastic-net or group penalty.

    Minimizes the mean cross-entropy (one logit for two classes, softmax otherwise)
    ``+ lambda_·R(W)``. With ``hidden_layer_sizes=()`` and ``penalty="l1"`` this is
    scikit-learn's ``LogisticRegression(penalty="l1", C=1/(n·lambda_))`` (multinomial for
    more than two classes), solved to its optimum by FISTA by default.

    Parameters
    ----------
    penalty : {{"l1", "l2", "elasticnet", "group", "sparse_group", "hierarchical", "none"}}, default "l1"
    lambda_ : float >= 0, default 1e-3
    {_COMMON_DOC}
    warm_start : bool, default False
        Start a new ``fit`` from the fitted network (no dense start).

    Attributes
    ----------
    classes_ : ndarray
        The class labels (any sortable type, strings too).
    {_COMMON_ATTRIBUTES}
    """

    _checks = _SINGLE_CHECKS
    __init__ = ShrinkageMLPRegressor.__init__

    def partial_fit(self, X, y, classes=None):
        """One epoch on ``(X, y)``; ``classes`` (all labels) is required on the first call."""
        self._check_params()
        return self._partial_fit(X, y, classes)


class ShrinkageMLPRegressorCV(_RegressorMethods, _CrossValidated):
    __doc__ = f"""An MLP regressor whose λ is chosen by K-fold cross-validation on a path.

    Parameters
    ----------
    penalty : {{"l1", "l2", "elasticnet", "group", "sparse_group", "hierarchical"}}, default "group"
    lambdas : array-like, optional
        The λ grid (strictly increasing); default automatic, from ``n_lambdas`` and
        ``lambda_min_ratio`` below λ_max.
    n_lambdas : int, default 20
    lambda_min_ratio : float in (0, 1), default 1e-2
    cv : int, default 5
        Folds (stratified for classifiers).
    selection : {{"1se", "min"}}, default "1se"
        Keep the model at ``lambda_1se_`` (sparser, glmnet's rule) or ``lambda_min_``.
    relax : bool, default False
        Score and keep relaxed models: each λ's solution retrained without penalty on
        its own selected features (see :func:`~shrinkage.cv.cross_validate`). ``model_``
        is then the relaxed refit and ``n_iter_`` the epochs it trained; ``loss_curve_``,
        ``validation_scores_`` and ``penalty_value_`` stay the penalized fit's at the
        chosen λ (whose features the refit keeps).
    fit_config : {{"default", "same"}}, default "default"
        Unpenalized fits (dense start, relaxed fits) with the library's full-batch
        defaults, or with this estimator's training parameters.
    n_jobs : int, optional
        Folds in parallel through joblib, for the sequential engine.
    engine : {{"auto", "batched", "sequential"}}, default "auto"
        How the folds train (:func:`~shrinkage.cv.cross_validate`): ``"auto"`` trains
        the full-data path and the folds as one stacked network where it applies
        (full-batch Adam in mode ``proximal``; :mod:`shrinkage.batched`), else one path
        per fold; ``cv_result_.engine`` says which ran.
    {_COMMON_DOC}

    Attributes
    ----------
    lambdas_ : ndarray (n_lambdas,)
        The grid, increasing: ``n_lambdas`` λ, and more where the automatic grid went on
        past λ_max or below its smallest λ (``cv_result_.path.notes`` says why).
    cv_scores_ : ndarray (n_folds, n_lambdas)
        Held-out data loss of each fold at each λ.
    cv_mean_, cv_se_ : ndarray (n_lambdas,)
    lambda_min_, lambda_1se_ : float
    lambda_ : float
        The selected λ.
    cv_result_ : CVResult
    {_COMMON_ATTRIBUTES}

    Notes
    -----
    There is no ``partial_fit`` or ``warm_start``: cross-validation needs all the data
    and retrains every fold from scratch.
    """

    _checks = _CV_CHECKS

    def __init__(
        self,
        hidden_layer_sizes=(64,),
        *,
        penalty="group",
        l1_ratio=0.5,
        M=10.0,
        lambdas=None,
        n_lambdas=20,
        lambda_min_ratio=1e-2,
        cv=5,
        selection="1se",
        relax=False,
        mode="proximal",
        activation="relu",
        optimizer="auto",
        learning_rate=1e-2,
        batch_size=None,
        max_iter=None,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=None,
        fit_config="default",
        n_jobs=None,
        engine="auto",
        random_state=None,
        device="cpu",
        verbose=0,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.penalty = penalty
        self.l1_ratio = l1_ratio
        self.M = M
        self.lambdas = lambdas
        self.n_lambdas = n_lambdas
        self.lambda_min_ratio = lambda_min_ratio
        self.cv = cv
        self.selection = selection
        self.relax = relax
        self.mode = mode
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.fit_config = fit_config
        self.n_jobs = n_jobs
        self.engine = engine
        self.random_state = random_state
        self.device = device
        self.verbose = verbose


class ShrinkageMLPClassifierCV(_ClassifierMethods, _CrossValidated):
    # ShrinkageMLPRegressorCV.__doc__ is assigned (an f-string), so it is a str even under -OO
    __doc__ = (
        cast(str, ShrinkageMLPRegressorCV.__doc__)
        .replace("An MLP regressor whose", "An MLP classifier whose")
        .replace("    Attributes\n    ----------\n", "    Attributes\n    ----------\n    classes_ : ndarray\n", 1)
    )

    _checks = _CV_CHECKS
    __init__ = ShrinkageMLPRegressorCV.__init__

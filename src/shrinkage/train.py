"""One training run: mini-batches, an optimizer, a regularizer, early stopping.

This is the loop the demo, the paths, CV and the estimators share. Users with their
own loop don't need it: :class:`~shrinkage.Regularizer` plugs into any loop.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .regularizer import Regularizer
from .validation import InputError, check_bool, check_choice, check_int, check_number, fail, replace_fields

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "SOLVERS",
    "TASKS",
    "Diverged",
    "TrainConfig",
    "TrainResult",
    "as_targets",
    "evaluate",
    "loss_for_task",
    "make_optimizer",
    "train",
]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}

#: Full-batch solvers that :func:`train` runs itself, without a torch optimizer
#: (:mod:`shrinkage.solvers`): ``"fista"``, accelerated proximal gradient with line
#: search, which runs to a stationarity ``tol`` rather than stopping early.
SOLVERS = ("fista",)

LOSSES: dict[str, Callable[..., nn.Module]] = {
    "mse": nn.MSELoss,
    "bce": nn.BCEWithLogitsLoss,
    "cross_entropy": nn.CrossEntropyLoss,
}


class Diverged(FloatingPointError):
    """A fit produced a non-finite loss or non-finite weights.

    When it is raised, the model already holds the best weights of that fit (or, when
    none was finite, those it started from). The message says where: ``where`` lists
    the context, outermost first (``("fold 2", "λ=0.3")``), ``epoch`` the epoch.
    """

    def __init__(self, reason: str, epoch: int, where: tuple[str, ...] = ()):
        self.reason, self.epoch, self.where = reason, epoch, tuple(where)
        at = ", ".join((*self.where, f"epoch {epoch}"))
        super().__init__(
            f"training diverged at {at}: {reason}; the fit's best weights are kept. "
            "Lower lr or λ, or check the data for extreme values"
        )

    def within(self, where: str) -> Diverged:
        """The same error, placed inside ``where`` (e.g. ``"fold 2"``)."""
        return Diverged(self.reason, self.epoch, (where, *self.where))

    def __reduce__(self):  # crosses process boundaries (joblib workers) intact
        return Diverged, (self.reason, self.epoch, self.where)


#: The learning tasks, each with its loss (:func:`loss_for_task`): the one list of them.
TASKS = ("regression", "binary", "multiclass")


def loss_for_task(task: str) -> str:
    """``mse`` for regression, ``bce`` (one logit) for binary, ``cross_entropy`` otherwise."""
    task = check_choice("task", task, TASKS)
    return {"regression": "mse", "binary": "bce", "multiclass": "cross_entropy"}[task]


def make_optimizer(name: str, params, *, lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """An optimizer by name (``sgd``, ``adam``, ``adamw``, ``rmsprop``, ``adagrad``).

    AdamW gets ``weight_decay=0`` unless given: the library's penalty is the
    regularization, and AdamW's default decay (0.01) would add a second one.

    Adam and AdamW use PyTorch's fused kernel unless ``fused``/``foreach`` is given: on
    the small models of tabular work it is about 30% faster per step than the default.
    """
    if name in SOLVERS:
        raise InputError(
            f"optimizer {name!r} is a full-batch solver that train() runs itself, not a torch optimizer: "
            f"pass TrainConfig(optimizer={name!r}) to train()"
        )
    check_choice("optimizer", name, OPTIMIZERS)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    params = list(params)
    if name == "adamw":
        kwargs.setdefault("weight_decay", 0.0)
    if name in ("adam", "adamw") and "fused" not in kwargs and "foreach" not in kwargs:
        # the fused kernel takes float tensors on one device type it supports
        tensors = [p for p in params if isinstance(p, torch.Tensor)]
        if tensors and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors):
            kwargs["fused"] = True
    # every class here takes ``lr``; the base Optimizer's __init__ (params, defaults) does not
    build: Callable[..., torch.optim.Optimizer] = OPTIMIZERS[name]
    return build(params, lr=lr, **kwargs)


# the most halvings TrainConfig takes: lr·2⁻³⁰ is below a billionth of lr
_MAX_HALVINGS = 30


@dataclass(frozen=True)
class TrainConfig:
    """How one fit trains; shared by the demo, paths, CV and the estimators.

    Parameters
    ----------
    optimizer : {"sgd", "adam", "adamw", "rmsprop", "adagrad", "fista"}, default "adam"
        A torch optimizer, or ``"fista"``: the full-batch accelerated proximal-gradient
        solver of :func:`shrinkage.solvers.fista`, which needs ``batch_size=None`` and
        runs until its stationarity is at most ``tol`` (or ``max_epochs`` iterations):
        no early stopping, so ``patience``, ``lr_halvings``, ``monitor`` and
        ``restore_best`` do not apply (its objective never rises: the last point is the
        best), and the validation data is only scored.
    lr : float, default 1e-3
        For ``"fista"``: the step its stationarity is measured with (the path's too),
        and the first step its line search tries; :data:`~shrinkage.solvers.FISTA_CONFIG`
        uses 1.
    batch_size : int or None, default 64
        ``None`` trains full-batch.
    max_epochs : int, default 200
        Cap on epochs per fit (iterations for ``"fista"``).
    patience : int, default 10
        Stop after this many epochs without an improvement of the monitored value
        by ``tol·max(|best|, 1)`` (a plateau).
    lr_halvings : int in [0, 30], default 0
        At a plateau, halve the learning rate (of every parameter group) and go on from
        the current weights, at most this many times; the plateau after the last
        halving stops the fit. That is torch's ``ReduceLROnPlateau(factor=0.5,
        patience=patience - 1, threshold=tol, threshold_mode="abs")`` (for monitored
        values below 1; above, ``tol`` is relative) with early stopping. The learning
        rate is put back when the fit ends (a path's optimizer starts each λ at
        ``lr``). 0: the first plateau stops.
    tol : float, default 1e-4
        Relative for values above 1, absolute below: a cross-entropy falling toward 0
        on separable classes stops, while a loss in the thousands still needs a
        relative gain. For ``"fista"``: the stationarity it stops at.
    monitor : {"loss", "objective"}, default "loss"
        What early stopping watches, on the validation data when given (else on the
        training data): the data loss, or the data loss plus the penalty. Paths use
        ``"objective"`` so that a fit at a large λ runs until its sparsity settles.
    restore_best : bool, default True
        Return the weights of the best epoch rather than of the last.
    optimizer_kwargs : dict, optional
        Passed to the optimizer (e.g. ``{"momentum": 0.9}``).
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int | None = 64
    max_epochs: int = 200
    patience: int = 10
    lr_halvings: int = 0
    tol: float = 1e-4
    monitor: str = "loss"
    restore_best: bool = True
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, (*OPTIMIZERS, *SOLVERS))
        check_number("lr", self.lr, low=0.0, low_open=True)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, low=1)
            if self.optimizer in SOLVERS:
                raise fail("batch_size", f"None (full batch) with optimizer={self.optimizer!r}", self.batch_size)
        check_int("max_epochs", self.max_epochs, low=1)
        check_int("patience", self.patience, low=1)
        if check_int("lr_halvings", self.lr_halvings, low=0) > _MAX_HALVINGS:
            raise fail(
                "lr_halvings",
                f"at most {_MAX_HALVINGS} (the learning rate is then below a billionth of lr)",
                self.lr_halvings,
            )
        check_number("tol", self.tol, low=0.0)
        check_choice("monitor", self.monitor, ("loss", "objective"))
        check_bool("restore_best", self.restore_best)
        if not isinstance(self.optimizer_kwargs, dict):
            raise fail("optimizer_kwargs", "a dict", self.optimizer_kwargs, kind=TypeError)
        if self.optimizer in SOLVERS and self.optimizer_kwargs:
            raise fail("optimizer_kwargs", f"empty with optimizer={self.optimizer!r}", self.optimizer_kwargs)
        if self.optimizer in SOLVERS and self.lr_halvings:
            raise fail("lr_halvings", f"0 with optimizer={self.optimizer!r} (it runs to tol)", self.lr_halvings)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return replace_fields(self, changes, "field")


@dataclass
class TrainResult:
    """What one run did (the model holds the best state when it returns)."""

    epochs: int
    best_epoch: int
    train_loss: list[float] = field(default_factory=list)  # data loss per epoch
    val_loss: list[float] = field(default_factory=list)  # data loss per epoch
    penalty: list[float] = field(default_factory=list)  # λ·R at each epoch's end
    stopped_early: bool = False

    @property
    def best_val_loss(self) -> float:
        return self.val_loss[self.best_epoch] if self.val_loss else math.nan


def as_targets(y: Tensor, loss: str, dtype: torch.dtype) -> Tensor:
    """Class indices for cross-entropy; a column of the model's dtype otherwise."""
    if loss == "cross_entropy":
        return y.long()
    return (y.reshape(-1, 1) if y.ndim == 1 else y).to(dtype)


def _sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for running sums, except where the device has none (Apple's MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _learning_rates(optimizer: torch.optim.Optimizer) -> list[Any]:
    """Each parameter group's learning rate (a copy of a tensor one)."""
    return [group["lr"].clone() if isinstance(group["lr"], Tensor) else group["lr"] for group in optimizer.param_groups]


def _set_learning_rates(optimizer: torch.optim.Optimizer, rates: list[Any]) -> None:
    """Set each group's learning rate; a tensor one in place (a captured graph reads it)."""
    for group, rate in zip(optimizer.param_groups, rates):
        if isinstance(group["lr"], Tensor):
            group["lr"].copy_(rate)
        else:
            group["lr"] = rate


@torch.no_grad()
def evaluate(model: nn.Module, X: Tensor, y: Tensor, loss: str, batch_size: int = 4096) -> float:
    """Mean data loss of ``model`` on ``(X, y)`` in eval mode."""
    was_training = model.training
    model.eval()
    criterion = LOSSES[loss](reduction="sum")
    total = 0.0
    for start in range(0, X.shape[0], batch_size):
        out = model(X[start : start + batch_size])
        target = as_targets(y[start : start + batch_size], loss, out.dtype)
        total += float(criterion(out, target))
    model.train(was_training)
    return total / X.shape[0]


def train(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    loss: str = "mse",
    regularizer: Regularizer | None = None,
    validation: tuple[Tensor, Tensor] | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    after_step: Callable[[], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> TrainResult:
    """Train ``model`` in place and return its history.

    Minimizes ``mean_i ℓ(f(x_i), y_i) + penalty`` with mini-batches drawn by a seeded
    generator, and stops early as ``config`` says (see :class:`TrainConfig`).

    Parameters
    ----------
    model : nn.Module
    X, y : Tensor
        Training data on the model's device; ``y`` holds class indices for
        ``cross_entropy``, 0/1 for ``bce`` and values for ``mse``.
    loss : {"mse", "bce", "cross_entropy"}
    regularizer : Regularizer, optional
        Bound to ``model``; attached to the optimizer for the run (its penalty added to
        the loss in mode ``loss``).
    validation : (X_val, y_val), optional
        Data for early stopping.
    config : TrainConfig, optional
    seed : int
        Seeds the order of mini-batches.
    after_step : callable, optional
        Called after every optimizer step (e.g. to hold weights at zero).
    optimizer : torch.optim.Optimizer, optional
        An optimizer over ``model``'s parameters to continue with (its state carries
        over, as along a path); default: a new one as ``config`` says. Not with
        ``config.optimizer="fista"``, which needs none.

    Returns
    -------
    TrainResult
        A :class:`~shrinkage.solvers.FistaResult` for ``"fista"`` (``epochs`` counts its
        iterations, ``stopped_early`` that it reached ``tol``).
    """
    config = config if config is not None else TrainConfig()
    if not isinstance(config, TrainConfig):
        raise fail("config", "a TrainConfig", config, kind=TypeError)
    check_choice("loss", loss, LOSSES)
    if X.shape[0] != y.shape[0]:
        raise InputError(f"X and y must have the same number of rows, got {X.shape[0]} and {y.shape[0]}")
    if X.shape[0] == 0:
        raise fail("X", "non-empty", tuple(X.shape))
    if regularizer is not None and regularizer.model is not model:
        raise InputError("regularizer must be bound to the model being trained")
    if config.optimizer in SOLVERS:
        if optimizer is not None:
            raise InputError(f"optimizer must be None with config.optimizer={config.optimizer!r}, got {optimizer!r}")
        from .solvers import fista  # built on this module's pieces (losses, results)

        return fista(
            model,
            X,
            y,
            loss=loss,
            regularizer=regularizer,
            tol=config.tol,
            max_iter=config.max_epochs,
            step_size=config.lr,
            validation=validation,
            after_step=after_step,
        )

    opt = optimizer
    if opt is None:
        opt = make_optimizer(config.optimizer, model.parameters(), lr=config.lr, **config.optimizer_kwargs)
    handle = regularizer.attach(opt) if regularizer is not None else None
    in_loss = regularizer is not None and regularizer.in_loss
    criterion = LOSSES[loss]()
    target = as_targets(y, loss, _dtype(model))
    n = X.shape[0]
    size = n if config.batch_size is None else min(config.batch_size, n)
    generator = torch.Generator().manual_seed(seed)

    result = TrainResult(epochs=0, best_epoch=0)
    best_score = math.inf
    best_state = None
    start_state = copy.deepcopy(model.state_dict())  # what a divergence falls back to if no epoch is kept
    waited, halvings = 0, 0
    rates = _learning_rates(opt)  # put back at the end (after halvings)
    try:
        model.train()
        for epoch in range(config.max_epochs):
            order = torch.randperm(n, generator=generator).to(X.device) if size < n else None
            total = torch.zeros((), dtype=_sum_dtype(X.device), device=X.device)  # read once an epoch, not per step
            for start in range(0, n, size):
                index = order[start : start + size] if order is not None else slice(start, start + size)
                opt.zero_grad(set_to_none=True)
                data_loss = criterion(model(X[index]), target[index])
                objective = data_loss + regularizer.penalty() if in_loss and regularizer is not None else data_loss
                objective.backward()
                opt.step()
                if after_step is not None:
                    after_step()
                total += data_loss.detach().to(total.dtype) * (min(start + size, n) - start)
            train_loss = float(total) / n
            if not math.isfinite(train_loss):
                raise Diverged(f"the data loss is {train_loss}", epoch)
            penalty = sum(regularizer.values().values()) if regularizer is not None else 0.0
            # the monitored loss is measured at the epoch's end, like the penalty (the
            # running training loss above lags one step behind the weights)
            if validation is not None:
                score = evaluate(model, validation[0], validation[1], loss)
            else:
                score = evaluate(model, X, y, loss)
            if not (math.isfinite(score) and math.isfinite(penalty)):
                raise Diverged("the weights are no longer finite (the loss after the last step is not)", epoch)
            result.train_loss.append(train_loss)
            result.penalty.append(penalty)
            if validation is not None:
                result.val_loss.append(score)
            if config.monitor == "objective":
                score += penalty
            result.epochs = epoch + 1
            if math.isinf(best_score) or score < best_score - config.tol * max(abs(best_score), 1.0):
                best_score = score
                result.best_epoch = epoch
                waited = 0
                if config.restore_best:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
                if waited >= config.patience and halvings < config.lr_halvings:
                    halvings, waited = halvings + 1, 0
                    _set_learning_rates(opt, [rate * 0.5**halvings for rate in rates])
                elif waited >= config.patience:
                    result.stopped_early = True
                    break
    except Diverged:
        model.load_state_dict(best_state if best_state is not None else start_state)
        raise
    finally:
        if halvings:
            _set_learning_rates(opt, rates)
        if handle is not None:
            handle.remove()
    if best_state is not None:
        model.load_state_dict(best_state)
    return result

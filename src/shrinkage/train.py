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

from ._validation import check_choice, check_int, check_number, fail
from .regularizer import Regularizer

__all__ = ["LOSSES", "OPTIMIZERS", "TrainResult", "loss_for_task", "make_optimizer", "train"]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "mse": nn.MSELoss,
    "bce": nn.BCEWithLogitsLoss,
    "cross_entropy": nn.CrossEntropyLoss,
}


def loss_for_task(task: str) -> str:
    """``mse`` for regression, ``bce`` (one logit) for binary, ``cross_entropy`` otherwise."""
    task = check_choice("task", task, ("regression", "binary", "multiclass"))
    return {"regression": "mse", "binary": "bce", "multiclass": "cross_entropy"}[task]


def make_optimizer(name: str, params, *, lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """An optimizer by name (``sgd``, ``adam``, ``adamw``, ``rmsprop``, ``adagrad``)."""
    check_choice("optimizer", name, OPTIMIZERS)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    return OPTIMIZERS[name](params, lr=lr, **kwargs)


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


def _targets(y: Tensor, loss: str, dtype: torch.dtype) -> Tensor:
    """Class indices for cross-entropy; a column of the model's dtype otherwise."""
    if loss == "cross_entropy":
        return y.long()
    return (y.reshape(-1, 1) if y.ndim == 1 else y).to(dtype)


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


@torch.no_grad()
def evaluate(model: nn.Module, X: Tensor, y: Tensor, loss: str, batch_size: int = 4096) -> float:
    """Mean data loss of ``model`` on ``(X, y)`` in eval mode."""
    was_training = model.training
    model.eval()
    criterion = LOSSES[loss](reduction="sum")
    total = 0.0
    for start in range(0, X.shape[0], batch_size):
        out = model(X[start : start + batch_size])
        target = _targets(y[start : start + batch_size], loss, out.dtype)
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
    optimizer: str = "adam",
    lr: float = 1e-3,
    optimizer_kwargs: dict[str, Any] | None = None,
    batch_size: int | None = 64,
    max_epochs: int = 200,
    patience: int = 10,
    tol: float = 1e-4,
    seed: int = 0,
) -> TrainResult:
    """Train ``model`` in place and return its history.

    Minimizes ``mean_i ℓ(f(x_i), y_i) + penalty`` with mini-batches drawn by a seeded
    generator. With ``validation``, stops after ``patience`` epochs without a relative
    improvement of ``tol`` in validation data loss and restores the best epoch's
    weights; without it, the same rule applies to the training objective.

    Parameters
    ----------
    model : nn.Module
    X, y : Tensor
        Training data on the model's device; ``y`` holds class indices for
        ``cross_entropy``, 0/1 for ``bce`` and values for ``mse``.
    loss : {"mse", "bce", "cross_entropy"}
    regularizer : Regularizer, optional
        Bound to ``model``; attached to the optimizer for the run (penalty added to the
        loss in mode ``loss``).
    validation : (X_val, y_val), optional
    optimizer : {"sgd", "adam", "adamw", "rmsprop", "adagrad"}
    lr : float
    batch_size : int or None
        ``None`` trains full-batch.
    max_epochs, patience : int
    tol : float
    seed : int
    """
    check_choice("loss", loss, LOSSES)
    max_epochs = check_int("max_epochs", max_epochs, low=1)
    patience = check_int("patience", patience, low=1)
    tol = check_number("tol", tol, low=0.0)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, low=1)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X and y must have the same number of rows, got {X.shape[0]} and {y.shape[0]}")
    if X.shape[0] == 0:
        raise fail("X", "non-empty", tuple(X.shape))
    if regularizer is not None and regularizer.model is not model:
        raise ValueError("regularizer must be bound to the model being trained")

    opt = make_optimizer(optimizer, model.parameters(), lr=lr, **(optimizer_kwargs or {}))
    handle = regularizer.attach(opt) if regularizer is not None else None
    in_loss = regularizer is not None and regularizer.in_loss
    criterion = LOSSES[loss]()
    target = _targets(y, loss, _dtype(model))
    n = X.shape[0]
    size = n if batch_size is None else min(batch_size, n)
    generator = torch.Generator().manual_seed(seed)

    result = TrainResult(epochs=0, best_epoch=0)
    best_score = math.inf
    best_state = None
    waited = 0
    try:
        model.train()
        for epoch in range(max_epochs):
            order = torch.randperm(n, generator=generator).to(X.device) if size < n else None
            total = 0.0
            for start in range(0, n, size):
                index = order[start : start + size] if order is not None else slice(start, start + size)
                opt.zero_grad(set_to_none=True)
                data_loss = criterion(model(X[index]), target[index])
                objective = data_loss + regularizer.penalty() if in_loss else data_loss
                objective.backward()
                opt.step()
                total += float(data_loss.detach()) * (min(start + size, n) - start)
            train_loss = total / n
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"training diverged: the data loss is {train_loss} at epoch {epoch}; "
                    "lower lr or check the data for extreme values"
                )
            result.train_loss.append(train_loss)
            penalty = sum(regularizer.values().values()) if regularizer is not None else 0.0
            result.penalty.append(penalty)
            if validation is not None:
                score = evaluate(model, validation[0], validation[1], loss)
                result.val_loss.append(score)
            else:
                score = train_loss + penalty
            result.epochs = epoch + 1
            if score < best_score - tol * abs(best_score) or best_state is None:
                best_score = score
                result.best_epoch = epoch
                best_state = copy.deepcopy(model.state_dict())
                waited = 0
            else:
                waited += 1
                if waited >= patience:
                    result.stopped_early = True
                    break
    finally:
        if handle is not None:
            handle.remove()
    model.load_state_dict(best_state)
    return result

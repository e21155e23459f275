"""The short demo: one network, four penalties, one bundled data set.

Trains the same small MLP with no penalty, L1 (proximal), L2 and elastic net, and
reports for each the validation loss, the fraction of weights exactly zero and the
input features still in use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from .data import load_dataset
from .models import MLP
from .penalties import L1, L2, ElasticNet, Penalty
from .regularizer import Regularizer
from .train import TrainConfig, loss_for_task, train

__all__ = ["DemoRow", "run_demo"]


@dataclass
class DemoRow:
    penalty: str
    lambda_: float
    val_loss: float
    fraction_zero: float
    features_used: list[str]
    epochs: int


def _tensors(X: np.ndarray, y: np.ndarray, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(X, dtype=torch.float32), torch.tensor(
        y, dtype=torch.float32 if task != "multiclass" else torch.long
    )


def run_demo(dataset: str = "diabetes", *, seed: int = 0, max_epochs: int = 300) -> list[DemoRow]:
    """Train no penalty / L1 / L2 / elastic net on ``dataset``; one row each."""
    data = load_dataset(dataset)
    stratify = data.y if data.task != "regression" else None
    X_train, X_val, y_train, y_val = train_test_split(
        data.X, data.y, test_size=0.25, random_state=seed, stratify=stratify
    )
    scaler = StandardScaler().fit(X_train)
    X_train, X_val = scaler.transform(X_train), scaler.transform(X_val)
    if data.task == "regression":  # standardize y too, so λ has the same meaning everywhere
        mean, std = y_train.mean(), y_train.std()
        y_train, y_val = (y_train - mean) / std, (y_val - mean) / std
    loss = loss_for_task(data.task)
    out = 1 if data.task != "multiclass" else len(data.classes)
    train_t, val_t = _tensors(X_train, y_train, data.task), _tensors(X_val, y_val, data.task)

    penalties: list[tuple[str, Penalty | None]] = [
        ("none", None),
        ("l1", L1(1e-2)),
        ("l2", L2(1e-2)),
        ("elasticnet", ElasticNet(1e-2, l1_ratio=0.5)),
    ]
    config = TrainConfig(optimizer="adam", lr=1e-2, batch_size=64, max_epochs=max_epochs, patience=30)
    rows = []
    for label, penalty in penalties:
        torch.manual_seed(seed)  # the same initial network for every penalty
        model = MLP(data.n_features, (32,), out)
        reg = Regularizer(model, penalty, mode="proximal") if penalty is not None else None
        result = train(
            model, *train_t, loss=loss, regularizer=reg, validation=val_t, config=config, seed=seed
        )
        if reg is None:
            reg = Regularizer(model, L1(0.0))  # only to measure sparsity the same way
        report = reg.sparsity(feature_names=data.feature_names)
        rows.append(
            DemoRow(
                label,
                penalty.lambda_ if penalty is not None else 0.0,
                result.best_val_loss,
                report.fraction_zero,
                report.features_used_names,
                result.epochs,
            )
        )
    return rows

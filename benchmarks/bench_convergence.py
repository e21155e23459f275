"""How close a network's path comes to each λ's optimum, by training configuration.

    python benchmarks/bench_convergence.py --repeats 3 --out benchmarks/results_convergence.md

A network's path trains each λ with full-batch Adam, warm-started from the last λ, and
stops at a plateau of the validation objective. Adam at a fixed learning rate circles a
stationary point rather than settling on it, so a plateau can be that circling. This
benchmark trains the same path (an ``MLP`` with 64 hidden units, the estimators' default
penalty: group lasso on the input columns; the automatic grid of the first
configuration, 10 λ, given to all) with:

- ``PATH_CONFIG``, the default: at most 200 epochs per λ, the first plateau (10 epochs)
  stops;
- ``PATH_CONFIG`` with ``lr_halvings``: a plateau halves the learning rate and the fit
  goes on, until the plateau after the last halving;
- a lower learning rate (3e-3) with a long patience (200 epochs), no halving.

For each it gives the wall time (median of ``--repeats``, the configurations
alternated), the epochs over the path, and how far each λ's training objective (data
loss + penalty) stays above the best one any configuration reached at that λ (the
reference, a long run with many halvings, is one of them), with the validation loss.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from _tables import print_and_save
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.preprocessing import StandardScaler

from shrinkage.models import MLP
from shrinkage.path import PATH_CONFIG, regularization_path
from shrinkage.presets import get_preset
from shrinkage.train import TrainConfig

CONFIGS: dict[str, TrainConfig] = {
    "PATH_CONFIG (default)": PATH_CONFIG,
    "lr_halvings=3": PATH_CONFIG.replace(lr_halvings=3),
    "lr_halvings=6, patience=20, max_epochs=3000": PATH_CONFIG.replace(lr_halvings=6, patience=20, max_epochs=3000),
    "lr=3e-3, patience=200, max_epochs=5000": PATH_CONFIG.replace(lr=3e-3, patience=200, max_epochs=5000),
}
REFERENCE = PATH_CONFIG.replace(lr_halvings=12, patience=50, max_epochs=20000)


def data() -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    X_bc, y_bc = load_breast_cancer(return_X_y=True)
    X_d, y_d = load_diabetes(return_X_y=True)
    return {
        "breast_cancer": (StandardScaler().fit_transform(X_bc), y_bc, "binary"),
        "diabetes": (StandardScaler().fit_transform(X_d), (y_d - y_d.mean()) / y_d.std(), "regression"),
    }


def run(X: np.ndarray, y: np.ndarray, task: str, config: TrainConfig, lambdas: tuple[float, ...] | None):
    torch.manual_seed(0)
    model = MLP(X.shape[1], (64,), 1)
    options = {"lambdas": lambdas} if lambdas is not None else {"n_lambdas": 10}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = regularization_path(
            model, X, y, penalty=get_preset("group").rules(model), task=task, train_config=config, seed=0, **options
        )
    return time.perf_counter() - start, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; wall time: median of {args.repeats} "
        "alternated runs (dense start included)",
        "",
        "| data | train_config | wall time | epochs | objective above the best, median (max) | "
        "validation loss, median |",
        "|---|---|---|---|---|---|",
    ]
    for name, (X, y, task) in data().items():
        _, first = run(X, y, task, PATH_CONFIG, None)
        lambdas = tuple(first.lambdas)
        _, reference = run(X, y, task, REFERENCE, lambdas)
        times: dict[str, list[float]] = {key: [] for key in CONFIGS}
        paths = {}
        for _ in range(args.repeats):
            for key, config in CONFIGS.items():
                seconds, paths[key] = run(X, y, task, config, lambdas)
                times[key].append(seconds)
        objective = {key: np.array([p.train_loss + p.penalty for p in path.points]) for key, path in paths.items()}
        objective["reference"] = np.array([p.train_loss + p.penalty for p in reference.points])
        best = np.min(np.stack(list(objective.values())), axis=0)
        for key, path in paths.items():
            above = (objective[key] - best) / best
            val = statistics.median(p.val_loss for p in path.points)
            lines.append(
                f"| {name} | {key} | {statistics.median(times[key]):.1f} s | {sum(p.epochs for p in path.points)} | "
                f"{100 * np.median(above):.1f} % ({100 * above.max():.1f} %) | {val:.4f} |"
            )
            print(lines[-1], flush=True)
        ref_above = (objective["reference"] - best) / best
        lines.append(
            f"| {name} | reference: lr_halvings=12, patience=50 | — | {sum(p.epochs for p in reference.points)} | "
            f"{100 * np.median(ref_above):.1f} % ({100 * ref_above.max():.1f} %) | "
            f"{statistics.median(p.val_loss for p in reference.points):.4f} |"
        )
    print_and_save(lines, args.out)


if __name__ == "__main__":
    main()

"""shrinkage against LassoNet on one synthetic feature-selection task, same machine, same run.

Task: ``make_synthetic(kind="nonlinear")`` — n = 1000 training rows (and 2000 test
rows), p = 50 standardized features, 5 of them relevant, a nonlinear target with
noise (σ = 0.5). Both libraries use an MLP with one hidden layer of 32 units.

Figures:

- wall time of a full path, dense → no feature left: LassoNet's ``path()`` (its
  defaults: Adam then SGD, λ × 1.02 per step) against ours
  (``regularization_path`` with a group lasso on input features, automatic grid);
  repeats alternated, medians reported;
- test MSE: our cross-validated model (5 folds, relaxed, λ_1se) against the best test
  MSE anywhere on LassoNet's path (chosen with the test set — generous to LassoNet);
- features kept at our λ_1se, and LassoNet's at its best point.

    pip install -c requirements/ci.txt lassonet==0.0.21   # benchmark-only dependency
    python benchmarks/bench_lassonet.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from shrinkage import GroupLasso
from shrinkage.cv import cross_validate
from shrinkage.models import MLP
from shrinkage.path import regularization_path
from shrinkage.study.datasets import make_synthetic
from shrinkage.train import evaluate

HIDDEN = 32


def task(seed: int):
    data = make_synthetic(3000, 50, noise=0.5, seed=seed)
    X, y = data.X, data.y
    mean, std = X[:1000].mean(0), X[:1000].std(0)
    X = (X - mean) / std
    y = (y - y[:1000].mean()) / y[:1000].std()
    return X[:1000], y[:1000], X[1000:], y[1000:], data.true_features


def lassonet_path(X, y, X_test, y_test, seed: int):
    from lassonet import LassoNetRegressor

    model = LassoNetRegressor(hidden_dims=(HIDDEN,), random_state=seed, torch_seed=seed, verbose=0)
    start = time.perf_counter()
    history = model.path(X, y, return_state_dicts=True)
    seconds = time.perf_counter() - start
    best = (np.inf, None, None)
    for item in history:
        model.load(item.state_dict)
        mse = float(np.mean((model.predict(X_test).ravel() - y_test) ** 2))
        if mse < best[0]:
            best = (mse, item.lambda_, np.flatnonzero(item.selected.numpy()).tolist())
    return seconds, len(history), best


def our_path(X, y, seed: int):
    start = time.perf_counter()
    path = regularization_path(lambda: MLP(50, (HIDDEN,)), X, y, penalty=GroupLasso(groups="input"), seed=seed)
    return time.perf_counter() - start, path


def our_cv(X, y, X_test, y_test, seed: int):
    start = time.perf_counter()
    result = cross_validate(
        lambda: MLP(50, (HIDDEN,)),
        X,
        y,
        penalty=GroupLasso(groups="input"),
        cv=5,
        n_lambdas=20,
        lambda_min_ratio=1e-2,
        relax=True,
        n_jobs=-1,
        seed=seed,
    )
    seconds = time.perf_counter() - start
    mse = evaluate(
        result.model,
        torch.tensor(X_test, dtype=torch.float32),
        torch.tensor(y_test, dtype=torch.float32),
        "mse",
    )
    return seconds, result, mse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    X, y, X_test, y_test, truth = task(args.seed)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}")
    print(f"# task: n=1000 train / 2000 test, p=50, true features {truth}, MLP({HIDDEN}) for both")

    theirs, ours = [], []
    for _ in range(args.repeats):  # alternated
        theirs.append(lassonet_path(X, y, X_test, y_test, args.seed))
        ours.append(our_path(X, y, args.seed))
    their_time = statistics.median(t for t, _, _ in theirs)
    our_time = statistics.median(t for t, _ in ours)
    _, their_len, (their_mse, their_lambda, their_features) = theirs[0]
    path = ours[0][1]
    print("\n| figure | LassoNet | shrinkage | ratio |")
    print("|---|---|---|---|")
    print(
        f"| full path wall time (median of {args.repeats}) | {their_time:.1f} s ({their_len} λ) | "
        f"{our_time:.1f} s ({len(path)} λ) | {their_time / our_time:.1f}× faster |"
    )

    cv_seconds, result, our_mse = our_cv(X, y, X_test, y_test, args.seed)
    print(
        f"| test MSE | {their_mse:.4f} (best on its path, λ={their_lambda:.3g}) | {our_mse:.4f} "
        f"(5-fold CV, relaxed, λ_1se; CV took {cv_seconds:.1f} s) | |"
    )
    print(
        f"| features kept | {len(their_features)} at its best point: {their_features} | "
        f"{len(result.selected_features)} at λ_1se: {result.selected_features} | |"
    )
    print(f"\nour path: features per λ {[p.n_features for p in path.points]}")


if __name__ == "__main__":
    main()

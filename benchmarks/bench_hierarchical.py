"""Hierarchical (LassoNet-style) feature selection against the plain group-lasso MLP.

Task: ``make_synthetic()`` — y depends on x0..x4 (nonlinear, each with a main effect),
p = 50 standardized features, n = 600 training rows, noise σ = 0.5; test error on
2000 fresh rows of the same function, y standardized on the training rows.

Both: 5-fold CV over 20 λ (down to λ_max/100), relaxed refits, λ_1se; one hidden
layer of 16 ReLU units.

- hierarchical: ``SkipMLP`` + ``HierarchicalLasso(M=10)``, SGD (momentum 0.9,
  lr 0.05, full batch): the prox is exact with SGD;
- group: ``MLP`` + ``GroupLasso(groups="input")``, the path defaults (full-batch Adam).

Per seed: the features each keeps at λ_1se, whether the truth appears anywhere on
the hierarchical path, test MSE; then the medians.

    python benchmarks/bench_hierarchical.py [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from shrinkage import GroupLasso, HierarchicalLasso, Rule
from shrinkage.cv import cross_validate
from shrinkage.models import MLP, SkipMLP
from shrinkage.path import PATH_CONFIG
from shrinkage.study.datasets import make_synthetic
from shrinkage.train import evaluate

TRUTH = [0, 1, 2, 3, 4]
SGD = PATH_CONFIG.replace(optimizer="sgd", lr=0.05, optimizer_kwargs={"momentum": 0.9})


def task(seed: int):
    data = make_synthetic(600, 50, noise=0.5, seed=seed)
    fresh = make_synthetic(2000, 50, noise=0.5, seed=10_000 + seed)
    mean, std, y_mean, y_std = data.X.mean(0), data.X.std(0), data.y.mean(), data.y.std()
    X, y = (data.X - mean) / std, (data.y - y_mean) / y_std
    X_test = torch.tensor((fresh.X - mean) / std, dtype=torch.float32)
    y_test = torch.tensor((fresh.y - y_mean) / y_std, dtype=torch.float32)
    return X, y, X_test, y_test


def fit(kind: str, X, y, seed: int):
    common = dict(cv=5, n_lambdas=20, lambda_min_ratio=1e-2, relax=True, n_jobs=-1, seed=seed)
    start = time.perf_counter()
    if kind == "hierarchical":
        rule = Rule(HierarchicalLasso(M=10), select=["skip.weight", "body.0.weight"])
        result = cross_validate(lambda: SkipMLP(50, (16,)), X, y, penalty=rule, train_config=SGD, **common)
    else:
        result = cross_validate(lambda: MLP(50, (16,)), X, y, penalty=GroupLasso(groups="input"), **common)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}")
    print(
        "\n| seed | hierarchical: features at λ_1se | truth on its path | test MSE | group: features | "
        "test MSE | seconds (hier / group) |"
    )
    print("|---|---|---|---|---|---|---|")
    mse: dict[str, list[float]] = {"hierarchical": [], "group": []}
    exact = {"hierarchical": 0, "group": 0}
    for seed in args.seeds:
        X, y, X_test, y_test = task(seed)
        row = {}
        for kind in ("hierarchical", "group"):
            result, seconds = fit(kind, X, y, seed)
            error = evaluate(result.model, X_test, y_test, "mse")
            mse[kind].append(error)
            exact[kind] += result.selected_features == TRUTH
            on_path = any(p.features == TRUTH for p in result.path.points)
            row[kind] = (result.selected_features, on_path, error, seconds)
        (hf, h_on, hm, hs), (gf, _, gm, gs) = row["hierarchical"], row["group"]
        print(f"| {seed} | {hf} | {'yes' if h_on else 'no'} | {hm:.4f} | {gf} | {gm:.4f} | {hs:.0f} / {gs:.0f} |")
    n = len(args.seeds)
    print(f"\nexactly the true features at λ_1se: hierarchical {exact['hierarchical']}/{n}, group {exact['group']}/{n}")
    print(
        f"median test MSE: hierarchical {statistics.median(mse['hierarchical']):.4f}, "
        f"group {statistics.median(mse['group']):.4f}"
    )
    wins = sum(h <= g for h, g in zip(mse["hierarchical"], mse["group"]))
    print(f"hierarchical test MSE ≤ group's on {wins}/{n} seeds")


if __name__ == "__main__":
    main()

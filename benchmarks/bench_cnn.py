"""Pruned CNNs: does filter group lasso remove half the filters of a CNN at no accuracy cost?

Task: scikit-learn's digits (1797 images of 8×8 grey pixels, 10 classes; 1297 images to
train, 500 to test, stratified), pixels scaled to [0, 1]. Model (``--width`` w, default 32):

    Conv2d(1, w, 3, padding=1) → ReLU → Conv2d(w, 2w, 3, padding=1) → ReLU → MaxPool2d(2)
    → Conv2d(2w, 2w, 3, padding=1) → ReLU → MaxPool2d(2) → Flatten → Linear(2w·2·2, 10)

1. A dense fit (no penalty), Adam, for reference.
2. Filter group lasso (``GroupLasso(λ, groups="filter")``: one group per filter of each
   conv, so a zero group is a dead filter) in proximal mode with the same Adam and
   epochs, from the same initial weights, for each λ of ``--lambdas`` in turn, until
   the pruned model has at most ``1 - --removed`` (default 50 %) of the conv filters
   left: that smallest such λ is the one reported.
3. ``prune()`` that network (input shape ``(1, 8, 8)``); check that its outputs equal
   the unpruned ones on the test images, and time both on the CPU: median of
   ``--repeats`` alternated forward passes, at batch sizes 1, 256 and 4096, one thread
   and all threads.

Figures: filters per conv, parameters, FLOPs per image and median latency, before → after;
test accuracy of the dense, the penalized and the pruned CNN.

    python benchmarks/bench_cnn.py [--repeats 100] [--removed 0.5] [--width 32] [--lambdas 1e-3 2e-3 ...]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from _tables import print_size_and_latency
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from shrinkage import GroupLasso, Regularizer, Rule
from shrinkage.prune import prune
from shrinkage.train import TrainConfig, train

CONFIG = TrainConfig(optimizer="adam", lr=3e-3, batch_size=64, max_epochs=40, patience=40, restore_best=False)
SHAPE = (1, 8, 8)


def data(seed: int):
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=500, random_state=seed, stratify=y)
    as_x = lambda a: torch.tensor(a / 16.0, dtype=torch.float32).view(-1, *SHAPE)  # noqa: E731
    return as_x(X_train), torch.tensor(y_train), as_x(X_test), torch.tensor(y_test)


def cnn(width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 8×8 → 4×4
        nn.Conv2d(2 * width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # → 2×2
        nn.Flatten(),
        nn.Linear(2 * width * 4, 10),
    )


def conv_names(model: nn.Sequential) -> list[str]:
    return [f"{i}.weight" for i, m in enumerate(model) if isinstance(m, nn.Conv2d)]


def filters(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model if isinstance(m, nn.Conv2d)]


def zero_filters(model: nn.Module) -> list[int]:
    return [int((m.weight.flatten(1).norm(dim=1) == 0).sum()) for m in model if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def accuracy(model, X, y) -> float:
    return float((model(X).argmax(1) == y).float().mean())


def fit(initial: nn.Sequential, X, y, lambda_: float, seed: int) -> nn.Sequential:
    model = copy.deepcopy(initial)
    reg = None
    if lambda_ > 0:
        rule = Rule(GroupLasso(lambda_, groups="filter"), select=conv_names(model))
        reg = Regularizer(model, rule, mode="proximal")
    train(model, X, y, loss="cross_entropy", regularizer=reg, config=CONFIG, seed=seed)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--removed", type=float, default=0.5, help="fraction of conv filters prune() must remove")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 1e-3])
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"# torch {torch.__version__}, {threads} threads available, {time.strftime('%Y-%m-%d')}")
    X, y, X_test, y_test = data(args.seed)
    torch.manual_seed(args.seed)
    initial = cnn(args.width)

    started = time.perf_counter()
    dense = fit(initial, X, y, 0.0, args.seed)
    dense_acc = accuracy(dense, X_test, y_test)
    print(f"dense CNN (no penalty): test accuracy {dense_acc:.3f} ({time.perf_counter() - started:.0f} s)")
    print("filter group lasso, proximal, each λ from the same initial weights:")
    chosen = None
    for lambda_ in args.lambdas:
        started = time.perf_counter()
        model = fit(initial, X, y, lambda_, args.seed)
        pruned, report = prune(model, input_shape=SHAPE, measure=False)
        left = sum(filters(pruned)) / sum(filters(model))
        print(
            f"  λ={lambda_:.4g}: zero filters {zero_filters(model)} of {filters(model)}, pruned widths "
            f"{filters(pruned)} ({1 - left:.1%} removed), test acc {accuracy(model, X_test, y_test):.3f} "
            f"({time.perf_counter() - started:.0f} s)"
        )
        if left <= 1 - args.removed:
            chosen = (lambda_, model, pruned, report)
            break
    if chosen is None:
        raise SystemExit(f"no λ of {args.lambdas} removed {args.removed:.0%} of the filters")
    lambda_, model, pruned, report = chosen
    with torch.no_grad():
        gap = float((pruned(X_test[:, report.kept_features]) - model(X_test)).abs().max())
    print(f"\n{report.summary()}\nmax |pruned − unpruned| output on the test images: {gap:.2e}")

    print(f"\n| figure | unpruned (λ={lambda_:.3g}) | pruned | ratio |")
    print("|---|---|---|---|")
    before, after = filters(model), filters(pruned)
    print(f"| conv filters | {before} = {sum(before)} | {after} = {sum(after)} | {sum(after) / sum(before):.3f} |")
    print_size_and_latency(
        model, pruned, report, lambda batch: torch.rand(batch, *SHAPE), repeats=args.repeats, threads=threads
    )
    pruned_acc = accuracy(pruned, X_test[:, report.kept_features], y_test)
    print(f"| test accuracy (500 images) | {accuracy(model, X_test, y_test):.3f} | {pruned_acc:.3f} | |")
    print(
        f"\ndense CNN (no penalty), same initial weights and epochs: test accuracy {dense_acc:.3f}; "
        f"pruned − dense: {100 * (pruned_acc - dense_acc):+.1f} points"
    )


if __name__ == "__main__":
    main()

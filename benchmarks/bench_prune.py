"""Pruned export: does a network whose units a group lasso killed get smaller and faster?

Task: scikit-learn's digits (1797 images of 8×8 = 64 pixels, 10 classes; 1297 rows
to train, 500 to test), standardized. Model: ``MLP(64, (512, 512), 10)``, ReLU (``--hidden`` sets the widths).

1. A dense fit (no penalty), for reference.
2. Unit-group lasso (``GroupLasso(groups="unit")``: one group per row of each hidden
   layer, so a zero group is a dead unit) in proximal mode with Adam, warm-started
   along an increasing λ grid until at least ``--dead`` (default 80 %) of the hidden
   units are exactly zero; the first λ that gets there is kept.
3. ``prune()`` that network; check its outputs equal the unpruned ones on the test
   rows, and time both on the CPU: median of ``--repeats`` alternated forward passes,
   at several batch sizes, one thread and all threads.

Figures: parameters, FLOPs per sample and median latency, before → after, with the
ratios side by side (the target is a latency ratio within 1.5× of the FLOP ratio);
test accuracy of the dense, the penalized and the pruned network.

    python benchmarks/bench_prune.py [--repeats 200] [--dead 0.8] [--hidden 512 512]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _tables import print_size_and_latency
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from shrinkage import GroupLasso, Regularizer, Rule
from shrinkage.models import MLP
from shrinkage.prune import prune
from shrinkage.train import TrainConfig, train

CONFIG = TrainConfig(optimizer="adam", lr=1e-3, batch_size=64, max_epochs=60, patience=60, restore_best=False)


def data(seed: int):
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=500, random_state=seed, stratify=y)
    mean, std = X_train.mean(0), X_train.std(0) + 1e-8
    as_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return as_x(X_train), torch.tensor(y_train), as_x(X_test), torch.tensor(y_test)


@torch.no_grad()
def accuracy(model, X, y) -> float:
    return float((model(X).argmax(1) == y).float().mean())


def dead_fraction(model: MLP) -> float:
    hidden = [m.weight for m in model if isinstance(m, torch.nn.Linear)][:-1]
    dead = sum(int((w.abs().sum(1) == 0).sum()) for w in hidden)
    return dead / sum(w.shape[0] for w in hidden)


def sparse_fit(X, y, hidden_sizes, seed: int, target: float):
    torch.manual_seed(seed)
    model = MLP(64, hidden_sizes, 10)
    hidden = [f"{i}.weight" for i, m in enumerate(model) if isinstance(m, torch.nn.Linear)][:-1]
    for lambda_ in np.geomspace(1e-5, 1e-1, 81):
        reg = Regularizer(model, Rule(GroupLasso(float(lambda_), groups="unit"), select=hidden), mode="proximal")
        train(model, X, y, loss="cross_entropy", regularizer=reg, config=CONFIG, seed=seed)
        print(f"  λ={lambda_:.4g}: {dead_fraction(model):.1%} hidden units dead, train acc {accuracy(model, X, y):.3f}")
        if dead_fraction(model) >= target:
            return model, float(lambda_)
    raise SystemExit(f"no λ on the grid killed {target:.0%} of the hidden units")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--dead", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512], help="hidden widths")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"# torch {torch.__version__}, {threads} threads available, {time.strftime('%Y-%m-%d')}")
    X, y, X_test, y_test = data(args.seed)

    torch.manual_seed(args.seed)
    dense = MLP(64, args.hidden, 10)
    train(dense, X, y, loss="cross_entropy", config=CONFIG, seed=args.seed)
    print("unit-group lasso, warm-started along λ:")
    model, lambda_ = sparse_fit(X, y, args.hidden, args.seed, args.dead)
    pruned, report = prune(model.eval(), measure=False)
    with torch.no_grad():
        gap = float((pruned(X_test[:, report.kept_features]) - model(X_test)).abs().max())
    print(f"\n{report.summary()}\nmax |pruned − unpruned| output on the test rows: {gap:.2e}")

    print(f"\n| figure | unpruned (λ={lambda_:.3g}) | pruned | ratio |")
    print("|---|---|---|---|")
    print(f"| hidden units dead | {dead_fraction(model):.1%} | 0 % | |")
    print(f"| input features | {report.n_features} | {len(report.kept_features)} | |")
    print_size_and_latency(
        model, pruned, report, lambda batch: torch.randn(batch, 64), repeats=args.repeats, threads=threads
    )
    print(
        f"| test accuracy | {accuracy(model, X_test, y_test):.3f} | "
        f"{accuracy(pruned, X_test[:, report.kept_features], y_test):.3f} | |"
    )
    print(f"\ndense network (no penalty), for reference: test accuracy {accuracy(dense, X_test, y_test):.3f}")


if __name__ == "__main__":
    main()

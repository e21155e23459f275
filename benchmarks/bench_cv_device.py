"""The CV estimator on a large table: the CPU against a GPU of the same machine.

    python benchmarks/bench_cv_device.py --rows 50000 --out results.md

Synthetic regression with known truth (20 features, 5 of them used, one interaction),
standardized; ``ShrinkageMLPRegressorCV`` with its defaults (group lasso, 5 folds, 20 λ),
once per device, the folds and the full-data path trained as one stacked network
(:mod:`shrinkage.batched`). Prints a Markdown table: wall time, λ chosen, features kept,
the engine that ran, held-out R².
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import torch

from shrinkage.estimators import ShrinkageMLPRegressorCV


def data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, 20))
    y = 2 * X[:, 0] - X[:, 1] + np.sin(2 * X[:, 2]) + X[:, 3] * X[:, 4] + 0.5 * rng.standard_normal(rows)
    return X, (y - y.mean()) / y.std()


def run(device: str, X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, **params) -> dict:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ShrinkageMLPRegressorCV(device=device, random_state=0, **params).fit(X, y)
    seconds = time.perf_counter() - start
    return {
        "device": device,
        "seconds": seconds,
        "lambda": model.lambda_,
        "features": int(model.selected_features_.sum()),
        "engine": model.cv_result_.engine,
        "r2": model.score(X_test, y_test),
        "epochs": sum(p.epochs for p in model.path_.points),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--n-lambdas", type=int, default=20)
    parser.add_argument("--out", default=None)
    parser.add_argument("--verbose", type=int, default=0, help="the estimator's progress bars (stderr)")
    args = parser.parse_args()
    X, y = data(args.rows + 10_000)
    X_train, y_train, X_test, y_test = X[: args.rows], y[: args.rows], X[args.rows :], y[args.rows :]
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    lines = [
        f"ShrinkageMLPRegressorCV defaults (n_lambdas={args.n_lambdas}), {args.rows:,} rows × 20 features; "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads ({platform.machine()}), "
        f"GPU: {gpu}",
        "",
        "| device | wall time | engine | λ chosen | features kept | epochs (full path) | held-out R² |",
        "|---|---|---|---|---|---|---|",
    ]
    for device in args.devices.split(","):  # each row printed and written as it is measured
        r = run(device, X_train, y_train, X_test, y_test, n_lambdas=args.n_lambdas, verbose=args.verbose)
        lines.append(
            f"| {r['device']} | {r['seconds']:.1f} s | {r['engine']} | {r['lambda']:.4g} | {r['features']} | "
            f"{r['epochs']} | {r['r2']:.4f} |"
        )
        text = "\n".join(lines)
        print(lines[-1] if len(lines) > 5 else text, flush=True)
        if args.out:
            with open(args.out, "w") as handle:
                handle.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

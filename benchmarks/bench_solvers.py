"""FISTA against the former default (Adam with early stopping) in the estimators.

1. The linear configuration (``hidden_layer_sizes=()``) at its default settings, now
   FISTA, against ``optimizer="adam"`` (the former default: lr 1e-2, early stopping on
   10 % of the rows, patience 30, at most 500 epochs, tol 1e-4), each compared with
   scikit-learn's solution at a tight tolerance: ``Lasso`` and ``ElasticNet`` on diabetes
   (X standardized; the target raw, 152 ± 77, and standardized), ``LogisticRegression``
   (l1, saga) on breast_cancer (standardized). Figures: relative error
   ``‖ours − sklearn‖ / ‖sklearn‖`` of the coefficients, the intercept's error over
   ``max(|intercept|, 1)`` (a centred target's intercept is 0), epochs or iterations, time.
2. ``ShrinkageMLPRegressorCV((), penalty="l1", selection="min")`` on diabetes with the
   grid and folds ``LassoCV`` gets: the λ chosen (as scikit-learn's alpha, λ/2), the
   support, the time.
3. Networks, ``hidden_layer_sizes=(64,)``: Adam (their default) against
   ``optimizer="fista"``, 5-fold ``cross_val_score`` (R² on diabetes, accuracy on
   breast_cancer, inputs standardized inside each fold) and the mean fit time.

One torch thread (the machine's other cores stay out of the figures).

    python benchmarks/bench_solvers.py [--skip-networks]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNet, Lasso, LassoCV, LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shrinkage.convert import from_sklearn_enet, from_sklearn_lasso, from_sklearn_logistic
from shrinkage.estimators import (
    ShrinkageMLPClassifier,
    ShrinkageMLPRegressor,
    ShrinkageMLPRegressorCV,
)

TIGHT = dict(tol=1e-14, max_iter=1_000_000)


def relative(ours, theirs, floor: float = 0.0) -> float:
    ours, theirs = np.ravel(ours), np.ravel(theirs)
    return float(np.linalg.norm(ours - theirs) / max(np.linalg.norm(theirs), floor))


def standardized(X):
    return (X - X.mean(0)) / X.std(0)


def timed(estimator, X, y):
    """The fitted estimator, the seconds its fit took and whether it warned of convergence."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        estimator.fit(X, y)
    warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return estimator, time.perf_counter() - start, warned


def linear_cases():
    X, y = load_diabetes(return_X_y=True)
    X = standardized(X)
    for target, t in (("raw", y), ("standardized", (y - y.mean()) / y.std())):
        for alpha in (0.5, 0.05) if target == "raw" else (0.005, 0.0005):
            sk = Lasso(alpha=alpha, **TIGHT).fit(X, t)
            yield (
                f"Lasso(alpha={alpha}), {target} target",
                ShrinkageMLPRegressor,
                X,
                t,
                sk,
                {
                    "penalty": "l1",
                    "lambda_": from_sklearn_lasso(alpha),
                },
            )
        alpha, ratio = (0.2, 0.6) if target == "raw" else (0.01, 0.6)
        sk = ElasticNet(alpha=alpha, l1_ratio=ratio, **TIGHT).fit(X, t)
        lam, rho = from_sklearn_enet(alpha, ratio)
        yield (
            f"ElasticNet({alpha}, {ratio}), {target} target",
            ShrinkageMLPRegressor,
            X,
            t,
            sk,
            {
                "penalty": "elasticnet",
                "lambda_": lam,
                "l1_ratio": rho,
            },
        )
    Xb, yb = load_breast_cancer(return_X_y=True)
    Xb = standardized(Xb)
    for C in (0.1, 1.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sk = LogisticRegression(l1_ratio=1.0, C=C, solver="saga", tol=1e-10, max_iter=100_000).fit(Xb, yb)
        yield (
            f"LogisticRegression(l1, C={C})",
            ShrinkageMLPClassifier,
            Xb,
            yb,
            sk,
            {
                "penalty": "l1",
                "lambda_": from_sklearn_logistic(C, len(yb)),
            },
        )


def bench_linear() -> None:
    print("## The linear configuration at default settings: FISTA (now) and Adam (before)\n")
    print("| problem | solver | coef error | intercept error | epochs/iterations | time | ConvergenceWarning |")
    print("|---|---|---|---|---|---|---|")
    for name, cls, X, y, sk, params in linear_cases():
        for solver in ("auto", "adam"):
            model, seconds, warned = timed(cls((), optimizer=solver, random_state=0, **params), X, y)
            layer = model.model_[0]
            coef, bias = layer.weight.detach().numpy(), layer.bias.detach().numpy()
            label = "FISTA (default)" if solver == "auto" else "Adam (former default)"
            print(
                f"| {name} | {label} | {relative(coef, sk.coef_):.1e} | {relative(bias, sk.intercept_, 1.0):.1e} | "
                f"{model.n_iter_} | {seconds:.2f} s | {'yes' if warned else 'no'} |"
            )


def bench_cv() -> None:
    print("\n## ShrinkageMLPRegressorCV((), penalty='l1', selection='min') against LassoCV (diabetes)\n")
    X, y = load_diabetes(return_X_y=True)
    X = standardized(X[:440])
    print("| target | solver | alpha chosen (LassoCV's) | same support | coef error | time (LassoCV's) |")
    print("|---|---|---|---|---|---|")
    for target, t in (("raw", y[:440]), ("standardized", (y[:440] - y[:440].mean()) / y[:440].std())):
        seed = int(np.random.RandomState(0).randint(np.iinfo(np.int32).max))
        folds = list(KFold(5, shuffle=True, random_state=seed).split(X))
        alphas = np.geomspace(1e-3, 1.0, 20) * np.abs(X.T @ (t - t.mean())).max() / len(t)
        start = time.perf_counter()
        sk = LassoCV(alphas=alphas, cv=folds, **TIGHT).fit(X, t)
        sk_seconds = time.perf_counter() - start
        for solver in ("auto", "adam"):
            est = ShrinkageMLPRegressorCV(
                (), penalty="l1", lambdas=2 * alphas, cv=5, selection="min", optimizer=solver, random_state=0
            )
            model, seconds, _ = timed(est, X, t)
            coef = model.model_[0].weight.detach().numpy().ravel()
            label = "FISTA (default)" if solver == "auto" else "Adam (former default)"
            print(
                f"| {target} | {label} | {model.lambda_ / 2:.4g} ({sk.alpha_:.4g}) | "
                f"{np.array_equal(coef != 0, sk.coef_ != 0)} | {relative(coef, sk.coef_):.1e} | "
                f"{seconds:.2f} s ({sk_seconds:.2f} s) |"
            )


def bench_networks() -> None:
    print("\n## Networks (64,): Adam (default) and FISTA, 5-fold cross_val_score\n")
    print("| data | λ | solver | CV score (mean ± sd) | fit time (mean) |")
    print("|---|---|---|---|---|")
    X, y = load_diabetes(return_X_y=True)
    Xb, yb = load_breast_cancer(return_X_y=True)
    sets = [
        ("diabetes (R²)", ShrinkageMLPRegressor, X, (y - y.mean()) / y.std(), KFold(5, shuffle=True, random_state=0)),
        ("breast_cancer (accuracy)", ShrinkageMLPClassifier, Xb, yb, StratifiedKFold(5, shuffle=True, random_state=0)),
    ]
    for name, cls, X_, y_, folds in sets:
        for lam in (1e-3, 1e-2):
            for solver in ("adam", "fista"):
                pipe = make_pipeline(StandardScaler(), cls((64,), lambda_=lam, optimizer=solver, random_state=0))
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    scores = cross_val_score(pipe, X_, y_, cv=folds)
                seconds = (time.perf_counter() - start) / 5
                print(f"| {name} | {lam:g} | {solver} | {scores.mean():.3f} ± {scores.std():.3f} | {seconds:.2f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-networks", action="store_true", help="only the linear configuration")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench_linear()
    bench_cv()
    if not args.skip_networks:
        bench_networks()


if __name__ == "__main__":
    main()

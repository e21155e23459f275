"""Cross-validation on small tables: the batched engine against the sequential one.

    python benchmarks/bench_cv.py --repeats 3 --out benchmarks/results_cv.md

Each case runs with ``engine="sequential"`` (one path per fold, the folds through joblib
on all cores — the engine before the batched one) and ``engine="batched"`` (the full
path and the folds as one stacked network), alternated, ``--repeats`` times; the table
gives the median wall times and their ratio, measured in the same run. Cases:

- ``ShrinkageMLPClassifierCV()`` with its defaults on breast_cancer (standardized),
  beside its former training defaults (patience 30, 500 epochs per λ; now 10 and 200)
  and scikit-learn's ``LogisticRegressionCV(penalty="l1", solver="saga")`` (in one
  process, its default, as the estimator trains; and on every core) and
  ``LogisticRegressionCV()`` in the same run;
- the README's example: 5-fold CV of an L1 path for an MLP on the synthetic task
  (:func:`shrinkage.study.datasets.synthetic`'s default), ``cross_validate`` defaults;
- ``ShrinkageMLPRegressorCV()`` defaults on diabetes (standardized target), and with
  its former training defaults;
- the default ``shrinkage study`` on diabetes (its runs, without writing the report), the
  study's cross-validations pinned to one engine.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from _tables import print_and_save
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegressionCV
from sklearn.preprocessing import StandardScaler

from shrinkage.cv import cross_validate
from shrinkage.estimators import ShrinkageMLPClassifierCV, ShrinkageMLPRegressorCV
from shrinkage.models import MLP
from shrinkage.penalties import L1


def _timed(run: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run()
    return time.perf_counter() - start, result


def cases() -> dict[str, dict[str, Callable[[], object]]]:
    X_bc, y_bc = load_breast_cancer(return_X_y=True)
    X_bc = StandardScaler().fit_transform(X_bc)
    X_d, y_d = load_diabetes(return_X_y=True)
    X_d, y_d = StandardScaler().fit_transform(X_d), (y_d - y_d.mean()) / y_d.std()
    rng = np.random.default_rng(0)
    X_s = rng.standard_normal((500, 10))
    y_s = 2 * X_s[:, 0] - X_s[:, 1] + 0.5 * rng.standard_normal(500)

    # the CV estimators' training defaults before 2026-11-26: patience 30, 500 epochs per λ
    former = dict(n_iter_no_change=30, max_iter=500)

    def classifier(engine: str, **settings: object) -> Callable[[], object]:
        return lambda: ShrinkageMLPClassifierCV(engine=engine, random_state=0, **settings).fit(X_bc, y_bc)

    def regressor(engine: str, **settings: object) -> Callable[[], object]:
        return lambda: ShrinkageMLPRegressorCV(engine=engine, random_state=0, **settings).fit(X_d, y_d)

    def readme(engine: str) -> Callable[[], object]:
        return lambda: cross_validate(lambda: MLP(10, (32,)), X_s, y_s, penalty=L1(), cv=5, n_jobs=-1, engine=engine)

    def study(engine: str) -> Callable[[], object]:
        def run() -> object:
            import shrinkage.study.runner as runner
            from shrinkage.study import StudyConfig
            from shrinkage.study.store import Store

            originals = runner.cross_validate, runner.cross_validate_unpenalized
            runner.cross_validate = functools.partial(originals[0], engine=engine)
            runner.cross_validate_unpenalized = functools.partial(originals[1], engine=engine)
            try:
                with tempfile.TemporaryDirectory() as folder:
                    return runner.run_study(StudyConfig(), Store(f"{folder}/study.sqlite"))
            finally:
                runner.cross_validate, runner.cross_validate_unpenalized = originals

        return run

    return {
        "default study, diabetes (runs only)": {"sequential": study("sequential"), "batched": study("batched")},
        "ShrinkageMLPClassifierCV(), breast_cancer": {
            "sequential": classifier("sequential"),
            "batched": classifier("batched"),
            "batched, former defaults (patience 30, 500 epochs)": classifier("batched", **former),
            "LogisticRegressionCV(l1, saga), one process (its default n_jobs)": lambda: LogisticRegressionCV(
                penalty="l1", solver="saga", max_iter=5000
            ).fit(X_bc, y_bc),
            "LogisticRegressionCV(l1, saga, n_jobs=-1)": lambda: LogisticRegressionCV(
                penalty="l1", solver="saga", max_iter=5000, n_jobs=-1
            ).fit(X_bc, y_bc),
            "LogisticRegressionCV()": lambda: LogisticRegressionCV(max_iter=5000, n_jobs=-1).fit(X_bc, y_bc),
        },
        "cross_validate(MLP, L1), synthetic 500×10": {"sequential": readme("sequential"), "batched": readme("batched")},
        "ShrinkageMLPRegressorCV(), diabetes": {
            "sequential": regressor("sequential"),
            "batched": regressor("batched"),
            "batched, former defaults (patience 30, 500 epochs)": regressor("batched", **former),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} alternated runs",
        "",
        "| case | sequential | batched | sequential / batched | others (same run) |",
        "|---|---|---|---|---|",
    ]
    for name, runs in cases().items():
        if args.only and args.only not in name:
            continue
        times: dict[str, list[float]] = {key: [] for key in runs}
        for _ in range(args.repeats):
            for key, run in runs.items():
                times[key].append(_timed(run)[0])
        median = {key: statistics.median(values) for key, values in times.items()}
        engines = ("sequential", "batched")
        others = ", ".join(f"{key} {value:.1f} s" for key, value in median.items() if key not in engines)
        lines.append(
            f"| {name} | {median['sequential']:.1f} s | {median['batched']:.1f} s | "
            f"{median['sequential'] / median['batched']:.2f} | {others or '—'} |"
        )
        print(lines[-1], flush=True)
    print_and_save(lines, args.out)


if __name__ == "__main__":
    main()

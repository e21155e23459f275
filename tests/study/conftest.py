"""Fixtures of the study application's tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def truth_study(tmp_path_factory):
    """One study on a CSV with known truth, shared by the study and report tests.

    y depends on x0..x4 only; the 45 other columns are noise, among them one named
    ``<script>alert(1)</script>`` and a categorical one; the file name has HTML in it.
    """
    import pandas as pd

    from shrinkage.study import StudyConfig, run_study
    from shrinkage.study.datasets import make_synthetic
    from shrinkage.study.report import build_report
    from shrinkage.study.store import Store

    folder = tmp_path_factory.mktemp("study")
    data = make_synthetic(600, 49, noise=0.5, seed=0)
    frame = pd.DataFrame(data.X, columns=data.feature_names)
    frame = frame.rename(columns={"x48": "<script>alert(1)</script>"})
    frame["colour"] = np.random.default_rng(1).choice(["red", "green", "blue"], len(frame))
    frame["y"] = data.y
    path = folder / "data <b>&.csv"
    frame.to_csv(path, index=False)
    config = StudyConfig(data=str(path), target="y", penalties=("none", "l1", "l2", "group"), n_jobs=2)
    store_path = folder / "results.sqlite"
    with Store(store_path) as store:
        study_id = run_study(config, store, progress=False)
        report = build_report(store, study_id, folder / "report.html")
    return {
        "config": config,
        "store": store_path,
        "study": study_id,
        "report": report,
        "truth": data.feature_names[:5],
        "columns": list(frame.columns[:-1]),
    }

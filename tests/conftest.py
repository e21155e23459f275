"""Shared fixtures: every test is seeded; torch stays on one thread (small tensors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import settings

torch.set_num_threads(1)

# Property tests: a fixed number of examples, derandomized so CI runs are repeatable.
settings.register_profile("ci", max_examples=200, derandomize=True, deadline=None)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def seed() -> int:
    """Seed torch and NumPy's global generators before every test."""
    torch.manual_seed(0)
    np.random.seed(0)
    return 0


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def truth_study(tmp_path_factory):
    """One study on a CSV with known truth, shared by the study and report tests.

    y depends on x0..x4 only; the 45 other columns are noise, among them one named
    ``<script>alert(1)</script>`` and a categorical one; the file name has HTML in it.
    """
    import pandas as pd

    from shrinkage.data import make_synthetic
    from shrinkage.report import build_report
    from shrinkage.store import Store
    from shrinkage.study import StudyConfig, run_study

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

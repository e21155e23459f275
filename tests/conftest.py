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


#: Fixtures that compute something costly once per module or session (a study, a Dask
#: cluster, processes), and the pytest-xdist group of the tests that use them: under
#: ``--dist loadgroup`` (``make test``) those tests run on one worker, so that it is
#: computed once rather than once per worker.
SHARED = {
    "truth_study": "truth_study",  # tests/study/conftest.py
    "messy_study": "messy_study",  # tests/study/test_predictor.py
    "seeds": "fuzz_study",  # tests/study/test_fuzz.py
    "reference": "resume_reference",  # tests/test_resume.py
    "cluster": "dask_cluster",  # tests/test_dask.py
}


def _group(item) -> str | None:
    return next((SHARED[name] for name in getattr(item, "fixturenames", ()) if name in SHARED), None)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    for item in items:
        group = _group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_finish(session):
    """pytest 9.2 moved the node id that pytest-xdist 3.8 suffixes with the group: the group
    was then ignored and every worker computed the shared study (minutes each). Say so."""
    if not getattr(session.config.option, "loadgroup", False):  # set on xdist workers under loadgroup
        return
    for item in session.items:
        group = _group(item)
        if group is not None and not item.nodeid.endswith(f"@{group}"):
            raise pytest.UsageError(f"pytest-xdist's loadgroup did not group {item.nodeid} (pytest/xdist mismatch)")


@pytest.fixture(autouse=True)
def seed() -> int:
    """Seed torch and NumPy's global generators before every test."""
    torch.manual_seed(0)
    np.random.seed(0)
    return 0


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)

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

"""The CUDA kernels' code on the CPU, through Triton's interpreter (``TRITON_INTERPRET=1``),
against the torch reference: the same checks as ``tests/test_cuda.py`` on a few cases,
for machines without a GPU. Skipped where Triton is not installed (CI: the GPU tests
run through the ``device`` tool). The interpreter is chosen when Triton first compiles,
so the cases run in a child process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton")

CASES = [
    ("l1", "adam", "torch.float32", False, False),
    ("elastic_net", "sgd_tensor", "torch.bfloat16", False, False),
    ("l2", "per_element", "torch.float32", True, False),
    ("group_input", "adam_device", "torch.float32", False, False),
    ("group_unit", "adamax", "torch.bfloat16", False, False),
    ("sparse_group", "sgd", "torch.float32", True, False),
    ("group_input", "adam", "torch.float32", False, True),
    ("sparse_group", "adam_device", "torch.float32", True, True),
]


@pytest.mark.parametrize(("penalty", "kind", "dtype", "stacked", "tall"), CASES)
def test_interpreted_kernels_match_the_torch_reference(penalty, kind, dtype, stacked, tall):
    here = Path(__file__).parent
    code = (
        "import torch, kernel_cases; "
        f"print(kernel_cases.error({penalty!r}, {kind!r}, {dtype}, 'cpu', stacked={stacked}, tall={tall}))"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{here}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert float(out.stdout.strip().splitlines()[-1]) <= 1.0


@pytest.mark.parametrize(
    ("penalty", "optimizer", "mode"),
    [
        ("l1", "adam", "proximal"),
        ("group_input", "adam_fused", "proximal"),
        ("elastic_net", "sgd", "proximal"),
        ("l1", "adam", "gradient"),
        ("elastic_net", "sgd", "gradient"),
    ],
)
def test_interpreted_kernels_train_as_the_torch_code(penalty, optimizer, mode):
    """The whole path: the regularizer's hook, the optimizer's steps, the launch."""
    here = Path(__file__).parent
    code = f"import kernel_cases; print(kernel_cases.training_error({penalty!r}, {optimizer!r}, 'cpu', mode={mode!r}))"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{here}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert float(out.stdout.strip().splitlines()[-1]) <= 1.0


@pytest.mark.parametrize("tall", [False, True])
def test_interpreted_zero_step_changes_nothing(tall):
    here = Path(__file__).parent
    code = f"import kernel_cases; print(kernel_cases.zero_step_changes_nothing('cpu', tall={tall}))"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{here}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "True"

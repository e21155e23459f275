"""The CPU kernels (:mod:`shrinkage._numba`) against the torch reference: every penalty
with per-element steps (Adam's, Adamax's, a step tensor), float32 and float64, single
and stacked models; bitwise equality for the elementwise prox, which repeats the
reference's operations; whole training loops. Skipped where Numba is not installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import kernel_cases
from shrinkage import _numba
from shrinkage import functional as F

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="needs Numba")

PER_ELEMENT = ("adam", "adam_device", "adamax", "per_element")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", PER_ELEMENT)
@pytest.mark.parametrize("penalty", list(kernel_cases.PENALTIES))
def test_kernels_match_the_torch_reference(penalty, kind, dtype):
    assert kernel_cases.error(penalty, kind, dtype, "cpu") <= 1.0


@pytest.mark.parametrize("penalty", list(kernel_cases.PENALTIES))
def test_stacked_models_match_the_torch_reference(penalty):
    """The batched CV engine's stacked fold models: groups never cross models."""
    for kind in ("per_element", "adam"):
        assert kernel_cases.error(penalty, kind, torch.float32, "cpu", stacked=True) <= 1.0


@pytest.mark.parametrize(("l1", "l2"), [(0.05, 0.0), (0.0, 0.3), (0.05, 0.3)])
@pytest.mark.parametrize("kind", PER_ELEMENT)
def test_elementwise_prox_is_bitwise_the_reference(kind, l1, l2):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(37, 41, generator=generator) * 0.05
    steps = kernel_cases._steps(kind, [x], generator)
    want = x.clone()
    with kernel_cases.torch_path():
        F.elastic_shrink_([want], step=steps, l1=l1, l2=l2)
    assert F.kernels_apply([x], steps)
    F.elastic_shrink_([x], step=steps, l1=l1, l2=l2)
    assert torch.equal(x, want)
    assert l1 == 0 or (x == 0).any()


@pytest.mark.parametrize(
    ("penalty", "optimizer"),
    [("l1", "adam"), ("elastic_net", "rmsprop"), ("group_input", "adam"), ("sparse_group", "rmsprop")],
)
def test_training_runs_as_the_torch_code(penalty, optimizer):
    assert kernel_cases.training_error(penalty, optimizer, "cpu") <= 1.0


def test_zero_step_changes_nothing():
    assert kernel_cases.zero_step_changes_nothing("cpu")


def test_group_prox_converges_to_the_root():
    """At the returned weights each surviving group satisfies ``Σ w²/(r + c)² = 1`` with
    ``r = ‖x‖``: the optimality condition itself, not a second implementation."""
    generator = torch.Generator().manual_seed(5)
    w = torch.randn(64, 48, generator=generator, dtype=torch.float64) * 0.1
    w[:, ::3] *= 0.01  # groups the prox cuts
    square = torch.rand(64, 48, generator=generator, dtype=torch.float64) * 1e-3
    step = F.RootStep(0.02, square, 1e-8)
    layout = F.group_layout(w.shape, "input")
    x = w.clone()
    F.group_shrink_([x], [layout], step=[step], scale=0.05)
    c = 0.02 * 0.05 * layout.weights / (square.sqrt() + 1e-8)
    radius = x.norm(dim=0)
    alive = radius > 0
    assert 0 < int(alive.sum()) < 48  # some groups cut, some kept
    condition = ((w / (radius + c)) ** 2).sum(dim=0)
    assert torch.allclose(condition[alive], torch.ones_like(condition[alive]), rtol=1e-10, atol=0)
    # the cut groups: ‖w/c‖ ≤ 1 (their zero is optimal)
    assert bool(((w / c) ** 2).sum(dim=0)[~alive].le(1.0).all())


def test_what_the_kernels_take(monkeypatch):
    x = torch.zeros(8, 8)
    assert _numba.supports([x])
    assert not _numba.supports([x.half()])  # half precision: the torch path in float32
    assert not _numba.supports([x.t()])  # not contiguous
    assert not _numba.supports([x.requires_grad_().clone()[:, :4]])
    step = [F.RootStep(0.1, torch.rand(8, 8), 1e-8)]
    assert F.kernels_apply([torch.zeros(8, 8)], step)
    assert not F.kernels_apply([torch.zeros(8, 8)], [0.1])  # one step per tensor: torch's one pass
    monkeypatch.setenv("SHRINKAGE_KERNELS", "torch")
    assert not F.kernels_apply([torch.zeros(8, 8)], step)


def test_large_tensors_stay_on_torch_threads(monkeypatch):
    monkeypatch.setattr(_numba, "_SERIAL_LIMIT", 10)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert not _numba.supports([torch.zeros(4, 4)])
        torch.set_num_threads(1)
        assert _numba.supports([torch.zeros(4, 4)])
    finally:
        torch.set_num_threads(threads)


def test_writes_count_as_in_place_changes():
    """A graph that saved the old weights refuses its backward pass, as after torch's own
    in-place prox."""
    w = torch.randn(6, 5, requires_grad=True)
    loss = (w * w).sum()  # saves w
    step = [F.RootStep(0.1, torch.rand(6, 5), 1e-8)]
    assert F.kernels_apply([w], step)
    with torch.no_grad():
        F.elastic_shrink_([w], step=step, l1=0.1, l2=0.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_without_numba_the_torch_code_runs(monkeypatch):
    monkeypatch.setattr(_numba, "_kernels", lambda: None)  # as when Numba does not import
    step = [F.RootStep(0.1, torch.rand(6, 5), 1e-8)]
    assert not F.kernels_apply([torch.zeros(6, 5)], step)
    x = torch.randn(6, 5)
    want = x.clone()
    F.elastic_shrink_([x], step=step, l1=0.5, l2=0.0)
    with kernel_cases.torch_path():
        F.elastic_shrink_([want], step=step, l1=0.5, l2=0.0)
    assert torch.equal(x, want)


def test_sgd_steps_do_not_import_numba():
    """SGD's prox (one step per tensor) never needs the kernels: Numba's import (half a
    second) is not paid for it."""
    import subprocess
    import sys

    code = (
        "import sys, torch; from shrinkage import functional as F; "
        "x = torch.randn(4, 4); F.elastic_shrink_([x], step=[0.1], l1=0.1, l2=0.0); "
        "print('numba' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("penalty", ["group_input", "sparse_group"])
def test_a_nan_weight_stays_nan_as_in_the_torch_code(penalty):
    """A diverged weight must not become a tidy exact zero (it would hide the divergence)."""
    x = torch.randn(6, 5)
    x[2, 1] = float("nan")
    steps = [F.RootStep(0.01, torch.rand(6, 5) * 1e-3, 1e-8)]
    pen = kernel_cases.PENALTIES[penalty]()
    layouts = pen.layouts([("w", torch.empty(6, 5))])
    want = x.clone()
    with kernel_cases.torch_path():
        pen.prox_([want], layouts, step=steps)
    pen.prox_([x], layouts, step=steps)
    assert torch.isnan(want[2, 1]) and torch.isnan(x[2, 1])  # the diverged weight stays NaN in both
    assert torch.isfinite(x[:, [0, 2, 3, 4]]).all()  # the other groups as usual


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("prox", ["none", "l1", "l2", "elastic net", "held"])
def test_the_stacks_adam_step_is_torchs_adam_then_the_prox(prox, dtype):
    """:func:`shrinkage._numba.adam_stack_` (the batched engine's step on the CPU) against
    ``torch.optim.Adam`` on each model alone, with its own learning rate (a halved one
    for two of them) and its own λ, followed by the elementwise prox with the
    per-element step Adam took: five steps of random gradients. The same exact zeros;
    the rest to rounding (torch fuses multiply-adds that the kernel rounds separately)."""
    generator = torch.Generator().manual_seed(5)
    models, n, lr, betas, eps = 4, 50, 0.05, (0.9, 0.999), 1e-8
    start = torch.randn(models, n, generator=generator, dtype=dtype)
    rate = torch.tensor([[1.0], [0.5], [1.0], [0.25]], dtype=dtype)
    lam = torch.tensor([[0.5], [1.0], [2.0], [0.0]], dtype=dtype)
    l1 = torch.rand(n, generator=generator, dtype=dtype) * 4 if prox in ("l1", "elastic net", "held") else None
    l2 = torch.rand(n, generator=generator, dtype=dtype) * 4 if prox in ("l2", "elastic net") else None
    hold = (torch.rand(models, n, generator=generator) > 0.3).to(dtype) if prox == "held" else None
    grads = [torch.randn(models, n, generator=generator, dtype=dtype) for _ in range(5)]

    weights, moments = start.clone(), (torch.zeros_like(start), torch.zeros_like(start))
    counts = torch.zeros(models, dtype=torch.float64)
    for grad in grads:
        steps = _numba.adam_stack_(
            weights, moments, grad, counts, adam=(lr, *betas, eps), rate=rate, lam=lam, l1=l1, l2=l2, hold=hold
        )
    assert counts.tolist() == [5.0] * models

    for k in range(models):
        w = torch.nn.Parameter(start[k].clone())
        adam = torch.optim.Adam([w], lr=lr * float(rate[k]), betas=betas, eps=eps)
        for t, grad in enumerate(grads, 1):
            w.grad = grad[k].clone()
            adam.step()
            with torch.no_grad():  # the prox with Adam's per-element step s = lr/(√(v/(1−β₂ᵗ)) + ε), times λ
                v = adam.state[w]["exp_avg_sq"]
                s = lr * float(rate[k]) / ((v / (1 - betas[1] ** t)).sqrt() + eps) * lam[k]
                if l1 is not None:
                    w.copy_(torch.sign(w) * torch.clamp(w.abs() - s * l1, min=0))
                if l2 is not None:
                    w.div_(1 + 2 * s * l2)
                if hold is not None:
                    w.mul_(hold[k])
        tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(weights[k], w.detach(), **tolerance)
        torch.testing.assert_close(moments[1][k], adam.state[w]["exp_avg_sq"], **tolerance)
        torch.testing.assert_close(steps[k], s, **tolerance)
        assert torch.equal(weights[k] == 0, w.detach() == 0)
    if prox in ("l1", "elastic net", "held"):
        assert (weights == 0).any() and (weights[3] != 0).all() == (hold is None)  # λ = 0 zeroes nothing

"""The pure penalty math against closed forms, torch's own kernels and brute force."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import minimize

from shrinkage import _numba
from shrinkage import functional as F

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False, width=64)
vectors = arrays(np.float64, st.integers(1, 12), elements=finite)
thresholds = st.floats(0.0, 50.0, allow_nan=False)


# ----------------------------------------------------------------- closed-form values
def test_soft_threshold_closed_form():
    w = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5, 1.0])
    F.soft_threshold_([w], threshold=[1.0])
    assert torch.equal(w, torch.tensor([-1.0, 0.0, 0.0, 0.0, 0.5, 0.0]))


def test_soft_threshold_per_element_thresholds():
    w = torch.tensor([3.0, 3.0, -3.0])
    F.soft_threshold_([w], threshold=[torch.tensor([1.0, 4.0, 0.5])])
    assert torch.equal(w, torch.tensor([2.0, 0.0, -2.5]))


def test_soft_threshold_matches_torch_softshrink_on_many_tensors():
    tensors = [torch.randn(5, 7), torch.randn(3), torch.randn(2, 3, 4)]
    steps = [0.3, 0.7, 1.1]
    expected = [torch.nn.functional.softshrink(t, s) for t, s in zip(tensors, steps)]
    F.soft_threshold_(tensors, threshold=steps)
    for got, want in zip(tensors, expected):
        assert torch.equal(got, want)


def test_ridge_shrink_closed_form():
    w = [torch.tensor([2.0, -4.0]), torch.tensor([3.0])]
    F.ridge_shrink_(w, step=[0.5, 1.0])  # divide by 1 + 2s: by 2 and by 3
    assert torch.equal(w[0], torch.tensor([1.0, -2.0]))
    assert torch.equal(w[1], torch.tensor([1.0]))
    v = torch.tensor([2.0, -4.0])
    F.ridge_shrink_([v], step=[torch.tensor([0.5, 1.5])])
    assert torch.equal(v, torch.tensor([1.0, -1.0]))


def _group_prox_numpy(W: np.ndarray, s: float, axis: int) -> np.ndarray:
    """v_g·max(0, 1 − s√|g|/‖v_g‖) written independently in NumPy."""
    out = W.copy()
    for j in range(W.shape[axis]):
        g = np.take(W, j, axis=axis)
        norm = np.linalg.norm(g)
        factor = max(0.0, 1.0 - s * math.sqrt(g.size) / norm) if norm > 0 else 0.0
        index = [slice(None)] * W.ndim
        index[axis] = j
        out[tuple(index)] = g * factor
    return out


@pytest.mark.parametrize("groups,axis", [("input", 1), ("unit", 0)])
def test_group_shrink_closed_form(groups, axis, rng):
    W = rng.standard_normal((4, 6))
    W[:, 2] = 0.0  # a zero column stays zero (no NaN)
    W[1, :] *= 0.01  # a small row
    tensor = torch.tensor(W)
    layout = F.group_layout(tensor.shape, groups)
    F.group_shrink_([tensor], [layout], step=[0.4])
    np.testing.assert_allclose(tensor.numpy(), _group_prox_numpy(W, 0.4, axis), rtol=1e-12, atol=1e-15)
    assert not torch.isnan(tensor).any()


def test_group_shrink_user_groups_match_hand_computation():
    W = torch.tensor([[3.0, 4.0, 0.1], [0.0, 0.0, 0.1]])  # groups {0,1} and {2}
    layout = F.group_layout(W.shape, [[0, 1], [2]])
    F.group_shrink_([W], [layout], step=[1.0])
    # group {0,1}: 4 weights, norm 5, threshold 1·√4 = 2 → factor 3/5
    # group {2}: 2 weights, norm √0.02 ≈ 0.141 < √2 → zero
    assert torch.allclose(W, torch.tensor([[1.8, 2.4, 0.0], [0.0, 0.0, 0.0]]))


def test_group_shrink_conv_channels():
    W = torch.randn(3, 5, 2, 2)  # (out, in, kh, kw): input groups are the 5 in-channels
    expected = torch.tensor(_group_prox_numpy(W.double().numpy(), 0.8, axis=1))
    layout = F.group_layout(W.shape, "input")
    assert layout.weights == pytest.approx(math.sqrt(3 * 2 * 2))
    F.group_shrink_([W], [layout], step=[0.8])
    assert torch.allclose(W.double(), expected, atol=1e-6)


# ------------------------------------------------- scaled (per-element step) group prox
def _scaled_objective(x, v, steps, weight):
    return float(np.sum((x - v) ** 2 / (2 * steps)) + weight * np.linalg.norm(x))


@pytest.mark.parametrize("case", range(12))
def test_scaled_group_prox_solves_its_defining_problem(case):
    """argmin_x Σ(x_i − v_i)²/(2s_i) + √|g|·‖x‖, checked by a general-purpose minimizer."""
    rng = np.random.default_rng(case)
    size = int(rng.integers(2, 7))
    v = rng.standard_normal(size) * rng.choice([0.3, 1.0, 3.0])
    steps = rng.uniform(0.05, 1.0, size) * rng.choice([0.2, 1.0])
    x = torch.tensor(v.reshape(size, 1))  # one input group: a column of `size` weights
    layout = F.group_layout(x.shape, "input")
    F.group_shrink_([x], [layout], step=[torch.tensor(steps.reshape(size, 1))])
    ours = x.numpy().ravel()
    weight = math.sqrt(size)
    f_ours = _scaled_objective(ours, v, steps, weight)
    best = min(
        (
            minimize(
                _scaled_objective,
                start,
                args=(v, steps, weight),
                method="Nelder-Mead",
                options={"xatol": 1e-12, "fatol": 1e-14, "maxiter": 40000},
            )
            for start in (v, np.zeros(size), v * 0.5)
        ),
        key=lambda r: r.fun,
    )
    assert f_ours <= best.fun + 1e-9
    assert f_ours <= _scaled_objective(np.zeros(size), v, steps, weight) + 1e-12
    zero_expected = np.linalg.norm(v / steps) <= weight  # the optimality condition at 0
    assert (np.all(ours == 0.0)) == zero_expected


@pytest.mark.parametrize("checks", [1, 0], ids=["tested every iteration", "a fixed count (accelerators)"])
@pytest.mark.parametrize("groups", ["input", "unit", [[0, 1], [2], [3, 4, 5]]])
def test_the_scaled_group_prox_on_the_cpu_is_the_accelerators(groups, checks, monkeypatch):
    """On the CPU the scaled group prox finds its Newton roots with NumPy; the torch code
    that accelerators run (here on the CPU, with Newton's convergence tested at every
    iteration or a fixed count) gives the same weights and the same zeros, on one model
    and on a stack of models, with per-element and scaled steps."""
    torch.manual_seed(3)
    W = torch.randn(3, 4, 6, dtype=torch.float64) * torch.tensor([0.1, 1.0, 3.0], dtype=torch.float64).view(3, 1, 1)
    layout = F.group_layout((4, 6), groups)
    steps = [
        torch.rand(3, 4, 6, dtype=torch.float64),
        F.ScaledStep(0.9, torch.rand(3, 4, 6, dtype=torch.float64) + 0.3),
    ]
    for step in steps:
        for x, own_layout, own_step in [
            (W, layout.stacked(), step),
            (W[2], layout, step[2] if isinstance(step, torch.Tensor) else F.ScaledStep(0.9, step.denominator[2])),
        ]:
            host = x.clone()
            F.group_shrink_([host], [own_layout], step=[own_step], scale=0.7)
            with monkeypatch.context() as patch, F.device_checks(checks):
                patch.setattr(F, "_numpy_viewable", lambda _: False)
                accelerator = x.clone()
                F.group_shrink_([accelerator], [own_layout], step=[own_step], scale=0.7)
            torch.testing.assert_close(host, accelerator, rtol=1e-12, atol=1e-15)
            assert torch.equal(host == 0, accelerator == 0)
            assert bool((host == 0).any()) == (x.dim() == 3) and bool((host != 0).any())  # (model 0 loses groups)


@pytest.mark.parametrize("batch", [0, 1])
def test_scaled_group_prox_of_one_entry_groups_is_the_soft_threshold(batch, rng):
    """Groups of one entry (the columns of a single output's weight): the prox of s·|w|
    per entry, the same as the general Newton solution on the same groups given as labels."""
    shape = (3, 1, 40) if batch else (1, 40)
    W = torch.tensor(rng.standard_normal(shape) * 0.5)
    steps = torch.tensor(rng.uniform(0.05, 1.0, shape))
    plain = F.group_layout(W.shape[batch:], "input")
    plain = plain.stacked() if batch else plain
    labelled = dataclasses.replace(plain, labels=torch.arange(40))
    fast, general = W.clone(), W.clone()
    with _numba.unused():  # torch's code, as in the batched engine (not the Numba kernel)
        F.group_shrink_([fast], [plain], step=[steps], scale=0.7)
    F.group_shrink_([general], [labelled], step=[steps], scale=0.7)
    threshold = steps * 0.7
    expected = torch.sign(W) * torch.clamp(W.abs() - threshold, min=0.0)
    torch.testing.assert_close(fast, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(general, expected, rtol=1e-12, atol=1e-12)
    assert bool((fast == 0).any()) and bool((fast != 0).any())


def test_scaled_group_prox_with_equal_steps_is_the_closed_form(rng):
    W = rng.standard_normal((5, 8))
    a, b = torch.tensor(W), torch.tensor(W)
    layout = F.group_layout(a.shape, "input")
    F.group_shrink_([a], [layout], step=[0.3])
    F.group_shrink_([b], [layout], step=[torch.full_like(b, 0.3)])
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


# -------------------------------------------------------------- hypothesis properties
@given(vectors, vectors, thresholds)
def test_soft_threshold_is_nonexpansive(a, b, t):
    n = min(a.size, b.size)
    x, y = torch.tensor(a[:n]), torch.tensor(b[:n])
    px, py = x.clone(), y.clone()
    F.soft_threshold_([px, py], threshold=[t, t])
    assert torch.all((px - py).abs() <= (x - y).abs() + 1e-9)


@given(vectors, thresholds)
def test_soft_threshold_zero_inside_shrinks_outside(a, t):
    x = torch.tensor(a)
    p = x.clone()
    F.soft_threshold_([p], threshold=[t])
    inside = x.abs() <= t
    assert torch.all(p[inside] == 0)
    assert torch.all(p.abs() <= x.abs())
    assert torch.all(p * x >= 0)  # never flips a sign
    expected = np.sign(a) * np.maximum(np.abs(a) - t, 0.0)
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12, atol=1e-12)


@given(vectors, thresholds)
def test_ridge_shrink_is_the_minimizer(a, s):
    x = torch.tensor(a)
    p = x.clone()
    F.ridge_shrink_([p], step=[s])
    # argmin ½(z − a)² + s·z² ⇔ (z − a) + 2sz = 0
    np.testing.assert_allclose((p - x + 2 * s * p).numpy(), 0.0, atol=1e-9)
    assert torch.all(p.abs() <= x.abs())


matrices = arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 5)), elements=finite)


@given(matrices, thresholds)
def test_group_shrink_properties(a, s):
    x = torch.tensor(a)
    p = x.clone()
    layout = F.group_layout(x.shape, "input")
    F.group_shrink_([p], [layout], step=[s])
    before = torch.linalg.vector_norm(x, dim=0)
    after = torch.linalg.vector_norm(p, dim=0)
    threshold = s * math.sqrt(a.shape[0])
    assert torch.all(after[before <= threshold] == 0)  # zero inside the threshold
    assert torch.all(after <= before + 1e-9)  # shrink-only
    # radial: each column is scaled by a factor in [0, 1], keeping its direction
    ratio = torch.where(before > 0, after / before, torch.zeros_like(before))
    assert torch.allclose(p, x * ratio, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(p.numpy(), _group_prox_numpy(a, s, 1), rtol=1e-9, atol=1e-9)


@given(matrices, matrices, thresholds)
def test_group_shrink_is_nonexpansive(a, b, s):
    rows, cols = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    x, y = torch.tensor(a[:rows, :cols]), torch.tensor(b[:rows, :cols])
    px, py = x.clone(), y.clone()
    layout = F.group_layout(x.shape, "input")
    F.group_shrink_([px, py], [layout, layout], step=[s, s])
    assert torch.linalg.vector_norm(px - py) <= torch.linalg.vector_norm(x - y) * (1 + 1e-12) + 1e-9


@given(
    arrays(np.float64, st.integers(1, 6), elements=st.floats(-50, 50, allow_nan=False)),
    st.floats(0.05, 3.0),
    st.integers(0, 2**31 - 1),
)
def test_scaled_group_prox_optimality(a, weight_scale, seed):
    """The scaled prox satisfies its first-order optimality conditions."""
    steps = np.random.default_rng(seed).uniform(0.01, 2.0, a.size) * weight_scale
    x = torch.tensor(a.reshape(-1, 1))
    layout = F.group_layout(x.shape, "input")
    F.group_shrink_([x], [layout], step=[torch.tensor(steps.reshape(-1, 1))])
    z = x.numpy().ravel()
    weight = math.sqrt(a.size)
    norm = np.linalg.norm(z)
    if norm == 0:
        assert np.linalg.norm(a / steps) <= weight * (1 + 1e-9)
    else:
        # (z − a)/s + √|g|·z/‖z‖ = 0
        residual = (z - a) / steps + weight * z / norm
        assert np.max(np.abs(residual)) <= 1e-6 * max(1.0, np.max(np.abs(a / steps)))


# ------------------------------------------------------------------- values, layouts
def test_values_match_plain_sums():
    tensors = [torch.randn(4, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    assert F.l1_value(tensors).item() == pytest.approx(sum(t.abs().sum().item() for t in tensors))
    assert F.l2_value(tensors).item() == pytest.approx(sum((t**2).sum().item() for t in tensors))
    W = tensors[0]
    layout = F.group_layout(W.shape, "unit")
    expected = sum(math.sqrt(3) * W[i].norm().item() for i in range(4))
    assert F.group_value([W], [layout]).item() == pytest.approx(expected)


def test_group_layout_rejects_bad_groups():
    with pytest.raises(ValueError, match=r"ndim >= 2, got shape \(3,\)"):
        F.group_layout((3,), "input")
    with pytest.raises(ValueError, match=r"cover every column of the tensor, got columns \[2\] in no group"):
        F.group_layout((2, 3), [[0], [1]])
    with pytest.raises(ValueError, match=r"column indices in \[0, 3\), got group 1 = \[3\]"):
        F.group_layout((2, 3), [[0, 1, 2], [3]])
    with pytest.raises(ValueError, match="must not overlap"):
        F.group_layout((2, 3), [[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="empty group"):
        F.group_layout((2, 3), [[0, 1, 2], []])


def test_groups_of_one_column_each_are_the_input_layout():
    layout = F.group_layout((4, 3), [[0], [1], [2]])
    assert layout == F.group_layout((4, 3), "input")
    assert F.group_layout((4, 3), [[1], [0], [2]]).labels is not None  # another order: labels

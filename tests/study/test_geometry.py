"""The L1 diamond / L2 disc picture, checked against the optimality conditions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from shrinkage import functional as F
from shrinkage.study.geometry import (
    Quadratic,
    l1_solution,
    l1_solutions,
    l2_solution,
    plot_geometry,
    plot_track,
    showcase_lambda,
)

QUADRATICS = [
    Quadratic(),
    Quadratic((1.0, -2.0), ((2.0, 0.5), (0.5, 1.0))),
    Quadratic((0.5, 0.4), ((1.0, 0.0), (0.0, 3.0))),
]


@pytest.mark.parametrize("f", QUADRATICS)
@pytest.mark.parametrize("scale", [0.05, 0.5, 1.0, 3.0])
def test_l1_solution_satisfies_kkt(f, scale):
    lam = scale * float(np.abs(f.H @ f.c).max())
    w = l1_solution(f, lam)
    grad = f.H @ (w - f.c)
    for j in range(2):
        if w[j] == 0:  # |∂f/∂w_j| <= λ at an exact zero
            assert abs(grad[j]) <= lam * (1 + 1e-9)
        else:  # ∂f/∂w_j + λ·sign(w_j) = 0
            assert grad[j] + lam * np.sign(w[j]) == pytest.approx(0, abs=1e-9)


def _proximal_gradient(f: Quadratic, lambdas: np.ndarray) -> np.ndarray:
    """argmin f(w) + λ‖w‖₁ by proximal gradient with the library's soft threshold, run
    until no iterate moves by more than 1e-15 (a last bit may flip back and forth)."""
    H, c = torch.tensor(f.H), torch.tensor(f.c)
    step = 1.0 / float(np.linalg.eigvalsh(f.H).max())
    thresholds = step * torch.tensor(lambdas).reshape(-1, 1)
    w = torch.zeros(len(lambdas), 2, dtype=torch.float64)
    for _ in range(50_000):
        previous = w.clone()
        w = w - step * ((w - c) @ H)
        F.soft_threshold_([w], threshold=[thresholds])
        if float((w - previous).abs().max()) <= 1e-15:
            return w.numpy()
    raise AssertionError("proximal gradient did not converge")


@pytest.mark.parametrize("f", [*QUADRATICS, Quadratic((-1.5, 0.3), ((0.2, -0.35), (-0.35, 3.0)))])
def test_l1_solutions_are_proximal_gradients_fixed_points(f):
    """The exact candidates against proximal gradient with the library's prox, on 300 λ
    from nothing zero to everything zero: the same points, and the same exact zeros."""
    lambdas = np.geomspace(1e-3, 1e1, 300) * float(np.abs(f.H @ f.c).max())
    exact, iterated = l1_solutions(f, lambdas), _proximal_gradient(f, lambdas)
    np.testing.assert_allclose(exact, iterated, atol=1e-9)
    assert np.array_equal(exact == 0, iterated == 0)
    assert {int(n) for n in np.sum(exact == 0, axis=1)} == {0, 1, 2}  # every support on the way


@pytest.mark.parametrize("f", QUADRATICS)
def test_l2_solution_is_the_minimizer(f):
    lam = 0.7
    w = l2_solution(f, lam)
    numeric = minimize(lambda v: f(v) + lam * v @ v, np.zeros(2), tol=1e-12).x
    np.testing.assert_allclose(w, numeric, atol=1e-6)


@pytest.mark.parametrize("f", QUADRATICS)
def test_the_showcase_lambda_puts_the_l1_optimum_on_an_axis_and_not_the_l2(f):
    lam = showcase_lambda(f)
    w1, w2 = l1_solution(f, lam), l2_solution(f, lam)
    assert np.sum(w1 == 0) == 1  # exactly one coordinate exactly zero: a corner of the diamond
    assert np.all(w2 != 0)  # the disc has no corners


def test_plots_return_their_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    assert plot_geometry(axes[0]) is axes[0] and plot_track(axes[1]) is axes[1]
    plt.close(fig)


def test_bad_quadratic():
    with pytest.raises(ValueError, match="hessian must be symmetric positive definite"):
        Quadratic((1.0, 1.0), ((1.0, 2.0), (2.0, 1.0)))

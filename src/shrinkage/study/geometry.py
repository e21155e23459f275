"""Why L1 gives exact zeros and L2 does not, computed rather than drawn by hand.

For a 2-D quadratic loss ``f(w) = ½ (w − c)ᵀ H (w − c)`` (an elliptic bowl centred on
the unpenalized optimum ``c``) the penalized problems

    min f(w) + λ‖w‖₁        (exact: the best of nine closed-form candidates)
    min f(w) + λ‖w‖₂²       (closed form: w = (H + 2λI)⁻¹ H c)

have, at each λ, the same solutions as the constrained problems ``min f`` over the L1
diamond ``‖w‖₁ ≤ t`` and the L2 disc ``‖w‖₂ ≤ r`` whose sizes pass through them. The
picture shows the loss contours, both regions, and both optima: the ellipse touches
the diamond at a corner, on an axis — a coordinate exactly zero — and the disc
anywhere. The track plot follows both solutions as λ grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shrinkage.validation import InputError, check_number, fail

__all__ = ["Quadratic", "l1_solution", "l1_solutions", "l2_solution", "plot_geometry", "plot_track", "showcase_lambda"]


@dataclass(frozen=True)
class Quadratic:
    """``f(w) = ½ (w − center)ᵀ hessian (w − center)`` in two dimensions."""

    center: tuple[float, float] = (2.0, 0.8)
    hessian: tuple[tuple[float, float], tuple[float, float]] = ((1.0, 0.4), (0.4, 0.6))

    def __post_init__(self) -> None:
        H = np.asarray(self.hessian, dtype=float)
        if np.asarray(self.center).shape != (2,) or H.shape != (2, 2):
            raise fail("center/hessian", "a 2-vector and a 2×2 matrix", (self.center, self.hessian))
        if not np.allclose(H, H.T) or np.linalg.eigvalsh(H).min() <= 0:
            raise fail("hessian", "symmetric positive definite", self.hessian)

    @property
    def H(self) -> np.ndarray:
        return np.asarray(self.hessian, dtype=float)

    @property
    def c(self) -> np.ndarray:
        return np.asarray(self.center, dtype=float)

    def __call__(self, w: np.ndarray) -> np.ndarray:
        """f at points ``w`` of shape ``(..., 2)``."""
        d = np.asarray(w) - self.c
        return 0.5 * np.einsum("...i,ij,...j->...", d, self.H, d)


def l1_solution(f: Quadratic, lambda_: float) -> np.ndarray:
    """argmin f(w) + λ‖w‖₁, exactly (see :func:`l1_solutions`)."""
    return l1_solutions(f, [check_number("lambda_", lambda_, low=0.0)])[0]


def l1_solutions(f: Quadratic, lambdas: Sequence[float] | np.ndarray) -> np.ndarray:
    """:func:`l1_solution` at every λ of ``lambdas`` at once, ``(len(lambdas), 2)``.

    In two dimensions the solution is one of nine candidates, each the stationary point
    of the objective on one support and sign pattern (with ``g = H c``): the origin;
    ``w_i = S(g_i, λ) / H_ii`` with the other coordinate 0 (S: the soft threshold); and
    ``w = H⁻¹(g − λ s)`` for each of the four sign vectors ``s``. The optimum's own
    pattern gives the optimum, and every other candidate is a point whose objective is
    no lower: the solution is the candidate of lowest objective, the sparsest among
    those within rounding of it — so its zeros are exact.
    """
    H, g = f.H, f.H @ f.c
    lam = np.asarray(lambdas, dtype=float).reshape(-1, 1, 1)  # (λ, candidate, coordinate)
    soft = np.sign(g) * np.maximum(np.abs(g) - lam[:, :, 0], 0.0)  # (λ, 2)
    zero = np.zeros_like(soft)
    singles = [
        np.stack([soft[:, 0] / H[0, 0], zero[:, 1]], axis=1),
        np.stack([zero[:, 0], soft[:, 1] / H[1, 1]], axis=1),
    ]
    signs = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    doubles = np.linalg.solve(H, (g - lam * signs)[..., None])[..., 0]  # (λ, 4, 2)
    candidates = np.concatenate([zero[:, None], np.stack(singles, axis=1), doubles], axis=1)  # sparsest first
    d = candidates - f.c
    objective = 0.5 * np.einsum("...i,ij,...j->...", d, H, d) + lam[:, :, 0] * np.abs(candidates).sum(axis=-1)
    best = objective.min(axis=1, keepdims=True)
    within = objective <= best + 1e-12 * np.maximum(np.abs(best), f(np.zeros(2)))
    return candidates[np.arange(len(candidates)), np.argmax(within, axis=1)]


def l2_solution(f: Quadratic, lambda_: float) -> np.ndarray:
    """argmin f(w) + λ‖w‖₂² = (H + 2λI)⁻¹ H c (no ½ on the penalty, as everywhere here)."""
    lambda_ = check_number("lambda_", lambda_, low=0.0)
    return np.linalg.solve(f.H + 2 * lambda_ * np.eye(2), f.H @ f.c)


def showcase_lambda(f: Quadratic) -> float:
    """A λ at which the L1 solution has exactly one zero coordinate (mid-interval)."""
    with np.errstate(over="ignore"):
        scale = float(np.abs(f.H @ f.c).max())
    if not 0.0 < scale < 1e300:  # the optimum at the origin, or numbers beyond float64's range
        raise InputError(
            f"center and hessian must put the optimum away from 0 at a finite scale, got H·c up to {scale:g}"
        )
    lambdas = np.geomspace(1e-3, 1e2, 400) * scale
    one_zero = lambdas[np.sum(l1_solutions(f, lambdas) == 0, axis=1) == 1]
    if not one_zero.size:
        raise InputError(
            "this quadratic has no λ with exactly one zero coordinate: give lambda_ to draw it at a λ of your own"
        )
    return float(np.sqrt(one_zero[0] * one_zero[-1]))


def plot_geometry(ax=None, f: Quadratic | None = None, lambda_: float | None = None):
    """Loss contours, the L1 diamond and L2 disc through the two optima, and the optima."""
    import matplotlib.pyplot as plt

    f = f or Quadratic()
    lambda_ = showcase_lambda(f) if lambda_ is None else lambda_
    ax = ax or plt.figure(figsize=(5.2, 5)).add_subplot()
    w1, w2 = l1_solution(f, lambda_), l2_solution(f, lambda_)
    span = 1.25 * max(abs(f.c).max(), 1.0)
    grid = np.linspace(-span, span, 300)
    W = np.stack(np.meshgrid(grid, grid), axis=-1)
    ax.contour(grid, grid, f(W), levels=np.quantile(f(W), [0.005, 0.03, 0.1, 0.25]), colors="0.7", linewidths=0.7)
    # the level sets through the two optima: each touches its region at the optimum
    ax.contour(grid, grid, f(W), levels=[float(f(w1))], colors="tab:blue", linestyles="--", linewidths=1)
    ax.contour(grid, grid, f(W), levels=[float(f(w2))], colors="tab:orange", linestyles="--", linewidths=1)
    t = np.abs(w1).sum()
    ax.fill([t, 0, -t, 0], [0, t, 0, -t], color="tab:blue", alpha=0.18, label=f"L1 diamond ‖w‖₁ ≤ {t:.2f}")
    r = float(np.linalg.norm(w2))
    ax.add_patch(plt.Circle((0, 0), r, color="tab:orange", alpha=0.18, label=f"L2 disc ‖w‖₂ ≤ {r:.2f}"))
    ax.plot(*f.c, "k+", markersize=10, label="unpenalized optimum")
    ax.plot(*w1, "o", color="tab:blue", label=f"L1 optimum ({w1[0]:.3f}, {w1[1]:.3f})")
    ax.plot(*w2, "s", color="tab:orange", label=f"L2 optimum ({w2[0]:.3f}, {w2[1]:.3f})")
    ax.axhline(0, color="0.3", linewidth=0.6)
    ax.axvline(0, color="0.3", linewidth=0.6)
    ax.set(
        xlim=(-span, span),
        ylim=(-span, span),
        aspect="equal",
        xlabel="w₁",
        ylabel="w₂",
        title=f"λ = {lambda_:.3g}: the L1 optimum sits on an axis",
    )
    ax.legend(loc="lower left", fontsize=7)
    return ax


def plot_track(ax=None, f: Quadratic | None = None, lambdas: Sequence[float] | np.ndarray | None = None):
    """Both solutions as λ grows: L1 reaches an axis and follows it to 0; L2 curves in."""
    import matplotlib.pyplot as plt

    f = f or Quadratic()
    if lambdas is None:
        lambdas = np.geomspace(1e-3, 1e1, 200) * float(np.abs(f.H @ f.c).max())
    ax = ax or plt.figure(figsize=(5.2, 5)).add_subplot()
    l1 = l1_solutions(f, lambdas)
    l2 = np.array([l2_solution(f, lam) for lam in lambdas])
    ax.plot(l1[:, 0], l1[:, 1], "-", color="tab:blue", label="L1 solutions")
    ax.plot(l2[:, 0], l2[:, 1], "-", color="tab:orange", label="L2 solutions")
    ax.plot(*f.c, "k+", markersize=10, label="λ = 0")
    ax.plot(0, 0, "k.", label="λ → ∞")
    on_axis = np.any(l1 == 0, axis=1) & np.any(l1 != 0, axis=1)
    if on_axis.any():
        first = int(np.argmax(on_axis))
        ax.annotate(
            f"exact zero from λ = {lambdas[first]:.3g}",
            l1[first],
            textcoords="offset points",
            xytext=(10, 12),
            fontsize=8,
            arrowprops={"arrowstyle": "->"},
        )
    ax.axhline(0, color="0.3", linewidth=0.6)
    ax.axvline(0, color="0.3", linewidth=0.6)
    ax.set(xlabel="w₁", ylabel="w₂", title="the solutions as λ grows")
    ax.legend(loc="upper left", fontsize=8)
    return ax

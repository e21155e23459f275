"""Conversions between this library's λ and other libraries' strength parameters.

Our objective is ``mean_i ℓ_i + λ·R(w)`` with ``R`` as in :mod:`shrinkage.penalties`
(L2 without ½). Each function returns our ``lambda_`` (and ``l1_ratio`` where the
penalty has one). The derivations are in the docstrings; tests pin each against the
other library's solver or optimizer.
"""

from __future__ import annotations

from .validation import check_int, check_number

__all__ = [
    "from_keras_l1l2",
    "from_sklearn_enet",
    "from_sklearn_lasso",
    "from_sklearn_logistic",
    "from_torch_weight_decay",
    "to_sklearn_enet",
]


def from_sklearn_lasso(alpha: float) -> float:
    """``Lasso(alpha=a)`` ↔ :class:`~shrinkage.L1` with ``λ = 2a`` under ``MSELoss``.

    scikit-learn minimizes ``(1/2n)‖y − Xw‖² + a‖w‖₁``; twice that is
    ``(1/n)‖y − Xw‖² + 2a‖w‖₁``, our objective with a mean-squared-error loss.
    """
    return 2.0 * check_number("alpha", alpha, low=0.0)


def from_sklearn_enet(alpha: float, l1_ratio: float) -> tuple[float, float]:
    """``ElasticNet(alpha=a, l1_ratio=r)`` ↔ :class:`~shrinkage.ElasticNet` ``(λ, ρ)``.

    scikit-learn minimizes ``(1/2n)‖y − Xw‖² + a·r‖w‖₁ + (a(1 − r)/2)‖w‖²``. Twice that
    is ``(1/n)‖y − Xw‖² + 2ar‖w‖₁ + a(1 − r)‖w‖²``; matching ``λρ = 2ar`` and
    ``λ(1 − ρ) = a(1 − r)`` gives ``λ = a(1 + r)`` and ``ρ = 2r / (1 + r)``.
    """
    a = check_number("alpha", alpha, low=0.0)
    r = check_number("l1_ratio", l1_ratio, low=0.0, high=1.0)
    return a * (1.0 + r), 2.0 * r / (1.0 + r)


def to_sklearn_enet(lambda_: float, l1_ratio: float) -> tuple[float, float]:
    """Inverse of :func:`from_sklearn_enet`: ``(alpha, l1_ratio)`` for scikit-learn.

    ``r = ρ / (2 − ρ)`` and ``a = λ / (1 + r) = λ(2 − ρ) / 2``.
    """
    lam = check_number("lambda_", lambda_, low=0.0)
    rho = check_number("l1_ratio", l1_ratio, low=0.0, high=1.0)
    return lam * (2.0 - rho) / 2.0, rho / (2.0 - rho)


def from_sklearn_logistic(C: float, n_samples: int) -> float:
    """``LogisticRegression(penalty="l1", C=C)`` ↔ :class:`~shrinkage.L1` with ``λ = 1/(C·n)``.

    scikit-learn minimizes ``‖w‖₁ + C·Σ_i logloss_i``; divided by ``C·n`` that is
    ``mean_i logloss_i + (1/(C·n))‖w‖₁``, our objective with a mean cross-entropy loss.
    The same holds for ``penalty="l2"`` with :class:`~shrinkage.L2`, where scikit-learn's
    ``½‖w‖²`` gives ``λ = 1/(2·C·n)``: use ``from_sklearn_logistic(C, n) / 2`` there.
    """
    c = check_number("C", C, low=0.0, low_open=True)
    n = check_int("n_samples", n_samples, low=1)
    return 1.0 / (c * n)


def from_torch_weight_decay(weight_decay: float) -> float:
    """``SGD(weight_decay=wd)`` and ``AdamW(weight_decay=wd)`` ↔ :class:`~shrinkage.L2` with ``λ = wd/2``.

    SGD adds ``wd·w`` to the gradient, the gradient of ``(wd/2)·Σw²`` (mode
    ``gradient``); AdamW multiplies by ``1 − η·wd`` before its step (mode ``decoupled``).
    """
    return check_number("weight_decay", weight_decay, low=0.0) / 2.0


def from_keras_l1l2(l1: float = 0.0, l2: float = 0.0) -> tuple[float, float]:
    """Keras ``L1L2(l1, l2)`` (``l1·Σ|w| + l2·Σw²``) ↔ :class:`~shrinkage.ElasticNet` ``(λ, ρ)``.

    Same scale as ours: ``λ = l1 + l2`` and ``ρ = l1 / (l1 + l2)`` (ρ = 1 when both are 0).
    """
    a = check_number("l1", l1, low=0.0)
    b = check_number("l2", l2, low=0.0)
    total = a + b
    return total, (a / total if total > 0 else 1.0)

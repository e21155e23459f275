"""The CPU kernels of :mod:`shrinkage._numba`, compiled by Numba at their first call.

Arrays are NumPy views of the tensors (float32 or float64); every scalar argument comes
in the arrays' dtype, so that the arithmetic stays in that dtype as torch's does. Steps
are of the kinds :mod:`shrinkage._triton` lists: 1 ``a/(√q + e)``, 2 ``a/(q + e)``,
3 ``a·q``.

The elementwise prox is compiled without fast-math and repeats the torch reference's
operations in its order, so it rounds as the reference does. The stacked Adam step does
too, but for the multiply-adds that torch's vectorized code fuses: it agrees to rounding.
The group prox sums with reassociation allowed (vectorized sums, as torch's own
reductions).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.lib.stride_tricks import as_strided

_exact = numba.njit(cache=True, error_model="numpy")
_inline = numba.njit(cache=True, error_model="numpy", inline="always")
# reassociation (vectorized sums), contraction (fused multiply-add) and reciprocals:
# never an assumption that values are finite
_sums = numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract", "arcp"})


@_inline
def _denominator(q, e, kind):
    return math.sqrt(q) + e if kind == 1 else q + e


@_exact
def elementwise(x, q, kind, e, t1, t2, l1, l2, one):
    """``x ← soft(x·d, t1)/(d + t2)`` (kinds 1, 2: ``t1 = a·l1``, ``t2 = 2a·l2``) or
    ``x ← soft(x, q·l1)/(1 + 2·q·l2)`` (kind 3), over flat arrays."""
    for i in range(x.shape[0]):
        w = x[i]
        if kind == 3:
            if l1 != 0:
                t = q[i] * l1
                w = w - min(max(w, -t), t)
            if l2 != 0:
                w = w / (one + ((q[i] * l2) + (q[i] * l2)))
        else:
            d = _denominator(q[i], e, kind)
            w = w * d
            if t1 != 0:
                w = w - t1 if w > t1 else (w + t1 if w < -t1 else w - w)  # (w − w: 0, or NaN for NaN)
            w = w / (d + t2)
        x[i] = w


@_inline
def _threshold(x, q, kind, a, e, ac, t1, one):
    """Element i's soft-threshold by ``l1·s`` (sparse group lasso; ``t1 = a·l1``, zero
    for none) and its group threshold ``c = a·scale·√|g| / d`` (``ac`` the numerator)."""
    if kind == 3:
        if t1 != 0:
            t = q * t1
            x = x - min(max(x, -t), t)
        return x, q * ac
    d = _denominator(q, e, kind)
    if t1 != 0:
        x = x * d
        x = x - t1 if x > t1 else (x + t1 if x < -t1 else x - x)  # (x − x: 0, or NaN for NaN)
        x = x / d
    return x, ac / d


@_sums
def group_columns(x, q, c, kind, a, e, ac, t1, one, max_iter, tolerance):
    """The group prox of ``x`` seen as ``(models, rows, groups)``: each group a column
    of a model's rows. ``c`` is scratch of x's shape. Returns the Newton iterations."""
    models, rows, groups = x.shape
    iterations = 0
    for m in range(models):
        total = np.zeros(groups, x.dtype)
        at_zero = np.zeros(groups, x.dtype)
        weighted = np.zeros(groups, x.dtype)
        for o in range(rows):
            for g in range(groups):
                w, cc = _threshold(x[m, o, g], q[m, o, g], kind, a, e, ac, t1, one)
                x[m, o, g] = w
                c[m, o, g] = cc
                square = w * w
                total[g] += square
                at_zero[g] += square / (cc * cc) if square != 0 else square
                weighted[g] += square * cc
        radius, keep = _start(total, at_zero, weighted)
        s_sum = np.zeros(groups, x.dtype)
        t_sum = np.zeros(groups, x.dtype)
        previous = np.zeros(groups, x.dtype)
        for iteration in range(max_iter):
            s_sum[:] = 0
            t_sum[:] = 0
            for o in range(rows):
                for g in range(groups):
                    w = x[m, o, g]
                    inverse = one / (radius[g] + c[m, o, g])
                    u = w * w * inverse * inverse if w != 0 else one - one
                    s_sum[g] += u
                    t_sum[g] += u * inverse
            iterations = max(iterations, iteration + 1)
            if _newton(radius, previous, s_sum, t_sum, keep, iteration, tolerance):
                break
        for o in range(rows):
            for g in range(groups):
                r = radius[g]
                x[m, o, g] = x[m, o, g] * (r / (r + c[m, o, g])) if not r <= 0 else one - one
    return iterations


@_sums
def group_rows(x, q, c, kind, a, e, ac, t1, one, max_iter, tolerance):
    """The group prox of ``x`` seen as ``(models, outer, groups, inner)``: group g of a
    model is its ``[:, g, :]``, runs of ``inner`` contiguous elements."""
    models, outer, groups, inner = x.shape
    iterations = 0
    for m in range(models):
        total = np.zeros(groups, x.dtype)
        at_zero = np.zeros(groups, x.dtype)
        weighted = np.zeros(groups, x.dtype)
        for o in range(outer):
            for g in range(groups):
                s0 = s1 = s2 = one - one
                for i in range(inner):
                    w, cc = _threshold(x[m, o, g, i], q[m, o, g, i], kind, a, e, ac, t1, one)
                    x[m, o, g, i] = w
                    c[m, o, g, i] = cc
                    square = w * w
                    s0 += square
                    s1 += square / (cc * cc) if square != 0 else square
                    s2 += square * cc
                total[g] += s0
                at_zero[g] += s1
                weighted[g] += s2
        radius, keep = _start(total, at_zero, weighted)
        s_sum = np.zeros(groups, x.dtype)
        t_sum = np.zeros(groups, x.dtype)
        previous = np.zeros(groups, x.dtype)
        for iteration in range(max_iter):
            for g in range(groups):
                s0 = s1 = one - one
                r = radius[g]
                for o in range(outer):
                    for i in range(inner):
                        w = x[m, o, g, i]
                        inverse = one / (r + c[m, o, g, i])
                        u = w * w * inverse * inverse if w != 0 else one - one
                        s0 += u
                        s1 += u * inverse
                s_sum[g] = s0
                t_sum[g] = s1
            iterations = max(iterations, iteration + 1)
            if _newton(radius, previous, s_sum, t_sum, keep, iteration, tolerance):
                break
        for o in range(outer):
            for g in range(groups):
                r = radius[g]
                for i in range(inner):
                    x[m, o, g, i] = x[m, o, g, i] * (r / (r + c[m, o, g, i])) if not r <= 0 else one - one
    return iterations


@_sums
def stacked_groups(x, q, c, bounds, thresholds, t1, one, max_iter, tolerance):
    """The group prox with per-element steps (kind 3) of parts of a stack of flat
    weights ``x`` ``(models, parameters)``, ``q`` its steps: part k starts at column
    ``bounds[k, 0]`` and each model's part is ``bounds[k, 1:]`` = ``(outer, groups,
    inner)``, contiguous; ``thresholds[k]`` its group threshold's scale·√|g|, ``t1`` the
    l1 threshold's. One call for all the parts: no Python between them."""
    models, item, zero = x.shape[0], x.itemsize, one - one
    for k in range(bounds.shape[0]):
        start, outer, groups, inner = bounds[k, 0], bounds[k, 1], bounds[k, 2], bounds[k, 3]
        if inner > 1:  # groups of rows: (models, outer, groups, inner)
            shape = (models, outer, groups, inner)
            xs, qs, cs = _part(x, q, c, start, shape, (x.strides[0], groups * inner * item, inner * item, item))
            group_rows(xs, qs, cs, 3, one, zero, thresholds[k], t1, one, max_iter, tolerance)
        else:  # groups of columns: (models, rows, groups)
            columns = (models, outer, groups)
            xc, qc, cc = _part(x, q, c, start, columns, (x.strides[0], groups * item, item))
            group_columns(xc, qc, cc, 3, one, zero, thresholds[k], t1, one, max_iter, tolerance)


@_inline
def _part(x, q, c, start, shape, strides):
    """The part of ``x`` and ``q`` from column ``start`` seen as ``shape`` (each model's
    part contiguous), and ``c``'s first entries as its scratch."""
    size = 1
    for n in shape:
        size *= n
    return (
        as_strided(x[:, start:], shape=shape, strides=strides),
        as_strided(q[:, start:], shape=shape, strides=strides),
        c[:size].reshape(shape),
    )


@_exact
def _start(total, at_zero, weighted):
    """Which groups survive (``‖w/c‖ > 1``) and their Newton start, the lower bound
    ``‖w‖ − Σw²c/Σw²`` of the root (see ``functional._group_shrink_scaled_``)."""
    keep = ~(at_zero <= 1)  # (a NaN weight keeps its group: the NaN goes through, as in torch)
    radius = np.zeros_like(total)
    for g in range(total.shape[0]):
        if keep[g]:
            radius[g] = max(math.sqrt(total[g]) - weighted[g] / total[g], 0)
    return radius, keep


@_exact
def _newton(radius, previous, s_sum, t_sum, keep, iteration, tolerance):
    """One Newton step ``r ← r + S(√S − 1)/T`` of every surviving group; whether all
    have converged: every step below the tolerance, or (after the second step) the next
    one predicted below it by quadratic convergence with a margin of 4, as
    ``functional._converged_next`` decides."""
    moving = False
    predicted = True
    for g in range(radius.shape[0]):
        delta = s_sum[g] * (math.sqrt(s_sum[g]) - 1) / t_sum[g] if keep[g] else radius[g] - radius[g]
        radius[g] += delta
        limit = tolerance * radius[g]
        step = abs(delta)
        before = abs(previous[g])
        if step > limit:
            moving = True
            if iteration == 0 or not (
                before > limit and step < 0.5 * before and 4 * (step / (before * before)) * step * step <= limit
            ):
                predicted = False
        previous[g] = delta
    return not moving or predicted


@_exact
def adam_stack(p, m, v, g, s, counts, rate, lam, betas, lr, w1, beta2, w2, eps, l1, l2, hold, one):
    """torch's Adam step on each model's row of stacked flat weights ``p`` ``(models,
    parameters)`` (``m``, ``v`` its moments, ``g`` its gradient), then the elementwise
    prox with the per-element step it took, which ``s`` gets. Per model: ``counts`` its
    step count (float64, one added here), ``rate`` the learning rate's factor, ``lam`` λ
    (the step's factor in the prox), ``(models, 1)``. ``betas``: (β₁, β₂) in float64;
    ``w1``, ``beta2``, ``w2``: 1 − β₁, β₂ and 1 − β₂ in the weights' dtype. Per
    parameter: ``l1``, ``l2`` the L1 and L2 coefficients at λ = 1; per entry ``hold``,
    0/1 multiplied in last. An empty array is none. torch's operations in its order;
    no branch in the loop over the parameters (which it would not vectorize): a missing
    coefficient is a zero, whose prox leaves the weight as it is."""
    models, n = p.shape
    l1 = l1 if l1.shape[0] else np.zeros(n, p.dtype)
    l2 = l2 if l2.shape[0] else np.zeros(n, p.dtype)
    corrections = np.empty(2, p.dtype)  # 1 − β₁ᵗ and √(1 − β₂ᵗ), formed in float64, then in p's dtype
    for k in range(models):
        counts[k] += 1.0
        corrections[0] = 1.0 - betas[0] ** counts[k]
        corrections[1] = math.sqrt(1.0 - betas[1] ** counts[k])
        b1, r2, lk = corrections[0], corrections[1], lam[k, 0]
        factor = rate[k, 0] if rate.shape[0] else one
        for j in range(n):
            gj = g[k, j]
            mj = m[k, j] + w1 * (gj - m[k, j])  # lerp_(g, 1 − β₁)
            vj = v[k, j] * beta2 + w2 * gj * gj  # mul_(β₂).addcmul_(g, g, 1 − β₂)
            m[k, j] = mj
            v[k, j] = vj
            step = (one / (math.sqrt(vj) / r2 + eps)) * lr * factor
            w = p[k, j] - step * mj / b1
            step = step * lk
            t = step * l1[j]  # w − clamp(w, −t, t)
            w = w - min(max(w, -t), t)
            p[k, j] = w / ((step * l2[j]) * 2 + one)
            s[k, j] = step
    if hold.shape[0]:
        for k in range(models):
            for j in range(n):
                p[k, j] = p[k, j] * hold[k, j]


@_sums
def stacked_values(x, bounds, coefficients):
    """Each model's penalty value in float64, ``(models,)``, over pieces of stacked flat
    weights ``x`` ``(models, parameters)``: piece k starts at column ``bounds[k, 0]``,
    each model's seen as ``(outer, groups, inner)`` = ``bounds[k, 1:]`` (group g its
    ``[:, g, :]``); it adds ``coefficients[k]`` = (a, b, c) times Σ_g‖w_g‖, Σ|w|, Σw²."""
    models = x.shape[0]
    out = np.zeros(models)
    for k in range(bounds.shape[0]):
        start, outer, groups, inner = bounds[k, 0], bounds[k, 1], bounds[k, 2], bounds[k, 3]
        a, b, c = coefficients[k, 0], coefficients[k, 1], coefficients[k, 2]
        squares = np.zeros(groups)
        for mdl in range(models):
            squares[:] = 0.0
            absolute = 0.0
            for o in range(outer):
                for gr in range(groups):
                    base = start + (o * groups + gr) * inner
                    total = 0.0
                    for i in range(inner):
                        w = np.float64(x[mdl, base + i])
                        total += w * w
                        absolute += abs(w)
                    squares[gr] += total
            norms = 0.0
            if a != 0:
                for gr in range(groups):
                    norms += math.sqrt(squares[gr])
            out[mdl] += a * norms + b * absolute + c * squares.sum()
    return out

# mypy: disable-error-code="name-defined"
"""The Triton kernels behind :mod:`shrinkage._triton` (imported only where Triton is).

Kept apart because Triton resolves the functions a kernel calls among its module's
globals. See :mod:`shrinkage._triton` for what they compute and how they are launched.
"""

import triton
import triton.language as tl


@triton.jit
def step_of(q_ptr, off, mask, a, e, KIND: tl.constexpr):
    """The per-element step of kind KIND at ``off`` (float32, the shape of ``off``)."""
    if KIND == 0:
        s = a + tl.zeros(off.shape, dtype=tl.float32)
    else:
        q = tl.load(q_ptr + off, mask=mask, other=1.0).to(tl.float32)
        if KIND == 1:
            s = tl.div_rn(a, tl.sqrt_rn(q) + e)
        elif KIND == 2:
            s = tl.div_rn(a, q + e)
        else:
            s = a * q
    return s


@triton.jit
def step_scalars(t, a_table, e_table, a_value, e_value, PER_TENSOR: tl.constexpr):
    """Tensor t's step numerator and epsilon: from the tables, or the values all share."""
    if PER_TENSOR:
        a = tl.load(a_table + t)
        e = tl.load(e_table + t)
    else:
        a = a_value
        e = e_value
    return a, e


@triton.jit
def elementwise_block(w_ptr, q_ptr, index, mask, a, e, l1, l2, KIND: tl.constexpr, MASKED: tl.constexpr):
    """One block: load, prox, store (unmasked for a whole block, so loads vectorize).
    KIND 4 is the gradient of mode ``gradient`` instead: ``g += l1·sign(w) + 2·l2·w``,
    with ``g`` at ``q_ptr``."""
    if MASKED:  # noqa: SIM108 (a constexpr branch, as Triton compiles it)
        x = tl.load(w_ptr + index, mask=mask, other=0.0).to(tl.float32)
    else:
        x = tl.load(w_ptr + index).to(tl.float32)
    if KIND == 4:
        if MASKED:
            g = tl.load(q_ptr + index, mask=mask, other=0.0).to(tl.float32)
        else:
            g = tl.load(q_ptr + index).to(tl.float32)
        sign = tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, x))  # sign(0) = 0; NaN stays NaN
        g = g + l1 * sign + (2.0 * l2) * x
        if MASKED:
            tl.store(q_ptr + index, g.to(q_ptr.dtype.element_ty), mask=mask)
        else:
            tl.store(q_ptr + index, g.to(q_ptr.dtype.element_ty))
    else:
        if KIND == 1 or KIND == 2:
            # in the optimizer's metric: soft(x·d, a·l1) / (d + 2a·l2), d the denominator
            if MASKED:
                q = tl.load(q_ptr + index, mask=mask, other=1.0).to(tl.float32)
            else:
                q = tl.load(q_ptr + index).to(tl.float32)
            d = tl.sqrt_rn(q) + e if KIND == 1 else q + e
            y = x * d
            t1 = a * l1
            y = tl.where(y > t1, y - t1, tl.where(y < -t1, y + t1, 0.0))
            x = tl.div_rn(y, d + 2.0 * (a * l2))
        else:
            s = step_of(q_ptr, index, mask, a, e, KIND)
            t1 = s * l1
            if KIND == 0:
                x = tl.where(x > t1, x - t1, tl.where(x < -t1, x + t1, 0.0))
            else:
                x = x - tl.minimum(tl.maximum(x, -t1), t1)
            x = tl.div_rn(x, 1.0 + 2.0 * (s * l2))
        if MASKED:
            tl.store(w_ptr + index, x.to(w_ptr.dtype.element_ty), mask=mask)
        else:
            tl.store(w_ptr + index, x.to(w_ptr.dtype.element_ty))


@triton.jit
def elementwise(
    w_base,
    q_base,
    w_offsets,
    q_offsets,
    numels,
    first_block,
    block_tensor,
    a_table,
    e_table,
    a_value,
    e_value,
    l1,
    l2,
    KIND: tl.constexpr,
    PER_TENSOR: tl.constexpr,
    ALIGN: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # tensor t starts w_offsets[t] elements after w_base (its state q_offsets[t] after
    # q_base): pointer arguments whose alignment Triton knows, offsets that are
    # multiples of ALIGN elements (16 bytes) when the launcher found them so
    pid = tl.program_id(0)
    t = tl.load(block_tensor + pid)
    n = tl.load(numels + t)
    w_delta = tl.load(w_offsets + t)
    q_delta = tl.load(q_offsets + t)
    if ALIGN > 1:
        w_delta = tl.multiple_of(w_delta, ALIGN)
        q_delta = tl.multiple_of(q_delta, ALIGN)
    start = (pid - tl.load(first_block + t)).to(tl.int64) * BLOCK
    w_ptr = w_base + w_delta + start
    q_ptr = q_base + q_delta + start
    a, e = step_scalars(t, a_table, e_table, a_value, e_value, PER_TENSOR)
    index = tl.arange(0, BLOCK)
    if start + BLOCK <= n:
        elementwise_block(w_ptr, q_ptr, index, index < BLOCK, a, e, l1, l2, KIND, False)
    else:
        elementwise_block(w_ptr, q_ptr, index, index < n - start, a, e, l1, l2, KIND, True)


@triton.jit
def group_element(w_ptr, q_ptr, off, mask, a, e, scale, l1, weight, KIND: tl.constexpr):
    """One block of a group: the weights (soft-thresholded by ``l1·s`` first) and
    ``c = λ·s·√|g|``, both float32."""
    x = tl.load(w_ptr + off, mask=mask, other=0.0).to(tl.float32)
    if KIND == 1 or KIND == 2:
        q = tl.load(q_ptr + off, mask=mask, other=1.0).to(tl.float32)
        d = tl.sqrt_rn(q) + e if KIND == 1 else q + e
        if l1 > 0:
            y = x * d
            t1 = a * l1
            x = tl.div_rn(tl.where(y > t1, y - t1, tl.where(y < -t1, y + t1, 0.0)), d)
        c = tl.div_rn((a * scale) * weight, d)
    else:
        s = step_of(q_ptr, off, mask, a, e, KIND)
        if l1 > 0:
            t1 = s * l1
            if KIND == 0:
                x = tl.where(x > t1, x - t1, tl.where(x < -t1, x + t1, 0.0))
            else:
                x = x - tl.minimum(tl.maximum(x, -t1), t1)
        c = (s * scale) * weight
    return x, c


@triton.jit
def group_offsets(base, j, gs, inner, stride):
    """Offsets of elements ``j`` (rows of the tile) of groups ``gs`` (its columns)."""
    return base + (j // inner).to(tl.int64)[:, None] * stride + (j % inner)[:, None] + gs.to(tl.int64)[None, :] * inner


@triton.jit
def group_sums(
    w_ptr,
    q_ptr,
    base,
    gs,
    live,
    begin,
    end,
    inner,
    stride,
    a,
    e,
    scale,
    l1,
    weight,
    radius,
    KIND: tl.constexpr,
    ROWS: tl.constexpr,
    COLS: tl.constexpr,
):
    """Per group of the tile, over its elements begin..end: Σ w²/(r + c)², Σ w²/(r + c)³,
    Σ w², Σ w²·c."""
    s_sum = tl.zeros((COLS,), dtype=tl.float32)
    t_sum = tl.zeros((COLS,), dtype=tl.float32)
    total = tl.zeros((COLS,), dtype=tl.float32)
    weighted = tl.zeros((COLS,), dtype=tl.float32)
    start = begin
    while start < end:  # (a while loop: Triton's interpreter wants constant range bounds)
        j = start + tl.arange(0, ROWS)
        start += ROWS
        mask = (j < end)[:, None] & live[None, :]
        off = group_offsets(base, j, gs, inner, stride)
        x, c = group_element(w_ptr, q_ptr, off, mask, a, e, scale, l1, weight, KIND)
        square = x * x
        inverse = tl.div_rn(1.0, radius[None, :] + c)
        # a zero weight adds nothing, also where r + c = 0 (a zero step: 0·∞ would be NaN)
        work = tl.where(square > 0, square * inverse * inverse, 0.0)
        s_sum += tl.sum(work, axis=0)
        t_sum += tl.sum(tl.where(square > 0, work * inverse, 0.0), axis=0)
        total += tl.sum(square, axis=0)
        weighted += tl.sum(square * c, axis=0)
    return s_sum, t_sum, total, weighted


@triton.jit
def group(
    w_table,
    q_table,
    first_program,
    program_tensor,
    shapes,
    weights,
    a_table,
    e_table,
    a_value,
    e_value,
    scale,
    l1,
    tolerance,
    max_iter,
    KIND: tl.constexpr,
    PER_TENSOR: tl.constexpr,
    W_TYPE: tl.constexpr,
    Q_TYPE: tl.constexpr,
    ROWS: tl.constexpr,
    COLS: tl.constexpr,
):
    # tensor t is viewed as (models, outer, groups, inner): group g of model k holds
    # elements k·outer·groups·inner + o·groups·inner + g·inner + i. A program takes COLS
    # neighbouring groups of one model (a tile whose rows are coalesced for column groups)
    pid = tl.program_id(0)
    t = tl.load(program_tensor + pid)
    local = pid - tl.load(first_program + t)
    outer = tl.load(shapes + 3 * t)
    groups = tl.load(shapes + 3 * t + 1)
    inner = tl.load(shapes + 3 * t + 2)
    tiles = (groups + COLS - 1) // COLS
    model = local // tiles
    gs = (local % tiles) * COLS + tl.arange(0, COLS)
    live = gs < groups
    stride = groups * inner
    base = model.to(tl.int64) * outer * stride
    size = outer * inner
    w_ptr = tl.load(w_table + t).to(tl.pointer_type(W_TYPE))
    q_ptr = tl.load(q_table + t).to(tl.pointer_type(Q_TYPE))
    weight = tl.load(weights + t)
    a, e = step_scalars(t, a_table, e_table, a_value, e_value, PER_TENSOR)
    zero = tl.zeros((COLS,), dtype=tl.float32)
    s_sum, t_sum, total, weighted = group_sums(
        w_ptr, q_ptr, base, gs, live, 0, size, inner, stride, a, e, scale, l1, weight, zero, KIND, ROWS, COLS
    )
    keep = live & (s_sum > 1.0)  # ‖w/s‖ > √|g|: the group survives
    # Newton from a lower bound of the root rises monotonically to it (see functional)
    radius = tl.where(keep, tl.maximum(tl.sqrt_rn(total) - tl.div_rn(weighted, tl.where(keep, total, 1.0)), 0.0), 0.0)
    going = tl.max(keep.to(tl.int32), axis=0) > 0
    iteration = 0
    while going & (iteration < max_iter):
        s_sum, t_sum, total, weighted = group_sums(
            w_ptr, q_ptr, base, gs, live, 0, size, inner, stride, a, e, scale, l1, weight, radius, KIND, ROWS, COLS
        )
        delta = tl.where(keep, tl.div_rn(s_sum * (tl.sqrt_rn(s_sum) - 1.0), tl.where(keep, t_sum, 1.0)), 0.0)
        radius += delta
        going = tl.max((delta > tolerance * radius).to(tl.int32), axis=0) > 0
        iteration += 1
    group_apply(w_ptr, q_ptr, base, gs, live, 0, size, inner, stride, a, e, scale, l1, weight, radius, KIND, ROWS, COLS)


@triton.jit
def group_apply(
    w_ptr,
    q_ptr,
    base,
    gs,
    live,
    begin,
    end,
    inner,
    stride,
    a,
    e,
    scale,
    l1,
    weight,
    radius,
    KIND: tl.constexpr,
    ROWS: tl.constexpr,
    COLS: tl.constexpr,
):
    """``w ← w·r/(r + c)`` over the tile's elements begin..end (soft-thresholded first)."""
    start = begin
    while start < end:
        j = start + tl.arange(0, ROWS)
        start += ROWS
        mask = (j < end)[:, None] & live[None, :]
        off = group_offsets(base, j, gs, inner, stride)
        x, c = group_element(w_ptr, q_ptr, off, mask, a, e, scale, l1, weight, KIND)
        shrunk = radius[None, :] + c
        x = tl.where(shrunk > 0, x * tl.div_rn(radius[None, :], shrunk), x)  # a zero step leaves w
        tl.store(w_ptr + off, x.to(w_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------- tall groups
# A group of many elements (a column of an embedding or an output layer: 50 000 rows)
# would keep one program busy long after the others finish. Its elements are split into
# slabs, one program each: every Newton iteration is a launch that writes each slab's
# partial sums, and a launch that adds them (in a fixed order: the same result every
# run) and moves each group's radius. A group that has converged is skipped.


@triton.jit
def tall_tile(
    pid,
    w_table,
    q_table,
    first_program,
    program_tensor,
    shapes,
    slabs,
    group_first,
    weights,
    a_table,
    e_table,
    a_value,
    e_value,
    PER_TENSOR: tl.constexpr,
    W_TYPE: tl.constexpr,
    Q_TYPE: tl.constexpr,
    COLS: tl.constexpr,
    SLAB: tl.constexpr,
):
    """What program ``pid`` works on: its tensor's pointers and step, the tile's groups
    (their global indices) and the elements begin..end of its slab."""
    t = tl.load(program_tensor + pid)
    local = pid - tl.load(first_program + t)
    outer = tl.load(shapes + 3 * t)
    groups = tl.load(shapes + 3 * t + 1)
    inner = tl.load(shapes + 3 * t + 2)
    n_slabs = tl.load(slabs + t)
    slab = local % n_slabs
    rest = local // n_slabs
    tiles = (groups + COLS - 1) // COLS
    model = rest // tiles
    gs = (rest % tiles) * COLS + tl.arange(0, COLS)
    live = gs < groups
    stride = groups * inner
    base = model.to(tl.int64) * outer * stride
    size = outer * inner
    begin = slab * SLAB
    end = tl.minimum(begin + SLAB, size)
    index = tl.load(group_first + t) + model * groups + gs
    w_ptr = tl.load(w_table + t).to(tl.pointer_type(W_TYPE))
    q_ptr = tl.load(q_table + t).to(tl.pointer_type(Q_TYPE))
    a, e = step_scalars(t, a_table, e_table, a_value, e_value, PER_TENSOR)
    weight = tl.load(weights + t)
    return w_ptr, q_ptr, base, gs, live, begin, end, inner, stride, a, e, weight, index, slab


@triton.jit
def tall_partial(
    w_table,
    q_table,
    first_program,
    program_tensor,
    shapes,
    slabs,
    group_first,
    weights,
    a_table,
    e_table,
    a_value,
    e_value,
    scale,
    l1,
    radii,
    going,
    partial,
    n_groups,
    FIRST: tl.constexpr,
    KIND: tl.constexpr,
    PER_TENSOR: tl.constexpr,
    W_TYPE: tl.constexpr,
    Q_TYPE: tl.constexpr,
    ROWS: tl.constexpr,
    COLS: tl.constexpr,
    SLAB: tl.constexpr,
):
    """One slab's partial sums for its tile's groups (at r = 0 when FIRST), into
    ``partial[slab, k, group]`` for k = S, T, Σw², Σw²c."""
    w_ptr, q_ptr, base, gs, live, begin, end, inner, stride, a, e, weight, index, slab = tall_tile(
        tl.program_id(0),
        w_table,
        q_table,
        first_program,
        program_tensor,
        shapes,
        slabs,
        group_first,
        weights,
        a_table,
        e_table,
        a_value,
        e_value,
        PER_TENSOR,
        W_TYPE,
        Q_TYPE,
        COLS,
        SLAB,
    )
    if FIRST:
        active = live
        radius = tl.zeros((COLS,), dtype=tl.float32)
    else:
        active = live & (tl.load(going + index, mask=live, other=0) != 0)
        radius = tl.load(radii + index, mask=live, other=0.0)
    if tl.max(active.to(tl.int32), axis=0) > 0:
        s_sum, t_sum, total, weighted = group_sums(
            w_ptr, q_ptr, base, gs, active, begin, end, inner, stride, a, e, scale, l1, weight, radius, KIND, ROWS, COLS
        )
        row = partial + slab.to(tl.int64) * 4 * n_groups + index
        tl.store(row, s_sum, mask=active)
        tl.store(row + n_groups, t_sum, mask=active)
        tl.store(row + 2 * n_groups, total, mask=active)
        tl.store(row + 3 * n_groups, weighted, mask=active)


@triton.jit
def tall_update(
    partial, radii, going, group_slabs, n_groups, max_slabs, tolerance, FIRST: tl.constexpr, BLOCK: tl.constexpr
):
    """Each group's sums over its slabs, in slab order, then its start (FIRST) or its
    Newton step, as the one-program kernel does."""
    g = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = g < n_groups
    n = tl.load(group_slabs + g, mask=live, other=0)
    if FIRST:  # noqa: SIM108 (a constexpr branch, as Triton compiles it)
        moving = live
    else:
        moving = live & (tl.load(going + g, mask=live, other=0) != 0)
    s_sum = tl.zeros((BLOCK,), dtype=tl.float32)
    t_sum = tl.zeros((BLOCK,), dtype=tl.float32)
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    weighted = tl.zeros((BLOCK,), dtype=tl.float32)
    slab = tl.zeros((), dtype=tl.int64)
    while slab < max_slabs:
        take = moving & (slab < n)
        row = partial + slab * 4 * n_groups + g
        s_sum += tl.load(row, mask=take, other=0.0)
        t_sum += tl.load(row + n_groups, mask=take, other=0.0)
        total += tl.load(row + 2 * n_groups, mask=take, other=0.0)
        weighted += tl.load(row + 3 * n_groups, mask=take, other=0.0)
        slab += 1
    if FIRST:
        keep = live & (s_sum > 1.0)
        start = tl.maximum(tl.sqrt_rn(total) - tl.div_rn(weighted, tl.where(keep, total, 1.0)), 0.0)
        tl.store(radii + g, tl.where(keep, start, 0.0), mask=live)
        tl.store(going + g, keep.to(tl.int32), mask=live)
    else:
        radius = tl.load(radii + g, mask=live, other=0.0)
        delta = tl.where(moving, tl.div_rn(s_sum * (tl.sqrt_rn(s_sum) - 1.0), tl.where(moving, t_sum, 1.0)), 0.0)
        radius += delta
        tl.store(radii + g, radius, mask=live)
        tl.store(going + g, (moving & (delta > tolerance * radius)).to(tl.int32), mask=live)


@triton.jit
def tall_apply(
    w_table,
    q_table,
    first_program,
    program_tensor,
    shapes,
    slabs,
    group_first,
    weights,
    a_table,
    e_table,
    a_value,
    e_value,
    scale,
    l1,
    radii,
    KIND: tl.constexpr,
    PER_TENSOR: tl.constexpr,
    W_TYPE: tl.constexpr,
    Q_TYPE: tl.constexpr,
    ROWS: tl.constexpr,
    COLS: tl.constexpr,
    SLAB: tl.constexpr,
):
    """``w ← w·r/(r + c)`` over one slab of its tile's groups."""
    w_ptr, q_ptr, base, gs, live, begin, end, inner, stride, a, e, weight, index, _ = tall_tile(
        tl.program_id(0),
        w_table,
        q_table,
        first_program,
        program_tensor,
        shapes,
        slabs,
        group_first,
        weights,
        a_table,
        e_table,
        a_value,
        e_value,
        PER_TENSOR,
        W_TYPE,
        Q_TYPE,
        COLS,
        SLAB,
    )
    radius = tl.load(radii + index, mask=live, other=0.0)
    group_apply(
        w_ptr, q_ptr, base, gs, live, begin, end, inner, stride, a, e, scale, l1, weight, radius, KIND, ROWS, COLS
    )

"""The kernels of :mod:`shrinkage._triton` and :mod:`shrinkage._numba` against the torch
code, case by case.

Used by ``tests/test_cuda.py`` (on a GPU), by ``tests/test_kernels.py`` (on the CPU,
through Triton's interpreter in a child process) and by ``tests/test_numba.py``. Each
case runs one prox twice on copies of the same tensors: once as
:mod:`shrinkage.functional` dispatches it on ``device`` (the kernel) and once through
the torch code on the CPU in float32 (float64 for float64 tensors: the reference), and
returns the largest error in units of the tolerance, so that a value at most 1 passes:

- float32 (float64): ``|kernel − reference| <= 1e-6 (1e-12) · max|w|`` element by
  element, and exactly the same elements are zero;
- bfloat16 / float16: within one unit in the last place of the stored value (the
  reference rounded once from float32), and zeros identical.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from shrinkage import L1, L2, ElasticNet, GroupLasso, SparseGroupLasso
from shrinkage import functional as F


@contextmanager
def torch_path() -> Iterator[None]:
    """Within the block the proxes run the torch code, also on CUDA."""
    before = os.environ.get("SHRINKAGE_KERNELS")
    os.environ["SHRINKAGE_KERNELS"] = "torch"
    try:
        yield
    finally:
        if before is None:
            del os.environ["SHRINKAGE_KERNELS"]
        else:
            os.environ["SHRINKAGE_KERNELS"] = before


PENALTIES: dict[str, Callable[[], object]] = {
    "l1": lambda: L1(0.05),
    "l2": lambda: L2(0.3),
    "elastic_net": lambda: ElasticNet(0.05, 0.6),
    "group_input": lambda: GroupLasso(0.05, groups="input"),
    "group_unit": lambda: GroupLasso(0.08, groups="unit"),
    "sparse_group": lambda: SparseGroupLasso(0.04, 0.5, groups="input"),
}

STEP_KINDS = ("sgd", "sgd_tensor", "adam", "adam_device", "adamax", "per_element")

SHAPES = [(7, 5), (33, 130), (3, 4, 3, 3), (1, 9)]


def _steps(kind: str, tensors: list[torch.Tensor], generator: torch.Generator) -> list:
    device = tensors[0].device
    out: list = []
    for x in tensors:
        state = (torch.rand(x.shape, generator=generator, dtype=torch.float32) * 4e-4).to(device=device, dtype=x.dtype)
        if kind == "sgd":
            out.append(0.7)
        elif kind == "sgd_tensor":
            out.append(torch.tensor(0.7, device=device))
        elif kind == "adam":
            out.append(F.RootStep(0.01, state, 1e-8))
        elif kind == "adam_device":
            out.append(F.RootStep(torch.tensor(0.009, device=device), state, torch.tensor(2e-8, device=device)))
        elif kind == "adamax":
            out.append(F.ScaledStep(0.01, state.sqrt() + 1e-3))
        else:
            out.append((torch.rand(x.shape, generator=generator) * 0.5 + 0.2).to(device=device, dtype=x.dtype))
    return out


def _to(steps: list, device: str, dtype: torch.dtype = torch.float32) -> list:
    def move(v):  # (0-d numerators and ε keep their dtype, as the kernel reads them)
        if not isinstance(v, torch.Tensor):
            return v
        return v.to(device=device) if v.ndim == 0 else v.to(device=device, dtype=dtype)

    out = []
    for s in steps:
        if isinstance(s, F.RootStep):
            out.append(F.RootStep(move(s.numerator), move(s.square), move(s.eps)))
        elif isinstance(s, F.ScaledStep):
            out.append(F.ScaledStep(move(s.numerator), move(s.denominator)))
        else:
            out.append(move(s))
    return out


@contextmanager
def split_groups() -> Iterator[None]:
    """Within the block every group counts as tall and is split into small slabs (the
    path that large embeddings and output layers take), so that small tensors test it."""
    from shrinkage import _triton

    names = ("_TALL", "_TILE_ELEMENTS", "_GROUP_BLOCK", "_SLAB_CHUNKS")
    before = {n: getattr(_triton, n) for n in names}
    for name, value in zip(names, (8, 64, 64, 1)):
        setattr(_triton, name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            setattr(_triton, name, value)


def error(
    penalty_name: str,
    kind: str,
    dtype: torch.dtype,
    device: str,
    *,
    stacked: bool = False,
    tall: bool = False,
    seed: int = 0,
) -> float:
    """The case's largest error in units of its tolerance (module docstring); <= 1 passes."""
    generator = torch.Generator().manual_seed(seed)
    penalty = PENALTIES[penalty_name]()
    shapes = [(3, *s) for s in SHAPES[:2]] if stacked else SHAPES
    values = [torch.randn(s, generator=generator) * 0.1 for s in shapes]
    for v in values:  # an input and a unit group near zero, so that some groups are cut
        w = v.unsqueeze(0) if not stacked else v
        w[:, :, 0] *= 0.01
        w[:, 0] *= 0.01
    tensors = [v.to(device=device, dtype=dtype).clone() for v in values]
    named = [(f"w{i}", torch.empty(s[1:] if stacked else s)) for i, s in enumerate(shapes)]
    layouts = penalty.layouts(named)
    if stacked and layouts is not None:
        layouts = [layout.stacked() for layout in layouts]
    steps = _steps(kind, tensors, generator)
    # the reference: the torch code, on the CPU, in float32 (or float64), from the same stored values
    exact = torch.float64 if dtype == torch.float64 else torch.float32
    reference = [t.detach().to("cpu", exact).clone() for t in tensors]
    with torch_path():
        penalty.prox_(reference, layouts, step=_to(steps, "cpu", exact))
    assert F.kernels_apply(tensors, steps, layouts), "the kernels do not take this case"
    if tall:
        with split_groups():
            penalty.prox_(tensors, layouts, step=steps)
    else:
        penalty.prox_(tensors, layouts, step=steps)
    worst = 0.0
    for got, want, before in zip(tensors, reference, values):
        got = got.to("cpu")
        if not torch.equal(got == 0, want.to(dtype) == 0):
            return float("inf")
        if dtype in (torch.float32, torch.float64):
            tolerance = (1e-6 if dtype == torch.float32 else 1e-12) * float(before.abs().max())
            worst = max(worst, float((got - want).abs().max()) / tolerance)
        else:
            rounded = want.to(dtype)
            # one unit in the last place of the reference's stored value
            magnitude = rounded.float().abs().clamp_min(torch.finfo(dtype).tiny)
            ulp = torch.finfo(dtype).eps * torch.exp2(torch.floor(torch.log2(magnitude)))
            worst = max(worst, float(((got.float() - rounded.float()).abs() / ulp).max()))
    return worst


def zero_step_changes_nothing(device: str, *, tall: bool = False) -> bool:
    """A zero step (a learning rate of 0 on the device, during a warm-up) leaves the
    weights as they are (to rounding), exact zeros included, in the group kernels: no
    0·∞ turns them into NaN."""
    generator = torch.Generator().manual_seed(1)
    penalty = PENALTIES["sparse_group"]()
    x = torch.randn(33, 130, generator=generator).to(device)
    x[:, 3] = 0.0  # a whole zero group and zero elements
    x[5, :7] = 0.0
    before = x.clone()
    state = (torch.rand(x.shape, generator=generator) * 1e-4).to(device)
    step = [F.RootStep(torch.zeros((), device=device), state, 1e-8)]
    layouts = penalty.layouts([("w", torch.empty(33, 130))])
    if tall:
        with split_groups():
            penalty.prox_([x], layouts, step=step)
    else:
        penalty.prox_([x], layouts, step=step)
    # (x·d)/d in the optimizer's metric may round by one unit: the same up to that
    return bool(
        torch.isfinite(x).all() and torch.equal(x == 0, before == 0) and torch.allclose(x, before, rtol=1e-6, atol=0)
    )


OPTIMIZERS: dict[str, Callable] = {
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
    "adam_fused": lambda ps: torch.optim.Adam(ps, lr=1e-2, fused=True),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-2),
}


def training_error(penalty_name: str, optimizer: str, device: str, steps: int = 5, mode: str = "proximal") -> float:
    """A few steps of a regularized Adam/SGD/RMSprop loop (``mode`` ``proximal`` or
    ``gradient``), kernels against the torch code, as the largest difference of a weight over 1e-5 · its largest magnitude (also
    the steps' own objects: Adam's ``RootSteps`` with step counts on the device)."""
    from shrinkage import Regularizer

    def train(kernels: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 20), torch.nn.Tanh(), torch.nn.Linear(20, 2)).to(device)
        opt = OPTIMIZERS[optimizer](model.parameters())
        Regularizer(model, PENALTIES[penalty_name](), mode=mode).attach(opt)
        X, y = torch.randn(32, 6, device=device), torch.randn(32, 2, device=device)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(X), y).backward()
            if kernels:
                opt.step()
            else:
                with torch_path():
                    opt.step()
        return [p.detach().cpu() for p in model.parameters()]

    worst = 0.0
    for a, b in zip(train(True), train(False)):
        if not torch.equal(a == 0, b == 0):
            return float("inf")
        worst = max(worst, float((a - b).abs().max()) / (1e-5 * float(b.abs().max())))
    return worst


def all_cases() -> Iterator[tuple[str, str, torch.dtype, bool, bool]]:
    """(penalty, step kind, dtype, stacked, tall) of every case."""
    for penalty in PENALTIES:
        for kind in STEP_KINDS:
            for dtype in (torch.float32, torch.bfloat16):
                yield penalty, kind, dtype, False, False
        yield penalty, "per_element", torch.float32, True, False  # the batched engine's stacked models
        yield penalty, "adam", torch.float32, True, False
        if penalty.startswith(("group", "sparse")):  # groups split into slabs
            yield penalty, "adam", torch.float32, False, True
            yield penalty, "sgd", torch.bfloat16, False, True
            yield penalty, "adam_device", torch.float32, True, True


def run(device: str) -> list[str]:
    """Every case on ``device``; the failures as lines (empty when all pass)."""
    failures = []
    for penalty, kind, dtype, stacked, tall in all_cases():
        value = error(penalty, kind, dtype, device, stacked=stacked, tall=tall)
        if not value <= 1.0:
            failures.append(f"{penalty} {kind} {dtype} stacked={stacked} tall={tall}: error {value:.3g} tolerances")
    return failures


if __name__ == "__main__":  # python tests/kernel_cases.py cpu  (with TRITON_INTERPRET=1)
    import sys

    problems = run(sys.argv[1] if len(sys.argv) > 1 else "cuda")
    print("\n".join(problems) if problems else "all kernel cases pass")
    sys.exit(1 if problems else 0)

"""The differential test table of issue 13: the regularizer in the loops people write.

Every cell (training-loop feature × mode × optimizer) trains a tiny network twice from
the same initial weights on the same batches: once as a user would, with
``Regularizer.attach``, and once by a reference loop written here by hand — plain torch
forward/backward and the optimizer's own step, with the penalty applied from its closed
form, never through library code:

==============  ==================================================================
mode            the reference
==============  ==================================================================
``loss``        ``λ·(ρΣ|w| + (1 − ρ)Σw²)`` added to the loss; autograd
``gradient``    ``λ·(ρ·sign(w) + 2(1 − ρ)·w)`` added into ``.grad`` just before the
                step (after clipping — as torch's ``weight_decay``), only where
                ``.grad`` exists
``proximal``    the step, then ``soft(w, λ·D)`` with ``D`` the step the optimizer
                took: SGD ``lr / (1 − momentum)`` (its momentum buffer tends to
                ``g / (1 − momentum)``); Adam/AdamW ``lr / (√(v / (1 − β₂ᵗ)) + ε)``
                per element, read from the optimizer's state
``decoupled``   ``w ← w·(1 − lr·2λ)`` before the step (L2 only)
==============  ==================================================================

In modes ``gradient``, ``proximal`` and ``decoupled`` a tensor whose ``.grad`` is None
at the step (``zero_grad(set_to_none=True)``, unused this step) is left alone, as
torch's own ``weight_decay`` leaves it; in mode ``loss`` autograd of the penalty gives
it a gradient. Clipping sees the penalty only in mode ``loss`` or after
``reg.add_grad()`` (feature ``clip_add_grad``, which must also equal mode ``loss``).

Both must agree to 1e-6; a resumed run must equal the uninterrupted one bit for bit.
Each cell also checks that it is not vacuous: the penalty moves the weights by far
more than the tolerance, and the proximal L1 cells hold exact zeros.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from shrinkage import L1, L2, ElasticNet, Regularizer
from shrinkage.optim import DoubleRegularizationWarning

pytestmark = [
    pytest.mark.filterwarnings("error::shrinkage.optim.DoubleRegularizationWarning"),
    pytest.mark.filterwarnings("error::shrinkage.optim.ExactStepWarning"),
]

STEPS = 10
RESUME_AT = 5  # the checkpoint is taken after this many steps
MICRO_BATCHES = 4  # gradient accumulation: one step per 4 micro-batches
BATCH = 32
LAMBDA = 0.05
L1_RATIO = 0.5  # elastic net in modes loss and gradient: both the sign and the 2w part
MOMENTUM = 0.9
LR = {"sgd": 0.05, "adam": 0.02, "adamw": 0.02}
FIRST_LAYER_LR = 0.1  # feature "groups": the first layer learns 10× slower
MAX_NORM = 0.1  # feature "clip": small enough that every step is clipped
ADAMW_DECAY = 0.01  # feature "weight_decay": AdamW's own default, on top of the penalty
ATOL = 1e-6
COMPILE_BACKEND = "aot_eager"  # inductor takes ~40 s per compile on 2 CPU cores; aot_eager
# still traces forward and backward through dynamo and AOTAutograd, which is where the
# wrapper (``_orig_mod.``) and a changed graph could go wrong

MODES = ("loss", "gradient", "proximal", "decoupled")
OPTIMIZERS = ("sgd", "adam", "adamw")
FEATURES = (
    "plain",
    "groups",
    "scheduler",
    "clip",
    "clip_add_grad",  # mode gradient only: reg.add_grad() before clip_grad_norm_
    "bf16",
    "compile",
    "set_to_none",
    "resume_attach_first",  # build → attach → load_state_dict
    "resume_load_first",  # build → load_state_dict → attach
    "accumulate",
    "ddp",
    "weight_decay",  # AdamW only: the optimizer's own decay warns, and both apply
)


@dataclass(frozen=True)
class Cell:
    feature: str
    mode: str
    opt: str

    @property
    def id(self) -> str:
        return f"{self.feature}-{self.mode}-{self.opt}"

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32 if self.feature == "bf16" else torch.float64

    @property
    def resume(self) -> bool:
        return self.feature.startswith("resume")


def _cells() -> list[Cell]:
    cells = []
    for feature in FEATURES:
        for mode in MODES:
            if feature == "clip_add_grad" and mode != "gradient":
                continue
            for opt in OPTIMIZERS:
                if feature == "weight_decay" and opt != "adamw":
                    continue
                cells.append(Cell(feature, mode, opt))
    return cells


CELLS = _cells()


def _param(cell: Cell):
    """A pytest param; under ``--dist loadgroup`` (``make test``) the resume cells share one
    worker and so one fresh process, and the compile cells one dynamo cache."""
    group = "resume" if cell.resume else "compile" if cell.feature == "compile" else None
    marks = [pytest.mark.xdist_group(f"differential-{group}")] if group else []
    return pytest.param(cell, id=cell.id, marks=marks)


# --------------------------------------------------------------------------- the setup
class Net(nn.Module):
    """Linear(6, 8) → ReLU → Linear(8, 1); with ``branch``, a Linear(6, 1) added to the
    output only when asked (feature ``set_to_none``: used on even steps only)."""

    def __init__(self, branch: bool = False):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1))
        self.branch = nn.Linear(6, 1) if branch else None

    def forward(self, x: Tensor, use_branch: bool = False) -> Tensor:
        out = self.body(x)
        if use_branch:
            out = out + self.branch(x)
        return out


def _data() -> tuple[Tensor, Tensor]:
    """X: (STEPS, BATCH, 6), y: (STEPS, BATCH, 1); only the first 3 features matter."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(STEPS, BATCH, 6, generator=g, dtype=torch.float64)
    w = torch.tensor([[1.5], [-2.0], [1.0], [0.0], [0.0], [0.0]], dtype=torch.float64)
    y = X @ w + 0.1 * torch.randn(STEPS, BATCH, 1, generator=g, dtype=torch.float64)
    return X, y


X, Y = _data()


def _model(cell: Cell, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net(branch=cell.feature == "set_to_none").to(cell.dtype)


def _optimizer(cell: Cell, model: Net, lr_scale: float = 1.0) -> torch.optim.Optimizer:
    lr = LR[cell.opt] * lr_scale
    if cell.feature == "groups":
        first = list(model.body[0].parameters())
        rest = [p for p in model.parameters() if all(p is not q for q in first)]
        params: Iterable = [{"params": first, "lr": lr * FIRST_LAYER_LR}, {"params": rest}]
    else:
        params = model.parameters()
    if cell.opt == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=MOMENTUM)
    if cell.opt == "adam":
        return torch.optim.Adam(params, lr=lr)
    decay = ADAMW_DECAY if cell.feature == "weight_decay" else 0.0
    return torch.optim.AdamW(params, lr=lr, weight_decay=decay)


def _scheduler(cell: Cell, optimizer: torch.optim.Optimizer):
    if cell.feature != "scheduler":
        return None
    if cell.opt == "sgd":  # also cycles the momentum, which the proximal step depends on
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR["sgd"], total_steps=STEPS)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)


def _penalty_shape(mode: str) -> tuple[float, float]:
    """(λ, ρ) of the cell's penalty: ρ = 1 is L1, ρ = 0 is L2."""
    return LAMBDA, {"loss": L1_RATIO, "gradient": L1_RATIO, "proximal": 1.0, "decoupled": 0.0}[mode]


def _library_penalty(mode: str, lambda_: float = LAMBDA):
    if mode == "proximal":
        return L1(lambda_)
    if mode == "decoupled":
        return L2(lambda_)
    return ElasticNet(lambda_, l1_ratio=L1_RATIO)


# --------------------------------------------------------------------------- the two sides
class Library:
    """The penalty as a user applies it: ``Regularizer.attach`` (and ``add_grad``)."""

    def __init__(self, cell: Cell, reg: Regularizer):
        self.cell, self.reg = cell, reg

    @classmethod
    def attached(cls, cell: Cell, model: nn.Module, optimizer: torch.optim.Optimizer) -> Library:
        reg = Regularizer(model, _library_penalty(cell.mode), mode=cell.mode)
        reg.attach(optimizer)
        return cls(cell, reg)

    def loss_term(self) -> Tensor:
        return self.reg.penalty()

    def before_clip(self) -> None:
        if self.cell.feature == "clip_add_grad":
            self.reg.add_grad()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()


class Reference:
    """The penalty by hand on every tensor with ``ndim >= 2`` (the layer weights);
    ``lambda_=0`` gives the unpenalized run that shows the penalty matters."""

    def __init__(self, cell: Cell, model: nn.Module, lambda_: float | None = None):
        self.cell = cell
        self.weights = [p for p in model.parameters() if p.ndim >= 2]
        self.lambda_, self.rho = _penalty_shape(cell.mode)
        if lambda_ is not None:
            self.lambda_ = lambda_
        self.added = False

    def loss_term(self) -> Tensor:
        lam, rho = self.lambda_, self.rho
        return sum(lam * (rho * w.abs().sum() + (1 - rho) * (w * w).sum()) for w in self.weights)

    @torch.no_grad()
    def _add_grad(self) -> None:
        lam, rho = self.lambda_, self.rho
        for w in self.weights:
            if w.grad is not None:  # a tensor without a gradient is not stepped: left alone
                w.grad += lam * (rho * torch.sign(w) + 2 * (1 - rho) * w)

    def before_clip(self) -> None:
        if self.cell.feature == "clip_add_grad":
            self._add_grad()
            self.added = True

    @staticmethod
    def _group(optimizer: torch.optim.Optimizer, w: Tensor) -> dict:
        return next(g for g in optimizer.param_groups if any(p is w for p in g["params"]))

    @staticmethod
    def _step_taken(optimizer: torch.optim.Optimizer, w: Tensor) -> float | Tensor:
        """The step D of ``w ← w − D·u`` where u tends to the gradient."""
        group = Reference._group(optimizer, w)
        if isinstance(optimizer, torch.optim.SGD):
            return group["lr"] * (1 - group["dampening"]) / (1 - group["momentum"])
        state = optimizer.state[w]
        t = float(state["step"])
        v_hat = state["exp_avg_sq"] / (1 - group["betas"][1] ** t)
        return group["lr"] / (v_hat.sqrt() + group["eps"])

    @torch.no_grad()
    def step(self, optimizer: torch.optim.Optimizer) -> None:
        lam, rho, mode = self.lambda_, self.rho, self.cell.mode
        stepped = [w for w in self.weights if w.grad is not None]
        if mode == "gradient" and not self.added:
            self._add_grad()
        if mode == "decoupled":
            for w in stepped:
                w.mul_(1 - self._group(optimizer, w)["lr"] * 2 * lam)
        optimizer.step()
        self.added = False
        if mode == "proximal":
            for w in stepped:
                s = self._step_taken(optimizer, w)
                shrunk = torch.sign(w) * torch.clamp(w.abs() - lam * rho * s, min=0)
                w.copy_(shrunk / (1 + 2 * lam * (1 - rho) * s))


# --------------------------------------------------------------------------- the loop
def _train(
    cell: Cell,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    side: Library | Reference,
    steps: Iterable[int] = range(STEPS),
    scheduler=None,
    norms: list[float] | None = None,
) -> None:
    """The same ordinary loop for both sides; only ``side`` differs."""
    micro = MICRO_BATCHES if cell.feature == "accumulate" else 1
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if cell.feature == "bf16" else contextlib.nullcontext()
    for t in steps:
        optimizer.zero_grad(set_to_none=True)
        for x, y in zip(X[t].to(cell.dtype).chunk(micro), Y[t].to(cell.dtype).chunk(micro)):
            with autocast:
                # feature set_to_none: the branch gets no gradient on odd steps
                out = model(x, use_branch=cell.feature == "set_to_none" and t % 2 == 0)
                loss = F.mse_loss(out, y)
                if cell.mode == "loss":
                    loss = loss + side.loss_term()
            (loss / micro).backward()
        side.before_clip()
        if cell.feature in ("clip", "clip_add_grad"):
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
            if norms is not None:
                norms.append(float(norm))
        side.step(optimizer)
        if scheduler is not None:
            scheduler.step()


def _reference(cell: Cell, lambda_: float | None = None, norms: list[float] | None = None) -> tuple[Net, Net]:
    """The initial model and the reference-trained one."""
    model = _model(cell)
    initial = _model(cell)
    optimizer = _optimizer(cell, model)
    _train(cell, model, optimizer, Reference(cell, model, lambda_), scheduler=_scheduler(cell, optimizer), norms=norms)
    return initial, model


def _process_group() -> None:
    """A single-process gloo group: enough for DDP's wrapper (tests/test_ddp.py runs two)."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)


def _library(cell: Cell, checkpoint: Path | None = None) -> Net:
    """The user's loop; with ``checkpoint``, saves the state after ``RESUME_AT`` steps."""
    model = _model(cell)
    wrapped: nn.Module = model
    if cell.feature == "compile":
        wrapped = torch.compile(model, backend=COMPILE_BACKEND)
    elif cell.feature == "ddp":
        _process_group()
        wrapped = nn.parallel.DistributedDataParallel(model)
    optimizer = _optimizer(cell, model)
    if cell.feature == "weight_decay":
        with pytest.warns(DoubleRegularizationWarning, match="weight_decay=0.01") as record:
            side = Library.attached(cell, wrapped, optimizer)
        assert sum(issubclass(w.category, DoubleRegularizationWarning) for w in record) == 1, "warn once"
    else:
        side = Library.attached(cell, wrapped, optimizer)
    scheduler = _scheduler(cell, optimizer)
    if checkpoint is None:
        _train(cell, wrapped, optimizer, side, scheduler=scheduler)
        return model
    _train(cell, wrapped, optimizer, side, range(RESUME_AT), scheduler)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "regularizer": side.reg.state_dict()}
    torch.save(state, checkpoint)
    _train(cell, wrapped, optimizer, side, range(RESUME_AT, STEPS), scheduler)
    return model


# --------------------------------------------------------------------------- resume
def _resume(cell: Cell, checkpoint: Path) -> dict[str, Tensor]:
    """A fresh process's second half: everything built anew, then restored."""
    saved = torch.load(checkpoint, weights_only=True)
    model = _model(cell, seed=123)  # other initial weights: they must come from the checkpoint
    reg = Regularizer(model, _library_penalty(cell.mode, lambda_=1.0), mode=cell.mode)  # λ from the checkpoint
    optimizer = _optimizer(cell, model, lr_scale=10.0)  # lr from the checkpoint
    if cell.feature == "resume_attach_first":
        reg.attach(optimizer)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        reg.load_state_dict(saved["regularizer"])
    else:
        model.load_state_dict(saved["model"])
        reg.load_state_dict(saved["regularizer"])
        optimizer.load_state_dict(saved["optimizer"])
        reg.attach(optimizer)
    _train(cell, model, optimizer, Library(cell, reg), range(RESUME_AT, STEPS))
    return model.state_dict()


def _checkpoint_name(cell: Cell) -> str:
    return f"{cell.mode}-{cell.opt}.pt"


def resume_all(folder: str) -> None:
    """Entry point of the fresh process: resume every resume cell, in both orders."""
    torch.set_num_threads(1)  # as the parent (tests/conftest.py): the same kernels, bit for bit
    for cell in CELLS:
        if cell.resume:
            state = _resume(cell, Path(folder) / _checkpoint_name(cell))
            torch.save(state, Path(folder) / f"{cell.id}.resumed.pt")


@pytest.fixture(scope="module")
def resumed(tmp_path_factory) -> Path:
    """Checkpoints of every (mode, optimizer) after RESUME_AT steps, and one fresh
    process that resumes them all (each launch costs seconds of imports)."""
    folder = tmp_path_factory.mktemp("resume")
    for cell in CELLS:
        if cell.feature == "resume_attach_first":
            _library(cell, checkpoint=folder / _checkpoint_name(cell))
    code = "import sys; sys.path.insert(0, sys.argv[1]); import test_differential; test_differential.resume_all(sys.argv[2])"
    env = {**os.environ, "PYTHONWARNINGS": "error::FutureWarning"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


# --------------------------------------------------------------------------- the table
def _largest_gap(a: nn.Module, b: nn.Module) -> float:
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("cell", [_param(c) for c in CELLS])
def test_cell_equals_the_hand_written_reference(cell: Cell, request):
    norms: list[float] = []
    initial, reference = _reference(cell, norms=norms)
    unpenalized = _reference(cell, lambda_=0.0)[1]
    try:
        library = _library(cell)
    finally:
        if cell.feature == "ddp" and dist.is_initialized():
            dist.destroy_process_group()

    # not vacuous: training moved the weights, and the penalty moved them far more than ATOL
    assert _largest_gap(reference, initial) > 1e-2
    assert _largest_gap(reference, unpenalized) > 1e-3
    if cell.feature in ("clip", "clip_add_grad"):
        assert min(norms) > MAX_NORM, "clipping must be active at every step"

    for (name, ours), theirs in zip(library.named_parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=ATOL, msg=lambda m, n=name: f"{cell.id} {n}: {m}")

    if cell.feature == "clip_add_grad":  # add_grad() before clipping: the same numbers as mode loss
        as_loss = _reference(Cell("clip", "loss", cell.opt))[1]
        for ours, theirs in zip(library.parameters(), as_loss.parameters()):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=ATOL)

    if cell.mode == "proximal":  # L1's prox: exact zeros, at the same places
        for (name, ours), theirs in zip(library.named_parameters(), reference.parameters()):
            if ours.ndim >= 2:
                assert torch.equal(ours == 0, theirs == 0), f"{cell.id} {name}: zeros at other places"
        zeros = sum(int((w == 0).sum()) for w in reference.parameters() if w.ndim >= 2)
        assert zeros > 0, "the proximal L1 reference has no exact zeros"

    if cell.resume:
        folder = request.getfixturevalue("resumed")
        again = torch.load(folder / f"{cell.id}.resumed.pt", weights_only=True)
        for name, value in library.state_dict().items():
            assert torch.equal(again[name], value), f"{cell.id} {name}: the resumed run differs from the uninterrupted"

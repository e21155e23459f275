"""On a CUDA GPU: the one-pass kernels, no host sync in a step, CUDA-graph capture,
``torch.compile``, and the proximal fixed point under fused Adam.

Skipped without a GPU (CI has none); run through the ``device`` tool:
``python -m pytest tests/test_cuda.py``. The kernels need Triton; without it the torch
code runs and the kernel tests are skipped.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso

import kernel_cases
from shrinkage import L1, L2, ElasticNet, GroupLasso, HierarchicalLasso, Regularizer, Rule, SparseGroupLasso, _triton
from shrinkage import functional as F

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
needs_triton = pytest.mark.skipif(not _triton.available(), reason="needs Triton")


@needs_triton
@pytest.mark.parametrize(("penalty", "kind", "dtype", "stacked", "tall"), list(kernel_cases.all_cases()))
def test_kernels_match_the_torch_reference(penalty, kind, dtype, stacked, tall):
    assert kernel_cases.error(penalty, kind, dtype, "cuda", stacked=stacked, tall=tall) <= 1.0


@needs_triton
@pytest.mark.parametrize("tall", [False, True])
def test_a_zero_step_changes_nothing(tall):
    assert kernel_cases.zero_step_changes_nothing("cuda", tall=tall)


@needs_triton
@pytest.mark.parametrize("optimizer", list(kernel_cases.OPTIMIZERS))
@pytest.mark.parametrize("penalty", list(kernel_cases.PENALTIES))
def test_kernels_train_as_the_torch_code(penalty, optimizer):
    assert kernel_cases.training_error(penalty, optimizer, "cuda") <= 1.0


@needs_triton
@pytest.mark.parametrize("penalty", ["l1", "elastic_net", "l2"])
def test_gradient_mode_kernel_trains_as_the_torch_code(penalty):
    assert kernel_cases.training_error(penalty, "adam", "cuda", mode="gradient") <= 1.0


PENALTIES = {
    "l1": lambda: L1(1e-3),
    "l2": lambda: L2(1e-3),
    "elastic_net": lambda: ElasticNet(1e-3, 0.5),
    "group": lambda: GroupLasso(1e-3, groups="input"),
    "sparse_group": lambda: SparseGroupLasso(1e-3, 0.5, groups="unit"),
    "hierarchical": lambda: Rule(HierarchicalLasso(1e-3), select=["skip.weight", "body.0.weight"]),
}


def _optimizers():
    yield "sgd", lambda ps: torch.optim.SGD(ps, lr=0.01)
    yield "sgd_momentum", lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9)
    yield "adam", lambda ps: torch.optim.Adam(ps, lr=1e-3)
    yield "adam_fused", lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True)
    yield "adam_capturable", lambda ps: torch.optim.Adam(ps, lr=1e-3, capturable=True)
    yield "adamw_fused", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.0, fused=True)
    yield "adamw_capturable", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.0, capturable=True)
    yield "adam_tensor_lr", lambda ps: torch.optim.Adam(ps, lr=torch.tensor(1e-3, device="cuda"), fused=True)
    yield "rmsprop", lambda ps: torch.optim.RMSprop(ps, lr=1e-3)
    yield "adagrad", lambda ps: torch.optim.Adagrad(ps, lr=1e-2)


OPTIMIZERS = dict(_optimizers())
MODES = ("proximal", "gradient", "loss", "decoupled")


def _model(skip: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    if skip:  # LassoNet's shape, for the hierarchical penalty
        from shrinkage.models import SkipMLP

        return SkipMLP(12, (16,), 3).cuda()
    return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).cuda()


def _combinations():
    for penalty in PENALTIES:
        for mode in MODES:
            if (mode == "decoupled" and penalty != "l2") or (penalty == "hierarchical" and mode != "proximal"):
                continue
            for optimizer in OPTIMIZERS:
                yield penalty, mode, optimizer


@pytest.mark.parametrize(("penalty", "mode", "optimizer"), list(_combinations()))
def test_a_step_never_synchronizes_with_the_host(penalty, mode, optimizer):
    model = _model(skip=penalty == "hierarchical")
    opt = OPTIMIZERS[optimizer](model.parameters())
    reg = Regularizer(model, PENALTIES[penalty](), mode=mode)
    reg.attach(opt)
    X, y = torch.randn(32, 12, device="cuda"), torch.randn(32, 3, device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(X), y)
        if reg.in_loss:
            loss = loss + reg.penalty()
        loss.backward()
        opt.step()

    step()  # the optimizer makes its state (and the kernels their tables) once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(torch.cat([p.detach().flatten() for p in model.parameters()])).all()


@pytest.mark.parametrize("penalty", ["l1", "elastic_net", "group", "sparse_group"])
@pytest.mark.parametrize("optimizer", ["adam_capturable", "adamw_capturable", "sgd_momentum"])
def test_a_captured_step_replays_as_eager(penalty, optimizer):
    """The whole regularized step in a CUDA graph gives the eager step's weights."""
    X, y = torch.randn(64, 12, device="cuda"), torch.randn(64, 3, device="cuda")

    def setup():
        model = _model()
        opt = OPTIMIZERS[optimizer](model.parameters())
        strong = {"l1": L1(0.05), "elastic_net": ElasticNet(0.05, 0.5), "group": GroupLasso(0.2, groups="input")}
        Regularizer(model, strong.get(penalty) or SparseGroupLasso(0.1, 0.5, groups="unit")).attach(opt)
        return model, opt

    def step(model, opt, inputs, targets):
        opt.zero_grad(set_to_none=False)
        torch.nn.functional.mse_loss(model(inputs), targets).backward()
        opt.step()

    eager_model, eager_opt = setup()
    graph_model, graph_opt = setup()
    static_X, static_y = X.clone(), y.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as torch's recipe says
        for _ in range(3):
            step(graph_model, graph_opt, static_X, static_y)
    torch.cuda.current_stream().wait_stream(side)
    for _ in range(3):
        step(eager_model, eager_opt, X, y)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(graph_model, graph_opt, static_X, static_y)
    for _ in range(20):
        graph.replay()
        step(eager_model, eager_opt, X, y)
    torch.cuda.synchronize()
    for a, b in zip(eager_model.parameters(), graph_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert torch.equal(a == 0, b == 0)
    assert any((p == 0).any() for p in graph_model.parameters())  # the prox ran in the graph


def test_a_compiled_step_matches_eager():
    """``torch.compile`` of the whole step: the prox runs (as a graph break) and gives
    the eager weights."""

    def run(compiled: bool):
        model = _model()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        Regularizer(model, L1(3e-2)).attach(opt)
        X, y = torch.randn(64, 12, device="cuda"), torch.randn(64, 3, device="cuda")

        def step():
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(X), y).backward()
            opt.step()

        step_fn = torch.compile(step) if compiled else step
        torch.manual_seed(1)
        for _ in range(30):
            step_fn()
        return [p.detach().clone() for p in model.parameters()]

    eager, compiled = run(False), run(True)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert (eager[0] == 0).any() and torch.equal(eager[0] == 0, compiled[0] == 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("optimizer", ["adam_fused", "adamw_capturable"])
def test_fused_adam_proximal_fixed_point_is_sklearn_lasso(optimizer, dtype):
    """As tests/test_oracles.py on the CPU: float64 runs the torch code on the GPU,
    float32 the kernel; both must reach scikit-learn's solution and its zeros."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 12))
    w_true = np.zeros(12)
    w_true[[0, 1, 4, 8]] = rng.standard_normal(4) * 2
    y = X @ w_true + 0.5 * rng.standard_normal(200) + 1.0
    alpha = 0.1
    sk = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(X, y)
    assert (sk.coef_ == 0).sum() >= 4
    torch.manual_seed(0)
    model = torch.nn.Linear(12, 1).to(device="cuda", dtype=dtype)
    if optimizer == "adam_fused":
        opt = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.0, capturable=True)
    Regularizer(model, L1(2 * alpha)).attach(opt)  # sklearn's (1/2n)‖r‖² + α‖w‖₁ is MSE + 2α‖w‖₁
    scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.998)
    Xt = torch.tensor(X, device="cuda", dtype=dtype)
    yt = torch.tensor(y, device="cuda", dtype=dtype)[:, None]
    for _ in range(1500):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(Xt), yt).backward()
        opt.step()
        scheduler.step()
    got = model.weight.detach().double().cpu().numpy().ravel()
    relative = np.max(np.abs(got - sk.coef_)) / np.max(np.abs(sk.coef_))
    assert relative < (1e-4 if dtype == torch.float64 else 1e-3), relative
    np.testing.assert_array_equal(got == 0, sk.coef_ == 0)


def test_a_tensor_lr_and_device_steps_stay_on_the_device():
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=torch.tensor(1e-3, device="cuda"), weight_decay=0.0, fused=True)
    Regularizer(model, L1(1e-2)).attach(opt)
    torch.nn.functional.mse_loss(model(torch.randn(8, 12, device="cuda")), torch.zeros(8, 3, device="cuda")).backward()
    opt.step()
    from shrinkage import optim

    steps = optim.prox_steps(opt, opt.param_groups[0], [model[0].weight])
    assert isinstance(steps[0], F.RootStep) and steps[0].numerator.device.type == "cuda"


CENTRED = {
    "l1": lambda: L1(1e-2, center="initial"),
    "l2": lambda: L2(1e-2, center="initial"),
    "elastic_net": lambda: ElasticNet(1e-2, 0.5, center="initial"),
    "group": lambda: GroupLasso(0.5, groups="input", center="initial"),
}


def _cpu_optimizers():
    yield "adam", lambda ps: torch.optim.Adam(ps, lr=1e-3)
    yield "adamw_capturable", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.0)
    yield "sgd_momentum", lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9)


def _centred_run(device: str, penalty: str, mode: str, optimizer: str, X, y) -> dict:
    """Five steps; on CUDA the last four under sync debug mode "error"."""
    model = _model().to(device)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    if device == "cuda":
        opt = OPTIMIZERS[optimizer](model.parameters())
    else:
        opt = dict(_cpu_optimizers())[{"adam_fused": "adam"}.get(optimizer, optimizer)](model.parameters())
    reg = Regularizer(model, CENTRED[penalty](), mode=mode)
    reg.attach(opt)
    assert all(c.device.type == device for c in reg.terms[0].centers)
    X, y = X.to(device), y.to(device)
    for index in range(5):
        if index == 1 and device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(X), y)
            if reg.in_loss:
                loss = loss + reg.penalty()
            loss.backward()
            opt.step()
        finally:
            if device == "cuda":
                torch.cuda.set_sync_debug_mode(0)
    if mode == "proximal" and penalty != "l2":  # some entries are still the centre's, bit for bit
        assert any(bool((p.detach() == start[n]).any()) for n, p in model.named_parameters() if p.ndim == 2)
    return {n: p.detach().cpu() for n, p in model.named_parameters()}


@pytest.mark.parametrize("optimizer", ["adam_fused", "adamw_capturable", "sgd_momentum"])
@pytest.mark.parametrize(("penalty", "mode"), [(p, m) for p in CENTRED for m in MODES if m != "decoupled" or p == "l2"])
def test_a_centred_penalty_on_cuda_steps_without_sync_as_on_the_cpu(penalty, mode, optimizer):
    """Fine-tuning: the centre lives on the GPU (copied once), a step reads nothing back,
    and the weights follow the CPU's."""
    X, y = torch.randn(32, 12), torch.randn(32, 3)
    on_gpu = _centred_run("cuda", penalty, mode, optimizer, X, y)
    on_cpu = _centred_run("cpu", penalty, mode, optimizer, X, y)
    for name, value in on_cpu.items():
        torch.testing.assert_close(on_gpu[name], value, atol=1e-5, rtol=1e-4)

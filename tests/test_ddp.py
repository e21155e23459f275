"""DistributedDataParallel: two real processes (gloo, CPU, loopback) train with a
Regularizer in each mode; the replicas stay bit-identical, the penalty logged is the
same on every rank, and the result equals one process trained on the same global
batches.

Why it holds: DDP all-reduces (averages) the gradients during ``backward()``. In mode
``loss`` each rank adds the same ``λ·R(w)`` to its local loss, so the average carries
``λ∇R`` once; in ``gradient``, ``decoupled`` and ``proximal`` our hooks run around
``optimizer.step()``, after the all-reduce, on identical weights and gradients.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import free_port, make_optimizer, user_loop
from shrinkage import L1, L2, ElasticNet, GroupLasso, Regularizer, Rule
from shrinkage.models import MLP

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo"
)

WORLD = 2
STEPS = 150  # many proximal steps: replicas must not drift apart
CASES = {  # mode: (rules, optimizer)
    "loss": (lambda: [Rule(L1(1e-3))], "sgd"),
    "gradient": (lambda: [Rule(ElasticNet(1e-3, 0.5))], "sgd"),
    "decoupled": (lambda: [Rule(L2(1e-2), select="*")], "adamw"),
    "proximal": (
        lambda: [Rule(L1(3e-3), select="0.weight"), Rule(GroupLasso(3e-3, groups="input"), select="2.weight")],
        "adam",
    ),
}


def _data():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(STEPS, 32, 6, generator=g)  # STEPS global batches of 32 rows
    y = X[..., :2].sum(-1, keepdim=True) + 0.1 * torch.randn(STEPS, 32, 1, generator=g)
    return X, y


def _train(model, mode, rows, all_reduce_values=False):
    """The user's loop: two extra lines (Regularizer, attach)."""
    rules, optimizer_name = CASES[mode]
    reg = Regularizer(model.module if hasattr(model, "module") else model, rules(), mode=mode)
    optimizer = make_optimizer(optimizer_name, model.parameters())
    reg.attach(optimizer)
    logged = user_loop(model, reg, optimizer, *_data(), rows)
    return logged, reg


def _worker(rank, port, folder):
    """Every mode in turn on one process group (starting two processes per mode took ten
    seconds each, most of it importing torch)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        for mode in CASES:
            torch.manual_seed(0)
            model = torch.nn.parallel.DistributedDataParallel(MLP(6, (8,)))
            half = 32 // WORLD
            logged, reg = _train(model, mode, slice(rank * half, (rank + 1) * half))
            flat = torch.cat([p.detach().flatten() for p in model.module.parameters()])
            everyone = [torch.empty_like(flat) for _ in range(WORLD)]
            dist.all_gather(everyone, flat)
            values = [None] * WORLD
            dist.all_gather_object(values, logged)
            if rank == 0:
                torch.save(
                    {"params": flat, "replicas": torch.stack(everyone), "logged": values,
                     "zeros": reg.sparsity().zeros},
                    f"{folder}/{mode}.pt",
                )  # fmt: skip
        dist.barrier()  # both ranks are done communicating before either tears down
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The folder of each mode's result, the two processes started once for the module."""
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(free_port(), str(folder)), nprocs=WORLD, join=True)
    return folder


@pytest.mark.skipif(sys.platform == "win32", reason="gloo over tcp on loopback")
@pytest.mark.xdist_group("ddp")  # one worker starts the processes once for the module
@pytest.mark.parametrize("mode", list(CASES))
def test_ddp_equals_one_process_and_replicas_stay_identical(trained, mode):
    result = torch.load(trained / f"{mode}.pt", weights_only=True)
    replicas, logged = result["replicas"], result["logged"]
    assert torch.equal(replicas[0], replicas[1])  # bit-identical after every step
    assert logged[0] == logged[1]  # the same penalty logged on every rank

    torch.manual_seed(0)
    single = MLP(6, (8,))
    single_logged, _ = _train(single, mode, slice(None))  # the same global batches, one process
    flat = torch.cat([p.detach().flatten() for p in single.parameters()])
    torch.testing.assert_close(result["params"], flat, rtol=1e-4, atol=1e-5)
    assert logged[0] == pytest.approx(single_logged, rel=1e-4, abs=1e-6)
    if mode == "proximal":
        assert result["zeros"] > 0  # exact zeros, the same on both replicas

"""Devices: no hidden host synchronisation in a training step. On the ``meta`` device
every value lookup (``.item()``, ``float(t)``, ``bool(t)``) raises, so a step that
passes there never waits for (or copies to) the host — what keeps a GPU step
asynchronous. Every penalty, optimizer and mode is stepped there."""

from __future__ import annotations

import pytest
import torch

from shrinkage import L1, L2, ElasticNet, GroupLasso, HierarchicalLasso, Regularizer, Rule, SparseGroupLasso
from shrinkage.models import MLP, SkipMLP

PENALTIES = [
    L1(1e-2),
    L2(1e-2),
    ElasticNet(1e-2, 0.5),
    GroupLasso(1e-2),
    SparseGroupLasso(1e-2, 0.5),
    Rule(HierarchicalLasso(1e-2), select=["skip.weight", "body.0.weight"]),
]
OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0),  # the penalty is the only regularizer
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-2),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2),
}


CASES = [
    pytest.param(
        penalty, optimizer, mode, id=f"{type(getattr(penalty, 'penalty', penalty)).__name__}-{optimizer}-{mode}"
    )
    for penalty in PENALTIES
    for optimizer in OPTIMIZERS
    for mode in ("proximal", "gradient", "loss", "decoupled")
    if mode != "decoupled" or isinstance(penalty, L2)  # decoupled is weight decay: L2 only
    if mode == "proximal" or not isinstance(penalty, Rule)  # the hierarchical constraint: proximal only
]


@pytest.mark.parametrize("penalty, optimizer, mode", CASES)
def test_a_step_never_synchronizes_with_the_host(penalty, optimizer, mode):
    model = (SkipMLP if isinstance(penalty, Rule) else MLP)(6, (8,)).to("meta")
    opt = OPTIMIZERS[optimizer](model.parameters())
    reg = Regularizer(model, penalty, mode=mode)
    reg.attach(opt)
    X = torch.randn(4, 6, device="meta")
    for _ in range(2):
        opt.zero_grad()
        loss = model(X).square().mean()
        if mode == "loss":
            loss = loss + reg.penalty()
        loss.backward()
        opt.step()
    assert all(p.device.type == "meta" for p in model.parameters())  # nothing moved

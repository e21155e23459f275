"""Helpers shared by test modules (``tests/`` is on ``sys.path``: ``from helpers import …``).

Process-spawning tests import them in their workers too, so they stay plain functions.
"""

from __future__ import annotations

import socket

import torch


def free_port() -> int:
    """A TCP port free on the loopback interface now, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_optimizer(name: str, params) -> torch.optim.Optimizer:
    """The optimizers the distributed and Lightning tests compare, by name."""
    return {
        "sgd": lambda: torch.optim.SGD(params, lr=0.05, momentum=0.9),
        "adam": lambda: torch.optim.Adam(params, lr=1e-2),
        "adamw": lambda: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0),
    }[name]()


def user_loop(model, reg, optimizer, X, y, rows) -> list[float]:
    """The plain loop a user writes: one step per global batch ``X[step]`` (this process's
    ``rows`` of it), the penalty in the loss only in mode ``loss``; the logged penalties."""
    logged = []
    for step in range(X.shape[0]):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X[step][rows]), y[step][rows])
        if reg.in_loss:
            loss = loss + reg.penalty()  # a plain tensor, also for sharded (FSDP) tensors
        loss.backward()
        optimizer.step()
        logged.append(sum(reg.values().values()))
    return logged

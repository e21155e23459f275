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

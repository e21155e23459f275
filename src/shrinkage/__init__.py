"""shrinkage: L1, L2, elastic-net and group regularization for PyTorch networks.

>>> import torch, shrinkage
>>> model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
>>> reg = shrinkage.Regularizer(model, shrinkage.L1(1e-3))      # proximal: exact zeros
>>> optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
>>> _ = reg.attach(optimizer)                                    # that's all
"""

from .penalties import L1, L2, ElasticNet, GroupLasso, HierarchicalLasso, Penalty, SparseGroupLasso, make_penalty
from .regularizer import MODES, Regularizer, Rule
from .structure import SparsityReport
from .validation import InputError

__all__ = [
    "L1",
    "L2",
    "MODES",
    "ElasticNet",
    "GroupLasso",
    "HierarchicalLasso",
    "InputError",
    "Penalty",
    "Regularizer",
    "Rule",
    "SparseGroupLasso",
    "SparsityReport",
    "make_penalty",
]

from ._version import __version__ as __version__

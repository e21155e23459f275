"""Paths of non-zero weights: which inputs and units a sparse MLP still uses."""

from __future__ import annotations

import torch
from torch import nn

from shrinkage import L1, Regularizer
from shrinkage.structure import dead_units, linear_chain, reachable_inputs


def test_inputs_feeding_only_dead_units_are_unused():
    W1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])  # unit u reads input u
    W2 = torch.tensor([[1.0, 0.0, 1.0]])  # unit 1 reaches no output
    assert reachable_inputs([W1, W2]) == [0, 2]
    assert dead_units([W1, W2]) == [1]


def test_unit_with_no_input_is_dead_and_reachability_brute_force():
    torch.manual_seed(0)
    for _ in range(50):
        shapes = [(5, 4), (3, 5), (2, 3)]
        weights = [torch.randn(s) * (torch.rand(s) < 0.35) for s in shapes]
        # brute force: input j is used iff |W3|·|W2|·|W1| has a non-zero column j
        product = weights[2].abs() @ weights[1].abs() @ weights[0].abs()
        expected = (product.sum(0) > 0).nonzero().flatten().tolist()
        assert reachable_inputs(weights) == expected
        a1, a2, a3 = (w.abs() for w in weights)
        first = (a1.sum(1) > 0) & ((a3 @ a2).sum(0) > 0)  # fed by an input, feeds an output
        second = ((a2 @ a1).sum(1) > 0) & (a3.sum(0) > 0)
        assert dead_units(weights) == [int((~first).sum()), int((~second).sum())]


def test_linear_chain_recognises_mlps_only():
    assert len(linear_chain(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Dropout(), nn.Linear(3, 1)))) == 2
    assert linear_chain(nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3), nn.Linear(3, 1))) is None
    assert linear_chain(nn.Linear(2, 3)) is None


def test_sparsity_report_uses_paths_for_mlps():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3))
        model[2].weight.copy_(torch.tensor([[1.0, 0.0, 1.0]]))
    report = Regularizer(model, L1(0.1)).sparsity()
    assert report.features_used == [0, 2]
    assert report.dead_units == 1

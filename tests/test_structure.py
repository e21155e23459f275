"""Paths of non-zero weights: which inputs and units a sparse MLP still uses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shrinkage import L1, InputError, Regularizer
from shrinkage.structure import (
    chain_usage,
    dead_units,
    input_parameter_of,
    input_parameters_of,
    linear_chain,
    reachable_inputs,
)


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
        assert chain_usage(weights) == (expected, int((~first).sum()) + int((~second).sum()))


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


# ------------------------------------------------------------- which weight reads the input
class Wrapper(nn.Module):
    """Like a LightningModule: no parameters of its own, the network in one attribute."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


class TwoLayers(nn.Module):
    """A custom forward: registration order says nothing reliable about what runs first."""

    def __init__(self, declare=False):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 1)
        if declare:
            self.input_parameter = "fc1.weight"

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _input_name(model):
    found = input_parameter_of(model)
    return None if found is None else found[0]


def test_input_weight_is_known_only_from_structure():
    from shrinkage.models import MLP, SkipMLP

    assert _input_name(nn.Linear(3, 1)) == "weight"
    assert _input_name(MLP(3, (4,))) == "0.weight"  # declared
    assert _input_name(nn.Sequential(nn.Dropout(), nn.BatchNorm1d(3), nn.Linear(3, 1))) == "2.weight"
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    assert _input_name(cnn) == "0.weight"  # the input channels
    assert _input_name(nn.Sequential(nn.Flatten(), nn.Linear(12, 2))) == "1.weight"
    assert _input_name(nn.Sequential(nn.Sequential(nn.Linear(3, 4)), nn.ReLU())) == "0.0.weight"
    assert _input_name(Wrapper(SkipMLP(3, (4,)))) == "net.skip.weight"
    assert _input_name(Wrapper(nn.Sequential(nn.Linear(3, 1)))) == "net.0.weight"
    assert _input_name(TwoLayers(declare=True)) == "fc1.weight"
    # not identifiable: the reports say "not applicable" rather than guess
    assert _input_name(TwoLayers()) is None
    assert _input_name(nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 1))) is None
    assert _input_name(nn.Sequential(nn.LayerNorm(3), nn.Linear(3, 1))) is None  # mixes the features
    assert _input_name(nn.Sequential(nn.Conv1d(4, 4, 3, groups=2))) is None  # axis 1: a channel of a group
    assert _input_name(nn.Sequential(nn.ConvTranspose2d(3, 4, 2))) is None  # weight (in, out, …)
    assert _input_name(nn.Sequential(nn.LazyLinear(2))) is None  # no weight yet


def test_every_input_weight_is_found_through_a_wrapper():
    from shrinkage.models import SkipMLP

    names = [n for n, _ in input_parameters_of(Wrapper(SkipMLP(3, (4,))))]
    assert names == ["net.skip.weight", "net.body.0.weight"]
    assert input_parameters_of(TwoLayers()) == []


def test_a_wrapped_mlp_counts_paths():
    model = Wrapper(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)))
    with torch.no_grad():
        model.net[0].weight.copy_(torch.eye(3))
        model.net[2].weight.copy_(torch.tensor([[1.0, 0.0, 1.0]]))
    report = Regularizer(model, L1(0.1)).sparsity(feature_names=["a", "b", "c"])
    assert report.input_parameter == "net.0.weight"
    assert report.features_used == [0, 2] and report.features_used_names == ["a", "c"]
    assert report.dead_units == 1


def test_without_an_input_weight_features_are_not_applicable():
    model = TwoLayers()
    report = Regularizer(model, L1(0.1)).sparsity()
    assert report.input_parameter is None
    assert report.features_used is None and report.n_features is None and report.features_used_names is None
    assert report.to_dict()["features_used"] is None and report.to_dict()["n_features"] is None
    with pytest.raises(InputError, match="feature_names need the model's input weight, which cannot be identified"):
        Regularizer(model, L1(0.1)).sparsity(feature_names=["a", "b", "c"])
    # named by the user, it is known again
    named = Regularizer(model, L1(0.1), input_parameter="fc1.weight").sparsity()
    assert named.input_parameter == "fc1.weight" and named.features_used == [0, 1, 2] and named.n_features == 3


def test_a_path_needs_the_input_weight():
    from shrinkage.path import regularization_path, relaxed_fit
    from shrinkage.train import TrainConfig

    X, y = torch.randn(20, 3).numpy(), torch.randn(20).numpy()
    message = "model's input weight .* cannot be identified from its structure"
    with pytest.raises(InputError, match=message):
        regularization_path(TwoLayers(), X, y, penalty=L1())
    with pytest.raises(InputError, match=message):
        relaxed_fit(
            TwoLayers(),
            torch.randn(4, 3),
            torch.randn(4, 1),
            features=[0],
            loss="mse",
            validation=None,
            config=TrainConfig(),
        )
    quick = TrainConfig(max_epochs=2)
    path = regularization_path(
        TwoLayers(declare=True), X, y, penalty=L1(), n_lambdas=2, train_config=quick, dense_config=quick
    )
    assert path.n_features == 3

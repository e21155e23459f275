"""Pruned export: same outputs from a smaller model, weights-only files, unit sparsity."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from shrinkage import GroupLasso, Regularizer, Rule
from shrinkage.models import MLP, SkipMLP
from shrinkage.prune import flops_per_sample, load_model, prune, save_model
from shrinkage.train import TrainConfig, train

ACTIVATIONS = [nn.ReLU, nn.Tanh, nn.GELU, nn.Sigmoid, lambda: nn.LeakyReLU(0.1), nn.Identity]


@st.composite
def sparse_mlps(draw):
    """A random MLP (float64) with random exact zeros, sometimes a whole layer dead."""
    n_in = draw(st.integers(1, 6))
    widths = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    n_out = draw(st.integers(1, 3))
    activation = draw(st.sampled_from(ACTIVATIONS))
    seed = draw(st.integers(0, 2**31 - 1))
    sparsity = draw(st.floats(0.0, 0.9))
    dead_layer = draw(st.sampled_from([None, *range(len(widths))]))
    generator = torch.Generator().manual_seed(seed)
    layers, previous = [], n_in
    for width in [*widths, n_out]:
        layers.append(nn.Linear(previous, width).double())
        if width is not n_out or len(layers) <= len(widths):
            layers.append(activation())
        previous = width
    model = nn.Sequential(*layers[:-1]) if not isinstance(layers[-1], nn.Linear) else nn.Sequential(*layers)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for k, layer in enumerate(linears):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator, dtype=torch.float64))
            layer.weight.mul_(torch.rand(layer.weight.shape, generator=generator) > sparsity)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator, dtype=torch.float64))
            if dead_layer is not None and k == dead_layer:
                layer.weight.zero_()  # every unit of this layer dies (its outputs become constants)
    return model


@settings(max_examples=150, deadline=None, derandomize=True)
@given(sparse_mlps(), st.integers(0, 2**31 - 1))
def test_pruned_model_gives_the_same_outputs(model, seed):
    pruned, report = prune(model, measure=False)
    x = torch.randn(40, model[0].in_features, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x[:, report.kept_features]), model(x), rtol=1e-10, atol=1e-10)
    assert report.params_after <= report.params_before
    assert report.flops_after == flops_per_sample(pruned) <= report.flops_before


def test_a_dead_layer_leaves_a_constant_model():
    model = MLP(4, (3, 3), 2).double()
    with torch.no_grad():
        model[2].weight.zero_()  # the second hidden layer reads nothing
    pruned, report = prune(model, measure=False)
    assert report.kept_features == [] and report.widths_after == [0, 0]
    x = torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x[:, []]), model(x))


def test_skip_mlp_and_per_unit_prelu():
    torch.manual_seed(0)
    model = SkipMLP(6, (5,), 2).double()
    with torch.no_grad():
        model.skip.weight[:, [0, 3]] = 0
        model.body[0].weight[:, [0, 1]] = 0  # feature 1 only through the skip; 0 nowhere
        model.body[0].weight[2] = 0
    pruned, report = prune(model, measure=False)
    assert report.kept_features == [1, 2, 3, 4, 5] and report.widths_after == [4]
    x = torch.randn(30, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x[:, report.kept_features]), model(x))
    chain = nn.Sequential(nn.Linear(3, 4), nn.PReLU(4), nn.Linear(4, 1)).double()
    with torch.no_grad():
        chain[0].weight[1] = 0
        chain[2].weight[0, 3] = 0
    pruned, report = prune(chain, measure=False)
    assert report.widths_after == [2] and pruned[1].num_parameters == 2
    x = torch.randn(10, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), chain(x))


def test_latency_is_measured_and_reported():
    model = MLP(50, (256, 256), 1)
    with torch.no_grad():
        model[0].weight[:, 10:] = 0
        model[0].weight[32:] = 0
    _, report = prune(model, batch_size=64, repeats=10)
    assert report.latency_before_ms > 0 and report.latency_after_ms > 0 and report.latency_batch == 64
    assert "CPU latency" in report.summary() and report.kept_features == list(range(10))


def test_save_and_load_weights_only(tmp_path):
    torch.manual_seed(0)
    for model in (MLP(5, (4, 3), 2, activation="gelu"), SkipMLP(5, (4,), 1)):
        path = save_model(model, tmp_path / "m.safetensors", metadata={"features": list("abcde")})
        loaded, metadata = load_model(path)
        assert metadata == {"features": list("abcde")}
        x = torch.randn(7, 5)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x))


def test_a_pickle_with_a_payload_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name, data in (("evil.safetensors", pickle.dumps(Payload())), ("evil.pt", pickle.dumps(Payload()))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match="is not a safetensors file"):
            load_model(path)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError, match="model file '.*missing' does not exist"):
        load_model(tmp_path / "missing")


def test_only_mlps_are_pruned():
    with pytest.raises(TypeError, match="prune supports an nn.Sequential of Linear and element-wise layers"):
        prune(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.Linear(3, 1)))


def test_unit_group_lasso_kills_units_that_pruning_removes():
    torch.manual_seed(0)
    X = torch.randn(300, 8)
    y = torch.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    model = MLP(8, (64,))
    reg = Regularizer(
        model,
        [
            Rule(GroupLasso(0.03, groups="unit"), select="0.weight"),
            Rule(GroupLasso(0.03, groups="input"), select="2.weight"),
        ],
    )
    train(model, X, y, regularizer=reg, config=TrainConfig(lr=1e-2, batch_size=None, max_epochs=400, patience=400))
    report = reg.sparsity()
    assert report.dead_units >= 40 and report.groups["group"][0] >= 40  # zero rows of the hidden layer
    pruned, sizes = prune(model, measure=False)
    assert sizes.widths_after == [64 - report.dead_units]
    with torch.no_grad():
        torch.testing.assert_close(pruned(X[:, sizes.kept_features]), model(X), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ device and dtype
def test_a_folded_constant_creates_the_missing_bias_in_the_models_dtype():
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Sigmoid(), nn.Linear(4, 2, bias=False)).double()
    with torch.no_grad():
        model[0].weight[1] = 0  # unit 1 outputs sigmoid(0) = 0.5 whatever the input: folded into a new bias
    pruned, report = prune(model, measure=True, batch_size=16, repeats=2)  # the timing batch is float64 too
    assert report.widths_after == [3] and pruned[2].bias is not None
    assert {p.dtype for p in pruned.parameters()} == {torch.float64}
    assert {p.device for p in pruned.parameters()} == {model[0].weight.device}
    x = torch.randn(9, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=0, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_models_on_cuda_prune_on_cuda():
    from shrinkage.estimators import ShrinkageMLPRegressor

    torch.manual_seed(0)
    mlp = MLP(6, (8,), 2).cuda()
    cnn = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    cnn = cnn.cuda().eval()
    with torch.no_grad():
        mlp[0].weight[:, 2] = 0
        mlp[0].weight[3] = 0
        cnn[0].weight[1] = 0  # a dead filter with a bias and a BN shift: folded on the device
    for model, shape in ((mlp, (6,)), (cnn, (2, 4, 4))):
        pruned, report = prune(model, input_shape=shape, batch_size=32, repeats=3)
        assert {p.device.type for p in pruned.parameters()} == {"cuda"} and "CUDA latency" in report.summary()
        x = torch.randn(5, *shape, device="cuda")
        with torch.no_grad():
            torch.testing.assert_close(pruned(x[:, report.kept_features]), model(x), rtol=1e-5, atol=1e-5)
    X = torch.randn(200, 5).numpy()
    y = X[:, 0] - X[:, 1]
    estimator = ShrinkageMLPRegressor((8,), penalty="group", lambda_=0.05, device="cuda", random_state=0).fit(X, y)
    small = estimator.prune()
    assert next(small.model_.parameters()).device.type == "cuda" and small.prune_report_.latency_device == "cuda"
    torch.testing.assert_close(small.predict(X), estimator.predict(X), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "activation",
    [
        torch.nn.GELU(approximate="tanh"),
        torch.nn.GELU(),
        torch.nn.ELU(alpha=0.7),
        torch.nn.CELU(alpha=1.3),
        torch.nn.SELU(),
        torch.nn.Mish(),
        torch.nn.Hardswish(),
        torch.nn.Hardsigmoid(),
        torch.nn.ReLU6(),
        torch.nn.Softplus(beta=2.0, threshold=10.0),
        torch.nn.Hardtanh(-0.5, 0.8),
        torch.nn.Threshold(0.1, -1.0),
        torch.nn.Softshrink(0.2),
        torch.nn.Hardshrink(0.3),
        torch.nn.Softsign(),
        torch.nn.Tanhshrink(),
        torch.nn.LogSigmoid(),
        torch.nn.AlphaDropout(0.1),
    ],
    ids=lambda m: repr(m),
)
def test_every_elementwise_layer_saves_and_loads_with_its_settings(tmp_path, activation):
    from shrinkage.prune import load_model, save_model

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), activation, torch.nn.Linear(8, 1)).eval()
    try:
        small, _ = prune(model, measure=False)
    except TypeError:  # element-wise layers an MLP chain refuses (a CNN chain takes them)
        small = model
    save_model(small, tmp_path / "m.safetensors")
    again, _ = load_model(tmp_path / "m.safetensors")
    assert repr(again[1]) == repr(small[1])  # the settings too (GELU's approximation, ELU's alpha, …)
    x = torch.randn(200, 3) * 3
    with torch.no_grad():
        assert torch.equal(again.eval()(x), small(x))


def test_save_model_names_the_layers_it_can_describe(tmp_path):
    from shrinkage.prune import save_model

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(dim=1))
    with pytest.raises(TypeError, match=r"cannot describe the layer Softmax; it describes: .*GELU.*Linear"):
        save_model(model, tmp_path / "m.safetensors")

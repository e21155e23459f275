"""Convolutional networks: filter/channel group lasso, and prune() for sequential CNNs.

Oracles: hand-built CNNs whose dead filters are known by construction (a zero filter
with a zero, a negative and a positive constant output; a BatchNorm with γ = 0; zero
and non-zero padding), random CNNs (hypothesis), the closed-form prox step, and the
arithmetic of FLOPs. Every pruned model must give the unpruned model's outputs.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from shrinkage import GroupLasso, InputError, Regularizer, Rule
from shrinkage.prune import flops_per_sample, load_model, model_bytes, prune, save_model
from shrinkage.train import TrainConfig, train


def _assert_same_outputs(model, pruned, report, shape, atol=1e-10, n=6, seed=0):
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x.to(next(model.parameters()).dtype)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x[:, report.kept_features]), model(x), rtol=0, atol=atol)


def _hand_built(padding: int = 1, padding_mode: str = "zeros") -> nn.Sequential:
    """3 input channels of 8×8; known dead filters (float64).

    conv0: input channel 1 unused; filters 1, 2, 4 all zero and filter 5's BatchNorm has
    γ = 0, so their outputs are constants: after BN and ReLU, filter 1's is 0 (gone
    without a trace) and those of 2, 4, 5 are > 0. conv4 reads them: with zero padding a
    constant map is not constant at the borders, so one channel stays to carry the three;
    without padding (or with replicate padding) they fold into conv4's bias.
    conv4: filter 0 zero with bias 0.5 (ReLU → 0.5, folded through the pooling and Flatten
    into the Linear's bias), filter 3 zero with bias −1 (ReLU → 0).
    Linear 8: unit 4 reads nothing (ReLU(b) folded into the last Linear's bias).
    """
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 8×8 → 4×4
        nn.Conv2d(6, 4, 3, padding=padding, padding_mode=padding_mode),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),  # → 2×2
        nn.Flatten(),  # channel c is columns 4c … 4c + 3
        nn.Linear(16, 5),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(5, 3),
    ).double()
    conv0, bn, conv4, linear8 = model[0], model[1], model[4], model[8]
    with torch.no_grad():
        conv0.weight[:, 1] = 0
        conv0.weight[[1, 2, 4]] = 0
        conv0.bias.copy_(torch.tensor([0.1, 0.3, 0.2, -0.2, -0.1, 0.4]))
        bn.running_mean.copy_(torch.tensor([0.0, 0.3, 0.0, 0.1, 0.0, 0.0]))
        bn.running_var.copy_(torch.tensor([1.5, 1.0, 1.0, 0.5, 1.0, 2.0]))
        bn.weight.copy_(torch.tensor([1.2, 1.0, 1.0, 0.8, 2.0, 0.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.5, 0.7, 0.2, 1.0, 0.4]))
        conv4.weight[[0, 3]] = 0
        conv4.bias.copy_(torch.tensor([0.5, 0.1, -0.2, -1.0]))
        linear8.weight[4] = 0
        linear8.bias[4] = 0.3
    return model.eval()


def test_hand_built_cnn_with_known_dead_filters_zero_padding():
    model = _hand_built()
    pruned, report = prune(model, input_shape=(3, 8, 8), feature_names=["r", "g", "b"], measure=False)
    assert report.kept_features == [0, 2] and report.kept_feature_names == ["r", "b"]
    assert report.input_unit == "channels" and "input channels: 2 of 3 kept" in report.summary()
    # conv0: live filters 0 and 3, plus filter 2 carrying the constants of 2, 4 and 5
    assert report.widths_before == [6, 4, 5] and report.widths_after == [3, 2, 4]
    assert report.notes == [
        "layer 4: channel 2 kept to carry the constant output of 3 dead filter(s) into a zero-padded conv"
    ]
    assert pruned[0].weight.shape == (3, 2, 3, 3) and pruned[1].num_features == 3
    assert pruned[4].weight.shape == (2, 3, 3, 3) and pruned[8].weight.shape == (4, 8)
    _assert_same_outputs(model, pruned, report, (3, 8, 8))
    assert report.params_after == sum(p.numel() for p in pruned.parameters()) < report.params_before


@pytest.mark.parametrize(("padding", "padding_mode"), [(0, "zeros"), (1, "replicate"), (1, "circular")])
def test_constant_maps_fold_into_the_bias_when_every_position_sees_them_whole(padding, padding_mode):
    model = _hand_built(padding, padding_mode)
    pruned, report = prune(model, input_shape=(3, 8, 8), measure=False)
    assert report.widths_after == [2, 2, 4] and report.notes == []
    _assert_same_outputs(model, pruned, report, (3, 8, 8))


def test_float32_cnn_prunes_to_float32_with_equal_outputs():
    model = _hand_built().float()
    pruned, report = prune(model, input_shape=(3, 8, 8), measure=True, batch_size=8, repeats=3)
    assert all(p.dtype == torch.float32 for p in pruned.parameters())
    assert report.latency_device == "cpu" and "CPU latency" in report.summary()
    _assert_same_outputs(model, pruned, report, (3, 8, 8), atol=1e-5)


def test_conv1d_chain_without_flatten_and_a_layer_without_bias():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv1d(2, 5, 3, padding=1),
        nn.BatchNorm1d(5),
        nn.PReLU(5),
        nn.AvgPool1d(3, stride=1, padding=1),  # count_include_pad: a constant map is not constant at the ends
        nn.Conv1d(5, 3, 3, bias=False),
        nn.Tanh(),
        nn.Conv1d(3, 2, 1),
    ).double()
    with torch.no_grad():
        model[0].weight[[0, 3]] = 0  # constants (BN shift, then PReLU), carried by one kept channel
        model[1].running_var.fill_(0.7)
        model[4].weight[1] = 0  # tanh(0) = 0: no bias to fold, gone
    model.eval()
    pruned, report = prune(model, input_shape=(2, 16), measure=False)
    assert report.widths_after == [4, 2] and pruned[2].num_parameters == 4
    assert pruned[4].bias is None
    _assert_same_outputs(model, pruned, report, (2, 16))


def test_a_batchnorm_with_zero_gamma_removes_its_channel():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2)).double()
    with torch.no_grad():
        model[1].weight[[1, 2]] = 0  # network slimming: γ = 0 makes the channel the constant β
        model[1].bias[[1, 2]] = torch.tensor([0.5, -0.5], dtype=torch.float64)
    model.eval()
    pruned, report = prune(model, input_shape=(1, 8, 8), measure=False)
    assert report.widths_after == [2] and pruned[4].in_features == 72
    _assert_same_outputs(model, pruned, report, (1, 8, 8))


def test_a_cnn_that_reads_nothing_keeps_one_zeroed_channel():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1)).double().eval()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([-1.0, 0.5, 2.0]))
    pruned, report = prune(model, input_shape=(2, 6, 6), measure=False)
    assert report.widths_after == [1] and len(report.kept_features) == 1 and len(report.notes) == 2
    _assert_same_outputs(model, pruned, report, (2, 6, 6))


@st.composite
def sparse_cnns(draw):
    """A random float64 CNN (Conv1d or Conv2d; BatchNorm, activations, pooling, padding
    modes, Flatten and Linear) with dead filters, unused channels and γ = 0, and an input shape."""
    rng = random.Random(draw(st.integers(0, 2**31 - 1)))
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    dim = rng.choice([1, 2])
    conv, norm = (nn.Conv1d, nn.BatchNorm1d) if dim == 1 else (nn.Conv2d, nn.BatchNorm2d)
    pools = {
        1: [nn.MaxPool1d(2), nn.AvgPool1d(3, 1, padding=1), nn.AdaptiveAvgPool1d(3), nn.AdaptiveMaxPool1d(2)],
        2: [nn.MaxPool2d(2), nn.AvgPool2d(3, 1, padding=1), nn.AdaptiveAvgPool2d(2), nn.MaxPool2d(3, 1, padding=1)],
    }[dim]
    shape = (rng.randint(1, 3),) + (8,) * dim
    layers: list[nn.Module] = []
    channels = shape[0]
    for _ in range(rng.randint(1, 3)):
        out = rng.randint(1, 5)
        modes = ["zeros", "zeros", "reflect", "replicate", "circular"]
        layers.append(
            conv(channels, out, rng.choice([1, 3]), padding=rng.choice([0, 1]), bias=rng.random() < 0.8,
                 padding_mode=rng.choice(modes))
        )  # fmt: skip
        if rng.random() < 0.5:
            layers.append(norm(out))
        layers.append(rng.choice([nn.ReLU(), nn.Tanh(), nn.GELU(), nn.PReLU(out), nn.Identity(), nn.Sigmoid()]))
        if rng.random() < 0.4:
            layers.append(rng.choice(pools))
        channels = out
    try:
        with torch.no_grad():
            n_flat = nn.Sequential(*layers, nn.Flatten()).double().eval()(torch.zeros(1, *shape).double()).shape[1]
    except RuntimeError:  # the maps became smaller than a kernel
        assume(False)
    if rng.random() < 0.8:
        hidden = rng.randint(1, 5)
        layers += [nn.Flatten(), nn.Linear(n_flat, hidden), rng.choice([nn.ReLU(), nn.Tanh()]), nn.Linear(hidden, 2)]
    model = nn.Sequential(*layers).double()

    def randn(like):
        return torch.randn(like.shape, generator=generator, dtype=torch.float64)

    with torch.no_grad():
        for m in model:
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                m.weight.copy_(randn(m.weight))
                if m.weight.ndim > 2:
                    m.weight[torch.rand(m.weight.shape[0], generator=generator) < 0.5] = 0  # dead filters
                    m.weight[:, torch.rand(m.weight.shape[1], generator=generator) < 0.2] = 0  # unread channels
                else:
                    m.weight.mul_(torch.rand(m.weight.shape, generator=generator) > 0.3)
                if m.bias is not None:
                    m.bias.copy_(randn(m.bias))
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.weight.copy_(randn(m.weight) * (torch.rand(m.weight.shape, generator=generator) > 0.3))
                m.bias.copy_(randn(m.bias))
                m.running_mean.copy_(randn(m.running_mean))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator, dtype=torch.float64) + 0.5)
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(randn(m.weight))
    return model.eval(), shape


@settings(max_examples=40, deadline=None, derandomize=True)
@given(sparse_cnns(), st.integers(0, 2**31 - 1))
def test_pruned_cnn_gives_the_same_outputs(model_and_shape, seed):
    model, shape = model_and_shape
    pruned, report = prune(model, input_shape=shape, measure=False)
    _assert_same_outputs(model, pruned, report, shape, seed=seed)
    assert report.flops_after == flops_per_sample(pruned, (len(report.kept_features), *shape[1:]))
    # a layer without a bias gains one when a dead filter's constant is folded into it: the
    # only growth (it shows when nothing else goes, e.g. a one-filter layer that died)
    gained = [
        new.bias.numel()
        for new, old in zip(pruned, model)
        if hasattr(old, "bias") and old.bias is None and new.bias is not None
    ]
    assert report.params_after <= report.params_before + sum(gained)
    assert report.flops_after <= report.flops_before or gained


def test_flops_of_a_conv_are_counted_per_output_position():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 2, stride=2, bias=False), nn.Flatten())
    model.append(nn.Linear(3 * 9, 2))
    # conv0: 6×6 outputs, (2·(2·9) + 1)·4 per position; conv2: 3×3, 2·(4·4)·3; Linear: 2·27·2 + 2
    assert flops_per_sample(model, (2, 8, 8)) == 37 * 4 * 36 + 96 * 9 + 110
    with pytest.raises(InputError, match=r"input_shape must be the shape of one input sample, e\.g\. \(1, 8, 8\)"):
        flops_per_sample(model)
    model.train()
    flops_per_sample(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train(), (1, 5, 5))
    assert model.training  # the probe does not change the model's mode


def test_flops_probe_leaves_batchnorm_statistics_alone():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train()
    before = model[1].running_mean.clone()
    flops_per_sample(model, (1, 5, 5))
    assert torch.equal(model[1].running_mean, before) and model.training


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 1)),
            r"layer 0 \(Conv2d\) is a grouped",
        ),
        (
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False)),
            r"layer 1 \(BatchNorm2d\) normalizes with batch statistics",
        ),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(6, 1)), r"layer 1 \(Linear\) reads feature maps"),
        (
            nn.Sequential(nn.Flatten(), nn.Linear(64, 2)),
            r"layer 0 \(Flatten\) is a Flatten that does not follow a Conv",
        ),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Conv1d(2, 2, 1)), r"layer 2 \(Conv1d\) comes after the"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.LayerNorm(6)), r"layer 1 \(LayerNorm\) is not one of these layers"),
    ],
)
def test_unsupported_cnns_are_refused_naming_the_layer(model, message):
    with pytest.raises(
        TypeError, match=r"^prune supports an nn.Sequential of Linear and element-wise layers .*" + message
    ):
        prune(model, input_shape=(4, 8, 8), measure=False)


def test_input_shape_is_needed_and_checked_for_a_cnn():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 36, 1))
    with pytest.raises(InputError, match=r"^input_shape must be \(channels, \*spatial\) of one input sample with 3 "):
        prune(model, measure=False)
    with pytest.raises(InputError, match=r"input_shape must be .* with 3 channel\(s\) for this CNN, got \(1, 8, 8\)"):
        prune(model, input_shape=(1, 8, 8), measure=False)
    with pytest.raises(
        InputError, match=r"input_shape must be the shape of one sample the model accepts, got \(3, 9, 9\)"
    ):
        prune(model, input_shape=(3, 9, 9), measure=False)
    with pytest.raises(InputError, match=r"feature_names must have one name per input channel \(3\)"):
        prune(model, input_shape=(3, 8, 8), feature_names=["r", "g"], measure=False)


# ------------------------------------------------------------------ save / load
def test_pruned_cnns_save_and_load_weights_only(tmp_path):
    model = _hand_built().float()
    pruned, _ = prune(model, input_shape=(3, 8, 8), measure=False)
    conv1d = nn.Sequential(
        nn.Conv1d(2, 3, 3, padding="same", padding_mode="reflect"),
        nn.BatchNorm1d(3),
        nn.LeakyReLU(0.1),
        nn.MaxPool1d(2, ceil_mode=True),
        nn.AdaptiveMaxPool1d(2),
        nn.Flatten(),
        nn.PReLU(6),
    ).eval()
    for net, shape in ((pruned, (2, 8, 8)), (conv1d, (2, 9))):
        loaded, metadata = load_model(save_model(net, tmp_path / "cnn.safetensors", metadata={"shape": list(shape)}))
        assert metadata == {"shape": list(shape)} and [type(m) for m in loaded] == [type(m) for m in net]
        x = torch.randn(4, *shape)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def _with_description(blob: bytes, edit) -> bytes:
    """Re-write a model_bytes blob's architecture description (the tensors stay)."""
    from safetensors.torch import load, save

    from shrinkage.prune import _safetensors_metadata

    description = json.loads(_safetensors_metadata(blob)["shrinkage"])
    edit(description["shrinkage_model"])
    return save(load(blob), metadata={"shrinkage": json.dumps(description)})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["layers"][0].update(out=10**9),
            r"holds tensors that do not match its description: .*size mismatch",
        ),
        (lambda d: d["layers"][0].update(kernel_size="3"), r"a conv2d layer with a bad 'kernel_size': '3'"),
        (lambda d: d["layers"][0].update(exec="rm -rf /"), r"a conv2d layer with unknown field\(s\) \['exec'\]"),
        (lambda d: d["layers"][1].update(momentum=True), r"a batchnorm2d layer with a bad 'momentum': True"),
        (lambda d: d["layers"][2].update(type="eval"), r"describes an unknown layer type 'eval'"),
        (lambda d: d["layers"].pop(1), r"holds tensors that do not match its description"),
        (lambda d: d.update(layers={"0": 1}), r"describes its layers as dict, not a list"),
    ],
)
def test_a_bad_cnn_description_is_refused_before_anything_is_allocated(edit, message):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
    with pytest.raises(InputError, match=message):
        load_model(_with_description(model_bytes(net), edit))  # out=10**9 would be 36 GB if allocated


# ----------------------------------------------------------- training on digits
def test_filter_group_lasso_on_digits_kills_filters_that_prune_removes():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)  # 8×8 grey images
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )
    rule = Rule(GroupLasso(3e-3, groups="filter"), select=["0.weight", "3.weight"])
    reg = Regularizer(model, rule, mode="proximal")
    config = TrainConfig(lr=1e-2, batch_size=128, max_epochs=10, patience=10, restore_best=False)
    train(model, X[:1200], y[:1200], loss="cross_entropy", regularizer=reg, config=config)
    zero = [int((model[i].weight.flatten(1).norm(dim=1) == 0).sum()) for i in (0, 3)]
    report = reg.sparsity()
    assert [t.zero_rows for t in report.tensors] == zero and report.groups["group"] == (sum(zero), 32)
    assert sum(zero) >= 8  # filters killed
    pruned, sizes = prune(model, input_shape=(1, 8, 8), measure=False)
    assert sum(sizes.widths_after[:2]) <= 32 - sum(zero) + len(sizes.notes) and sizes.params_after < sizes.params_before
    X_test = X[1200:]
    with torch.no_grad():
        out, out_pruned = model(X_test), pruned(X_test[:, sizes.kept_features])
    torch.testing.assert_close(out_pruned, out, rtol=1e-5, atol=1e-5)
    accuracy = float((out_pruned.argmax(1) == y[1200:]).float().mean())
    assert accuracy > 0.8


def test_channel_dropout_passes_through_prune_and_save(tmp_path):
    """Dropout2d is the identity in eval mode: a CNN with it prunes and round-trips."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.2), nn.Flatten(), nn.Linear(4 * 64, 2)
    ).double()
    with torch.no_grad():
        model[0].weight[1] = 0
        model[0].bias[1] = 0
    model.eval()
    pruned, report = prune(model, input_shape=(1, 8, 8), measure=False)
    assert report.widths_after == [3]
    _assert_same_outputs(model, pruned, report, (1, 8, 8))
    save_model(pruned, tmp_path / "m.safetensors")
    again, _ = load_model(tmp_path / "m.safetensors")
    assert isinstance(again[2], nn.Dropout2d) and again[2].p == 0.2

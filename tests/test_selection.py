"""Which tensors a penalty touches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shrinkage.selection import NORM_LAYERS, describe_selector, select_parameters, selector_from_config


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(16, 8)
        self.norm = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 2)
        self.embed = nn.Embedding(5, 3)


def names(selected):
    return [n for n, _ in selected]


def test_default_selects_layer_weights_only():
    assert names(select_parameters(Net())) == ["conv.weight", "fc1.weight", "fc2.weight", "embed.weight"]


def test_default_skips_frozen_parameters():
    net = Net()
    net.fc1.weight.requires_grad_(False)
    assert "fc1.weight" not in names(select_parameters(net))


def test_glob_patterns_select_what_they_name_biases_included():
    net = Net()
    assert names(select_parameters(net, "fc*.bias")) == ["fc1.bias", "fc2.bias"]
    assert names(select_parameters(net, ["fc1.weight", "norm.*"])) == [
        "fc1.weight",
        "norm.weight",
        "norm.bias",
    ]


def test_module_types_select_their_non_bias_parameters():
    net = Net()
    assert names(select_parameters(net, nn.Linear)) == ["fc1.weight", "fc2.weight"]
    assert names(select_parameters(net, (nn.Conv2d, nn.LayerNorm))) == ["conv.weight", "norm.weight"]


def test_callable_selects():
    chosen = select_parameters(Net(), lambda name, p, m: isinstance(m, nn.Linear) and p.shape[0] == 2)
    assert names(chosen) == ["fc2.weight", "fc2.bias"]


def test_shared_parameter_is_selected_once():
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    net[1].weight = net[0].weight
    assert names(select_parameters(net)) == ["0.weight"]


@pytest.mark.parametrize(
    "select, error, message",
    [
        (
            "decoder.*",
            ValueError,
            "select pattern 'decoder.*' matches no parameter of the model; its parameters are 'conv.weight'",
        ),
        (["fc1.weight", "fc9.weight"], ValueError, "select pattern 'fc9.weight' matches no parameter"),
        (nn.GRU, ValueError, "matches no trainable parameter of the model"),
        (
            3,
            TypeError,
            "select must be None, a parameter-name pattern, a list of patterns, an nn.Module type or a callable, got 3",
        ),
        ([], TypeError, "select must be None"),
        (int, TypeError, "select must be None"),
        (lambda n, p, m: False, ValueError, "matches no trainable parameter"),
    ],
)
def test_bad_selectors(select, error, message):
    with pytest.raises(error) as info:
        select_parameters(Net(), select)
    assert message in str(info.value)


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got 'net'"):
        select_parameters("net")


def test_integer_and_complex_parameters_are_refused_by_name():
    net = nn.Linear(2, 2)
    net.register_parameter("counts", nn.Parameter(torch.ones(2, 2, dtype=torch.long), requires_grad=False))
    net.register_parameter("phase", nn.Parameter(torch.ones(2, 2, dtype=torch.complex64)))
    with pytest.raises(
        TypeError,
        match="parameter 'counts' must be a real floating-point tensor to be penalized, got dtype torch.int64",
    ):
        select_parameters(net, "counts")
    with pytest.raises(
        TypeError,
        match="parameter 'phase' must be a real floating-point tensor to be penalized, got dtype torch.complex64",
    ):
        select_parameters(net, "ph*")
    assert names(select_parameters(net)) == ["weight"]  # the default never picks them


def test_selector_configs_round_trip():
    for select in (None, "fc1.*", ["a", "b"], nn.Linear, (nn.Linear, nn.Conv2d)):
        config = describe_selector(select)
        again = selector_from_config(config)
        assert describe_selector(again) == config
    with pytest.raises(ValueError, match="is a callable and cannot be written to a config"):
        describe_selector(lambda n, p, m: True)


def test_selector_config_never_imports_new_modules():
    with pytest.raises(ValueError, match="an nn.Module class from an imported module"):
        selector_from_config({"modules": ["some_module_not_imported.Evil"]})


# ------------------------------------------------------------- the default: layer weights
class WithFreeParameters(nn.Module):
    """Free parameters beside layers: positions and a CLS token are not layer weights."""

    def __init__(self):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, 5, 4))
        self.cls_token = nn.Parameter(torch.randn(1, 1, 4))
        self.scale = nn.Parameter(torch.ones(4, 4))
        self.attn = nn.MultiheadAttention(4, 2, kdim=3, vdim=3)  # q/k/v_proj_weight, not one in_proj
        self.lstm = nn.LSTM(4, 3, proj_size=2)
        self.custom = Custom()


class Custom(nn.Module):
    """A user's own layer, its weight a bare nn.Parameter."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 4))
        self.bias = nn.Parameter(torch.randn(2))


def test_default_leaves_free_parameters_and_takes_every_kind_of_layer_weight():
    assert names(select_parameters(WithFreeParameters())) == [
        "attn.q_proj_weight",
        "attn.k_proj_weight",
        "attn.v_proj_weight",
        "attn.out_proj.weight",
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
        "lstm.weight_hr_l0",
        "custom.weight",
    ]
    # a name pattern selects the free ones when they should be penalized
    assert names(select_parameters(WithFreeParameters(), ["pos_embedding", "cls_token"])) == [
        "pos_embedding",
        "cls_token",
    ]


def test_default_takes_a_parametrized_weight_by_the_name_it_parametrizes():
    layer = nn.utils.parametrizations.weight_norm(nn.Linear(3, 2))
    # weight_norm's g (2, 1) and v (2, 3) are both the layer's weight
    assert names(select_parameters(nn.Sequential(layer))) == [
        "0.parametrizations.weight.original0",
        "0.parametrizations.weight.original1",
    ]


def _old_default(model):
    """The default selection before layer weights were told apart from free parameters."""
    return [
        n
        for n, p in model.named_parameters()
        if p.ndim >= 2 and p.requires_grad and not isinstance(model.get_submodule(n.rpartition(".")[0]), NORM_LAYERS)
    ]


def test_the_library_models_keep_their_selection():
    from shrinkage.models import MLP, SkipMLP

    for model in (MLP(5, (8, 4)), SkipMLP(5, (8,)), MLP(3, ()), nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))):
        assert names(select_parameters(model)) == _old_default(model)
    assert names(select_parameters(SkipMLP(5, (8,)))) == ["body.0.weight", "body.2.weight", "skip.weight"]


def test_the_study_networks_keep_their_selection():
    from types import SimpleNamespace

    from shrinkage.study.runner import _network

    config = SimpleNamespace(hidden=(8, 4))
    for task, classes in (("regression", None), ("multiclass", [0, 1, 2])):
        prepared = SimpleNamespace(X_train=torch.zeros(3, 6), table=SimpleNamespace(task=task, classes=classes))
        for kind in ("mlp", "skip_mlp"):
            model = _network(config, prepared, kind)()
            assert names(select_parameters(model)) == _old_default(model)

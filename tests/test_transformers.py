"""An attention model: what the default selection penalizes, exact zeros where (and only
where) it puts them, a sparsity report that says "not applicable" for input features,
and group lasso over attention heads and MLP units against the closed-form group prox."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from shrinkage import L1, GroupLasso, InputError, Regularizer, Rule
from shrinkage.selection import select_parameters

VOCAB, D, HEADS, FF, LENGTH, LAYERS = 12, 16, 4, 24, 6, 2


class Classifier(nn.Module):
    """A small ViT/BERT-style encoder: token embedding, a free positional parameter and a
    CLS token, pre-norm encoder layers, a linear head on the CLS position."""

    def __init__(self):
        super().__init__()
        self.pos_embedding = nn.Parameter(0.02 * torch.randn(1, LENGTH + 1, D))
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, D))
        self.embed = nn.Embedding(VOCAB, D)
        layer = nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.head = nn.Linear(D, 2)

    def forward(self, tokens):
        x = self.embed(tokens)  # (batch, LENGTH, D)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embedding
        return self.head(self.encoder(x)[:, 0])


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Classifier()


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
    labels = (tokens == 3).any(dim=1).long()  # does token 3 occur anywhere?
    return tokens, labels


def _layer_names(i):
    return [
        f"encoder.layers.{i}.self_attn.in_proj_weight",
        f"encoder.layers.{i}.self_attn.out_proj.weight",
        f"encoder.layers.{i}.linear1.weight",
        f"encoder.layers.{i}.linear2.weight",
    ]


DEFAULT = ["embed.weight", *_layer_names(0), *_layer_names(1), "head.weight"]


def test_default_selection_is_the_layer_weights(model):
    # the token table and every matmul weight; not the positions, the CLS token, the
    # biases (in_proj_bias included) or the layer norms
    assert [n for n, _ in select_parameters(model)] == DEFAULT


def test_free_parameters_are_selected_by_name(model):
    names = [n for n, _ in select_parameters(model, ["pos_embedding", "cls_token"])]
    assert names == ["pos_embedding", "cls_token"]


def test_the_prox_moves_only_the_selected_tensors(model):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = Regularizer(model, L1(0.05))
    reg.attach(opt)
    opt.zero_grad()
    (0.0 * model(_data(8)[0]).sum()).backward()  # a zero gradient: only the prox moves
    opt.step()
    for name, p in model.named_parameters():
        if name in DEFAULT:  # soft threshold by lr·λ = 0.005
            torch.testing.assert_close(p.detach(), torch.nn.functional.softshrink(before[name], 0.005))
        else:
            assert torch.equal(p.detach(), before[name]), name


def test_proximal_training_zeros_only_the_selected_tensors_and_reports_no_features(model):
    tokens, labels = _data()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    reg = Regularizer(model, L1(3e-3))
    reg.attach(opt)
    for _ in range(15):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(tokens), labels).backward()
        opt.step()
    params = dict(model.named_parameters())
    for name in DEFAULT[:-1]:  # (the 2×16 head, the smallest, may keep all its weights)
        assert (params[name] == 0).any(), name  # exact zeros from the prox
    # tensors that start non-zero and are not selected never get an exact zero
    untouched = ["pos_embedding", "cls_token", "head.bias"]
    untouched += [f"encoder.layers.{i}.{n}" for i in range(LAYERS) for n in ("linear1.bias", "norm1.weight")]
    for name in untouched:
        assert not (params[name] == 0).any(), name

    report = reg.sparsity()
    assert [t.name for t in report.tensors] == DEFAULT
    assert report.zeros > 0
    # a transformer's first weights are positions and a token table, not one column per
    # input feature: which features are used is not applicable
    assert report.input_parameter is None
    assert report.features_used is None and report.n_features is None and report.features_used_names is None
    as_dict = report.to_dict()
    assert as_dict["features_used"] is None and as_dict["n_features"] is None
    assert as_dict["features_used_names"] is None
    with pytest.raises(InputError, match="feature_names need the model's input weight"):
        reg.sparsity(feature_names=["a", "b"])


def _group_prox(v, groups, s):
    """Closed form: v_g · max(0, 1 − s·√|g| / ‖v_g‖) for column groups of v."""
    out = v.clone()
    for g in groups:
        block = v[:, g]
        norm = block.norm()
        out[:, g] = block * max(0.0, 1 - s * math.sqrt(block.numel()) / float(norm)) if norm > 0 else 0
    return out


def test_head_and_unit_groups_follow_the_closed_form_group_prox(model):
    # head h's output is columns h·dh … (h+1)·dh − 1 of out_proj.weight: a zero group
    # there removes the head; unit j's output is column j of linear2.weight
    dh = D // HEADS
    heads = [list(range(h * dh, (h + 1) * dh)) for h in range(HEADS)]
    lam, lr = 0.4, 0.1
    reg = Regularizer(
        model,
        [
            Rule(GroupLasso(lam, groups=heads), select="encoder.layers.*.self_attn.out_proj.weight"),
            Rule(GroupLasso(lam, groups="input"), select="encoder.layers.*.linear2.weight"),
        ],
    )
    with torch.no_grad():  # head 0 and units 0-2 of each layer nearly off: the prox should end them
        for layer in model.encoder.layers:
            layer.self_attn.out_proj.weight[:, :dh] *= 0.01
            layer.linear2.weight[:, :3] *= 0.01
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    after_sgd = {}
    # post-hooks run in registration order: this one sees the SGD step before the prox
    opt.register_step_post_hook(
        lambda o, a, k: after_sgd.update({n: p.detach().clone() for n, p in model.named_parameters()})
    )
    reg.attach(opt)
    tokens, labels = _data(32)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(tokens), labels).backward()
    opt.step()
    params = dict(model.named_parameters())
    units = [[j] for j in range(FF)]
    for i in range(LAYERS):
        out_proj = f"encoder.layers.{i}.self_attn.out_proj.weight"
        linear2 = f"encoder.layers.{i}.linear2.weight"
        expected_heads = _group_prox(after_sgd[out_proj], heads, lr * lam)
        expected_units = _group_prox(after_sgd[linear2], units, lr * lam)
        torch.testing.assert_close(params[out_proj].detach(), expected_heads, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(params[linear2].detach(), expected_units, rtol=1e-5, atol=1e-7)
    report = reg.sparsity()
    assert reg.labels() == ["group", "group_2"]
    assert report.groups["group"][1] == LAYERS * HEADS and report.groups["group_2"][1] == LAYERS * FF
    zero_groups = report.groups["group"][0] + report.groups["group_2"][0]
    assert report.groups["group"][0] >= LAYERS and report.groups["group_2"][0] >= 3 * LAYERS
    assert zero_groups < LAYERS * (HEADS + FF)  # and leaves the others
    removed = sum(int((params[f"encoder.layers.{i}.linear2.weight"] == 0).all(dim=0).sum()) for i in range(LAYERS))
    removed += sum(
        int((params[f"encoder.layers.{i}.self_attn.out_proj.weight"][:, h] == 0).all())
        for i in range(LAYERS)
        for h in [slice(k * dh, (k + 1) * dh) for k in range(HEADS)]
    )
    assert removed == zero_groups

"""The Regularizer: modes against torch's own optimizers, hooks, reports, configs, errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from shrinkage import L1, L2, ElasticNet, GroupLasso, Regularizer, Rule, SparseGroupLasso
from shrinkage.optim import ExactStepWarning

PENALTIES = [
    L1(0.05),
    L2(0.05),
    ElasticNet(0.05, l1_ratio=0.3),
    GroupLasso(0.05, groups="input"),
    GroupLasso(0.05, groups="unit"),
    SparseGroupLasso(0.05, l1_ratio=0.5),
]


def mlp(seed: int = 0, dtype=torch.float64) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2)).to(dtype)


def data(n: int = 32, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g, dtype=dtype), torch.randn(n, 2, generator=g, dtype=dtype)


def data_loss(model, X, y):
    return nn.functional.mse_loss(model(X), y)


# --------------------------------------------------------------- loss vs gradient mode
@pytest.mark.parametrize("penalty", PENALTIES, ids=repr)
def test_loss_and_gradient_modes_give_the_same_gradients_with_exact_zeros(penalty):
    X, y = data()
    grads = {}
    for mode in ("loss", "gradient"):
        model = mlp()
        with torch.no_grad():  # exact zeros: a column, a row, single weights
            model[0].weight[:, 2] = 0.0
            model[0].weight[3, :] = 0.0
            model[2].weight[1, 1] = 0.0
        reg = Regularizer(model, penalty, mode=mode)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # a step that moves nothing
        reg.attach(opt)
        opt.zero_grad()
        loss = data_loss(model, X, y)
        if reg.in_loss:
            loss = loss + reg.penalty()
        loss.backward()
        opt.step()  # gradient mode adds the penalty's gradient here
        grads[mode] = [p.grad.clone() for p in model.parameters()]
    for a, b in zip(grads["loss"], grads["gradient"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------ equivalences with torch.optim
@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_l2_gradient_mode_reproduces_sgd_weight_decay(momentum, nesterov):
    lam = 0.03
    X, y = data()
    ours, theirs = mlp(), mlp()
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.05, momentum=momentum, nesterov=nesterov)
    Regularizer(ours, L2(lam), mode="gradient").attach(opt_ours)
    # torch decays every parameter; we penalize only weights, so give torch two groups
    opt_theirs = torch.optim.SGD(
        [
            {"params": [theirs[0].weight, theirs[2].weight], "weight_decay": 2 * lam},
            {"params": [theirs[0].bias, theirs[2].bias]},
        ],
        lr=0.05,
        momentum=momentum,
        nesterov=nesterov,
    )
    for _ in range(25):
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            data_loss(model, X, y).backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


def test_decoupled_mode_reproduces_adamw():
    wd = 0.1
    X, y = data()
    ours, theirs = mlp(), mlp()
    opt_ours = torch.optim.Adam(ours.parameters(), lr=0.01)
    Regularizer(ours, L2(wd / 2), mode="decoupled").attach(opt_ours)
    opt_theirs = torch.optim.AdamW(
        [
            {"params": [theirs[0].weight, theirs[2].weight], "weight_decay": wd},
            {"params": [theirs[0].bias, theirs[2].bias], "weight_decay": 0.0},
        ],
        lr=0.01,
    )
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5) for o in (opt_ours, opt_theirs)]
    for _ in range(25):
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            data_loss(model, X, y).backward()
            opt.step()
        for s in schedulers:
            s.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


# ------------------------------------------------------------- the step the prox uses
def test_proximal_step_follows_scheduler_and_param_groups():
    w1 = nn.Parameter(torch.tensor([1.0, -1.0, 0.3], dtype=torch.float64))
    w2 = nn.Parameter(torch.tensor([[1.0, -1.0, 0.3]], dtype=torch.float64))
    holder = nn.Module()
    holder.a, holder.b = w1, w2
    opt = torch.optim.SGD([{"params": [w1], "lr": 0.2}, {"params": [w2], "lr": 0.1}])
    Regularizer(holder, Rule(L1(1.0), select="*")).attach(opt)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    expected1, expected2 = w1.detach().clone(), w2.detach().clone()
    for step in range(3):
        opt.zero_grad()
        (0.0 * (w1.sum() + w2.sum())).backward()  # zero gradient: only the prox moves
        opt.step()
        expected1 = torch.nn.functional.softshrink(expected1, 0.2 * 0.5**step)
        expected2 = torch.nn.functional.softshrink(expected2, 0.1 * 0.5**step)
        scheduler.step()
        assert torch.allclose(w1.detach(), expected1) and torch.allclose(w2.detach(), expected2)


def test_proximal_step_with_adam_uses_its_per_element_step():
    torch.manual_seed(3)
    w = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    holder = nn.Module()
    holder.w = w
    lam, lr, eps, beta2 = 0.2, 0.05, 1e-8, 0.999
    opt = torch.optim.Adam([w], lr=lr, eps=eps, betas=(0.9, beta2))
    after_adam = {}
    # post-hooks run in registration order: this one sees Adam's update before the prox
    opt.register_step_post_hook(lambda o, a, k: after_adam.update(w=w.detach().clone()))
    Regularizer(holder, Rule(L1(lam), select="w")).attach(opt)  # a free parameter: named
    target = torch.randn(4, 3, dtype=torch.float64)
    for t in range(1, 4):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        opt.step()
        v = opt.state[w]["exp_avg_sq"]
        step = lr / ((v / (1 - beta2**t)).sqrt() + eps)  # Adam's own per-element step
        expected = torch.sign(after_adam["w"]) * (after_adam["w"].abs() - lam * step).clamp_min(0)
        torch.testing.assert_close(w.detach(), expected, rtol=1e-12, atol=1e-14)


def test_sgd_momentum_prox_step_is_lr_over_one_minus_momentum():
    w = nn.Parameter(torch.tensor([[5.0]], dtype=torch.float64))
    holder = nn.Module()
    holder.w = w
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.75, dampening=0.2)
    Regularizer(holder, Rule(L1(1.0), select="w")).attach(opt)  # a free parameter: named
    opt.zero_grad()
    (0.0 * w.sum()).backward()
    opt.step()
    # threshold λ·lr·(1 − dampening)/(1 − momentum) = 0.1·0.8/0.25 = 0.32
    assert w.item() == pytest.approx(5.0 - 0.32)


def test_unknown_optimizer_warns_in_proximal_mode():
    model = mlp()
    with pytest.warns(ExactStepWarning, match="does not know the per-element step of NAdam"):
        Regularizer(model, L1(0.1)).attach(torch.optim.NAdam(model.parameters()))


def test_centered_rmsprop_warns_in_proximal_mode():
    """Its variance v − ḡ² vanishes where the data gradient settles at −λ·sign(w)."""
    model = mlp()
    with pytest.warns(ExactStepWarning, match=r"centered=True\) does not settle"):
        Regularizer(model, L1(0.1)).attach(torch.optim.RMSprop(model.parameters(), centered=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExactStepWarning)
        plain = mlp()
        Regularizer(plain, L1(0.1)).attach(torch.optim.RMSprop(plain.parameters()))


# ------------------------------------------------------------------- mode ``loss``
def test_loss_mode_penalty_is_differentiable_and_forgetting_it_raises():
    model = mlp()
    reg = Regularizer(model, L1(0.1), mode="loss")
    assert reg.penalty().requires_grad
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg.attach(opt)
    X, y = data()
    (data_loss(model, X, y) + reg.penalty()).backward()
    opt.step()  # fine
    opt.zero_grad()
    data_loss(model, X, y).backward()
    with pytest.raises(
        RuntimeError, match=r"reg.penalty\(\) was not added to the loss since the last optimizer.step\(\)"
    ):
        opt.step()


def test_penalty_is_detached_outside_loss_mode_and_refused_before_attach():
    model = mlp()
    reg = Regularizer(model, L1(0.1))
    with pytest.raises(RuntimeError, match="call reg.attach\\(optimizer\\) first"):
        reg.penalty()
    with torch.no_grad():
        assert reg.penalty().item() > 0  # logging without an optimizer is fine
    reg.attach(torch.optim.SGD(model.parameters(), lr=0.1))
    assert not reg.penalty().requires_grad


def test_values_per_term_and_sum():
    model = mlp()
    reg = Regularizer(model, [Rule(L1(0.1), select="0.weight"), Rule(L2(0.2), select="2.weight")])
    values = reg.values()
    assert list(values) == ["l1", "l2"]
    assert values["l1"] == pytest.approx(0.1 * model[0].weight.abs().sum().item())
    assert values["l2"] == pytest.approx(0.2 * (model[2].weight ** 2).sum().item())
    with torch.no_grad():
        assert reg.penalty().item() == pytest.approx(sum(values.values()))


def test_rules_with_their_own_modes():
    model = mlp()
    reg = Regularizer(
        model,
        [Rule(L1(0.1), select="0.weight"), Rule(L2(0.05), select="2.weight", mode="decoupled")],
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    reg.attach(opt)
    X, y = data()
    for _ in range(200):
        opt.zero_grad()
        data_loss(model, X, y).backward()
        opt.step()
    assert (model[0].weight == 0).any()  # proximal L1 zeroes
    assert (model[2].weight != 0).all()  # decoupled L2 shrinks


# -------------------------------------------------------------------------- sparsity
def test_sparsity_report_counts_exactly():
    model = mlp(dtype=torch.float32)
    with torch.no_grad():
        model[0].weight[:, [1, 4]] = 0.0  # inputs 1 and 4 unused
        model[0].weight[0, :] = 0.0  # unit 0 dead
        model[2].weight[1, 3] = 0.0
    reg = Regularizer(model, GroupLasso(0.1, groups="input"))
    report = reg.sparsity(feature_names=list("abcdef"))
    assert report.input_parameter == "0.weight"
    assert report.features_used == [0, 2, 3, 5]
    assert report.features_used_names == ["a", "c", "d", "f"]
    first, second = report.tensors
    assert (first.zeros, first.zero_rows, first.zero_columns) == (5 * 2 + 4, 1, 2)
    assert (second.zeros, second.zero_rows, second.zero_columns) == (1, 0, 0)
    assert report.fraction_zero == pytest.approx(15 / 40)
    assert report.dead_units == 1
    assert report.groups == {"group": (2 + 0, 6 + 5)}
    assert report.to_dict()["features_used_names"] == ["a", "c", "d", "f"]
    with pytest.raises(ValueError, match=r"feature_names must have one name per input feature \(6\), got 2"):
        reg.sparsity(feature_names=["a", "b"])


# ---------------------------------------------------------------------------- config
def test_config_round_trips():
    model = mlp()
    reg = Regularizer(
        model,
        [
            Rule(GroupLasso(0.1, groups=[[0, 1], [2, 3, 4, 5]]), select="0.weight"),
            Rule(ElasticNet(0.01, 0.3), select=nn.Linear, overlap=True, mode="gradient"),
        ],
        mode="proximal",
    )
    config = reg.to_dict()
    again = Regularizer.from_dict(mlp(), config)
    assert again.to_dict() == config
    assert again.parameter_names() == reg.parameter_names()
    assert again.values() == pytest.approx(reg.values())
    import json

    assert json.loads(json.dumps(config)) == config


def test_callable_selection_has_no_config():
    reg = Regularizer(mlp(), Rule(L1(0.1), select=lambda n, p, m: p.ndim == 2))
    with pytest.raises(ValueError, match="cannot be written to a config"):
        reg.to_dict()


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "build, error, message",
    [
        (
            lambda m: Regularizer(m, L1(0.1), mode="prox"),
            ValueError,
            "mode must be one of 'loss', 'gradient', 'proximal', 'decoupled', got 'prox'",
        ),
        (
            lambda m: Regularizer(m, L1(0.1), mode="decoupled"),
            ValueError,
            "mode='decoupled' is weight decay and supports only L2, got L1(lambda_=0.1)",
        ),
        (lambda m: Regularizer(m, GroupLasso(0.1), mode="decoupled"), ValueError, "supports only L2"),
        (
            lambda m: Regularizer(m, "l1"),
            TypeError,
            "penalties must be a Penalty, a Rule or a list of them, got 'l1'",
        ),
        (
            lambda m: Regularizer(m, []),
            ValueError,
            "penalties must be a Penalty, a Rule or a list of them, got []",
        ),
        (
            lambda m: Regularizer(m, Rule(L1(0.1), select="nothing*")),
            ValueError,
            "select pattern 'nothing*' matches no parameter",
        ),
        (
            lambda m: Regularizer(m, [L1(0.1), L2(0.1)]),
            ValueError,
            "parameter '0.weight' is selected by rule 0 and rule 1; pass overlap=True on rule 1",
        ),
        (
            lambda m: Regularizer(m, GroupLasso(0.1), input_parameter="9.weight"),
            ValueError,
            "input_parameter must be the name of a parameter of the model, got '9.weight'",
        ),
        (lambda m: Regularizer("model", L1(0.1)), TypeError, "model must be a torch.nn.Module, got 'model'"),
        (
            lambda m: Regularizer(m, Rule(GroupLasso(0.1), select="*.bias")),
            ValueError,
            "GroupLasso on parameter '0.bias': group penalties need a tensor with ndim >= 2",
        ),
        (
            lambda m: Regularizer(m, Rule(L1(0.1), mode="sideways")),
            ValueError,
            "Rule.mode must be one of 'loss', 'gradient', 'proximal', 'decoupled', got 'sideways'",
        ),
    ],
)
def test_bad_construction(build, error, message):
    with pytest.raises(error) as info:
        build(mlp())
    assert message in str(info.value)


def test_overlap_must_be_declared_and_then_works():
    model = mlp()
    reg = Regularizer(model, [L1(0.1), Rule(L2(0.1), overlap=True)])
    assert reg.parameter_names() == {"l1": ["0.weight", "2.weight"], "l2": ["0.weight", "2.weight"]}
    assert [n for n, _ in reg.named_parameters()] == ["0.weight", "2.weight"]  # each tensor once
    assert [p.shape for p in reg.parameters()] == [model[0].weight.shape, model[2].weight.shape]


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda ps: torch.optim.LBFGS(ps), ValueError, "cannot be used with LBFGS"),
        (lambda ps: torch.optim.SGD(ps, lr=0.1, maximize=True), ValueError, "maximize=True"),
        (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=1.0), ValueError, "must have momentum < 1"),
        (lambda ps: "sgd", TypeError, "optimizer must be a torch.optim.Optimizer, got 'sgd'"),
        (
            lambda ps: torch.optim.SGD([next(iter(ps))], lr=0.1),
            ValueError,
            "parameter(s) ['2.weight'] are penalized but not in the optimizer's param groups",
        ),
    ],
)
def test_bad_optimizers(make, error, message):
    model = mlp()
    with pytest.raises(error) as info:
        Regularizer(model, L1(0.1)).attach(make(model.parameters()))
    assert message in str(info.value)


def test_attach_twice_and_detach():
    model = mlp()
    reg = Regularizer(model, L1(0.5))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    handle = reg.attach(opt)
    with pytest.raises(RuntimeError, match="already attached"):
        reg.attach(opt)
    handle.remove()
    before = model[0].weight.detach().clone()
    opt.zero_grad()
    (0.0 * model[0].weight.sum()).backward()
    opt.step()
    assert torch.equal(model[0].weight, before)  # detached: no prox


def test_lambda_zero_is_exactly_no_penalty():
    X, y = data()
    a, b = mlp(), mlp()
    oa, ob = torch.optim.Adam(a.parameters(), lr=0.01), torch.optim.Adam(b.parameters(), lr=0.01)
    Regularizer(a, GroupLasso(0.0)).attach(oa)
    for _ in range(5):
        for model, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            data_loss(model, X, y).backward()
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_float32_and_float64_parameters_in_one_model():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1).double())
    reg = Regularizer(model, L1(0.1))
    expected = 0.1 * (model[0].weight.abs().sum().double() + model[1].weight.abs().sum())
    with torch.no_grad():
        assert reg.penalty().item() == pytest.approx(expected.item(), rel=1e-6)
    assert math.isfinite(reg.values()["l1"])


def test_regularizer_keeps_no_parameter_sized_buffers():
    """Attached and stepping, the regularizer holds only small tensors of its own."""
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 1))
    reg = Regularizer(
        model,
        [
            Rule(GroupLasso(0.1, groups=[[0, 1]] + [[j] for j in range(2, 64)]), select="0.weight"),
            Rule(L1(0.1), select="2.weight"),
        ],
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    reg.attach(opt)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 64)).sum().backward()
        opt.step()
    params = {id(p) for p in model.parameters()}
    seen, own = set(), 0
    stack = [reg]
    while stack:  # every tensor reachable from the regularizer's own attributes
        obj = stack.pop()
        if id(obj) in seen or obj is model or obj is opt:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            own += 0 if id(obj) in params else obj.numel()
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__"):
            stack.extend(vars(obj).values())
    # the first layer's column labels (64) and √|g| per group (63); the weights have 8320
    assert own == 64 + 63


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: Regularizer.from_dict(m, {"rules": "x"}), "config must be a dict with a list of 'rules'"),
        (lambda m: Regularizer.from_dict(m, {"rules": ["x"]}), r"config\['rules'\]\[0\] must be a dict with 'penalty'"),
        (lambda m: Regularizer(m, L1(0.1)).sparsity(feature_names="abcd"), "feature_names must be a sequence of names"),
    ],
)
def test_bad_configs_and_names_get_the_message_shape(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call(mlp())


def test_a_list_of_module_types_selects_like_a_tuple():
    model = mlp()
    as_tuple = Regularizer(model, Rule(L1(0.1), select=(torch.nn.Linear,))).parameter_names()
    as_list = Regularizer(model, Rule(L1(0.1), select=[torch.nn.Linear]))
    assert as_list.parameter_names() == as_tuple
    assert Regularizer.from_dict(model, as_list.to_dict()).parameter_names() == as_tuple

"""Penalty classes: values, gradients equal to autograd, proxes, configs, bad input."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from shrinkage import L1, L2, ElasticNet, GroupLasso, SparseGroupLasso, make_penalty
from shrinkage.penalties import PENALTIES

ALL = [
    L1(0.3),
    L2(0.3),
    ElasticNet(0.3, l1_ratio=0.25),
    GroupLasso(0.3, groups="input"),
    GroupLasso(0.3, groups="unit"),
    GroupLasso(0.3, groups=[[0, 3], [1], [2, 4]]),
    SparseGroupLasso(0.3, l1_ratio=0.4, groups="input"),
    GroupLasso(0.3, groups="filter"),
    GroupLasso(0.3, groups="channel"),
    SparseGroupLasso(0.3, l1_ratio=0.4, groups="filter"),
]


def _tensors_with_exact_zeros() -> list[torch.Tensor]:
    a = torch.randn(4, 5, dtype=torch.float64)
    a[:, 1] = 0.0  # a zero input group
    a[2, :] = 0.0  # a zero unit group
    a[0, 3] = 0.0  # a single zero
    b = torch.randn(3, 5, dtype=torch.float64)
    b[1, 4] = 0.0
    return [a.requires_grad_(), b.requires_grad_()]


@pytest.mark.parametrize("penalty", ALL, ids=repr)
def test_add_grad_equals_autograd_including_at_zeros(penalty):
    params = _tensors_with_exact_zeros()
    named = [(f"p{i}", p) for i, p in enumerate(params)]
    layouts = penalty.layouts(named)
    penalty.value(params, layouts).backward()
    autograd = [p.grad.clone() for p in params]
    for p in params:
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        penalty.add_grad_(params, layouts)
    for got, want in zip((p.grad for p in params), autograd):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        assert not torch.isnan(got).any()


def test_values_against_definitions():
    w = torch.tensor([[1.0, -2.0], [0.0, 2.0]], dtype=torch.float64)
    assert L1(0.5).value([w]).item() == pytest.approx(0.5 * 5)
    assert L2(0.5).value([w]).item() == pytest.approx(0.5 * 9)
    assert ElasticNet(0.5, l1_ratio=0.2).value([w]).item() == pytest.approx(0.5 * (0.2 * 5 + 0.8 * 9))
    group = GroupLasso(0.5, groups="input")
    layouts = group.layouts([("w", w)])
    # columns: ‖(1, 0)‖ = 1 and ‖(−2, 2)‖ = √8, each of size 2
    assert group.value([w], layouts).item() == pytest.approx(0.5 * math.sqrt(2) * (1 + math.sqrt(8)))


def test_elastic_net_ends_are_l1_and_l2():
    w = [torch.randn(3, 4, dtype=torch.float64)]
    assert ElasticNet(0.7, l1_ratio=1.0).value(w).item() == pytest.approx(L1(0.7).value(w).item())
    assert ElasticNet(0.7, l1_ratio=0.0).value(w).item() == pytest.approx(L2(0.7).value(w).item())


def test_prox_closed_forms_with_step():
    v = torch.tensor([-3.0, -0.2, 0.0, 0.5, 2.0], dtype=torch.float64)
    s, lam = 0.5, 2.0  # threshold s·λ = 1
    x = v.clone()
    L1(lam).prox_([x], step=[s])
    assert torch.equal(x, torch.nn.functional.softshrink(v, 1.0))
    x = v.clone()
    L2(lam).prox_([x], step=[s])
    torch.testing.assert_close(x, v / (1 + 2 * s * lam))
    x = v.clone()
    ElasticNet(lam, l1_ratio=0.5).prox_([x], step=[s])
    torch.testing.assert_close(x, torch.nn.functional.softshrink(v, 0.5) / (1 + 2 * s * lam * 0.5))


def test_sparse_group_prox_is_soft_threshold_then_group_shrink():
    v = torch.tensor([[3.0, 0.4], [-4.0, 0.3]], dtype=torch.float64)
    x = v.clone()
    penalty = SparseGroupLasso(1.0, l1_ratio=0.5, groups="input")
    penalty.prox_([x], penalty.layouts([("v", x)]), step=[0.4])
    soft = torch.nn.functional.softshrink(v, 0.2)  # column 1 becomes (0.2, 0.1)
    norms = soft.norm(dim=0)
    factor = (1 - 0.2 * math.sqrt(2) / norms).clamp_min(0)  # √2·0.2 ≈ 0.283 > ‖(0.2, 0.1)‖
    torch.testing.assert_close(x, soft * factor)
    assert torch.all(x[:, 1] == 0)


@pytest.mark.parametrize("kernels", [True, False], ids=["kernels", "torch code"])
def test_sparse_group_prox_ends_are_l1_and_group_lasso_with_per_element_steps(kernels):
    """``l1_ratio=1`` is L1's prox and ``l1_ratio=0`` the group lasso's, also with Adam's
    per-element steps: the group part at scale 0 is the identity (it was NaN in torch's
    code, a threshold of 0 divided by)."""
    from shrinkage import _numba

    generator = torch.Generator().manual_seed(0)
    v = torch.randn(6, 5, generator=generator)
    v[:, 1] *= 0.05  # a group the group lasso zeroes
    steps = torch.rand(6, 5, generator=generator)
    for ratio, same in ((1.0, L1(0.4)), (0.0, GroupLasso(0.4, groups="input"))):
        penalty = SparseGroupLasso(0.4, l1_ratio=ratio, groups="input")
        got, expected = v.clone(), v.clone()
        layouts = penalty.layouts([("v", got)])
        with contextlib.nullcontext() if kernels else _numba.unused():
            penalty.prox_([got], layouts, step=[steps])
            same.prox_([expected], layouts if isinstance(same, GroupLasso) else None, step=[steps])
        assert torch.isfinite(got).all() and (got == 0).any()
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("penalty", ALL, ids=repr)
def test_config_round_trip(penalty):
    config = penalty.get_config()
    again = make_penalty(config)
    assert again == penalty and again.get_config() == config
    assert penalty.with_lambda(0.01).lambda_ == 0.01
    assert type(penalty.with_lambda(0.01)) is type(penalty)


def test_make_penalty_by_name():
    assert make_penalty("elasticnet", lambda_=0.1, l1_ratio=0.2) == ElasticNet(0.1, 0.2)
    assert sorted(PENALTIES) == ["elasticnet", "group", "hierarchical", "l1", "l2", "sparse_group"]


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: L1(-1.0), ValueError, "lambda_ must be a finite number >= 0, got -1.0"),
        (lambda: L1(float("nan")), ValueError, "lambda_ must be a finite number >= 0, got nan"),
        (lambda: L2(float("inf")), ValueError, "lambda_ must be a finite number >= 0, got inf"),
        (lambda: L1("0.1"), TypeError, "lambda_ must be a finite number >= 0, got '0.1'"),
        (lambda: L1(None), TypeError, "lambda_ must be a finite number >= 0, got None"),
        (lambda: L1(True), TypeError, "lambda_ must be a finite number >= 0, got True"),
        (lambda: L1(1 + 2j), TypeError, "lambda_ must be a finite number >= 0, got (1+2j)"),
        (
            lambda: ElasticNet(0.1, l1_ratio=1.5),
            ValueError,
            "l1_ratio must be a finite number in [0, 1], got 1.5",
        ),
        (
            lambda: ElasticNet(0.1, l1_ratio=-0.1),
            ValueError,
            "l1_ratio must be a finite number in [0, 1], got -0.1",
        ),
        (
            lambda: SparseGroupLasso(0.1, l1_ratio=2),
            ValueError,
            "l1_ratio must be a finite number in [0, 1], got 2",
        ),
        (
            lambda: GroupLasso(0.1, groups="rows"),
            ValueError,
            "groups must be one of 'input', 'unit', 'channel', 'filter', got 'rows'",
        ),
        (
            lambda: SparseGroupLasso(0.1, groups="filters"),
            ValueError,
            "groups must be one of 'input', 'unit', 'channel', 'filter', got 'filters'",
        ),
        (lambda: GroupLasso(0.1, groups=3), TypeError, "groups must be 'input', 'unit' or a list of lists"),
        (lambda: GroupLasso(0.1, groups=[]), ValueError, "groups must be 'input', 'unit' or a list of lists"),
        (
            lambda: make_penalty("lasso"),
            ValueError,
            "penalty must be one of 'l1', 'l2', 'elasticnet', 'group', 'sparse_group', 'hierarchical', got 'lasso'",
        ),
        (lambda: make_penalty(3), TypeError, "penalty must be one of"),
        (lambda: make_penalty("l1", rho=2), TypeError, "penalty 'l1' got an unknown argument"),
    ],
)
def test_bad_input_messages(build, error, message):
    with pytest.raises(error) as info:
        build()
    assert message in str(info.value)


def test_group_penalty_on_a_vector_names_the_parameter():
    with pytest.raises(
        ValueError, match=r"GroupLasso on parameter 'bias': group penalties need a tensor with ndim >= 2"
    ):
        GroupLasso(0.1).layouts([("bias", torch.zeros(3))])


# ------------------------------------------------------------- conv weights (CNNs)
def _conv_weight() -> torch.Tensor:
    """A Conv2d(4, 3, kernel_size=(2, 3)) weight ``(out=3, in=4, 2, 3)`` with a zero filter and channel."""
    w = torch.randn(3, 4, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w[1] = 0.0  # filter 1
    w[:, 2] = 0.0  # input channel 2
    w[0] *= 0.05  # a small filter the prox zeroes
    return w


@pytest.mark.parametrize(("name", "axis"), [("filter", 0), ("channel", 1)])
def test_group_prox_on_a_conv_weight_is_the_closed_form_per_filter_or_channel(name, axis):
    w = _conv_weight()
    s = 0.08  # η·λ
    # closed form: v_g·max(0, 1 − s√|g|/‖v_g‖), g = a filter W[o] (4·2·3 weights) or a channel W[:, c] (3·2·3)
    groups = w.movedim(axis, 0)
    size = groups[0].numel()
    norms = groups.flatten(1).norm(dim=1)
    factor = (1 - s * math.sqrt(size) / norms).clamp(min=0).nan_to_num(0.0)  # a zero group stays zero
    want = (groups * factor.view(-1, 1, 1, 1)).movedim(0, axis)
    penalty = GroupLasso(1.0, groups=name)
    got = w.clone()
    with torch.no_grad():
        penalty.prox_([got], penalty.layouts([("conv.weight", got)]), step=[s])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert int((got.movedim(axis, 0).flatten(1).norm(dim=1) == 0).sum()) == int((factor == 0).sum()) >= 1
    if name == "filter":
        assert (got[0] == 0).all() and (got[1] == 0).all() and (got[2] != 0).any()
    # value: Σ_g √|g|·‖w_g‖
    assert penalty.value([w], penalty.layouts([("w", w)])).item() == pytest.approx(math.sqrt(size) * norms.sum().item())


@pytest.mark.parametrize(("alias", "same"), [("filter", "unit"), ("channel", "input")])
def test_conv_group_names_are_the_unit_and_input_layouts(alias, same):
    w = _conv_weight().requires_grad_()
    for cls in (GroupLasso, lambda lam, groups: SparseGroupLasso(lam, l1_ratio=0.3, groups=groups)):
        a, b = cls(0.2, groups=alias), cls(0.2, groups=same)
        assert a.layouts([("w", w)]) == b.layouts([("w", w)])
        assert a.value([w], a.layouts([("w", w)])).item() == b.value([w], b.layouts([("w", w)])).item()
        assert a.zero_threshold([w], a.layouts([("w", w)])) == b.zero_threshold([w], b.layouts([("w", w)]))
        assert a.get_config()["groups"] == alias and make_penalty(a.get_config()) == a  # kept as given
        assert a != b

"""The regularizer in ordinary training loops, against hand-written reference loops.

Each test builds the same training twice: once with ``Regularizer.attach`` and once by
hand (the optimizer step, then the penalty's closed form applied with the step's own
learning rate), and asks for equal weights.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from shrinkage import L1, L2, Regularizer, Rule
from shrinkage.optim import DoubleRegularizationWarning
from shrinkage.train import make_optimizer


def _soft_threshold(w: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.sign(w) * torch.clamp(w.abs() - threshold, min=0.0)


def _model() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(6, 1)


def _zero_grad_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """One step with zero gradients: only the penalty moves the weights."""
    optimizer.zero_grad()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()


@pytest.mark.parametrize("order", ["attach, then restore", "restore, then attach"])
def test_a_restored_checkpoint_sets_the_learning_rate_of_the_prox(order):
    """Build → attach → load_state_dict (the usual order) must use the restored lr."""
    model = _model()
    saved = torch.optim.SGD(model.parameters(), lr=0.001).state_dict()  # the checkpoint: lr 1e-3
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    reg = Regularizer(model, L1(0.1))
    if order == "attach, then restore":
        reg.attach(optimizer)
        optimizer.load_state_dict(saved)
    else:
        optimizer.load_state_dict(saved)
        reg.attach(optimizer)
    before = model.weight.detach().clone()
    _zero_grad_step(model, optimizer)
    torch.testing.assert_close(model.weight.detach(), _soft_threshold(before, 0.001 * 0.1), rtol=0, atol=1e-7)


def test_decoupled_decay_follows_a_restored_learning_rate():
    model = _model()
    saved = torch.optim.SGD(model.parameters(), lr=0.01).state_dict()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    Regularizer(model, L2(0.5), mode="decoupled").attach(optimizer)
    optimizer.load_state_dict(saved)
    before = model.weight.detach().clone()
    _zero_grad_step(model, optimizer)
    torch.testing.assert_close(model.weight.detach(), before * (1 - 0.01 * 2 * 0.5), rtol=0, atol=1e-7)


def test_a_param_group_added_after_attach_and_its_own_learning_rate():
    """add_param_group after attach: the penalized tensors keep their group; a tensor
    moved to a new group by a rebuilt optimizer state is found there."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    optimizer = torch.optim.SGD(model[0].parameters(), lr=0.5)
    reg = Regularizer(model, Rule(L1(0.2), select="0.weight"))
    reg.attach(optimizer)
    optimizer.add_param_group({"params": model[1].parameters(), "lr": 0.1})
    reference = copy.deepcopy(model)
    _zero_grad_step(model, optimizer)
    torch.testing.assert_close(model[0].weight, _soft_threshold(reference[0].weight, 0.5 * 0.2), rtol=0, atol=0)
    torch.testing.assert_close(model[1].weight, reference[1].weight, rtol=0, atol=0)  # not penalized


def test_a_penalized_tensor_removed_from_the_optimizer_is_a_clear_error():
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    Regularizer(model, L1(0.1)).attach(optimizer)
    optimizer.param_groups[0]["params"] = [model.bias]  # the weight taken out by hand
    with pytest.raises(RuntimeError, match="parameter 'weight' is penalized but no longer in the optimizer"):
        _zero_grad_step(model, optimizer)


def test_resuming_from_a_checkpoint_equals_the_uninterrupted_run_bit_for_bit():
    """Train 6 steps; or train 3, save model + optimizer, build everything afresh, attach,
    restore, train 3 more: the same weights exactly (Adam, proximal L1)."""
    torch.manual_seed(1)
    X, y = torch.randn(32, 6), torch.randn(32, 1)

    def steps(model, optimizer, n):
        for _ in range(n):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(X), y).backward()
            optimizer.step()

    straight = _model()
    optimizer = torch.optim.Adam(straight.parameters(), lr=0.05)
    Regularizer(straight, L1(0.05)).attach(optimizer)
    steps(straight, optimizer, 6)

    first = _model()
    optimizer = torch.optim.Adam(first.parameters(), lr=0.05)
    Regularizer(first, L1(0.05)).attach(optimizer)
    steps(first, optimizer, 3)
    checkpoint = copy.deepcopy({"model": first.state_dict(), "optimizer": optimizer.state_dict()})

    resumed = torch.nn.Linear(6, 1)
    optimizer = torch.optim.Adam(resumed.parameters(), lr=0.999)  # the checkpoint's lr must win
    Regularizer(resumed, L1(0.05)).attach(optimizer)  # build → attach → restore
    resumed.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    steps(resumed, optimizer, 3)
    torch.testing.assert_close(resumed.state_dict(), straight.state_dict(), rtol=0, atol=0)


def test_the_optimizers_own_weight_decay_on_penalized_tensors_is_warned_once():
    model = _model()
    with pytest.warns(DoubleRegularizationWarning, match=r"param group 0 has weight_decay=0.01 on 'weight'.*twice"):
        Regularizer(model, L1(0.1)).attach(torch.optim.AdamW(model.parameters(), lr=0.01))  # AdamW's default
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decay only on what is not penalized: no warning
        groups = [{"params": [model.weight], "weight_decay": 0.0}, {"params": [model.bias], "weight_decay": 0.1}]
        other = _model()
        Regularizer(other, L1(0.1)).attach(torch.optim.AdamW(other.parameters(), lr=0.01, weight_decay=0))
        Regularizer(model, L1(0.1)).attach(torch.optim.AdamW(groups, lr=0.01))


def test_the_librarys_own_adamw_does_not_decay_twice():
    optimizer = make_optimizer("adamw", _model().parameters(), lr=0.01)
    assert optimizer.param_groups[0]["weight_decay"] == 0.0
    assert (
        make_optimizer("adamw", _model().parameters(), lr=0.01, weight_decay=0.1).param_groups[0]["weight_decay"] == 0.1
    )


def _mlp() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))


@pytest.mark.parametrize(
    "wrap",
    [lambda m: torch.compile(m, backend="eager"), torch.nn.DataParallel],
    ids=["torch.compile", "DataParallel"],
)
def test_selection_and_reports_see_through_compile_and_data_parallel(wrap):
    """The user's names select; the report equals the eager model's; training through the
    wrapper equals training the eager model (the same tensors)."""
    eager, wrapped_inner = _mlp(), _mlp()
    with torch.no_grad():  # 12 of the 16 hidden units dead in both
        for model in (eager, wrapped_inner):
            model[2].weight[:, 4:] = 0.0
    wrapped = wrap(wrapped_inner)
    assert any(n.startswith(("_orig_mod.", "module.")) for n, _ in wrapped.named_parameters())
    ours = Regularizer(wrapped, Rule(L1(0.01), select="0.weight"))
    reference = Regularizer(eager, Rule(L1(0.01), select="0.weight"))
    assert ours.parameter_names() == reference.parameter_names() == {"l1": ["0.weight"]}
    assert ours.sparsity().dead_units == reference.sparsity().dead_units == 12

    X, y = torch.randn(16, 5), torch.randn(16, 1)
    for model, reg in ((wrapped, ours), (eager, reference)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        reg.attach(optimizer)
        for _ in range(3):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(X), y).backward()
            optimizer.step()
    torch.testing.assert_close(wrapped_inner.state_dict(), eager.state_dict(), rtol=0, atol=1e-7)


def test_prune_sees_through_a_compiled_model():
    from shrinkage.prune import prune

    model = _mlp()
    with torch.no_grad():
        model[0].weight[:, 3:] = 0.0  # inputs 3 and 4 unused
    pruned, report = prune(torch.compile(model, backend="eager"), measure=False)
    assert report.kept_features == [0, 1, 2]
    X = torch.randn(8, 5)
    torch.testing.assert_close(pruned(X[:, :3]), model(X), rtol=0, atol=1e-6)

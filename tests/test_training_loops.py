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


# ---------------------------------------------------------------------------- clipping
def _double_mlp() -> torch.nn.Sequential:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()


def _batches(steps: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(2)
    return [
        (torch.randn(8, 5, generator=generator).double(), torch.randn(8, 1, generator=generator).double())
        for _ in range(steps)
    ]


def _clipped_run(model, optimizer, reg=None, *, add_grad=False, in_loss=False, max_norm=0.05):
    for x, y in _batches():
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        if in_loss:
            loss = loss + reg.penalty()
        loss.backward()
        if add_grad:
            reg.add_grad()
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        assert total > max_norm  # clipping is active on every step
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def test_clipping_sees_the_data_gradient_only_in_gradient_mode_as_torch_weight_decay():
    """Oracle: SGD(weight_decay=wd) adds wd·w inside step(), after clipping; that is
    L2(wd/2) on every tensor in mode gradient."""
    reference = _double_mlp()
    expected = _clipped_run(reference, torch.optim.SGD(reference.parameters(), lr=0.5, weight_decay=0.2))
    model = _double_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    reg = Regularizer(model, Rule(L2(0.1), select="*"), mode="gradient")
    reg.attach(optimizer)
    for got, want in zip(_clipped_run(model, optimizer, reg), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_add_grad_before_clipping_equals_the_penalty_in_the_loss():
    results = {}
    for mode in ("loss", "gradient"):
        model = _double_mlp()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        reg = Regularizer(model, L1(0.3), mode=mode)
        reg.attach(optimizer)
        results[mode] = _clipped_run(model, optimizer, reg, add_grad=mode == "gradient", in_loss=mode == "loss")
    for got, want in zip(results["gradient"], results["loss"]):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # and without add_grad() the two differ: the penalty is not clipped
    model = _double_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    Regularizer(model, L1(0.3), mode="gradient").attach(optimizer)
    unclipped = _clipped_run(model, optimizer)
    assert max(float((a - b).abs().max()) for a, b in zip(unclipped, results["loss"])) > 1e-3


def test_add_grad_is_for_gradient_mode_and_once_a_step():
    model = _double_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="mode 'gradient'.*proximal"):
        Regularizer(model, L1(0.1)).add_grad()
    reg = Regularizer(model, L1(0.1), mode="gradient")
    reg.attach(optimizer)
    x, y = _batches(1)[0]
    torch.nn.functional.mse_loss(model(x), y).backward()
    reg.add_grad()
    with pytest.raises(RuntimeError, match="already called"):
        reg.add_grad()
    optimizer.step()
    optimizer.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    reg.add_grad()  # a new step: allowed again


# ---------------------------------------------------------------------------- unused tensors
class _TwoBranch(torch.nn.Module):
    """``used`` always reads the input; ``spare`` only when asked."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.used = torch.nn.Linear(3, 1).double()
        self.spare = torch.nn.Linear(3, 1).double()

    def forward(self, x, both=False):
        return self.used(x) + (self.spare(x) if both else 0.0)


@pytest.mark.parametrize("mode", ["gradient", "proximal", "decoupled"])
def test_a_tensor_without_a_gradient_is_left_alone_as_torch_weight_decay_leaves_it(mode):
    model = _TwoBranch()
    reference = copy.deepcopy(model)
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    torch_opt = torch.optim.SGD(reference.parameters(), lr=0.1, weight_decay=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    Regularizer(model, Rule(L2(0.1), select="*"), mode=mode).attach(optimizer)
    spare = model.spare.weight.detach().clone()
    for net, opt in ((reference, torch_opt), (model, optimizer)):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    assert model.spare.weight.grad is None
    assert torch.equal(model.spare.weight, spare)  # not moved, as torch leaves it
    assert torch.equal(reference.spare.weight, spare)
    if mode == "gradient":  # the used tensors follow torch's weight_decay exactly
        torch.testing.assert_close(model.used.weight, reference.used.weight, rtol=0, atol=1e-15)


def test_in_loss_mode_autograd_moves_a_tensor_the_data_loss_does_not_use():
    model = _TwoBranch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = Regularizer(model, L2(0.1), mode="loss")
    reg.attach(optimizer)
    spare = model.spare.weight.detach().clone()
    optimizer.zero_grad(set_to_none=True)
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    (torch.nn.functional.mse_loss(model(x), y) + reg.penalty()).backward()
    optimizer.step()
    torch.testing.assert_close(model.spare.weight, spare * (1 - 0.1 * 2 * 0.1), rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------- state
def test_the_regularizer_state_travels_in_a_weights_only_checkpoint(tmp_path):
    model = _double_mlp()
    reg = Regularizer(model, [Rule(L1(0.1), select="0.weight"), Rule(L2(0.2), select="2.weight", mode="gradient")])
    reg.rules[0].penalty.lambda_ = 0.05  # changed during training (a schedule)
    torch.save({"model": model.state_dict(), "regularizer": reg.state_dict()}, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    fresh = _double_mlp()
    restored = Regularizer(fresh, [Rule(L1(0.1), select="0.weight"), Rule(L2(0.2), select="2.weight", mode="gradient")])
    restored.attach(torch.optim.SGD(fresh.parameters(), lr=0.1))
    restored.load_state_dict(saved["regularizer"])
    assert restored.state_dict() == reg.state_dict()
    assert restored.terms[0].penalty.lambda_ == 0.05
    assert restored.rules[0].penalty is restored.terms[0].penalty


@pytest.mark.parametrize(
    ("rules", "match"),
    [
        ([Rule(L1(0.1), select="2.weight"), Rule(L2(0.2), select="0.weight", mode="gradient")], "penalizes"),
        ([Rule(L1(0.1), select="0.weight"), Rule(L2(0.2), select="2.weight")], "mode"),
        ([Rule(L1(0.1), select="0.weight"), Rule(L1(0.2), select="2.weight", mode="gradient")], "holds L2"),
        ([Rule(L1(0.1))], "2 rule"),
    ],
)
def test_a_state_from_another_regularizer_is_refused(rules, match):
    state = Regularizer(
        _double_mlp(), [Rule(L1(0.1), select="0.weight"), Rule(L2(0.2), select="2.weight", mode="gradient")]
    ).state_dict()
    with pytest.raises(ValueError, match=match):
        Regularizer(_double_mlp(), rules).load_state_dict(state)


# ---------------------------------------------------------------------------- train loop
def test_the_training_loop_reads_the_loss_once_an_epoch_not_once_a_step(monkeypatch):
    """On a GPU every float(tensor) stops the host; the loop reads its running loss
    once an epoch, so the number of reads does not grow with the number of batches."""
    from shrinkage.train import TrainConfig, train

    reads = []
    original = torch.Tensor.__float__
    monkeypatch.setattr(torch.Tensor, "__float__", lambda self: reads.append(1) or original(self))
    X, y = torch.randn(64, 5), torch.randn(64)
    counts = {}
    for batch_size in (64, 4):
        reads.clear()
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
        config = TrainConfig(max_epochs=2, batch_size=batch_size, patience=10)
        train(net, X, y, regularizer=Regularizer(net, L1(1e-3)), config=config)
        counts[batch_size] = len(reads)
    assert counts[4] == counts[64] > 0


def test_add_grad_survives_a_skipped_step_as_gradscaler_skips_one():
    """backward → add_grad → clip → step skipped (an overflow) → the next iteration's
    add_grad works, and every step that runs carries the penalty exactly once."""
    results = {}
    for skip in (False, True):
        model = _double_mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        reg = Regularizer(model, L1(0.2), mode="gradient")
        reg.attach(optimizer)
        for t, (x, y) in enumerate(_batches(4)):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            reg.add_grad()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
            if skip and t == 1:
                continue  # what GradScaler.step does on inf/NaN gradients
            optimizer.step()
        results[skip] = [p.detach().clone() for p in model.parameters()]
    # the reference: the same loop without iteration 1 at all, penalty in the loss
    model = _double_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = Regularizer(model, L1(0.2), mode="loss")
    reg.attach(optimizer)
    for t, (x, y) in enumerate(_batches(4)):
        if t == 1:
            continue
        optimizer.zero_grad()
        (torch.nn.functional.mse_loss(model(x), y) + reg.penalty()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        optimizer.step()
    for got, want in zip(results[True], [p.detach() for p in model.parameters()]):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert any(not torch.equal(a, b) for a, b in zip(results[True], results[False]))


def test_add_grad_twice_on_the_same_gradients_is_refused_attached_or_not():
    model = _double_mlp()
    reg = Regularizer(model, L1(0.1), mode="gradient")  # not attached: the user steps by hand
    x, y = _batches(1)[0]
    torch.nn.functional.mse_loss(model(x), y).backward()
    reg.add_grad()
    with pytest.raises(RuntimeError, match="already called on these gradients"):
        reg.add_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()  # new gradients: allowed again
    reg.add_grad()


def test_loss_mode_refuses_tensors_replaced_after_the_regularizer_was_built():
    """load_state_dict(assign=True) (or fully_shard) replaces the parameters: a penalty
    on the old tensors would never reach training."""
    model = torch.nn.Linear(4, 1)
    reg = Regularizer(model, L1(1.0), mode="loss")
    model.load_state_dict(torch.nn.Linear(4, 1).state_dict(), assign=True)
    with pytest.raises(ValueError, match=r"'weight' is no longer the model's.*assign=True"):
        reg.penalty()
    with torch.no_grad():
        reg.penalty()  # logging only: allowed


def _scaled_steps(mode, fused, penalty, *, unscale=False, overflow_first=True):
    """Two steps of AdamW under torch's GradScaler (on the CPU): the first overflows, the
    second is finite. Returns the weights after each."""
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.0, fused=fused)
    Regularizer(model, penalty, mode=mode).attach(optimizer)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    X, y = torch.randn(16, 6), torch.randn(16, 3)
    after = []
    for step in range(2):
        optimizer.zero_grad()
        scaler.scale(torch.nn.functional.mse_loss(model(X), y)).backward()
        if step == 0 and overflow_first:
            model.weight.grad[0, 0] = float("inf")
        if unscale:
            scaler.unscale_(optimizer)
        scaler.step(optimizer)
        scaler.update()
        after.append(model.weight.detach().clone())
    return after


@pytest.mark.parametrize(
    ("mode", "penalty", "unscale"),
    [
        ("proximal", L1(0.5), False),
        ("proximal", L1(0.5, center="initial"), False),
        ("decoupled", L2(0.5), False),
        ("gradient", L1(0.5), True),
    ],
)
def test_a_step_the_grad_scaler_skips_skips_the_penalty_also_with_a_fused_optimizer(mode, penalty, unscale):
    # a fused AdamW takes the scaler into its own step, which runs on an overflow but
    # leaves the weights: the penalty must leave them too, as it does with a plain AdamW
    # (whose step the scaler does not call at all); then both agree on the finite step
    torch.manual_seed(0)
    start = torch.nn.Linear(6, 3).weight.detach().clone()
    for fused in (False, True):
        skipped, _ = _scaled_steps(mode, fused, penalty, unscale=unscale)
        assert torch.equal(skipped, start), fused
    plain = _scaled_steps(mode, False, penalty, unscale=unscale)[1]
    torch.testing.assert_close(_scaled_steps(mode, True, penalty, unscale=unscale)[1], plain)
    assert (plain == 0).any() or mode != "proximal" or penalty.centered


def test_gradient_mode_refuses_gradients_the_scaler_has_not_unscaled():
    with pytest.raises(RuntimeError, match=r"^mode='gradient' adds the penalty's gradient before the step, but"):
        _scaled_steps("gradient", True, L1(0.5), overflow_first=False)


@pytest.mark.parametrize("tensor_lr", [False, True])
def test_lr_halvings_follow_torchs_reduce_on_plateau(tensor_lr):
    """``train`` with ``lr_halvings=k`` is torch's ``ReduceLROnPlateau`` (factor ½, the
    ``tol`` as an absolute threshold for losses below 1) until the plateau after the
    k-th halving, where it stops: the same weights (the prox reads each halved learning
    rate), the same epoch; the optimizer's learning rate is put back afterwards."""
    from shrinkage.train import TrainConfig, train

    torch.manual_seed(0)
    X = torch.randn(64, 6)
    y = 0.3 * X[:, :2].sum(1) + 0.05 * torch.randn(64)  # losses below 1: an absolute tol
    patience, halvings, tol = 4, 3, 1e-4
    config = TrainConfig(
        lr=0.05, batch_size=None, max_epochs=2000, patience=patience, lr_halvings=halvings, tol=tol, restore_best=False
    )
    lr = torch.tensor(0.05) if tensor_lr else 0.05

    ours = _model()
    optimizer = torch.optim.Adam(ours.parameters(), lr=lr)
    result = train(
        ours, X, y, regularizer=Regularizer(ours, [Rule(L1(0.02), "weight")]), config=config, optimizer=optimizer
    )

    reference = _model()
    opt = torch.optim.Adam(reference.parameters(), lr=torch.tensor(0.05) if tensor_lr else 0.05)
    Regularizer(reference, [Rule(L1(0.02), "weight")]).attach(opt)
    plateaus = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=0.5, patience=patience - 1, threshold=tol, threshold_mode="abs"
    )
    reductions, epochs = 0, 0
    target = y.reshape(-1, 1)
    for epoch in range(config.max_epochs):
        opt.zero_grad()
        torch.nn.functional.mse_loss(reference(X), target).backward()
        opt.step()
        with torch.no_grad():
            score = float(torch.nn.functional.mse_loss(reference(X), target, reduction="sum")) / X.shape[0]
        before = float(opt.param_groups[0]["lr"])
        plateaus.step(score)
        reductions += float(opt.param_groups[0]["lr"]) < before
        epochs = epoch + 1
        if reductions > halvings:  # the plateau after the last halving: train stops
            break
    assert reductions == halvings + 1 and epochs < config.max_epochs  # the halvings happened
    assert result.epochs == epochs and result.stopped_early
    torch.testing.assert_close(ours.weight, reference.weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.bias, reference.bias, rtol=0, atol=0)
    assert float(optimizer.param_groups[0]["lr"]) == float(lr)  # put back for the next fit
    assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor) == tensor_lr

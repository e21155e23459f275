"""Dtypes: penalties and proxes on float64 and bfloat16 parameters. Values are summed
in at least float32; a bfloat16 prox is computed in float32 and rounded once, so it is
the exact (float64) prox of the same weights to within bfloat16's rounding, with the
same exact zeros; parameters keep their dtype through every mode."""

from __future__ import annotations

import copy

import pytest
import torch

from shrinkage import L1, L2, ElasticNet, GroupLasso, Regularizer, SparseGroupLasso
from shrinkage.models import MLP

PENALTIES = [L1(0.05), L2(0.05), ElasticNet(0.05, 0.5), GroupLasso(0.05), SparseGroupLasso(0.05, 0.5)]
IDS = [type(p).__name__ for p in PENALTIES]


def _exact_prox(penalty, tensor: torch.Tensor, step: float) -> torch.Tensor:
    """The prox in float64 (of a tensor already rounded to its storage dtype)."""
    exact = tensor.detach().double().clone()
    penalty.prox_([exact], penalty.layouts([("w", exact)]), step=[step])
    return exact


@pytest.mark.parametrize("penalty", PENALTIES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_value_is_summed_in_a_safe_precision(penalty, dtype):
    w = torch.randn(16, 12, dtype=torch.float64).to(dtype)
    value = penalty.value([w], penalty.layouts([("w", w)]))
    assert value.dtype in (torch.float32, torch.float64) and value.dtype.itemsize >= 4
    reference = penalty.value([w.double()], penalty.layouts([("w", w.double())]))
    assert float(value) == pytest.approx(float(reference), rel=1e-6 if dtype == torch.bfloat16 else 1e-14)


@pytest.mark.parametrize("penalty", PENALTIES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_proximal_step_is_the_exact_prox_rounded_once(penalty, dtype):
    torch.manual_seed(0)
    model = MLP(12, (16,)).to(dtype)
    plain = copy.deepcopy(model)  # the same SGD step without the regularizer
    X, y = torch.randn(64, 12, dtype=dtype), torch.randn(64, 1, dtype=dtype)
    lr = 0.5
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    Regularizer(model, penalty, mode="proximal").attach(optimizer)
    reference = torch.optim.SGD(plain.parameters(), lr=lr)
    for net, opt in ((model, optimizer), (plain, reference)):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(X), y).backward()
        opt.step()
    for name in ("0.weight", "2.weight"):
        ours = dict(model.named_parameters())[name].detach()
        assert ours.dtype == dtype
        exact = _exact_prox(penalty, dict(plain.named_parameters())[name], lr)
        if dtype == torch.float64:
            torch.testing.assert_close(ours, exact, rtol=1e-14, atol=1e-15)
        else:  # within half a bfloat16 unit (and the float32 rounding before it)
            ulp = torch.finfo(torch.bfloat16).eps * exact.abs().clamp_min(torch.finfo(torch.bfloat16).tiny)
            assert torch.all((ours.double() - exact).abs() <= 0.5 * ulp * (1 + 2**-15) + 1e-30)
        assert torch.equal(ours == 0, exact.to(dtype) == 0)  # the same exact zeros


@pytest.mark.parametrize("mode", ["loss", "gradient", "proximal"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("penalty", PENALTIES, ids=IDS)
def test_bfloat16_training_keeps_dtype_and_stays_finite(penalty, optimizer, mode):
    torch.manual_seed(0)
    model = MLP(6, (8,)).to(torch.bfloat16)
    reg = Regularizer(model, penalty, mode=mode)
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.1)
        if optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=1e-2)
    )
    reg.attach(opt)
    X, y = torch.randn(32, 6, dtype=torch.bfloat16), torch.randn(32, 1, dtype=torch.bfloat16)
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X), y)
        if mode == "loss":
            loss = loss + reg.penalty()
        loss.backward()
        opt.step()
    for p in model.parameters():
        assert p.dtype == torch.bfloat16 and bool(torch.isfinite(p).all())
    assert all(torch.isfinite(torch.tensor(v)) for v in reg.values().values())

"""Penalties centred on reference weights: ``λ·R(w − w₀)`` (L2-SP, sparse fine-tuning).

Oracles: the closed forms of the shifted penalty and its prox; the uncentred penalty on
the shifted problem (``w = w₀ + v`` turns ``‖y − Xw‖²`` into ``‖(y − Xw₀) − Xv‖²``, so
every mode and optimizer must follow the same trajectory); scikit-learn's ``Lasso`` and
``ElasticNet`` and ridge's normal equations on the shifted target.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.linear_model import ElasticNet as SkElasticNet
from sklearn.linear_model import Lasso

from shrinkage import (
    L1,
    L2,
    ElasticNet,
    GroupLasso,
    HierarchicalLasso,
    Regularizer,
    Rule,
    SparseGroupLasso,
    make_penalty,
)
from shrinkage.convert import from_sklearn_enet
from shrinkage.validation import InputError

PENALTIES = {
    "l1": lambda: L1(0.05),
    "l2": lambda: L2(0.05),
    "elasticnet": lambda: ElasticNet(0.05, 0.5),
    "group": lambda: GroupLasso(0.05, groups="input"),
    "sparse_group": lambda: SparseGroupLasso(0.05, 0.5, groups="input"),
}


def _centered(penalty, center="initial"):
    """The same penalty (class, λ, hyperparameters), centred."""
    return type(penalty)(**{k: v for k, v in penalty.get_config().items() if k != "name"}, center=center)


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 6, generator=g)
    w_true = torch.tensor([[1.5, 0.0, -2.0, 0.0, 0.5, 0.0]])
    y = X @ w_true.T + 0.1 * torch.randn(64, 1, generator=g)
    w0 = torch.randn(1, 6, generator=g)  # the "pretrained" weights
    return X, y, w0


def _linear(weight):
    model = torch.nn.Linear(weight.shape[1], 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(weight)
    return model


def _train(model, penalty, mode, optimizer, X, y, steps=40):
    opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5), "adam": lambda p: torch.optim.Adam(p, lr=0.02)}[
        optimizer
    ](model.parameters())
    reg = Regularizer(model, penalty, mode=mode)
    if mode != "loss":
        reg.attach(opt)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X), y)
        if mode == "loss":
            loss = loss + reg.penalty()
        loss.backward()
        opt.step()
    return reg


CASES = [
    (name, mode, opt) for name in PENALTIES for mode in ("loss", "gradient", "proximal") for opt in ("sgd", "adam")
]
CASES += [("l2", "decoupled", "sgd"), ("l2", "decoupled", "adam")]


@pytest.mark.parametrize(("name", "mode", "optimizer"), CASES)
def test_centred_equals_uncentred_on_the_shifted_problem(problem, name, mode, optimizer):
    X, y, w0 = problem
    plain = PENALTIES[name]()
    centred = _linear(w0)
    _train(centred, _centered(plain), mode, optimizer, X, y)
    shifted = _linear(torch.zeros_like(w0))
    _train(shifted, plain, mode, optimizer, X, y - X @ w0.T)
    torch.testing.assert_close(centred.weight.detach() - w0, shifted.weight.detach(), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("name", list(PENALTIES))
def test_value_is_the_penalty_of_the_change(name):
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(3, 4, generator=g)
    model = _linear(torch.zeros(1, 4))
    model.weight = torch.nn.Parameter(w0 + torch.randn(3, 4, generator=g))
    plain = PENALTIES[name]()
    reg = Regularizer(model, _centered(plain, {"weight": w0}), mode="loss")
    expected = plain.value([model.weight.detach() - w0], plain.layouts([("weight", w0)]))
    torch.testing.assert_close(reg.penalty(), expected)
    reg.penalty().backward()  # the gradient of R(w − w₀) with respect to w
    change = (model.weight.detach() - w0).requires_grad_()
    plain.value([change], plain.layouts([("weight", w0)])).backward()
    torch.testing.assert_close(model.weight.grad, change.grad)


def test_prox_step_is_the_closed_form_and_zero_change_is_bit_exact():
    g = torch.Generator().manual_seed(2)
    w0 = torch.randn(4, 5, generator=g) * 3
    model = torch.nn.Linear(5, 4, bias=False)
    with torch.no_grad():
        model.weight.copy_(w0)
    reg = Regularizer(model, L1(0.5, center="initial"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg.attach(opt)
    grad = torch.randn(4, 5, generator=g)
    model.weight.grad = grad.clone()
    opt.step()
    v = -0.1 * grad  # the change after the gradient step, before the prox (threshold 0.1·0.5)
    expected = w0 + torch.sign(v) * torch.clamp(v.abs() - 0.05, min=0)
    torch.testing.assert_close(model.weight.detach(), expected)
    unchanged = v.abs() <= 0.05
    assert unchanged.any() and (~unchanged).any()
    # where the change is zero the weight IS the reference weight, bit for bit
    assert torch.equal(model.weight.detach()[unchanged], w0[unchanged])
    report = reg.sparsity()
    assert report.zeros == int(unchanged.sum()) and report.tensors[0].centered


def test_lasso_on_the_shifted_target(problem):
    X, y, w0 = problem
    lam = 0.2
    model = _linear(w0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Regularizer(model, L1(lam, center="initial")).attach(opt)
    for _ in range(3000):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(X), y).backward()
        opt.step()
    target = (y - X @ w0.T).double().numpy().ravel()
    # sklearn: (1/2n)‖y − Xv‖² + a‖v‖₁, our mean squared error + λ‖v‖₁: λ = 2a
    lasso = Lasso(alpha=lam / 2, fit_intercept=False, tol=1e-9, max_iter=100_000).fit(X.double().numpy(), target)
    change = (model.weight.detach() - w0).numpy().ravel()
    np.testing.assert_allclose(change, lasso.coef_, atol=1e-4)
    assert ((change == 0) == (lasso.coef_ == 0)).all()


def test_elastic_net_on_the_shifted_target(problem):
    X, y, w0 = problem
    lam, rho = from_sklearn_enet(0.1, 0.5)
    model = _linear(w0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Regularizer(model, ElasticNet(lam, rho, center={"weight": w0})).attach(opt)
    for _ in range(3000):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(X), y).backward()
        opt.step()
    target = (y - X @ w0.T).double().numpy().ravel()
    enet = SkElasticNet(alpha=0.1, l1_ratio=0.5, fit_intercept=False, tol=1e-9, max_iter=100_000)
    enet.fit(X.double().numpy(), target)
    np.testing.assert_allclose((model.weight.detach() - w0).numpy().ravel(), enet.coef_, atol=1e-4)


@pytest.mark.parametrize("mode", ["gradient", "decoupled"])
def test_l2_sp_matches_the_normal_equations(problem, mode):
    # J = (1/n)‖y − Xw‖² + λ‖w − w₀‖² ⇒ (XᵀX/n + λI)(w − w₀) = Xᵀ(y − Xw₀)/n
    X, y, w0 = problem
    lam = 0.3
    model = _linear(w0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Regularizer(model, L2(lam, center="initial"), mode=mode).attach(opt)
    for _ in range(2000):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(X), y).backward()
        opt.step()
    Xd, yd, w0d = X.double(), y.double(), w0.double()
    n = X.shape[0]
    change = torch.linalg.solve(Xd.T @ Xd / n + lam * torch.eye(6, dtype=torch.float64), Xd.T @ (yd - Xd @ w0d.T) / n)
    torch.testing.assert_close(model.weight.detach().double(), w0d + change.T, atol=1e-5, rtol=1e-5)


def test_decoupled_step_decays_toward_the_centre():
    w0 = torch.tensor([[1.0, -2.0, 3.0]])
    model = _linear(w0 + torch.tensor([[0.5, 0.5, -1.0]]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Regularizer(model, L2(0.25, center={"weight": w0}), mode="decoupled").attach(opt)
    start = model.weight.detach().clone()
    model.weight.grad = torch.zeros_like(start)
    opt.step()
    # w ← w − lr·2λ·(w − w₀), then the (zero) gradient step
    torch.testing.assert_close(model.weight.detach(), start - 0.1 * 0.5 * (start - w0))


def test_sparse_fine_tuning_keeps_most_weights_bit_identical_in_bfloat16():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).to(torch.bfloat16)
    base = copy.deepcopy(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    reg = Regularizer(model, L1(0.05, center="initial"))
    reg.attach(opt)
    X = torch.randn(32, 8, dtype=torch.bfloat16)
    y = X[:, :1] * 2
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(X), y).backward()
        opt.step()
    report = reg.sparsity()
    # entries left at the pretrained value are equal to it bit for bit, and counted
    unchanged = sum(int((model.state_dict()[n] == base[n]).sum()) for n in ("0.weight", "2.weight"))
    assert report.zeros == unchanged and unchanged > report.numel / 2
    assert not torch.equal(model.state_dict()["2.weight"], base["2.weight"])  # it did fine-tune


def test_centre_from_a_state_dict_is_copied_once_and_matched_by_name():
    torch.manual_seed(0)
    pretrained = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    wrapped = {f"module.{k}": v for k, v in pretrained.state_dict().items()}
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).double()
    reg = Regularizer(model, L2(0.1, center=wrapped))
    term = reg.terms[0]
    assert term.centers is not None
    assert [c.dtype for c in term.centers] == [torch.float64, torch.float64]
    torch.testing.assert_close(term.centers[0], pretrained[0].weight.detach().double())
    with torch.no_grad():
        pretrained[0].weight.add_(1.0)  # the reference was copied when the regularizer was built
    assert not torch.equal(term.centers[0], pretrained[0].weight.detach().double())


def test_centre_on_the_model_itself_is_a_copy():
    model = torch.nn.Linear(3, 2)
    reg = Regularizer(model, L1(0.1, center=model))  # the module's own tensors: copied at bind
    with torch.no_grad():
        model.weight.add_(1.0)
    assert reg.values()["l1"] == pytest.approx(0.1 * 6)


def test_centres_follow_the_model_to_another_dtype():
    model = torch.nn.Linear(3, 2)
    reg = Regularizer(model, L1(0.1, center="initial"))
    model.double()
    assert reg.values()["l1"] == 0.0
    assert reg.terms[0].centers[0].dtype == torch.float64


def test_checkpoint_restores_the_centres(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    pretrained = copy.deepcopy(model.state_dict())
    reg = Regularizer(model, L1(0.1, center="initial"))
    with torch.no_grad():
        model.weight.add_(0.5)  # fine-tuned for a while
    torch.save({"model": model.state_dict(), "regularizer": reg.state_dict()}, tmp_path / "ckpt.pt")
    # a new process: the checkpoint is loaded before the regularizer is built
    resumed = torch.nn.Linear(4, 2)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed.load_state_dict(ckpt["model"])
    again = Regularizer(resumed, L1(0.1, center="initial"))
    assert again.values()["l1"] == 0.0  # "initial" is now the fine-tuned weights...
    again.load_state_dict(ckpt["regularizer"])  # ...until the saved centres come back
    torch.testing.assert_close(again.terms[0].centers[0], pretrained["weight"])
    assert again.values()["l1"] == pytest.approx(0.1 * 0.5 * 8)


def test_checkpoint_of_another_kind_is_refused():
    model = torch.nn.Linear(4, 2)
    state = Regularizer(model, L1(0.1)).state_dict()
    with pytest.raises(InputError, match=r"^rule 0: no centred penalty in the state, a centred penalty in this rule$"):
        Regularizer(model, L1(0.1, center="initial")).load_state_dict(state)
    centred = Regularizer(model, L1(0.1, center="initial")).state_dict()
    centred["rules"][0]["centers"]["weight"] = torch.zeros(3)
    with pytest.raises(InputError, match=r"the state's centre of 'weight' is not a tensor of shape \(2, 4\)"):
        Regularizer(model, L1(0.1, center="initial")).load_state_dict(centred)


def test_bad_centres_are_refused():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    with pytest.raises(InputError, match="center must be None, 'initial', a state dict"):
        L1(0.1, center="pretrained")
    with pytest.raises(TypeError, match=r"center\['w'\] must be a tensor, got"):
        L1(0.1, center={"w": [1.0]})
    with pytest.raises(InputError, match=r"center='state_dict' marks a centre that was given as tensors"):
        make_penalty({"name": "l1", "lambda_": 0.1, "center": "state_dict"})
    with pytest.raises(InputError, match=r"^rule 0: center has no tensor for parameter '1.weight'; penalize only"):
        Regularizer(model, L1(0.1, center={"0.weight": torch.zeros(4, 3)}))
    with pytest.raises(InputError, match=r"^rule 0: center\['0.weight'\] has shape \(3, 4\), parameter '0.weight'"):
        Regularizer(model, L1(0.1, center={"0.weight": torch.zeros(3, 4), "1.weight": torch.zeros(2, 4)}))
    nan = {"0.weight": torch.full((4, 3), float("nan")), "1.weight": torch.zeros(2, 4)}
    with pytest.raises(InputError, match=r"^rule 0: the centre of parameter '0.weight' holds NaN or infinite"):
        Regularizer(model, L1(0.1, center=nan))
    single = torch.nn.Linear(3, 2)
    with pytest.raises(InputError, match=r"several tensors that could be parameter 'weight'"):
        Regularizer(single, L1(0.1, center=model.state_dict()))
    with pytest.raises(TypeError, match="center"):
        HierarchicalLasso(0.1, center="initial")  # type: ignore[call-arg]


def test_paths_cv_and_fista_refuse_a_centre():
    from shrinkage.path import lambda_max, regularization_path
    from shrinkage.solvers import fista

    X, y = torch.randn(20, 3), torch.randn(20)
    with pytest.raises(InputError, match="^paths and cross-validation start from zero weights, got L1"):
        regularization_path("linear", X, y, penalty=L1(center="initial"))
    with pytest.raises(InputError, match="^paths and cross-validation start from zero weights"):
        lambda_max(torch.nn.Linear(3, 1), X, y, penalty=L1(center="initial"))
    model = torch.nn.Linear(3, 1)
    with pytest.raises(InputError, match=r"^fista fits penalties on the weights themselves"):
        fista(model, X, y.unsqueeze(1), regularizer=Regularizer(model, L1(0.1, center="initial")))


def test_config_and_copies_keep_the_centre():
    w = {"weight": torch.ones(2, 3)}
    penalty = ElasticNet(0.1, 0.3, center=w)
    assert penalty.get_config() == {"name": "elasticnet", "lambda_": 0.1, "center": "state_dict", "l1_ratio": 0.3}
    moved = penalty.with_lambda(0.2)
    assert moved.center is w and moved.lambda_ == 0.2
    assert moved.with_lambda(0.1) == penalty
    assert ElasticNet(0.1, 0.3, center={"weight": torch.ones(2, 3)}) != penalty  # another mapping
    assert L1(0.1, center="initial") == make_penalty(L1(0.1, center="initial").get_config())
    assert L1(0.1, center="initial") != L1(0.1)
    rule_config = Regularizer(torch.nn.Linear(3, 2), Rule(penalty)).to_dict()["rules"][0]["penalty"]
    assert rule_config["center"] == "state_dict"


def test_one_module_centre_is_not_matched_to_another_module():
    # an encoder's state dict ("weight", "bias") ends both "encoder.weight" and "decoder.weight"
    model = torch.nn.ModuleDict({"encoder": torch.nn.Linear(4, 4), "decoder": torch.nn.Linear(4, 4)})
    encoder = copy.deepcopy(model["encoder"])
    with pytest.raises(
        InputError,
        match=r"^rule 0: center matches parameters under different leading module names "
        r"\('encoder.weight' as 'weight', 'decoder.weight' as 'weight'\); give each module a rule",
    ):
        Regularizer(model, L2(1.0, center=encoder))
    reg = Regularizer(model, Rule(L2(1.0, center=encoder), select="encoder.*"))  # one module: fine
    torch.testing.assert_close(reg.terms[0].centers[0], encoder.weight.detach())


def test_an_integer_centre_for_float_weights_is_refused():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(InputError, match=r"^rule 0: center\['weight'\] holds torch.int64 numbers and parameter"):
        Regularizer(model, L2(1.0, center={"weight": torch.zeros(2, 3, dtype=torch.long)}))

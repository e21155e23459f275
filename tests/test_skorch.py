"""skorch: RegularizerCallback gives, in every mode, the weights a plain PyTorch loop with
an attached Regularizer gives on the same batches; exact zeros in proximal mode; the
penalty and the sparsity in the net's history; partial_fit, refits, clone, grid search
and pickling; centres kept across pickling and a new λ, fine-tuning from pretrained
weights; the refusals."""

from __future__ import annotations

import copy
import importlib
import pickle
import sys

import numpy as np
import pytest
import torch

skorch = pytest.importorskip("skorch", reason="skorch is the optional extra shrinkage[skorch]")

from skorch import NeuralNetClassifier, NeuralNetRegressor  # noqa: E402
from skorch.callbacks import Callback, GradientNormClipping  # noqa: E402

from shrinkage import L1, L2, ElasticNet, GroupLasso, InputError, Regularizer, Rule  # noqa: E402
from shrinkage.models import MLP  # noqa: E402
from shrinkage.skorch import RegularizerCallback  # noqa: E402

BATCH = 16
OPTIMIZERS = {  # name: (class, keyword arguments), as the plain loop builds them
    "sgd": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    "adam": (torch.optim.Adam, {"lr": 1e-2}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.0}),
}
CASES = {  # mode: (penalty, optimizer)
    "proximal": (lambda: GroupLasso(0.05, groups="input"), "adam"),
    "gradient": (lambda: ElasticNet(1e-2, 0.5), "sgd"),
    "decoupled": (lambda: Rule(L2(1e-2), select="*"), "adamw"),  # biases too
    "loss": (lambda: ElasticNet(1e-2, 0.5), "sgd"),
}


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    """128 rows, 6 inputs of which the first 2 matter."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(128, 6, generator=g)
    y = X[:, :2].sum(1, keepdim=True) + 0.1 * torch.randn(128, 1, generator=g)
    return X.numpy(), y.numpy()


def _net(module, callback, optimizer: str = "sgd", *, epochs: int = 6, **kwargs) -> NeuralNetRegressor:
    """A regressor stepping through the rows in order (no shuffling, no validation split);
    ``callback`` is the RegularizerCallback, named "reg", or a list of named callbacks."""
    cls, options = OPTIMIZERS[optimizer]
    return NeuralNetRegressor(
        module,
        optimizer=cls,
        **{f"optimizer__{k}": v for k, v in options.items()},
        batch_size=BATCH,
        max_epochs=epochs,
        train_split=None,
        iterator_train__shuffle=False,
        callbacks=callback if isinstance(callback, list) else [("reg", callback)],
        verbose=0,
        **kwargs,
    )


def _plain_loop(model, penalty, mode: str, optimizer: str, X, y, epochs: int) -> Regularizer:
    """The same training without skorch, the same batches in the same order: the oracle."""
    cls, options = OPTIMIZERS[optimizer]
    opt = cls(model.parameters(), **options)
    reg = Regularizer(model, penalty, mode=mode)
    reg.attach(opt)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(epochs):
        for start in range(0, len(X), BATCH):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(X[start : start + BATCH]), y[start : start + BATCH])
            if mode == "loss":
                loss = loss + reg.penalty()
            loss.backward()
            opt.step()
    return reg


def _assert_same_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)


def _hooks(optimizer: torch.optim.Optimizer) -> int:
    """Step hooks on the optimizer: 2 while a regularizer is attached, 0 once detached."""
    return len(optimizer._optimizer_step_pre_hooks) + len(optimizer._optimizer_step_post_hooks)


@pytest.mark.parametrize("mode", list(CASES))
def test_callback_equals_a_plain_loop(mode, data):
    make_penalty, optimizer = CASES[mode]
    X, y = data
    module = MLP(6, (8,))  # an instance: skorch trains it in place, without re-initializing it
    oracle = copy.deepcopy(module)
    callback = RegularizerCallback(make_penalty(), mode=mode)
    net = _net(module, callback, optimizer).fit(X, y)
    reg = _plain_loop(oracle, make_penalty(), mode, optimizer, X, y, epochs=6)
    assert net.module_ is module and callback.regularizer_.model is module
    _assert_same_weights(module, oracle)
    assert _hooks(net.optimizer_) == 0  # detached at on_train_end
    assert net.history[-1, "penalty"] == pytest.approx(sum(reg.values().values()), rel=1e-5)
    if mode == "proximal":
        report = callback.regularizer_.sparsity()
        assert report.features_used == [0, 1]  # the 4 noise inputs are gone, exactly
        assert (module[0].weight[:, 2:] == 0).all() and (module[0].weight[:, :2] != 0).all()


def test_history_records_penalty_and_sparsity(data, capsys):
    """Per training batch and per epoch; validation batches get none; PrintLog shows them."""
    X, y = data
    callback = RegularizerCallback(L1(0.05))
    net = NeuralNetClassifier(
        MLP,
        module__in_features=6,
        module__out_features=2,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-2,
        batch_size=BATCH,
        max_epochs=3,
        callbacks=[("reg", callback)],  # the default train_split: 20% validation
    )
    net.fit(X, (y[:, 0] > 0).astype(np.int64))
    assert len(net.history[:, "penalty"]) == 3
    report = callback.regularizer_.sparsity()
    last = net.history[-1]
    assert last["penalty"] == pytest.approx(sum(callback.regularizer_.values().values()))
    assert last["sparsity"] == report.zeros / report.numel and report.zeros > 0
    assert last["features_used"] == len(report.features_used)
    batches = last["batches"]
    train = [b for b in batches if "train_loss" in b]
    assert len(train) == 7 and all("penalty" in b for b in train)  # ceil(102 / 16)
    assert not any("penalty" in b for b in batches if "valid_loss" in b)
    assert train[-1]["penalty"] == last["penalty"]  # the weights after the epoch's last step
    header = capsys.readouterr().out.splitlines()[0]
    assert {"penalty", "sparsity", "features_used"} <= set(header.split())


def test_partial_fit_continues_the_same_regularizer(data):
    """fit + partial_fit is one run: the same regularizer (a penalty centred on the weights
    at the start keeps that centre), the optimizer's state kept, attached once at a time."""
    X, y = data
    module = MLP(6, (8,))
    oracle = copy.deepcopy(module)
    callback = RegularizerCallback(L1(0.02, center="initial"))
    net = _net(module, callback, "sgd", epochs=3).fit(X, y)
    first = callback.regularizer_
    net.partial_fit(X, y)
    assert callback.regularizer_ is first and _hooks(net.optimizer_) == 0
    _plain_loop(oracle, L1(0.02, center="initial"), "proximal", "sgd", X, y, epochs=6)
    _assert_same_weights(module, oracle)
    assert len(net.history) == 6


def test_refit_after_set_params_binds_the_new_module(data):
    X, y = data
    callback = RegularizerCallback(GroupLasso(0.05, groups="input"))
    net = _net(MLP, callback, "adam", module__in_features=6, module__hidden=(8,)).fit(X, y)
    first_module, first_optimizer = net.module_, net.optimizer_
    net.set_params(module__hidden=(5,))  # skorch builds a new module and optimizer
    torch.manual_seed(1)
    net.fit(X, y)
    assert net.module_ is not first_module and callback.regularizer_.model is net.module_
    assert _hooks(first_optimizer) == 0 and _hooks(net.optimizer_) == 0
    torch.manual_seed(1)
    oracle = MLP(6, (5,))  # skorch's first draw from the generator is the module's
    _plain_loop(oracle, GroupLasso(0.05, groups="input"), "proximal", "adam", X, y, epochs=6)
    _assert_same_weights(net.module_, oracle)


def test_set_params_on_the_callback_rebinds(data):
    X, y = data
    callback = RegularizerCallback(L1(0.01))
    net = _net(MLP(6, (8,)), callback, epochs=1).fit(X, y)
    net.set_params(callbacks__reg__penalty=L1(0.5), callbacks__reg__mode="gradient")
    net.partial_fit(X, y)
    assert callback.regularizer_.rules[0].penalty.lambda_ == 0.5 and callback.regularizer_.mode == "gradient"


def test_an_interrupted_fit_detaches_and_a_failed_one_is_not_attached_twice(data):
    X, y = data

    class Stop(Callback):
        """Raises after `after` training batches; records the hooks seen at each batch."""

        def __init__(self, error=None, after=3):
            self.error, self.after = error, after

        def initialize(self):
            self.seen_ = []
            return self

        def on_batch_end(self, net, training=None, **kwargs):
            self.seen_.append(_hooks(net.optimizer_))
            if self.error is not None and len(self.seen_) == self.after:
                raise self.error

    callback = RegularizerCallback(L1(0.01))
    stop = Stop(KeyboardInterrupt())
    net = _net(MLP(6, (8,)), [("reg", callback), ("stop", stop)])
    net.fit(X, y)  # skorch catches the KeyboardInterrupt and calls on_train_end
    assert stop.seen_ == [2, 2, 2] and _hooks(net.optimizer_) == 0
    net.set_params(callbacks__stop__error=RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        net.partial_fit(X, y)  # skorch calls no on_train_end: still attached
    assert _hooks(net.optimizer_) == 2
    stop.error = None
    net.partial_fit(X, y)
    assert set(stop.seen_[3:]) == {2} and _hooks(net.optimizer_) == 0


def test_clone_grid_search_and_pickle(data):
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    X, y = data
    net = _net(MLP, RegularizerCallback(L1(1e-3)), "adam", epochs=3, module__in_features=6, module__hidden=(8,))
    twin = clone(net)
    assert twin.callbacks[0][1] is not net.callbacks[0][1]
    assert twin.callbacks[0][1].get_params()["penalty"].lambda_ == 1e-3

    search = GridSearchCV(net, {"callbacks__reg__penalty": [L1(1e-3), L1(0.3)]}, cv=2, scoring="r2")
    search.fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert scores[0] > scores[1]  # λ = 0.3 shrinks too much
    best = search.best_estimator_
    reg = dict(best.callbacks_)["reg"].regularizer_
    assert reg.rules[0].penalty.lambda_ == 1e-3 and reg.model is best.module_
    assert not hasattr(net, "module_")  # the searched net itself is untouched

    loaded = pickle.loads(pickle.dumps(best))
    np.testing.assert_array_equal(loaded.predict(X), best.predict(X))
    callback = dict(loaded.callbacks_)["reg"]
    assert callback.regularizer_ is None  # not a second copy of the module
    loaded.partial_fit(X, y)
    assert callback.regularizer_.model is loaded.module_ and _hooks(loaded.optimizer_) == 0


def _assert_centred_on(reg: Regularizer, reference: dict[str, torch.Tensor], names: list[str]) -> None:
    """Every term of ``reg`` penalizes ``names``, centred exactly on ``reference``'s tensors."""
    for term in reg.terms:
        assert term.names == names and term.centers is not None
        for name, center in zip(term.names, term.centers):
            torch.testing.assert_close(center, reference[name], rtol=0, atol=0, msg=name)


def _start(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the module's weights now."""
    return copy.deepcopy(module.state_dict())


def _l1_change(module: torch.nn.Module, base: dict[str, torch.Tensor], lambda_: float, names: list[str]) -> float:
    """λ·Σ|w − w₀| over the tensors ``names``, by hand: the oracle for the logged penalty."""
    weights = module.state_dict()
    return lambda_ * sum(float((weights[n] - base[n]).abs().sum()) for n in names)


WEIGHTS = ["0.weight", "2.weight"]  # MLP(6, (8,)): the layer weights, a bare penalty's selection
ALL = ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_a_pickled_net_keeps_its_centres(data):
    """fit, pickle, unpickle, partial_fit is the same run as fit + partial_fit in memory:
    the centre stays the weights the first fit started from (not the fine-tuned ones)."""
    X, y = data
    module = MLP(6, (8,))
    oracle = copy.deepcopy(module)
    base = _start(module)
    net = _net(module, RegularizerCallback(L1(0.02, center="initial")), "sgd", epochs=3).fit(X, y)
    loaded = pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(net))))  # twice: no training between
    callback = dict(loaded.callbacks_)["reg"]
    assert callback.regularizer_ is None
    loaded.partial_fit(X, y)
    _assert_centred_on(callback.regularizer_, base, WEIGHTS)
    _plain_loop(oracle, L1(0.02, center="initial"), "proximal", "sgd", X, y, epochs=6)
    _assert_same_weights(loaded.module_, oracle)
    assert loaded.history[-1, "penalty"] == pytest.approx(_l1_change(loaded.module_, base, 0.02, WEIGHTS), rel=1e-5)
    assert loaded.history[-1, "sparsity"] < 1.0  # the change from the base is not all zero

    start = _start(loaded.module)  # the module instance fit starts from, as skorch pickled it
    loaded.fit(X, y)  # a fit starts afresh: the pickled centres go, "initial" is the start
    _assert_centred_on(callback.regularizer_, start, WEIGHTS)
    assert not any(torch.equal(start[n], base[n]) for n in WEIGHTS)


# how the second training starts: (what it does to the net, whether the centre is the base)
SECOND_TRAINING = {
    "new lambda": (
        lambda net: net.set_params(callbacks__reg__penalty=Rule(L1(2e-2, center="initial"), select="*")),
        True,
    ),
    "new mode": (lambda net: net.set_params(callbacks__reg__mode="gradient"), True),
    "another penalty class": (
        lambda net: net.set_params(callbacks__reg__penalty=Rule(ElasticNet(2e-2, 0.5, center="initial"), select="*")),
        False,
    ),
    "another selection": (
        lambda net: net.set_params(callbacks__reg__penalty=Rule(L1(2e-2, center="initial"), select=WEIGHTS)),
        False,
    ),
    "another callback": (
        lambda net: net.set_params(callbacks__reg=RegularizerCallback(Rule(L1(2e-2, center="initial"), select="*"))),
        False,
    ),
}


@pytest.mark.parametrize("case", [*SECOND_TRAINING, "fit"])
def test_a_rebuilt_regularizer_keeps_the_initial_centres_of_matching_rules(case, data):
    """After set_params, partial_fit keeps rule i's "initial" centre where rule i is the same
    penalty class on the same parameters (λ or mode may change); otherwise, or after a
    fit (which re-initializes), the centre is the weights as the new training starts."""
    X, y = data
    module = MLP(6, (8,))
    base = _start(module)
    net = _net(module, RegularizerCallback(Rule(L1(1e-3, center="initial"), select="*")), epochs=2).fit(X, y)
    before = _start(net.module_)
    if case == "fit":
        net.set_params(callbacks__reg__penalty=Rule(L1(2e-2, center="initial"), select="*"))
        net.fit(X, y)  # skorch re-initializes with the module instance as it is: its trained weights
        keeps = False
    else:
        change, keeps = SECOND_TRAINING[case]
        change(net)
        net.partial_fit(X, y)
    reg = dict(net.callbacks_)["reg"].regularizer_
    names = WEIGHTS if case == "another selection" else ALL
    _assert_centred_on(reg, base if keeps else before, names)
    if isinstance(reg.rules[0].penalty, L1):
        lambda_ = reg.rules[0].penalty.lambda_
        expected = _l1_change(net.module_, base if keeps else before, lambda_, names)
        assert net.history[-1, "penalty"] == pytest.approx(expected, rel=1e-5) and expected > 0


def test_lambda_inside_a_penalty_is_not_a_parameter(data):
    """What the docs say: grid-search whole penalties; skorch cannot reach into one."""
    net = _net(MLP(6, (8,)), RegularizerCallback(L1(1e-3)), epochs=1)
    with pytest.raises(ValueError):
        net.set_params(callbacks__reg__penalty__lambda_=1e-2)


def test_fine_tuning_from_pretrained_weights(data):
    """The guide's recipes: centre on the pretrained state dict and start the module from
    it, by initialize + load_state_dict + partial_fit, or in GridSearchCV by a module class
    that loads it; both equal a plain loop started from the pretrained weights."""
    from sklearn.model_selection import GridSearchCV

    X, y = data
    pretrained = MLP(6, (8,))
    weights = _start(pretrained)

    net = _net(
        MLP, RegularizerCallback(L1(0.02, center=weights)), "adam", epochs=2, module__in_features=6, module__hidden=(8,)
    )
    net.initialize()
    net.module_.load_state_dict(weights)
    net.partial_fit(X, y)
    oracle = copy.deepcopy(pretrained)
    _plain_loop(oracle, L1(0.02, center="initial"), "proximal", "adam", X, y, epochs=2)
    _assert_same_weights(net.module_, oracle)
    _assert_centred_on(dict(net.callbacks_)["reg"].regularizer_, weights, WEIGHTS)
    assert net.history[-1, "penalty"] == pytest.approx(_l1_change(net.module_, weights, 0.02, WEIGHTS), rel=1e-5)

    class Pretrained(MLP):
        def __init__(self):
            super().__init__(6, (8,))
            self.load_state_dict(weights)

    net = _net(Pretrained, RegularizerCallback(L1(1e-3, center=weights)), "adam", epochs=2)
    grid = {"callbacks__reg__penalty": [L1(lam, center=weights) for lam in (1e-3, 0.02)]}
    search = GridSearchCV(net, grid, cv=2, scoring="r2").fit(X, y)
    best = search.best_estimator_
    lambda_ = search.best_params_["callbacks__reg__penalty"].lambda_
    oracle = copy.deepcopy(pretrained)
    _plain_loop(oracle, L1(lambda_, center="initial"), "proximal", "adam", X, y, epochs=2)
    _assert_same_weights(best.module_, oracle)  # the refit started from the pretrained weights
    _assert_centred_on(dict(best.callbacks_)["reg"].regularizer_, weights, WEIGHTS)


def test_two_optimizers_are_refused(data):
    class TwoOptimizers(NeuralNetRegressor):
        def initialize_optimizer(self, *args, **kwargs):
            self.optimizer_ = torch.optim.SGD(self.module_[0].parameters(), lr=0.1)
            self.optimizer2_ = torch.optim.SGD(self.module_[2].parameters(), lr=0.1)
            return self

    net = TwoOptimizers(MLP, module__in_features=6, train_split=None, callbacks=[RegularizerCallback(L1(0.1))])
    with pytest.raises(InputError) as error:
        net.fit(*data)
    assert str(error.value) == (
        "RegularizerCallback supports a net with one optimizer, got 2 (optimizer_, optimizer2_); "
        "attach a Regularizer to each optimizer yourself"
    )


def test_an_optimizer_that_is_not_torchs_is_refused(data):
    class NotAnOptimizer:
        def __repr__(self):
            return "NotAnOptimizer()"

    class Net(NeuralNetRegressor):
        def initialize_optimizer(self, *args, **kwargs):
            self.optimizer_ = NotAnOptimizer()
            return self

    net = Net(MLP, module__in_features=6, train_split=None, callbacks=[RegularizerCallback(L1(0.1))])
    with pytest.raises(TypeError) as error:
        net.fit(*data)
    assert isinstance(error.value, InputError)
    assert str(error.value) == "net.optimizer_ must be a torch.optim.Optimizer, got NotAnOptimizer()"


def test_loss_mode_refuses_a_gradient_callback_before_it(data):
    callbacks = [("clip", GradientNormClipping(1.0)), ("reg", RegularizerCallback(L1(0.1), mode="loss"))]
    net = _net(MLP(6, (8,)), callbacks, epochs=1)
    with pytest.raises(InputError) as error:
        net.fit(*data)
    assert str(error.value) == (
        "mode='loss' adds the penalty's gradient in on_grad_computed, so RegularizerCallback must come "
        "before the callbacks that use the gradients there, got it after ['clip']; list it before them in callbacks"
    )


def test_loss_mode_before_clipping_equals_the_penalty_in_the_loss(data):
    """Listed first, the penalty's gradient is part of what GradientNormClipping clips."""
    X, y = data
    module = MLP(6, (8,))
    oracle = copy.deepcopy(module)
    callback = RegularizerCallback(ElasticNet(0.05, 0.5), mode="loss")
    _net(module, [("reg", callback), ("clip", GradientNormClipping(0.5))], epochs=2).fit(X, y)
    opt = torch.optim.SGD(oracle.parameters(), lr=0.05, momentum=0.9)
    reg = Regularizer(oracle, ElasticNet(0.05, 0.5), mode="loss")
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(2):
        for start in range(0, len(Xt), BATCH):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(oracle(Xt[start : start + BATCH]), yt[start : start + BATCH])
            (loss + reg.penalty()).backward()
            torch.nn.utils.clip_grad_norm_(oracle.parameters(), 0.5)
            opt.step()
    _assert_same_weights(module, oracle)


class ClippingNet(NeuralNetRegressor):
    def on_grad_computed(self, net, named_parameters, **kwargs):
        torch.nn.utils.clip_grad_norm_([p for _, p in named_parameters], 1.0)


class AcceleratedNet(NeuralNetRegressor):
    """What the callback reads of skorch's AccelerateMixin: its accelerator's loss scaling."""

    accelerator = type("Accelerator", (), {"mixed_precision": "fp16", "gradient_accumulation_steps": 1})()


LOSS_MODE_REFUSALS = {
    "lbfgs": (
        NeuralNetRegressor,
        {"optimizer": torch.optim.LBFGS},
        "mode='loss' cannot be used with LBFGS in skorch: LBFGS also reads the loss the closure returns, "
        "which is the data loss alone; override NeuralNet.get_loss to add callback.regularizer_.penalty() "
        "when training=True instead",
    ),
    "accelerate-fp16": (
        AcceleratedNet,
        {},
        "mode='loss' cannot be used with accelerate's fp16 loss scaling or gradient accumulation, which "
        "scale the loss before backward(); use mode='proximal' or 'gradient'",
    ),
    "net-on-grad-computed": (
        ClippingNet,
        {},
        "mode='loss' adds the penalty's gradient in on_grad_computed, which ClippingNet.on_grad_computed "
        "sees before it (skorch calls the net's first); use mode='gradient', or override get_loss to add the penalty",
    ),
}


@pytest.mark.parametrize("case", list(LOSS_MODE_REFUSALS))
def test_loss_mode_refuses_what_it_could_not_make_exact(case, data):
    cls, options, message = LOSS_MODE_REFUSALS[case]
    net = cls(MLP(6, (8,)), train_split=None, callbacks=[RegularizerCallback(L1(0.1), mode="loss")], **options)
    with pytest.raises(InputError) as error:
        net.fit(*data)
    assert str(error.value) == message
    net.set_params(callbacks__RegularizerCallback__mode="gradient")
    if case != "lbfgs":  # LBFGS: no mode of a Regularizer's works (it says so itself)
        net.fit(*data)


def test_without_skorch_the_import_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "skorch", None)
    monkeypatch.setitem(sys.modules, "skorch.callbacks", None)
    monkeypatch.delitem(sys.modules, "shrinkage.skorch")
    with pytest.raises(ImportError) as error:
        importlib.import_module("shrinkage.skorch")
    assert str(error.value) == "shrinkage.skorch needs skorch: pip install 'shrinkage[skorch]'"

"""PyTorch Lightning: RegularizerCallback gives, in every mode, the weights a plain
PyTorch loop with an attached Regularizer gives on the same batches; exact zeros in
proximal mode; the penalty and the sparsity logged."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("pytorch_lightning", reason="Lightning is the optional extra shrinkage[lightning]")

from helpers import make_optimizer  # noqa: E402
from shrinkage import L1, L2, ElasticNet, GroupLasso, Regularizer, Rule  # noqa: E402
from shrinkage.lightning import RegularizerCallback  # noqa: E402
from shrinkage.models import MLP  # noqa: E402

# Lightning's own notices (data loader workers, a torch pytree deprecation it triggers)
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:pytorch_lightning"),
    pytest.mark.filterwarnings("ignore::UserWarning:lightning_fabric"),
]
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

CASES = {  # mode: (penalty, optimizer)
    "proximal": (lambda: GroupLasso(0.05, groups="input"), "adam"),
    "gradient": (lambda: ElasticNet(1e-2, 0.5), "sgd"),
    "decoupled": (lambda: Rule(L2(1e-2), select="net.*"), "adamw"),
    "loss": (lambda: ElasticNet(1e-2, 0.5), "sgd"),
}


class Module(pl.LightningModule):
    def __init__(self, optimizer: str):
        super().__init__()
        torch.manual_seed(0)
        self.net = MLP(6, (8,))
        self.optimizer = optimizer

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("data_loss", loss)
        return loss

    def configure_optimizers(self):
        return make_optimizer(self.optimizer, self.parameters())


def _data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(128, 6, generator=g)
    y = X[:, :2].sum(1, keepdim=True) + 0.1 * torch.randn(128, 1, generator=g)
    return DataLoader(TensorDataset(X, y), batch_size=16, shuffle=False)


def _plain_loop(module: Module, penalty, mode: str, epochs: int) -> Regularizer:
    """The same training without Lightning: the oracle."""
    reg = Regularizer(module, penalty, mode=mode)
    optimizer = module.configure_optimizers()
    reg.attach(optimizer)
    for _ in range(epochs):
        for x, y in _data():
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(module(x), y)
            if mode == "loss":
                loss = loss + reg.penalty()
            loss.backward()
            optimizer.step()
    return reg


@pytest.mark.parametrize("mode", list(CASES))
def test_callback_equals_a_plain_loop(mode):
    make_penalty, optimizer = CASES[mode]
    module = Module(optimizer)
    oracle = copy.deepcopy(module)
    callback = RegularizerCallback(make_penalty(), mode=mode)
    trainer = pl.Trainer(
        max_epochs=6,
        callbacks=[callback],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, _data())
    reg = _plain_loop(oracle, make_penalty(), mode, epochs=6)
    for (name, ours), theirs in zip(module.named_parameters(), oracle.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)
    logged = trainer.callback_metrics
    assert float(logged["penalty_step"]) == pytest.approx(sum(reg.values().values()), rel=1e-5)
    report = callback.regularizer.sparsity()
    assert float(logged["sparsity/fraction_zero"]) == pytest.approx(report.zeros / report.numel)
    assert float(logged["sparsity/features_used"]) == len(report.features_used)
    if mode == "proximal":
        assert report.zeros > 0 and report.features_used == [0, 1]  # the 4 noise inputs are gone, exactly


def test_two_optimizers_are_refused():
    class Two(Module):
        def configure_optimizers(self):
            return [
                torch.optim.SGD(self.net[0].parameters(), lr=0.1),
                torch.optim.SGD(self.net[2].parameters(), lr=0.1),
            ]

        def training_step(self, batch, batch_idx):
            return None

    module = Two("sgd")
    module.automatic_optimization = False
    trainer = pl.Trainer(
        max_epochs=1, callbacks=[RegularizerCallback(L2(0.1))], logger=False, enable_progress_bar=False
    )
    with pytest.raises(ValueError, match="supports a module with one optimizer, got 2"):
        trainer.fit(module, _data())


def test_plain_torch_closure_step_gets_the_penalty_once(rng):
    """optimizer.step(closure) — what Lightning does: the gradient term is added after
    the closure's backward (not before, where zero_grad would erase it)."""
    torch.manual_seed(0)
    a = MLP(6, (8,))
    b = copy.deepcopy(a)
    X, y = torch.randn(32, 6), torch.randn(32, 1)
    for model, use_closure in ((a, True), (b, False)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        Regularizer(model, ElasticNet(0.05, 0.5), mode="gradient").attach(optimizer)
        for _ in range(5):

            def closure(model=model, optimizer=optimizer):
                optimizer.zero_grad()
                loss = torch.nn.functional.mse_loss(model(X), y)
                loss.backward()
                return loss

            if use_closure:
                optimizer.step(closure)
            else:
                closure()
                optimizer.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_the_example_runs_and_selects(capsys):
    import runpy
    from pathlib import Path

    example = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "lightning_callback.py"))
    kept = example["main"](epochs=30)
    assert 0 < len(kept) < 10 and "bmi" in kept  # some inputs dropped exactly, the strongest kept
    assert "inputs kept:" in capsys.readouterr().out


# ---------------------------------------------------------------- fine-tuning: centres


def _fine_tuner(**overrides) -> pl.Trainer:
    settings = {
        "max_epochs": 2,
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **overrides,
    }
    return pl.Trainer(**settings)


def _pretrained() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {k: v + 0.5 for k, v in Module("adam").state_dict().items()}


class LoadsInSetup(Module):
    """A module that loads its pretrained weights in ``setup``, as Lightning suggests."""

    def setup(self, stage):
        self.load_state_dict(_pretrained())


def test_the_centre_is_what_the_module_holds_when_the_fit_starts():
    module = LoadsInSetup("adam")
    callback = RegularizerCallback(L1(1e-2, center="initial"))
    _fine_tuner(callbacks=[callback]).fit(module, _data())
    pretrained = _pretrained()
    centres = dict(zip(callback.regularizer.terms[0].names, callback.regularizer.terms[0].centers))
    for name, centre in centres.items():
        assert torch.equal(centre, pretrained[name]), name  # not the random initialization
    # the penalty is measured from them
    by_hand = sum(float((p.detach() - pretrained[n]).abs().sum()) for n, p in module.named_parameters() if n in centres)
    assert callback.regularizer.values()["l1"] == pytest.approx(1e-2 * by_hand, rel=1e-5)


def test_a_second_fit_keeps_the_centres():
    module = Module("adam")
    start = copy.deepcopy(module.state_dict())
    callback = RegularizerCallback(L1(1e-2, center="initial"))
    _fine_tuner(callbacks=[callback]).fit(module, _data())
    _fine_tuner(callbacks=[callback], max_epochs=1).fit(module, _data())
    term = callback.regularizer.terms[0]
    for name, centre in zip(term.names, term.centers):
        assert torch.equal(centre, start[name])


def test_resuming_from_a_checkpoint_keeps_the_original_centres(tmp_path):
    """A run resumed with ``ckpt_path`` from a module built on the checkpoint's own
    weights (``load_from_checkpoint``) equals the uninterrupted run: the checkpoint holds
    the centres."""
    module = Module("adam")
    start = copy.deepcopy(module.state_dict())
    uninterrupted = copy.deepcopy(module)
    _fine_tuner(callbacks=[RegularizerCallback(L1(1e-2, center="initial"))], max_epochs=4).fit(uninterrupted, _data())

    saver = _fine_tuner(callbacks=[RegularizerCallback(L1(1e-2, center="initial"))])
    saver.fit(module, _data())
    saver.save_checkpoint(tmp_path / "two.ckpt")
    resumed = Module("adam")
    resumed.load_state_dict(torch.load(tmp_path / "two.ckpt", weights_only=False)["state_dict"])
    callback = RegularizerCallback(L1(1e-2, center="initial"))
    _fine_tuner(callbacks=[callback], max_epochs=4).fit(resumed, _data(), ckpt_path=tmp_path / "two.ckpt")
    term = callback.regularizer.terms[0]
    for name, centre in zip(term.names, term.centers):
        assert torch.equal(centre, start[name]), name
    for (name, ours), theirs in zip(resumed.named_parameters(), uninterrupted.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7, msg=name)


def test_a_checkpoint_without_the_state_warns(tmp_path):
    module = Module("adam")
    saver = _fine_tuner()  # no regularizer in the first run: its checkpoint has no state of it
    saver.fit(module, _data())
    saver.save_checkpoint(tmp_path / "plain.ckpt")
    callback = RegularizerCallback(L1(1e-2, center="initial"))
    with pytest.warns(UserWarning, match=r"holds no state of this RegularizerCallback: its penalty centred on"):
        _fine_tuner(callbacks=[callback], max_epochs=3).fit(module, _data(), ckpt_path=tmp_path / "plain.ckpt")


def test_a_run_resumed_with_another_lambda_keeps_the_checkpoints_state(tmp_path):
    module = Module("adam")
    start = copy.deepcopy(module.state_dict())
    saver = _fine_tuner(callbacks=[RegularizerCallback(L1(1e-2, center="initial"))])
    saver.fit(module, _data())
    saver.save_checkpoint(tmp_path / "two.ckpt")
    callback = RegularizerCallback(L1(5e-2, center="initial"))  # the state is found: λ is the checkpoint's
    _fine_tuner(callbacks=[callback], max_epochs=3).fit(module, _data(), ckpt_path=tmp_path / "two.ckpt")
    term = callback.regularizer.terms[0]
    assert term.penalty.lambda_ == 1e-2
    assert all(torch.equal(c, start[n]) for n, c in zip(term.names, term.centers))

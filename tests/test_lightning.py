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
from shrinkage import L2, ElasticNet, GroupLasso, Regularizer, Rule  # noqa: E402
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

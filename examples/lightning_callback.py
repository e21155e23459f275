"""A LightningModule on scikit-learn's diabetes data, with a group lasso on its input
features applied by shrinkage's RegularizerCallback (proximal: exact zeros).

    pip install 'shrinkage[lightning]'
    python examples/lightning_callback.py
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from sklearn.datasets import load_diabetes
from torch.utils.data import DataLoader, TensorDataset

from shrinkage import GroupLasso
from shrinkage.lightning import RegularizerCallback
from shrinkage.models import MLP


class Regressor(pl.LightningModule):
    def __init__(self, n_features: int):
        super().__init__()
        self.net = MLP(n_features, (32,))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("data_loss", loss, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def main(epochs: int = 60) -> list[str]:
    data = load_diabetes()
    X = torch.tensor(data.data, dtype=torch.float32)
    X = (X - X.mean(0)) / X.std(0)
    y = torch.tensor(data.target, dtype=torch.float32)[:, None]
    y = (y - y.mean()) / y.std()
    loader = DataLoader(TensorDataset(X, y), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))

    torch.manual_seed(0)
    module = Regressor(X.shape[1])
    callback = RegularizerCallback(GroupLasso(0.05, groups="input"))  # the one extra line
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, loader)

    metrics = trainer.callback_metrics
    kept = [data.feature_names[j] for j in callback.regularizer.sparsity().features_used]
    print(f"data loss {float(metrics['data_loss_epoch']):.3f}, penalty {float(metrics['penalty_epoch']):.3f}")
    print(f"inputs kept: {kept} ({len(kept)} of {X.shape[1]})")
    return kept


if __name__ == "__main__":
    main()

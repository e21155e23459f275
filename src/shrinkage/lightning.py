"""PyTorch Lightning: a callback that regularizes a ``LightningModule``.

>>> from shrinkage import GroupLasso
>>> from shrinkage.lightning import RegularizerCallback
>>> callback = RegularizerCallback(GroupLasso(1e-2, groups="input"))  # doctest: +SKIP
>>> trainer = pl.Trainer(callbacks=[callback], max_epochs=20)  # doctest: +SKIP

What it does, by mode:

- ``proximal`` (default), ``gradient``, ``decoupled``: the :class:`~shrinkage.Regularizer`
  attaches to the module's optimizer when training starts. Lightning passes a closure
  to ``optimizer.step`` (forward and backward happen inside it); the regularizer adds
  its gradient or decay after that closure and its prox after the step, as without
  Lightning.
- ``loss``: the penalty's own gradient is added after Lightning's backward
  (``on_after_backward``: the same gradient as adding it to the loss). Not with
  16-bit mixed precision, whose loss scaling it would miss; use another mode there.

It logs ``penalty`` (λ·R, apart from the data loss) every step and, each epoch,
``sparsity/fraction_zero`` and ``sparsity/features_used`` (the latter only where the
module's input weight is known, see :func:`~shrinkage.structure.input_parameter_of`);
``callback.regularizer``
holds the bound regularizer (its :meth:`~shrinkage.Regularizer.sparsity` report).
A module with several optimizers is refused: say which parameters go where with
rules and one optimizer, or attach a Regularizer yourself.

Needs ``pytorch-lightning`` (``pip install 'shrinkage[lightning]'``); with only the
``lightning`` package installed, its ``lightning.pytorch`` is used.
"""

from __future__ import annotations

from typing import Any

try:  # the standalone package first, then the unified one
    from pytorch_lightning import Callback
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from lightning.pytorch import Callback  # type: ignore[no-redef]  # the same class, from the other package
    except ImportError:
        raise ImportError("shrinkage.lightning needs PyTorch Lightning: pip install 'shrinkage[lightning]'") from None

from .regularizer import Regularizer
from .validation import InputError

__all__ = ["RegularizerCallback"]


class RegularizerCallback(Callback):
    """Apply a penalty to a ``LightningModule`` in any mode.

    Parameters
    ----------
    penalty : Penalty, Rule or list of Rule
        As for :class:`~shrinkage.Regularizer` (rules select by parameter name in the
        module). A bare penalty touches the layer weights; ``Rule(penalty, select=...)`` says
        otherwise.
    mode : {"proximal", "gradient", "decoupled", "loss"}, default "proximal"
    log : bool, default True
        Log the penalty each step and the sparsity each epoch through ``pl_module.log``.
    """

    def __init__(self, penalty: Any, *, mode: str = "proximal", log: bool = True):
        super().__init__()
        self.penalty, self.mode, self.log = penalty, mode, log
        self.regularizer: Regularizer | None = None
        self._handle = None

    def _bound(self) -> Regularizer:
        """The regularizer that ``setup`` bound to the module."""
        if self.regularizer is None:
            raise RuntimeError("RegularizerCallback has no regularizer yet: Lightning calls setup(stage='fit') first")
        return self.regularizer

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":  # bad rules fail here, before any training
            self.regularizer = Regularizer(pl_module, self.penalty, mode=self.mode)

    def on_train_start(self, trainer, pl_module) -> None:
        optimizers = trainer.optimizers
        if len(optimizers) != 1:
            raise InputError(
                f"RegularizerCallback supports a module with one optimizer, got {len(optimizers)}; "
                "attach a Regularizer to each optimizer yourself"
            )
        if self.mode != "loss":
            self._handle = self._bound().attach(optimizers[0])

    def on_after_backward(self, trainer, pl_module) -> None:
        if self.mode == "loss":
            self._bound().penalty().backward()  # adds λ∇R into .grad, as in the loss

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.log:
            pl_module.log("penalty", sum(self._bound().values().values()), on_step=True, on_epoch=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.log:
            report = self._bound().sparsity()
            pl_module.log("sparsity/fraction_zero", report.zeros / max(report.numel, 1))
            if report.features_used is not None:  # None: the module's input layer is not known
                pl_module.log("sparsity/features_used", float(len(report.features_used)))

    def on_train_end(self, trainer, pl_module) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

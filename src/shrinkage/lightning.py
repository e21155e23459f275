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

It logs ``penalty`` (λ·R, apart from the data loss; Lightning names the per-step and
per-epoch values ``penalty_step`` and ``penalty_epoch``) and, each epoch,
``sparsity/fraction_zero`` (for a penalty centred on reference weights, the fraction of
the penalized entries whose *change* is exactly zero) and ``sparsity/features_used``
(only where the module's input weight is known, see
:func:`~shrinkage.structure.input_parameter_of`); ``callback.regularizer`` holds the
bound regularizer (its :meth:`~shrinkage.Regularizer.sparsity` report).

When it binds: at ``on_fit_start``, after the module's ``setup`` and
``configure_model`` (weights loaded or layers built there are the ones it sees), so a
penalty with ``center="initial"`` is centred on the weights the fit starts from. A later
``fit`` of the same module keeps the bound regularizer and its centres. Lightning
checkpoints hold the regularizer's state (its ``state_dict``: penalties, λ and the
centres), and ``trainer.fit(module, ckpt_path=...)`` restores it (λ included), so a resumed run keeps
the original centres even when the module was built from the checkpoint's weights; a
checkpoint without it (saved before this version) leaves ``"initial"`` meaning the
checkpoint's weights, and a warning says so.
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

from ._warnings import warn
from .regularizer import Regularizer, as_rules
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
        self._pending: dict[str, Any] | None = None  # the state of the checkpoint this fit resumes

    @property
    def state_key(self) -> str:
        """The key of its state in a checkpoint: the kinds of penalty and what they select,
        not λ (a run resumed with another λ still finds its centres; λ is the checkpoint's)."""
        rules = [(type(r.penalty).__name__, repr(r.select)) for r in as_rules(self.penalty)]
        return self._generate_state_key(rules=rules, mode=self.mode)

    def _bound(self) -> Regularizer:
        """The regularizer bound to the module when the fit started."""
        if self.regularizer is None:
            raise RuntimeError("RegularizerCallback has no regularizer yet: Lightning calls on_fit_start first")
        return self.regularizer

    def _bind(self, pl_module) -> Regularizer:
        """The regularizer on ``pl_module``: the one bound before if it is still this
        module's (its tensors unchanged), else a new one, centred on the weights now."""
        reg = self.regularizer
        current = dict(pl_module.named_parameters())
        if reg is None or reg.model is not pl_module or any(p is not current.get(n) for n, p in reg.named_parameters()):
            reg = self.regularizer = Regularizer(pl_module, self.penalty, mode=self.mode)
        return reg

    def state_dict(self) -> dict[str, Any]:
        """The regularizer's state for Lightning's checkpoint (penalties, λ, centres on the CPU)."""
        return {} if self.regularizer is None else {"regularizer": self.regularizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning restores the checkpoint's state here, after the module's weights and
        before ``on_fit_start``: keep it for the binding."""
        self._pending = state_dict.get("regularizer")

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._pending = None

    def on_fit_start(self, trainer, pl_module) -> None:
        reg = self._bind(pl_module)  # bad rules fail here, before any training
        pending, self._pending = self._pending, None
        if pending is not None:
            reg.load_state_dict(pending)
        elif trainer.ckpt_path is not None and any(t.penalty.center == "initial" for t in reg.terms):
            warn(
                f"the checkpoint {trainer.ckpt_path} holds no state of this RegularizerCallback: its penalty "
                "centred on 'initial' is centred on the weights this fit starts from, the checkpoint's; "
                "pass center=<the pretrained state dict> to centre it on the pretrained weights",
                UserWarning,
            )

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

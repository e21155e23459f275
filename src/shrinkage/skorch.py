"""skorch: a callback that regularizes a ``NeuralNet`` (``NeuralNetClassifier``, ``NeuralNetRegressor``, …).

>>> from shrinkage import GroupLasso
>>> from shrinkage.models import MLP
>>> from shrinkage.skorch import RegularizerCallback
>>> from skorch import NeuralNetRegressor  # doctest: +SKIP
>>> net = NeuralNetRegressor(
...     MLP, module__in_features=10, optimizer=torch.optim.Adam, lr=1e-2,
...     callbacks=[("reg", RegularizerCallback(GroupLasso(1e-2, groups="input")))],
... )  # doctest: +SKIP
>>> net.fit(X, y).history[:, "features_used"]  # doctest: +SKIP

What it does, by mode (the objective is the net's loss plus ``Σ λ·R``, as for a
:class:`~shrinkage.Regularizer`):

- ``proximal`` (default), ``gradient``, ``decoupled``: the regularizer attaches to
  ``net.optimizer_`` when training begins. skorch passes its training step to
  ``optimizer.step`` as a closure (forward, ``get_loss``, backward and the
  ``on_grad_computed`` callbacks happen inside it); the regularizer adds its gradient
  (``gradient``) or decay (``decoupled``) after that closure and its prox after the
  step (``proximal``), as in a plain PyTorch loop. Gradient clipping in
  ``on_grad_computed`` (skorch's ``GradientNormClipping``) therefore sees the data
  gradient only, as it would see it with torch's own ``weight_decay``.
- ``loss``: skorch computes the loss in ``NeuralNet.get_loss``, which a callback does
  not reach; the callback adds the penalty's own gradient in ``on_grad_computed``,
  which skorch calls after the loss's ``backward()`` and before the step: the same
  gradient as adding the penalty to the loss. The callbacks that use the gradients
  there (``GradientNormClipping``) must come after this one in ``callbacks``, so that
  they see the whole gradient; otherwise, and with ``LBFGS`` (which also reads the
  closure's loss, without the penalty) or an accelerate fp16/gradient-accumulation
  net (which scale the loss before ``backward``), training is refused. skorch's
  ``train_loss`` stays the data loss.

The regularizer is bound to ``net.module_`` (rules select by its parameter names) and
attached to ``net.optimizer_`` at every ``on_train_begin``, and detached at
``on_train_end`` (which skorch also calls after a ``KeyboardInterrupt``; a fit that
raises leaves it attached until the next training begins, which detaches it first).
``partial_fit`` and a ``warm_start`` fit keep the regularizer bound before; a new one is
built after ``fit``, after ``net.initialize()``, after ``set_params`` on the module or on
the callbacks, and after unpickling.

It records ``penalty`` (λ·R, apart from the data loss) for every training batch and
at the end of every epoch (the value at the epoch's last weights), with ``sparsity``
(the fraction of penalized weights that are exactly zero) and ``features_used`` (the
number of input features still used, where the module's input weight is known, see
:func:`~shrinkage.structure.input_parameter_of`): ``net.history[:, "penalty"]``,
``net.history[-1, "batches", :, "penalty"]``, and columns of skorch's ``PrintLog``.
``callback.regularizer_`` holds the bound regularizer (its
:meth:`~shrinkage.Regularizer.sparsity` report). A net with several optimizers is
refused: say which parameters go where with rules and one optimizer, or attach a
Regularizer yourself.

Centres across trainings: a penalty centred on ``"initial"`` takes the weights as they
are when its regularizer is built.

- ``fit`` (without ``warm_start``) re-initializes the net: the new regularizer is
  centred anew, on the module's weights as ``fit`` starts. For a module class (and so
  in every fit of ``GridSearchCV`` or ``cross_validate``) those are its random
  initialization, not pretrained weights; a module instance is used as it is (its
  weights then, the trained ones after an earlier fit). To fine-tune from pretrained
  weights ``w₀``, give them as the centre, ``L1(λ, center=pretrained_state_dict)``, and
  start the module from them: a module class whose constructor loads them, or
  ``net.initialize()``, ``net.module_.load_state_dict(pretrained_state_dict)``,
  ``net.partial_fit(X, y)``.
- Otherwise (``partial_fit`` or a ``warm_start`` fit after
  ``net.set_params(callbacks__reg__penalty=...)`` or ``callbacks__reg__mode=...``, or
  after unpickling) the module was not re-initialized, and rule ``i`` of the new
  regularizer keeps the centres of rule ``i`` of the previous one when both are
  centred on ``"initial"``, are penalties of the same class (``L1`` and ``L1``: λ may
  differ; not ``L1`` and ``ElasticNet``) and select the same parameter names with the
  same shapes. Any other rule is centred anew: on ``"initial"``, the current weights;
  on a state dict, that dict, copied again.

The callback tells the two apart by ``net.history``, which skorch empties whenever it
(re-)initializes the module (``fit``, ``net.initialize()``, ``set_params(module__...)``):
an empty history is a fresh start. Change the penalty with
``set_params(callbacks__reg__penalty=...)``, not by replacing the callback
(``callbacks__reg=RegularizerCallback(...)``): a new callback has no centres to keep.

A pickled net keeps its centres: ``callback.regularizer_`` (which holds
``net.module_``, pickled apart by skorch) is dropped and its
:meth:`~shrinkage.Regularizer.state_dict` (plain values, the centres as CPU tensors)
pickled instead; the unpickled net's next ``partial_fit`` or ``warm_start`` fit builds
the regularizer with those centres, by the rule above.

Grid search over λ searches over whole penalties (or rules, or lists of rules):
``GridSearchCV(net, {"callbacks__reg__penalty": [L1(1e-4), L1(1e-3), L1(1e-2)]})``.
``callbacks__reg__penalty__lambda_`` fails with a ``ValueError``: a penalty is not a
scikit-learn estimator (it has no ``get_params``/``set_params``), so neither
scikit-learn nor skorch can set a parameter inside it. Each candidate is fitted with
``fit``, so the first point above applies: centre a fine-tuning search on the
pretrained state dict, with a module class that loads it.

Needs skorch (``pip install 'shrinkage[skorch]'``).
"""

from __future__ import annotations

from typing import Any

try:
    from skorch import NeuralNet
    from skorch.callbacks import Callback
except ImportError:
    raise ImportError("shrinkage.skorch needs skorch: pip install 'shrinkage[skorch]'") from None

import torch

from .regularizer import Regularizer
from .structure import unwrap
from .validation import InputError, fail

__all__ = ["RegularizerCallback"]


class RegularizerCallback(Callback):
    """Apply a penalty to a skorch ``NeuralNet`` in any mode.

    Parameters
    ----------
    penalty : Penalty, Rule or list of Rule
        As for :class:`~shrinkage.Regularizer` (rules select by parameter name in
        ``net.module_``). A bare penalty touches the layer weights; ``Rule(penalty,
        select=...)`` says otherwise. Grid-searchable as
        ``callbacks__<name>__penalty``, over whole penalties (not
        ``callbacks__<name>__penalty__lambda_``: a penalty is not an estimator).
    mode : {"proximal", "gradient", "decoupled", "loss"}, default "proximal"
        How the penalty reaches the weights (see the module docstring).
    log : bool, default True
        Record ``penalty`` per training batch and ``penalty``, ``sparsity`` and
        ``features_used`` per epoch in ``net.history``.

    Attributes
    ----------
    regularizer_ : Regularizer or None
        The regularizer bound to ``net.module_`` when training last began; ``None`` in
        an unpickled net until its next training (which keeps the pickled centres).

    Notes
    -----
    The objective is ``loss(net) + Σ_rules λ·R(selected tensors of net.module_)``; the
    parameters of other modules (``module2_``, a criterion's) are not penalized.

    Examples
    --------
    >>> from shrinkage import L1
    >>> callback = RegularizerCallback(L1(1e-3))
    >>> callback.get_params()
    {'penalty': L1(lambda_=0.001), 'mode': 'proximal', 'log': True}
    """

    def __init__(self, penalty: Any, *, mode: str = "proximal", log: bool = True):
        # skorch's get_params/clone see every attribute without a trailing underscore
        # as a parameter: the state below all ends with one
        self.penalty, self.mode, self.log = penalty, mode, log

    # ------------------------------------------------------------------ binding
    def initialize(self) -> RegularizerCallback:
        """Called by skorch when the net (re-)initializes: the next training binds anew."""
        self._rebind_ = True
        if not hasattr(self, "regularizer_"):
            self.regularizer_: Regularizer | None = None
        return self

    def _release(self) -> None:
        """Detach from the optimizer, if attached."""
        handle = getattr(self, "_handle_", None)
        self._handle_ = None
        if handle is not None:
            handle.remove()

    def _is_current(self, net: NeuralNet) -> bool:
        """Whether ``regularizer_`` may go on (``partial_fit``): same module, same tensors,
        same penalty and mode, no re-initialization since."""
        reg = getattr(self, "regularizer_", None)
        if reg is None or getattr(self, "_rebind_", True) or reg.model is not unwrap(net.module_):
            return False
        penalty, mode = getattr(self, "_built_from_", (None, None))
        if penalty is not self.penalty or mode != self.mode:  # callback.set_params(penalty=...)
            return False
        current = {id(p) for p in reg.model.parameters()}
        return all(id(p) in current for p in reg.parameters())

    def _previous_state(self, net: NeuralNet) -> dict[str, Any] | None:
        """The state of the regularizer bound before (in memory, or pickled with the
        net), or ``None`` when the module was (re-)initialized since: skorch empties
        the history whenever it initializes the module (fit, initialize(), set_params)."""
        if len(net.history) == 0:
            return None
        reg = getattr(self, "regularizer_", None)  # a callback set in place of another: not initialized
        if reg is not None:
            return reg.state_dict()
        return getattr(self, "_saved_state_", None)

    @staticmethod
    def _optimizer_of(net: NeuralNet) -> torch.optim.Optimizer:
        names = list(getattr(net, "_optimizers", []))
        if not names and getattr(net, "optimizer_", None) is not None:
            names = ["optimizer"]  # skorch tracks torch optimizers only: check what is there
        if len(names) != 1:
            found = f" ({', '.join(n + '_' for n in names)})" if names else ""
            raise InputError(
                f"RegularizerCallback supports a net with one optimizer, got {len(names)}{found}; "
                "attach a Regularizer to each optimizer yourself"
            )
        optimizer = getattr(net, names[0] + "_")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise fail(f"net.{names[0]}_", "a torch.optim.Optimizer", optimizer, kind=TypeError)
        return optimizer

    def _check_loss_mode(self, net: NeuralNet, optimizer: torch.optim.Optimizer) -> None:
        """Refuse what would make the added gradient differ from the penalty in the loss."""
        if isinstance(optimizer, torch.optim.LBFGS):
            raise InputError(
                "mode='loss' cannot be used with LBFGS in skorch: LBFGS also reads the loss the "
                "closure returns, which is the data loss alone; override NeuralNet.get_loss to add "
                "callback.regularizer_.penalty() when training=True instead"
            )
        accelerator = getattr(net, "accelerator", None)
        if accelerator is not None and (
            getattr(accelerator, "mixed_precision", "no") == "fp16"
            or getattr(accelerator, "gradient_accumulation_steps", 1) > 1
        ):
            raise InputError(
                "mode='loss' cannot be used with accelerate's fp16 loss scaling or gradient "
                "accumulation, which scale the loss before backward(); use mode='proximal' or 'gradient'"
            )
        if type(net).on_grad_computed is not NeuralNet.on_grad_computed:
            raise InputError(
                f"mode='loss' adds the penalty's gradient in on_grad_computed, which "
                f"{type(net).__name__}.on_grad_computed sees before it (skorch calls the net's "
                "first); use mode='gradient', or override get_loss to add the penalty"
            )
        earlier = []
        for name, callback in net.callbacks_:
            if callback is self:
                break
            if type(callback).on_grad_computed is not Callback.on_grad_computed:
                earlier.append(name)
        if earlier:
            raise InputError(
                "mode='loss' adds the penalty's gradient in on_grad_computed, so RegularizerCallback "
                f"must come before the callbacks that use the gradients there, got it after {earlier}; "
                "list it before them in callbacks"
            )

    # ------------------------------------------------------------------ training
    def on_train_begin(self, net: NeuralNet, X: Any = None, y: Any = None, **kwargs: Any) -> None:
        optimizer = self._optimizer_of(net)
        self._release()  # a fit that raised left it attached: skorch called no on_train_end
        if not self._is_current(net):  # bad rules fail here, before any training
            previous = self._previous_state(net)
            self.regularizer_ = Regularizer(net.module_, self.penalty, mode=self.mode)
            if previous is not None:
                _keep_initial_centers(self.regularizer_, previous)
            self._built_from_ = (self.penalty, self.mode)
            self._rebind_ = False
        self._saved_state_ = None  # an unpickled net's centres now live in regularizer_
        reg = self.regularizer_
        assert reg is not None  # bound just above
        if reg.in_loss:
            self._check_loss_mode(net, optimizer)
        # every mode attaches: gradient/decoupled/proximal apply there; terms in mode
        # loss get the step's check that on_grad_computed added their gradient
        self._handle_ = reg.attach(optimizer)

    def on_grad_computed(self, net: NeuralNet, named_parameters: Any, **kwargs: Any) -> None:
        reg = self.regularizer_
        if reg is not None and reg.in_loss:
            penalty = reg.penalty()  # differentiable in its loss-mode terms only
            if penalty.requires_grad:
                penalty.backward()  # adds λ∇R into .grad, as in the loss

    def on_batch_end(self, net: NeuralNet, batch: Any = None, training: bool | None = None, **kwargs: Any) -> None:
        if self.log and training and self.regularizer_ is not None:
            net.history.record_batch("penalty", sum(self.regularizer_.values().values()))

    def on_epoch_end(self, net: NeuralNet, **kwargs: Any) -> None:
        reg = self.regularizer_
        if not self.log or reg is None:
            return
        report = reg.sparsity()
        net.history.record("penalty", sum(reg.values().values()))
        net.history.record("sparsity", report.zeros / max(report.numel, 1))
        if report.features_used is not None:  # None: the module's input layer is not known
            net.history.record("features_used", len(report.features_used))

    def on_train_end(self, net: NeuralNet, X: Any = None, y: Any = None, **kwargs: Any) -> None:
        self._release()

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        # the regularizer holds net.module_, which skorch pickles apart (its
        # device-dependent attributes): a copy here would be a second, unbound module.
        # Its state (plain values, the centres) goes instead, for the next training
        state = self.__dict__.copy()
        for key in ("_handle_", "_built_from_"):
            state.pop(key, None)
        reg = state.get("regularizer_")
        saved = reg.state_dict() if reg is not None else state.get("_saved_state_")
        state["_saved_state_"] = saved  # its centres are CPU copies: a net pickled on a GPU loads anywhere
        state["regularizer_"], state["_rebind_"] = None, True
        return state


def _keep_initial_centers(reg: Regularizer, previous: dict[str, Any]) -> None:
    """Give ``reg``'s rules centred on ``"initial"`` the centres of the previous
    regularizer's rule at the same index, where that rule was the same penalty class,
    also centred on ``"initial"``, on the same parameter names and shapes."""
    for term, entry in zip(reg.terms, previous["rules"]):
        config, saved = entry["penalty"], entry.get("centers")
        if not (
            term.centers is not None
            and isinstance(term.penalty.center, str)  # "initial", not a state dict
            and config.get("name") == term.penalty.name
            and config.get("center") == "initial"
            and list(entry["parameters"]) == term.names
            and isinstance(saved, dict)
            and all(
                isinstance(saved.get(n), torch.Tensor) and saved[n].shape == p.shape
                for n, p in zip(term.names, term.params)
            )
        ):
            continue
        for i, (name, param) in enumerate(zip(term.names, term.params)):
            # a new tensor, not a copy into the old one: rules on the same tensor share
            # their "initial" centre, and the rule after this one may not keep its own
            term.centers[i] = saved[name].detach().to(device=param.device, dtype=param.dtype, copy=True)

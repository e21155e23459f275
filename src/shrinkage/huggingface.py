"""Hugging Face Transformers: a callback that regularizes a ``Trainer`` run.

>>> from shrinkage import L1
>>> from shrinkage.huggingface import RegularizerCallback
>>> callback = RegularizerCallback(L1(1e-5))  # doctest: +SKIP
>>> trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])  # doctest: +SKIP
>>> trainer.train()  # doctest: +SKIP

Rules select tensors by the parameter names of the Trainer's model
(``Rule(L1(1e-4), select="bert.encoder.*")``). The :class:`~shrinkage.Regularizer`
binds when the Trainer is built, so a penalty centred on ``"initial"`` weights is
centred on the model as it was given. When training begins, it attaches to the torch
optimizer inside the Trainer's (Accelerate wraps it); it detaches when training ends.

Checkpoints and resuming (what matters for a centred penalty):

- Saving: into each checkpoint folder the Trainer writes (``output_dir/checkpoint-N``),
  the process that saves writes ``shrinkage_regularizer.pt``, the regularizer's
  :meth:`~shrinkage.Regularizer.state_dict`: each rule's penalty (λ as it is then),
  mode and penalized tensor names and, for a centred penalty, its centres (a copy of
  the reference weights: as large as the tensors it penalizes). It loads with
  ``torch.load(path, weights_only=True)``.
- Resuming: ``trainer.train(resume_from_checkpoint=...)`` (a folder anywhere, or
  ``True``: the last checkpoint of ``output_dir``) loads that file when training begins,
  so the centres and λ are the original run's — also for a Trainer built, the common
  way, from ``from_pretrained("out/checkpoint-N")``, whose fine-tuned weights ``"initial"``
  would take as the centre. The saved penalties replace the callback's: its rules must
  select the same tensors in the same modes (else ``InputError``), and λ is the
  checkpoint's.
- A checkpoint without the file (saved without this callback) resumes with a
  ``UserWarning`` where a penalty is centred on ``"initial"``: its centre is then the
  weights the Trainer was given. A centre given as tensors
  (``center=pretrained.state_dict()``) does not depend on the file.
- The Trainer tells its callbacks nothing of the folder it resumes from; the callback
  reads it in the arguments of ``Trainer.train`` on the call stack when training
  begins, and failing that (a Trainer that trains otherwise) takes
  ``output_dir/checkpoint-{global_step}``. The checkpoints of a hyperparameter search
  (in folders named after the trial) get no file.

What it does, by mode (the Trainer's step is: forward and backward for each of the
``gradient_accumulation_steps`` micro-batches, gradient clipping, ``optimizer.step()``):

- ``proximal`` (default): the prox after each ``optimizer.step()``, with the step the
  optimizer took; exact zeros. Once per optimizer step, whatever the accumulation.
- ``decoupled``: weight decay ``w ← w·(1 − lr·2λ)`` just before each step (L2 only).
- ``gradient``: the (sub)gradient is added just before each step, after the Trainer's
  gradient clipping, as torch's own ``weight_decay`` is: clipping does not see it.
- ``loss``: the penalty joins the loss the model returns in training
  (``outputs.loss``), so the backward, the fp16 loss scaling, the gradient clipping and
  DistributedDataParallel all see its gradient, as if the user had written it into the
  loss. The Trainer divides a per-micro-batch mean loss by the number of micro-batches
  of the step, but not a loss the model normalized over the whole accumulated batch
  (when it passes ``num_items_in_batch`` to the model): the penalty is added to every
  micro-batch in the first case and to the last one of the step in the second, so that
  its gradient counts once per optimizer step — across DistributedDataParallel
  processes too: where the Trainer multiplies such a loss by their number
  (``average_tokens_across_devices``), the penalty is divided by it. What is added is
  ``P − P.detach()``: zero in value, so the Trainer's logged ``loss`` stays the data
  loss, and ``∇P`` in gradient. The loss must be the model's own: a ``compute_loss_func``, label smoothing
  or a batch without labels (the model returns no loss) raise ``InputError``; a Trainer
  subclass that overrides ``compute_loss`` or sets ``loss_is_scaled_for_ga`` should use
  another mode.

Mixed precision: under bf16 or fp16 autocast the parameters stay float32 and the prox
writes exact zeros in them. With fp16, Accelerate's ``GradScaler`` skips the step on
an overflow, and no prox, decay or gradient is applied to a skipped step: the step
hooks do not run, or — with an optimizer that takes the scaler into its own step (the
fused AdamW of ``optim="adamw_torch_fused"``, the Trainer's default with torch >= 2.8),
which runs and leaves the weights — the :class:`~shrinkage.Regularizer` reads the
scaler's overflow flag and leaves them too.

Logging: ``penalty`` (λ·R of the weights each optimizer step produced, apart from the
data loss, averaged over the steps since the last log as the Trainer averages its
``loss``) and ``sparsity`` (the fraction of penalized weights that are exactly zero —
for a centred penalty, whose change from the centre is exactly zero — when the log is
written) join each training log: ``trainer.state.log_history`` and every callback that
runs after this one (the progress bar, the printer). The Trainer runs the reporting
integrations of ``report_to`` *before* the callbacks given to it, so for them to record
the two values put this callback first with :meth:`RegularizerCallback.add_to`::

    trainer = Trainer(model=model, args=args, train_dataset=data)
    RegularizerCallback(L1(1e-5)).add_to(trainer)      # before the integrations
    trainer.train()

Not supported (``InputError`` when the Trainer is built or training begins): DeepSpeed and FSDP (they keep and
step their own sharded copies of the weights), parameters sharded at load time,
layer-wise (GaLore) and LOMO optimizers (their ``step()`` does not update), and mode
``loss`` under ``DataParallel`` (several GPUs in one process; DistributedDataParallel
works).

Needs Hugging Face Transformers (``pip install 'shrinkage[huggingface]'``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
except ImportError:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "shrinkage.huggingface needs Hugging Face Transformers: pip install 'shrinkage[huggingface]'"
    ) from None

import torch
from torch import Tensor, nn

from ._warnings import warn
from .regularizer import MODES, Regularizer, as_rules
from .structure import unwrap
from .validation import InputError, check_bool, check_choice, fail

__all__ = ["RegularizerCallback"]

# Accelerate's DistributedType values whose parameters or optimizer the Trainer does not
# hold as plain tensors and one torch optimizer
_SHARDED = {"DEEPSPEED": "DeepSpeed", "FSDP": "FSDP", "MEGATRON_LM": "Megatron-LM"}

#: The file in each Trainer checkpoint that holds the regularizer's state (its centres).
STATE_FILE = "shrinkage_regularizer.pt"
# the Trainer methods that hold the checkpoint being resumed as ``resume_from_checkpoint``
_TRAIN_METHODS = ("_inner_training_loop", "train")


class RegularizerCallback(TrainerCallback):
    """Apply a penalty to a Hugging Face ``Trainer`` run in any mode.

    Parameters
    ----------
    penalty : Penalty, Rule or list of them
        As for :class:`~shrinkage.Regularizer`: rules select by parameter name in the
        Trainer's model; a bare penalty touches the layer weights (not biases, layer
        norms or free parameters).
    mode : {"proximal", "gradient", "decoupled", "loss"}, default "proximal"
        How the penalty reaches the weights (see the module docstring).
    log : bool, default True
        Add ``penalty`` and ``sparsity`` to the Trainer's training logs.

    Attributes
    ----------
    regularizer : Regularizer or None
        The regularizer bound to the Trainer's model (its
        :meth:`~shrinkage.Regularizer.sparsity` report, :meth:`~shrinkage.Regularizer.values`).

    Notes
    -----
    The objective is the Trainer's loss plus ``Σ_rules λ·R(selected tensors)``, the
    penalty counted once per optimizer step.

    Each checkpoint the Trainer saves holds the regularizer's state (the centres of a
    centred penalty), which resuming from it restores (see the module docstring).

    Examples
    --------
    >>> from shrinkage import L1, Rule
    >>> callback = RegularizerCallback(Rule(L1(1e-4), select="bert.encoder.*"), mode="proximal")
    >>> callback.regularizer is None  # bound when the Trainer is built
    True
    """

    def __init__(self, penalty: Any, *, mode: str = "proximal", log: bool = True):
        as_rules(penalty)  # a bad penalty fails here, before a Trainer is built
        self.penalty = penalty
        self.mode = check_choice("mode", mode, MODES)
        self.log = check_bool("log", log)
        self.regularizer: Regularizer | None = None
        self._first = False  # placed before the reporting integrations by add_to
        self._handle: Any = None  # the optimizer attachment
        self._hook: Any = None  # mode loss: the model's forward hook
        self._gradient_state: Any = None
        self._normalized_weight = 1.0
        self._penalty_sum: Tensor | None = None
        self._penalty_steps = 0

    # ------------------------------------------------------------------ setup
    def add_to(self, trainer: Trainer) -> Trainer:
        """Add this callback to ``trainer`` ahead of its other callbacks, so that the
        reporting integrations (which the Trainer runs before the callbacks passed to it)
        record ``penalty`` and ``sparsity``; bind the regularizer to ``trainer.model``.

        Returns the trainer. Moves the callback if the trainer already holds it.
        """
        if not isinstance(trainer, Trainer):
            raise fail("trainer", "a transformers.Trainer", trainer, kind=TypeError)
        _check_args(trainer.args)
        self._bind(trainer.model)
        callbacks = trainer.callback_handler.callbacks
        if any(c is self for c in callbacks):
            callbacks.remove(self)
        callbacks.insert(0, self)
        self._first = True
        return trainer

    def _bind(self, model: nn.Module | None) -> Regularizer:
        """The regularizer on ``model``: kept if already bound to it (a centre stays the
        weights it was bound with), bound anew for another model (``model_init``)."""
        if not isinstance(model, nn.Module):
            raise fail("model", "the Trainer's torch.nn.Module", model, kind=TypeError)
        if self.regularizer is None or self.regularizer.model is not unwrap(model):
            _check_model(model)
            self.regularizer = Regularizer(model, self.penalty, mode=self.mode)
        return self.regularizer

    def on_init_end(self, args, state, control, model=None, **kwargs):
        _check_args(args)
        if model is not None:  # bad rules fail when the Trainer is built
            self._bind(model)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        _check_args(args, optimizer)
        reg = self._bind(model)
        folder = _resumed_from(args, state)
        if folder is not None:
            self._restore(folder)
        self._release()  # left attached by a run that raised
        inner = _torch_optimizer(optimizer)
        if reg.in_loss:
            self._check_loss_mode(args, optimizer)
        self._handle = reg.attach(inner)
        if reg.in_loss:
            self._gradient_state = optimizer.gradient_state  # which micro-batch ends the accumulation
            # the Trainer multiplies a loss normalized over all processes' items by their number
            # (then DDP averages the gradients): the penalty is divided by it beforehand
            average = getattr(args, "average_tokens_across_devices", False) and args.world_size > 1
            self._normalized_weight = 1.0 / args.world_size if average else 1.0
            hook = torch.compiler.disable(self._add_penalty)  # eager under torch_compile
            self._hook = reg.model.register_forward_hook(hook, with_kwargs=True)
        self._penalty_sum, self._penalty_steps = None, 0
        if self.log and args.report_to and not self._first:
            warn(
                f"RegularizerCallback runs after the reporting integrations {list(args.report_to)}, which log "
                "before it adds 'penalty' and 'sparsity'; add it with callback.add_to(trainer) for them to "
                "record the two",
                UserWarning,
            )

    def on_train_end(self, args, state, control, **kwargs):
        self._release()

    # ------------------------------------------------------------------ checkpoints
    def on_save(self, args, state, control, **kwargs):
        """Write the regularizer's state into the checkpoint the Trainer has just saved."""
        # the Trainer's _save_checkpoint writes output_dir/checkpoint-{global_step} (a trial's own
        # folder in a hyperparameter search, which it names after the trial: not known here)
        if not args.should_save or state.is_hyper_param_search:
            return
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if not os.path.isdir(folder):
            warn(
                f"RegularizerCallback found no checkpoint folder {folder} after the Trainer saved one: the "
                f"regularizer's state ({STATE_FILE}, with its centres) is not in that checkpoint",
                UserWarning,
            )
            return
        torch.save(self._bound().state_dict(), os.path.join(folder, STATE_FILE))  # centres on the CPU

    def _restore(self, folder: str) -> None:
        """Load the regularizer's state from the checkpoint ``folder`` the Trainer resumes from."""
        reg = self._bound()
        path = os.path.join(folder, STATE_FILE)
        if os.path.isfile(path):
            saved = torch.load(path, map_location="cpu", weights_only=True)
            try:
                reg.load_state_dict(saved)
            except InputError as error:
                raise InputError(
                    f"{path} does not fit this RegularizerCallback: {error}; resume with the rules of the run "
                    "that saved the checkpoint"
                ) from None
        elif any(r.penalty.center == "initial" for r in reg.rules):
            warn(
                f"RegularizerCallback: the Trainer resumes from {folder}, which holds no {STATE_FILE}: the "
                "penalties centred on 'initial' are now centred on the weights the Trainer was given, not on "
                "those of the run that saved the checkpoint; center=<pretrained state dict> (the reference "
                "weights themselves) does not rely on the checkpoint",
                UserWarning,
            )

    def _release(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _bound(self) -> Regularizer:
        if self.regularizer is None:
            raise RuntimeError("RegularizerCallback has no regularizer yet: the Trainer binds it when it is built")
        return self.regularizer

    # ------------------------------------------------------------------ mode loss
    def _check_loss_mode(self, args, optimizer: Any) -> None:
        if getattr(optimizer, "gradient_state", None) is None:
            raise InputError(
                "mode='loss' needs the Trainer's optimizer as Accelerate prepares it (it tells which micro-batch "
                f"ends the gradient accumulation), got {type(optimizer).__name__}"
            )
        if args.n_gpu > 1:
            raise InputError(
                f"mode='loss' does not support DataParallel (this process drives {args.n_gpu} GPUs): each replica "
                "would add the penalty on another device; launch one process per GPU (torchrun, accelerate launch) "
                "or use another mode"
            )
        if args.gradient_accumulation_steps > 1 and not hasattr(Trainer, "loss_is_scaled_for_ga"):
            import transformers

            raise InputError(
                "mode='loss' with gradient_accumulation_steps > 1 needs a Trainer that scales the loss of the "
                "micro-batches by the rule of its loss_is_scaled_for_ga, which the Trainer of transformers "
                f"{transformers.__version__} has not; upgrade transformers, or use another mode"
            )

    def _add_penalty(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        """Forward hook: the model's training loss plus ``w·(P − P.detach())``."""
        if not (module.training and torch.is_grad_enabled()):
            return None  # evaluation, prediction
        # num_items_in_batch reaches the model when the Trainer leaves the loss undivided (the
        # model normalizes it over the whole accumulated batch): the penalty then goes into the
        # last micro-batch of the step; otherwise into each, which the Trainer divides by their number
        normalized = kwargs.get("num_items_in_batch") is not None
        if normalized and not self._gradient_state.sync_gradients:
            return None
        loss = _loss_of(output)
        penalty = self._bound().penalty()
        term = penalty - penalty.detach()  # 0 in value, ∇P in gradient
        if normalized and self._normalized_weight != 1.0:
            term = term * self._normalized_weight
        term = term.to(device=loss.device, dtype=loss.dtype)
        if isinstance(output, dict):  # a ModelOutput (an OrderedDict) or a plain dict
            output["loss"] = loss + term
            return output
        return (loss + term, *output[1:])

    # ------------------------------------------------------------------ logging
    def on_step_end(self, args, state, control, **kwargs):
        if self.log:  # after the optimizer step and the prox: the weights this step produced
            with torch.no_grad():
                value = self._bound().penalty().detach().float()
            if self._penalty_sum is None:
                self._penalty_sum = value
            else:
                self._penalty_sum += value.to(self._penalty_sum.device)  # on the device: no sync per step
            self._penalty_steps += 1

    def on_log(self, args, state, control, logs=None, **kwargs):
        # training logs only (they carry the Trainer's averaged "loss"), not evaluation or the final summary
        if not self.log or logs is None or "loss" not in logs or self._penalty_sum is None:
            return
        values = {
            "penalty": float(self._penalty_sum) / self._penalty_steps,
            "sparsity": self._bound().sparsity().fraction_zero,
        }
        self._penalty_sum, self._penalty_steps = None, 0
        logs.update(values)
        # Trainer.log appended a copy of these logs to the history just before calling on_log
        history = state.log_history
        if history and history[-1].get("step") == state.global_step and history[-1].get("loss") is logs["loss"]:
            history[-1].update(values)


# ---------------------------------------------------------------------- checkpoints
def _resumed_from(args, state) -> str | None:
    """The checkpoint folder the Trainer resumes from as training begins, or ``None``.

    The Trainer gives no callback the folder of ``train(resume_from_checkpoint=...)``
    (``args.resume_from_checkpoint`` is a command-line option ``train`` does not read):
    ``train`` and ``_inner_training_loop`` hold it, ``True`` already turned into the last
    checkpoint of ``output_dir``, as their argument ``resume_from_checkpoint``; it is read
    in the innermost of their frames on the call stack. Without such a frame (a Trainer
    that trains otherwise), a resumed state (``global_step > 0`` as training begins) came
    from ``output_dir/checkpoint-{global_step}``, the folder ``resume_from_checkpoint=True``
    finds.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in _TRAIN_METHODS and isinstance(frame.f_locals.get("self"), Trainer):
            path = frame.f_locals.get("resume_from_checkpoint")
            return os.fspath(path) if isinstance(path, str | os.PathLike) else None
        frame = frame.f_back  # type: ignore[assignment]
    if state.global_step > 0:
        return os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
    return None


# ---------------------------------------------------------------------- checks
def _check_args(args, optimizer: Any = None) -> None:
    """Refuse the setups whose weights or optimizer the regularizer cannot reach."""
    state = getattr(optimizer, "accelerator_state", None)
    kind = getattr(getattr(state, "distributed_type", None), "value", None)
    if getattr(args, "deepspeed", None):
        kind = "DEEPSPEED"
    elif getattr(args, "fsdp", None):
        kind = "FSDP"
    if kind in _SHARDED:
        raise InputError(
            f"RegularizerCallback does not support {_SHARDED[kind]}: it keeps and steps its own sharded copies "
            "of the weights, which the regularizer does not see; use DistributedDataParallel, or a Regularizer "
            "in your own loop (it supports FSDP2's fully_shard)"
        )
    optim = str(getattr(getattr(args, "optim", None), "value", getattr(args, "optim", "")))
    if "layerwise" in optim or "lomo" in optim:
        raise InputError(
            f"RegularizerCallback does not support optim={optim!r}: the update happens during backward and "
            "optimizer.step() does nothing, so the penalty would miss every step; use an optimizer such as "
            "'adamw_torch'"
        )


def _check_model(model: nn.Module) -> None:
    if getattr(model, "is_distributed_loading_by_transformers", False):
        raise InputError(
            "RegularizerCallback does not support a model sharded at load time (from_pretrained with a "
            "distributed config or tp_plan); load it whole and train with DistributedDataParallel"
        )


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer that steps: Accelerate's ``AcceleratedOptimizer`` (itself an
    ``Optimizer`` subclass whose step hooks never run) holds it as ``.optimizer``."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InputError(
            "RegularizerCallback needs the Trainer's torch optimizer when training begins, "
            f"got {type(optimizer).__name__}"
        )
    return optimizer


def _loss_of(output: Any) -> Tensor:
    """The training loss in the model's output, as ``Trainer.compute_loss`` reads it."""
    if isinstance(output, dict):
        loss = output.get("loss")
    elif isinstance(output, tuple) and output:
        loss = output[0]
    else:
        loss = None
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise InputError(
            "mode='loss' adds the penalty to the loss the model returns in training, and this model returned "
            f"none (got {type(loss).__name__}): the Trainer computes the loss itself (label_smoothing_factor, "
            "compute_loss_func) or the batch has no labels; use mode='gradient' or 'proximal'"
        )
    return loss

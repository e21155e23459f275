"""The step an optimizer actually took, per parameter, for the proximal mode.

A proximal step must use the optimizer's own step size, or its fixed point is not the
regularized optimum. For a parameter updated as ``w ← w − D ⊙ u`` where the update
direction ``u`` tends to the gradient ``g`` at a fixed point, the prox step is ``D``:
then ``w = prox_{D·λR}(w − D ⊙ g)`` holds exactly when ``0 ∈ g + λ∂R(w)``.

==========================  ============================================================
optimizer                   step ``D`` used by the prox
==========================  ============================================================
SGD                         ``lr·(1 − dampening) / (1 − momentum)`` (the momentum buffer
                            tends to ``(1 − dampening)·g / (1 − momentum)``; Nesterov too)
Adam, AdamW (amsgrad too)   ``lr / (√(v / (1 − β₂ᵗ)) + ε)`` per element
RMSprop                     ``lr / (√v + ε)`` per element, divided by ``1 − momentum``
                            (centered: ``√(v − ḡ²)``, with a warning: that variance
                            vanishes at the optimum, so the steps do not settle)
Adagrad                     ``lr / (1 + (t − 1)·lr_decay) / (√Σg² + ε)`` per element
Adamax                      ``lr / u`` per element (``u`` its infinity-norm state)
anything else               ``lr`` (with a warning: the fixed point is then not exact)
==========================  ============================================================
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import SGD, Adagrad, Adam, Adamax, Optimizer, RMSprop

from ._warnings import warn
from .functional import RootStep, RootSteps, ScaledStep
from .penalties import Penalty
from .validation import InputError, InputTypeError

__all__ = [
    "DoubleRegularizationWarning",
    "ExactStepWarning",
    "check_not_sharded",
    "check_optimizer",
    "check_parameters_current",
    "is_adaptive",
    "prox_steps",
    "warn_double_regularization",
]


class ExactStepWarning(UserWarning):
    """The proximal step cannot follow this optimizer's per-element step exactly."""


class DoubleRegularizationWarning(UserWarning):
    """The optimizer's own ``weight_decay`` acts on tensors a penalty already regularizes."""


def warn_double_regularization(optimizer: Optimizer, penalized: dict[int, str], penalty: str) -> None:
    """Warn (once per call) when a param group with ``weight_decay != 0`` holds penalized tensors."""
    for index, group in enumerate(optimizer.param_groups):
        decay = group.get("weight_decay", 0.0)
        names = [penalized[id(p)] for p in group["params"] if id(p) in penalized]
        if decay and names:
            shown = ", ".join(repr(n) for n in names[:3]) + (", …" if len(names) > 3 else "")
            warn(
                f"optimizer param group {index} has weight_decay={decay:g} on {shown}, which {penalty} already "
                f"regularizes: they are regularized twice. Set weight_decay=0 for them (AdamW's default is 0.01), "
                "or drop the penalty",
                DoubleRegularizationWarning,
            )
            return


Numerator = float | Tensor
StepRule = Callable[[dict[str, Any], Sequence[Tensor], Optimizer], Sequence[Any]]


# Nothing here reads a CUDA tensor back to the host: a learning rate or step count kept on
# the device (``capturable=True``, ``fused=True``, a tensor ``lr``) stays there, and the
# steps become 0-d device tensors, so that a step can be captured in a CUDA graph.
def _on_device(value: Any) -> bool:
    return isinstance(value, Tensor) and value.device.type != "cpu"


def _lr(group: dict[str, Any]) -> Numerator:
    """The group's learning rate: a float, or a 0-d tensor where it lives on a device."""
    lr = group["lr"]
    return lr if _on_device(lr) else float(lr)


def _sgd(group, params, optimizer):
    momentum = group.get("momentum", 0.0)
    step = _lr(group)
    if momentum:
        step = step * ((1.0 - group.get("dampening", 0.0)) / (1.0 - momentum))
    return [step] * len(params)


def _step_count(state: dict[str, Any]) -> float:
    step = state["step"]
    return float(step.item() if isinstance(step, Tensor) else step)


def _adam(group, params, optimizer):
    # lr / (√(v/(1−β₂ᵗ)) + ε) = lr·√(1−β₂ᵗ) / (√v + ε·√(1−β₂ᵗ)), t per parameter
    beta2, eps, lr = float(group["betas"][1]), float(group["eps"]), _lr(group)
    key = "max_exp_avg_sq" if group.get("amsgrad", False) else "exp_avg_sq"
    states = [optimizer.state[p] for p in params]
    counts = [s["step"] for s in states]
    device = next((c.device for c in counts if _on_device(c)), lr.device if isinstance(lr, Tensor) else None)
    if device is None:
        roots = [math.sqrt(1.0 - beta2 ** _step_count(s)) for s in states]
        return RootSteps([lr * r for r in roots], [s[key] for s in states], [eps * r for r in roots])
    # on the device, a few small kernels for all parameters together; a count kept on
    # the host (a non-capturable Adam given a tensor lr) is read there, without a sync
    devices = {c.device for c in counts if _on_device(c)} | ({lr.device} if isinstance(lr, Tensor) else set())
    if len(devices) > 1:  # parameters on several GPUs: each its own, on its own device
        return [_adam_step(lr, beta2, eps, s, key) for s in states]
    if all(_on_device(c) and c.dtype == torch.float32 and c.ndim == 0 for c in counts):
        t = torch.stack(counts)  # fused / capturable Adam: one small copy for all
    else:
        t = torch.stack(
            [
                c.reshape(()).to(torch.float32) if _on_device(c) else torch.full((), _step_count(s), device=device)
                for c, s in zip(counts, states)
            ]
        )
    root = torch.sqrt(1.0 - torch.pow(beta2, t))
    return RootSteps(root * lr, [s[key] for s in states], root * eps)  # vectors: one per parameter


def _adam_step(lr: Numerator, beta2: float, eps: float, state: dict[str, Any], key: str) -> RootStep:
    """One parameter's Adam step, its bias correction computed where its step count lives."""
    count = state["step"]
    if not _on_device(count):
        root: float | Tensor = math.sqrt(1.0 - beta2 ** _step_count(state))
    else:
        root = torch.sqrt(1.0 - torch.pow(beta2, count.to(torch.float32)))
    numerator = lr * root if not isinstance(lr, Tensor) else lr.to(state[key].device) * root
    return RootStep(numerator, state[key], eps * root)


def _rmsprop(group, params, optimizer):
    states = [optimizer.state[p] for p in params]
    step = _lr(group) / (1.0 - group.get("momentum", 0.0))
    eps = float(group["eps"])
    if not group.get("centered", False):
        return [RootStep(step, s["square_avg"], eps) for s in states]
    averages = [s["grad_avg"] for s in states]
    variance = torch._foreach_mul(averages, averages)
    torch._foreach_neg_(variance)
    torch._foreach_add_(variance, [s["square_avg"] for s in states])
    denominators = torch._foreach_sqrt(variance)
    torch._foreach_add_(denominators, eps)
    return [ScaledStep(step, d) for d in denominators]


def _adagrad(group, params, optimizer):
    states = [optimizer.state[p] for p in params]
    decay, lr, eps = float(group.get("lr_decay", 0.0)), _lr(group), float(group["eps"])
    # the decayed learning rate, per parameter (its own step count; Adagrad keeps it on the host)
    return [RootStep(lr / (1.0 + (_step_count(s) - 1.0) * decay), s["sum"], eps) for s in states]


def _adamax(group, params, optimizer):
    # its denominator is its own state (read only by the prox): no temporary at all
    lr = _lr(group)
    return [ScaledStep(lr, optimizer.state[p]["exp_inf"]) for p in params]


# Order matters: AdamW subclasses Adam and shares its state layout.
_RULES: tuple[tuple[type[Optimizer], StepRule], ...] = (
    (SGD, _sgd),
    (Adam, _adam),
    (RMSprop, _rmsprop),
    (Adagrad, _adagrad),
    (Adamax, _adamax),
)


def _rule_for(optimizer: Optimizer) -> StepRule | None:
    for cls, rule in _RULES:
        if isinstance(optimizer, cls):
            return rule
    return None


def _lr_only(group, params, optimizer):
    return [_lr(group)] * len(params)


def is_adaptive(optimizer: Optimizer) -> bool:
    """Whether the optimizer's step differs per element (anything but SGD)."""
    return not isinstance(optimizer, SGD)


def check_optimizer(optimizer: Any, mode: str) -> None:
    """Refuse optimizers that a ``mode`` cannot work with; warn where it is inexact."""
    if not isinstance(optimizer, Optimizer):
        raise InputTypeError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
    if isinstance(optimizer, torch.optim.LBFGS):
        raise InputError(
            f"mode={mode!r} cannot be used with LBFGS, which re-evaluates gradients inside "
            "step(); use mode='loss' and add reg.penalty() to the loss in the closure"
        )
    for index, group in enumerate(optimizer.param_groups):
        if group.get("maximize", False):
            raise InputError(f"optimizer param group {index} has maximize=True; penalties minimize")
        if mode == "proximal" and group.get("momentum", 0.0) >= 1.0:
            raise InputError(
                f"optimizer param group {index} must have momentum < 1 for mode='proximal', got {group['momentum']}"
            )
    if mode == "proximal" and isinstance(optimizer, RMSprop) and any(g.get("centered") for g in optimizer.param_groups):
        warn(
            "mode='proximal' with RMSprop(centered=True) does not settle: at the regularized optimum the data "
            "gradient is a non-zero constant, so the centered variance v − ḡ² tends to 0 and the step to lr/eps; "
            "use centered=False (exact) or Adam",
            ExactStepWarning,
        )
    if mode == "proximal" and _rule_for(optimizer) is None:
        warn(
            f"mode='proximal' does not know the per-element step of {type(optimizer).__name__}; "
            "the prox uses the learning rate alone, so with an adaptive optimizer the fixed "
            "point is not the exact regularized optimum. Exact for: SGD, Adam, AdamW, RMSprop, "
            "Adagrad, Adamax.",
            ExactStepWarning,
        )


def prox_steps(optimizer: Optimizer, group: dict[str, Any], params: Sequence[Tensor]) -> Sequence[Any]:
    """The step ``D`` each of ``params`` (all in ``group``) just took, as the prox needs it.

    Returns a sequence with, per parameter, a float (SGD), a
    :class:`~shrinkage.functional.RootStep` (Adam, AdamW, RMSprop, Adagrad: numerator /
    (√ the optimizer's state + ε); Adam's come as one
    :class:`~shrinkage.functional.RootSteps`) or a
    :class:`~shrinkage.functional.ScaledStep` (Adamax, centered RMSprop). Numerators are
    0-d device tensors where the learning rate or the step count lives on a device
    (``capturable=True``, ``fused=True``, a tensor ``lr``): nothing is read back to the host.
    """
    rule = _rule_for(optimizer) or _lr_only
    return rule(group, params, optimizer)


# --------------------------------------------------------------------------- sharded tensors
# FSDP2 (``fully_shard``) replaces each parameter by a DTensor whose rank holds one shard
# (``placements=(Shard(0),)``: a block of rows). Element-wise penalties are exact on any
# shard; a group's norm is not (a column group is split across ranks).


def _sharded_placements(tensor: object) -> tuple | None:
    """The DTensor placements of ``tensor`` if it is split across ranks (not only replicated), else None."""
    # no DTensor exists unless torch.distributed.tensor was imported: no import here
    dtensor = sys.modules.get("torch.distributed.tensor")
    if dtensor is None or not isinstance(tensor, dtensor.DTensor):
        return None
    placements = tuple(tensor.placements)
    return None if all(p.is_replicate() for p in placements) else placements


def check_not_sharded(penalty: Penalty, named: Sequence[tuple[str, Tensor]]) -> None:
    """Refuse a penalty that needs whole tensors on a sharded (FSDP/DTensor) tensor.

    L1, L2 and elastic net act element by element, so each rank applies them exactly to
    its own shard. Group, sparse group and hierarchical penalties (any penalty with group
    layouts, or coupled across tensors) need whole rows or columns: per shard, each rank
    would compute a group's norm over its part only.
    """
    sharded = [(name, placements) for name, t in named if (placements := _sharded_placements(t)) is not None]
    if not sharded or (not penalty.coupled and penalty.layouts(named) is None):
        return
    name, placements = sharded[0]
    raise InputError(
        f"{type(penalty).__name__} needs whole tensors, but {name!r} is sharded (a DTensor with placements "
        f"{placements}): each rank would compute its groups' norms over its own shard. Use L1, L2 or ElasticNet "
        "on sharded tensors, or DistributedDataParallel (whole tensors on every rank) for this penalty"
    )


def check_parameters_current(model: nn.Module, named: Iterable[tuple[str, Tensor]]) -> None:
    """Refuse penalized tensors that are no longer the model's own parameters.

    ``fully_shard`` replaces every parameter by a new DTensor: a regularizer built before
    it would penalize the old tensors, which no longer train (silently, in mode
    ``loss``). Build the regularizer after ``fully_shard``.
    """
    current = dict(model.named_parameters())
    for name, param in named:
        now = current.get(name)
        if now is not param:
            hint = " (fully_shard replaces parameters with DTensors)" if _sharded_placements(now) else ""
            raise InputError(
                f"parameter {name!r} is no longer the model's: it was replaced after the Regularizer was "
                f"built{hint}. Build the Regularizer after fully_shard, load_state_dict(assign=True) or any other "
                "replacement of the parameters"
            )

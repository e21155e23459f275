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
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import SGD, Adagrad, Adam, Adamax, Optimizer, RMSprop

from .functional import ScaledStep
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
            warnings.warn(
                f"optimizer param group {index} has weight_decay={decay:g} on {shown}, which {penalty} already "
                f"regularizes: they are regularized twice. Set weight_decay=0 for them (AdamW's default is 0.01), "
                "or drop the penalty",
                DoubleRegularizationWarning,
                stacklevel=3,
            )
            return


StepRule = Callable[[dict[str, Any], Sequence[Tensor], Optimizer], list[float] | list[ScaledStep]]


def _sgd(group, params, optimizer):
    momentum = group.get("momentum", 0.0)
    step = float(group["lr"])
    if momentum:
        step *= (1.0 - group.get("dampening", 0.0)) / (1.0 - momentum)
    return [step] * len(params)


def _step_count(state: dict[str, Any]) -> float:
    step = state["step"]
    return float(step.item() if isinstance(step, Tensor) else step)


def _scaled(numerators: Sequence[float], denominators: Sequence[Tensor]) -> list[ScaledStep]:
    return [ScaledStep(a, d) for a, d in zip(numerators, denominators)]


def _adam(group, params, optimizer):
    # lr / (√(v/(1−β₂ᵗ)) + ε) = lr·√(1−β₂ᵗ) / (√v + ε·√(1−β₂ᵗ)), t per parameter
    beta2, eps, lr = float(group["betas"][1]), float(group["eps"]), float(group["lr"])
    key = "max_exp_avg_sq" if group.get("amsgrad", False) else "exp_avg_sq"
    states = [optimizer.state[p] for p in params]
    roots = [math.sqrt(1.0 - beta2 ** _step_count(s)) for s in states]
    denominators = torch._foreach_sqrt([s[key] for s in states])
    torch._foreach_add_(denominators, [eps * r for r in roots])
    return _scaled([lr * r for r in roots], denominators)


def _rmsprop(group, params, optimizer):
    states = [optimizer.state[p] for p in params]
    if group.get("centered", False):
        averages = [s["grad_avg"] for s in states]
        variance = torch._foreach_mul(averages, averages)
        torch._foreach_neg_(variance)
        torch._foreach_add_(variance, [s["square_avg"] for s in states])
        denominators = torch._foreach_sqrt(variance)
    else:
        denominators = torch._foreach_sqrt([s["square_avg"] for s in states])
    torch._foreach_add_(denominators, float(group["eps"]))
    step = float(group["lr"]) / (1.0 - group.get("momentum", 0.0))
    return _scaled([step] * len(params), denominators)


def _adagrad(group, params, optimizer):
    states = [optimizer.state[p] for p in params]
    decay, lr = float(group.get("lr_decay", 0.0)), float(group["lr"])
    denominators = torch._foreach_sqrt([s["sum"] for s in states])
    torch._foreach_add_(denominators, float(group["eps"]))
    # the decayed learning rate, per parameter (its own step count)
    return _scaled([lr / (1.0 + (_step_count(s) - 1.0) * decay) for s in states], denominators)


def _adamax(group, params, optimizer):
    # its denominator is its own state (read only by the prox): no temporary at all
    lr = float(group["lr"])
    return _scaled([lr] * len(params), [optimizer.state[p]["exp_inf"] for p in params])


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
    return [float(group["lr"])] * len(params)


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
        warnings.warn(
            "mode='proximal' with RMSprop(centered=True) does not settle: at the regularized optimum the data "
            "gradient is a non-zero constant, so the centered variance v − ḡ² tends to 0 and the step to lr/eps; "
            "use centered=False (exact) or Adam",
            ExactStepWarning,
            stacklevel=3,
        )
    if mode == "proximal" and _rule_for(optimizer) is None:
        warnings.warn(
            f"mode='proximal' does not know the per-element step of {type(optimizer).__name__}; "
            "the prox uses the learning rate alone, so with an adaptive optimizer the fixed "
            "point is not the exact regularized optimum. Exact for: SGD, Adam, AdamW, RMSprop, "
            "Adagrad, Adamax.",
            ExactStepWarning,
            stacklevel=3,
        )


def prox_steps(optimizer: Optimizer, group: dict[str, Any], params: Sequence[Tensor]) -> list[float] | list[ScaledStep]:
    """The step ``D`` each of ``params`` (all in ``group``) just took, as the prox needs it.

    Returns a float per parameter (SGD) or a :class:`~shrinkage.functional.ScaledStep`
    per parameter (adaptive optimizers: numerator / the optimizer's denominator).
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

"""A :class:`Regularizer` binds penalties to a model's tensors and to an optimizer.

Typical use in one's own training loop — two lines::

    reg = Regularizer(model, L1(1e-3))            # mode="proximal": exact zeros
    reg.attach(optimizer)                          # prox after every optimizer.step()
    ...
    loss = criterion(model(x), y)                  # the loop is unchanged
    loss.backward(); optimizer.step()
    log(loss.item(), reg.penalty().item())         # the penalty apart from the data loss

The four modes (how the penalty reaches the weights):

``loss``
    Add ``reg.penalty()`` to the loss; autograd differentiates it. Works with anything.
``gradient``
    The same (sub)gradient is added into ``.grad`` just before ``optimizer.step()``, with
    fused multi-tensor kernels and no autograd graph. Same numbers as ``loss``, except
    that gradient clipping does not see it unless :meth:`Regularizer.add_grad` is called
    before clipping, and a tensor without a gradient is left alone.
``proximal``
    After ``optimizer.step()``, the proximal operator for the step the optimizer took
    (per element for Adam, AdamW, RMSprop, Adagrad, Adamax). The only mode that gives
    exact zeros: subgradient L1 (``loss``/``gradient``) shrinks weights but leaves them
    almost never exactly zero.
``decoupled``
    Weight decay ``w ← w·(1 − η·2λ)`` before the step, as AdamW does (L2 only).

In every mode but ``loss``, :meth:`Regularizer.penalty` is for logging and carries no
gradient, so adding it to the loss cannot apply the penalty twice.

A penalty with a ``center`` (``L1(λ, center="initial")``, ``L2(λ, center=pretrained)``)
acts on the change ``w − w₀`` in every mode: its value and gradient are those of
``λ·R(w − w₀)``, its prox is ``w₀ + prox(w − w₀)`` (a change set to zero leaves ``w``
equal to ``w₀`` bit for bit), decoupled decay pulls toward ``w₀``, and
:meth:`Regularizer.sparsity` counts the entries left unchanged. The regularizer copies
``w₀`` once when it is built, onto each tensor's device and dtype; ``state_dict``
carries the copies so a resumed run keeps the same reference.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import functional as F
from . import optim
from ._warnings import warn
from .functional import Step
from .penalties import Penalty, make_penalty
from .selection import Selector, describe_selector, select_parameters, selector_from_config
from .structure import SparsityReport, input_parameter_of, sparsity_report, unwrap
from .validation import InputError, check_bool, check_choice, fail

__all__ = ["MODES", "Regularizer", "Rule", "Term", "as_rules"]

MODES = ("loss", "gradient", "proximal", "decoupled")


@dataclass
class Rule:
    """One penalty on one selection of tensors.

    Parameters
    ----------
    penalty : Penalty
        What to compute (:class:`~shrinkage.L1`, :class:`~shrinkage.L2`, …).
    select : selector, optional
        Which tensors (see :mod:`shrinkage.selection`); default: layer weights.
    mode : str, optional
        Overrides the regularizer's mode for this rule.
    overlap : bool, default False
        Allow this rule to claim tensors an earlier rule claimed. In mode ``proximal``
        the proxes then apply one after the other in rule order, which is the exact prox
        of the sum for "L1, then group, then L2" and an approximation otherwise.
    """

    penalty: Penalty
    select: Selector = None
    mode: str | None = None
    overlap: bool = False


@dataclass
class Term:
    """A rule bound to tensors: names, parameters, group layouts, device/dtype buckets.

    Read-only for users (``Regularizer.terms``); the regularizer owns it.
    """

    label: str
    penalty: Penalty
    mode: str
    names: list[str]
    params: list[nn.Parameter]
    layouts: list | None
    buckets: list[list[int]] = field(default_factory=list)
    #: The reference weights ``w₀`` of a centred penalty, one per parameter (else ``None``).
    centers: list[Tensor] | None = None

    def bucket(self, indices: list[int]) -> tuple[list[nn.Parameter], list | None]:
        params = [self.params[i] for i in indices]
        layouts = None if self.layouts is None else [self.layouts[i] for i in indices]
        return params, layouts

    def centers_of(self, indices: Sequence[int]) -> list[Tensor]:
        """The centres of these parameters, where the parameters are now.

        A model moved after the regularizer was built (``model.to("cuda")``, ``.half()``)
        takes its centres along on first use: one copy, then none per step.
        """
        assert self.centers is not None
        for i in indices:
            p, c = self.params[i], self.centers[i]
            if c.device != p.device or c.dtype != p.dtype:
                self.centers[i] = c.to(device=p.device, dtype=p.dtype)
        return [self.centers[i] for i in indices]

    def targets(self, indices: Sequence[int]) -> list[Tensor]:
        """What the penalty acts on: the parameters, or their change ``w − w₀`` when centred."""
        params: list[Tensor] = [self.params[i] for i in indices]
        if self.centers is None:
            return params
        return list(torch._foreach_sub(params, self.centers_of(indices)))

    def value(self) -> Tensor:
        parts = [self.penalty.value(self.targets(b), self.bucket(b)[1]) for b in self.buckets]
        if len(parts) == 1:
            return parts[0]
        dtype = parts[0].dtype
        for part in parts[1:]:
            dtype = torch.promote_types(dtype, part.dtype)
        return torch.stack([p.to(device=parts[0].device, dtype=dtype) for p in parts]).sum()


def as_rules(penalties: Any) -> list[Rule]:
    """A penalty, a rule or a list of them as a list of rules (bare penalties get the
    default selection)."""
    rule = "a Penalty, a Rule or a list of them"
    items = penalties if isinstance(penalties, (list, tuple)) else [penalties]
    if not items:
        raise fail("penalties", rule, penalties)
    rules = []
    for item in items:
        if isinstance(item, Penalty):
            rules.append(Rule(item))
        elif isinstance(item, Rule):
            if not isinstance(item.penalty, Penalty):
                raise fail("Rule.penalty", "a Penalty", item.penalty, kind=TypeError)
            rules.append(item)
        else:
            raise fail("penalties", rule, item, kind=TypeError)
    return rules


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _prox_in_safe_precision(
    penalty: Penalty, params: Sequence[Tensor], layouts, steps, centers: Sequence[Tensor] | None = None
) -> None:
    """The prox in place; float16/bfloat16 tensors go through float32 and are rounded
    once, so a multi-operation prox (elastic net, groups) is as exact as their storage.
    The CUDA kernels compute in float32 themselves (one rounding per kernel).

    With ``centers`` it is the prox of the shifted penalty ``λR(w − w₀)``:
    ``w ← w₀ + prox(w − w₀)``, so a change the prox sets to zero leaves ``w`` equal to
    ``w₀`` bit for bit.
    """
    low = any(p.dtype in _LOW_PRECISION for p in params)
    if centers is not None:
        if not low:
            torch._foreach_sub_(list(params), list(centers))
            penalty.prox_(params, layouts, step=steps)
            torch._foreach_add_(list(params), list(centers))
            return
        # the change of a 16-bit weight is not always a 16-bit number: shift in float32
        work = [p.float() - c.float() for p, c in zip(params, centers)]
        penalty.prox_(work, layouts, step=steps)
        for p, w, c in zip(params, work, centers):
            p.copy_(w.add_(c.float()))
        return
    if not low or (penalty.one_pass and F.kernels_apply(params, steps, layouts)):
        penalty.prox_(params, layouts, step=steps)
        return
    work = [p.float() if p.dtype in _LOW_PRECISION else p for p in params]
    penalty.prox_(work, layouts, step=steps)
    for p, w in zip(params, work):
        if w is not p:
            p.copy_(w)


def _centers(index: int, center: Any, named: Sequence[tuple[str, Tensor]], initial: dict[int, Tensor]) -> list[Tensor]:
    """Rule ``index``'s reference weights, one per selected tensor: copies on the tensor's
    device and dtype, made once (``"initial"``: the tensor as it is now, shared by rules)."""
    out = []
    keys = None if isinstance(center, str) else _center_keys(index, center, [name for name, _ in named])
    for position, (name, param) in enumerate(named):
        if keys is None:  # "initial"
            if id(param) not in initial:
                initial[id(param)] = param.detach().clone()
            copy = initial[id(param)]
        else:
            key = keys[position]
            source = center[key]
            if tuple(source.shape) != tuple(param.shape):
                raise InputError(
                    f"rule {index}: center[{key!r}] has shape {tuple(source.shape)}, "
                    f"parameter {name!r} has shape {tuple(param.shape)}"
                )
            if param.is_floating_point() and not (source.is_floating_point() or source.is_complex()):
                raise InputError(
                    f"rule {index}: center[{key!r}] holds {source.dtype} numbers and parameter {name!r} is "
                    f"{param.dtype}: a centre holds the reference weights themselves, not integer or quantized tensors"
                )
            copy = torch.empty_like(param.detach()).copy_(source.detach())
        if not bool(torch.isfinite(copy).all()):
            raise InputError(f"rule {index}: the centre of parameter {name!r} holds NaN or infinite values")
        out.append(copy)
    return out


def _center_keys(index: int, center: Any, names: Sequence[str]) -> list[str]:
    """The key of ``center`` for each parameter name; the names that differ from their key
    by leading module names must all differ by the same ones (else an encoder's centre
    could silently become a decoder's: both end in ``.weight``)."""
    keys = [_center_key(index, center, name) for name in names]
    shifts: dict[tuple[str, str], str] = {}
    for name, key in zip(names, keys):
        if key != name:
            shift = ("model", name[: -len(key)]) if name.endswith(key) else ("center", key[: -len(name)])
            shifts.setdefault(shift, f"{name!r} as {key!r}")
    if len(shifts) > 1:
        raise InputError(
            f"rule {index}: center matches parameters under different leading module names "
            f"({', '.join(list(shifts.values())[:3])}); give each module a rule of its own "
            "(Rule(penalty, select='encoder.*')), or a centre named as the parameters are"
        )
    return keys


def _center_key(index: int, center: Any, name: str) -> str:
    """The key of ``center`` (a state dict) for parameter ``name``: the same name, or one
    that differs by leading module names (a wrapper's ``module.``, a task model's ``bert.``)."""
    if name in center:
        return name
    near = [k for k in center if isinstance(k, str) and (k.endswith("." + name) or name.endswith("." + k))]
    if len(near) == 1:
        return near[0]
    if near:
        raise InputError(f"rule {index}: center has several tensors that could be parameter {name!r}: {near[:4]}")
    raise InputError(
        f"rule {index}: center has no tensor for parameter {name!r}; penalize only the pretrained "
        "tensors (Rule(penalty, select=...)) and give new layers a rule of their own"
    )


class Regularizer:
    """Penalties bound to a model, applied in one of four modes.

    Parameters
    ----------
    model : nn.Module
        The model whose tensors are penalized. A ``torch.compile``-d or
        ``DistributedDataParallel``/``DataParallel``-wrapped model is seen through
        (:func:`~shrinkage.structure.unwrap`): selection patterns, reports and
        ``reg.model`` use the names of the module inside (``"0.weight"``, not
        ``"_orig_mod.0.weight"``); the tensors are the same.
    penalties : Penalty, Rule or list of them
        A bare penalty applies to the default selection (layer weights, never biases or
        normalization parameters). Rules choose tensors and may mix penalties.
    mode : {"proximal", "loss", "gradient", "decoupled"}, default "proximal"
        How the penalty reaches the weights (see the module docstring).
    input_parameter : str, optional
        Name of the weight whose columns are input features, for :meth:`sparsity`;
        default: found from the model's structure (see
        :func:`~shrinkage.structure.input_parameter_of`: its ``input_parameter`` attribute,
        the first layer of an ``nn.Sequential``, …); where it cannot be identified (a
        transformer), the report's ``features_used`` is ``None``.

    Notes
    -----
    The objective is ``mean_i ℓ(f(x_i), y_i) + Σ_rules λ·R(selected tensors)``.

    Examples
    --------
    >>> import torch
    >>> from shrinkage import L1, Regularizer
    >>> model = torch.nn.Linear(3, 1)
    >>> reg = Regularizer(model, L1(0.1))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> handle = reg.attach(opt)
    >>> reg.labels()
    ['l1']
    """

    def __init__(
        self,
        model: nn.Module,
        penalties: Penalty | Rule | Sequence[Penalty | Rule],
        *,
        mode: str = "proximal",
        input_parameter: str | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise fail("model", "a torch.nn.Module", model, kind=TypeError)
        model = unwrap(model)  # torch.compile / DDP: the same tensors under the user's own names
        self.model = model
        self.mode = check_choice("mode", mode, MODES)
        self.rules = as_rules(penalties)
        self.input_parameter = input_parameter
        self._input = input_parameter_of(model, input_parameter)
        self._terms = self._bind()
        self._handles: list[Any] = []
        self._optimizer: torch.optim.Optimizer | None = None
        self._penalty_since_step = False
        self._grad_added = False
        self._new_grad_hooks: list[Any] = []

    # ------------------------------------------------------------------ binding
    def _bind(self) -> list[Term]:
        initial: dict[int, Tensor] = {}  # "initial" centres, one copy per tensor for all rules
        claimed: dict[int, str] = {}
        terms: list[Term] = []
        counts: dict[str, int] = defaultdict(int)
        for index, rule in enumerate(self.rules):
            mode = self.mode if rule.mode is None else check_choice("Rule.mode", rule.mode, MODES)
            check_bool("Rule.overlap", rule.overlap)
            if rule.penalty.proximal_only and mode != "proximal":
                name = type(rule.penalty).__name__
                raise InputError(f"{name} is a constraint that only mode='proximal' enforces, got mode={mode!r}")
            if mode == "decoupled" and not rule.penalty.decouplable:
                raise InputError(
                    f"mode='decoupled' is weight decay and supports only L2, got {rule.penalty!r}; "
                    "use mode='proximal' for L1, elastic net and group penalties"
                )
            named = select_parameters(self.model, rule.select)
            optim.check_not_sharded(rule.penalty, named)  # FSDP: a group's norm needs the whole tensor
            for name, param in named:
                if id(param) in claimed and not rule.overlap:
                    raise InputError(
                        f"parameter {name!r} is selected by rule {claimed[id(param)]} and rule "
                        f"{index}; pass overlap=True on rule {index} if both penalties are meant"
                    )
                claimed.setdefault(id(param), str(index))
            counts[rule.penalty.name] += 1
            label = rule.penalty.name
            if counts[label] > 1:
                label = f"{label}_{counts[label]}"
            term = Term(
                label=label,
                penalty=rule.penalty,
                mode=mode,
                names=[n for n, _ in named],
                params=[p for _, p in named],
                layouts=rule.penalty.layouts(named),
            )
            by_kind: dict[tuple, list[int]] = defaultdict(list)
            for i, p in enumerate(term.params):
                by_kind[(p.device, p.dtype)].append(i)
            term.buckets = list(by_kind.values())
            if rule.penalty.center is not None:
                term.centers = _centers(index, rule.penalty.center, named, initial)
            terms.append(term)
        return terms

    @property
    def in_loss(self) -> bool:
        """True when some term is in mode ``loss``: add :meth:`penalty` to the loss."""
        return any(t.mode == "loss" for t in self._terms)

    def labels(self) -> list[str]:
        """Labels of the penalty terms, in rule order (keys of :meth:`values`)."""
        return [t.label for t in self._terms]

    @property
    def terms(self) -> list[Term]:
        """The bound terms: each rule's penalty, mode and tensors."""
        return list(self._terms)

    def parameter_names(self) -> dict[str, list[str]]:
        """Names of the tensors each term penalizes, by term label (``{"l1": ["0.weight"], …}``)."""
        return {t.label: list(t.names) for t in self._terms}

    def named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        """``(name, tensor)`` of every penalized tensor, each once (as ``nn.Module.named_parameters``)."""
        seen: set[int] = set()
        for term in self._terms:
            for name, param in zip(term.names, term.params):
                if id(param) not in seen:
                    seen.add(id(param))
                    yield name, param

    def parameters(self) -> Iterator[Tensor]:
        """Every penalized tensor, each once (as ``nn.Module.parameters``; names: :meth:`parameter_names`)."""
        for _, param in self.named_parameters():
            yield param

    # ------------------------------------------------------------------ values
    def penalty(self) -> Tensor:
        """``Σ λ·R`` over all terms, a 0-d tensor.

        Differentiable for terms in mode ``loss`` (add it to the loss); detached for the
        other modes, which apply the penalty through the optimizer.
        On sharded (FSDP) tensors it is the global penalty, summed over every rank's shard:
        a collective, to call on every rank.
        """
        grad_wanted = torch.is_grad_enabled()
        if grad_wanted and self._optimizer is None and any(t.mode != "loss" for t in self._terms):
            raise RuntimeError(
                f"mode={self.mode!r} applies the penalty through the optimizer: call "
                "reg.attach(optimizer) first (then reg.penalty() is for logging), use "
                "mode='loss' to add reg.penalty() to the loss, or log with reg.values()"
            )
        if grad_wanted and self.in_loss:
            # the penalty is differentiated here, not through attach's checks: its tensors
            # must still be the model's (not replaced by fully_shard or load_state_dict(assign=True))
            optim.check_parameters_current(self.model, self.named_parameters())
        total = None
        for term in self._terms:
            with torch.set_grad_enabled(grad_wanted and term.mode == "loss"):
                value = term.value()
            total = value if total is None else total + value.to(total)
        assert total is not None  # a Regularizer has at least one term (empty rules are refused)
        full_tensor = getattr(total, "full_tensor", None)
        if callable(full_tensor):  # FSDP: a replicated DTensor of the global penalty, as a plain tensor
            total = full_tensor()
        if grad_wanted and total.requires_grad:
            self._penalty_since_step = True
        return total

    @torch.no_grad()
    def values(self) -> dict[str, float]:
        """``λ·R`` of each term, as floats (for logging)."""
        return {t.label: float(t.value()) for t in self._terms}

    # ------------------------------------------------------------------ optimizer
    def attach(self, optimizer: torch.optim.Optimizer):
        """Apply the penalty at every ``optimizer.step()``; returns a handle with ``remove()``.

        In mode ``gradient`` the (sub)gradient is added into ``.grad`` and in mode
        ``decoupled`` the weights decay, both just before the step; in mode ``proximal``
        the prox runs just after it, with the step the optimizer took (read from its
        param groups and state at that moment, so learning-rate schedulers are followed).
        In mode ``loss`` nothing is applied, but ``step()`` raises if ``reg.penalty()``
        was not computed into the loss since the previous step.
        """
        modes = {t.mode for t in self._terms}
        for mode in modes - {"loss"}:
            optim.check_optimizer(optimizer, mode)
        inexact = [t.penalty for t in self._terms if t.mode == "proximal" and not t.penalty.exact_scaled_prox]
        if inexact and optim.is_adaptive(optimizer):
            warn(
                f"{type(inexact[0]).__name__}'s prox takes one step per tensor; with {type(optimizer).__name__}'s "
                "per-element steps it uses their mean, so the fixed point is not exactly the regularized "
                "optimum (exact with SGD)",
                optim.ExactStepWarning,
            )
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise fail("optimizer", "a torch.optim.Optimizer", optimizer, kind=TypeError)
        if self._optimizer is not None:
            raise RuntimeError("this Regularizer is already attached to an optimizer; call detach() first")
        optim.check_parameters_current(self.model, self.named_parameters())  # e.g. built before fully_shard
        group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        for term in self._terms:
            missing = [n for n, p in zip(term.names, term.params) if id(p) not in group_of]
            if missing and term.mode != "loss":
                raise InputError(f"parameter(s) {missing} are penalized but not in the optimizer's param groups")
        penalized = {id(p): n for t in self._terms for n, p in zip(t.names, t.params)}
        penalty = " and ".join(sorted({type(t.penalty).__name__ for t in self._terms}))
        optim.warn_double_regularization(optimizer, penalized, penalty)
        self._optimizer = optimizer
        self._group_of, self._group_key = group_of, self._param_groups_key(optimizer)
        # under torch.compile of the step the hooks run eagerly (a graph break): they launch
        # the prox kernels themselves, and read the optimizer's state as it is then
        self._handles = [
            optimizer.register_step_pre_hook(torch.compiler.disable(self._before_step)),
            optimizer.register_step_post_hook(torch.compiler.disable(self._after_step)),
        ]
        return _Handle(self)

    def detach(self) -> None:
        """Stop applying the penalty through the optimizer."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._optimizer = None
        self._grad_added = False

    @staticmethod
    def _param_groups_key(optimizer: torch.optim.Optimizer) -> tuple:
        """What identifies the optimizer's param groups as they are now: which dicts, how many tensors each."""
        return tuple((id(g), len(g["params"])) for g in optimizer.param_groups)

    def _current_groups(self) -> dict[int, dict]:
        """Each parameter's param group as the optimizer holds it *now*.

        ``optimizer.load_state_dict`` (a checkpoint restored after attach) replaces the
        group dicts, ``add_param_group`` adds one: the learning rate and the other
        hyperparameters are read from the groups of this step, never from attach time.
        """
        optimizer = self._optimizer
        assert optimizer is not None  # called from the optimizer's own step hooks
        key = self._param_groups_key(optimizer)
        if key != self._group_key:
            self._group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
            self._group_key = key
        return self._group_of

    def _groups(self, term: Term) -> list[tuple[dict, list[int]]]:
        """The term's parameters that have a gradient, by optimizer param group."""
        group_of = self._current_groups()
        by_group: dict[int, tuple[dict, list[int]]] = {}
        for i, p in enumerate(term.params):
            if p.grad is None:
                continue
            group = group_of.get(id(p))
            if group is None:
                raise RuntimeError(
                    f"parameter {term.names[i]!r} is penalized but no longer in the optimizer's param groups; "
                    "detach() the regularizer before removing it from the optimizer"
                )
            by_group.setdefault(id(group), (group, []))[1].append(i)
        return list(by_group.values())

    def _before_step(self, optimizer, args, kwargs):
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)  # args[0] is the optimizer
        if closure is None:
            self._apply_before_update()
            return None
        calls: list[int] = []
        self._grad_added = False  # the closure computes the gradients anew

        # step(closure): the gradients exist only once the optimizer has called the
        # closure (as PyTorch Lightning does), so apply the penalty then — the gradient
        # at every call (LBFGS calls it several times), the decay and check once a step
        def closure_then_penalty():
            with torch.enable_grad():
                loss = closure()
            self._apply_before_update(once=not calls)
            calls.append(1)
            return loss

        return args[:1], {**kwargs, "closure": closure_then_penalty}

    @torch.no_grad()
    def _apply_before_update(self, once: bool = True) -> None:
        """Mode ``gradient``: add the (sub)gradient; ``decoupled``: decay; ``loss``: check."""
        if self._scaler_skips():  # no update this step: no decay, no gradient either
            self._penalty_since_step = self._grad_added = False
            return
        if isinstance(getattr(self._optimizer, "grad_scale", None), Tensor) and any(
            t.mode == "gradient" for t in self._terms
        ):
            raise RuntimeError(
                "mode='gradient' adds the penalty's gradient before the step, but this fused optimizer's "
                "gradients are still scaled by the GradScaler: call scaler.unscale_(optimizer) before "
                "scaler.step(optimizer) (as gradient clipping does), or use mode='proximal' or 'loss'"
            )
        for term in self._terms:
            if term.mode == "loss" and once:
                if not self._penalty_since_step:
                    raise RuntimeError(
                        "mode='loss': reg.penalty() was not added to the loss since the last "
                        "optimizer.step(), so the penalty would be silently skipped"
                    )
            elif term.mode == "gradient" and not self._grad_added:
                self._add_term_grad(term)
            elif term.mode == "decoupled" and once:
                for group, indices in self._groups(term):
                    # AdamW's own update: w ← w·(1 − lr·wd) with wd = 2λ
                    # (a learning rate on a device stays there: a 0-d tensor factor)
                    lr = group["lr"]
                    decay = 2.0 * term.penalty.lambda_
                    params: list[Tensor] = [term.params[i] for i in indices]
                    on_device = isinstance(lr, Tensor) and lr.device.type != "cpu"
                    rate = lr * decay if on_device else float(lr) * decay
                    if term.centers is None:
                        torch._foreach_mul_(params, 1.0 - rate)
                    else:  # decay toward w₀: w ← w − rate·(w − w₀)
                        weights = [rate] * len(params) if on_device else rate
                        torch._foreach_lerp_(params, term.centers_of(indices), weights)
        self._penalty_since_step = False
        self._grad_added = False

    def _scaler_skips(self) -> bool:
        """Whether this step is one a fused optimizer skips: torch's ``GradScaler`` hands such
        an optimizer (``fused=True``) its ``found_inf`` for the step, which runs and leaves
        the weights as they were when the gradients overflowed. The penalty skips it too.
        One read of a device flag, only for such a step (other optimizers are not stepped
        at all on an overflow)."""
        found_inf = getattr(self._optimizer, "found_inf", None)
        return isinstance(found_inf, Tensor) and bool(found_inf.item())

    @staticmethod
    def _add_term_grad(term: Term) -> None:
        """Add the term's (sub)gradient into ``.grad`` of its tensors that have one.

        A tensor without a gradient this step (``zero_grad(set_to_none=True)`` and not
        used by the loss) is left alone, as torch's own ``weight_decay`` and the modes
        ``proximal`` and ``decoupled`` leave it.
        """
        for bucket in term.buckets:
            present = [i for i in bucket if term.params[i].grad is not None]
            if not present:
                continue
            params, layouts = term.bucket(present)
            targets: list[Tensor] = list(params)
            if term.centers is not None:  # the gradient of R(w − w₀), into w's own .grad
                targets = term.targets(present)
                for change, p in zip(targets, params):
                    change.grad = p.grad
            term.penalty.add_grad_(targets, layouts)

    @torch.no_grad()
    def add_grad(self) -> None:
        """Add the penalty's (sub)gradient into ``.grad`` now (terms in mode ``gradient``).

        Call it between ``backward()`` and gradient clipping when the clipping should
        see the penalty's gradient too — as it does in mode ``loss``, where the penalty
        is part of the loss::

            loss.backward()
            reg.add_grad()                                   # the penalty joins the gradient
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()                                 # does not add it a second time

        Without this call the attached optimizer adds it inside ``step()``, after any
        clipping, as torch's own ``weight_decay`` does. Tensors without a gradient are
        left alone. The gradients count as holding the penalty until the next
        ``optimizer.step()`` or the next ``backward()`` that reaches a penalized tensor,
        so a skipped step (``GradScaler`` on an overflow, a guard against a loss spike)
        is harmless: the next iteration's ``add_grad()`` adds it to the new gradients.
        Raises if no term is in mode ``gradient``, or if called twice on the same
        gradients.
        """
        terms = [t for t in self._terms if t.mode == "gradient"]
        if not terms:
            raise RuntimeError(
                f"add_grad() adds the penalty gradient of terms in mode 'gradient'; this regularizer's "
                f"terms are in mode(s) {sorted({t.mode for t in self._terms})}"
            )
        if self._grad_added:
            raise RuntimeError(
                "add_grad() was already called on these gradients (since the last optimizer.step() or backward())"
            )
        if not self._new_grad_hooks:
            self._watch_new_gradients(terms)
        for term in terms:
            self._add_term_grad(term)
        self._grad_added = True  # until the step (which then skips it) or new gradients

    def _watch_new_gradients(self, terms: list[Term]) -> None:
        """A ``backward()`` that accumulates into a penalized tensor makes new gradients,
        without the penalty: forget that ``add_grad()`` was called."""
        owner = weakref.ref(self)  # the tensors' hooks must not keep the regularizer alive

        def fresh_gradient(_param: Tensor) -> None:
            regularizer = owner()
            if regularizer is not None:
                regularizer._grad_added = False

        params = {id(p): p for t in terms for p in t.params if p.requires_grad}
        self._new_grad_hooks = [p.register_post_accumulate_grad_hook(fresh_gradient) for p in params.values()]

    @torch.no_grad()
    def _after_step(self, optimizer, args, kwargs) -> None:
        if self._scaler_skips():
            return
        for term in self._terms:
            if term.mode != "proximal" or term.penalty.lambda_ == 0.0:
                continue
            # the step each tensor took (from its own param group), then one prox over
            # them all, so that a coupled penalty sees its tensors together
            indices: list[int] = []
            parts: list[Sequence[Step]] = []
            for group, members in self._groups(term):
                lr = group["lr"]
                if not (isinstance(lr, Tensor) and lr.device.type != "cpu") and float(lr) == 0.0:
                    continue  # a learning rate on a device is never read back to the host
                indices += members
                parts.append(optim.prox_steps(optimizer, group, [term.params[i] for i in members]))
            # one param group (the usual case): its steps as the optimizer's rule gave them
            steps = parts[0] if len(parts) == 1 else [s for part in parts for s in part]
            if indices:
                params, layouts = term.bucket(indices)
                centers = None if term.centers is None else term.centers_of(indices)
                _prox_in_safe_precision(term.penalty, params, layouts, steps, centers)

    # ------------------------------------------------------------------ reporting
    def sparsity(self, feature_names: Sequence[str] | None = None) -> SparsityReport:
        """Exact zeros per penalized tensor, zero groups per term, input features still used
        (see :func:`~shrinkage.structure.sparsity_report`)."""
        return sparsity_report(self.model, self._terms, self._input, self.input_parameter, feature_names)

    # ------------------------------------------------------------------ config
    def to_dict(self) -> dict[str, Any]:
        """A plain dict that :meth:`from_dict` turns back into an equal regularizer.

        A centred penalty's centre is not in it (its tensors are not plain values):
        ``"center": "initial"`` means the weights of the model given to :meth:`from_dict`,
        and a centre given as tensors (``"state_dict"``) must be given again. Checkpoints
        keep the centres with :meth:`state_dict`.
        """
        return {
            "mode": self.mode,
            "input_parameter": self.input_parameter,
            "rules": [
                {
                    "penalty": r.penalty.get_config(),
                    "select": describe_selector(r.select),
                    "mode": r.mode,
                    "overlap": r.overlap,
                }
                for r in self.rules
            ],
        }

    @classmethod
    def from_dict(cls, model: nn.Module, config: dict[str, Any]) -> Regularizer:
        """Rebuild a regularizer on ``model`` from :meth:`to_dict` output."""
        if not isinstance(config, dict) or not isinstance(config.get("rules"), list):
            raise fail("config", "a dict with a list of 'rules' (from Regularizer.to_dict)", config, kind=TypeError)
        for index, r in enumerate(config["rules"]):
            if not isinstance(r, dict) or "penalty" not in r:
                raise fail(f"config['rules'][{index}]", "a dict with 'penalty'", r, kind=TypeError)
        rules = [
            Rule(
                make_penalty(r["penalty"]),
                selector_from_config(r.get("select")),
                r.get("mode"),
                r.get("overlap", False),
            )
            for r in config["rules"]
        ]
        return cls(
            model,
            rules,
            mode=config.get("mode", "proximal"),
            input_parameter=config.get("input_parameter"),
        )

    def state_dict(self) -> dict[str, Any]:
        """The regularizer's state for a checkpoint: each rule's penalty (λ as it is now),
        mode and the names of the tensors it penalizes.

        Plain Python values and, for a centred penalty, copies of its reference tensors on
        the CPU (``"centers"``), so ``torch.save({"model": …, "optimizer": …, "regularizer": reg.state_dict()})``
        loads with ``torch.load(weights_only=True)``. Restore with :meth:`load_state_dict`
        on a regularizer built the same way: the saved centres replace those it copied.
        """
        rules = []
        for term in self._terms:
            entry: dict[str, Any] = {"penalty": term.penalty.get_config(), "mode": term.mode}
            entry["parameters"] = list(term.names)
            if term.centers is not None:  # the reference weights travel with the checkpoint,
                # as CPU copies: a checkpoint saved on a GPU loads on any machine
                entry["centers"] = {n: c.detach().to("cpu", copy=True) for n, c in zip(term.names, term.centers)}
            rules.append(entry)
        return {"mode": self.mode, "rules": rules}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the penalties saved by :meth:`state_dict` (a λ changed during training
        through ``reg.rules[i].penalty.lambda_``, say). The rules must bind the same
        tensors in the same modes, else ``InputError`` names the first difference; the
        attachment to an optimizer is kept."""
        if not isinstance(state, dict) or not isinstance(state.get("rules"), list):
            raise fail("state", "a dict from Regularizer.state_dict()", state, kind=TypeError)
        saved = state["rules"]
        if len(saved) != len(self._terms):
            raise InputError(f"state has {len(saved)} rule(s), this regularizer has {len(self._terms)}")
        penalties = []
        for index, (term, entry) in enumerate(zip(self._terms, saved)):
            if not isinstance(entry, dict) or not {"penalty", "mode", "parameters"} <= set(entry):
                raise fail(f"state['rules'][{index}]", "a dict with 'penalty', 'mode' and 'parameters'", entry)
            if entry["mode"] != term.mode:
                raise InputError(f"rule {index}: the state is in mode {entry['mode']!r}, this rule in {term.mode!r}")
            if list(entry["parameters"]) != term.names:
                raise InputError(
                    f"rule {index}: the state penalizes {entry['parameters']}, this rule {term.names}; "
                    "build the regularizer with the same model and rules as the saved one"
                )
            config = dict(entry["penalty"]) if isinstance(entry["penalty"], dict) else entry["penalty"]
            centered = isinstance(config, dict) and config.pop("center", None) is not None
            penalty = make_penalty(config)
            if type(penalty) is not type(term.penalty):
                raise InputError(
                    f"rule {index}: the state holds {type(penalty).__name__}, this rule {type(term.penalty).__name__}"
                )
            if centered != term.penalty.centered or centered != ("centers" in entry):
                raise InputError(
                    f"rule {index}: {'a' if centered else 'no'} centred penalty in the state, "
                    f"{'a' if term.penalty.centered else 'no'} centred penalty in this rule"
                )
            if centered:
                _check_saved_centers(index, entry["centers"], term)
            penalty.center = term.penalty.center
            penalties.append(penalty)
        for term, rule, penalty, entry in zip(self._terms, self.rules, penalties, saved):
            rule.penalty = term.penalty = penalty
            term.layouts = penalty.layouts(list(zip(term.names, term.params)))
            if term.centers is not None:
                for center, name in zip(term.centers_of(range(len(term.names))), term.names):
                    center.copy_(entry["centers"][name])

    def __repr__(self) -> str:
        rules = ", ".join(repr(r.penalty) for r in self.rules)
        return f"Regularizer([{rules}], mode={self.mode!r})"


def _check_saved_centers(index: int, saved: Any, term: Term) -> None:
    """The centres in a state: a tensor of the right shape for each of the term's parameters."""
    if not isinstance(saved, dict):
        raise fail(f"state['rules'][{index}]['centers']", "a dict of tensors", saved, kind=TypeError)
    for name, param in zip(term.names, term.params):
        value = saved.get(name)
        if not isinstance(value, Tensor) or tuple(value.shape) != tuple(param.shape):
            raise InputError(
                f"rule {index}: the state's centre of {name!r} is not a tensor of shape {tuple(param.shape)}"
            )


class _Handle:
    def __init__(self, regularizer: Regularizer):
        self._regularizer = regularizer

    def remove(self) -> None:
        self._regularizer.detach()

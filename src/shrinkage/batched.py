"""Many fits of one network trained together, as one stacked network.

Cross-validation trains the same architecture from the same initial weights on K sets
of rows, λ after λ. Fitted one at a time, a small tabular network spends its time in
per-step overhead (Python, kernel launches, the optimizer), not in arithmetic. Here
the K models' parameters are stacked along a new first dimension
(``torch.func.stack_module_state``) and the model is called through
``torch.func.vmap``: one forward, one backward and one optimizer step per epoch
serve every fold, as batched matrix products on the CPU or a GPU. On the CPU with
Numba, the optimizer step with its prox and the penalty's value are a kernel call each
(``shrinkage._numba``): on a small stack they took a third of an epoch in torch's
operations.

Each model keeps its own everything: its rows (a weight per row and model, so folds
of different sizes share one data tensor), its early stopping, its Adam state and step
count, its proximal step (the prox of the penalty with the per-element step its own Adam
took) and its relaxed refits. Each walks the λ at its own pace: a model that stops at a
λ leaves the stack and comes back at the next one while the others go on at theirs, so
that a path costs about its slowest model's epochs, not the sum over λ of the slowest
model's at each.
So each model follows the same trajectory as :func:`~shrinkage.path.regularization_path`
would give it alone, up to floating-point summation order; the sequential engine stays
the reference, and the tests compare the two.

What it covers (:func:`unsupported` says why not, otherwise): full-batch Adam in mode
``proximal`` with the element-wise and group penalties (L1, L2, elastic net, group and
sparse-group lasso), on models without buffers or dropout that ``torch.func.vmap``
can call. Anything else, and any fit that diverges, is run by the sequential engine.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from . import _numba
from . import functional as F
from ._arrays import to_tensors
from .path import (
    Measures,
    ModelSpec,
    PathConfig,
    PathPoint,
    RegularizationPath,
    _PathFit,
    _Relaxed,
    _state_copy,
    capped_epochs,
    cpu_threads,
    folds_relaxed_epochs,
    kept_epochs,
    path_fit,
    point_of,
    scaled,
    set_relaxed,
    split_validation,
    walk,
    widest,
)
from .penalties import L1, L2, ElasticNet, GroupLasso, Penalty, SparseGroupLasso
from .regularizer import Regularizer, Rule
from .solvers import largest_relative_change
from .structure import input_parameters_of, linear_chain
from .train import LOSSES, TrainConfig, TrainResult, as_targets

__all__ = ["ENGINES", "Reuse", "Unbatchable", "joint_paths", "unsupported"]

#: How :func:`~shrinkage.cv.cross_validate` trains its folds: ``batched`` (here),
#: ``sequential`` (one :func:`~shrinkage.path.regularization_path` per fold, through
#: joblib), ``auto`` (batched where :func:`unsupported` finds nothing against it).
ENGINES = ("auto", "batched", "sequential")

_PENALTIES = (L1, L2, ElasticNet, GroupLasso, SparseGroupLasso)
#: On an accelerator, the group prox's Newton iterations are tested for convergence every
#: this many iterations (see :func:`shrinkage.functional.device_checks`).
_NEWTON_CHECKS = 3
#: Elements of stacked activations (models × rows × width) one batch of relaxed fits may hold.
_ACTIVATION_BUDGET = 1 << 25
#: The modules of a chain whose gradient :meth:`_Stack.gradient` takes by hand.
_BY_HAND = (nn.Linear, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Identity)
_ADAM_OPTIONS = {"betas", "eps"}


class Unbatchable(RuntimeError):
    """A batched fit cannot go on (a model diverged): run the sequential engine instead."""


class Reuse:
    """Unpenalized fits shared by cross-validations of one model on one data set.

    The dense starts and the relaxed refits train without penalty, from the model's
    initial weights, on a fold's rows (relaxed: on a set of input features): they do not
    depend on the penalty. Passed (``reuse=``) to several
    :func:`~shrinkage.cv.cross_validate` calls — a study comparing penalties — each such
    fit trains once. Fits are found by a fingerprint of the data, the rows, the initial
    weights and the training settings, so a call that differs in any of them trains its
    own. Used by the batched engine; the sequential engine trains everything itself.
    """

    def __init__(self) -> None:
        self._fits: dict[tuple[str, ...], Any] = {}
        self.hits = 0  # fits taken from here rather than trained

    def get(self, key: tuple[str, ...]) -> Any:
        found = self._fits.get(key)
        self.hits += found is not None
        return found

    def put(self, key: tuple[str, ...], fit: Any) -> None:
        self._fits[key] = fit


def _fingerprint(*tensors: Tensor | None) -> str:
    digest = hashlib.sha1()
    for t in tensors:
        if t is None:
            digest.update(b"-")
        else:
            t = t.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _config_named(name: str, parameter: str) -> str:
    """A PathConfig field, and the estimators' parameter that sets what it names."""
    return f"{name} (an estimator's {'fit_config' if name == 'dense_config' else parameter}=)"


def unsupported(
    model: nn.Module, rules: Sequence[Rule], config: PathConfig, n_rows: int, X: np.ndarray | None = None
) -> str | None:
    """Why the batched engine cannot train these fits, or ``None`` when it can.

    With ``X``, the stacked model is also called on two of its rows: a forward pass that
    ``torch.func.vmap`` cannot batch (random operations such as functional dropout,
    ``.item()``, data-dependent control flow) is found here, before any training.
    """
    if config.mode != "proximal":
        return f"mode={config.mode!r} (the batched engine applies penalties as proximal steps)"
    for name in ("train_config", "dense_config"):
        train_config: TrainConfig = getattr(config, name)

        if train_config.optimizer != "adam" or set(train_config.optimizer_kwargs) - _ADAM_OPTIONS:
            options = f" with {train_config.optimizer_kwargs}" if train_config.optimizer_kwargs else ""
            chosen = (
                " (an estimator's optimizer='auto' chooses it for the linear configuration, which needs no batching)"
                if train_config.optimizer == "fista"
                else ""
            )
            optimizer = train_config.optimizer
            where = _config_named(name, "optimizer")
            return f"{where} uses optimizer {optimizer!r}{options}{chosen}; the batched engine trains with Adam"
        if train_config.batch_size is not None and train_config.batch_size < n_rows:
            where, rows = _config_named(name, "batch_size"), train_config.batch_size
            return f"{where} trains on mini-batches of {rows} rows (batched: full batch)"
    for rule in rules:
        if type(rule.penalty) not in _PENALTIES or rule.mode not in (None, "proximal"):
            return f"penalty {rule.penalty!r} (batched: L1, L2, elastic net, group and sparse-group lasso)"
    if any(True for _ in model.buffers()):
        return "the model has buffers (batch norm, …)"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return "the model has dropout"
    if not input_parameters_of(model):
        return "the model's input weight is not known"
    if X is not None:
        try:
            dtype = next(model.parameters()).dtype
            stack = _Stack(model, [_state_copy(model)] * 2, config.device)
            with torch.no_grad():
                stack.forward(torch.as_tensor(X[:2], dtype=dtype, device=config.device))
        except RuntimeError as error:
            return "torch.func.vmap cannot batch the model's forward pass: " + " ".join(str(error).split())[:300]
    return None


# ------------------------------------------------------------------------------ rows
@dataclass
class _Rows:
    """Which rows of the shared data each model trains on, stops on and is scored on:
    ``(models, rows)`` weights, each row of a set weighted 1/|set| (a mean)."""

    train: Tensor
    val: Tensor | None
    test: Tensor | None

    def take(self, index: Sequence[int]) -> _Rows:
        pick = torch.as_tensor(list(index), device=self.train.device)
        val, test = (w.index_select(0, pick) if w is not None else None for w in (self.val, self.test))
        return _Rows(self.train.index_select(0, pick), val, test)


def _row_weights(sets: Sequence[np.ndarray], n_rows: int, device, dtype) -> Tensor:
    weights = torch.zeros(len(sets), n_rows, dtype=dtype)
    for k, rows in enumerate(sets):
        if len(rows):
            weights[k, torch.as_tensor(rows)] = 1.0 / len(rows)
    return weights.to(device)


#: The task's losses of :data:`~shrinkage.train.LOSSES`, unreduced: made once (stateless
#: modules; one made per epoch cost more than its mean squared error on a small stack).
_ROW_LOSSES = {name: make(reduction="none") for name, make in LOSSES.items()}


def _row_losses(out: Tensor, target: Tensor, loss: str) -> Tensor:
    """Each model's loss on each row, ``(models, rows)``: the terms of the data loss's mean
    (the task's loss from :data:`~shrinkage.train.LOSSES`, unreduced)."""
    return _losses_and_slope(out, target, loss, slope=False)[0]


def _losses_and_slope(out: Tensor, target: Tensor, loss: str, *, slope: bool = True) -> tuple[Tensor, Tensor | None]:
    """:func:`_row_losses`, and (``slope``) their derivative in ``out``, ``(models, rows,
    outputs)``, for :meth:`_Stack.gradient` (in place on what the losses no longer need:
    not differentiable then). Cross-entropy (``target``: class indices, as
    :func:`~shrinkage.train.as_targets` gives them) is ``-log_softmax`` at the class, as
    ``CrossEntropyLoss`` computes it (equal to the bit), in a third of its time on a few
    classes."""
    if loss == "cross_entropy":
        at = target.view(1, -1, 1).expand(out.shape[0], -1, 1)
        log_p = torch.log_softmax(out, -1)
        losses = log_p.gather(-1, at).squeeze(-1).neg()
        if not slope:
            return losses, None
        probabilities = log_p.exp_()  # the softmax less the class's one-hot
        return losses, probabilities.scatter_add_(-1, at, probabilities.new_full(at.shape, -1.0))
    if loss == "mse":  # MSELoss's (out − y)², written out: a single output's mean is itself
        diff = out - target
        squares = diff * diff
        losses = squares.squeeze(-1) if out.shape[-1] == 1 else squares.mean(-1)
        return losses, diff.mul_(2.0 / out.shape[-1]) if slope else None
    losses = _ROW_LOSSES[loss](out, target.expand_as(out)).mean(-1)
    if not slope:
        return losses, None
    return losses, torch.sigmoid(out).sub_(target.expand_as(out)).div_(out.shape[-1])


# ----------------------------------------------------------------------------- stack
class _Stack:
    """Several copies of ``template`` as one ``(models, parameters)`` tensor, with one
    Adam state and step count per model.

    Each named parameter is a view ``(models, *shape)`` of that tensor, so that the
    optimizer's element-wise work is a few operations on one tensor, whatever the depth.
    """

    def __init__(self, template: nn.Module, states: Sequence[dict[str, Tensor]], device):
        self.template = copy.deepcopy(template).to(device)
        named = list(self.template.named_parameters())
        self.shapes = {name: tuple(p.shape) for name, p in named}
        self.slices: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, p in named:
            self.slices[name] = (offset, offset + p.numel())
            offset += p.numel()
        rows = [torch.cat([state[name].reshape(-1) for name, _ in named]) for state in states]
        self.flat = torch.stack(rows).to(device=device, dtype=named[0][1].dtype).requires_grad_(True)
        self.n = len(states)
        self.chain = linear_chain(self.template)
        # a chain of Linear layers and these activations gets its gradient by hand
        # (:meth:`gradient`): on a small stack, autograd's graph cost more than its arithmetic
        self.by_hand = self.chain is not None and all(isinstance(m, _BY_HAND) for m in self.template.children())
        # a chain's layers: (name, module, whether a Linear has a bias, None for another module),
        # read once (a module's attributes cost microseconds each, at every epoch)
        self.layers = [
            (name, module, module.bias is not None if isinstance(module, nn.Linear) else None)
            for name, module in self.template.named_children()
        ]
        self._viewed: tuple[Tensor | None, dict[str, Tensor]] = (None, {})  # see views()
        self.fresh_optimizer()

    def fresh_optimizer(self) -> None:
        self.moments = (torch.zeros_like(self.flat), torch.zeros_like(self.flat))
        self.steps = torch.zeros(self.n, dtype=torch.float64, device=self.flat.device)

    def views(self, flat: Tensor | None = None, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Each parameter of every model (or those ``names``), ``(models, *shape)``: views
        of ``flat`` (default: the weights; any number of models)."""
        flat = self.flat if flat is None else flat
        # the views of the last tensor outside autograd are kept: the working weights of a
        # gradient by hand, epoch after epoch (updated in place: their views stay true)
        kept = names is None and not flat.requires_grad
        if kept and self._viewed[0] is flat:
            return self._viewed[1]
        slices = self.slices if names is None else {name: self.slices[name] for name in names}
        views = {name: flat[:, a:b].view(flat.shape[0], *self.shapes[name]) for name, (a, b) in slices.items()}
        if kept:
            self._viewed = (flat, views)
        return views

    def forward(self, X: Tensor, flat: Tensor | None = None, saved: list | None = None) -> Tensor:
        """Every model's output on every row: ``(models, rows, outputs)``, with the
        weights ``flat`` (default: the stack's). A chain appends each layer's
        ``(name, module, input, output)`` to ``saved``, for :meth:`gradient`."""
        params = self.views(flat)
        if self.chain is not None:  # batched matrix products, layer by layer
            # the stacked activations are the step's largest tensors, read from memory at
            # every pass: the bias is added in the product, ReLU works in place on it (its
            # backward needs only its output), 14 % off a small stack's gradient
            h = X
            for name, module, bias in self.layers:
                before = h
                if bias is not None:  # a Linear layer
                    weight = params[f"{name}.weight"].transpose(1, 2)
                    if not bias:
                        h = torch.matmul(h, weight)
                    else:
                        rows = h if h.dim() == 3 else h.expand(weight.shape[0], *h.shape)
                        h = torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), rows, weight)
                elif isinstance(module, nn.ReLU) and h is not X:  # (never on the caller's data)
                    h = torch.relu_(h)
                else:
                    h = module(h)
                if saved is not None:
                    saved.append((name, module, before, h))
            return h

        def one(weights: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(self.template, weights, (x,))

        return vmap(one, in_dims=(0, None))(params, X)

    def gradient(self, flat: Tensor, saved: list, slope: Tensor) -> Tensor:
        """The gradient in ``flat`` (``(models, parameters)``) of the sum over models,
        rows and outputs of ``slope`` times the output, by the chain rule through the
        layers :meth:`forward` ``saved`` (a chain of :data:`_BY_HAND` modules): what
        autograd gives for a loss whose derivative in the output is ``slope``, without
        its graph. ``slope`` is overwritten."""
        params, grads = self.views(flat), {}
        first = next(i for i, (_, _, bias) in enumerate(self.layers) if bias is not None)
        d = slope
        for i in range(len(saved) - 1, first - 1, -1):
            name, module, before, after = saved[i]
            bias = self.layers[i][2]
            if bias is not None:  # a Linear layer
                if before.dim() == 2:  # the data, shared: one product for every model
                    grads[f"{name}.weight"] = torch.matmul(before.t(), d).transpose(1, 2)
                else:
                    grads[f"{name}.weight"] = torch.bmm(d.transpose(1, 2), before)
                if bias:
                    grads[f"{name}.bias"] = d.sum(1)
                if i > first:  # the data's own slope is not needed
                    d = torch.bmm(d, params[f"{name}.weight"])
            # in place on d (the caller's slope, or a product made here): one such tensor
            # alive at a time (a new one per layer grew glibc's heap by 200 MB on a study)
            elif isinstance(module, nn.ReLU):  # autograd's own backward of ReLU, into d
                torch.ops.aten.threshold_backward.grad_input(d, after, 0, grad_input=d)
            elif isinstance(module, nn.Tanh):
                d.mul_(1 - after * after)
            elif isinstance(module, nn.Sigmoid):
                d.mul_(after * (1 - after))
        return torch.cat([grads[name].reshape(flat.shape[0], -1) for name in self.slices], 1)

    def state(self, k: int) -> dict[str, Tensor]:
        return {name: p[k].detach().to("cpu", copy=True) for name, p in self.views().items()}

    def load_into(self, model: nn.Module, k: int) -> nn.Module:
        views = self.views(self.flat.detach())
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(views[name][k])
        return model


class _Terms:
    """The penalty's terms on the stack's flat ``(models, parameters)`` tensors:
    (penalty, tensor names, stacked layouts).

    Where every term is element-wise (L1, L2, elastic net) and no tensor is in two of
    them, the terms are also two coefficient rows over the flat parameters, the L1 and
    the L2 weight of each entry (0 outside the penalized tensors): the prox of the whole
    stack is then three or four operations whatever the depth of the network, with the
    arithmetic of :func:`shrinkage.functional.elastic_shrink_` for per-element steps.
    """

    def __init__(self, stack: _Stack, rules: Sequence[Rule]):
        template = stack.template
        names = {id(p): name for name, p in template.named_parameters()}
        reg = Regularizer(template, list(rules), mode="proximal")
        self.stack = stack
        self.terms = [
            (
                term.penalty,
                [names[id(p)] for p in term.params],
                None if term.layouts is None else [layout.stacked() for layout in term.layouts],
            )
            for term in reg.terms
        ]
        self.coefficients = self._elementwise()
        self.names = list(dict.fromkeys(name for _, names, _ in self.terms for name in names))  # the penalized
        self.parts = [self._group_parts(penalty, names, layouts) for penalty, names, layouts in self.terms]
        self.tables = [
            None if parts is None else _numba.part_table(parts, *cast(GroupLasso, penalty)._shrink_scales)
            for (penalty, _, _), parts in zip(self.terms, self.parts)
        ]
        # each penalized tensor's share of values(): (penalty, its columns, its shape, its
        # groups: the plain groups' (outer, groups, inner) and √|g|, else the layout)
        self.pieces: list[tuple[Penalty, tuple[int, int], tuple[int, ...], Any]] = []
        for (penalty, tensor_names, layouts), parts in zip(self.terms, self.parts):
            for i, name in enumerate(tensor_names):
                group = None if layouts is None else layouts[i] if parts is None else parts[i][2:]
                self.pieces.append((penalty, self.stack.slices[name], self.stack.shapes[name], group))
        # NumPy sums the plain groups only; the Numba kernel, where it runs, sums all the pieces in one call
        self.host_values = all(not isinstance(group, F.GroupLayout) for *_, group in self.pieces)
        self.value_table = self._value_table() if self.host_values and _numba.supports([stack.flat.detach()]) else None

    def _group_parts(
        self, penalty: Penalty, names: list[str], layouts: list[F.GroupLayout] | None
    ) -> list[tuple[int, int, tuple[int, int, int], float]] | None:
        """A group term's tensors as :func:`shrinkage._numba.stacked_group_prox_` takes
        them (their columns of the flat tensors, each model's shape and √|g|), or None
        (not a group term, or groups that are not plain rows or columns)."""
        if not isinstance(penalty, GroupLasso) or layouts is None or any(g.labels is not None for g in layouts):
            return None
        views = self.stack.views(self.stack.flat.detach(), names)
        return [
            (*self.stack.slices[name], F._group_shape(views[name], layout)[1:], float(layout.weights))
            for name, layout in zip(names, layouts)
        ]

    def _value_table(self) -> _numba.ValueTable:
        """The pieces as :func:`shrinkage._numba.stacked_values` takes them (every group a
        plain row or column): the terms of :func:`_value_per_model`."""
        bounds, coefficients = [], []
        for penalty, (a, b), _, group in self.pieces:
            if group is None:  # ρ·Σ|w| + (1 − ρ)·Σw², as one group
                rho = _l1_share(penalty)
                bounds.append((a, 1, 1, b - a))
                coefficients.append((0.0, penalty.lambda_ * rho, penalty.lambda_ * (1.0 - rho)))
                continue
            shape, weight = group
            l1 = penalty.l1_ratio if isinstance(penalty, SparseGroupLasso) else 0.0
            bounds.append((a, *shape))
            coefficients.append((penalty.lambda_ * (1.0 - l1) * weight, penalty.lambda_ * l1, 0.0))
        return _numba.ValueTable(
            np.array(bounds, dtype=np.int64).reshape(-1, 4), np.array(coefficients, dtype=np.float64).reshape(-1, 3)
        )

    def _elementwise(self) -> tuple[Tensor | None, Tensor | None] | None:
        """The L1 and L2 coefficient rows (``None`` for a part no term has), or ``None``
        where the terms are not all element-wise on disjoint tensors."""
        covered = [name for _, names, _ in self.terms for name in names]
        if len(set(covered)) < len(covered) or not all(type(p) in (L1, L2, ElasticNet) for p, _, _ in self.terms):
            return None
        flat = self.stack.flat
        rows = [torch.zeros(flat.shape[1], dtype=flat.dtype, device=flat.device) for _ in range(2)]
        for penalty, names, _ in self.terms:
            rho = _l1_share(penalty)
            weights = (penalty.lambda_ * rho, penalty.lambda_ * (1.0 - rho))
            for name in names:
                a, b = self.stack.slices[name]
                for row, weight in zip(rows, weights):
                    row[a:b] = weight
        l1, l2 = (row if bool(row.any()) else None for row in rows)
        return l1, l2

    def prox_(self, weights: Tensor, steps: Tensor | float) -> None:
        """The prox of every term on the flat ``weights``, with the per-element ``steps``,
        or one step for every element (each penalty's closed form, as a path's
        :func:`~shrinkage.path.stationarity` takes it)."""
        if not isinstance(steps, Tensor):
            views = self.stack.views(weights, self.names)
            for penalty, names, layouts in self.terms:
                penalty.prox_([views[n] for n in names], layouts, step=[steps] * len(names))
            return
        if self.coefficients is not None:
            l1_row, l2_row = self.coefficients
            # elastic_shrink_'s operations for per-element steps, written out: through it
            # (its kernel choice at each step) a default study took 1.2 s longer
            if l1_row is not None:  # the soft threshold by s·λρ
                F._softshrink_(weights, steps * l1_row)
            if l2_row is not None:
                weights.div_((steps * l2_row).mul_(2.0).add_(1.0))
            return
        params: dict[str, Tensor] = {}
        for (penalty, names, layouts), table in zip(self.terms, self.tables):
            # the Numba kernels, where they run (not in a study's processes, see
            # shrinkage.study.runner), on the flat tensors' parts in place. A group prox with
            # Adam's steps is Newton's iterations per group, a few dozen NumPy operations in
            # torch's code: for the two group terms of MLP(2, (64,), 3)'s stack of 6 models
            # 0.42 ms, through the kernels on copies of the tensors 0.25 ms, on the parts 0.12 ms,
            # a term's parts in one kernel call (no Python between them) 0.06 ms
            if table is not None and _numba.stacked_group_prox_(weights, steps, table, max_iter=F.NEWTON_ITERATIONS):
                continue
            if not params:
                params, per_entry = self.stack.views(weights, self.names), self.stack.views(steps, self.names)
            penalty.prox_([params[n] for n in names], layouts, step=[per_entry[n] for n in names])

    def values(self, weights: Tensor) -> Tensor:
        """λ·R of each model, ``(models,)`` in float64 (each penalty's ``value``, per model).
        On the CPU in NumPy, where every group's entries are plain rows or columns: on a
        small stack's tensors its operations take a few microseconds, torch's ten; through
        the Numba kernel, where it runs, all of them in one call (a fifth of NumPy's time)."""
        if self.value_table is not None:
            return _numba.stacked_values(weights, self.value_table)
        host = self.host_values and weights.device.type == "cpu"
        flat: Any = weights.detach().numpy().astype(np.float64) if host else weights.detach().double()
        total: Any = 0
        for penalty, (a, b), shape, group in self.pieces:
            total = total + _value_per_model(penalty, flat[:, a:b].reshape(len(flat), *shape), group)
        return torch.from_numpy(total) if host else total


def _l1_share(penalty: Penalty) -> float:
    """ρ of an element-wise penalty written ``λ·(ρ·Σ|w| + (1 − ρ)·Σw²)``: L1 1, L2 0."""
    return penalty.l1_ratio if isinstance(penalty, ElasticNet) else float(isinstance(penalty, L1))


def _value_per_model(penalty: Penalty, x: Any, group: F.GroupLayout | tuple[tuple[int, int, int], float] | None) -> Any:
    """``penalty.value`` of each model's slice of the stacked ``x`` (float64, a tensor or
    a NumPy array), at once. ``group``: a group term's stacked layout, or where the groups
    are plain (as NumPy takes them) each model's ``(outer, groups, inner)`` and √|g|."""
    flat = x.reshape(len(x), -1)
    if isinstance(penalty, (L1, L2, ElasticNet)):  # ρ·Σ|w| + (1 − ρ)·Σw², each sum only where ρ asks for it
        rho = _l1_share(penalty)
        value: Any = 0.0
        if rho > 0:
            value = value + rho * abs(flat).sum(1)
        if rho < 1:
            value = value + (1.0 - rho) * (flat * flat).sum(1)
        return penalty.lambda_ * value
    assert isinstance(penalty, GroupLasso) and group is not None  # unsupported() admits no other
    if isinstance(group, tuple):  # ‖w_g‖ of the plain groups: the entries' axes summed
        shape, weight = group
        groups = (((flat * flat).reshape(len(x), *shape).sum((1, 3)) ** 0.5) * weight).sum(-1)
    else:
        norms = F.group_norms(x, group)
        weights = group.weights if isinstance(group.weights, float) else group.weights.to(norms)
        groups = (norms * weights).sum(-1)
    if isinstance(penalty, SparseGroupLasso):
        return penalty.lambda_ * (penalty.l1_ratio * abs(flat).sum(1) + (1.0 - penalty.l1_ratio) * groups)
    return penalty.lambda_ * groups


@dataclass
class _PhaseResult:
    epochs: list[int]
    best_epoch: list[int]
    train_curves: list[list[float]]
    val_curves: list[list[float]]

    def row(self, k: int) -> tuple[int, int, list[float], list[float]]:
        """Model ``k``'s fields, in the order the constructor takes them per model."""
        return self.epochs[k], self.best_epoch[k], self.train_curves[k], self.val_curves[k]

    def result(self, k: int) -> TrainResult:
        return TrainResult(*self.row(k))


#: What :func:`_train` tells its caller as a model ends a phase (its weights in the stack):
#: ``(model, phase, result, seconds)``; True when no model is to go past that phase.
_PhaseEnd = Callable[[int, int, TrainResult, float], bool]


def _train(
    stack: _Stack,
    X: Tensor,
    target: Tensor,
    rows: _Rows,
    loss: str,
    config: TrainConfig,
    terms: _Terms | None,
    hold: Tensor | None = None,
    *,
    lambdas: Sequence[float] = (1.0,),
    ended: _PhaseEnd | None = None,
    caps: np.ndarray | None = None,
) -> _PhaseResult:
    """:func:`~shrinkage.train.train` for every model of ``stack`` at once, at each λ
    of ``lambdas`` in turn (``terms`` are the penalty at λ = 1).

    Full-batch Adam; after each step the prox of ``terms`` with each model's own
    per-element step (the rule of :mod:`shrinkage.optim` for Adam) times its λ, and
    ``hold`` (``(models, parameters)`` of 0/1) multiplied in: relaxed fits keep their
    dropped input columns at exactly zero. Early stopping, patience, ``lr_halvings``,
    ``tol`` and ``restore_best`` as in ``train``, per model and per λ.

    Each model goes through the λ on its own: one that stops at a λ leaves the working
    set (its weights, Adam state and curves go back to ``stack``; ``ended`` is called)
    and comes back at the next λ from there, while the others go on at theirs. So an
    epoch costs what the models still training cost, and a path costs its slowest
    model's epochs, not the sum over λ of the slowest model's at each. ``ended``
    returning True stops every model at that phase: a model past it is dropped. The
    result holds each model's last phase. ``caps``: each model's own ``max_epochs``
    (at most ``config``'s).
    """
    beta1, beta2 = config.optimizer_kwargs.get("betas", (0.9, 0.999))
    adam = (float(config.lr), float(beta1), float(beta2), float(config.optimizer_kwargs.get("eps", 1e-8)))
    objective = config.monitor == "objective" and terms is not None
    work = _Working(stack, rows, hold, lambdas)
    fused = _numba.supports([stack.flat.detach()])  # the Adam step's kernel (on the CPU)
    on_device = X.device.type != "cpu"
    chunk = max(1, _ACTIVATION_BUDGET // (stack.n * widest(stack.template)))
    while work.index:
        started = time.perf_counter()
        losses, train_loss, grad = _losses_and_grad(stack, X, target, loss, work.weights, work.train_rows, chunk)
        scored = work.epoch > 0  # the weights after `epoch` steps: the end of epoch `epoch - 1`
        if scored.any():
            with torch.no_grad():
                score = (losses * work.score_rows).sum(1).double()
                if objective:
                    assert terms is not None
                    score = score + terms.values(work.weights) * work.lam.view(-1).double()
                limit = config.max_epochs if caps is None else caps[work.index]
                going = work.score(score, scored, config) & ~(scored & (work.epoch >= limit))
            keep = work.retire(going, config.restore_best, ended)
            if keep is not None:
                train_loss, grad = train_loss.index_select(0, keep), grad.index_select(0, keep)
        if work.index:
            work.train.append(train_loss.detach().double())
            # on an accelerator, the group prox's Newton iterations test for convergence (the
            # epoch waits on the device anyway)
            with torch.no_grad(), F.device_checks(_NEWTON_CHECKS) if on_device else nullcontext():
                _adam_prox_step(stack, work, grad, adam, terms, fused)
        work.seconds += (time.perf_counter() - started) / max(len(work.index), 1)
        work.admit()
    return work.out


def _losses_and_grad(
    stack: _Stack, X: Tensor, target: Tensor, loss: str, weights: Tensor, train_rows: Tensor, chunk: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Each model's loss on each row (with the flat ``weights`` of some models, and
    ``train_rows`` their training rows' weights), its training loss and that loss's
    gradient in its weights. The rows go through in chunks of ``chunk``, so that the activations
    kept for the backward pass (models × rows × width) stay within
    ``_ACTIVATION_BUDGET`` elements whatever the number of rows (a million rows × 6 models
    × 32 units held gigabytes); the chunks' gradients are added. Data within the budget
    is one chunk, the sums in the order they always had."""
    rows = X.shape[0]
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    for start in range(0, rows, chunk):
        part = slice(start, min(start + chunk, rows))
        if stack.by_hand:
            saved: list = []
            row_losses, slope = _losses_and_slope(stack.forward(X[part], weights, saved), target[part], loss)
            assert slope is not None
            part_loss = (row_losses * train_rows[:, part]).sum(1)
            slope.mul_(train_rows[:, part].unsqueeze(-1))
            parts.append((row_losses, part_loss, stack.gradient(weights, saved, slope)))
            continue
        weights.requires_grad_(True)
        row_losses = _row_losses(stack.forward(X[part], weights), target[part], loss)
        part_loss = (row_losses * train_rows[:, part]).sum(1)
        (part_grad,) = torch.autograd.grad(part_loss.sum(), [weights])
        weights.requires_grad_(False)
        parts.append((row_losses.detach(), part_loss.detach(), part_grad))
    if len(parts) == 1:
        return parts[0]
    losses, train_losses, grads = zip(*parts)
    return torch.cat(losses, 1), torch.stack(train_losses).sum(0), torch.stack(grads).sum(0)


class _Working:
    """The models of one :func:`_train` call still training: copies of their weights,
    Adam state, rows, λ and early-stopping state, ``(working, …)``; ``index`` says which
    models of the stack they are. A model that ends a phase goes back to the stack
    (:meth:`retire`) and, with a λ left, joins again for the next (:meth:`admit`)."""

    def __init__(self, stack: _Stack, rows: _Rows, hold: Tensor | None, lambdas: Sequence[float]):
        n, flat = stack.n, stack.flat
        self.stack, self.rows, self.hold_all, self.lambdas = stack, rows, hold, [float(lam) for lam in lambdas]
        self.phase = [0] * n  # each model's phase: its λ in `lambdas`
        self.last = len(self.lambdas)  # phases past this one are not trained (`ended`)
        self.index: list[int] = []
        self.weights = flat.detach()[:0].clone()
        self.best_weights = self.weights.clone()
        self.moments = (self.weights.clone(), self.weights.clone())
        self.steps = stack.steps[:0].clone()
        self.lam = self.weights[:, :1].clone()  # each model's λ, (working, 1)
        self.train_rows = rows.train[:0]
        self.score_rows = (rows.val if rows.val is not None else rows.train)[:0]
        self.hold = None if hold is None else hold[:0]
        # each model's factor of the learning rate, (working, 1) on the device; None before a halving
        self.rate: Tensor | None = None
        # early stopping's state, per model, on the host: a few numbers (each torch
        # operation on them cost more than NumPy's on a small stack's epoch)
        self.bar = np.zeros(0)  # what a score must go below to improve: best − tol·max(|best|, 1), inf before one
        self.best_epoch = np.zeros(0, dtype=np.int64)
        self.waited = np.zeros(0, dtype=np.int64)
        self.halvings = np.zeros(0, dtype=np.int64)
        self.epoch = np.zeros(0, dtype=np.int64)  # steps taken at the model's current λ
        self.seconds = np.zeros(0)
        # this working set's curves: one (working,) tensor an epoch; the validation values
        # with whether each model's counts (not at its λ's first epoch)
        self.train: list[Tensor] = []
        self.val: list[tuple[Tensor, np.ndarray]] = []
        self.out = _PhaseResult(
            epochs=[0] * n, best_epoch=[0] * n, train_curves=[[] for _ in range(n)], val_curves=[[] for _ in range(n)]
        )
        self.joining = list(range(n))
        self.admit()

    def admit(self) -> None:
        """The models waiting to start a phase join the working set, from their weights
        and Adam state in the stack, with fresh early stopping."""
        if not self.joining:
            return
        self._flush()
        models, self.joining = self.joining, []
        stack, device = self.stack, self.weights.device
        at = torch.tensor(models, device=device)
        weights = stack.flat.detach().index_select(0, at)
        self.weights = torch.cat([self.weights, weights])
        self.best_weights = torch.cat([self.best_weights, weights])
        m, v = (torch.cat([mine, full.index_select(0, at)]) for mine, full in zip(self.moments, stack.moments))
        self.moments = (m, v)
        self.steps = torch.cat([self.steps, stack.steps.index_select(0, at)])
        lam = torch.tensor([self.lambdas[self.phase[k]] for k in models], dtype=weights.dtype, device=device)
        self.lam = torch.cat([self.lam, lam[:, None]])
        rows = self.rows.take(models)
        self.train_rows = torch.cat([self.train_rows, rows.train])
        self.score_rows = torch.cat([self.score_rows, rows.val if rows.val is not None else rows.train])
        if self.hold is not None and self.hold_all is not None:
            self.hold = torch.cat([self.hold, self.hold_all.index_select(0, at)])
        if self.rate is not None:
            self.rate = torch.cat([self.rate, self.rate.new_ones(len(models), 1)])
        fresh = len(models)
        self.bar = np.concatenate([self.bar, np.full(fresh, math.inf)])
        self.best_epoch, self.waited, self.halvings, self.epoch = (
            np.concatenate([state, np.zeros(fresh, dtype=np.int64)])
            for state in (self.best_epoch, self.waited, self.halvings, self.epoch)
        )
        self.seconds = np.concatenate([self.seconds, np.zeros(fresh)])
        self.index += models

    def score(self, score: Tensor, scored: np.ndarray, config: TrainConfig) -> np.ndarray:
        """Early stopping's bookkeeping for the ``scored`` models (past their λ's first
        epoch), on the host (the epoch's one read of the device: the models' monitored
        values); which models go on."""
        values = score.detach().to("cpu", torch.float64).numpy()
        self.val.append((score, scored))
        if not np.isfinite(values).all() and not np.isfinite(values[scored]).all():
            raise Unbatchable("a batched fit diverged")
        improved = scored & (values < self.bar)  # (finite values: any is below a first bar, inf)
        self.bar = np.where(improved, values - config.tol * np.maximum(np.abs(values), 1.0), self.bar)
        self.best_epoch = np.where(improved, self.epoch - 1, self.best_epoch)
        self.waited = np.where(improved, 0, self.waited + scored)
        if config.restore_best and improved.any():
            if improved.all():
                self.best_weights.copy_(self.weights)
            else:
                rows = torch.from_numpy(np.flatnonzero(improved)).to(self.weights.device)
                self.best_weights.index_copy_(0, rows, self.weights.index_select(0, rows))
        if config.lr_halvings:  # a plateau halves a model's learning rate while it may
            halve = (self.waited >= config.patience) & (self.halvings < config.lr_halvings)
            if halve.any():
                self.halvings = self.halvings + halve
                self.waited = np.where(halve, 0, self.waited)
                rate = torch.from_numpy(0.5**self.halvings)[:, None]
                self.rate = rate.to(device=self.weights.device, dtype=self.weights.dtype)
        return self.waited < config.patience

    def retire(self, going: np.ndarray, restore_best: bool, ended: _PhaseEnd | None) -> Tensor | None:
        """Send the models that end their phase back to the stack (``ended`` told), the
        ones with a λ left to join again (:meth:`admit`). Returns the positions of those
        that go on (to index the epoch's tensors with), ``None`` when the working set is
        unchanged."""
        if bool(going.all()):
            return None
        stopping = [j for j, flag in enumerate(going.tolist()) if not flag]
        self._flush()
        at = torch.tensor(stopping, device=self.weights.device)
        models = torch.tensor([self.index[j] for j in stopping], device=self.weights.device)
        stack = self.stack
        with torch.no_grad():
            final = self.best_weights if restore_best else self.weights
            stack.flat.index_copy_(0, models, final.index_select(0, at))
            for full, part in zip(stack.moments, self.moments):
                full.index_copy_(0, models, part.index_select(0, at))
            stack.steps.index_copy_(0, models, self.steps.index_select(0, at))
        epoch, best_epoch, seconds = self.epoch.tolist(), self.best_epoch.tolist(), self.seconds.tolist()
        for j in stopping:
            k = self.index[j]
            self.out.epochs[k], self.out.best_epoch[k] = epoch[j], best_epoch[j]
            if ended is not None and ended(k, self.phase[k], self.out.result(k), seconds[j]):
                self.last = min(self.last, self.phase[k] + 1)
            if self.phase[k] + 1 < self.last:
                self.phase[k] += 1
                self.out.train_curves[k], self.out.val_curves[k] = [], []
                self.joining.append(k)
        self.joining = [k for k in self.joining if self.phase[k] < self.last]
        kept = [j for j, flag in enumerate(going.tolist()) if flag and self.phase[self.index[j]] < self.last]
        return self._keep(kept)

    def _keep(self, kept: list[int]) -> Tensor:
        """Only the working models at positions ``kept`` go on."""
        keep = torch.tensor(kept, device=self.weights.device, dtype=torch.long)
        self.index = [self.index[j] for j in kept]
        self.weights = self.weights.index_select(0, keep)
        self.best_weights = self.best_weights.index_select(0, keep)
        self.moments = (self.moments[0].index_select(0, keep), self.moments[1].index_select(0, keep))
        self.steps = self.steps.index_select(0, keep)
        self.lam = self.lam.index_select(0, keep)
        self.train_rows = self.train_rows.index_select(0, keep)
        self.score_rows = self.score_rows.index_select(0, keep)
        self.hold = None if self.hold is None else self.hold.index_select(0, keep)
        self.rate = None if self.rate is None else self.rate.index_select(0, keep)
        self.bar, self.seconds = self.bar[kept], self.seconds[kept]
        self.best_epoch, self.waited, self.halvings, self.epoch = (
            state[kept] for state in (self.best_epoch, self.waited, self.halvings, self.epoch)
        )
        return keep

    def _flush(self) -> None:
        """Move this working set's curves to the host, onto each model's lists."""
        if self.train:
            for j, values in enumerate(torch.stack(self.train, 1).tolist()):
                self.out.train_curves[self.index[j]].extend(values)
            self.train.clear()
        if self.val:
            values = torch.stack([score for score, _ in self.val], 1).tolist()
            counts = np.stack([scored for _, scored in self.val], 1)
            for j, row in enumerate(values):
                self.out.val_curves[self.index[j]].extend(v for v, c in zip(row, counts[j]) if c)
            self.val.clear()


def _adam_prox_step(
    stack: _Stack,
    work: _Working,
    grad: Tensor,
    adam: tuple[float, float, float, float],
    terms: _Terms | None,
    fused: bool,
) -> None:
    """torch's Adam step on every working model, then the prox with the step it took
    (times the model's λ: the terms are the penalty at λ = 1). ``fused``: through
    :func:`shrinkage._numba.adam_stack_`, one pass with an elementwise prox (on a small
    stack a sixth of the torch operations' time; the group proxes follow it)."""
    lr, beta1, beta2, eps = adam
    p, (m, v) = work.weights, work.moments
    work.epoch += 1
    if fused:
        l1, l2 = (None, None) if terms is None or terms.coefficients is None else terms.coefficients
        grouped = terms is not None and terms.coefficients is None
        hold = None if grouped else work.hold
        step = _numba.adam_stack_(
            p,
            work.moments,
            grad,
            work.steps,
            adam=adam,
            rate=work.rate,
            lam=work.lam,
            l1=l1,
            l2=l2,
            hold=hold,
        )
        if grouped:
            assert terms is not None
            terms.prox_(p, step)
            if work.hold is not None:
                p.mul_(work.hold)
        return
    work.steps += 1.0
    bias1 = (1.0 - beta1**work.steps).to(p.dtype)[:, None]
    root2 = torch.sqrt(1.0 - beta2**work.steps).to(p.dtype)[:, None]
    m.lerp_(grad, 1.0 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    # lr / (√(v/(1−β₂ᵗ)) + ε): Adam's per-element step, what the prox scales by
    step = (v.sqrt() / root2).add_(eps).reciprocal_().mul_(lr)
    if work.rate is not None:  # (lr_halvings: a model's halved learning rate)
        step.mul_(work.rate)
    p.sub_(step * m / bias1)
    if terms is not None:
        terms.prox_(p, step.mul_(work.lam))
    if work.hold is not None:
        p.mul_(work.hold)


# ------------------------------------------------------------------------- fold paths
@dataclass
class _Fold:
    train: np.ndarray  # rows of the shared data
    val: np.ndarray | None
    test: np.ndarray


class _StackedPathFit:
    """The interface :func:`~shrinkage.path.walk` drives (a path's training state), over
    a stack whose model 0 is the full-data path (the lead: its λ_max, its end, its
    extensions set the grid) and models 1..K the folds, trained alongside at every λ."""

    def __init__(
        self, lead: _PathFit, folds: list[_Fold], X: Tensor, y: Tensor, config: PathConfig, reuse: Reuse | None
    ):
        self.lead, self.net, self.config, self.reuse = lead, lead.net, config, reuse
        self.loss, self.rules = lead.loss, lead.rules
        self.X = X
        self.target = as_targets(y, self.loss, X.dtype)
        n_rows, device, dtype = X.shape[0], X.device, X.dtype
        self.rows = _Rows(
            train=_row_weights([f.train for f in folds], n_rows, device, dtype),
            val=_row_weights([f.val for f in folds if f.val is not None], n_rows, device, dtype)
            if config.val_fraction > 0
            else None,
            test=_row_weights([f.test for f in folds], n_rows, device, dtype),
        )
        self.initial = _state_copy(lead.net)
        self.stack = _Stack(lead.net, [self.initial] * len(folds), device)
        self.models = [lead.net] + [copy.deepcopy(lead.net) for _ in folds[1:]]
        # each model's terms, for its points' sparsity; the penalty at λ = 1 on the stack
        self.regs = [Regularizer(model, scaled(self.rules, 1.0), mode="proximal") for model in self.models]
        self.terms = _Terms(self.stack, scaled(self.rules, 1.0))
        # each model's training, validation and test rows' weights (a point's three losses), and
        # the rows a point's pass takes at once (within the activations' budget)
        none = self.rows.train.new_zeros(len(folds), n_rows)
        sets = (self.rows.train, self.rows.val, self.rows.test)
        self.point_rows = torch.stack([none if weights is None else weights for weights in sets], 1)
        self.chunk = max(1, _ACTIVATION_BUDGET // widest(self.stack.template))
        self.along: list[list[PathPoint]] = [[] for _ in folds]
        self.dense: list[PathPoint | None] = [None] * len(folds)
        # what an unpenalized fit of model k depends on, for `reuse`
        self.keys: list[tuple[str, ...]] = []
        if reuse is not None:
            data = _fingerprint(X, self.target)
            start = _fingerprint(self.stack.flat[0])
            self.keys = [
                (data, start, _fingerprint(*(None if w is None else w[k] for w in vars(self.rows).values())))
                for k in range(len(folds))
            ]

    def _point(
        self, k: int, lambda_: float, result: TrainResult, train_config: TrainConfig, seconds: float
    ) -> PathPoint:
        """Model ``k``'s point at ``lambda_``, from its weights in the stack."""
        model = self.models[k]
        self.stack.load_into(model, k)
        keep = self.config.keep_states and k == 0
        measures = self._measures(k, lambda_, train_config.lr)
        return point_of(lambda_, model, self.regs[k], measures, self.lead.names, result, seconds, keep)

    def _measures(self, k: int, lambda_: float, step: float) -> Measures:
        """Model ``k``'s losses, :func:`~shrinkage.path.stationarity` (at the step ``step``)
        and penalty at ``lambda_``, from its weights in the stack, as a path measures its
        model: one pass over the shared rows gives its three mean losses and the gradient
        (a point of the default regressor's stack took 2.5 ms with three passes on a copy
        of the model and a Regularizer made for it, 1.6 ms so)."""
        weights = self.stack.flat.detach()[k : k + 1].clone()
        rows = self.point_rows[k]
        losses, _, grad = _losses_and_grad(self.stack, self.X, self.target, self.loss, weights, rows[:1], self.chunk)
        with torch.no_grad():
            train_loss, val_loss, test_loss = _means(losses.expand(3, -1), rows, 3)
            before = weights.double()
            stepped = before - step * grad.double()
            moved = stepped.clone()
            if lambda_ > 0:  # the prox of a step `step` (the terms are the penalty at λ = 1)
                self.terms.prox_(moved, step * lambda_)
            tensors = [list(self.stack.views(flat).values()) for flat in (before, moved, stepped)]
            stationarity = float(largest_relative_change(*tensors))
            penalty = lambda_ * float(self.terms.values(weights)[0])
        return Measures(train_loss, val_loss, test_loss, stationarity, penalty)

    def recall(self, k: int, config: TrainConfig, *extra: str) -> Any:
        """Model ``k``'s unpenalized fit under ``config`` (``extra``: what else it depends
        on) from ``reuse``, or None."""
        return None if self.reuse is None else self.reuse.get((*self.keys[k], repr(config), *extra))

    def remember(self, k: int, config: TrainConfig, fit: Any, *extra: str) -> None:
        """Keep model ``k``'s unpenalized fit in ``reuse`` (when there is one)."""
        if self.reuse is not None:
            self.reuse.put((*self.keys[k], repr(config), *extra), fit)

    def dense_fit(self) -> PathPoint:
        config = self.config.dense_config
        found = [self.recall(k, config) for k in range(self.stack.n)]
        if all(fit is not None for fit in found):  # trained by an earlier cross-validation
            with torch.no_grad():
                self.stack.flat.copy_(torch.stack([weights for weights, _ in found]).to(self.stack.flat))
            phase = _PhaseResult(*(list(column) for column in zip(*(row for _, row in found))))
            seconds = 0.0
        else:
            started = time.perf_counter()
            phase = _train(self.stack, self.X, self.target, self.rows, self.loss, config, None)
            seconds = (time.perf_counter() - started) / self.stack.n
            for k in range(self.stack.n):
                self.remember(k, config, (self.stack.flat[k].detach().cpu().clone(), phase.row(k)))
        self.dense = [self._point(k, 0.0, phase.result(k), config, seconds) for k in range(self.stack.n)]
        self.stack.fresh_optimizer()  # the path's optimizer starts fresh at its first λ
        return self.dense[0]  # type: ignore[return-value]

    def lambda_max(self) -> float:
        self.stack.load_into(self.lead.net, 0)
        return self.lead.lambda_max()

    def fit_through(
        self,
        lambdas: Sequence[float],
        index: int,
        until: Callable[[PathPoint], bool] | None = None,
        advance: Callable[[int], Any] | None = None,
    ) -> list[PathPoint]:
        """Every model through ``lambdas`` in one :func:`_train` call, each at its own pace
        (a fold ahead of the full-data model goes on to its next λ): the full-data path's
        points, up to the first that ``until`` calls its end; the folds' go on their paths,
        as many."""
        train_config = self.config.train_config
        terms = self.terms
        made: list[list[PathPoint]] = [[] for _ in self.models]

        def ended(k: int, phase: int, result: TrainResult, seconds: float) -> bool:
            point = self._point(k, float(lambdas[phase]), result, train_config, seconds)
            made[k].append(point)
            if k > 0:
                return False
            if advance is not None:
                advance(1)
            return until is not None and until(point)

        _train(self.stack, self.X, self.target, self.rows, self.loss, train_config, terms, lambdas=lambdas, ended=ended)
        reached = len(made[0])  # a fold ahead of the full-data path where it ended: its extra λ go
        for k, points in enumerate(made):
            self.along[k].extend(points[:reached])
        return made[0]

    def snapshot(self) -> Tensor:
        return self.stack.flat.detach().clone()

    def restore(self, state: Tensor) -> None:
        with torch.no_grad():
            self.stack.flat.copy_(state)

    def reset_optimizer(self) -> None:
        self.stack.fresh_optimizer()


def joint_paths(
    model: ModelSpec,
    X: np.ndarray,
    y: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    rules: list[Rule],
    task: str,
    config: PathConfig,
    feature_names: Sequence[str] | None = None,
    reuse: Reuse | None = None,
    bar: Any = None,
) -> tuple[RegularizationPath, list[RegularizationPath]]:
    """The full-data path and every fold's path, trained as one stacked network.

    The full-data path is :func:`~shrinkage.path.regularization_path`'s (its λ grid,
    its ``config``, its weights at each λ with ``keep_states``); each fold trains the
    same λ in the same order (warm starts, a lower segment from the dense start), its
    held-out rows scored as ``test``. The full-data path's λ count on ``bar`` (a
    caller's progress bar) where given. Raises :class:`Unbatchable` when a fit diverges.
    """
    lead = path_fit(model, X, y, rules, task, config, feature_names=feature_names)
    X_t, y_t = to_tensors(X, y, device=config.device, dtype=next(lead.net.parameters()).dtype)
    everything = _Fold(*_split(np.arange(X.shape[0]), y, task, config), test=np.array([], dtype=np.int64))
    parts = [everything] + [_Fold(*_split(tr, y, task, config), test=te) for tr, te in folds]
    fit = _StackedPathFit(lead, parts, X_t, y_t, config, reuse)
    with cpu_threads(X_t.device, len(parts) * X.shape[0] * widest(lead.net)):
        points, dense, lam_max, notes = walk(fit, rules, config, progress=False, bar=bar)
        if config.relax:
            _relax(fit)
    fit.stack.load_into(lead.net, 0)
    n_features = X.shape[1]
    full = RegularizationPath(
        points, scaled(rules, 1.0), lam_max, dense, n_features, lead.names, model=lead.net, notes=notes
    )
    fold_paths = [
        RegularizationPath(
            sorted(fit.along[k], key=lambda p: p.lambda_),
            scaled(rules, 1.0),
            None,
            fit.dense[k],
            n_features,
            lead.names,
        )
        for k in range(1, len(parts))
    ]
    return full, fold_paths


def _split(rows: np.ndarray, y: np.ndarray, task: str, config: PathConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """``rows`` split into training and early-stopping rows as a path splits its data."""
    if config.val_fraction == 0:
        return rows, None
    kept, _, held, _ = split_validation(rows.reshape(-1, 1), y[rows], task, config.val_fraction, config.seed)
    return kept.ravel(), held.ravel()


def _relax(fit: _StackedPathFit) -> None:
    """The relaxed fit of every (model, feature set) on the paths, from the initial
    weights with the dropped input columns held at zero; their records go on the points.
    The folds' fits, stopped early, come first, then the full data's (model 0), stopped
    early too and at the longest of the folds' at its λ at the latest
    (:func:`~shrinkage.path.folds_relaxed_epochs`). The full data's keep their weights
    when the path keeps states. Fits found in ``fit.reuse`` are not trained again."""
    dense = fit.config.dense_config
    folds = [(k, tuple(point.features), dense.max_epochs) for k in range(1, len(fit.along)) for point in fit.along[k]]
    done = _relaxed_fits(fit, folds)
    for k in range(1, len(fit.along)):
        for point in fit.along[k]:
            set_relaxed(point, done[(k, tuple(point.features), dense.max_epochs)])
    full = fit.along[0]
    epochs = folds_relaxed_epochs([point.lambda_ for point in full], fit.along[1:])
    most = [dense.max_epochs if n is None else min(n, dense.max_epochs) for n in epochs]
    wanted = [(0, tuple(point.features), n) for point, n in zip(full, most, strict=True)]
    done = _relaxed_fits(fit, wanted)
    for point, key in zip(full, wanted, strict=True):
        set_relaxed(point, done[key])


#: A relaxed fit to train: (model, input features kept, most epochs).
_RelaxedKey = tuple[int, tuple[int, ...], int]


def _relaxed_fits(fit: _StackedPathFit, wanted: Sequence[_RelaxedKey]) -> dict[_RelaxedKey, _Relaxed]:
    """The relaxed fits of ``wanted``, trained together, a few at a time on large data.
    The weights are kept for model 0's (the full data's) where the path keeps states."""
    X, config = fit.X, fit.config
    keep = config.keep_states
    done: dict[_RelaxedKey, _Relaxed] = {}
    for key in dict.fromkeys(wanted):
        k, features, most = key
        found = fit.recall(k, capped_epochs(config.dense_config, most), str(features))
        if found is not None and (found[2] is not None or not keep or k != 0):  # with the weights it must give
            done[key] = found
    missing = [key for key in dict.fromkeys(wanted) if key not in done]
    # many feature sets on large data: a few at a time, so that the stacked activations fit
    chunk = max(1, _ACTIVATION_BUDGET // (X.shape[0] * widest(fit.net)))
    for first in range(0, len(missing), chunk):
        done.update(_train_relaxed(fit, missing[first : first + chunk]))
    return done


def _train_relaxed(fit: _StackedPathFit, part: Sequence[_RelaxedKey]) -> dict[_RelaxedKey, _Relaxed]:
    """The relaxed fits of ``part`` as one stack, each stopped early and at its own
    most epochs."""
    X, config = fit.X, fit.config
    keep = config.keep_states
    stack = _Stack(fit.net, [fit.initial] * len(part), X.device)
    hold = torch.ones_like(stack.flat.detach())
    masks = stack.views(hold)
    for name, _ in input_parameters_of(stack.template):
        for m, (_, features, _) in enumerate(part):
            kept = set(features)
            masks[name][m][:, [j for j in range(masks[name].shape[2]) if j not in kept]] = 0.0
    with torch.no_grad():
        stack.flat.mul_(hold)
    picked = fit.rows.take([k for k, _, _ in part])
    caps = np.array([most for _, _, most in part], dtype=np.int64)
    result = _train(stack, X, fit.target, picked, fit.loss, config.dense_config, None, hold, caps=caps)
    with torch.no_grad():
        losses = _row_losses(stack.forward(X), fit.target, fit.loss)
        val, test = _means(losses, picked.val, len(part)), _means(losses, picked.test, len(part))
    done = {}
    for m, key in enumerate(part):
        k, features, most = key
        used = capped_epochs(config.dense_config, most)
        state = stack.state(m) if keep and k == 0 else None
        done[key] = (val[m], test[m], state, kept_epochs(result.result(m), used))
        fit.remember(k, used, done[key], str(features))
    return done


def _means(losses: Tensor, weights: Tensor | None, n: int) -> list[float]:
    """Each model's mean loss over its rows; NaN for a model without such rows."""
    if weights is None:
        return [math.nan] * n
    means = (losses * weights).sum(1)
    return torch.where(weights.sum(1) > 0, means, math.nan).tolist()

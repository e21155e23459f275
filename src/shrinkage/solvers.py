"""Full-batch solvers: FISTA, accelerated proximal gradient with line search and restart.

For a model whose training set fits in one batch — above all the linear configuration
(one ``nn.Linear``: a convex problem) — a torch optimizer with early stopping is the
slow and inexact way to the optimum: its steps are sized by a learning rate rather than
by the curvature, and it stops when the loss stalls rather than at the optimum.
:func:`fista` minimizes the same objective ::

    F(θ) = mean_i ℓ(f_θ(x_i), y_i) + Σ_terms λ_t·R_t(θ_t)

by the accelerated proximal-gradient method (FISTA, Beck & Teboulle 2009):

- a gradient step on the data loss for every trainable tensor, then the prox of each
  penalty term on its tensors — tensors without a penalty (the intercept) get the plain
  gradient step, in the same iteration;
- the step found by backtracking on the quadratic upper bound (halved until
  ``f(z) <= f(y) + <∇f(y), z − y> + ‖z − y‖² / 2s``), allowed to grow by 10 % at the
  next iteration (doubled until the first halving), so it follows the local curvature;
- Nesterov momentum, restarted when the step goes against it (O'Donoghue & Candès
  2015, the gradient scheme) or when the objective would rise (the monotone
  safeguard: the point is rejected and the iteration repeated from the last one
  without momentum), so the objective never rises.

It stops when the point's stationarity is at most ``tol``: the largest relative change
one proximal-gradient step of size ``step_size`` would still make to a trainable tensor
— :func:`shrinkage.path.stationarity`, which a path records for the fit with the same
step, its ``lr``. A stationarity bounds the distance to the optimum only up to the
problem's condition number, so ``tol`` must be well below the accuracy wanted:
:data:`FISTA_CONFIG` (the estimators' setting) asks for 1e-8 at a unit step, in float64,
which puts the linear configuration within 1e-4 of scikit-learn's solutions on
standardized data, in tens to hundreds of iterations.

For the linear configuration this is the convex problem scikit-learn's ``Lasso``,
``ElasticNet`` and ``LogisticRegression(penalty="l1")`` solve (the conversions are in
:mod:`shrinkage.convert`), and :func:`fista` reaches their solutions; for a network
(not convex) it reaches a stationary point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .regularizer import Regularizer, Term, _prox_in_safe_precision
from .train import LOSSES, Diverged, TrainConfig, TrainResult, as_targets
from .validation import InputError, check_choice, check_int, check_number, fail

__all__ = ["FISTA_CONFIG", "FistaResult", "fista", "largest_relative_change"]

#: An accepted step grows by this factor at the next iteration (doubles until the first halving).
_GROW = 1.1
#: Halvings after which the line search gives up (the step is then 1e-18 of where it began).
_MAX_HALVINGS = 60
#: A tensor's change is measured against at least this fraction of the norm of all of them.
_SCALE_FLOOR = 1e-3

#: FISTA as a path or a fit trains with it (``PathConfig(train_config=FISTA_CONFIG,
#: dense_config=FISTA_CONFIG)``; the estimators' linear configuration): stationarity at
#: a unit step at most 1e-8, at most 10,000 iterations. Use it on a float64 model: in
#: float32 the gradient's rounding keeps the stationarity above about 1e-7.
FISTA_CONFIG = TrainConfig(optimizer="fista", lr=1.0, batch_size=None, max_epochs=10_000, tol=1e-8)


@dataclass
class FistaResult(TrainResult):
    """What one :func:`fista` run did; ``epochs`` counts iterations (one gradient each).

    ``train_loss`` and ``penalty`` are recorded at each iteration's accepted point
    (``val_loss`` too, with validation data); ``stopped_early`` is ``converged``.

    Attributes
    ----------
    converged : bool
        The stationarity reached ``tol``.
    stationarity : float
        At the returned weights, with the step it was measured at (see :func:`fista`).
    step : float
        The last step the line search accepted (≈ 1/L, L the data loss's local
        Lipschitz constant).
    restarts : int
        Times the momentum was reset.
    evaluations : int
        Passes over the data: one per gradient, one per line-search trial.
    """

    converged: bool = False
    stationarity: float = math.nan
    step: float = math.nan
    restarts: int = 0
    evaluations: int = 0


# ------------------------------------------------------------------ the measure
def largest_relative_change(
    before: Sequence[Tensor], after: Sequence[Tensor], reference: Sequence[Tensor] | None = None
) -> Tensor:
    """``max_t ‖after_t − before_t‖ / max(‖before_t‖, 1e-3·ρ)`` over the tensors ``t``,
    a 0-d float64 tensor; ``ρ`` is the larger of the norms of all of ``before`` together
    and of all of ``reference`` together (default ``before``).

    Each tensor's change relative to its own norm, so that a large intercept does not
    hide unconverged weights — or, for a tensor under a thousandth of ``ρ``, relative to
    that thousandth: a tensor at zero or rounding around it (the intercept of a centred
    target) has no scale of its own. :func:`shrinkage.path.stationarity` passes the
    gradient step before the prox as ``reference``, which gives a scale also when every
    weight is zero (λ above λ_max, a centred target). 0 when nothing moves; infinite
    when there is no scale at all and something moves.

    >>> import torch
    >>> w, b = torch.tensor([3.0, 4.0]), torch.tensor([1e-12])  # b: about zero
    >>> round(float(largest_relative_change([w, b], [w * 1.01, b * 2])), 6)  # w: 1 %; b: 1e-12 / 5e-3
    0.01
    """
    if not before:
        return torch.zeros((), dtype=torch.float64)
    before, after = _float64(before), _float64(after)
    changes = torch.stack(torch._foreach_norm(torch._foreach_sub(after, before)))
    sizes = torch.stack(torch._foreach_norm(before))
    overall = torch.linalg.vector_norm(sizes)
    if reference is not None:
        reference_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(_float64(reference))))
        overall = torch.maximum(overall, reference_norm)
    scale = torch.maximum(sizes, _SCALE_FLOOR * overall)
    ratio = torch.where(scale > 0, changes / scale.clamp_min(torch.finfo(torch.float64).tiny), torch.inf)
    return torch.where(changes > 0, ratio, 0.0).max()


def _float64(tensors: Sequence[Tensor]) -> list[Tensor]:
    """The tensors in float64 (themselves when they are)."""
    return [t if t.dtype == torch.float64 else t.double() for t in tensors]


# --------------------------------------------------------------- the objective
class _Objective:
    """``mean ℓ + Σ λ·R`` of one model on one batch: values, gradients, prox, penalty.

    Every method but :meth:`value_and_grad` runs under ``torch.no_grad()`` (the caller's).
    """

    def __init__(self, model, X, y, loss, regularizer, validation, after_step):
        self.model, self.X, self.after_step = model, X, after_step
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise InputError("model must have trainable parameters for fista, got none")
        self.terms = _terms(regularizer, self.params)
        self.criterion = LOSSES[loss]()
        dtype = self.params[0].dtype
        self.target = as_targets(y, loss, dtype)
        self.validation = None if validation is None else (validation[0], as_targets(validation[1], loss, dtype))

    def value_and_grad(self) -> tuple[Tensor, list[Tensor]]:
        """The data loss at the model's weights (float64, detached) and its gradient."""
        value = self.criterion(self.model(self.X), self.target)
        grads = torch.autograd.grad(value, self.params)
        return value.detach().double(), list(grads)

    def load_(self, tensors: Sequence[Tensor]) -> None:
        torch._foreach_copy_(self.params, list(tensors))

    def try_(self, tensors: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Load ``tensors`` (projected by ``after_step``): the point, and its data loss
        (and validation loss, with validation data) as 0-d float64 tensors."""
        self.load_(tensors)
        if self.after_step is not None:
            self.after_step()
            tensors = [p.detach().clone() for p in self.params]
        values = [self.criterion(self.model(self.X), self.target).double()]
        if self.validation is not None:
            X_val, y_val = self.validation
            values.append(self.criterion(self.model(X_val), y_val).double())
        return tensors, values

    def prox_(self, tensors: list[Tensor], step: float) -> None:
        """``prox_{step·λR}`` of every term on its tensors, in rule order, in place."""
        for term, at in self.terms:
            _prox_in_safe_precision(term.penalty, [tensors[i] for i in at], term.layouts, [step] * len(at))

    def penalty(self, tensors: list[Tensor]) -> Tensor:
        """``Σ λ·R`` at ``tensors``, 0-d float64."""
        total = torch.zeros((), dtype=torch.float64, device=tensors[0].device)
        for term, at in self.terms:
            total = total + term.penalty.value([tensors[i] for i in at], term.layouts).double()
        return total

    def stationarity(self, point: list[Tensor], grads: list[Tensor], step: float) -> Tensor:
        """:func:`shrinkage.path.stationarity` at ``point`` from its gradient (0-d float64)."""
        before = _float64(point)
        stepped = torch._foreach_add(before, _float64(grads), alpha=-step)
        moved = [v.clone() for v in stepped]
        self.prox_(moved, step)
        if self.after_step is not None:  # the step of the constrained problem: projected too
            moved = self._projected(moved, point)
        return largest_relative_change(before, moved, stepped)

    def _projected(self, tensors: list[Tensor], point: list[Tensor]) -> list[Tensor]:
        """``after_step``'s projection of ``tensors`` (float64), applied through the model's
        parameters, which then hold ``point`` again."""
        self.load_(tensors)
        assert self.after_step is not None
        self.after_step()
        projected = [p.detach().double().clone() for p in self.params]
        self.load_(point)
        return projected


def _terms(regularizer: Regularizer | None, params: list[Tensor]) -> list[tuple[Term, list[int]]]:
    """Each term with λ > 0 and the positions of its tensors among ``params``."""
    if regularizer is None:
        return []
    position = {id(p): i for i, p in enumerate(params)}
    out = []
    for term in regularizer.terms:
        if term.mode != "proximal":
            raise InputError(
                f"fista applies every penalty through its prox: the regularizer's terms must be in mode "
                f"'proximal', got {term.mode!r} for {term.label!r}"
            )
        if term.penalty.centered:
            raise InputError(
                f"fista fits penalties on the weights themselves, got {term.penalty!r} on their change "
                "(center=...): train a centred penalty with an optimizer and Regularizer.attach"
            )
        if term.penalty.lambda_ == 0.0:
            continue
        frozen = [name for name, p in zip(term.names, term.params) if id(p) not in position]
        if frozen:
            raise InputError(f"fista optimizes trainable tensors only, got a penalty on the frozen {frozen}")
        out.append((term, [position[id(p)] for p in term.params]))
    return out


def _record(result: FistaResult, values: tuple[float, float, float], validation: bool) -> None:
    """One iteration's entry: the data loss, penalty (and validation loss) of its point.
    The objective never rises, so the last entry is the best."""
    result.train_loss.append(values[0])
    result.penalty.append(values[1])
    if validation:
        result.val_loss.append(values[2])
    result.best_epoch = len(result.train_loss) - 1


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    """All the tensors as one float64 vector."""
    return torch.cat([t.reshape(-1) for t in _float64(tensors)])


# ---------------------------------------------------------------------- FISTA
def fista(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    loss: str = "mse",
    regularizer: Regularizer | None = None,
    tol: float = 1e-8,
    max_iter: int = 10_000,
    step_size: float = 1.0,
    validation: tuple[Tensor, Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
) -> FistaResult:
    """Minimize ``mean_i ℓ(f(x_i), y_i) + Σ λ·R`` over ``model``'s trainable tensors by
    FISTA with backtracking and adaptive restart (see the module docstring); the model
    holds the solution when it returns.

    Parameters
    ----------
    model : nn.Module
        Evaluated in eval mode (a line search needs a deterministic objective: no
        dropout, batch-norm statistics frozen); every trainable tensor is optimized.
    X, y : Tensor
        All the training data, on the model's device: one batch. ``y`` holds values
        for ``mse``, 0/1 for ``bce``, class indices for ``cross_entropy``.
    loss : {"mse", "bce", "cross_entropy"}
    regularizer : Regularizer, optional
        Bound to ``model``, its terms in mode ``proximal``.
    tol : float, default 1e-8
        Stop once the stationarity is at most ``tol``.
    max_iter : int, default 10000
        Cap on iterations (one gradient and one or more line-search trials each).
    step_size : float, default 1.0
        The step the stationarity is measured with, and the first step tried.
    validation : (X_val, y_val), optional
        Only scored, at each accepted point (``val_loss``): the solver runs to ``tol``;
        it does not stop early.
    after_step : callable, optional
        Called after each trial point is loaded into the model: a projection onto a
        constraint set that the prox commutes with, e.g. holding weights at zero (as a
        relaxed fit does). The stationarity is then that of the constrained problem: its
        step is projected too.

    Returns
    -------
    FistaResult

    Raises
    ------
    Diverged
        The objective is not finite at the start, or no step decreases it (the model
        then holds the last iterate).

    Notes
    -----
    Everything stays on the model's device; the host reads numbers once per line-search
    trial — the loss there, the quadratic bound, the stationarity and restart tests,
    in one transfer — because the line search needs them to choose the step. In
    float32 the stationarity cannot fall much below 1e-7 (the gradient's rounding):
    train in float64 for the default ``tol``.

    Examples
    --------
    >>> import torch
    >>> from shrinkage import L1, Regularizer
    >>> X = torch.randn(100, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> y = X[:, 0] - 2 * X[:, 1]
    >>> model = torch.nn.Linear(5, 1).double()
    >>> result = fista(model, X, y, regularizer=Regularizer(model, L1(0.1)))  # to stationarity 1e-8
    >>> result.converged, (model.weight == 0).sum().item()  # the 3 noise columns are exactly 0
    (True, 3)
    """
    check_choice("loss", loss, LOSSES)
    tol = check_number("tol", tol, low=0.0)
    max_iter = check_int("max_iter", max_iter, low=1)
    step_size = check_number("step_size", step_size, low=0.0, low_open=True)
    if X.shape[0] != y.shape[0]:
        raise InputError(f"X and y must have the same number of rows, got {X.shape[0]} and {y.shape[0]}")
    if X.shape[0] == 0:
        raise fail("X", "non-empty", tuple(X.shape))
    if regularizer is not None and regularizer.model is not model:
        raise InputError("regularizer must be bound to the model being trained")
    problem = _Objective(model, X, y, loss, regularizer, validation, after_step)
    was_training = model.training
    model.eval()
    try:
        return _run(problem, tol, max_iter, step_size)
    finally:
        model.train(was_training)


def _run(problem: _Objective, tol: float, max_iter: int, step_size: float) -> FistaResult:
    result = FistaResult(epochs=0, best_epoch=0)
    validation = problem.validation is not None
    with torch.no_grad():
        if problem.after_step is not None:
            problem.after_step()
    x = [p.detach().clone() for p in problem.params]  # x_k: the last accepted point
    at_x = (math.nan, math.nan, math.nan)  # its data loss, penalty and validation loss
    point = x  # y_k, where the gradient is taken: x_k plus momentum
    t, accepted, search = 1.0, step_size, _Search(step_size, torch.finfo(x[0].dtype).eps)
    for iteration in range(max_iter):
        result.epochs = iteration + 1
        with torch.no_grad():
            problem.load_(point)
        value, grads = problem.value_and_grad()
        result.evaluations += 1
        with torch.no_grad():
            here = [value, problem.stationarity(point, grads, step_size)]
            if iteration == 0:  # F(x_0); later F(x_k) is known from x_k's acceptance
                here.append(problem.penalty(point))
            trial, read = search(problem, point, grads, x, here, tol, result)
        f_y, stat = read["here"][:2]
        if iteration == 0:
            at_x = (f_y, read["here"][2], math.nan)
            if not math.isfinite(sum(at_x[:2])):
                with torch.no_grad():
                    problem.load_(x)
                raise Diverged(f"the objective at the start is {sum(at_x[:2])}", 0)
        if stat <= tol:  # y_k is stationary: the answer
            with torch.no_grad():
                _, values = problem.try_(point)
                r_y = float(problem.penalty(point))
            _record(result, (f_y, r_y, float(values[-1]) if validation else math.nan), validation)
            result.converged = result.stopped_early = True
            result.stationarity, result.step = stat, accepted
            return result
        if trial is None:
            with torch.no_grad():
                problem.load_(x)
            raise Diverged("the line search found no step that decreases the objective", iteration)
        f_z, r_z, opposed, val_z = read["trial"]
        objective_x = at_x[0] + at_x[1]
        if f_z + r_z > objective_x + 8 * search.eps * abs(objective_x):
            # the monotone safeguard: reject z, repeat from x_k without momentum
            _record(result, at_x, validation)
            point, t = x, 1.0
            result.restarts += 1
            continue
        at_x = (f_z, r_z, val_z)
        _record(result, at_x, validation)
        if opposed > 0:  # the gradient restart
            t_next, beta = 1.0, 0.0
            result.restarts += 1
        else:
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            beta = (t - 1.0) / t_next
        with torch.no_grad():
            point = list(torch._foreach_add(trial, torch._foreach_sub(trial, x), alpha=beta)) if beta > 0 else trial
        x, t, accepted = trial, t_next, search.step
        search.grow()
    # out of iterations: keep the last accepted point, and say how far it is
    with torch.no_grad():
        problem.load_(x)
    _, grads = problem.value_and_grad()
    with torch.no_grad():
        result.stationarity = float(problem.stationarity(x, grads, step_size))
    result.step = accepted
    return result


class _Search:
    """The backtracking line search, and the step it carries from one iteration to the next."""

    def __init__(self, step: float, eps: float):
        self.step, self.bracketing, self.eps = step, True, eps

    def grow(self) -> None:
        """After an accepted step: try a larger one next (doubling until the first halving)."""
        self.step *= 2.0 if self.bracketing else _GROW

    def __call__(self, problem, point, grads, x, here, tol, result) -> tuple[list[Tensor] | None, dict]:
        """The prox-gradient point from ``point`` with the largest step (halving from the
        current one) under the quadratic upper bound, or ``None`` when none is found.

        ``here`` holds 0-d tensors at ``point``: the data loss, the stationarity (and the
        penalty, at the start). Each trial reads them with its own numbers in one
        transfer: ``read["here"]``, and ``read["trial"]`` = (f(z), R(z), the restart test,
        the validation loss at z or NaN). The search stops at the first trial when the
        stationarity is within ``tol`` (the caller keeps ``point``).
        """
        read: dict = {}
        flat_grads, flat_point, flat_x = _flat(grads), _flat(point), _flat(x)
        for _ in range(_MAX_HALVINGS + 1):
            trial = list(torch._foreach_add(point, grads, alpha=-self.step))
            problem.prox_(trial, self.step)
            trial, values = problem.try_(trial)
            result.evaluations += 1
            flat_trial = _flat(trial)
            move = flat_trial - flat_point
            bound = here[0] + torch.dot(flat_grads, move) + torch.dot(move, move) / (2 * self.step)
            opposed = -torch.dot(move, flat_trial - flat_x)  # > 0: the step goes against the momentum
            numbers = torch.stack([*here, bound, values[0], problem.penalty(trial), opposed, *values[1:]]).tolist()
            read["here"], (q_z, *found) = numbers[: len(here)], numbers[len(here) :]  # the trial's one read
            read["trial"] = (*found, math.nan) if len(found) == 3 else tuple(found)
            f_y, stat, f_z = read["here"][0], read["here"][1], found[0]
            if stat <= tol:
                return trial, read
            # the quadratic upper bound, with room for the rounding of the two losses
            if math.isfinite(f_z) and f_z <= q_z + 8 * self.eps * max(abs(f_y), abs(f_z)):
                return trial, read
            self.step, self.bracketing = self.step / 2, False
        return None, read

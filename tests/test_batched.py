"""The batched engine (all folds and the full path as one stacked network) against the
sequential one (one path per fold), which stays the reference."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from shrinkage import functional as F
from shrinkage.batched import Reuse, unsupported
from shrinkage.cv import cross_validate, cross_validate_unpenalized
from shrinkage.models import MLP
from shrinkage.path import PathConfig
from shrinkage.penalties import L1, L2, ElasticNet, GroupLasso, HierarchicalLasso, SparseGroupLasso
from shrinkage.regularizer import Regularizer, Rule
from shrinkage.train import TrainConfig
from shrinkage.validation import InputError

pytestmark = pytest.mark.filterwarnings("ignore::shrinkage.cv.GridEdgeWarning")


def _standardized(loader, rows=None):
    X, y = loader(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    if rows is not None:
        X, y = X[:rows], y[:rows]
    return X, y


@pytest.fixture(scope="module")
def diabetes():
    X, y = _standardized(load_diabetes)
    return X, (y - y.mean()) / y.std()


def _both(model, X, y, **kwargs):
    runs = {
        engine: cross_validate(model, X, y, engine=engine, n_jobs=1, **kwargs) for engine in ("sequential", "batched")
    }
    assert runs["batched"].engine == "batched" and runs["sequential"].engine == "sequential"
    return runs["sequential"], runs["batched"]


# --------------------------------------------------------------- stacked group layouts
@pytest.mark.parametrize("groups", ["input", "unit", [[0, 1], [2], [3, 4, 5]]])
def test_stacked_group_prox_is_each_models_prox(groups):
    """A group layout over a stack of models: each model's groups shrink as if alone,
    with one step per tensor or per-element steps that differ between models."""
    torch.manual_seed(0)
    W = torch.randn(3, 4, 6, dtype=torch.float64) * torch.tensor([0.1, 1.0, 3.0], dtype=torch.float64).view(3, 1, 1)
    layout = F.group_layout((4, 6), groups)
    steps = [
        0.8,
        torch.rand(3, 4, 6, dtype=torch.float64),
        F.ScaledStep(0.9, torch.rand(3, 4, 6, dtype=torch.float64) + 0.3),
    ]
    for step in steps:
        stacked = W.clone()
        F.group_shrink_([stacked], [layout.stacked()], step=[step])
        for k in range(3):
            alone = W[k].clone()
            own = (
                step
                if isinstance(step, float)
                else (step[k] if isinstance(step, torch.Tensor) else F.ScaledStep(0.9, step.denominator[k]))
            )
            F.group_shrink_([alone], [layout], step=[own])
            torch.testing.assert_close(stacked[k], alone, rtol=0, atol=1e-14)
            assert torch.equal(stacked[k] == 0, alone == 0)
        assert (stacked[0] == 0).sum() > (stacked[2] == 0).sum()  # the small model lost more groups
    torch.testing.assert_close(
        F.group_norms(W, layout.stacked()), torch.stack([F.group_norms(W[k], layout) for k in range(3)])
    )


@pytest.mark.parametrize(
    "penalty",
    [L1(0.3), L2(0.2), ElasticNet(0.1, l1_ratio=0.3), GroupLasso(0.5), GroupLasso(0.5, groups=[[0, 1], [2], [3, 4, 5]]),
     GroupLasso(0.5, groups="unit"), SparseGroupLasso(0.4, l1_ratio=0.7)],
)  # fmt: skip
def test_each_models_penalty_value(penalty):
    """The objective each stacked model stops on: its penalty's own ``value``."""
    from shrinkage.batched import _value_per_model

    torch.manual_seed(1)
    W = torch.randn(3, 4, 6)
    W[1, :, 2] = 0.0
    layouts = penalty.layouts([("w", W[0])])
    layout = None if layouts is None else layouts[0]
    values = _value_per_model(penalty, W, None if layout is None else layout.stacked())
    expected = [float(penalty.value([W[k]], layouts)) for k in range(3)]
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "model",
    [
        MLP(5, (7, 4), 2),
        MLP(5, (6,), 1, activation="tanh"),
        nn.Sequential(nn.ReLU(), nn.Linear(5, 3, bias=False), nn.ReLU(), nn.Linear(3, 1)),
    ],
)
def test_the_stacked_forward_is_each_models_forward(model):
    """The stacked chain (bias in the product, ReLU in place) gives each model's own
    output, and its gradient, as torch's module does; the data is never written."""
    from shrinkage.batched import _Stack

    torch.manual_seed(2)
    states = []
    for _ in range(3):
        for p in model.parameters():
            nn.init.normal_(p)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    stack = _Stack(model, states, "cpu")
    X = torch.randn(11, 5)
    data = X.clone()
    out = stack.forward(X)
    (grad,) = torch.autograd.grad(out.square().sum(), [stack.flat])
    assert torch.equal(X, data)
    for k, state in enumerate(states):
        model.load_state_dict(state)
        own = model(X)
        torch.testing.assert_close(out[k], own, rtol=1e-5, atol=1e-5)
        expected = torch.autograd.grad(own.square().sum(), list(model.parameters()))
        torch.testing.assert_close(grad[k], torch.cat([g.reshape(-1) for g in expected]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("loss", ["mse", "bce", "cross_entropy"])
@pytest.mark.parametrize(
    "model",
    [
        MLP(5, (7, 4), 3),
        MLP(5, (6,), 3, activation="tanh"),
        nn.Sequential(nn.ReLU(), nn.Linear(5, 3, bias=False), nn.ReLU(), nn.Linear(3, 3)),
        nn.Sequential(nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 3), nn.Identity()),
    ],
    ids=["relu", "tanh", "relu first, no bias", "sigmoid, identity"],
)
def test_the_gradient_by_hand_is_autograds_of_each_models_loss(model, loss):
    """A chain of Linear layers and ReLU/Tanh/Sigmoid/Identity gets its gradient by
    hand, not from autograd's graph: each model's row losses and the gradient of its
    row-weighted loss are what torch's own loss module and autograd give for that model
    alone (float64), with rows in chunks as with the whole data at once."""

    from shrinkage import batched
    from shrinkage.train import LOSSES, as_targets

    model = model.double()
    torch.manual_seed(4)
    states = []
    for _ in range(3):
        for p in model.parameters():
            nn.init.normal_(p)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    stack = batched._Stack(model, states, "cpu")
    assert stack.by_hand
    X = torch.randn(13, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (13,)) if loss == "cross_entropy" else torch.rand(13, 3, dtype=torch.float64)
    if loss == "mse":
        y = y * 4 - 2
    target = as_targets(y, loss, torch.float64)
    rows = torch.rand(3, 13, dtype=torch.float64) * (torch.rand(3, 13) < 0.7)  # each model its own rows
    weights = stack.flat.detach().clone()
    for chunk in (13, 5):
        losses, train_loss, grad = batched._losses_and_grad(stack, X, target, loss, weights, rows, chunk)
        for k, state in enumerate(states):
            model.load_state_dict(state)
            own = LOSSES[loss](reduction="none")(model(X), target)
            own = own.mean(-1) if own.dim() == 2 else own
            expected = torch.autograd.grad((own * rows[k]).sum(), list(model.parameters()))
            torch.testing.assert_close(losses[k], own.detach(), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(train_loss[k], (own * rows[k]).sum().detach(), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(grad[k], torch.cat([g.reshape(-1) for g in expected]), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- equivalence
def test_linear_model_folds_match_the_sequential_engine(diabetes):
    """A linear model's objective is convex: each fold's solution at each λ is the same
    whichever engine trains it (early stopping aside, to the training tolerance)."""
    X, y = diabetes
    grid = tuple(np.geomspace(2e-3, 0.5, 8))
    config = PathConfig(
        lambdas=grid, val_fraction=0.0, train_config=TrainConfig(lr=1e-2, batch_size=None, max_epochs=150, patience=150)
    )
    seq, bat = _both(lambda: MLP(10, (), 1), X, y, penalty=L1(), config=config, cv=4)
    np.testing.assert_allclose(bat.scores, seq.scores, rtol=2e-3, atol=1e-4)
    for fold_seq, fold_bat in zip(seq.folds, bat.folds):
        assert [p.features for p in fold_seq.points] == [p.features for p in fold_bat.points]
    assert bat.index_min == seq.index_min and bat.index_1se == seq.index_1se
    assert seq.scores.std() > 1e-3  # λ mattered


@pytest.mark.parametrize("penalty", [GroupLasso(), L1(), ElasticNet(l1_ratio=0.3), L2(), SparseGroupLasso()])
def test_network_folds_follow_the_sequential_engine(penalty):
    """A network on a given grid: the dense fits follow the same trajectory per fold (the
    same epochs of early stopping, the same losses to float rounding); with the
    penalty, where float rounding can tip a weight to zero or not, the same solution
    to a few percent."""
    X, y = _standardized(load_breast_cancer, rows=300)
    config = PathConfig(
        lambdas=tuple(np.geomspace(1e-3, 3e-2, 4)),
        dense_config=TrainConfig(lr=3e-2, batch_size=None, max_epochs=150, patience=5),
        train_config=TrainConfig(lr=1e-2, batch_size=None, max_epochs=150, patience=5, monitor="objective"),
    )
    seq, bat = _both(lambda: MLP(30, (16,), 1), X, y, penalty=penalty, task="binary", config=config, cv=3)
    for fold_seq, fold_bat in zip(seq.folds, bat.folds):
        assert fold_seq.dense.epochs == fold_bat.dense.epochs
        np.testing.assert_allclose(fold_bat.dense.test_loss, fold_seq.dense.test_loss, rtol=1e-4)
        first_seq, first_bat = fold_seq.points[0], fold_bat.points[0]
        objective = lambda p: p.train_loss + p.penalty  # noqa: E731
        np.testing.assert_allclose(objective(first_bat), objective(first_seq), rtol=0.05)
        assert abs(first_bat.n_nonzero - first_seq.n_nonzero) <= 0.1 * first_seq.n_penalized
    np.testing.assert_allclose(bat.scores, seq.scores, rtol=0.1, atol=1e-2)
    # early stopping is per fold: the folds stopped at different epochs
    assert len({f.dense.epochs for f in bat.folds}) > 1


def test_lr_halvings_follow_the_sequential_engine():
    """``lr_halvings``: each model of the stack halves its own learning rate at its own
    plateaus, as ``train`` does for one: the same solutions, and no fit in either engine
    stopped before ``patience`` epochs per halving and one more plateau."""
    X, y = _standardized(load_breast_cancer, rows=300)
    patience, halvings = 5, 3
    config = PathConfig(
        lambdas=tuple(np.geomspace(1e-3, 3e-2, 3)),
        dense_config=TrainConfig(lr=3e-2, batch_size=None, max_epochs=150, patience=5),
        train_config=TrainConfig(
            lr=1e-2, batch_size=None, max_epochs=600, patience=patience, lr_halvings=halvings, monitor="objective"
        ),
    )
    seq, bat = _both(lambda: MLP(30, (16,), 1), X, y, penalty=GroupLasso(), task="binary", config=config, cv=3)
    objective = lambda p: p.train_loss + p.penalty  # noqa: E731
    for fold_seq, fold_bat in zip(seq.folds, bat.folds):
        for a, b in zip(fold_seq.points, fold_bat.points):
            np.testing.assert_allclose(objective(b), objective(a), rtol=0.05)
            assert patience * (halvings + 1) <= min(a.epochs, b.epochs)
    assert any(p.epochs < 600 for fold in bat.folds for p in fold.points)  # stopped after its halvings
    np.testing.assert_allclose(bat.scores, seq.scores, rtol=0.1, atol=1e-2)


def test_full_path_is_the_sequential_full_path():
    """The full-data path (its automatic grid, its weights at every λ) is the one the
    sequential engine makes: the lead model of the stack trains exactly as alone."""
    X, y = _standardized(load_breast_cancer, rows=300)
    seq, bat = _both(lambda: MLP(30, (16,), 1), X, y, penalty=GroupLasso(), task="binary", n_lambdas=6, cv=3)
    np.testing.assert_allclose(bat.lambdas, seq.lambdas, rtol=1e-5)
    for a, b in zip(seq.path.points[:3], bat.path.points[:3]):
        assert a.features == b.features and a.epochs == b.epochs
        for name, tensor in a.state.items():
            torch.testing.assert_close(b.state[name], tensor, rtol=1e-3, atol=1e-5)


def test_relaxed_fits_match(diabetes):
    X, y = diabetes
    grid = tuple(np.geomspace(0.01, 0.3, 4))
    seq, bat = _both(lambda: MLP(10, (8,), 1), X, y, penalty=GroupLasso(), lambdas=grid, relax=True, cv=3)
    relaxed = lambda result: np.array([[p.relaxed_test_loss for p in f.points] for f in result.folds])  # noqa: E731
    assert np.isfinite(relaxed(bat)).all()
    np.testing.assert_allclose(relaxed(bat), relaxed(seq), rtol=0.05)
    # the full data's, stopped at the longest of the folds' at the latest
    own = lambda result: np.array([p.relaxed_val_loss for p in result.path.points])  # noqa: E731
    np.testing.assert_allclose(own(bat), own(seq), rtol=0.05)
    chosen = bat.path.points[bat.index]
    assert chosen.relaxed_state is not None  # the refit returned for the chosen λ
    assert bat.relaxed and bat.model is not None


def test_reused_unpenalized_fits_change_nothing(diabetes):
    """A Reuse shared by cross-validations of different penalties hands each the dense
    starts and relaxed refits an earlier one trained: results are those of fresh runs."""
    X, y = diabetes
    model = lambda: MLP(10, (8,), 1)  # noqa: E731
    options = dict(lambdas=tuple(np.geomspace(0.01, 0.3, 4)), relax=True, cv=3, engine="batched")
    reuse = Reuse()
    baseline = cross_validate_unpenalized(model, X, y, cv=3, engine="batched", reuse=reuse)
    assert reuse.hits == 0
    for penalty in (L1(), ElasticNet(l1_ratio=0.5)):
        shared = cross_validate(model, X, y, penalty=penalty, reuse=reuse, **options)
        fresh = cross_validate(model, X, y, penalty=penalty, **options)
        # equal up to float rounding: the relaxed fits left to train form a smaller stack
        np.testing.assert_allclose(shared.scores, fresh.scores, rtol=1e-6)
        relaxed = lambda r: [[p.relaxed_test_loss for p in f.points] for f in r.folds]  # noqa: E731
        np.testing.assert_allclose(relaxed(shared), relaxed(fresh), rtol=1e-6)
        assert (shared.lambda_min, shared.lambda_1se) == (fresh.lambda_min, fresh.lambda_1se)
        assert [p.epochs for p in shared.path.points] == [p.epochs for p in fresh.path.points]
        assert shared.path.dense is not None and fresh.path.dense is not None
        assert shared.path.dense.val_loss == fresh.path.dense.val_loss == baseline[2].dense.val_loss
        dense_scores = [fold.dense.test_loss for fold in shared.folds if fold.dense is not None]
        np.testing.assert_array_equal(dense_scores, baseline[0])
    # the dense starts of both penalties' 4 models came from the unpenalized run; the
    # elastic net's relaxed fits largely from the L1 run's
    assert reuse.hits > 8
    other_data = cross_validate(model, X[:300], y[:300], penalty=L1(), reuse=reuse, **options)
    assert np.isfinite(other_data.scores).all()  # different rows: nothing found, all trained


def test_multiclass_and_unpenalized():
    X, y = _standardized(load_wine)
    seq, bat = _both(lambda: MLP(13, (8,), 3), X, y, penalty=L1(), task="multiclass", lambdas=(0.01, 0.05), cv=3)
    np.testing.assert_allclose(bat.scores, seq.scores, rtol=0.05, atol=1e-3)
    runs = [
        cross_validate_unpenalized(lambda: MLP(13, (8,), 3), X, y, task="multiclass", cv=3, engine=engine, n_jobs=1)
        for engine in ("sequential", "batched")
    ]
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-3)
    np.testing.assert_array_equal(runs[1][1], runs[0][1])


# ------------------------------------------------------------------- what it covers
def test_unsupported_cases_are_named_and_fall_back(diabetes):
    X, y = diabetes
    model = MLP(10, (8,), 1)
    assert unsupported(model, [Rule(L1())], PathConfig(), 400) is None
    assert "mode" in unsupported(model, [Rule(L1())], PathConfig(mode="loss"), 400)
    # each config named with the estimators' parameter that sets it
    assert unsupported(model, [Rule(L1())], PathConfig(train_config=TrainConfig(batch_size=32)), 400) == (
        "train_config (an estimator's batch_size=) trains on mini-batches of 32 rows (batched: full batch)"
    )
    assert unsupported(model, [Rule(L1())], PathConfig(train_config=TrainConfig(optimizer="sgd")), 400).startswith(
        "train_config (an estimator's optimizer=) uses optimizer 'sgd'"
    )
    assert unsupported(model, [Rule(L1())], PathConfig(dense_config=TrainConfig(optimizer="sgd")), 400).startswith(
        "dense_config (an estimator's fit_config=) uses optimizer 'sgd'"
    )
    assert "dropout" in unsupported(MLP(10, (8,), 1, dropout=0.2), [Rule(L1())], PathConfig(), 400)
    assert "buffers" in unsupported(
        nn.Sequential(nn.Linear(10, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)), [Rule(L1())], PathConfig(), 400
    )
    assert "penalty" in unsupported(
        model, [Rule(HierarchicalLasso(), select=["0.weight", "2.weight"])], PathConfig(), 400
    )

    with pytest.raises(InputError, match="engine='batched' cannot.*mode='gradient'"):
        cross_validate(model, X, y, penalty=L1(), lambdas=(0.1,), cv=2, mode="gradient", engine="batched")
    with pytest.raises(InputError, match="engine"):
        cross_validate(model, X, y, penalty=L1(), cv=2, engine="fast")
    result = cross_validate(model, X, y, penalty=L1(), lambdas=(0.1,), cv=2, mode="gradient", n_jobs=1)
    assert result.engine == "sequential" and "mode='gradient'" in result.engine_note


def test_a_divergence_reruns_sequentially(diabetes):
    """A fit that diverges stops the batched engine; the sequential engine reruns the
    paths and handles the divergence as it always does (here: each λ recorded as
    failed, then the error that no λ is left)."""
    X, y = diabetes
    config = PathConfig(
        lambdas=(0.01, 0.1), on_divergence="skip", train_config=TrainConfig(lr=1e25, batch_size=None, max_epochs=20)
    )
    with pytest.raises(FloatingPointError, match="training diverged at every λ"):
        cross_validate(lambda: MLP(10, (8,), 1), X, y, penalty=L1(), config=config, cv=2, n_jobs=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_follows_the_cpu():
    """The same stacked fits on a GPU: the dense fits stop at the same epochs with the
    same losses; the penalized fits reach the same objective to a few percent."""
    X, y = _standardized(load_breast_cancer, rows=300)
    config = PathConfig(
        lambdas=(1e-3, 1e-2),
        dense_config=TrainConfig(lr=3e-2, batch_size=None, max_epochs=150, patience=5),
        train_config=TrainConfig(lr=1e-2, batch_size=None, max_epochs=150, patience=5, monitor="objective"),
    )
    runs = [
        cross_validate(
            lambda: MLP(30, (16,), 1), X, y, penalty=GroupLasso(), task="binary", config=config, cv=3,
            device=device, engine="batched",
        )
        for device in ("cpu", "cuda")
    ]  # fmt: skip
    for cpu, gpu in zip(runs[0].folds, runs[1].folds):
        assert cpu.dense.epochs == gpu.dense.epochs
        np.testing.assert_allclose(gpu.dense.test_loss, cpu.dense.test_loss, rtol=1e-3)
        for a, b in zip(cpu.points, gpu.points):
            np.testing.assert_allclose(b.train_loss + b.penalty, a.train_loss + a.penalty, rtol=0.05)
    assert runs[1].engine == "batched"


def test_the_cv_estimators_train_batched_by_default(diabetes):
    from shrinkage.estimators import ShrinkageMLPClassifierCV, ShrinkageMLPRegressorCV

    X, y = diabetes
    small = dict(hidden_layer_sizes=(8,), n_lambdas=3, cv=3, max_iter=20, random_state=0)
    assert ShrinkageMLPRegressorCV(**small).fit(X, y).cv_result_.engine == "batched"
    assert ShrinkageMLPRegressorCV(engine="sequential", **small).fit(X, y).cv_result_.engine == "sequential"
    hierarchical = ShrinkageMLPClassifierCV(penalty="hierarchical", **small).fit(X, y > 0)
    assert hierarchical.cv_result_.engine == "sequential" and "penalty" in hierarchical.cv_result_.engine_note
    with pytest.raises(InputError, match="engine must be one of"):
        ShrinkageMLPRegressorCV(engine="fast").fit(X, y)


def test_a_forward_pass_vmap_cannot_batch_falls_back_before_training():
    """Functional dropout is a random operation inside vmap: found by a probe, before any
    training — ``auto`` trains sequentially and says why, ``batched`` refuses."""

    class FunctionalDropout(nn.Module):
        input_parameter = "inner.weight"

        def __init__(self):
            super().__init__()
            self.inner, self.out = nn.Linear(5, 8), nn.Linear(8, 1)

        def forward(self, x):
            return self.out(nn.functional.dropout(torch.relu(self.inner(x)), 0.2, training=self.training))

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5))
    y = X[:, 0] + 0.1 * rng.standard_normal(60)
    result = cross_validate(FunctionalDropout, X, y, penalty=L1(), cv=3, lambdas=(0.01, 0.1), n_jobs=1)
    assert result.engine == "sequential" and "vmap cannot batch" in result.engine_note
    with pytest.raises(InputError, match="engine='batched' cannot train these folds: torch.func.vmap cannot batch"):
        cross_validate(FunctionalDropout, X, y, penalty=L1(), cv=3, lambdas=(0.01, 0.1), engine="batched")


def test_a_batch_norm_model_trains_on_the_sequential_engine():
    """Its output is checked on one row in eval mode (training mode refuses one row)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5))
    y = X[:, 0] + 0.1 * rng.standard_normal(60)

    def model():
        return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))

    result = cross_validate(model, X, y, penalty=L1(), cv=3, lambdas=(0.01, 0.1), n_jobs=1)
    assert result.engine == "sequential" and "buffers" in result.engine_note
    assert np.isfinite(result.scores).all()


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_rows_in_chunks_give_the_one_pass_result(diabetes, monkeypatch, task):
    """Beyond the activation budget the rows go through in chunks whose gradients are
    added (a million rows held gigabytes of activations): the same fits, up to the order
    of float sums. In float64: in float32, Adam and the prox amplify the sums' rounding
    over the epochs (a few percent on one fold of wine after 60 epochs)."""
    from shrinkage import batched

    if task == "regression":
        (X, y), model = diabetes, (lambda: MLP(10, (8,), 1).double())
    else:
        X, y = _standardized(load_wine)
        model = lambda: MLP(13, (8,), 3).double()  # noqa: E731
    config = PathConfig(lambdas=(0.01, 0.05), train_config=TrainConfig(max_epochs=60, batch_size=None))

    def run():
        return cross_validate(model, X, y, task=task, penalty=L1(), config=config, cv=3, engine="batched", n_jobs=1)

    whole = run()
    monkeypatch.setattr(batched, "_ACTIVATION_BUDGET", 4 * 13 * 50)  # chunks of 50 rows or fewer
    chunked = run()
    np.testing.assert_allclose(chunked.scores, whole.scores, rtol=1e-9)
    for a, b in zip(whole.path.points, chunked.path.points):
        assert a.features == b.features and a.epochs == b.epochs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "rules",
    [
        [Rule(L1(0.037))],
        [Rule(L2(0.21))],
        [Rule(ElasticNet(0.3, l1_ratio=0.3))],
        [Rule(L1(0.05), select="0.weight"), Rule(L2(0.7), select="2.weight")],
    ],
    ids=["l1", "l2", "elasticnet", "l1 and l2"],
)
def test_the_element_wise_prox_on_the_flat_stack_is_each_penaltys_prox_bit_for_bit(rules, dtype):
    from shrinkage.batched import _Stack, _Terms

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(7, 13), nn.ReLU(), nn.Linear(13, 5), nn.Tanh(), nn.Linear(5, 1)).to(dtype)
    states = [{k: v + 0.1 * torch.randn_like(v) for k, v in net.state_dict().items()} for _ in range(4)]
    stack = _Stack(net, states, "cpu")
    terms = _Terms(stack, rules)
    assert terms.coefficients is not None  # the flat path runs
    weights, steps = stack.flat.detach() * 3, torch.rand_like(stack.flat.detach()) * 0.2
    flat = weights.clone()
    terms.prox_(flat, steps)
    each = weights.clone()
    params, per_entry = stack.views(each), stack.views(steps)
    for penalty, names, layouts in terms.terms:
        penalty.prox_([params[n] for n in names], layouts, step=[per_entry[n] for n in names])
    assert torch.equal(flat, each)
    assert (flat == 0).any() == any(not isinstance(rule.penalty, L2) for rule in rules)  # L1's exact zeros


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "rules",
    [
        [Rule(GroupLasso(3.0), select="0.weight"), Rule(GroupLasso(2.0, groups="unit"), select="2.weight")],
        [Rule(SparseGroupLasso(3.0, l1_ratio=0.3), select="0.weight"), Rule(L1(0.2), select="4.weight")],
        [Rule(GroupLasso(2.0, groups=[[0, 1, 2], [3, 4, 5, 6]]), select="0.weight")],
        [Rule(SparseGroupLasso(0.3, l1_ratio=1.0), select="0.weight")],
        [Rule(GroupLasso(4.0, groups="unit"))],  # one term's three tensors: three parts in one kernel call
    ],
    ids=[
        "input and unit groups",
        "sparse group and l1",
        "groups of columns",
        "sparse group all l1",
        "parts of one term",
    ],
)
def test_the_group_prox_and_values_on_the_flat_stack_are_each_penaltys(rules, dtype):
    """The stack's group proxes (the Numba kernels on the flat tensors' parts, where they
    run) and penalty values (a Numba kernel or NumPy on the CPU) against each penalty's own ``prox_`` and
    ``value`` on each model's tensors: column groups and row groups (the kernels' two
    loops), sparse group lasso beside an element-wise term, and user groups (torch's code)."""
    from shrinkage import _numba, batched
    from shrinkage.batched import _Stack, _Terms

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(7, 13), nn.ReLU(), nn.Linear(13, 5), nn.Tanh(), nn.Linear(5, 1)).to(dtype)
    states = [{k: v + 0.1 * torch.randn_like(v) for k, v in net.state_dict().items()} for _ in range(4)]
    stack = _Stack(net, states, "cpu")
    terms = _Terms(stack, rules)
    weights, steps = stack.flat.detach() * 3, torch.rand_like(stack.flat.detach()) * 2
    flat = weights.clone()
    terms.prox_(flat, steps)
    each = weights.clone()
    params, per_entry = stack.views(each), stack.views(steps)
    with _numba.unused():  # torch's code: the reference
        for penalty, names, layouts in terms.terms:
            penalty.prox_([params[n] for n in names], layouts, step=[per_entry[n] for n in names])
    assert (each == 0).any() and not torch.equal(each, weights)  # whole groups went, others shrank
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(flat, each, rtol=tolerance, atol=tolerance)
    assert torch.equal(flat == 0, each == 0)
    values = terms.values(flat)
    for k in range(stack.n):
        model = copy.deepcopy(net)
        with torch.no_grad():
            model.load_state_dict({n: v[k] for n, v in stack.views(flat).items()})
        expected = sum(Regularizer(model, rules, mode="proximal").values().values())
        assert values[k].item() == pytest.approx(float(expected), rel=1e-6)
    # the same sums in torch (a GPU's stack): the plain groups' shapes, the others' layouts
    flat64 = flat.double()
    in_torch = sum(
        batched._value_per_model(penalty, flat64[:, a:b].reshape(stack.n, *shape), group)
        for penalty, (a, b), shape, group in terms.pieces
    )
    torch.testing.assert_close(in_torch, values, rtol=1e-12, atol=0)
    with _numba.unused():  # NumPy's sums (a study's processes), where the kernel summed them
        torch.testing.assert_close(_Terms(stack, rules).values(flat), values, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("task", "penalty", "lambda_"),
    [("regression", GroupLasso(), 0.05), ("multiclass", SparseGroupLasso(l1_ratio=0.5), 0.02), ("binary", L1(), 0.0)],
)
def test_a_stacked_points_measures_are_the_paths(task, penalty, lambda_):
    """A point of the stack, from one pass over the shared rows, measures what a path's
    point measures on its model alone (the oracle): ``evaluate``'s mean loss on the
    model's training, validation and test rows, its ``stationarity`` at λ and its
    penalty at λ. Each model with weights of its own, the full-data model without test
    rows; λ = 0 is a dense start's point."""
    from shrinkage import batched
    from shrinkage.path import path_fit, scaled, stationarity
    from shrinkage.splits import kfold
    from shrinkage.train import evaluate

    X, y = _standardized(load_wine)
    y = {"regression": X[:, 0] * 2.0 + 0.1, "multiclass": y, "binary": (y == 0).astype(np.int64)}[task]
    X = X[:, 1:]
    outputs = {"regression": 1, "multiclass": 3, "binary": 1}[task]
    config = PathConfig(val_fraction=0.2, seed=3)
    rules = [Rule(penalty)]
    lead = path_fit(lambda: MLP(12, (7,), outputs).double(), X, y, rules, task, config)
    X_t, y_t = torch.tensor(X), torch.tensor(y)
    everything = batched._Fold(*batched._split(np.arange(len(X)), y, task, config), test=np.array([], dtype=np.int64))
    parts = [everything] + [
        batched._Fold(*batched._split(train, y, task, config), test=test) for train, test in kfold(len(X), 3, seed=0)
    ]
    fit = batched._StackedPathFit(lead, parts, X_t, y_t, config, None)
    with torch.no_grad():
        fit.stack.flat.add_(
            torch.randn(fit.stack.flat.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        )
    loss = fit.loss
    for k, part in enumerate(parts):
        measures = fit._measures(k, lambda_, 0.01)
        model = fit.stack.load_into(copy.deepcopy(fit.models[k]), k)
        reg = Regularizer(model, scaled(rules, lambda_), mode="proximal")
        rows = {name: getattr(part, name) for name in ("train", "val", "test")}
        losses = {name: evaluate(model, X_t[r], y_t[r], loss) if len(r) else np.nan for name, r in rows.items()}
        np.testing.assert_allclose(measures.train_loss, losses["train"], rtol=1e-12)
        np.testing.assert_allclose(measures.val_loss, losses["val"], rtol=1e-12)
        np.testing.assert_allclose(measures.test_loss, losses["test"], rtol=1e-12)  # NaN for the full data's
        expected = stationarity(model, reg, X_t[part.train], y_t[part.train], loss, 0.01)
        np.testing.assert_allclose(measures.stationarity, expected, rtol=1e-12)
        np.testing.assert_allclose(measures.penalty, sum(reg.values().values()), rtol=1e-12)
    assert np.isnan(fit._measures(0, lambda_, 0.01).test_loss) and measures.stationarity > 0


@pytest.mark.parametrize("penalty", [L1(), GroupLasso()], ids=["l1", "group"])
def test_each_model_walks_the_lambdas_at_its_own_pace(diabetes, penalty):
    """In one call over several λ, a model that stops at a λ goes on to the next while
    the others still train at theirs. Each model's phases are the ones it gets trained
    alone, λ after λ (the oracle): the same epochs, the same weights (float64). The
    models do go at different paces. A stop at the lead's third λ ends the walk there:
    the models behind still finish that λ, with the weights they have without the stop,
    and a model ahead has ended one more λ only if it did so before the lead's stop."""
    from shrinkage import batched

    X, y = diabetes
    X_t, target = torch.tensor(X[:200]), torch.tensor(y[:200])[:, None]
    torch.manual_seed(0)
    net = MLP(10, (6,), 1).double()
    sets = [np.arange(0, 200), np.arange(0, 20), np.arange(100, 200, 4)]  # the full rows, and two folds' own
    rows = batched._Rows(train=batched._row_weights(sets, 200, "cpu", torch.float64), val=None, test=None)
    config = TrainConfig(lr=3e-2, batch_size=None, max_epochs=150, patience=5, tol=1e-3, monitor="objective")
    lambdas = [0.003, 0.01, 0.03, 0.1]

    def stack_of(n):
        return batched._Stack(net, [dict(net.named_parameters())] * n, "cpu")

    def walked(stop_at=None):
        stack = stack_of(3)
        ends: dict[int, list[tuple[int, Tensor]]] = {k: [] for k in range(3)}

        def ended(k, phase, result, seconds):
            ends[k].append((result.epochs, stack.flat[k].detach().clone()))
            assert phase == len(ends[k]) - 1 and len(result.val_loss) == result.epochs
            return (k, phase) == stop_at

        terms = batched._Terms(stack, [Rule(type(penalty)(1.0))])
        batched._train(stack, X_t, target, rows, "mse", config, terms, lambdas=lambdas, ended=ended)
        return ends, stack

    together, _ = walked()
    for k in range(3):  # the oracle: model k alone, one λ per call
        alone = stack_of(1)
        one = batched._Rows(train=rows.train[k : k + 1], val=None, test=None)
        for phase, lam in enumerate(lambdas):
            terms = batched._Terms(alone, [Rule(type(penalty)(lam))])
            result = batched._train(alone, X_t, target, one, "mse", config, terms)
            epochs, weights = together[k][phase]
            assert result.epochs[0] == epochs
            torch.testing.assert_close(weights, alone.flat[0].detach(), rtol=1e-9, atol=1e-12)
    # the epoch (0-based, over the whole call) at which each model ended each λ
    when = {k: np.cumsum([epochs + 1 for epochs, _ in together[k]]) - 1 for k in range(3)}
    assert len({tuple(w) for w in when.values()}) == 3  # not in step: each at its own pace

    stopped, stack = walked(stop_at=(0, 2))
    assert len(stopped[0]) == 3
    for k in (1, 2):
        assert when[k][3] != when[0][2]  # (no tie to order)
        assert len(stopped[k]) == (4 if when[k][3] < when[0][2] else 3)
        for phase in range(3):
            torch.testing.assert_close(stopped[k][phase][1], together[k][phase][1])
    torch.testing.assert_close(stack.flat[0].detach(), together[0][2][1])
    if penalty.__class__ is L1:  # this case has a model ahead of the lead
        assert max(len(stopped[k]) for k in (1, 2)) == 4


@pytest.mark.parametrize(
    "penalty",
    [GroupLasso(), SparseGroupLasso(), L1(), ElasticNet(l1_ratio=0.5)],
    ids=["group", "sparse_group", "l1", "elasticnet"],
)
def test_the_stacks_steps_run_through_the_numba_kernels_as_torchs_code(monkeypatch, penalty):
    """With Numba, the stack's Adam step (with an elementwise prox) goes through its
    kernel, and its group proxes and penalty values through theirs (in place on the flat
    stack's parts); under ``_numba.unused()`` (the study) all through torch's code. The
    two make the same cross-validation: the same λ chosen, the same grid and losses to
    rounding. In float64: torch's Adam fuses multiply-adds that the kernel rounds
    separately, and in float32 such a difference can turn an early stop a step earlier,
    then the path after it (a step against torch's, in float32: test_numba.py)."""
    pytest.importorskip("numba")
    from shrinkage import _numba

    X, y = _standardized(load_wine)
    calls: dict[str, list] = {"adam_stack_": [], "stacked_group_prox_": [], "stacked_values": []}
    for name, ran in calls.items():
        kernel = getattr(_numba, name)

        def counted(*args, _kernel=kernel, _ran=ran, **kwargs):
            out = _kernel(*args, **kwargs)
            _ran.append(out is not False)
            return out

        monkeypatch.setattr(_numba, name, counted)

    def run():
        torch.manual_seed(0)
        return cross_validate(
            lambda: MLP(13, (8,), 3).double(),
            X,
            y,
            penalty=penalty,
            task="multiclass",
            cv=3,
            n_lambdas=6,
            engine="batched",
        )

    kernels = run()
    grouped = isinstance(penalty, GroupLasso)
    assert kernels.engine == "batched" and len(calls["adam_stack_"]) > 100 and all(calls["adam_stack_"])
    assert (len(calls["stacked_group_prox_"]) > 100 and all(calls["stacked_group_prox_"])) == grouped
    assert len(calls["stacked_values"]) > 100  # the objective monitored at every epoch
    for ran in calls.values():
        ran.clear()
    with _numba.unused():
        torchs = run()
    assert not any(any(ran) for ran in calls.values())
    np.testing.assert_allclose(kernels.lambdas, torchs.lambdas, rtol=1e-12)
    np.testing.assert_allclose(kernels.lambda_, torchs.lambda_, rtol=1e-12)
    np.testing.assert_allclose(kernels.scores, torchs.scores, rtol=1e-9)

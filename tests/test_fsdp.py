"""FSDP2 (``fully_shard``): two real processes (gloo, CPU, loopback) train a sharded
model with a Regularizer; the gathered weights equal one process trained on the same
global batches, in every mode, with SGD (momentum) and Adam (and AdamW for the decoupled
decay).

Why it holds: ``fully_shard`` replaces each parameter by a DTensor of which each rank
holds a block of rows (``Shard(0)``), and the optimizer steps on those shards with the
reduce-scattered (averaged) gradients. L1, L2 and elastic net act element by element,
so the gradient, the decay and the prox on a shard are those of the whole tensor. In
mode ``loss``, ``reg.penalty()`` is a replicated DTensor holding the global penalty;
its gradient reaches each shard directly (not through the reduce-scatter), once.

Conventions pinned here: the Regularizer is built after ``fully_shard``;
``values()`` is the global penalty, the same on every rank; group penalties on a
sharded tensor are refused. All cases run in one pair of processes (a module fixture),
so the module costs one start-up.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import free_port, make_optimizer, user_loop
from shrinkage import (
    L1,
    L2,
    ElasticNet,
    GroupLasso,
    HierarchicalLasso,
    InputError,
    Regularizer,
    Rule,
    SparseGroupLasso,
    optim,
)
from shrinkage.models import MLP, SkipMLP


def _fsdp_available() -> bool:
    if not dist.is_available() or not dist.is_gloo_available():
        return False
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


pytestmark = [
    pytest.mark.skipif(not _fsdp_available(), reason="torch built without gloo or FSDP2 (fully_shard)"),
    pytest.mark.skipif(sys.platform == "win32", reason="gloo over tcp on loopback"),
    pytest.mark.xdist_group("fsdp"),  # one worker starts the processes once for the module
]

WORLD = 2
STEPS = 10
ROWS = 32  # rows per global batch; each rank takes its half
PENALTIES = {
    "l1": lambda: L1(2e-2),
    "l2": lambda: L2(1e-2),
    "elasticnet": lambda: ElasticNet(2e-2, 0.5),
}
CASES = [  # AdamW(weight_decay=0) steps as Adam does: it joins where the decay is ours
    (penalty, mode, optimizer)
    for penalty in PENALTIES
    for mode in ("loss", "gradient", "proximal", "decoupled")
    if mode != "decoupled" or penalty == "l2"
    for optimizer in ("sgd", "adam", *(("adamw",) if mode == "decoupled" else ()))
]
GROUP_PENALTIES = {
    "group": lambda: GroupLasso(1e-2, groups="input"),
    "sparse_group": lambda: SparseGroupLasso(1e-2, 0.5, groups="unit"),
    "hierarchical": lambda: HierarchicalLasso(1e-2),
}
GROUP_SELECT = {"group": ["0.weight"], "sparse_group": ["0.weight"], "hierarchical": ["body.0.weight", "skip.weight"]}


def _data():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(STEPS, ROWS, 6, generator=g)  # STEPS global batches
    y = X[..., :2].sum(-1, keepdim=True) + 0.1 * torch.randn(STEPS, ROWS, 1, generator=g)
    return X, y


def _sharded(model):
    """FSDP2 as its docs recommend: each layer a unit, then the root."""
    from torch.distributed.fsdp import fully_shard

    for layer in model.modules():
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    return fully_shard(model)


def _plain(tensor):
    """The whole tensor (gathered from every rank when it is a DTensor)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _train(model, penalty, mode, optimizer_name, rows):
    """The user's loop: the Regularizer built on the (sharded) model, then attach."""
    select = "*" if mode == "decoupled" else None  # biases too: AdamW-style decay of everything
    reg = Regularizer(model, Rule(PENALTIES[penalty](), select=select), mode=mode)
    optimizer = make_optimizer(optimizer_name, model.parameters())
    reg.attach(optimizer)
    logged = user_loop(model, reg, optimizer, *_data(), rows)
    return logged, reg


def _flat(model):
    return torch.cat([_plain(p.detach()).flatten() for p in model.parameters()])


def _message(call):
    try:
        call()
    except InputError as error:
        return str(error)
    return None


def _conventions(rank):
    """What a sharded model does with penalties that need whole tensors, and with the wrong order."""
    out = {}
    for name, penalty in GROUP_PENALTIES.items():
        torch.manual_seed(0)
        model = _sharded(SkipMLP(6, (8,)) if name == "hierarchical" else MLP(6, (8,)))
        select = GROUP_SELECT[name]
        parameters = dict(model.named_parameters())
        named = [(n, parameters[n]) for n in select]
        out[name] = {
            "placements": str(named[0][1].placements),
            "check": _message(lambda penalty=penalty, named=named: optim.check_not_sharded(penalty(), named)),
            "regularizer": _message(
                lambda penalty=penalty, model=model, select=select: Regularizer(model, Rule(penalty(), select=select))
            ),
        }
    torch.manual_seed(0)
    model = _sharded(MLP(6, (8,)))
    out["elementwise_passes"] = _message(lambda: optim.check_not_sharded(L1(1e-2), list(model.named_parameters())))

    # the wrong order: a Regularizer built before fully_shard holds the replaced tensors
    torch.manual_seed(0)
    model = MLP(6, (8,))
    early = Regularizer(model, L1(1e-2))
    _sharded(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out["order_check"] = _message(lambda: optim.check_parameters_current(model, early.named_parameters()))
    out["order_attach"] = _message(lambda: early.attach(optimizer))
    out["order_right"] = _message(
        lambda: optim.check_parameters_current(model, Regularizer(model, L1(1e-2)).named_parameters())
    )
    return out


def _worker(rank, port, folder):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        half = ROWS // WORLD
        results = {}
        for case in CASES:
            torch.manual_seed(0)
            model = _sharded(MLP(6, (8,)))
            logged, reg = _train(model, *case, rows=slice(rank * half, (rank + 1) * half))
            with torch.no_grad():
                penalty = reg.penalty()
                shard = reg.terms[0].penalty.value([p.to_local() for p in reg.parameters()])
            results[case] = {
                "params": _flat(model),
                "logged": logged,
                "penalty_type": type(penalty).__name__,
                "penalty": float(_plain(penalty)),
                "shard_value": float(shard),  # this rank's shard alone
                "sparsity": reg.sparsity().to_dict(),  # gathered from every rank: a collective
            }
        results["conventions"] = _conventions(rank)
        everyone = [None] * WORLD
        dist.all_gather_object(everyone, results)
        if rank == 0:
            torch.save(everyone, f"{folder}/results.pt")
        dist.barrier()  # both ranks are done communicating before either tears down
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory):
    """Every case, trained once by two FSDP processes: one result dict per rank."""
    folder = tmp_path_factory.mktemp("fsdp")
    mp.spawn(_worker, args=(free_port(), str(folder)), nprocs=WORLD, join=True)
    return torch.load(folder / "results.pt", weights_only=False)


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_fsdp_equals_one_process(sharded_runs, case):
    ranks = [r[case] for r in sharded_runs]
    torch.manual_seed(0)
    single = MLP(6, (8,))
    single_logged, single_reg = _train(single, *case, rows=slice(None))  # the same global batches, one process
    expected = _flat(single)
    for result in ranks:  # the gathered weights, as each rank sees them
        torch.testing.assert_close(result["params"], expected, rtol=0, atol=1e-6)
    if case[1] == "proximal" and case[0] != "l2":
        zeros = ranks[0]["params"] == 0
        assert zeros.any()  # exact zeros, in the same places as one process's
        assert torch.equal(zeros, expected == 0)
    # sparsity(): the whole tensors' zeros and the features still used, as one process counts them
    expected_report = single_reg.sparsity().to_dict()
    for result in ranks:
        assert result["sparsity"]["features_used"] == expected_report["features_used"]
        assert result["sparsity"]["numel"] == expected_report["numel"]
        assert result["sparsity"]["zeros"] == expected_report["zeros"]
    # values(): the global penalty, the same on every rank, as one process logs it
    assert ranks[0]["logged"] == ranks[1]["logged"]
    assert ranks[0]["logged"] == pytest.approx(single_logged, rel=1e-6)


def test_penalty_is_a_plain_tensor_of_the_global_value(sharded_runs):
    for case in CASES:
        first, second = (r[case] for r in sharded_runs)
        assert first["penalty_type"] == "Tensor"  # added to the plain loss as it is
        assert first["penalty"] == second["penalty"] == pytest.approx(first["logged"][-1], rel=1e-6)
        # one rank's shard alone gives a part of it; the parts sum to it (the all-reduce inside)
        assert first["shard_value"] + second["shard_value"] == pytest.approx(first["penalty"], rel=1e-6)
        assert 0 < first["shard_value"] < first["penalty"]


@pytest.mark.parametrize("name", list(GROUP_PENALTIES))
def test_group_penalty_on_a_sharded_tensor_is_refused(sharded_runs, name):
    cls = type(GROUP_PENALTIES[name]()).__name__
    tensor = "body.0.weight" if name == "hierarchical" else "0.weight"
    for rank in sharded_runs:
        seen = rank["conventions"][name]
        assert seen["placements"] == "(Shard(dim=0),)"
        message = (
            f"{cls} needs whole tensors, but '{tensor}' is sharded (a DTensor with placements (Shard(dim=0),)): "
            "each rank would compute its groups' norms over its own shard. Use L1, L2 or ElasticNet on sharded "
            "tensors, or DistributedDataParallel (whole tensors on every rank) for this penalty"
        )
        assert seen["check"] == message
        assert seen["regularizer"] == message  # Regularizer(...) refuses it when binding


def test_elementwise_penalty_on_a_sharded_tensor_passes(sharded_runs):
    assert all(rank["conventions"]["elementwise_passes"] is None for rank in sharded_runs)


def test_regularizer_built_before_fully_shard_is_refused(sharded_runs):
    for rank in sharded_runs:
        seen = rank["conventions"]
        assert seen["order_check"] == (
            "parameter '0.weight' is no longer the model's: it was replaced after the Regularizer was built "
            "(fully_shard replaces parameters with DTensors). Build the Regularizer after fully_shard, "
            "load_state_dict(assign=True) or any other replacement of the parameters"
        )
        assert seen["order_attach"] == seen["order_check"]  # attach refuses it, in every mode
        assert seen["order_right"] is None  # built after fully_shard: its tensors are the model's


def test_checks_pass_unsharded_tensors():
    model = MLP(6, (8,))
    named = list(model.named_parameters())
    optim.check_not_sharded(GroupLasso(1e-2), named)
    optim.check_parameters_current(model, named)

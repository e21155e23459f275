"""Folds on a real Dask cluster (separate worker processes, loopback only) through
joblib's Dask backend: exactly the local results, for cross_validate and for
``shrinkage study --cluster``."""

from __future__ import annotations

import json
import sqlite3

import joblib
import numpy as np
import pytest
from click.testing import CliRunner

distributed = pytest.importorskip("distributed", reason="Dask is the optional extra shrinkage[distributed]")

from shrinkage import GroupLasso  # noqa: E402
from shrinkage.cv import cross_validate  # noqa: E402
from shrinkage.models import MLP  # noqa: E402
from shrinkage.study.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        yield cluster


def test_cross_validation_on_the_cluster_equals_local(cluster, rng):
    X = rng.standard_normal((120, 6))
    y = np.tanh(X[:, 0]) + X[:, 1] + 0.1 * rng.standard_normal(120)
    # (relaxed refits on the cluster: the study test below has them)
    common = dict(penalty=GroupLasso(groups="input"), cv=3, n_lambdas=4, lambda_min_ratio=0.05, seed=3)
    local = cross_validate(lambda: MLP(6, (4,)), X, y, n_jobs=1, engine="sequential", **common)
    with (
        distributed.Client(cluster) as client,
        distributed.get_task_stream(client) as tasks,
        joblib.parallel_config(backend="dask"),
    ):
        remote = cross_validate(lambda: MLP(6, (4,)), X, y, **common)
    # engine="auto" leaves the folds to the cluster rather than batching them here
    assert remote.engine == "sequential" and "DaskDistributedBackend" in remote.engine_note
    workers = {task["worker"] for task in tasks.data}
    assert len(tasks.data) >= 3 and workers <= set(cluster.scheduler_info["workers"])  # the folds ran there
    np.testing.assert_array_equal(remote.scores, local.scores)  # bit for bit
    assert remote.lambda_1se == local.lambda_1se and remote.selected_features == local.selected_features
    for a, b in zip(remote.model.parameters(), local.model.parameters()):
        assert np.array_equal(a.detach().numpy(), b.detach().numpy())


def _runs(store):
    with sqlite3.connect(store) as db:
        return db.execute(
            "SELECT penalty, lambdas, cv_mean, cv_se, lambda_chosen, test_loss, features FROM runs ORDER BY penalty"
        ).fetchall()


def test_study_on_the_cluster_equals_local(cluster, tmp_path):
    args = [
        "study",
        "--penalties",
        "none,l1",
        "--hidden",
        "4",
        "--cv",
        "3",
        "--n-lambdas",
        "3",
        "--quiet",
        "--no-report",
    ]
    local = CliRunner().invoke(main, [*args, "--n-jobs", "1", "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    remote = CliRunner().invoke(main, [*args, "--cluster", cluster.scheduler_address, "--out", str(tmp_path / "dask")])
    assert remote.exit_code == 0, remote.output
    # locally the folds train as one stacked network, on the cluster one path each: the same
    # runs up to float rounding (same grid, λ chosen and features; losses to 1e-5)
    for there, here in zip(_runs(tmp_path / "dask" / "results.sqlite"), _runs(tmp_path / "local" / "results.sqlite")):
        assert (there[0], there[1], there[4], there[6]) == (here[0], here[1], here[4], here[6])
        for a, b in zip((there[2], there[3], there[5]), (here[2], here[3], here[5])):
            np.testing.assert_allclose(
                json.loads(a) if isinstance(a, str) else a, json.loads(b) if isinstance(b, str) else b, rtol=1e-5
            )


def test_unreachable_cluster_is_a_one_line_error(tmp_path, monkeypatch):
    from shrinkage.study import cli

    monkeypatch.setattr(cli, "_CONNECT_TIMEOUT", "1s")  # (10 s for a user; nothing answers at port 9)
    result = CliRunner().invoke(
        main, ["study", "--cluster", "tcp://127.0.0.1:9", "--quiet", "--out", str(tmp_path / "o"), "--cv", "2"]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "shrinkage: error: --cluster: no Dask scheduler answers at 'tcp://127.0.0.1:9' (OSError)"
    )

"""The main job: what a study stores, on data with known truth."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from shrinkage.study import StudyConfig
from shrinkage.study.report import build_report
from shrinkage.study.runner import _longest_first, _Queue, run_study
from shrinkage.study.store import Store

KEYS = ("penalty", "lambdas", "cv_mean", "lambda_chosen", "test_loss", "features", "weights", "engine")


def test_sparse_penalties_keep_exactly_the_true_features(truth_study):
    with Store(truth_study["store"], create=False) as store:
        runs = {run["penalty"]: run for run in store.runs(truth_study["study"])}
    assert set(runs) == {"none", "l1", "l2", "group"}
    for name in ("l1", "group"):  # the stored selection at λ_1se
        assert runs[name]["features"] == truth_study["truth"], name
        assert runs[name]["lambda_chosen"] == runs[name]["lambda_1se"] >= runs[name]["lambda_min"]
        assert runs[name]["fraction_zero"] > 0.5
    assert runs["none"]["features"] == truth_study["columns"]  # no penalty keeps all, colour included
    assert runs["l2"]["fraction_zero"] == 0.0
    assert runs["group"]["test_score"] > 0.9 and runs["group"]["test_score"] > runs["none"]["test_score"]


def test_every_fold_and_lambda_is_stored(truth_study):
    with Store(truth_study["store"], create=False) as store:
        for run in store.runs(truth_study["study"]):
            points = store.points(run["id"])
            folds = {p["fold"] for p in points}
            assert folds == {-1, 0, 1, 2, 3, 4}, run["penalty"]
            if run["penalty"] != "none":
                full = [p for p in points if p["fold"] == -1 and p["idx"] >= 0]
                assert [p["lambda"] for p in full] == run["lambdas"]
                assert all(len(p["feature_norms"]) == 49 + 3 for p in full)  # 49 numeric, 3 one-hot columns
                for fold in range(5):
                    assert len([p for p in points if p["fold"] == fold]) == len(run["lambdas"])


def test_each_run_records_the_engine_that_trained_it(truth_study):
    with Store(truth_study["store"], create=False) as store:
        runs = store.runs(truth_study["study"])
    assert {run["penalty"]: (run["engine"], run["engine_note"]) for run in runs} == {
        name: ("batched", "") for name in ("none", "l1", "l2", "group")
    }
    assert "engine" in truth_study["report"].read_text()


def test_a_penalty_the_batched_engine_cannot_train_says_so(tmp_path):
    config = StudyConfig(dataset="diabetes", penalties=("hierarchical",), n_lambdas=3, cv=2)
    with Store(tmp_path / "s.sqlite") as store:
        (run,) = store.runs(run_study(config, store, progress=False))
        report = build_report(store, path=tmp_path / "report.html").read_text()
    assert run["engine"] == "sequential" and "HierarchicalLasso" in run["engine_note"]
    assert "hierarchical: sequential (penalty" in report


def test_penalties_trained_in_several_processes_give_the_same_study(tmp_path):
    """n_jobs=2: this process trains penalties from the front, a worker from the back."""
    config = StudyConfig(dataset="diabetes", penalties=("none", "l1", "l2"), n_lambdas=3, cv=2, relax=False)
    stored = {}
    for jobs in (1, 2):
        with Store(tmp_path / f"{jobs}.sqlite") as store:
            seen = []
            study = run_study(replace(config, n_jobs=jobs), store, progress=False, on_run=seen.append)
            assert [r["penalty"] for r in seen] == ["none", "l1", "l2"]  # reported in the study's order
            stored[jobs] = [{k: r[k] for k in KEYS} for r in store.runs(study)]
    for one, two in zip(stored[1], stored[2], strict=True):
        np.testing.assert_array_equal(one.pop("weights"), two.pop("weights"))
        assert one == two


def test_the_queue_hands_out_each_index_once_in_its_order():
    queue = _Queue([2, 0, 1])
    assert [queue.take(), queue.take()] == [2, 0]
    queue.close()
    assert queue.take() is None


def test_penalties_are_queued_longest_first_in_a_stable_order():
    pending = ["none", "l1", "l2", "elasticnet", "group", "sparse_group"]
    assert [pending[i] for i in _longest_first(pending)] == ["group", "sparse_group", "l1", "elasticnet", "l2", "none"]


def test_running_the_same_study_again_resumes_it(truth_study):
    with Store(truth_study["store"]) as store:
        before = store.runs(truth_study["study"])
        again = run_study(truth_study["config"], store, progress=False)  # everything stored: nothing to do
        assert again == truth_study["study"]
        assert [r["id"] for r in store.runs(again)] == [r["id"] for r in before]
        assert store.study(again)["status"] == "complete"


def test_missing_values_are_counted_over_all_rows(tmp_path):
    """Imputed cells are counted over the whole table (the imputer itself learns on the
    training rows); with missing='error' the refusal counts the same cells."""
    import numpy as np
    import pandas as pd
    import pytest

    from shrinkage.study import StudyConfig
    from shrinkage.study.runner import prepare_study
    from shrinkage.validation import InputError

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=40), "city": rng.choice(["x", "y"], 40), "y": rng.normal(size=40)})
    frame.loc[::4, "a"] = np.nan  # 10 cells, in training and test rows alike
    frame.loc[[1, 2], "city"] = None
    frame.to_csv(tmp_path / "m.csv", index=False)
    prepared = prepare_study(StudyConfig(data=str(tmp_path / "m.csv"), target="y"))
    assert prepared.summary["missing"] == {"a": 10, "city": 2}
    assert prepared.summary["n_train"] < 40
    message = (
        "feature columns must have no missing values with missing='error', got 'a' (10), 'city' (2) "
        "(missing cells per column, over all 40 rows)"
    )
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        prepare_study(StudyConfig(data=str(tmp_path / "m.csv"), target="y", missing="error"))


def test_a_column_constant_on_the_training_rows_is_dropped_with_a_note(tmp_path):
    """A column constant on the training rows but not on every row (so reading keeps it)
    is dropped once the rows are split, with a warning and a note, as reading drops one
    constant on every row: encoded it would be 0 on every training row, its weights never
    trained, yet moving the test rows' predictions. The predictor ignores it in new rows;
    the data's fingerprint is the data as read."""
    import numpy as np
    import pandas as pd
    import pytest

    from shrinkage.splits import shuffle_split
    from shrinkage.study import StudyConfig
    from shrinkage.study.runner import _fingerprint, load_table, prepare_study

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40), "y": rng.normal(size=40)})
    config = StudyConfig(data=str(tmp_path / "t.csv"), target="y")
    _, test_rows = shuffle_split(40, config.test_size, config.seed, None)
    frame["flag"] = 0.0
    frame.loc[test_rows, "flag"] = 1.0  # constant on the training rows only
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.warns(
        UserWarning, match=r"dropped 1 column\(s\) constant on the 32 training rows \(not on every row\): flag"
    ):
        prepared = prepare_study(config)
    assert prepared.encoder.feature_names == ["a", "b"]
    assert prepared.preprocessing.ignored == ("flag",)
    assert prepared.table.notes[-1].endswith(": flag")
    assert prepared.summary["fingerprint"] == _fingerprint(load_table(config))
    frame["flag"] = 1.0  # on every row: reading drops it, as before
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.warns(UserWarning, match=r"dropped 1 constant column\(s\): flag"):
        assert prepare_study(config).preprocessing.ignored == ("flag",)


def test_n_jobs_beyond_the_cores_counts_one_process_per_core():
    import os

    from shrinkage.study import StudyConfig

    cores = os.cpu_count() or 1
    assert StudyConfig(dataset="diabetes", n_jobs=1000).jobs("cpu") == cores
    assert StudyConfig(dataset="diabetes", n_jobs=1).jobs("cpu") == 1
    assert StudyConfig(dataset="diabetes", n_jobs=-1).jobs("cpu") == -1


def test_hidden_layers_too_large_to_train_are_refused_before_any_is_built():
    import pytest

    from shrinkage.study import StudyConfig, prepare_study

    with pytest.raises(
        ValueError, match=r"hidden must give a network this machine can train, got 100000,100000: 1e\+10"
    ):
        prepare_study(StudyConfig(dataset="diabetes", hidden=(100000, 100000)))


def test_an_encoding_too_large_for_memory_is_refused_naming_the_widest_column(tmp_path, monkeypatch):
    """A text column with very many levels (not an identifier: each level in several rows)
    one-hot over very many rows; here the machine's memory is made small instead."""
    import numpy as np
    import pandas as pd
    import pytest

    from shrinkage.study import StudyConfig, prepare_study, runner

    rng = np.random.default_rng(0)
    rows = 600
    frame = pd.DataFrame(
        {"city": [f"c{i % 200}" for i in range(rows)], "x": rng.normal(size=rows), "y": rng.normal(size=rows)}
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    config = StudyConfig(data=str(tmp_path / "t.csv"), target="y")
    assert prepare_study(config).X_train.shape[1] == 201  # kept: a level in three rows each
    monkeypatch.setattr(runner, "_machine_memory", lambda: 1_000_000)
    with pytest.raises(
        ValueError,
        match=r"the encoded data must fit in this machine's memory: 201 encoded columns \(column 'city' alone "
        r"is 200, one per level\) over 600 rows need about 0.00338 GB, and this machine has 0.001 GB "
        r"\(drop the column, or group its rare levels\)",
    ):
        prepare_study(config)


def test_a_column_too_large_to_standardize_is_named(tmp_path):
    import numpy as np
    import pandas as pd
    import pytest

    from shrinkage.study import StudyConfig, prepare_study

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=40), "h": rng.normal(size=40) * 1e300, "y": rng.normal(size=40)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=r"column 'h' is too large to standardize \(its numbers overflow float64"):
        prepare_study(StudyConfig(data=str(tmp_path / "t.csv"), target="y"))


def test_too_few_rows_for_the_split_and_the_folds_is_one_clear_error(tmp_path):
    import pandas as pd
    import pytest

    from shrinkage.study import StudyConfig, prepare_study

    pd.DataFrame({"a": [1.0, 2, 3, 4], "b": [2.0, 3, 1, 4], "y": [3.5, 5.1, 4.2, 8.3]}).to_csv(tmp_path / "four.csv")
    config = StudyConfig(data=str(tmp_path / "four.csv"), target="y", cv=2)
    with pytest.raises(ValueError, match=r"at least 10 rows for a test split of 0.2 and 2 folds, got 4"):
        prepare_study(config)


def test_a_target_near_float64s_largest_numbers_is_standardized():
    import numpy as np
    import pandas as pd

    from shrinkage.study.runner import _mean_and_scale
    from shrinkage.study.tabular import Table

    y = np.array([1.0, -2.0, 3.0, 0.5]) * 1e300
    table = Table(pd.DataFrame({"a": range(4)}), pd.Series(y, name="y"), "t", "regression")
    mean, scale = _mean_and_scale(y, table)
    np.testing.assert_allclose([mean, scale], [np.mean(y / 1e300) * 1e300, np.std(y / 1e300) * 1e300], rtol=1e-12)
    assert np.isfinite((y - mean) / scale).all()

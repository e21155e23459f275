"""The main job: what a study stores, on data with known truth."""

from __future__ import annotations

import re

from shrinkage.study import StudyConfig
from shrinkage.study.report import build_report
from shrinkage.study.runner import run_study
from shrinkage.study.store import Store


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

"""The HTML report: every plot present, numbers as stored, user strings escaped, and it
renders in a real (headless) browser without errors."""

from __future__ import annotations

import base64
import itertools
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest

from shrinkage.study.report import build_report
from shrinkage.study.store import Store


class _Parse(HTMLParser):
    def __init__(self):
        super().__init__()
        self.figures, self.images, self.cells, self.links = [], [], {}, []
        self._row, self._field, self._text = None, None, ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure":
            self.figures.append(attrs.get("id"))
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("a", "link", "script", "iframe"):
            self.links.append((tag, attrs))
        if tag == "tr" and "data-pruned" in attrs:
            self._row = "pruned:" + attrs["data-pruned"]
            self.cells[self._row] = {}
        if tag == "tr" and "data-penalty" in attrs:
            self._row = attrs["data-penalty"]
            self.cells[self._row] = {}
        if tag == "td" and self._row and "data-field" in attrs:
            self._field, self._text = attrs["data-field"], ""

    def handle_data(self, data):
        if self._field:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "td" and self._field:
            self.cells[self._row][self._field] = self._text.strip()
            self._field = None
        if tag == "tr":
            self._row = None


def _parsed(path):
    parser = _Parse()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_every_plot_is_present_and_is_an_inline_png(truth_study):
    report = _parsed(truth_study["report"])
    expected = {"features-kept", "geometry", "geometry-track"}
    for penalty in ("l1", "l2", "group"):
        expected |= {f"cv-{penalty}", f"path-{penalty}", f"sparsity-{penalty}", f"fit-{penalty}"}
    expected |= {f"weights-{p}" for p in ("none", "l1", "l2", "group")}
    assert set(report.figures) == expected
    assert len(report.images) == len(expected)
    for src in report.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.links == []  # self-contained: no scripts, links or frames


def test_numbers_match_the_store(truth_study):
    report = _parsed(truth_study["report"])
    with Store(truth_study["store"], create=False) as store:
        runs = store.runs(truth_study["study"])
        store_points = {run["id"]: store.points(run["id"]) for run in runs}
    assert {name for name in report.cells if not name.startswith("pruned:")} == {run["penalty"] for run in runs}
    for run in runs:
        cells = report.cells[run["penalty"]]
        assert cells["lambda_chosen"] == f"{run['lambda_chosen']:.4g}"
        assert cells["lambda_1se"] == f"{run['lambda_1se']:.4g}"
        assert cells["cv_loss"] == f"{run['cv_loss']:.4f} ± {run['cv_loss_se']:.4f}"
        assert cells["test_score"] == f"{run['test_score']:.4f}"
        assert cells["fraction_zero"] == f"{100 * run['fraction_zero']:.1f}%"
        assert cells["features"].endswith(", ".join(run["features"]))
        # the penalized fit at the chosen λ: its full-data path point's stationarity, as stored
        at = [p for p in store_points[run["id"]] if p["fold"] == -1 and p["lambda"] == run["lambda_chosen"]]
        assert len(at) == 1 and cells["stationarity"] == f"{at[0]['stationarity']:.2g}"
        assert 0 <= at[0]["stationarity"] < 1  # a number a reader can act on, not NaN


def test_the_report_says_how_each_grid_was_adapted(truth_study):
    from html import escape

    html = truth_study["report"].read_text(encoding="utf-8")
    with Store(truth_study["store"], create=False) as store:
        runs = store.runs(truth_study["study"])
    notes = [(run["penalty"], note) for run in runs for note in run["grid_notes"] or ()]
    assert notes  # (a network's automatic grid is adapted: its λ_max is a bound)
    assert all(run["grid_notes"] is None for run in runs if run["penalty"] == "none")
    for penalty, note in notes:
        assert f'<li data-penalty="{penalty}"><b>{penalty}</b>: {escape(note)}</li>' in html


def test_user_strings_are_escaped(truth_study):
    html = truth_study["report"].read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html and "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the column, shown as text
    assert "data &lt;b&gt;&amp;.csv" in html and "<b>&" not in html  # the file name too


def test_report_rebuilds_from_the_store_alone(truth_study, tmp_path):
    with Store(truth_study["store"], create=False) as store:
        again = build_report(store, truth_study["study"], tmp_path / "again.html")
    assert again.read_text(encoding="utf-8") == truth_study["report"].read_text(encoding="utf-8")


def _chrome(tmp_path):
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip(
            "headless Chromium is not installed and could not be (make test installs Debian's chromium "
            "and chromium-driver with apt-get, which needs root and the Debian mirror)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chrome'}",
        "--window-size=1280,2000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def test_report_renders_in_headless_chromium(truth_study, tmp_path):
    browser = _chrome(tmp_path)
    try:
        browser.get(truth_study["report"].resolve().as_uri())
        assert browser.title.startswith("shrinkage study")
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        assert len(images) == len(_parsed(truth_study["report"]).images)
        assert all(complete and width > 100 and height > 100 for complete, width, height in images)
        errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        text = browser.find_element("id", "results").text
        assert re.search(r"group\s", text) and "x0, x1, x2, x3, x4" in text
    finally:
        browser.quit()


def test_pruned_sizes_follow_the_kept_features(truth_study):
    """The size table: the chosen model keeps as many inputs as the run selected, and
    the sparse penalties' pruned models are smaller than the dense ones."""
    report = _parsed(truth_study["report"])
    with Store(truth_study["store"], create=False) as store:
        runs = {run["penalty"]: run for run in store.runs(truth_study["study"])}
        encoded = store.study(truth_study["study"])["data"]["encoded_features"]
    assert {name for name in report.cells if name.startswith("pruned:")} == {f"pruned:{p}" for p in runs}
    for penalty, run in runs.items():
        cells = report.cells[f"pruned:{penalty}"]
        kept, total = (int(v) for v in cells["inputs"].split(" / "))
        columns_kept = [name for name in encoded if name.split("=")[0] in run["features"]]  # colour=red, …
        assert kept == len(columns_kept) and total == len(encoded) == len(truth_study["columns"]) + 2
        before, after = (int(v) for v in cells["model_params"].split(" → "))
        assert (after < before) == (penalty in ("l1", "group")), (penalty, before, after)


def test_the_table_says_which_model_each_number_describes(truth_study):
    """The runner scores the relaxed refit of a penalty that makes zeros (the study relaxes by
    default), the penalized fit of L2, the unpenalized fit of none; weights = 0 is the penalized fit's."""
    report = _parsed(truth_study["report"])
    models = {penalty: report.cells[penalty]["model"] for penalty in ("none", "l1", "l2", "group")}
    assert models == {"none": "unpenalized fit", "l1": "relaxed refit", "l2": "penalized fit", "group": "relaxed refit"}
    html = " ".join(truth_study["report"].read_text(encoding="utf-8").split())
    assert (
        '<th colspan="4">the chosen model, at the chosen λ</th> <th colspan="3">the penalized fit at the chosen λ</th>'
        in html
    )
    assert "<b>weights = 0</b> is the share of the weight matrices (not the biases) of the penalized fit" in html


def test_configuration_names_the_file_studied_and_the_device(truth_study):
    html = truth_study["report"].read_text(encoding="utf-8")
    config = html[html.index('<table id="config">') :]
    path = str(truth_study["config"].data).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert f"<code>{path} (600 rows × 50 feature columns, target y)</code>" in config
    assert 'data-option="dataset"' not in config and 'data-option="target"' not in config
    assert '<tr data-option="device"><th>device</th><td class="text"><code>cpu</code>' in config
    assert '<th>n_jobs</th><td class="text"><code>2</code>' in config


def _small_store(path, config: dict, data: dict) -> Store:
    """A store with one unpenalized run, written by hand: what the report reads, nothing trained."""
    store = Store(path)
    base = {"name": "t.csv", "task": "regression", "n_samples": 10, "n_train": 8, "n_test": 2}
    base |= {"columns": ["a", "b"], "encoded_features": ["a", "b"], "groups": [[0], [1]], "notes": []}
    base |= {"classes": None, "true_features": None, "target_scale": [0.0, 1.0]}
    study = store.add_study(key="k", name="t.csv", config=config, data=base | data)
    run = {"penalty": "none", "rules": [], "lambdas": [0.0], "cv_mean": [1.0], "cv_se": [0.1], "admissible": [True]}
    run |= {"lambda_min": 0.0, "lambda_1se": 0.0, "lambda_chosen": 0.0, "selection": "1se", "cv_loss": 1.0}
    run |= {"cv_loss_se": 0.1, "test_loss": 1.0, "test_score": 0.5, "fraction_zero": 0.0, "features": ["a", "b"]}
    store.add_run(study, run | {"n_features": 2, "weights": np.ones(4), "seconds": 1.0}, [])
    return store


def test_missing_values_are_counted_over_all_rows_and_the_device_used_is_shown(tmp_path):
    config = {"dataset": "diabetes", "data": None, "target": None, "selection": "1se", "relax": True}
    config |= {"n_jobs": None, "device": "auto", "task": "auto"}
    data = {"missing": {"a": 3, "b": 1}, "device": "cuda", "task": "regression"}
    with _small_store(tmp_path / "s.sqlite", config, data) as store:
        html = " ".join(build_report(store, path=tmp_path / "r.html").read_text(encoding="utf-8").split())
    assert (
        '<p id="missing">Missing feature values, counted over all 10 rows (training and test): a 3, b 1 (4 cells); '
        "imputed with the median of a numeric column or as a level of its own in a categorical one, learned from "
        "the 8 training rows only.</p>"
    ) in html
    assert '<th>dataset</th><td class="text"><code>diabetes (10 rows × 2 feature columns)</code>' in html
    assert '<th>device</th><td class="text"><code>auto (used: cuda)</code>' in html
    assert '<th>task</th><td class="text"><code>auto (inferred: regression)</code>' in html
    assert "<code>not given: every core on the CPU (penalties in parallel processes), one on a GPU</code>" in html


@pytest.mark.parametrize(
    "named, shown",
    [([], "read as text: c"), (["c"], "c"), (["b"], "b and read as text: c")],
)
def test_the_configuration_names_the_categorical_columns_found_as_text(tmp_path, named, shown):
    # a text column is one-hot encoded ("c=x", "c=y") whether named or not
    config = {"dataset": None, "data": "t.csv", "target": "y", "categorical": named, "selection": "1se", "relax": True}
    data = {"columns": ["a", "b", "c"], "encoded_features": ["a", "b", "c=x", "c=y"], "groups": [[0], [1], [2, 3]]}
    if named == ["b"]:  # a numeric column named categorical: its codes are levels
        data |= {"encoded_features": ["a", "b=1", "b=2", "c=x", "c=y"], "groups": [[0], [1, 2], [3, 4]]}
    with _small_store(tmp_path / "s.sqlite", config, data) as store:
        html = " ".join(build_report(store, path=tmp_path / "r.html").read_text(encoding="utf-8").split())
    assert f'<th>categorical</th><td class="text"><code>{shown}</code>' in html
    without = {
        "dataset": "diabetes",
        "data": None,
        "target": None,
        "categorical": [],
        "selection": "1se",
        "relax": True,
    }
    with _small_store(tmp_path / "t.sqlite", without, {}) as store:
        html = " ".join(build_report(store, path=tmp_path / "t.html").read_text(encoding="utf-8").split())
    assert '<th>categorical</th><td class="text"><code>none</code>' in html


def test_a_study_stored_before_devices_reads_as_trained_on_the_cpu(tmp_path):
    config = {"dataset": "diabetes", "data": None, "target": None, "selection": "1se", "relax": True, "n_jobs": -1}
    with _small_store(tmp_path / "s.sqlite", config, {}) as store:
        html = build_report(store, path=tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<tr data-option="device"><th>device</th><td class="text"><code>cpu</code>' in html
    assert 'id="missing"' not in html


def _tick_labels(ax):
    """The visible, non-empty λ tick labels inside the axis, as (text, box in pixels), left to right."""
    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    low, high = ax.get_xlim()
    labels = [
        (label.get_text(), label.get_window_extent(renderer))
        for label in ax.xaxis.get_majorticklabels() + ax.xaxis.get_minorticklabels()
        if label.get_visible() and label.get_text() and low <= label.get_position()[0] <= high
    ]
    return sorted(labels, key=lambda item: item[1].x0)


def test_log_lambda_labels_never_overlap():
    """At the report's size, from a grid within a tenth of a decade to one of twelve
    decades: two to five labels, each clear of the next (the issue's grid: 0.032–0.284)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shrinkage.study.report import plots

    for decades in (0.1, 0.4, 0.95, 1.5, 3.0, 5.0, 12.0):
        lambdas = np.geomspace(0.284 / 10**decades, 0.284, 12)
        points = [
            {"fold": -1, "idx": i, "lambda": lam, "n_nonzero": 12 - i, "n_penalized": 12, "n_features": 1}
            | {"feature_norms": [1.0], "train_loss": 1.0, "val_loss": 1.0}
            for i, lam in enumerate(lambdas)
        ]
        run = {"penalty": "l1", "lambdas": lambdas, "cv_mean": np.ones(12), "cv_se": np.ones(12) / 10}
        run |= {"lambda_min": lambdas[3], "lambda_1se": lambdas[6]}
        for draw in (plots.plot_cv_curve, plots.plot_sparsity):  # plot_path and plot_losses share the axis
            fig, ax = plt.subplots(figsize=(5.0, 3.4))  # the report's size
            draw(run, ax) if draw is plots.plot_cv_curve else draw(run, points, ax)
            labels = _tick_labels(ax)
            plt.close(fig)
            assert 2 <= len(labels) <= 5, (decades, draw.__name__, [text for text, _ in labels])
            for (text, box), (after, next_box) in itertools.pairwise(labels):
                assert box.x1 + 5 < next_box.x0, (decades, draw.__name__, text, after)


def test_a_lambda_min_at_the_grids_edge_is_said_in_the_answers():
    from shrinkage.study.report import _answers, _uses_no_input, at_grid_edge

    run = {"penalty": "l1", "rules": [{"penalty": {"name": "l1", "lambda_": 1.0}}], "lambdas": [0.01, 0.1, 1.0]}
    run |= {"lambda_min": 0.01, "lambda_1se": 0.1, "lambda_chosen": 0.1, "cv_loss": 0.5, "cv_loss_se": 0.1}
    run |= {"test_score": 0.5, "n_features": 2, "features": ["a", "b"]}
    assert at_grid_edge(run) and not at_grid_edge(run | {"lambda_min": 0.1})
    assert not at_grid_edge(run | {"lambdas": [0.01]})  # one λ: no edge to speak of
    # the smallest λ tied with λ_min (relaxed refits of one feature set score alike)
    tied = run | {"lambda_min": 0.1, "cv_mean": [0.4, 0.4, 0.6], "admissible": [True, True, True]}
    assert at_grid_edge(tied) and not at_grid_edge(tied | {"admissible": [False, True, True]})
    assert not at_grid_edge(tied | {"cv_mean": [0.5, 0.4, 0.6]})
    which = _answers([run], {"columns": ["a", "b"]}, "R²")["which"]
    assert "At the grid's edge: l1 — the smallest λ tried has the lowest CV loss" in which
    assert "edge" not in _answers([run | {"lambda_min": 0.1}], {"columns": ["a", "b"]}, "R²")["which"]
    # no λ of the grid gives a model that uses any input: the CV curve compares constants
    empty = run | {"lambda_min": 0.1, "cv_mean": [0.5, 0.4, 0.6], "uses_no_input": [True, True, True]}
    assert at_grid_edge(empty) and not at_grid_edge(empty | {"uses_no_input": [False, True, True]})
    which = _answers([empty], {"columns": ["a", "b"]}, "R²")["which"]
    assert "Grid above the data: l1 — no λ tried gives a model that uses any input" in which
    assert "At the grid's edge" not in which
    # read from the full-data path's points, the dense start (idx -1) left out
    points = [{"idx": -1, "features": [0, 1]}, {"idx": 0, "features": []}, {"idx": 1, "features": [1]}]
    assert _uses_no_input(points, 2) == [True, False]
    assert _uses_no_input([*points, {"idx": 2, "features": None}], 3) is None  # a store that does not say
    assert _uses_no_input(points, 3) is None  # a λ of the grid without its point
    assert _uses_no_input([*points, {"idx": 2, "features": [0], "diverged": 1}], 3) == [True, False, True]


def test_the_answers_say_when_there_is_no_unpenalized_run_to_compare_with():
    from shrinkage.study.report import _answers

    run = {"penalty": "l1", "rules": [{"penalty": {"name": "l1", "lambda_": 1.0}}], "lambdas": [0.01, 0.1, 1.0]}
    run |= {"lambda_min": 0.1, "lambda_1se": 0.1, "lambda_chosen": 0.1, "cv_loss": 0.5, "cv_loss_se": 0.1}
    run |= {"test_score": 0.5, "n_features": 2, "features": ["a", "b"]}
    data = {"columns": ["a", "b"]}
    assert _answers([run], data, "R²")["helps"] == (
        "No unpenalized run to compare with (the study's penalties do not include none)."
    )  # it said "No penalized run was made."
    none = run | {"penalty": "none", "rules": [], "cv_loss": 0.9, "test_score": 0.1}
    assert _answers([none], data, "R²")["helps"] == "No penalized run was made."
    assert _answers([none, run], data, "R²")["helps"].startswith("Yes: the best penalized model (l1)")


def test_wide_data_figures_show_the_features_that_matter_not_every_column():
    """10,000 columns: one tick label and one line per column made the report take minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shrinkage.study.report import plots

    columns = [f"c{j}" for j in range(10_000)]
    runs = [
        {"penalty": "l1", "features": ["c3", "c9000"], "lambda_min": 0.1, "lambda_1se": 0.2},
        {"penalty": "l2", "features": columns[:120], "lambda_min": 0.1, "lambda_1se": 0.2},
    ]
    ax = plots.plot_selected_features(runs, columns, truth=["c7"])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(labels) <= plots._MOST + 1 and {"c3", "c9000", "c7"} <= set(labels)
    assert "of 10000 columns" in ax.get_title()
    plt.close("all")
    norms = np.zeros((3, 10_000))
    norms[:, 5000] = [3.0, 2.0, 0.0]  # the one feature that matters
    points = [
        {"fold": -1, "idx": k, "lambda": lam, "feature_norms": list(row)}
        for k, (lam, row) in enumerate(zip([0.1, 0.2, 0.4], norms))
    ]
    ax = plots.plot_path(runs[0], points, columns, highlight=["c7"])
    assert len(ax.get_lines()) <= plots._MOST + 1 + 2  # (+ the λ_min and λ_1se lines)
    assert "c5000" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close("all")


def test_a_report_drawn_partly_in_worker_processes_is_the_same(truth_study, tmp_path):
    from shrinkage.study.workers import Workers

    with Workers(2) as workers, Store(truth_study["store"], create=False) as store:
        assert workers.pool is not None
        again = build_report(store, truth_study["study"], tmp_path / "again.html", pool=workers.pool)
    assert again.read_text(encoding="utf-8") == truth_study["report"].read_text(encoding="utf-8")


def test_a_report_whose_workers_are_gone_is_drawn_here(truth_study, tmp_path):
    from shrinkage.study.workers import Workers

    workers = Workers(2)
    workers.close(finished=False)  # killed: the pool refuses work
    with Store(truth_study["store"], create=False) as store:
        again = build_report(store, truth_study["study"], tmp_path / "again.html", pool=workers.pool)
    assert again.read_text(encoding="utf-8") == truth_study["report"].read_text(encoding="utf-8")


def _size(png: str) -> tuple[int, int]:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(png))).size


def _tight(draw, size) -> str:
    import matplotlib.pyplot as plt

    from shrinkage.study import report

    fig, ax = plt.subplots(figsize=size)
    draw(ax)
    try:
        return report._png(fig)
    finally:
        plt.close(fig)


def _labelled(label: str):
    def draw(ax):
        ax.plot([0.0, 1.0], [0.0, 2.0], label="a line")
        ax.set(title="a title", xlabel="x", ylabel=label)
        ax.legend()

    return draw


@pytest.mark.parametrize("label", ["y", "a very long label " * 12], ids=["fits", "wider than its room"])
def test_a_figure_is_cropped_to_matplotlibs_tight_box(label, monkeypatch):
    """A figure is drawn once, with room around its axes, and cropped to its ink: the
    size matplotlib's ``bbox_inches="tight"`` gives, to a few pixels. A label that reaches
    beyond the room is not cut: that figure, and only that one, gets the tight box itself."""
    from shrinkage.study import report

    draw, size = _labelled(label), (5.0, 3.4)
    tight_boxes = []
    monkeypatch.setattr(report, "_png", lambda fig: tight_boxes.append(fig) or "")
    (cropped,) = report._draw([(draw, (), (), size)])
    monkeypatch.undo()
    if len(label) > 1:
        assert len(tight_boxes) == 1
        (cropped,) = report._draw([(draw, (), (), size)])
    else:
        assert not tight_boxes  # the crop, not the tight box
    tight = _tight(draw, size)
    (width, height), (tight_width, tight_height) = _size(cropped), _size(tight)
    assert abs(width - tight_width) <= 4 and abs(height - tight_height) <= 4
    if len(label) > 1:  # the whole label, far past the room: matplotlib's own figure
        assert cropped == tight and height > 2 * size[1] * report._DPI

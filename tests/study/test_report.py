"""The HTML report: every plot present, numbers as stored, user strings escaped, and it
renders in a real (headless) browser without errors."""

from __future__ import annotations

import base64
import re
import shutil
from html.parser import HTMLParser

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
    assert {name for name in report.cells if not name.startswith("pruned:")} == {run["penalty"] for run in runs}
    for run in runs:
        cells = report.cells[run["penalty"]]
        assert cells["lambda_chosen"] == f"{run['lambda_chosen']:.4g}"
        assert cells["lambda_1se"] == f"{run['lambda_1se']:.4g}"
        assert cells["cv_loss"] == f"{run['cv_loss']:.4f} ± {run['cv_loss_se']:.4f}"
        assert cells["test_score"] == f"{run['test_score']:.4f}"
        assert cells["fraction_zero"] == f"{100 * run['fraction_zero']:.1f}%"
        assert cells["features"].endswith(", ".join(run["features"]))


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

"""The HTML report of a study, built from the results store alone (no retraining).

Self-contained: every plot is an inline PNG, there are no scripts and no external
resources, and every string that came from the user's data (column names, file names,
class labels) is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from shrinkage._files import write_atomically
from shrinkage.penalties import make_penalty
from shrinkage.validation import InputError

from ..store import Store, StoreError

__all__ = ["at_grid_edge", "build_report", "chosen_stationarity", "scored_model"]


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


#: The figures' resolution, and the room (inches) around a figure's axes while it is
#: drawn: its labels, title and legend fit in it, and the PNG is the drawing cropped to
#: its ink, with ``_PAD`` around. One drawing: ``bbox_inches="tight"`` lays a figure out
#: twice to find the same box (30 % of the report's drawing time, measured on a study's 24).
_DPI, _ROOM, _PAD = 96, 1.5, 0.1


def _cropped_png(draw: Callable[..., Any], before: tuple, after: tuple, size: tuple[float, float]) -> str:
    """``draw(*before, ax, *after)`` on axes of ``size`` inches (placed as in a figure of
    that size), as base64 PNG cropped to what it drew; where the drawing reaches the edge
    of its room, matplotlib's tight box instead."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    width, height = size
    room = (width + 2 * _ROOM, height + 2 * _ROOM)
    fig = plt.figure(figsize=room, dpi=_DPI)
    # where plt.subplots puts the axes in a figure of `size`, with the room around
    x0, y0 = (_ROOM + 0.125 * width) / room[0], (_ROOM + 0.11 * height) / room[1]
    ax = fig.add_axes((x0, y0, 0.775 * width / room[0], 0.77 * height / room[1]))
    try:
        draw(*before, ax, *after)
        canvas = fig.canvas
        assert isinstance(canvas, FigureCanvasAgg)  # (_draw chose Agg)
        canvas.draw()
        pixels = np.asarray(canvas.buffer_rgba())
        ink = (pixels != 255).any(-1)
        if not ink.any() or ink[0].any() or ink[-1].any() or ink[:, 0].any() or ink[:, -1].any():
            plt.close(fig)  # nothing drawn, or a drawing past its room: the tight box
            fig, ax = plt.subplots(figsize=size)
            draw(*before, ax, *after)
            return _png(fig)
        rows, columns = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
        pad = round(_PAD * _DPI)
        top, bottom = max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, ink.shape[0])
        left, right = max(columns[0] - pad, 0), min(columns[-1] + 1 + pad, ink.shape[1])
        buffer = io.BytesIO()
        Image.fromarray(pixels[top:bottom, left:right]).save(buffer, format="png")
        return base64.b64encode(buffer.getvalue()).decode("ascii")
    finally:
        plt.close(fig)


#: One figure to draw: ``draw(*before, ax, *after)`` on axes of ``size`` inches. The
#: functions are module-level (plots, geometry) and the arguments plain data, so that a
#: worker process can draw it.
_Job = tuple[Callable[..., Any], tuple, tuple, tuple[float, float]]


def _draw(jobs: list[_Job]) -> list[str]:
    """The figures of ``jobs`` as base64 PNG, in order (in this process or a worker's)."""
    import matplotlib

    matplotlib.use("Agg")

    with warnings.catch_warnings():
        # a column name in a script the plots' font lacks (CJK) is drawn as boxes, with
        # matplotlib's warning for each glyph of each figure: nothing the user can act on
        warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from font", UserWarning)
        return [_cropped_png(*job) for job in jobs]


def _draw_all(jobs: list[_Job], pool: Executor | None) -> list[str]:
    """Every job's figure; with ``pool`` (a study's worker processes, idle once its runs
    are done) every other figure is drawn there while this process draws the rest
    (matplotlib holds the GIL: threads would not help)."""
    if pool is None or len(jobs) < 2:
        return _draw(jobs)
    try:
        remote = pool.submit(_draw, jobs[1::2])
    except RuntimeError:  # a pool shut down or broken (a worker killed): all of them here
        return _draw(jobs)
    here = _draw(jobs[0::2])
    try:
        there = remote.result()
    except Exception:  # the worker lost; a figure that cannot be drawn raises here again
        there = _draw(jobs[1::2])
    out = [""] * len(jobs)
    out[0::2], out[1::2] = here, there
    return out


def _answers(runs: list[dict[str, Any]], data: dict[str, Any], score_name: str) -> dict[str, str]:
    by_name = {run["penalty"]: run for run in runs}
    penalized = [run for run in runs if run["penalty"] != "none"]
    out = {"helps": "No penalized run was made.", "which": "—", "features": "—"}
    if not penalized:
        return out
    best = min(penalized, key=lambda run: run["cv_loss"])
    out["helps"] = "No unpenalized run to compare with (the study's penalties do not include none)."
    if "none" in by_name:
        none = by_name["none"]
        gain = none["cv_loss"] - best["cv_loss"]
        if gain > none["cv_loss_se"]:
            verdict = "Yes"
        elif gain > 0:
            verdict = "A little (within one standard error of no penalty)"
        else:
            verdict = "No: no penalty does as well in cross-validation"
        out["helps"] = (
            f"{verdict}: the best penalized model ({best['penalty']}) has CV loss {best['cv_loss']:.4f} ± "
            f"{best['cv_loss_se']:.4f}, against {none['cv_loss']:.4f} ± {none['cv_loss_se']:.4f} without "
            f"penalty; on the test rows {score_name} {best['test_score']:.4f} against {none['test_score']:.4f}."
        )
    out["which"] = (
        f"{best['penalty']} has the lowest CV loss, at λ = {best['lambda_chosen']:.4g} "
        f"(λ_min = {best['lambda_min']:.4g}, λ_1se = {best['lambda_1se']:.4g})."
    )
    empty = [run["penalty"] for run in penalized if run.get("uses_no_input") is not None and all(run["uses_no_input"])]
    edge = [run["penalty"] for run in penalized if run["penalty"] not in empty and at_grid_edge(run)]
    if edge:
        out["which"] += (
            f" At the grid's edge: {', '.join(edge)} — the smallest λ tried has the lowest CV loss (it is λ_min, "
            "or ties it), so the CV loss may fall further below it (a smaller --lambda-min-ratio extends the grid "
            "down)."
        )
    if empty:
        out["which"] += (
            f" Grid above the data: {', '.join(empty)} — no λ tried gives a model that uses any input, so the CV "
            "loss compares constant predictions (a smaller --lambda-min-ratio extends the grid down)."
        )
    sparse = [run for run in penalized if _sparsifying(run)]
    if sparse:
        n = len(data["columns"])
        each = "; ".join(f"{run['penalty']} keeps {run['n_features']} of {n}" for run in sparse)
        common = [c for c in data["columns"] if all(c in run["features"] for run in sparse)]
        out["features"] = f"{each}. Kept by every sparse penalty: {', '.join(common) or 'none'}" + (
            f" (the true ones: {', '.join(data['true_features'])})." if data.get("true_features") else "."
        )
    return out


def at_grid_edge(run: dict[str, Any]) -> str | None:
    """Why a run's CV loss may fall below its grid (:func:`shrinkage.cv.grid_edge` on the
    store's columns), or None: its smallest λ is λ_min or an admissible λ tied with it,
    or (where ``run["uses_no_input"]`` gives it per λ, from the full-data path's points)
    no λ of the grid gives a model that uses any input."""
    from shrinkage.cv import grid_edge

    lambdas = run.get("lambdas") or []
    at = [i for i, lam in enumerate(lambdas) if lam == run.get("lambda_min")]
    if not at:
        return None
    mean = np.array(run.get("cv_mean") or [np.nan] * len(lambdas), dtype=float)  # (NULL: NaN, never the lowest)
    admissible = run.get("admissible") or [True] * len(lambdas)
    constant = run.get("uses_no_input")
    return grid_edge(lambdas, mean, admissible, at[0], None if constant is None else np.asarray(constant, bool))


def _uses_no_input(path_points: list[dict[str, Any]], n_lambdas: int) -> list[bool] | None:
    """Per λ of the full-data path (dense start left out): whether its model uses no
    input, or diverged (as :func:`shrinkage.cv.cross_validate` counts it); None where the
    points do not say (a store made before features were stored) or miss a λ."""
    full = [p for p in path_points if p["idx"] >= 0]
    if len(full) != n_lambdas or any(p.get("features") is None for p in full):
        return None
    return [not p["features"] or bool(p.get("diverged")) for p in full]


def chosen_stationarity(run: dict[str, Any], full_path: list[dict[str, Any]]) -> float:
    """How far the penalized fit at a run's chosen λ is from a stationary point of its
    objective (:func:`shrinkage.path.stationarity`, stored on every point; NaN for a
    store made before it was measured): read from the full-data path's point there."""
    at = [p for p in full_path if p["lambda"] == run["lambda_chosen"] and p.get("stationarity") is not None]
    return float(at[0]["stationarity"]) if at else math.nan


def _sparsifying(run: dict[str, Any]) -> bool:
    """Whether a run's penalty makes weights exactly zero, as its penalties answer it."""
    return any(make_penalty(rule["penalty"]).sparsifying for rule in run["rules"])


def scored_model(run: dict[str, Any], config: dict[str, Any]) -> str:
    """Which model a run's CV loss and test scores describe, as the runner chose it.

    The runner keeps, and scores, the relaxed refit (retrained without penalty on the
    features the penalized fit at the chosen λ uses) for a penalty that makes exact
    zeros when the study relaxes; otherwise the penalized fit at the chosen λ itself.
    The run's ``weights`` and ``fraction_zero`` always describe the penalized fit.
    """
    if run["penalty"] == "none":
        return "unpenalized fit"
    return "relaxed refit" if config.get("relax", True) and _sparsifying(run) else "penalized fit"


def _configuration(config: dict[str, Any], data: dict[str, Any], runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The Configuration table's rows: the study's options as a reader needs them.

    The data row names what was studied (a file, or a bundled set) with its size, and
    the options that did not apply (``dataset`` beside a file) are left out. The last
    row says which cross-validation engine trained each run (when the store knows).
    """
    shape = f"{data['n_samples']} rows × {len(data['columns'])} feature columns"
    rows: list[tuple[str, str]] = []
    for key, value in config.items():
        if key in ("dataset", "data", "target"):
            if key == "dataset" and config.get("data") is None:
                rows.append(("dataset", f"{value} ({shape})"))
            elif key == "data" and value is not None:
                rows.append(("data", f"{value} ({shape}, target {config.get('target')})"))
        elif key == "task" and value == "auto" and data.get("task"):
            rows.append((key, f"auto (inferred: {data['task']})"))
        elif key == "n_jobs" and value is None:
            rows.append((key, "not given: every core on the CPU (penalties in parallel processes), one on a GPU"))
        elif key == "categorical":
            rows.append((key, _categorical(value or [], data)))
        elif key == "device":
            used = data.get("device", "cpu")
            rows.append((key, value if value == used else f"{value} (used: {used})"))
        elif isinstance(value, (list, tuple)):
            rows.append((key, ", ".join(map(str, value))))
        else:
            rows.append((key, str(value)))
    if "device" not in config:  # a study stored before the option: it trained on the CPU
        rows.append(("device", data.get("device", "cpu")))
    engines = _engines(runs)
    if engines:
        rows.append(("engine", engines))
    return rows


def _categorical(named: list[str], data: dict[str, Any]) -> str:
    """The categorical columns: those named, and those found to hold text, each one-hot
    encoded (a numeric column's one encoded feature keeps its name; a level's is
    ``column=level``)."""
    encoded = data.get("encoded_features", [])
    found = [
        name
        for name, group in zip(data.get("columns", []), data.get("groups", []))
        if any(encoded[j] != name for j in group) and name not in named
    ]
    parts = [", ".join(named)] if named else []
    if found:
        parts.append(f"{'and ' if named else ''}read as text: {', '.join(found)}")
    return " ".join(parts) if parts else "none"


def _engines(runs: list[dict[str, Any]]) -> str:
    """Which engine trained the folds of each run (:func:`~shrinkage.cv.cross_validate`),
    and why not the batched one; empty for a store that did not record it."""
    recorded = [run for run in runs if run.get("engine")]
    if not recorded:
        return ""
    if all(run["engine"] == "batched" for run in recorded) and len(recorded) == len(runs):
        return "batched: the full-data path and the folds trained as one stacked network (every run)"
    parts = []
    for run in runs:
        engine = run.get("engine") or "not recorded"
        note = f" ({run['engine_note']})" if run.get("engine_note") else ""
        parts.append(f"{run['penalty']}: {engine}{note}")
    return "; ".join(parts)


def _pruned_sizes(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parameters and FLOPs of each stored model before and after pruning."""
    from shrinkage.prune import load_model, prune

    rows = []
    for run in runs:
        row = {"penalty": run["penalty"]}
        for key in ("penalized", "model"):
            if run.get(key) is None:
                break
            model, metadata = load_model(bytes(run[key]))
            _, report = prune(model, feature_names=metadata.get("features"), measure=False)
            row[key] = report
        else:
            rows.append(row)
    return rows


#: What the report reads from a study's data summary, and the kind of value each is
_SUMMARY = {"name": str, "task": str, "columns": list, "encoded_features": list}


def _check_summary(store: Store, study_id: int, data: Any) -> None:
    """A study's data summary as the report reads it, else a :class:`StoreError` naming
    what is wrong (a damaged or hand-edited store), never a KeyError."""
    if not isinstance(data, dict):
        raise StoreError(f"store {str(store.path)!r} is damaged: study {study_id}'s data summary is not an object")
    for key, kind in _SUMMARY.items():
        if not isinstance(data.get(key), kind):
            found = "lacks it" if key not in data else f"holds {type(data[key]).__name__}"
            raise StoreError(
                f"store {str(store.path)!r} is damaged: study {study_id}'s data summary must have "
                f"{key!r} ({kind.__name__}), {found}"
            )


def build_report(
    store: Store, study_id: int | None = None, path: str | Path = "report.html", *, pool: Executor | None = None
) -> Path:
    """Write the HTML report of study ``study_id`` (default: the latest) to ``path``.

    ``pool``: worker processes that draw half of the figures (``shrinkage study`` passes
    the ones its runs trained in); the report is the same without.
    """
    from jinja2 import Environment, PackageLoader, select_autoescape

    from shrinkage import __version__

    from ..geometry import plot_geometry, plot_track
    from . import plots

    studies = store.studies()
    if not studies:
        raise InputError(f"store {str(store.path)!r} holds no study yet")
    study = store.study(study_id if study_id is not None else studies[-1]["id"])
    runs = store.runs(study["id"])
    if not runs:
        raise InputError(f"study {study['id']} in {str(store.path)!r} has no finished run yet")
    data, config = study["data"], study["config"]
    _check_summary(store, study["id"], data)
    score_name = "R²" if data["task"] == "regression" else "accuracy"
    for run in runs:
        run["scored"] = scored_model(run, config)
        run.update(
            {
                k: (math.nan if run[k] is None else run[k])
                for k in (
                    "lambda_chosen",
                    "lambda_min",
                    "lambda_1se",
                    "cv_loss",
                    "cv_loss_se",
                    "test_loss",
                    "test_score",
                )
            }
        )
    penalized = [run for run in runs if run["penalty"] != "none"]
    points = {run["id"]: store.points(run["id"]) for run in runs}
    for run in runs:
        path_points = [p for p in points[run["id"]] if p["fold"] == -1]
        if not path_points and run["penalty"] != "none":  # a penalized run stores its path with it
            raise StoreError(
                f"store {str(store.path)!r} is damaged: the {run['penalty']!r} run of study {study['id']} "
                "has no path points (points.run_id must name it)"
            )
        run["stationarity"] = chosen_stationarity(run, path_points)
        run["uses_no_input"] = _uses_no_input(path_points, len(run.get("lambdas") or []))
    names = data["encoded_features"]
    truth = data.get("true_features") or []

    jobs: list[_Job] = []

    def figure_of(
        draw, figid: str, alt: str, *, before: tuple = (), after: tuple = (), size=(5.0, 3.4)
    ) -> dict[str, Any]:
        """A figure ``draw(*before, ax, *after)``, drawn later with the others (its
        ``png`` filled in then)."""
        jobs.append((draw, before, after, size))
        return {"id": figid, "alt": alt, "caption": "", "job": len(jobs) - 1}

    def per_run(slug: str, what: str, draw, among=penalized, size=(5.0, 3.4), extra=None) -> list[dict[str, Any]]:
        """One figure per run, ``draw(run, *extra(run), ax)``, with id ``<slug>-<penalty>``."""
        return [
            figure_of(
                draw,
                f"{slug}-{run['penalty']}",
                f"{what} for {run['penalty']}",
                before=(run, *(extra(run) if extra else ())),
                size=size,
            )
            for run in among
        ]

    sections: list[dict[str, Any]] = [
        {
            "id": "cv",
            "title": "Cross-validation curves",
            "text": "Mean held-out loss over the folds at each λ, with one standard error; λ grows to the right.",
            "figures": per_run("cv", "CV curve", plots.plot_cv_curve),
        },
        {
            "id": "paths",
            "title": "Regularization paths",
            "text": "The norm of each input feature's first-layer weights along the full-data path: "
            "features leave the model when their line reaches zero.",
            "figures": [
                figure_of(
                    plots.plot_path,
                    f"path-{run['penalty']}",
                    f"path for {run['penalty']}",
                    before=(run, points[run["id"]], names),
                    after=(truth,),
                )
                for run in penalized
            ],
        },
        {
            "id": "sparsity",
            "title": "Sparsity along the path",
            "text": "Share of penalized weights that are not exactly zero, and of input features still used.",
            "figures": per_run("sparsity", "sparsity", plots.plot_sparsity, extra=lambda r: (points[r["id"]],)),
        },
        {
            "id": "fit",
            "title": "Training and validation loss along the path",
            "text": "Small λ: the training loss is far below the validation loss (over-fitting). Large λ: both "
            "rise together (under-fitting).",
            "figures": per_run("fit", "losses", plots.plot_losses, extra=lambda r: (points[r["id"]],)),
        },
        {
            "id": "weights",
            "title": "Weights of the penalized fits at the chosen λ",
            "text": "L1 and group lasso (proximal steps) leave a spike of weights that are exactly zero (red); "
            "L2 shrinks every weight but leaves them all non-zero.",
            "figures": per_run("weights", "weight histogram", plots.plot_weight_histogram, runs, (3.4, 2.8)),
        },
        {
            "id": "features",
            "title": "Features kept",
            "text": "Which original columns each penalty's chosen model still uses.",
            "figures": [
                figure_of(
                    plots.plot_selected_features,
                    "features-kept",
                    "features kept per penalty",
                    before=(runs, data["columns"]),
                    after=(truth,),
                    size=(
                        max(4.0, 0.35 * len(plots.shown_columns(runs, data["columns"], truth)) + 1.5),
                        0.45 * len(runs) + 1.6,
                    ),
                )
            ],
        },
        {
            "id": "geometry",
            "title": "Why L1 gives exact zeros: the geometry",
            "text": "For a 2-D quadratic loss, the penalized optimum is where a loss contour touches the "
            "constraint region. The L1 diamond is touched at a corner — a coordinate exactly zero; "
            "the L2 disc anywhere. Computed by solving both problems (shrinkage geometry).",
            "figures": [
                figure_of(plot_geometry, "geometry", "L1 diamond and L2 disc with loss contours", size=(5.0, 5.0)),
                figure_of(plot_track, "geometry-track", "solutions as lambda grows", size=(5.0, 5.0)),
            ],
        },
    ]
    pngs = _draw_all(jobs, pool)
    for section in sections:
        for figure in section["figures"]:
            figure["png"] = pngs[figure.pop("job")]
    pruned = _pruned_sizes(runs)
    from jinja2 import StrictUndefined

    environment = Environment(
        loader=PackageLoader("shrinkage.study.report", "."),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
    )
    html = environment.get_template("template.html.j2").render(
        study=study,
        data=data,
        config=config,
        configuration=_configuration(config, data, runs),
        runs=runs,
        sections=sections,
        score_name=score_name,
        answers=_answers(runs, data, score_name),
        version=__version__,
        store_path=str(store.path),
        pruned=pruned,
    )
    # whole or not at all: a crash or a full disk leaves the previous report, never a part
    return write_atomically(Path(path), html.encode("utf-8"), what="report")

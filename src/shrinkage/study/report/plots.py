"""Plots of a study's runs. Each takes an optional matplotlib ``Axes`` and returns it.

They read plain records (as the store returns them), so a report can be rebuilt from
the store without retraining.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "plot_cv_curve",
    "plot_losses",
    "plot_path",
    "plot_selected_features",
    "plot_sparsity",
    "plot_weight_histogram",
    "shown_columns",
]

Run = Mapping[str, Any]
Points = Sequence[Mapping[str, Any]]


#: On wide data a figure shows at most this many features, the ones that matter most
_MOST = 50


def _axes(ax, size=(5.0, 3.4)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.figure(figsize=size).add_subplot()


#: Tick marks per decade on a log λ axis, densest first; the densest that keeps at most
#: ``_MAX_LABELS`` labels on the axis is used, so that labels never crowd each other.
_LOG_SUBS = ((1.0, 2.0, 5.0), (1.0, 3.0), (1.0,))
_MAX_LABELS = 5


def _log_lambda(ax, lambdas: Sequence[float] | np.ndarray) -> None:
    """A log λ axis whose labels never overlap, whatever the grid's span.

    Labelled ticks at 1, 2, 5 × 10ᵏ on a grid of about a decade, 1 and 3 × 10ᵏ on one
    of a decade or two, the decades only above that (every other decade, or fewer, on
    a long grid: ``LogLocator``'s ``numticks``), and no minor ticks (each tick an axis
    draws costs about 2 ms, twice: a quarter of a study's report was its minor ticks). A
    grid narrower than half a decade gets at most four evenly spaced plain numbers.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

    ax.set_xscale("log")
    positive = np.asarray([lam for lam in lambdas if lam > 0], dtype=float)
    decades = float(np.log10(positive.max() / positive.min())) if positive.size else 1.0
    if decades < 0.5:  # 1-2-5 would leave one label or none
        ax.xaxis.set_major_locator(MaxNLocator(nbins=3, min_n_ticks=2))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.3g}"))
    else:
        subs = next((s for s in _LOG_SUBS if len(s) * (decades + 0.6) <= _MAX_LABELS), (1.0,))
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=_MAX_LABELS))
        # every position the locator gives is labelled (by default only decades are, on long axes)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: power_of_ten(x)))
    ax.xaxis.set_minor_locator(NullLocator())


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def power_of_ten(x: float) -> str:
    """A tick label in plain text (no mathtext to parse): ``0.2``, ``5``, ``10`` near 1,
    ``2×10⁻³`` and ``10⁴`` beyond.

    >>> power_of_ten(0.002), power_of_ten(0.5), power_of_ten(10000.0), power_of_ten(0)
    ('2×10⁻³', '0.5', '10⁴', '0')
    """
    if x == 0 or not np.isfinite(x):
        return f"{x:g}"
    exponent = int(np.floor(np.log10(abs(x)) + 1e-9))
    mantissa = round(x / 10.0**exponent, 2)
    if -2 <= exponent <= 2:
        return f"{x:.3g}"
    power = "10" + str(exponent).translate(_SUPERSCRIPT)
    return power if mantissa == 1 else f"{mantissa:g}×{power}"


def _full(points: Points) -> list[Mapping[str, Any]]:
    """The full-data path's points (fold −1), in λ order, without the dense start."""
    return [p for p in points if p["fold"] == -1 and p["idx"] >= 0]


def plot_cv_curve(run: Run, ax=None):
    """Mean cross-validated loss ± one standard error against λ, λ_min and λ_1se marked."""
    ax = _axes(ax)
    lambdas = np.asarray(run["lambdas"], dtype=float)
    mean = np.asarray(run["cv_mean"], dtype=float)
    se = np.asarray(run["cv_se"], dtype=float)
    ax.errorbar(lambdas, mean, yerr=se, fmt="o-", markersize=3, capsize=2, color="tab:blue", label="CV loss ± SE")
    ax.axvline(run["lambda_min"], color="tab:green", linestyle="--", label=f"λ_min = {run['lambda_min']:.3g}")
    ax.axvline(run["lambda_1se"], color="tab:red", linestyle=":", label=f"λ_1se = {run['lambda_1se']:.3g}")
    ax.set(xlabel="λ", ylabel="held-out loss", title=f"{run['penalty']}: cross-validation")
    _log_lambda(ax, lambdas)
    ax.legend(fontsize=7)
    return ax


def plot_path(run: Run, points: Points, feature_names: Sequence[str], ax=None, highlight: Sequence[str] = ()):
    """Each input feature's first-layer weight norm against λ: features dropping to zero."""
    ax = _axes(ax)
    full = _full(points)
    lambdas = [p["lambda"] for p in full]
    norms = np.array([p["feature_norms"] for p in full], dtype=float)
    if norms.size == 0:
        return ax
    highlighted = set(highlight)
    order = np.argsort(-norms.max(axis=0), kind="stable")  # the largest along the path first
    title = f"{run['penalty']}: path"
    if len(order) > _MOST:  # wide data: the features that matter, not one line per column
        named = [j for j in order[_MOST:] if j < len(feature_names) and feature_names[j] in highlighted]
        order = np.concatenate([order[:_MOST], np.asarray(named, dtype=int)])
        title += f" ({len(order)} of {norms.shape[1]} features: the largest)"
    for rank, j in enumerate(order):
        name = feature_names[j] if j < len(feature_names) else f"x{j}"
        label = name if (rank < 8 or name in highlighted) else None
        style = {"linewidth": 1.6} if name in highlighted else {"linewidth": 0.9}
        ax.plot(lambdas, norms[:, j], label=label, **style)
    for value, linestyle in ((run["lambda_min"], "--"), (run["lambda_1se"], ":")):
        ax.axvline(value, color="0.4", linestyle=linestyle, linewidth=0.8)
    ax.set(xlabel="λ", ylabel="‖input weights‖₂", title=title)
    _log_lambda(ax, lambdas)
    ax.legend(fontsize=6, ncol=2)
    return ax


def plot_sparsity(run: Run, points: Points, ax=None):
    """Share of penalized weights non-zero and of input features used, against λ."""
    ax = _axes(ax)
    full = _full(points)
    lambdas = [p["lambda"] for p in full]
    nonzero = [p["n_nonzero"] / p["n_penalized"] if p["n_penalized"] else 0 for p in full]
    n_inputs = max((len(p["feature_norms"]) for p in full), default=1) or 1
    features = [p["n_features"] / n_inputs for p in full]
    ax.plot(lambdas, nonzero, "o-", markersize=3, label="weights ≠ 0")
    ax.plot(lambdas, features, "s-", markersize=3, label="input features used")
    ax.set(xlabel="λ", ylabel="fraction", ylim=(-0.03, 1.03), title=f"{run['penalty']}: sparsity")
    _log_lambda(ax, lambdas)
    ax.legend(fontsize=7)
    return ax


def plot_losses(run: Run, points: Points, ax=None):
    """Training and validation data loss against λ: over-fitting at small λ, under-fitting
    at large λ."""
    ax = _axes(ax)
    full = _full(points)
    lambdas = [p["lambda"] for p in full]
    ax.plot(lambdas, [p["train_loss"] for p in full], "o-", markersize=3, label="training")
    ax.plot(lambdas, [p["val_loss"] for p in full], "s-", markersize=3, label="validation")
    ax.set(xlabel="λ", ylabel="data loss", title=f"{run['penalty']}: fit")
    _log_lambda(ax, lambdas)
    ax.legend(fontsize=7)
    return ax


def plot_weight_histogram(run: Run, ax=None):
    """The chosen model's layer weights; exact zeros drawn as their own bar."""
    ax = _axes(ax, size=(3.2, 2.8))
    weights = np.asarray(run["weights"], dtype=float)
    zeros = weights == 0
    nonzero = weights[~zeros]
    if nonzero.size:
        # one filled outline, not 60 bars: the same picture, drawn 4 times faster
        ax.hist(nonzero, bins=60, histtype="stepfilled", color="tab:blue", alpha=0.8, label="non-zero")
    if zeros.any():
        ax.bar(
            [0.0],
            [zeros.sum()],
            width=(np.ptp(weights) or 1.0) / 60,
            color="tab:red",
            label=f"exactly 0: {100 * zeros.mean():.1f}%",
        )
    ax.set(xlabel="weight", ylabel="count", title=run["penalty"])
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("symlog", linthresh=10)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: power_of_ten(y)))
    ax.legend(fontsize=6)
    return ax


def shown_columns(runs: Sequence[Run], columns: Sequence[str], truth: Sequence[str] = ()) -> list[str]:
    """The columns the features-kept figure shows: all of them, or on wide data the
    ``_MOST`` kept by the sparsest choices (a column a sparse penalty keeps says more than
    one a dense penalty keeps) and the true ones."""
    if len(columns) <= _MOST:
        return list(columns)
    votes = {c: sum((c in set(r["features"])) / max(len(r["features"]), 1) for r in runs) for c in columns}
    wanted = set(truth) | set(sorted(columns, key=lambda c: -votes[c])[:_MOST])
    return [c for c in columns if c in wanted and (votes[c] or c in set(truth))] or list(columns[:_MOST])


def plot_selected_features(runs: Sequence[Run], columns: Sequence[str], ax=None, truth: Sequence[str] = ()):
    """Which original columns each penalty's chosen model keeps (:func:`shown_columns`)."""
    total = len(columns)
    columns = shown_columns(runs, columns, truth)
    ax = _axes(ax, size=(max(4.0, 0.35 * len(columns) + 1.5), 0.45 * len(runs) + 1.4))
    kept = np.array([[column in set(run["features"]) for column in columns] for run in runs], dtype=float)
    ax.imshow(kept, aspect="auto", cmap="Blues", vmin=0, vmax=1.3)
    ax.set_xticks(np.arange(len(columns) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(runs) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_yticks(range(len(runs)), [run["penalty"] for run in runs])
    ax.set_xticks(range(len(columns)), columns, rotation=70, fontsize=7, ha="right")
    for label in ax.get_xticklabels():
        if label.get_text() in set(truth):
            label.set_fontweight("bold")
    shown = f" ({len(columns)} of {total} columns: those the sparsest models keep)" if len(columns) < total else ""
    ax.set_title("input features kept" + shown + (" (true ones in bold)" if truth else ""))
    return ax

"""The ``shrinkage`` command line.

``shrinkage study`` is the main job: it compares no penalty, L1, L2, elastic net and
group lasso on a data set, stores everything in an SQLite file and writes an HTML
report. ``shrinkage runs`` lists a store's studies, ``shrinkage report`` rebuilds a
report from a store, ``shrinkage geometry`` draws the L1-diamond / L2-disc picture.

Usage mistakes (bad values, missing files, a store that is not ours) print one line on
stderr and exit with code 2, never a traceback.
"""

from __future__ import annotations

import sqlite3
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from .config import PENALTY_CHOICES, StudyConfig
from .datasets import BUNDLED

__all__ = ["main"]

_DEFAULTS = StudyConfig()


class _Group(click.Group):
    """Usage errors — click's own and the library's — as one line on stderr, exit code 2."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.Exit as done:  # --help, --version
            sys.exit(done.exit_code)
        except click.exceptions.Abort:
            click.echo("shrinkage: aborted", err=True)
            sys.exit(1)
        except click.UsageError as error:
            click.echo(f"shrinkage: error: {_one_line(error.format_message())}", err=True)
            sys.exit(2)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=FutureWarning)
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except (ValueError, TypeError, OSError, sqlite3.Error, ImportError) as error:
            raise click.UsageError(_one_line(error)) from None
        except FloatingPointError as error:  # training diverged: not a usage mistake, still one line
            click.echo(f"shrinkage: error: {_one_line(error)}", err=True)
            sys.exit(1)


def _one_line(error: BaseException | str) -> str:
    if isinstance(error, ImportError) and "pip install" not in str(error):
        return f"{error}; install the study tools with: pip install 'shrinkage[study]'"
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"shrinkage: warning: {message}", err=True)


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise ValueError(f"--hidden must be comma-separated positive integers, got {text!r}") from None
    return widths


def _penalties(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shrinkage")
def main() -> None:
    """L1, L2, elastic-net and group regularization for PyTorch networks."""


@main.command()
@click.option(
    "--dataset",
    default=_DEFAULTS.dataset,
    show_default=True,
    type=click.Choice(BUNDLED),
    help="A bundled data set (ignored with --data).",
)
@click.option(
    "--data",
    "data_file",
    type=click.Path(path_type=str),
    default=None,
    help="A CSV or Parquet file to study instead.",
)
@click.option("--target", default=None, help="The target column of --data.")
@click.option(
    "--task",
    default=_DEFAULTS.task,
    show_default=True,
    type=click.Choice(["auto", "regression", "binary", "multiclass"]),
)
@click.option(
    "--missing",
    default=_DEFAULTS.missing,
    show_default=True,
    type=click.Choice(["impute", "error"]),
    help="Missing feature values: impute (median / own level) or refuse.",
)
@click.option(
    "--penalties",
    default=",".join(_DEFAULTS.penalties),
    show_default=True,
    help=f"Comma-separated, among {', '.join(PENALTY_CHOICES)}.",
)
@click.option("--hidden", default="32", show_default=True, help="Hidden layer widths, comma-separated.")
@click.option("--l1-ratio", default=_DEFAULTS.l1_ratio, show_default=True, type=float, help="ρ of the elastic net.")
@click.option("--cv", default=_DEFAULTS.cv, show_default=True, type=int, help="Cross-validation folds.")
@click.option("--n-lambdas", default=_DEFAULTS.n_lambdas, show_default=True, type=int)
@click.option("--lambda-min-ratio", default=_DEFAULTS.lambda_min_ratio, show_default=True, type=float)
@click.option("--selection", default=_DEFAULTS.selection, show_default=True, help="1se or min.")
@click.option(
    "--relax/--no-relax",
    default=_DEFAULTS.relax,
    show_default=True,
    help="Score and keep relaxed models for the sparsifying penalties.",
)
@click.option("--test-size", default=_DEFAULTS.test_size, show_default=True, type=float)
@click.option("--seed", default=_DEFAULTS.seed, show_default=True, type=int)
@click.option("--n-jobs", default=_DEFAULTS.n_jobs, show_default=True, type=int, help="Parallel folds (-1: all cores).")
@click.option(
    "--out",
    "out_dir",
    default="shrinkage-study",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for the store and the report.",
)
@click.option(
    "--store",
    "store_path",
    default=None,
    type=click.Path(path_type=Path),
    help="SQLite results store [default: OUT/results.sqlite].",
)
@click.option(
    "--on-divergence",
    type=click.Choice(["raise", "skip"]),
    default=_DEFAULTS.on_divergence,
    show_default=True,
    help="A fit whose loss turns NaN/inf: stop with an error, or record that λ as failed and go on.",
)
@click.option(
    "--cluster",
    default=None,
    metavar="ADDRESS",
    help="Run the folds on an existing Dask cluster (its scheduler, e.g. tcp://10.0.0.5:8786); "
    "results are identical to a local run.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def study(
    dataset,
    data_file,
    target,
    task,
    missing,
    penalties,
    hidden,
    l1_ratio,
    cv,
    n_lambdas,
    lambda_min_ratio,
    selection,
    relax,
    test_size,
    seed,
    n_jobs,
    out_dir,
    store_path,
    on_divergence,
    cluster,
    quiet,
) -> None:
    """Compare no penalty / L1 / L2 / elastic net / group lasso on a data set.

    λ is chosen by K-fold cross-validation on a path for each penalty, the chosen
    model scored on a held-out test split; the results go to an SQLite store and an
    HTML report.
    """
    from rich.console import Console

    from .report import build_report
    from .runner import prepare_study, run_study
    from .store import Store

    config = StudyConfig(
        dataset=dataset,
        data=data_file,
        target=target,
        task=task,
        missing=missing,
        penalties=_penalties(penalties),
        hidden=_widths(hidden),
        l1_ratio=l1_ratio,
        cv=cv,
        n_lambdas=n_lambdas,
        lambda_min_ratio=lambda_min_ratio,
        selection=selection,
        relax=relax,
        test_size=test_size,
        seed=seed,
        n_jobs=n_jobs,
        on_divergence=on_divergence,
    )
    store_path = store_path or out_dir / "results.sqlite"
    if store_path.exists():  # someone else's file fails before the data are read
        Store(store_path, create=False).close()
    prepared = prepare_study(config)  # data errors before anything is written
    _writable_folder(out_dir)
    console = Console(stderr=True, quiet=quiet)
    with Store(store_path) as store:

        def announce(run):
            console.print(f"  {run['penalty']:<10} done in {run['seconds']:.1f} s")

        console.print(f"study → {store_path}")
        with _cluster(cluster):
            study_id = run_study(
                config, store, prepared=prepared, progress=None if not quiet else False, on_run=announce
            )
        _print_table(store, study_id)
        report = build_report(store, study_id, out_dir / "report.html")
    click.echo(f"report: {report}")
    click.echo(f"store:  {store_path}")


@contextmanager
def _cluster(address: str | None) -> Iterator[None]:
    """joblib's Dask backend on the cluster at ``address`` (nothing without one)."""
    if address is None:
        yield
        return
    try:
        from distributed import Client
    except ImportError:
        raise ImportError("--cluster needs Dask: pip install 'shrinkage[distributed]'") from None
    import joblib

    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as error:
        raise ValueError(f"--cluster: no Dask scheduler answers at {address!r} ({type(error).__name__})") from None
    with client, joblib.parallel_config(backend="dask"):
        yield


def _writable_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out must be a folder, got the file {str(folder)!r}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PermissionError(f"--out folder {str(folder)!r} cannot be created: {error.strerror}") from None
    probe = folder / ".shrinkage-write-test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise PermissionError(f"--out folder {str(folder)!r} is not writable: {error.strerror}") from None


def _print_table(store, study_id: int) -> None:
    from rich.table import Table

    study = store.study(study_id)
    data = study["data"]
    score = "R²" if data["task"] == "regression" else "accuracy"
    table = Table(title=f"shrinkage study {study_id} — {data['name']} ({data['task']}, {data['n_samples']} rows)")
    for column in (
        "penalty",
        "λ (" + study["config"]["selection"] + ")",
        "CV loss ± SE",
        "test loss",
        f"test {score}",
        "weights = 0",
        "features kept",
    ):
        table.add_column(column, justify="left" if column in ("penalty", "features kept") else "right")
    n_columns = len(data["columns"])
    for run in store.runs(study_id):
        kept = run["features"]
        shown = ", ".join(kept) if len(kept) <= 8 else ", ".join(kept[:8]) + ", …"
        table.add_row(
            run["penalty"],
            f"{run['lambda_chosen']:.3g}",
            f"{run['cv_loss']:.4f} ± {run['cv_loss_se']:.4f}",
            f"{run['test_loss']:.4f}",
            f"{run['test_score']:.4f}",
            f"{100 * run['fraction_zero']:.1f}%",
            f"{len(kept)}/{n_columns}: {shown}",
        )
    _console().print(table)


def _console():
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=150)


@main.command()
@click.argument("store_path", type=click.Path(path_type=Path))
def runs(store_path: Path) -> None:
    """List the studies in a results store."""
    from rich.table import Table

    from .store import Store

    with Store(store_path, create=False) as store:
        table = Table(title=str(store_path))
        for column in ("id", "created", "data", "task", "penalties", "status"):
            table.add_column(column)
        for row in store.studies():
            table.add_row(
                str(row["id"]),
                row["created"],
                row["name"],
                row["data"]["task"],
                f"{row['n_runs']}/{len(row['config']['penalties'])}",
                row["status"],
            )
        _console().print(table)


@main.command()
@click.argument("store_path", type=click.Path(path_type=Path))
@click.option("--study", "study_id", type=int, default=None, help="Study id [default: the latest].")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=Path("report.html"), show_default=True)
def report(store_path: Path, study_id: int | None, out_path: Path) -> None:
    """Rebuild a study's HTML report from a results store, without retraining."""
    from .report import build_report
    from .store import Store

    with Store(store_path, create=False) as store:
        click.echo(f"report: {build_report(store, study_id, out_path)}")


@main.command("prune")
@click.argument("store_path", type=click.Path(path_type=Path))
@click.option("--penalty", required=True, help="Whose chosen model to export (l1, group, …).")
@click.option("--study", "study_id", type=int, default=None, help="Study id [default: the latest].")
@click.option("--penalized", is_flag=True, help="Export the penalized fit rather than the chosen (relaxed) model.")
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    default=Path("pruned.safetensors"),
    show_default=True,
    help="Weights-only model file (safetensors).",
)
def prune_command(store_path: Path, penalty: str, study_id: int | None, penalized: bool, out_path: Path) -> None:
    """Export a study's model without its unused inputs and dead units.

    Prints the features it keeps and its size, FLOPs and CPU latency before and after;
    writes a weights-only file that shrinkage.prune.load_model reads back.
    """
    from shrinkage.prune import load_model, prune, save_model

    from .store import Store

    with Store(store_path, create=False) as store:
        studies = store.studies()
        if not studies:
            raise ValueError(f"store {str(store_path)!r} holds no study yet")
        study = store.study(study_id if study_id is not None else studies[-1]["id"])
        runs = {run["penalty"]: run for run in store.runs(study["id"])}
    if penalty not in runs:
        raise ValueError(f"penalty must be one of the study's runs ({', '.join(runs)}), got {penalty!r}")
    blob = runs[penalty]["penalized" if penalized else "model"]
    if blob is None:
        raise ValueError(f"the {penalty!r} run of study {study['id']} has no stored model")
    model, metadata = load_model(bytes(blob))
    pruned, report = prune(model, feature_names=metadata.get("features"))
    save_model(pruned, out_path, metadata={**metadata, "features": report.kept_feature_names, "pruned": True})
    click.echo(report.summary())
    click.echo(f"kept features: {', '.join(report.kept_feature_names) or 'none'}")
    click.echo(f"written {out_path} (reads the kept features, in this order)")


@main.command()
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    default=Path("geometry.png"),
    show_default=True,
    help="Image file (.png or .svg).",
)
@click.option("--center", default="2,0.8", show_default=True, help="The unpenalized optimum c, as 'x,y'.")
@click.option(
    "--hessian",
    default="1,0.4,0.6",
    show_default=True,
    help="The loss curvature H = [[a, b], [b, c]], as 'a,b,c'.",
)
@click.option("--lambda", "lambda_", type=float, default=None, help="λ of the picture [default: one with a zero].")
def geometry(out_path: Path, center: str, hessian: str, lambda_: float | None) -> None:
    """Draw the L1 diamond and L2 disc with a 2-D quadratic loss and both optima."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .geometry import Quadratic, l1_solution, plot_geometry, plot_track, showcase_lambda

    if out_path.suffix.lower() not in (".png", ".svg"):
        raise ValueError(f"--out must end in .png or .svg, got {str(out_path)!r}")
    try:
        c = tuple(float(v) for v in center.split(","))
        a, b, d = (float(v) for v in hessian.split(","))
    except ValueError:
        raise ValueError(f"--center needs 'x,y' and --hessian 'a,b,c', got {center!r} and {hessian!r}") from None
    f = Quadratic(c, ((a, b), (b, d)))
    lam = showcase_lambda(f) if lambda_ is None else lambda_
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 5))
    plot_geometry(axes[0], f, lam)
    plot_track(axes[1], f)
    fig.tight_layout()
    try:
        fig.savefig(out_path)
    except OSError as error:
        raise PermissionError(f"--out {str(out_path)!r} cannot be written: {error.strerror}") from None
    w = l1_solution(f, lam)
    click.echo(f"λ = {lam:.4g}: L1 optimum ({w[0]:.4f}, {w[1]:.4f}); written {out_path}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

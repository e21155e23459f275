"""The ``shrinkage`` command line.

``shrinkage study`` is the main job: it compares no penalty, L1, L2, elastic net and
group lasso on a data set, stores everything in an SQLite file and writes an HTML
report. ``shrinkage runs`` lists a store's studies, ``shrinkage report`` rebuilds a
report from a store, ``shrinkage export`` writes a study's model with its preprocessing
(or as ONNX), ``shrinkage prune`` the same without unused inputs and units, with a
report of what that saved, ``shrinkage predict`` predicts from the raw rows of a file
with such a model, ``shrinkage geometry`` draws the L1-diamond / L2-disc picture.

The options of ``shrinkage study`` that set the study are generated from
:class:`~shrinkage.study.config.StudyConfig`: one option per field, its help text from
the field's entry in the class docstring. Only the options that are not part of a
study (``--out``, ``--store``, ``--cluster``, ``--quiet``) are written here; ``--device``
is checked here too, so that a device this machine lacks is named by its flag.

Errors print one line on stderr, never a traceback:

- a bad input (:class:`~shrinkage.validation.InputError`, a store that is not ours), a
  file problem (``OSError``), an SQLite error, a click usage mistake or a missing
  optional package: ``shrinkage: error: …``, exit code 2;
- a fit that diverged (:class:`~shrinkage.train.Diverged`): ``shrinkage: error: …``,
  exit code 1;
- anything else is a bug: ``shrinkage: internal error (a bug, please report it): …``,
  exit code 1, with the traceback saved to a log file that the line names.

``shrinkage --debug …`` prints the traceback of any of these above its line (and saves no log).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
import shlex
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import traceback
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import click

from shrinkage import __version__
from shrinkage.__main__ import missing_extra
from shrinkage.train import Diverged
from shrinkage.validation import InputError, check_device

from .config import StudyConfig, resolve_device
from .workers import Workers, fixed_mmap_threshold, keep_pyarrow_out, study_processes

__all__ = ["main"]

_LOG_FOLDER = "shrinkage.log_folder"  # ctx.meta key: the folder for an internal error's traceback
#: ``ctx.obj`` when the ``shrinkage`` program runs (:mod:`shrinkage.__main__`): the process is
#: the command's alone, so a study may keep pyarrow out of it — not when Python code calls
#: :func:`main`, whose process may need pyarrow after it
OWN_PROCESS = "shrinkage: the command's own process"
_LOG_NAME = "shrinkage-error.log"


# ---------------------------------------------------------------------------
# Errors


class _Group(click.Group):
    """Every error as one line on stderr with its exit code (see the module docstring)."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        with _terminate_as_interrupt():
            try:
                result = super().main(*args, **kwargs)
            except click.exceptions.Abort:
                click.echo("shrinkage: aborted", err=True)
                sys.exit(1)
            except click.ClickException as error:  # click's usage errors: exit code 2
                click.echo(f"shrinkage: error: {_one_line(error.format_message())}", err=True)
                sys.exit(error.exit_code)
        sys.exit(result if isinstance(result, int) else 0)  # --help and --version return 0

    def invoke(self, ctx: click.Context):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=FutureWarning)
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:
            if ctx.params.get("debug"):
                traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
            code, line = _error_line(error, ctx)
            click.echo(line, err=True)
            sys.exit(code)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``) ends the command as Ctrl-C does, its store closed (no -wal or
    -shm file left beside it); the handler before is restored after."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set one
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _error_line(error: Exception, ctx: click.Context) -> tuple[int, str]:
    """The exit code and the one line that report ``error`` (an internal one's traceback saved)."""
    if isinstance(error, InputError):
        return 2, f"shrinkage: error: {_as_flag(_one_line(error), ctx)}"
    if isinstance(error, (OSError, sqlite3.Error)):
        return 2, f"shrinkage: error: {_one_line(error)}"
    if isinstance(error, Diverged):  # the numerics, not a usage mistake
        return 1, f"shrinkage: error: {_one_line(error)}"
    command = f"the {ctx.invoked_subcommand} command" if ctx.invoked_subcommand else "the command line"
    missing = missing_extra(error, needs=command)
    if missing is not None:
        return 2, missing
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    message = " ".join(str(error).split())
    line = f"shrinkage: internal error (a bug, please report it): {name}" + (f": {message}" if message else "")
    if ctx.params.get("debug"):  # the traceback is already on stderr
        return 1, line
    log = _save_traceback(error, ctx.meta.get(_LOG_FOLDER))
    return 1, f"{line}; rerun with --debug for the traceback" + (f" (saved to {log})" if log else "")


def _as_flag(message: str, ctx: click.Context) -> str:
    """A library message about a parameter (``n_lambdas must be …``) in the words of the
    command line (``--n-lambdas must be …``) when the command has that option."""
    name, subcommand = message.split(" ", 1)[0], ctx.invoked_subcommand
    command = ctx.command.get_command(ctx, subcommand) if isinstance(ctx.command, click.Group) and subcommand else None
    flag = "--" + name.replace("_", "-")
    for param in getattr(command, "params", ()):
        named = param.name == name or flag in getattr(param, "opts", ())  # (--study sets study_id)
        if named and isinstance(param, click.Option) and message.startswith(f"{name} must "):
            return max(param.opts, key=len) + message[len(name) :]
    return message


def _save_traceback(error: Exception, folder: Path | None) -> Path | None:
    """Write ``error``'s traceback to ``folder``/shrinkage-error.log, else to a temporary file; its path."""
    text = f"shrinkage {__version__}, Python {sys.version.split()[0]} on {sys.platform}\n\n" + "".join(
        traceback.format_exception(type(error), error, error.__traceback__)
    )
    if folder is not None and folder.is_dir():
        try:
            (folder / _LOG_NAME).write_text(text, encoding="utf-8")
            return folder / _LOG_NAME
        except OSError:
            pass  # a temporary file instead
    try:
        with tempfile.NamedTemporaryFile(
            "w", prefix="shrinkage-error-", suffix=".log", delete=False, encoding="utf-8"
        ) as file:
            file.write(text)
        return Path(file.name)
    except OSError:
        return None


def _one_line(error: BaseException | str) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"shrinkage: warning: {message}", err=True)


# ---------------------------------------------------------------------------
# The options of `shrinkage study`, generated from StudyConfig


def _parameter_docs(doc: str) -> dict[str, str]:
    """Each name of a numpydoc Parameters section → its description, as one line of plain text.

    Names documented together (``data, target : str``) share their description.

    >>> _parameter_docs('''Title.
    ...
    ...     Parameters
    ...     ----------
    ...     data, target : str
    ...         A file and its
    ...         ``target`` column.
    ...     seed : int
    ...         See :func:`~numpy.sort`.
    ...
    ...     Examples
    ...     --------
    ...     ''')
    {'data': 'A file and its target column.', 'target': 'A file and its target column.', 'seed': 'See numpy.sort.'}
    """
    lines = inspect.cleandoc(doc).splitlines()
    start = next(i + 2 for i, line in enumerate(lines[:-1]) if line == "Parameters" and lines[i + 1] == "-" * 10)
    docs: dict[str, str] = {}
    names: list[str] = []
    for i, line in enumerate(lines[start:], start):
        if not line.strip():
            continue
        if line[0].isspace():  # the description of the names above it
            docs.update((name, f"{docs[name]} {line.strip()}") for name in names)
        elif i + 1 < len(lines) and lines[i + 1].strip() and set(lines[i + 1]) == {"-"}:  # the next section
            break
        else:  # "name : type" or "name, other : type"
            names = [name.strip() for name in line.partition(" : ")[0].split(",")]
            docs.update((name, "") for name in names)
    return {name: _plain(text) for name, text in docs.items()}


def _plain(text: str) -> str:
    """reStructuredText as plain text: ``x`` → x, :func:`~a.b` → a.b (the full name, for a reader without links)."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    return " ".join(text.replace("``", "").split())


class _CommaSeparated(click.ParamType):
    """``"a,b"`` → ``("a", "b")``, each item converted by ``item`` (StudyConfig checks the values)."""

    def __init__(self, item: type):
        self.item = item
        self.name = f"comma-separated {item.__name__}"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple:
        if isinstance(value, tuple):
            return value
        parts = [part.strip() for part in str(value).split(",")]
        try:
            if parts != [""] and "" in parts:  # "4,,4" or "," (an empty value means none at all)
                raise ValueError
            return tuple(self.item(part) for part in parts if part)
        except ValueError:
            kind = {int: "integers", float: "numbers"}.get(self.item, "values")
            self.fail(f"{value!r} is not a comma-separated list of {kind}", param, ctx)


def _bare(hint: Any) -> Any:
    """``X | None`` → ``X``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return hint


def _option(field: dataclasses.Field, hint: Any, default: Any, help: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The arguments of ``click.option`` for one field of StudyConfig."""
    flag = "--" + field.name.replace("_", "-")
    choices = field.metadata.get("choices")
    settings: dict[str, Any] = dict(default=default, show_default=default is not None, help=help)
    hint = _bare(hint)
    if hint is bool:
        return (f"{flag}/--no-{flag[2:]}", field.name), settings
    if typing.get_origin(hint) is tuple:  # tuple[T, ...]: comma-separated text
        item = typing.get_args(hint)[0]
        settings.update(type=_CommaSeparated(item), default=",".join(map(str, default)))
        settings["metavar"] = f"{'NAME' if choices else item.__name__.upper()},…"
        if choices:
            settings["help"] = f"{help} Among: {', '.join(choices)}."
    else:
        settings["type"] = click.Choice(choices) if choices else hint
    if "metavar" in field.metadata:
        settings["metavar"] = field.metadata["metavar"]
    return (flag, field.name), settings


def _config_options(command: Callable) -> Callable:
    """Decorator: one option per field of StudyConfig, in the fields' order."""
    docs = _parameter_docs(StudyConfig.__doc__ or "")
    hints = typing.get_type_hints(StudyConfig)
    defaults = StudyConfig()
    for field in reversed(dataclasses.fields(StudyConfig)):  # click lists the last-applied option first
        default = getattr(defaults, field.name)
        declarations, settings = _option(field, hints[field.name], default, docs[field.name])
        command = click.option(*declarations, **settings)(command)
    return command


# ---------------------------------------------------------------------------
# Commands


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shrinkage")
@click.option(
    "--debug",
    is_flag=True,
    help="Print the traceback of an error above its line (an internal error's is otherwise saved to a log file).",
)
def main(debug: bool) -> None:
    """L1, L2, elastic-net and group regularization for PyTorch networks."""


@main.command()
@_config_options
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
    "--cluster",
    default=None,
    metavar="ADDRESS",
    help="Run the folds on an existing Dask cluster (its scheduler, e.g. tcp://10.0.0.5:8786); "
    "results are identical to a local run.",
)
@click.option(
    "--report/--no-report",
    "write_report",
    default=True,
    show_default=True,
    help="Write OUT/report.html (its figures take seconds); without it only the store, from which "
    "`shrinkage report` draws the report later.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def study(
    ctx: click.Context,
    out_dir: Path,
    store_path: Path | None,
    cluster: str | None,
    write_report: bool,
    quiet: bool,
    **fields,
) -> None:
    """Compare no penalty / L1 / L2 / elastic net / group lasso on a data set.

    λ is chosen by K-fold cross-validation on a path for each penalty, the chosen
    model scored on a held-out test split; the results go to an SQLite store and an
    HTML report.
    """
    from rich.console import Console

    from .store import Store
    from .tabular import is_parquet

    if ctx.obj == OWN_PROCESS and cluster is None and not (fields["data"] and is_parquet(fields["data"])):
        keep_pyarrow_out()  # before pandas is imported; Parquet (and Dask's pickles) may need it
    if ctx.obj == OWN_PROCESS:
        fixed_mmap_threshold()
    ctx.meta[_LOG_FOLDER] = out_dir
    if fields["device"] != "auto":
        check_device("--device", fields["device"])  # the flag's name in the message
    config = StudyConfig(**fields)
    device = resolve_device(config.device)
    store_path = store_path or out_dir / "results.sqlite"
    if store_path.exists():  # someone else's file fails before the data are read
        Store(store_path, read_only=True).close()
    console = Console(stderr=True, quiet=quiet, soft_wrap=True)
    started = time.perf_counter()
    size = _size(config.data)
    if size >= _LARGE_FILE:  # it takes seconds to read and encode: say so at once
        console.print(f"reading {config.data} ({size / 1e6:.0f} MB)")
    # the worker processes start first: their imports overlap the runner's here
    with Workers(study_processes(config, device, len(config.penalties)) if cluster is None else 1) as workers:
        from .report import build_report  # (the runner and the report: about a second to load)
        from .runner import prepare_study, run_study

        prepared = prepare_study(config)  # data errors before anything is written
        if size >= _LARGE_FILE:
            summary = prepared.summary
            console.print(
                f"data: {summary['n_samples']:,} rows, {len(summary['columns'])} feature columns "
                f"({len(summary['encoded_features'])} encoded), read in {time.perf_counter() - started:.1f} s"
            )
        _writable_folder(out_dir)
        with Store(store_path) as store:

            def announce(run):
                shared = ""
                if run["penalty"] == "none" and len(config.penalties) > 1:  # (trained by whichever ran first)
                    shared = " (the unpenalized fits every penalty starts from)"
                console.print(f"  {run['penalty']:<10} done in {run['seconds']:.1f} s{shared}")

            console.print(f"study → {store_path} (device {device})")
            if device != "cpu" and config.n_jobs is None:
                console.print(f"  the folds run one after another on {device} (--n-jobs N: N processes sharing it)")
            with _cluster(cluster):
                progress = None if not quiet else False
                study_id = run_study(
                    config, store, prepared=prepared, progress=progress, on_run=announce, workers=workers
                )
            _print_table(store, study_id)
            # the workers, idle now, draw half of the figures
            report = build_report(store, study_id, out_dir / "report.html", pool=workers.pool) if write_report else None
    if report is not None:
        click.echo(f"report: {report}")
    click.echo(f"store:  {store_path}")
    if report is None:
        command = f"shrinkage report {shlex.quote(str(store_path))} --out {shlex.quote(str(out_dir / 'report.html'))}"
        click.echo(f"no report drawn (--no-report); `{command}` draws it")


#: how long ``--cluster`` waits for its scheduler to answer
_CONNECT_TIMEOUT = "10s"


@contextmanager
def _cluster(address: str | None) -> Iterator[None]:
    """joblib's Dask backend on the cluster at ``address`` (nothing without one)."""
    if address is None:
        yield
        return
    import joblib
    from distributed import Client  # without it: "the study command needs the distributed extra: …"

    try:
        client = Client(address, timeout=_CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as error:
        raise InputError(f"--cluster: no Dask scheduler answers at {address!r} ({type(error).__name__})") from None
    with client, joblib.parallel_config(backend="dask"):
        yield


#: bytes of a data file from which the study says it is reading it (about a second's work)
_LARGE_FILE = 20_000_000


def _size(path: str | None) -> int:
    """The size of a data file in bytes (0 for none, or one that cannot be read: reading it
    will say why)."""
    try:
        return Path(path).stat().st_size if path is not None else 0
    except OSError:
        return 0


def _writable_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out must be a folder, got the file {str(folder)!r}")
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


def _number(value: float | None, form: str) -> str:
    """A stored number for the table; "—" where none was measured (stored as NULL: NaN)."""
    return "—" if value is None or not math.isfinite(value) else format(value, form)


def _print_table(store, study_id: int) -> None:
    from rich.table import Table

    from .report import scored_model

    study = store.study(study_id)
    data, config = study["data"], study["config"]
    score = "R²" if data["task"] == "regression" else "accuracy"
    table = Table(
        title=f"shrinkage study {study_id} — {data['name']} ({data['task']}, {data['n_samples']} rows)",
        caption=f"device {data.get('device', 'cpu')}. CV loss and test {score}: the model named in 'model' "
        "(a relaxed refit is retrained without penalty on the features the penalized fit keeps). "
        "weights = 0 and features kept: the penalized fit at the chosen λ.",
        caption_justify="left",
    )
    for column in (
        "penalty",
        "λ (" + config["selection"] + ")",
        "model",
        "CV loss ± SE",
        "test loss",
        f"test {score}",
        "weights = 0",
        "features kept",
    ):
        table.add_column(column, justify="left" if column in ("penalty", "model", "features kept") else "right")
    n_columns = len(data["columns"])
    for run in store.runs(study_id):
        kept = run["features"]
        shown = ", ".join(kept) if len(kept) <= 8 else ", ".join(kept[:8]) + ", …"
        table.add_row(
            run["penalty"],
            _number(run["lambda_chosen"], ".3g"),
            scored_model(run, config),
            f"{_number(run['cv_loss'], '.4f')} ± {_number(run['cv_loss_se'], '.4f')}",
            _number(run["test_loss"], ".4f"),
            _number(run["test_score"], ".4f"),
            f"{_number(100 * run['fraction_zero'] if run['fraction_zero'] is not None else None, '.1f')}%",
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

    with Store(store_path, read_only=True) as store:  # reading never upgrades or writes the file
        table = Table(title=str(store_path))
        for column in ("id", "created", "data", "task", "penalties", "status"):
            table.add_column(column)
        for row in store.studies():
            table.add_row(
                str(row["id"]),
                row["created"],
                row["name"],
                str(row["data"].get("task", "?")),
                f"{row['n_runs']}/{len(row['config'].get('penalties', ())) or '?'}",  # what an older store lacks: ?
                row["status"],
            )
        _console().print(table)


@main.command()
@click.argument("store_path", type=click.Path(path_type=Path))
@click.option("--study", "study_id", type=int, default=None, help="Study id [default: the latest].")
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write (replaced whole, or left as it was on an error).",
)
def report(store_path: Path, study_id: int | None, out_path: Path) -> None:
    """Rebuild a study's HTML report from a results store, without retraining."""
    from .report import build_report
    from .store import Store

    _check_out(out_path, store=store_path)
    with Store(store_path, read_only=True) as store:  # reading never upgrades or writes the file
        click.echo(f"report: {build_report(store, study_id, out_path)}")


def _check_out(out_path: Path, **inputs: Path) -> None:
    """``--out`` must not name a file the command reads: it would be replaced."""
    for name, source in inputs.items():
        try:
            same = os.path.samefile(out_path, source)
        except OSError:  # one of them does not exist (yet)
            same = False
        if same:
            raise InputError(f"--out must not be the {name} the command reads, got {str(out_path)!r}")


def _stored_model(store_path: Path, penalty: str, study_id: int | None, penalized: bool) -> tuple[Any, dict]:
    """A study's stored model (the chosen one, or its penalized fit) and its metadata."""
    from shrinkage.prune import load_model

    from .store import Store, StoreError

    with Store(store_path, read_only=True) as store:  # reading never upgrades or writes the file
        studies = store.studies()
        if not studies:
            raise InputError(f"store {str(store_path)!r} holds no study yet")
        study = store.study(study_id if study_id is not None else studies[-1]["id"])
        runs = {run["penalty"]: run for run in store.runs(study["id"])}
    if not runs:
        raise InputError(f"study {study['id']} in {str(store_path)!r} has no finished run yet")
    if penalty not in runs:
        raise InputError(f"penalty must be one of the study's runs ({', '.join(runs)}), got {penalty!r}")
    column = "penalized" if penalized else "model"
    blob = runs[penalty][column]
    if blob is None:
        raise InputError(f"the {penalty!r} run of study {study['id']} has no stored model")
    try:
        return load_model(bytes(blob))
    except InputError as error:
        where = f"runs.{column} of the {penalty!r} run of study {study['id']}"
        raise StoreError(f"store {str(store_path)!r} is damaged: {where}: {error}") from None


def _pruned(model: Any, metadata: dict) -> tuple[Any, dict, Any]:
    """``model`` pruned, its metadata for the kept inputs (preprocessing included), the report."""
    from shrinkage.prune import prune

    from .predictor import Preprocessing

    pruned, report = prune(model, feature_names=metadata.get("features"))
    metadata = {**metadata, "features": report.kept_feature_names, "pruned": True}
    if metadata.get("preprocessing") is not None:
        preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
        metadata["preprocessing"] = preprocessing.with_inputs(list(report.kept_features)).to_dict()
    return pruned, metadata, report


_STORE_OPTIONS = [
    click.option("--study", "study_id", type=int, default=None, help="Study id [default: the latest]."),
    click.option("--penalized", is_flag=True, help="The penalized fit rather than the chosen (relaxed) model."),
]


def _store_options(command: Callable) -> Callable:
    for option in reversed(_STORE_OPTIONS):
        command = option(command)
    return command


@main.command("prune")
@click.argument("store_path", type=click.Path(path_type=Path))
@click.option("--penalty", required=True, help="Whose chosen model to export (l1, group, …).")
@_store_options
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
    writes a weights-only model file with its preprocessing, which `shrinkage predict`
    reads (as `shrinkage export --prune` does, with this report).
    """
    from shrinkage.prune import save_model

    _check_out(out_path, store=store_path)
    model, metadata = _stored_model(store_path, penalty, study_id, penalized)
    pruned, metadata, report = _pruned(model, metadata)
    save_model(pruned, out_path, metadata=metadata)
    click.echo(report.summary())
    click.echo(f"kept features: {', '.join(report.kept_feature_names) or 'none'}")
    click.echo(f"written {out_path} (reads the kept features, in this order)")


_SQLITE_HEADER = b"SQLite format 3\x00"


@main.command("export")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--penalty", default=None, help="From a store: whose chosen model (l1, group, …).")
@_store_options
@click.option("--prune", "pruned", is_flag=True, help="Without its unused inputs and dead units.")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["safetensors", "onnx"]),
    default=None,
    help="safetensors: a model file for `shrinkage predict`; onnx: the network and its "
    "preprocessing for onnxruntime (the `onnx` extra) [default: onnx for an --out ending in .onnx, "
    "else safetensors].",
)
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True, help="The file to write.")
def export_command(
    source: Path,
    penalty: str | None,
    study_id: int | None,
    penalized: bool,
    pruned: bool,
    file_format: str | None,
    out_path: Path,
) -> None:
    """Write a model file from a study's store (with --penalty) or from a model file.

    The model file holds the network and the preprocessing of its inputs (column order,
    imputed values, categorical levels, scaling, the target's scale, class labels), so
    that `shrinkage predict` takes raw rows of the study's data.
    """
    from shrinkage.prune import load_model, save_model

    if not source.is_file():
        raise FileNotFoundError(f"source {str(source)!r} does not exist")
    _check_out(out_path, source=source)
    suffix = out_path.suffix.lower()
    if file_format is None:
        file_format = "onnx" if suffix == ".onnx" else "safetensors"
    elif suffix in (".onnx", ".safetensors") and suffix != f".{file_format}":
        raise InputError(
            f"--out must not end in {suffix} for --format {file_format} (.{file_format} does), got {str(out_path)!r}"
        )
    with open(source, "rb") as file:
        is_store = file.read(16) == _SQLITE_HEADER
    if is_store:
        if penalty is None:
            raise InputError("--penalty is required to export from a store (which of its runs: l1, group, …)")
        model, metadata = _stored_model(source, penalty, study_id, penalized)
    else:
        if penalty is not None or study_id is not None or penalized:
            raise InputError(
                f"--penalty, --study and --penalized choose a run of a store, but {str(source)!r} is not a "
                "store (export a model file without them)"
            )
        model, metadata = load_model(source)
    if pruned:
        model, metadata, _ = _pruned(model, metadata)
    if file_format == "onnx":
        from shrinkage.prune import model_bytes

        from .onnx import export_onnx
        from .predictor import load_predictor

        export_onnx(load_predictor(model_bytes(model, metadata=metadata)), out_path)
    else:
        save_model(model, out_path, metadata=metadata)
    click.echo(f"written {out_path}")


@main.command()
@click.argument("model_path", type=click.Path(path_type=Path))
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), help="CSV or Parquet rows.")
@click.option(
    "--out", "out_path", type=click.Path(path_type=Path), default=None, help="CSV file [default: standard output]."
)
@click.option(
    "--id",
    "id_column",
    default=None,
    help="A column copied beside each prediction [default: a column named id, when the file has one].",
)
@click.option(
    "--unseen",
    type=click.Choice(["zeros", "error"]),
    default="zeros",
    show_default=True,
    help="A categorical value not seen in training: encoded as none of the levels (with a warning), or an error.",
)
def predict(model_path: Path, data_path: Path, out_path: Path | None, id_column: str | None, unseen: str) -> None:
    """Predict from the raw rows of a CSV or Parquet file with a model file.

    The rows go through the model's stored preprocessing (the columns the study read, in
    any order; other columns are ignored). Writes a CSV: the id column, `prediction`
    (a value in the target's units, or a class label) and, for a classifier, one
    `probability_<label>` column per class.
    """
    from shrinkage._files import write_atomically

    from .predictor import load_predictor
    from .tabular import read_frame

    if out_path is not None:
        _check_out(out_path, model=model_path, data=data_path)
    predictor = load_predictor(model_path)
    columns = predictor.preprocessing.columns
    text = [c["name"] for c in columns if c["kind"] == "categorical"]
    # the id column as written ("007" stays 007), unless the model reads it as a number
    ids = [id_column] if id_column is not None else ["id", "ID", "Id", "iD"]
    numeric = {c["name"] for c in columns if c["kind"] == "numeric"}
    frame = read_frame(data_path, text_columns=text + [c for c in ids if c not in numeric])
    if id_column is None:
        id_column = next((c for c in frame.columns if c.lower() == "id"), None)
    elif id_column not in frame.columns:
        raise InputError(f"--id must name a column of {data_path.name}, got {id_column!r}")
    table = predictor.table(frame, id_column=id_column, unseen=unseen)
    csv = table.to_csv(index=False)
    if out_path is None:
        click.echo(csv, nl=False)
    else:
        write_atomically(out_path, csv.encode(), what="predictions file")
        click.echo(f"written {out_path} ({len(table)} predictions)", err=True)


def _finite_numbers(option: str, text: str, form: str, count: int) -> tuple[float, ...]:
    """``count`` finite numbers written ``form``, else an error naming ``option``."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise InputError(f"{option} must be {count} finite numbers {form}, got {text!r}")
    return values


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
        raise InputError(f"--out must end in .png or .svg, got {str(out_path)!r}")
    c = _finite_numbers("--center", center, "'x,y'", 2)
    a, b, d = _finite_numbers("--hessian", hessian, "'a,b,c'", 3)
    f = Quadratic(cast(tuple[float, float], c), ((a, b), (b, d)))
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

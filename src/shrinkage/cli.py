"""The ``shrinkage`` command line.

Usage mistakes (bad values, missing files) print one line on stderr and exit with
code 2, never a traceback.
"""

from __future__ import annotations

import sys

import click

from .data import BUNDLED

__all__ = ["main"]


class _Group(click.Group):
    """Turns the library's ValueError/TypeError into one line on stderr, exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (ValueError, TypeError, FileNotFoundError, PermissionError) as error:
            click.echo(f"shrinkage: error: {error}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shrinkage")
def main() -> None:
    """L1, L2, elastic-net and group regularization for PyTorch networks."""


@main.command()
@click.option("--dataset", default="diabetes", show_default=True, type=click.Choice(BUNDLED))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--max-epochs", default=300, show_default=True, type=int)
def demo(dataset: str, seed: int, max_epochs: int) -> None:
    """Train one small network with no penalty, L1, L2 and elastic net; compare them."""
    from rich.console import Console
    from rich.table import Table

    from .demo import run_demo

    console = Console()
    with console.status(f"training 4 models on {dataset}…"):
        rows = run_demo(dataset, seed=seed, max_epochs=max_epochs)
    table = Table(title=f"shrinkage demo — {dataset}, MLP with one hidden layer of 32, Adam, proximal mode")
    for column in ("penalty", "λ", "val loss", "weights = 0", "features used", "epochs"):
        table.add_column(column, justify="left" if column in ("penalty", "features used") else "right")
    for row in rows:
        used = ", ".join(row.features_used)
        table.add_row(
            row.penalty,
            f"{row.lambda_:g}",
            f"{row.val_loss:.4f}",
            f"{100 * row.fraction_zero:.1f}%",
            f"{len(row.features_used)}: {used}",
            str(row.epochs),
        )
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

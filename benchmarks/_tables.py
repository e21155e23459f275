"""Pieces the benchmarks share: writing a table out, the pruning benchmarks' size and
latency rows (Markdown tables)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from shrinkage.prune import PruneReport, _latency_ms


def print_and_save(lines: Sequence[str], out: str | None) -> None:
    """Print the table's ``lines`` and, with ``out``, write them to that file."""
    text = "\n".join(lines)
    print(text)
    if out:
        with open(out, "w") as handle:
            handle.write(text + "\n")


def print_size_and_latency(
    model: torch.nn.Module,
    pruned: torch.nn.Module,
    report: PruneReport,
    make_input: Callable[[int], torch.Tensor],
    *,
    repeats: int,
    threads: int,
) -> None:
    """Parameters, FLOPs and the latency at batch 1, 256 and 4096 (on 1 and ``threads``
    threads), before → after, each latency the median of ``repeats`` alternated runs."""
    print(
        f"| parameters | {report.params_before:,} | {report.params_after:,} | "
        f"{report.params_after / report.params_before:.3f} |"
    )
    print(f"| FLOPs per sample | {report.flops_before:,} | {report.flops_after:,} | {report.flop_ratio:.3f} |")
    for n_threads in sorted({1, threads}):
        torch.set_num_threads(n_threads)
        for batch in (1, 256, 4096):
            x = make_input(batch)
            before, after = _latency_ms([model, pruned], [x, x[:, report.kept_features]], repeats)
            ratio = after / before
            print(
                f"| latency, batch {batch}, {n_threads} thread(s) (median of {repeats}) | {before:.3f} ms | "
                f"{after:.3f} ms | {ratio:.3f} (= {ratio / report.flop_ratio:.2f}× the FLOP ratio) |"
            )
    torch.set_num_threads(threads)

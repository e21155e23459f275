"""The main job, timed as a user runs it: ``shrinkage study`` from the command line.

Two data sets: the bundled diabetes (the default study, ``make demo``) and a wine-like
CSV made here from scikit-learn's ``load_wine`` (178 rows: the 13 numeric columns, a
3-level categorical ``region`` that follows the class 70 % of the time, a ``noise``
column, 2 % of the cells of four columns missing; target ``cultivar``). Each runs with
``--n-jobs 1`` (one process) and with the default (the penalties in one process per
core), alternated, ``--repeats`` times, into a fresh folder each time. The table gives
the median wall time of the whole command (imports, training, store, report) and the
peak resident memory of the study's process (exact: its high-water mark, read when it
ends) and of its whole process tree (workers included, sampled every 0.1 s).

With ``--before SRC`` (the ``src`` folder of an older checkout, e.g. from ``git
worktree add``), the same commands also run that code (on ``PYTHONPATH``), alternated
with this one, and the table puts its figures beside.

    python benchmarks/bench_study.py --repeats 3 --before /tmp/old/src --out benchmarks/results_study.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from sklearn.datasets import load_wine


def wine_like(path: Path, seed: int = 0) -> Path:
    """The wine-like CSV described in the module docstring, written to ``path``."""
    rng = np.random.default_rng(seed)
    frame = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    regions = np.array(["north", "south", "east"])
    follows = rng.random(len(frame)) < 0.7
    frame["region"] = np.where(follows, regions[frame["cultivar"]], rng.choice(regions, len(frame)))
    frame["noise"] = rng.standard_normal(len(frame))
    for column in ("alcohol", "magnesium", "proline", "region"):
        frame.loc[rng.random(len(frame)) < 0.02, column] = np.nan
    frame.to_csv(path, index=False)
    return path


def peak_rss(process: subprocess.Popen) -> tuple[int, int]:
    """Peak RSS of ``process`` and of its process tree (bytes). The process's is exact: the
    kernel's high-water mark, which ``wait4`` gives when it ends. The tree's (the worker
    processes added) is sampled every 0.1 s, so it can miss a short peak."""
    tree = 0
    watched = psutil.Process(process.pid)
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            main = usage.ru_maxrss * 1024  # kilobytes on Linux
            return main, max(tree, main)
        try:
            sizes = [p.memory_info().rss for p in [watched, *watched.children(recursive=True)]]
        except psutil.Error:  # a process ended while being read
            continue
        tree = max(tree, sum(sizes))
        time.sleep(0.1)


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Wall time (s), peak RSS of the process and of its process tree (MB)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    main, tree = (size / 2**20 for size in peak_rss(process))
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {process.stderr.read().decode() if process.stderr else ''}")
    return seconds, main, tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", default=None, help="src folder of an older checkout, run alternated with this one")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    study = [sys.executable, "-m", "shrinkage", "study", "--quiet"]
    versions: dict[str, dict[str, str] | None] = {"now": None}
    if args.before:
        versions = {"before": {**os.environ, "PYTHONPATH": args.before}, "now": None}
    lines = [
        f"2 cores shared, median of {args.repeats} alternated runs of the whole command",
        "",
        "| study | processes | code | wall time | peak RSS, study process | peak RSS, with workers |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        csv = wine_like(Path(folder) / "wine_like.csv")
        cases = {
            "diabetes (default study)": ["--dataset", "diabetes"],
            "wine-like CSV": ["--data", str(csv), "--target", "cultivar"],
        }
        jobs = {"--n-jobs 1": ["--n-jobs", "1"], "default (one per core)": []}
        for name, data in cases.items():
            runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {
                (label, version): [] for label in jobs for version in versions
            }
            for repeat in range(args.repeats):
                for (label, version), figures in runs.items():
                    out = Path(folder) / f"{name[:4]}-{label[:4]}-{version}-{repeat}"
                    figures.append(timed([*study, *data, *jobs[label], "--out", str(out)], versions[version]))
            for (label, version), figures in runs.items():
                wall, main_rss, tree_rss = (statistics.median(column) for column in zip(*figures))
                row = f"| {name} | {label} | {version} | {wall:.1f} s | {main_rss:.0f} MB | {tree_rss:.0f} MB |"
                lines.append(row)
                print(row, flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

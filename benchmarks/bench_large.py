"""A study of a large CSV, timed as a user runs it: ``shrinkage study`` on a generated
file of ``--rows`` rows (default one million) and 50 columns.

The file: 46 numeric columns (the target depends on the first 5), a 4-level categorical
``segment`` that shifts the target, an identifier ``customer`` (text unique to each row,
which the study drops with a note), a ``noise`` column with 1 % missing cells, and the
target ``y``. The command runs once with its progress on the terminal; the table gives
its wall time, the time until its first line of output, the peak resident memory of its
process tree (sampled every 0.1 s) and that peak as a multiple of the file's size.

    python benchmarks/bench_large.py --rows 1000000 --out benchmarks/results_large.md
    python benchmarks/bench_large.py --rows 100000 -- --penalties none,l1   # study options after --
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_study import peak_rss  # (this script's folder is on the path)


def large_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """The CSV described in the module docstring, written in chunks of 100,000 rows."""
    rng = np.random.default_rng(seed)
    segments = np.array(["retail", "online", "wholesale", "partner"])
    effect = np.array([0.0, 1.0, -1.0, 0.5])
    coefficients = np.array([2.0, -1.5, 1.0, 0.75, -0.5])
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        numbers = rng.standard_normal((n, 46)).astype(np.float32)
        segment = rng.integers(0, 4, n)
        frame = pd.DataFrame(numbers, columns=[f"x{i}" for i in range(46)])
        frame.insert(0, "customer", [f"C{start + i:08d}" for i in range(n)])
        frame["segment"] = segments[segment]
        noise = rng.standard_normal(n)
        noise[rng.random(n) < 0.01] = np.nan
        frame["noise"] = noise
        frame["y"] = numbers[:, :5] @ coefficients + effect[segment] + 0.5 * rng.standard_normal(n)
        frame.to_csv(path, mode="w" if start == 0 else "a", header=start == 0, index=False, float_format="%.5g")
    return path


def run(command: list[str]) -> dict[str, float]:
    """Wall time, time to the first line of output (s) and peak RSS of the tree (bytes)."""
    start = time.perf_counter()
    first: list[float] = []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)

    def echo() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if not first:
                first.append(time.perf_counter() - start)
            print(f"  [{time.perf_counter() - start:7.1f} s] {line.rstrip()}", flush=True)

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    _, peak = peak_rss(process)
    reader.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {process.returncode}")
    return {"wall": time.perf_counter() - start, "first": first[0] if first else float("nan"), "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", default=None)
    parser.add_argument("study_options", nargs="*", help="options passed to shrinkage study (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        csv = large_csv(Path(folder) / "large.csv", args.rows)
        size = csv.stat().st_size
        print(f"wrote {csv.name}: {args.rows:,} rows, {size / 2**20:.0f} MiB in {time.perf_counter() - started:.0f} s")
        command = [sys.executable, "-m", "shrinkage", "study", "--data", str(csv), "--target", "y"]
        command += [*args.study_options, "--out", str(Path(folder) / "out")]
        figures = run(command)
    options = " ".join(args.study_options) or "(defaults)"
    lines = [
        f"`shrinkage study` on a generated CSV, 2 cores shared; study options: {options}",
        "",
        "| rows | columns | file | wall time | first output | peak RSS (tree) | peak / file size |",
        "|---|---|---|---|---|---|---|",
        f"| {args.rows:,} | 50 | {size / 2**20:.0f} MiB | {figures['wall']:.0f} s | {figures['first']:.1f} s "
        f"| {figures['peak'] / 2**20:.0f} MiB | {figures['peak'] / size:.1f} |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

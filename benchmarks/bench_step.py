"""Time and memory of one training step with each way of applying a penalty.

A step is forward, backward, the penalty (however it is applied) and the optimizer
step. Variants are timed in the same run, alternated round by round, and reported as
the median time per step and its ratio to the same step without any penalty. Peak
memory is the peak resident set of a fresh process per variant, less the process's
size before it built the model, with glibc made to return freed blocks at once.

    python benchmarks/bench_step.py                 # both models, time and memory
    python benchmarks/bench_step.py --model deep --rounds 30 --no-memory

Models: (a) ``mlp``: 64 → 512 → 512 → 1 (6 parameter tensors), batch 256;
(b) ``deep``: 48 blocks of Linear(256, 256) + LayerNorm + ReLU between an input and an
output layer (196 parameter tensors), batch 128.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from shrinkage import L1, L2, ElasticNet, GroupLasso, Regularizer

LAMBDA = 1e-4


def build(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 1))
        X, y = torch.randn(256, 64), torch.randn(256, 1)
    else:
        width = 256
        layers: list[nn.Module] = [nn.Linear(64, width)]
        for _ in range(48):
            layers += [nn.Linear(width, width), nn.LayerNorm(width), nn.ReLU()]
        layers.append(nn.Linear(width, 1))
        model = nn.Sequential(*layers)
        X, y = torch.randn(128, 64), torch.randn(128, 1)
    return model, X, y


def _weights(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.ndim >= 2]


def _others(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.ndim < 2]


Step = Callable[[], None]


def variant(name: str, model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> Step:
    """A closure that runs one training step of ``model`` the way ``name`` says
    (``…_torchcode``: with the CPU kernels switched off, ``SHRINKAGE_KERNELS=torch``)."""
    if name.endswith("_torchcode"):
        inner = variant(name.removesuffix("_torchcode"), model, X, y)

        def without_kernels() -> None:
            os.environ["SHRINKAGE_KERNELS"] = "torch"
            try:
                inner()
            finally:
                del os.environ["SHRINKAGE_KERNELS"]

        return without_kernels
    adam = name.startswith("adam")
    make = (
        (lambda ps: torch.optim.Adam(ps, lr=1e-3)) if adam else (lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9))
    )
    kind = name.removeprefix("adam_")
    extra: Callable[[], torch.Tensor] | None = None
    if kind == "torch_weight_decay":
        opt = torch.optim.SGD(
            [{"params": _weights(model), "weight_decay": 2 * LAMBDA}, {"params": _others(model)}],
            lr=1e-3,
            momentum=0.9,
        )
    else:
        opt = make(model.parameters())
    if kind == "seed_loss_l1":  # the seeds' code: a Python sum over parameters()
        extra = lambda: LAMBDA * sum(p.abs().sum() for p in model.parameters())  # noqa: E731
    elif kind not in ("none", "torch_weight_decay"):
        mode, penalty = kind.split("_", 1)
        pen = {
            "l1": L1(LAMBDA),
            "l2": L2(LAMBDA),
            "en": ElasticNet(LAMBDA, 0.5),
            "group": GroupLasso(LAMBDA, groups="input"),
            # centred on the weights at the start (fine-tuning): the penalty of w − w₀
            "l1c": L1(LAMBDA, center="initial"),
            "l2c": L2(LAMBDA, center="initial"),
        }[penalty]
        reg = Regularizer(model, pen, mode=mode)
        reg.attach(opt)
        if mode == "loss":
            extra = reg.penalty

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(X), y)
        if extra is not None:
            loss = loss + extra()
        loss.backward()
        opt.step()

    return step


VARIANTS = [
    "none",
    "torch_weight_decay",
    "seed_loss_l1",
    "loss_l1",
    "gradient_l1",
    "gradient_l2",
    "gradient_en",
    "proximal_l1",
    "proximal_en",
    "proximal_group",
    "adam_none",
    "adam_proximal_l1",
    "adam_proximal_en",
    "adam_proximal_group",
    "adam_proximal_l1_torchcode",
    "adam_proximal_en_torchcode",
    "adam_proximal_group_torchcode",
    "gradient_l2c",
    "proximal_l1c",
    "adam_proximal_l1c",
]


def time_variants(model_name: str, rounds: int, steps: int, names: list[str]) -> dict[str, float]:
    """Median seconds per step for each variant, variants alternated in every round.

    Every round builds every variant afresh (model, optimizer, regularizer), so that
    where the allocator happened to place one variant's tensors cannot bias it in
    every round.
    """
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            model, X, y = build(model_name)
            step = variant(name, model, X, y)
            for _ in range(2):  # warm up: optimizer state, allocator
                step()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            samples[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in samples.items()}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_child(model_name: str, name: str, steps: int) -> int:
    """In a fresh process: peak RSS during ``steps`` steps less the RSS before the model."""
    torch.set_num_threads(1)
    warm, X0, y0 = build("mlp")  # load torch's kernels before the baseline reading
    variant("none", warm, X0, y0)()
    del warm
    before = _rss_bytes()
    model, X, y = build(model_name)
    step = variant(name, model, X, y)
    for _ in range(steps):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak - before


def peak_memory(model_name: str, names: list[str], repeats: int, steps: int) -> dict[str, float]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    samples: dict[str, list[int]] = {n: [] for n in names}
    for _ in range(repeats):
        for name in names:
            out = subprocess.run(
                [sys.executable, __file__, "--child", model_name, name, str(steps)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            samples[name].append(int(out.stdout.strip().splitlines()[-1]))
    return {n: statistics.median(v) for n, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["mlp", "deep", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, help="a subset (baselines are added)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(peak_memory_child(args.child[0], args.child[1], int(args.child[2])))
        return
    torch.set_num_threads(args.threads)
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {args.threads} torch thread(s), "
        f"{time.strftime('%Y-%m-%d')}, median of {args.rounds} rounds × {args.steps} steps"
    )
    results = {}
    for model_name in ["mlp", "deep"] if args.model == "both" else [args.model]:
        model, _, _ = build(model_name)
        n_tensors = sum(1 for _ in model.parameters())
        names = (
            VARIANTS
            if not args.variants
            else [v for v in VARIANTS if v in args.variants or v in ("none", "adam_none", "torch_weight_decay")]
        )
        times = time_variants(model_name, args.rounds, args.steps, names)
        memory = (
            {}
            if args.no_memory
            else peak_memory(
                model_name,
                [
                    "none",
                    "torch_weight_decay",
                    "seed_loss_l1",
                    "loss_l1",
                    "gradient_l1",
                    "proximal_l1",
                    "proximal_group",
                    "adam_none",
                    "adam_proximal_l1",
                    "adam_proximal_group",
                ],
                repeats=3,
                steps=5,
            )
        )
        print(f"\n## ({'a' if model_name == 'mlp' else 'b'}) {model_name}: {n_tensors} parameter tensors")
        print("| variant | ms / step | ratio | peak memory ratio |")
        print("|---|---|---|---|")
        for name in names:
            base = "adam_none" if name.startswith("adam") else "none"
            ratio = times[name] / times[base]
            mem = f"{memory[name] / memory[base]:.3f}" if name in memory else ""
            print(f"| {name} | {1e3 * times[name]:.3f} | {ratio:.3f} | {mem} |")
        l2_vs_torch = times["gradient_l2"] / times["torch_weight_decay"] if "gradient_l2" in times else None
        if l2_vs_torch is not None:
            print(f"\ngradient_l2 / torch_weight_decay: {l2_vs_torch:.3f}")
        results[model_name] = {"times": times, "memory": memory, "l2_vs_torch": l2_vs_torch}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

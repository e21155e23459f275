"""The proximal step on a GPU: its cost beside the optimizer's, its floors, its memory.

    python benchmarks/bench_gpu.py --out results_gpu.md              # this checkout
    python benchmarks/bench_gpu.py --before path/to/old/src --out …  # and an older one

A GPT of 163 M parameters (12 layers, width 768, 12 heads, vocabulary 50 304, untied
output layer), batch 16 × 512 tokens, bfloat16 autocast, fused AdamW
(``weight_decay=0``). For each way of applying a penalty (λ = 1e-5, default selection:
every weight matrix and the embeddings):

- ``optimizer.step()`` alone (the prox runs inside it, from its step hook), median of
  CUDA-event timings; the penalty's own cost is this less AdamW alone;
- the floor of that cost: the bytes it must move (read the weights and Adam's second
  moment, write the weights: 12 bytes per penalized float32 weight; the gradient mode
  reads the weights and the gradient and writes the gradient) over the measured
  device-to-device copy bandwidth;
- the whole training step (forward, backward, step), as a ratio to no penalty;
- the extra memory during the step: peak allocated in ``step()`` less allocated before.

``BENCH_PROFILE_HOST=1`` also prints where the host's time in the prox hook goes
(cProfile), to standard error. Every code version runs in its own process (``--before`` puts an older ``src`` first on
``sys.path``; ``SHRINKAGE_KERNELS=torch`` is this checkout's torch code on the GPU),
variants alternated within it. Prints a Markdown table and the goals of issue 15.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ["none", "l1", "elastic_net", "l2", "group_input", "group_unit", "l1_gradient"]


def child(rounds: int, steps: int) -> dict:
    import torch
    from torch import nn

    import shrinkage
    from shrinkage import L1, L2, ElasticNet, GroupLasso, Regularizer

    torch.backends.cuda.matmul.allow_tf32 = True
    device = "cuda"

    class Block(nn.Module):
        def __init__(self, width: int, heads: int):
            super().__init__()
            self.heads = heads
            self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            attention = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(attention.transpose(1, 2).reshape(b, t, c))
            return x + self.down(nn.functional.gelu(self.up(self.norm2(x))))

    class GPT(nn.Module):
        def __init__(self, vocab=50304, width=768, layers=12, heads=12, context=512):
            super().__init__()
            self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(context, width)
            self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
            self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)

        def forward(self, idx):
            x = self.tokens(idx) + self.positions(torch.arange(idx.shape[1], device=idx.device))
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x))

    torch.manual_seed(0)
    model = GPT().to(device)
    params = sum(p.numel() for p in model.parameters())
    idx = torch.randint(0, 50304, (16, 512), device=device)
    target = torch.randint(0, 50304, (16, 512), device=device)
    lam = 1e-5
    penalties = {
        "l1": (L1(lam), "proximal"),
        "elastic_net": (ElasticNet(lam, 0.5), "proximal"),
        "l2": (L2(lam), "proximal"),
        "group_input": (GroupLasso(lam, groups="input"), "proximal"),
        "group_unit": (GroupLasso(lam, groups="unit"), "proximal"),
        "l1_gradient": (L1(lam), "gradient"),
    }
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def setup(variant: str):
        model.load_state_dict(initial)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True)
        reg = None
        if variant != "none":
            penalty, mode = penalties[variant]
            reg = Regularizer(model, penalty, mode=mode)
            reg.attach(opt)
        return opt, reg

    def train_step(opt):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(idx).flatten(0, 1), target.flatten())
        loss.backward()
        opt.step()

    def timed(fn, n: int) -> list[float]:
        out = []
        for _ in range(n):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
        return out

    penalized = {}
    for variant in VARIANTS[1:]:
        _, reg = setup(variant)
        tensors = list(reg.parameters())
        penalized[variant] = (sum(t.numel() for t in tensors), max(t.numel() * t.element_size() for t in tensors))
        reg.detach()

    samples: dict[str, dict[str, list[float]]] = {v: {"step": [], "train": [], "memory": []} for v in VARIANTS}
    for r in range(rounds):
        for variant in VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]:
            opt, reg = setup(variant)
            for _ in range(3):
                train_step(opt)  # the optimizer's state, the kernels' compilation and tables
            torch.cuda.synchronize()
            samples[variant]["train"] += timed(lambda o=opt: train_step(o), steps)
            # the step alone, on the last gradients (the weights move a little each time)
            samples[variant]["step"] += timed(opt.step, steps)
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            opt.step()
            torch.cuda.synchronize()
            samples[variant]["memory"].append(torch.cuda.max_memory_allocated() - before)
            if reg is not None:
                reg.detach()
    # where the penalty's time goes: the host's time in the prox hook (no sync), and the
    # device's time for the same call
    host: dict[str, dict[str, float]] = {}
    for variant in ("l1", "group_input", "group_unit"):
        opt, reg = setup(variant)
        train_step(opt)
        train_step(opt)
        torch.cuda.synchronize()
        walls = []
        for _ in range(20):
            start = time.perf_counter()
            reg._after_step(opt, (), {})
            walls.append((time.perf_counter() - start) * 1e3)
        torch.cuda.synchronize()
        host[variant] = {
            "host_ms": statistics.median(walls),
            "device_ms": statistics.median(timed(lambda r=reg, o=opt: r._after_step(o, (), {}), 20)),
        }
        if os.environ.get("BENCH_PROFILE_HOST"):  # where the host's time goes, to stderr
            import cProfile
            import pstats

            profile = cProfile.Profile()
            profile.runcall(lambda r=reg, o=opt: [r._after_step(o, (), {}) for _ in range(20)])
            print(f"--- {variant}: host profile of 20 prox hooks", file=sys.stderr)
            pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(15)
        reg.detach()
    # device-to-device copy bandwidth, bytes read and written
    src = torch.empty(2**28, device=device)
    dst = torch.empty_like(src)
    copy_ms = statistics.median(timed(lambda: dst.copy_(src), 20))
    bandwidth = 2 * src.numel() * 4 / (copy_ms / 1e3)
    return {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(),
        "shrinkage": shrinkage.__file__,
        "kernels": os.environ.get("SHRINKAGE_KERNELS", "triton"),
        "params": params,
        "bandwidth": bandwidth,
        "penalized": penalized,
        "step_ms": {v: statistics.median(s["step"]) for v, s in samples.items()},
        "train_ms": {v: statistics.median(s["train"]) for v, s in samples.items()},
        "memory": {v: statistics.median(s["memory"]) for v, s in samples.items()},
        "hook": host,
    }


def run_version(label: str, src: str, kernels: str | None, rounds: int, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if kernels:
        env["SHRINKAGE_KERNELS"] = kernels
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(rounds), str(steps)], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"{label} failed:\n{out.stderr[-4000:]}")
    if os.environ.get("BENCH_PROFILE_HOST"):
        print(f"=== {label}\n{out.stderr}", file=sys.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["label"] = label
    return result


def table(results: list[dict]) -> str:
    first = results[0]
    bandwidth = first["bandwidth"]
    lines = [
        f"# {first['device']}, torch {first['torch']}, GPT of {first['params'] / 1e6:.0f} M parameters, "
        f"batch 16×512, bf16 autocast, fused AdamW; copy bandwidth {bandwidth / 1e12:.2f} TB/s (read + write)",
        "",
        "| variant | code | step() ms | penalty ms | floor ms | × floor | whole step × none | extra memory MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        for result in results:
            step = result["step_ms"][variant]
            base = result["step_ms"]["none"]
            train = result["train_ms"][variant] / result["train_ms"]["none"]
            memory = result["memory"][variant] / 2**20
            if variant == "none":
                floor = 28 * result["params"] / bandwidth * 1e3  # fused AdamW: p, g, m, v read; p, m, v written
                row = f"| AdamW alone | {result['label']} | {step:.2f} | — | {floor:.2f} | {step / floor:.2f} | 1.000 |"
                lines.append(f"{row} {memory:.0f} |")
                continue
            numel, _ = result["penalized"][variant]
            floor = 12 * numel / bandwidth * 1e3
            extra = step - base
            lines.append(
                f"| {variant} | {result['label']} | {step:.2f} | {extra:+.2f} | {floor:.2f} | {extra / floor:.2f} | "
                f"{train:.3f} | {memory:.0f} |"
            )
    new = results[-1]
    largest = max(size for _, size in new["penalized"].values()) / 2**20
    lines += ["", f"Largest penalized tensor: {largest:.0f} MiB.", ""]
    goals = []
    for variant in VARIANTS[1:]:
        numel, _ = new["penalized"][variant]
        extra = new["step_ms"][variant] - new["step_ms"]["none"]
        goals.append(f"{variant}: {extra / (12 * numel / bandwidth * 1e3):.2f}× floor (goal ≤ 1.5)")
    l1 = new["step_ms"]["l1"] - new["step_ms"]["none"]
    for variant in ("group_input", "group_unit"):
        goals.append(f"{variant} / l1 prox: {(new['step_ms'][variant] - new['step_ms']['none']) / l1:.2f} (goal ≤ 2)")
    for variant in VARIANTS[1:]:
        goal = 1.05 if variant.startswith("group") else 1.03
        goals.append(f"{variant} whole step: {new['train_ms'][variant] / new['train_ms']['none']:.3f} (goal ≤ {goal})")
    for variant in VARIANTS[1:]:
        goals.append(f"{variant} extra memory: {new['memory'][variant] / 2**20:.0f} MiB (goal ≤ {largest:.0f})")
    lines += [f"Goals, {new['label']}:", ""] + [f"- {g}" for g in goals]
    lines += ["", "The prox hook alone, ms (host: wall time without a sync; device: CUDA events):", ""]
    for result in results:
        for variant, times in result.get("hook", {}).items():
            lines.append(f"- {result['label']} {variant}: host {times['host_ms']:.3f}, device {times['device_ms']:.3f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="the src folder of an older shrinkage, measured first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", help="also write the table here")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    here = str(Path(__file__).resolve().parents[1] / "src")
    results = []
    if args.before:
        results.append(run_version("before", args.before, None, args.rounds, args.steps))
    results.append(run_version("torch code", here, "torch", args.rounds, args.steps))
    results.append(run_version("kernels", here, None, args.rounds, args.steps))
    text = table(results)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

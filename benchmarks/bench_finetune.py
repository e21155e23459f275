"""Fine-tuning a small pretrained transformer: sparse deltas and L2-SP.

Model: a BERT-style classifier built from a config (Hugging Face ``transformers``, no
download): vocabulary 48, 2 layers, width 64, 4 heads, sequences of 20 tokens.

Tasks (synthetic, with known truth): a sequence is positive when at least 7 of its 20
tokens belong to a set of 16 token ids.

- Pretraining, task A: the set is tokens 1–16 (6,000 rows, 6 epochs of AdamW).
- Target, task B: the set is tokens 5–20 — four tokens leave the set and four join it,
  so the related task needs only part of what the network knows to change.

1. **Sparse fine-tuning** on 1,000 rows of B, 20 epochs, Adam(lr=3e-3): full fine-tuning
   against ``L1(λ, center="initial")`` on every tensor (``Rule(..., select="*")``) in mode
   ``proximal``. Figures: test accuracy (4,000 rows), the share of the weight change
   that is exactly zero, the size of :func:`shrinkage.delta.save_delta`'s file against
   a full safetensors checkpoint, and whether the model rebuilt from base + delta gives
   the fine-tuned outputs bit for bit.
2. **L2-SP on a small target** (``--rows`` rows of B, default 200; ``--seeds``
   training subsets; 30 epochs of Adam(lr=3e-3)): plain fine-tuning, weight decay
   toward zero (decoupled L2 on the layer weights, as AdamW's ``weight_decay``) and
   toward the pretrained weights (L2-SP: the same decay with ``center="initial"``), at
   three strengths, and the sparse fine-tuning of 1. Figures: mean ± standard deviation
   of the test accuracy over the subsets, and how far the layer weights moved
   (‖w − w₀‖ / ‖w₀‖).

    python benchmarks/bench_finetune.py [--rows 200] [--seeds 5] [--out results_finetune.md]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import BertConfig, BertForSequenceClassification

from shrinkage import L1, L2, Regularizer, Rule
from shrinkage.delta import load_delta, save_delta

VOCAB, LENGTH, THRESHOLD = 48, 20, 7
TASK_A, TASK_B = list(range(1, 17)), list(range(5, 21))


def task(rows: int, members: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences and their labels: at least THRESHOLD tokens from ``members``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, VOCAB, (rows, LENGTH), generator=g)
    return x, (torch.isin(x, torch.tensor(members)).sum(1) >= THRESHOLD).long()


def make_model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=LENGTH,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def train(model, x, y, *, epochs: int, lr: float, reg: Regularizer | None = None, weight_decay=0.0, seed=0):
    """Mini-batches of 64 in a seeded order; the regularizer (if any) attached to Adam."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if reg is not None:
        reg.attach(optimizer)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), 64):
            rows = order[start : start + 64]
            optimizer.zero_grad()
            model(input_ids=x[rows], labels=y[rows]).loss.backward()
            optimizer.step()
    if reg is not None:
        reg.detach()
    return model


@torch.no_grad()
def logits(model, x) -> torch.Tensor:
    model.eval()
    return model(input_ids=x).logits


def accuracy(model, x, y) -> float:
    return float((logits(model, x).argmax(1) == y).float().mean())


def unchanged(model, base: dict[str, torch.Tensor]) -> float:
    """Share of all entries of the state dict bit-identical to the pretrained ones."""
    now = model.state_dict()
    same = sum(int((now[k] == base[k]).sum()) for k in base)
    return same / sum(v.numel() for v in base.values())


def moved(model, base: dict[str, torch.Tensor]) -> float:
    """‖w − w₀‖ / ‖w₀‖ over the layer weights (ndim ≥ 2)."""
    now = model.state_dict()
    keys = [k for k, v in base.items() if v.ndim >= 2]
    change = sum(float((now[k] - base[k]).pow(2).sum()) for k in keys)
    return (change / sum(float(base[k].pow(2).sum()) for k in keys)) ** 0.5


def sparse_finetuning(base_model, base, lam: float, folder: Path) -> list[str]:
    x, y = task(1000, TASK_B, seed=3)
    x_test, y_test = task(4000, TASK_B, seed=4)
    rows = ["| fine-tuning | test accuracy | change exactly zero | file | size |", "|---|---|---|---|---|"]
    full_path = folder / "full.safetensors"
    full = train(copy.deepcopy(base_model), x, y, epochs=20, lr=3e-3)
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(full_path))
    full_size = full_path.stat().st_size
    rows.append(
        f"| full | {accuracy(full, x_test, y_test):.4f} | {unchanged(full, base):.1%} | full checkpoint | "
        f"{full_size / 1e3:.1f} kB |"
    )
    sparse = copy.deepcopy(base_model)
    reg = Regularizer(sparse, Rule(L1(lam, center="initial"), select="*"))
    train(sparse, x, y, epochs=20, lr=3e-3, reg=reg)
    report = save_delta(sparse, base, folder / "delta.safetensors")
    rebuilt = make_model()
    rebuilt.load_state_dict(load_delta(folder / "delta.safetensors", base))
    identical = torch.equal(logits(rebuilt, x_test), logits(sparse, x_test))
    delta_size = (folder / "delta.safetensors").stat().st_size
    rows.append(
        f'| sparse: L1(λ={lam:g}, center="initial"), proximal, every tensor | '
        f"{accuracy(sparse, x_test, y_test):.4f} | "
        f"{unchanged(sparse, base):.1%} | delta | {delta_size / 1e3:.1f} kB = {delta_size / full_size:.1%} of "
        f"the full checkpoint |"
    )
    penalized = reg.sparsity()
    rows += [
        "",
        f"- Of the penalized entries ({penalized.numel:,}, every tensor), "
        f"{penalized.fraction_zero:.1%} did not change.",
        f"- `save_delta`: {report}.",
        f"- The model rebuilt from the base and the delta (`load_delta`) gives the fine-tuned logits on the "
        f"4,000 test rows bit for bit: {'yes' if identical else 'NO'}.",
        f"- The pretrained model scores {accuracy(base_model, x_test, y_test):.4f} on task B before fine-tuning.",
    ]
    return rows


def l2_sp(base_model, base, n_rows: int, seeds: int, lam: float) -> list[str]:
    x_test, y_test = task(4000, TASK_B, seed=4)
    methods: dict[str, tuple[object, str] | None] = {"plain fine-tuning": None}
    for wd in (0.1, 1.0, 10.0):  # AdamW's weight_decay=wd is decoupled L2 with λ = wd/2
        methods[f"weight decay toward 0, wd={wd:g}"] = (L2(wd / 2), "decoupled")
        methods[f"L2-SP (toward w₀), wd={wd:g}"] = (L2(wd / 2, center="initial"), "decoupled")
    methods[f'sparse: L1(λ={lam:g}, center="initial"), proximal, every tensor'] = (
        Rule(L1(lam, center="initial"), select="*"),
        "proximal",
    )
    rows = [
        f"| {n_rows} rows of task B, {seeds} subsets | test accuracy, mean ± sd | ‖w − w₀‖ / ‖w₀‖ |",
        "|---|---|---|",
    ]
    for name, penalty in methods.items():  # penalty: (rules, mode) or None
        scores, distances = [], []
        for seed in range(seeds):
            x, y = task(n_rows, TASK_B, seed=100 + seed)
            model = copy.deepcopy(base_model)
            reg = None if penalty is None else Regularizer(model, penalty[0], mode=penalty[1])
            train(model, x, y, epochs=30, lr=3e-3, reg=reg, seed=seed)
            scores.append(accuracy(model, x_test, y_test))
            distances.append(moved(model, base))
        rows.append(
            f"| {name} | {statistics.mean(scores):.4f} ± {statistics.stdev(scores):.4f} | "
            f"{statistics.mean(distances):.3f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200, help="rows of task B for the L2-SP table")
    parser.add_argument("--seeds", type=int, default=5, help="training subsets for the L2-SP table")
    parser.add_argument("--lam", type=float, default=3e-3, help="λ of the sparse fine-tuning")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    x, y = task(6000, TASK_A, seed=1)
    x_test, y_test = task(2000, TASK_A, seed=2)
    start = time.perf_counter()
    base_model = train(make_model(), x, y, epochs=6, lr=2e-3)
    base = copy.deepcopy(base_model.state_dict())
    lines = [
        f"Pretrained on task A in {time.perf_counter() - start:.0f} s: test accuracy "
        f"{accuracy(base_model, x_test, y_test):.4f}; "
        f"{sum(v.numel() for v in base.values()):,} entries in the state dict.",
        "",
        "## Sparse fine-tuning (1,000 rows of task B)",
        "",
    ]
    with tempfile.TemporaryDirectory() as folder:
        lines += sparse_finetuning(base_model, base, args.lam, Path(folder))
    lines += ["", f"## L2-SP on a small target ({args.rows} rows of task B)", ""]
    lines += l2_sp(base_model, base, args.rows, args.seeds, args.lam)
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
        args.out.write_text(
            "# Fine-tuning a small transformer: sparse deltas and L2-SP\n\n"
            f"`python benchmarks/bench_finetune.py --rows {args.rows} --seeds {args.seeds} --lam {args.lam:g}` "
            f"({os.cpu_count()} CPU cores, {versions}, {datetime.date.today()}; what it does is in the "
            f"script's docstring). One run; the L2-SP table is over {args.seeds} training subsets.\n\n{text}\n"
        )


if __name__ == "__main__":
    main()

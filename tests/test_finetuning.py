"""Sparse fine-tuning end to end, as the fine-tuning guide tells it: a small transformer
built from a config is pretrained briefly on one synthetic task, fine-tuned on a related
one by a Hugging Face ``Trainer`` with ``L1(λ, center="initial")`` on every tensor, and
shipped as a delta from the pretrained weights.

Oracles: the task's known truth (accuracy on the related task rises from the pretrained
model's), bit-for-bit equality of the weights and outputs rebuilt from base + delta, and
the share of entries equal to the pretrained ones counted independently of the library.
"""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the huggingface extra")

from shrinkage import L1, Rule  # noqa: E402
from shrinkage.delta import apply_delta, save_delta  # noqa: E402
from shrinkage.huggingface import RegularizerCallback  # noqa: E402

VOCAB, LENGTH = 24, 12


def _task(rows: int, members: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive when at least 4 of the 12 tokens are in ``members``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, VOCAB, (rows, LENGTH), generator=g)
    return x, (torch.isin(x, torch.tensor(members)).sum(1) >= 4).long()


def _accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(input_ids=x).logits.argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def pretrained():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=LENGTH,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = transformers.BertForSequenceClassification(config)
    x, y = _task(2000, list(range(1, 9)), seed=1)  # task A: tokens 1–8
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(4):
        for start in range(0, len(x), 64):
            optimizer.zero_grad()
            model(input_ids=x[start : start + 64], labels=y[start : start + 64]).loss.backward()
            optimizer.step()
    assert _accuracy(model, *_task(500, list(range(1, 9)), seed=2)) > 0.9
    return model


def test_sparse_fine_tuning_with_the_trainer_ships_as_a_small_exact_delta(pretrained, tmp_path):
    members = list(range(3, 11))  # task B: two tokens leave the set, two join it
    x, y = _task(600, members, seed=3)
    x_test, y_test = _task(1000, members, seed=4)
    base = copy.deepcopy(pretrained.state_dict())
    model = copy.deepcopy(pretrained)
    rows = [{"input_ids": row, "labels": int(label)} for row, label in zip(x, y)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "run"),
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        per_device_train_batch_size=32,
        num_train_epochs=6,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        weight_decay=0.0,
        logging_steps=20,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows)
    RegularizerCallback(Rule(L1(3e-3, center="initial"), select="*")).add_to(trainer)
    trainer.train()

    before, after = _accuracy(pretrained, x_test, y_test), _accuracy(model, x_test, y_test)
    assert before < 0.8 and after > 0.95, (before, after)  # it learned the related task
    now = model.state_dict()
    same = sum(int((now[k] == base[k]).sum()) for k in base)
    total = sum(v.numel() for v in base.values())
    assert same / total > 0.9  # most of the change is exactly zero
    logged = [entry["sparsity"] for entry in trainer.state.log_history if "sparsity" in entry]
    assert logged and logged[-1] == pytest.approx(same / total, abs=0.02)  # every tensor is penalized

    report = save_delta(model, base, tmp_path / "delta.safetensors")
    assert report.ratio < 0.25 and report.changed == total - same  # small files: headers weigh
    rebuilt = copy.deepcopy(pretrained)
    apply_delta(rebuilt, tmp_path / "delta.safetensors")
    for key, value in rebuilt.state_dict().items():
        assert torch.equal(value, now[key]), key
    rebuilt.eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(input_ids=x_test).logits, model(input_ids=x_test).logits)

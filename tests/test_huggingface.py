"""Hugging Face Trainer: RegularizerCallback gives, in every mode, the weights a plain
PyTorch loop with an attached Regularizer gives on the same batches — with gradient
clipping, gradient accumulation (both ways the Trainer scales the loss) and bf16
autocast; exact zeros in proximal mode; no prox on a step the fp16 GradScaler skips;
the penalty and the sparsity in the Trainer's logs; the centres of a centred penalty
saved in each checkpoint and restored on resuming, as an uninterrupted run has them."""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers", reason="Transformers is the optional extra shrinkage[huggingface]")

from accelerate import Accelerator  # noqa: E402  (the Trainer's own dependency)
from accelerate.optimizer import AcceleratedOptimizer  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from helpers import free_port  # noqa: E402
from shrinkage import L1, L2, ElasticNet, GroupLasso, InputError, Regularizer, Rule  # noqa: E402
from shrinkage.huggingface import STATE_FILE, RegularizerCallback  # noqa: E402

transformers.logging.set_verbosity_error()
logging.getLogger("accelerate").setLevel(logging.ERROR)

VOCAB, LENGTH, BATCH, LR, CLIP = 32, 8, 8, 1e-2, 0.02

CASES = {  # mode: penalty
    "proximal": lambda: L1(1e-4),
    "gradient": lambda: ElasticNet(1e-2, 0.5),
    "decoupled": lambda: Rule(L2(1e-2), select="bert.encoder.*"),
    "loss": lambda: GroupLasso(1e-2, groups="input"),
}


def _bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
    )
    return LlamaForCausalLM(config)


def _classification_data(n_batches: int) -> list[dict]:
    """Rows of token ids; the label says whether token 3 occurs."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (n_batches * BATCH, LENGTH), generator=g)
    labels = (ids == 3).any(dim=1).long()
    return [{"input_ids": i, "labels": y} for i, y in zip(ids, labels)]


def _language_data(n_batches: int) -> list[dict]:
    """Rows of token ids to predict, with a varying number of masked (-100) targets per row,
    so that each micro-batch holds a different number of items."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (n_batches * BATCH, LENGTH), generator=g)
    labels = ids.clone()
    masked = torch.arange(LENGTH) < torch.randint(0, LENGTH - 2, (len(ids), 1), generator=g)
    labels[masked] = -100
    return [{"input_ids": i, "labels": y} for i, y in zip(ids, labels)]


def _batches(rows: list[dict], size: int = BATCH) -> list[dict]:
    """The Trainer's batches of a sequential sampler."""
    return [
        {key: torch.stack([row[key] for row in rows[i : i + size]]) for key in rows[0]}
        for i in range(0, len(rows), size)
    ]


def _trainer(model, rows, tmp_path, callbacks, **overrides) -> Trainer:
    args = {
        "output_dir": str(tmp_path),
        "report_to": [],
        "use_cpu": True,
        "save_strategy": "no",
        "per_device_train_batch_size": BATCH,
        "num_train_epochs": 1,
        "learning_rate": LR,
        "lr_scheduler_type": "constant",
        "optim": "adamw_torch",  # torch.optim.AdamW, weight_decay=0
        "max_grad_norm": CLIP,
        "logging_steps": 2,
        "disable_tqdm": True,
        **overrides,
    }
    return _SequentialTrainer(model=model, args=TrainingArguments(**args), train_dataset=rows, callbacks=callbacks)


class _SequentialTrainer(Trainer):
    """The rows in their order, as the plain loop takes them (``train_sampling_strategy=
    "sequential"`` says the same on recent transformers only)."""

    def _get_train_sampler(self, *args, **kwargs):
        return torch.utils.data.SequentialSampler(self.train_dataset)


def _plain_loop(model, penalty, mode, batches, *, accumulation=1, normalized=False, bf16=False, fused=False):
    """The same training without the Trainer: the oracle. Steps of ``accumulation``
    micro-batches (fewer in the last), each micro-batch's mean loss divided by their
    number — or, ``normalized``, the token loss summed and divided by the step's item
    count; the penalty (mode loss) counted once per step; clipping after the backward.
    Returns the regularizer and the penalty and sparsity after each step."""
    reg = Regularizer(model, penalty, mode=mode)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, fused=fused or None)
    reg.attach(optimizer)
    model.train()
    penalties, sparsities = [], []
    for start in range(0, len(batches), accumulation):
        step = batches[start : start + accumulation]
        items = sum(int(b["labels"][:, 1:].ne(-100).sum()) for b in step) if normalized else None
        for index, batch in enumerate(step):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                if normalized:  # next-token loss, summed, over the step's items
                    logits = model(input_ids=batch["input_ids"]).logits
                    targets = batch["labels"][:, 1:].reshape(-1)
                    loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB).float(), targets, reduction="sum")
                    loss = loss / items
                else:
                    loss = model(**batch).loss.float() / len(step)
            if mode == "loss" and not normalized:
                loss = loss + reg.penalty() / len(step)
            elif mode == "loss" and index == len(step) - 1:
                loss = loss + reg.penalty()
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        optimizer.zero_grad()
        penalties.append(sum(reg.values().values()))
        sparsities.append(reg.sparsity().fraction_zero)
    return reg, penalties, sparsities


def _assert_same_weights(ours, theirs, rtol=1e-5, atol=1e-6):
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol, msg=name)


def _training_logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("mode", list(CASES))
def test_callback_equals_a_plain_loop(mode, tmp_path):
    model = _bert()
    oracle = copy.deepcopy(model)
    rows = _classification_data(4)
    callback = RegularizerCallback(CASES[mode](), mode=mode)
    trainer = _trainer(model, rows, tmp_path, [callback])
    trainer.train()
    reg, penalties, sparsities = _plain_loop(oracle, CASES[mode](), mode, _batches(rows))
    _assert_same_weights(model, oracle)

    logs = _training_logs(trainer)
    assert [entry["step"] for entry in logs] == [2, 4]
    assert all(entry["grad_norm"] > CLIP for entry in logs)  # the clipping acted
    for entry, steps in zip(logs, (slice(0, 2), slice(2, 4))):  # averaged over the steps since the last log
        assert entry["penalty"] == pytest.approx(sum(penalties[steps]) / 2, rel=1e-5)
        assert entry["sparsity"] == pytest.approx(sparsities[steps][-1])
    assert logs[-1]["sparsity"] == callback.regularizer.sparsity().fraction_zero
    if mode == "proximal":
        assert reg.sparsity().zeros > 0  # exact zeros
    # detached when training ended: the optimizer's step hooks and the model's forward hook are gone
    assert callback.regularizer._optimizer is None
    assert not model._forward_hooks


@pytest.mark.parametrize(
    ("mode", "scaling"),
    [("loss", "divided"), ("loss", "normalized"), ("proximal", "normalized"), ("gradient", "divided")],
)
def test_gradient_accumulation_counts_the_penalty_once_per_step(mode, scaling, tmp_path):
    """Five micro-batches, two per step: steps of 2, 2 and 1. ``divided``: the model's
    loss is a per-micro-batch mean, which the Trainer divides by the step's micro-batches;
    ``normalized``: a causal LM normalizes its loss by the step's item count
    (``num_items_in_batch``) and the Trainer leaves it as it is."""
    if scaling == "divided":
        model, rows = _bert(), _classification_data(5)
        model.accepts_loss_kwargs = False  # a per-micro-batch mean: the Trainer divides it
    else:
        model, rows = _llama(), _language_data(5)
    oracle = copy.deepcopy(model)
    penalty = {"loss": lambda: ElasticNet(1e-2, 0.5), "proximal": lambda: L1(1e-3), "gradient": lambda: L1(1e-2)}
    trainer = _trainer(
        model, rows, tmp_path, [RegularizerCallback(penalty[mode](), mode=mode)], gradient_accumulation_steps=2
    )
    trainer.train()
    assert trainer.state.global_step == 3
    _plain_loop(oracle, penalty[mode](), mode, _batches(rows), accumulation=2, normalized=scaling == "normalized")
    _assert_same_weights(model, oracle)


def _ddp_worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    model = _llama()
    callback = RegularizerCallback(ElasticNet(1e-2, 0.5), mode="loss")
    trainer = _trainer(
        model, _language_data(8), folder, [callback], gradient_accumulation_steps=2, ddp_backend="gloo", ddp_timeout=120
    )
    try:
        trainer.train()
        if rank == 0:
            torch.save({n: p.detach() for n, p in model.named_parameters()}, f"{folder}/weights.pt")
    finally:
        torch.distributed.destroy_process_group()
    # the work is done and saved: leave now. The interpreter's own shutdown sometimes
    # never ends in a process that ran gloo and Accelerate (a native hang, about one run
    # in ten here), and spawn would wait for it forever; exit code 0 is success to spawn
    os._exit(0)


@pytest.mark.skipif(sys.platform == "win32" or not torch.distributed.is_gloo_available(), reason="gloo on loopback")
def test_ddp_mode_loss_counts_the_penalty_once(tmp_path):
    """Two processes (gloo): each rank's micro-batch is normalized by the item count of
    both ranks and multiplied by their number (``average_tokens_across_devices``), then
    DDP averages the gradients; the penalty, divided by the number of ranks beforehand,
    counts once — as one process on the same global batches."""
    processes = torch.multiprocessing.start_processes(
        _ddp_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 240  # a hung process fails this test, not the whole suite's time
    while not processes.join(timeout=2):
        if time.monotonic() > deadline:
            for process in processes.processes:
                process.kill()
            pytest.fail("the two DDP processes did not finish in 240 s")
    oracle = _llama()
    _plain_loop(oracle, ElasticNet(1e-2, 0.5), "loss", _batches(_language_data(8), 2 * BATCH), accumulation=2,
                normalized=True)  # fmt: skip
    weights = torch.load(tmp_path / "weights.pt", weights_only=True)
    for name, q in oracle.named_parameters():
        torch.testing.assert_close(weights[name], q.detach(), rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("mode", ["proximal", "loss"])
def test_bf16_autocast(mode, tmp_path):
    """bf16 mixed precision on the CPU: the same weights as a plain loop under
    torch.autocast; the weights stay float32, and the prox's zeros are exact."""
    model = _bert()
    oracle = copy.deepcopy(model)
    rows = _classification_data(4)
    penalty = {"proximal": lambda: L1(1e-3), "loss": lambda: ElasticNet(1e-2, 0.5)}[mode]
    callback = RegularizerCallback(penalty(), mode=mode)
    trainer = _trainer(model, rows, tmp_path, [callback], bf16=True, optim="adamw_torch_fused")
    trainer.train()
    reg, _, _ = _plain_loop(oracle, penalty(), mode, _batches(rows), bf16=True, fused=True)
    _assert_same_weights(model, oracle, rtol=1e-3, atol=1e-4)
    full = copy.deepcopy(_bert())
    _plain_loop(full, penalty(), mode, _batches(rows), fused=True)
    assert any((p - q).abs().max() > 1e-3 for p, q in zip(model.parameters(), full.parameters()))  # bf16 acted
    assert all(p.dtype == torch.float32 for p in model.parameters())
    if mode == "proximal":
        report = callback.regularizer.sparsity()
        assert report.zeros > 0
        assert report.zeros == reg.sparsity().zeros
        for p, q in zip(callback.regularizer.parameters(), reg.parameters()):
            assert torch.equal(p == 0, q == 0)


def test_a_penalty_centred_on_the_initial_weights(tmp_path):
    """Fine-tuning with L1 on the change from the weights the Trainer was given: the
    same weights as a plain loop, most entries exactly where they started, and the
    logged sparsity is the fraction of entries exactly unchanged."""
    model = _bert()
    initial, oracle = copy.deepcopy(model), copy.deepcopy(model)
    rows = _classification_data(4)
    callback = RegularizerCallback(L1(1e-3, center="initial"))
    trainer = _trainer(model, rows, tmp_path, [callback])
    trainer.train()
    _plain_loop(oracle, L1(1e-3, center="initial"), "proximal", _batches(rows))
    _assert_same_weights(model, oracle)
    start = dict(initial.named_parameters())
    penalized = dict(callback.regularizer.named_parameters())
    unchanged = sum(int((p == start[name]).sum()) for name, p in penalized.items())
    total = sum(p.numel() for p in penalized.values())
    assert 0 < unchanged < total
    assert _training_logs(trainer)[-1]["sparsity"] == unchanged / total


class _Recorder(TrainerCallback):
    """Stands in for a reporting integration: what on_log hands it."""

    def __init__(self):
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def test_add_to_puts_the_values_before_the_integrations(tmp_path):
    recorder = _Recorder()  # the Trainer runs the callbacks given to it in order
    trainer = _trainer(_bert(), _classification_data(4), tmp_path, [recorder])
    callback = RegularizerCallback(L1(1e-3))
    assert callback.add_to(trainer) is trainer
    assert trainer.callback_handler.callbacks[0] is callback
    trainer.train()
    seen = [entry for entry in recorder.logs if "loss" in entry]
    assert len(seen) == 2 and all({"penalty", "sparsity"} <= set(entry) for entry in seen)
    for entry, history in zip(seen, _training_logs(trainer)):
        assert (entry["penalty"], entry["sparsity"]) == (history["penalty"], history["sparsity"])


def test_a_callback_after_the_integrations_says_so(tmp_path):
    trainer = _trainer(_bert(), _classification_data(2), tmp_path, [RegularizerCallback(L1(1e-3))])
    trainer.args.report_to = ["wandb"]  # as if the Trainer held that integration, ahead of the callback
    with pytest.warns(UserWarning, match=re.escape("runs after the reporting integrations ['wandb']")):
        trainer.train()


@pytest.mark.parametrize("fused", [False, True])
def test_a_step_the_grad_scaler_skips_gets_no_prox(fused):
    """fp16's GradScaler (here on the CPU, through Accelerate's own optimizer wrapper):
    an overflow skips optimizer.step() and so the prox. A fused AdamW takes the scaler
    into its own step, which runs even when the update is skipped: the regularizer reads
    the scaler's overflow flag and skips the prox too."""
    args = TrainingArguments(output_dir="unused", report_to=[], use_cpu=True)
    Accelerator(cpu=True)  # the state Accelerate's optimizer wrapper reads (TrainingArguments resets it)
    model = _bert()
    batch = _batches(_classification_data(1))[0]
    inner = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, fused=fused or None)
    steps_run = []
    inner.register_step_post_hook(lambda *_: steps_run.append(1))
    optimizer = AcceleratedOptimizer(inner, device_placement=False, scaler=torch.amp.GradScaler("cpu"))
    optimizer.gradient_state._set_sync_gradients(True)
    callback = RegularizerCallback(L1(1e-3))

    def overflowing_step():
        optimizer.zero_grad()
        optimizer.scaler.scale(model(**batch).loss).backward()
        model.classifier.weight.grad[0, 0] = float("inf")
        optimizer.step()

    callback.on_train_begin(args, TrainerState(), TrainerControl(), model=model, optimizer=optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    overflowing_step()
    assert steps_run == ([1] if fused else [])  # a fused step runs though it skips the update
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)  # neither Adam nor the prox moved anything
    optimizer.zero_grad()
    optimizer.scaler.scale(model(**batch).loss).backward()
    optimizer.step()  # a finite step: Adam, then the prox
    assert steps_run == ([1, 1] if fused else [1]) and callback.regularizer.sparsity().zeros > 0
    callback.on_train_end(args, TrainerState(), TrainerControl())


# ---------------------------------------------------------------------- checkpoints
def _centred() -> Rule:
    return Rule(L1(1e-3, center="initial"), select="*")  # the user's fine-tuning setup


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """One uninterrupted run of 8 steps from the pretrained weights, saving checkpoint-4
    and checkpoint-8: the oracle of a resumed run (its weights, its logged penalty)."""
    folder = tmp_path_factory.mktemp("run")
    model = _bert()
    pretrained = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = _trainer(
        model, _classification_data(8), folder, [RegularizerCallback(_centred())], save_strategy="steps", save_steps=4
    )
    trainer.train()
    final = {name: p.detach().clone() for name, p in model.named_parameters()}
    return {"folder": folder, "pretrained": pretrained, "final": final, "logs": _training_logs(trainer)}


def _resume(run: dict, tmp_path: Path, how: str, penalty=None, mode: str = "proximal", keep_state: bool = True):
    """A fresh Trainer built, the common way, from the fine-tuned weights of checkpoint-4,
    resuming from it: ``how="last"`` with ``resume_from_checkpoint=True`` (the checkpoint
    in output_dir), ``"path"`` from a folder outside output_dir by another name."""
    folder = {"last": "out/checkpoint-4", "path": "elsewhere/saved-at-step-4"}[how]
    checkpoint = tmp_path / folder
    shutil.copytree(run["folder"] / "checkpoint-4", checkpoint)
    if not keep_state:
        (checkpoint / STATE_FILE).unlink()
    model = BertForSequenceClassification.from_pretrained(checkpoint)
    callback = RegularizerCallback(penalty or _centred(), mode=mode)
    trainer = _trainer(model, _classification_data(8), tmp_path / "out", [callback], save_strategy="no")
    return trainer, callback, (True if how == "last" else str(checkpoint)), checkpoint


def _centers(callback) -> dict:
    return callback.regularizer.state_dict()["rules"][0]["centers"]


def test_each_checkpoint_holds_the_regularizer_state(run):
    for step in (4, 8):
        state = torch.load(run["folder"] / f"checkpoint-{step}" / STATE_FILE, weights_only=True)
        assert state["mode"] == "proximal" and len(state["rules"]) == 1
        rule = state["rules"][0]
        assert rule["penalty"] == {"name": "l1", "lambda_": 1e-3, "center": "initial"}
        assert rule["mode"] == "proximal"
        assert rule["parameters"] == list(run["pretrained"]) == list(rule["centers"])  # select="*": every tensor
        for name, center in rule["centers"].items():
            assert center.device.type == "cpu"
            assert torch.equal(center, run["pretrained"][name]), name


@pytest.mark.parametrize("how", ["last", "path"])
def test_a_resumed_run_keeps_the_original_centres(run, how, tmp_path):
    """Resumed from the fine-tuned weights of checkpoint-4, the penalty stays centred on the
    pretrained weights: the same weights after step 8 and the same logged penalty at
    steps 6 and 8 as the uninterrupted run (centred on checkpoint-4, both would differ)."""
    trainer, callback, resume, _ = _resume(run, tmp_path, how)
    trainer.train(resume_from_checkpoint=resume)
    assert trainer.state.global_step == 8
    for name, center in _centers(callback).items():
        assert torch.equal(center, run["pretrained"][name]), name
    for name, p in trainer.model.named_parameters():
        torch.testing.assert_close(p.detach(), run["final"][name], rtol=1e-6, atol=1e-7, msg=name)
    logs = _training_logs(trainer)  # the history of checkpoint-4 (steps 2 and 4), then this run's
    assert [entry["step"] for entry in logs] == [entry["step"] for entry in run["logs"]] == [2, 4, 6, 8]
    for entry, expected in zip(logs[2:], run["logs"][2:]):
        assert entry["penalty"] == pytest.approx(expected["penalty"], rel=1e-5)
        assert entry["sparsity"] == expected["sparsity"]


def test_resuming_restores_the_saved_lambda(run, tmp_path):
    trainer, callback, resume, _ = _resume(run, tmp_path, "last", penalty=Rule(L1(5e-3, center="initial"), select="*"))
    trainer.train(resume_from_checkpoint=resume)
    assert callback.regularizer.rules[0].penalty.lambda_ == 1e-3
    for name, p in trainer.model.named_parameters():
        torch.testing.assert_close(p.detach(), run["final"][name], rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("how", ["last", "path"])
def test_a_checkpoint_without_the_state_warns(run, how, tmp_path):
    trainer, callback, resume, checkpoint = _resume(run, tmp_path, how, keep_state=False)
    with pytest.warns(UserWarning) as caught:
        trainer.train(resume_from_checkpoint=resume)
    messages = [str(w.message) for w in caught if "RegularizerCallback" in str(w.message)]
    assert messages == [
        f"RegularizerCallback: the Trainer resumes from {checkpoint}, which holds no shrinkage_regularizer.pt: the "
        "penalties centred on 'initial' are now centred on the weights the Trainer was given, not on those of the "
        "run that saved the checkpoint; center=<pretrained state dict> (the reference weights themselves) does not "
        "rely on the checkpoint"
    ]
    fine_tuned = BertForSequenceClassification.from_pretrained(checkpoint)
    for name, p in fine_tuned.named_parameters():  # as the warning says
        assert torch.equal(_centers(callback)[name], p.detach()), name


def test_rules_that_do_not_fit_the_saved_state_are_refused(run, tmp_path):
    trainer, _, resume, checkpoint = _resume(run, tmp_path, "last", mode="gradient")
    with pytest.raises(InputError) as error:
        trainer.train(resume_from_checkpoint=resume)
    assert str(error.value) == (
        f"{checkpoint / STATE_FILE} does not fit this RegularizerCallback: rule 0: the state is in mode 'proximal', "
        "this rule in 'gradient'; resume with the rules of the run that saved the checkpoint"
    )


def test_a_checkpoint_folder_not_found_is_said(tmp_path):
    """A Trainer that saved its checkpoint elsewhere than output_dir/checkpoint-{global_step}."""
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    callback = RegularizerCallback(_centred())
    callback.on_init_end(args, TrainerState(), TrainerControl(), model=_bert())
    with pytest.warns(UserWarning) as caught:
        callback.on_save(args, TrainerState(global_step=3), TrainerControl())
    assert [str(w.message) for w in caught] == [
        f"RegularizerCallback found no checkpoint folder {tmp_path / 'checkpoint-3'} after the Trainer saved one: "
        "the regularizer's state (shrinkage_regularizer.pt, with its centres) is not in that checkpoint"
    ]
    assert not list(tmp_path.iterdir())


def test_without_checkpoints_nothing_is_written(tmp_path):
    callback = RegularizerCallback(_centred())
    trainer = _trainer(_bert(), _classification_data(2), tmp_path, [callback], save_strategy="no")
    trainer.train()
    assert trainer.state.global_step == 2
    assert not list(tmp_path.rglob(STATE_FILE)) and not list(tmp_path.glob("checkpoint-*"))


# ---------------------------------------------------------------------- errors
def test_a_selection_the_model_lacks_is_refused_when_the_trainer_is_built(tmp_path):
    callback = RegularizerCallback(Rule(L1(0.1), select="decoder.*"))
    message = "select pattern 'decoder.*' matches no parameter of the model; its parameters are 'bert.embeddings"
    with pytest.raises(InputError, match=re.escape(message)):
        _trainer(_bert(), _classification_data(1), tmp_path, [callback])


def test_mode_loss_without_a_model_loss_is_refused(tmp_path):
    """With label smoothing the Trainer takes the labels and computes the loss itself:
    the model returns none to add the penalty to."""
    callback = RegularizerCallback(L1(1e-3), mode="loss")
    trainer = _trainer(_bert(), _classification_data(2), tmp_path, [callback], label_smoothing_factor=0.1)
    with pytest.raises(InputError) as error:
        trainer.train()
    assert str(error.value) == (
        "mode='loss' adds the penalty to the loss the model returns in training, and this model returned none "
        "(got NoneType): the Trainer computes the loss itself (label_smoothing_factor, compute_loss_func) or the "
        "batch has no labels; use mode='gradient' or 'proximal'"
    )


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        (
            "fsdp",
            ["full_shard"],
            "RegularizerCallback does not support FSDP: it keeps and steps its own sharded copies of the weights, "
            "which the regularizer does not see; use DistributedDataParallel, or a Regularizer in your own loop "
            "(it supports FSDP2's fully_shard)",
        ),
        (
            "deepspeed",
            {"zero_optimization": {"stage": 2}},
            "RegularizerCallback does not support DeepSpeed: it keeps and steps its own sharded copies of the "
            "weights, which the regularizer does not see; use DistributedDataParallel, or a Regularizer in your "
            "own loop (it supports FSDP2's fully_shard)",
        ),
        (
            "optim",
            "galore_adamw_layerwise",
            "RegularizerCallback does not support optim='galore_adamw_layerwise': the update happens during "
            "backward and optimizer.step() does nothing, so the penalty would miss every step; use an optimizer "
            "such as 'adamw_torch'",
        ),
    ],
)
def test_setups_it_cannot_reach_are_refused(setting, value, message):
    args = TrainingArguments(output_dir="unused", report_to=[], use_cpu=True)
    setattr(args, setting, value)  # as the Trainer would hold them (they need several processes or packages)
    with pytest.raises(InputError) as error:
        RegularizerCallback(L1(1e-3)).on_init_end(args, TrainerState(), TrainerControl(), model=_bert())
    assert str(error.value) == message


def test_bad_arguments_are_refused():
    with pytest.raises(InputError, match=re.escape("mode must be one of 'loss', 'gradient', 'proximal', 'decoupled'")):
        RegularizerCallback(L1(1e-3), mode="prox")
    with pytest.raises(InputError, match=re.escape("log must be True or False, got 1")):
        RegularizerCallback(L1(1e-3), log=1)
    with pytest.raises(InputError, match=re.escape("penalties must be a Penalty, a Rule or a list of them")):
        RegularizerCallback("l1")

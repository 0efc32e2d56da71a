"""The trainer's parts on the real SmolLM2 tokenizer and model: curriculum order, span weights through
TRL's collator, and the loss of WeightedSFTTrainer proven by per-token gradients."""

import json

import pytest
import torch

from distill_assets.config import TrainingConfig
from distill_assets.training.data import CurriculumSampler, SpanWeightCollator, tokenise_sft
from distill_assets.training.launch import (
    NOT_IN_WEIGHTS,
    TRAINER_VERSION,
    _digest,
    plan_phases,
    prepare_run,
    training_command,
)


def test_curriculum_goes_easy_to_hard_every_epoch_and_is_reproducible():
    diff = [2, 0, 1, 0, 2, 1, 0, 2, 1, 0]
    s = CurriculumSampler(diff, seed=7)
    first = list(s)
    assert sorted(first) == list(range(10))
    ranks = [diff[i] for i in first]
    assert ranks == sorted(ranks)  # easy -> medium -> hard
    assert list(CurriculumSampler(diff, seed=7)) == first  # same seed, same order (a resumed run sees it too)
    orders = set()
    for epoch in range(6):
        s.set_epoch(epoch)
        order = list(s)
        assert [diff[i] for i in order] == sorted(ranks)
        orders.add(tuple(order))
    assert len(orders) > 1  # shuffled within a level, fresh per epoch


def test_rows_longer_than_max_length_are_dropped_and_counted(smollm2_dir, plan_rows):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    full = tokenise_sft(plan_rows["sft"], tok, reasoning_weight=0.5, plan_weight=1.0, max_length=4096)
    assert len(full) == len(plan_rows["sft"]) and full.reasoning_tokens > 0 and full.plan_tokens > 0
    cut = min(len(x) for x in full.input_ids) + 1
    short = tokenise_sft(
        plan_rows["sft"] + [{"prompt": "[]", "completion": "[]"}],
        tok,
        reasoning_weight=0.5,
        plan_weight=1.0,
        max_length=cut,
    )
    assert len(short) == 1
    assert short.dropped == {"longer_than_max_length": len(plan_rows["sft"]) - 1, "malformed": 1}
    for ids, labels, w in zip(full.input_ids, full.labels, full.loss_weights):
        assert len(ids) == len(labels) == len(w)
        assert all((lab == -100) == (wt == 0) for lab, wt in zip(labels, w))  # prompt: no label, no weight


def test_span_weights_stay_aligned_through_trls_collator(smollm2_dir, plan_rows):
    from transformers import AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    t = tokenise_sft(plan_rows["sft"], tok, reasoning_weight=0.5, plan_weight=1.0, max_length=4096)
    examples = [
        {"input_ids": i, "labels": lab, "loss_weights": w, "difficulty": d}
        for i, lab, w, d in zip(t.input_ids, t.labels, t.loss_weights, t.difficulty)
    ]
    batch = SpanWeightCollator(DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id or 0))(examples)
    assert batch["loss_weights"].shape == batch["input_ids"].shape
    for b, ex in enumerate(examples):
        n = len(ex["input_ids"])
        assert batch["loss_weights"][b, :n].tolist() == pytest.approx(ex["loss_weights"])
        assert batch["loss_weights"][b, n:].abs().sum() == 0  # padding weighs nothing
        assert ((batch["labels"][b] != -100) == (batch["loss_weights"][b] > 0)).all()
    flat = SpanWeightCollator(DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True))(examples)
    assert flat["input_ids"].shape[0] == 1
    assert flat["loss_weights"][0, : sum(len(e["loss_weights"]) for e in examples)].tolist() == pytest.approx(
        [x for e in examples for x in e["loss_weights"]]
    )


def _trainer(smollm2_dir, tmp_path, rows):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from distill_assets.training.trainer import WeightedSFTTrainer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    t = tokenise_sft(rows, tok, reasoning_weight=0.5, plan_weight=1.0, max_length=4096)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    for n, p in model.named_parameters():  # B starts at zero; make it non-zero so A's gradients exist
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    args = SFTConfig(
        output_dir=str(tmp_path / "o"),
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        gradient_checkpointing=False,
        max_length=4096,
    )
    tr = WeightedSFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(t.as_dict()), processing_class=tok)
    return tr, t


def _grads(trainer, batch, weights, n_items):
    trainer.model.zero_grad()
    inputs = {**{k: v.clone() for k, v in batch.items() if k != "loss_weights"}, "loss_weights": weights}
    loss = trainer.compute_loss(trainer.model, inputs, num_items_in_batch=n_items)
    loss.backward()
    g = torch.cat([p.grad.flatten() for n, p in trainer.model.named_parameters() if p.requires_grad])
    return loss.detach(), g


def test_weighted_sft_loss_follows_the_spans_in_the_real_trainer(smollm2_dir, plan_rows, tmp_path):
    trainer, t = _trainer(smollm2_dir, tmp_path, plan_rows["sft"][:1])
    batch = trainer.data_collator(
        [{"input_ids": t.input_ids[0], "labels": t.labels[0], "loss_weights": t.loss_weights[0]}]
    )
    w = batch["loss_weights"]
    n_items = int((batch["labels"] != -100).sum())
    reasoning_only = (w == 0.5).float()  # 1 on the reasoning span, 0 elsewhere
    plan_only = (w == 1.0).float()
    assert reasoning_only.sum() > 0 and plan_only.sum() > 0
    loss, g = _grads(trainer, batch, w, n_items)
    loss_r, g_r = _grads(trainer, batch, reasoning_only, n_items)
    loss_p, g_p = _grads(trainer, batch, plan_only, n_items)
    # the loss and every parameter gradient decompose by span: 0.5 x reasoning + 1.0 x plan, nothing from the prompt
    assert torch.isclose(loss, 0.5 * loss_r + 1.0 * loss_p, rtol=1e-4)
    assert torch.allclose(g, 0.5 * g_r + 1.0 * g_p, rtol=1e-3, atol=1e-7)
    cos = torch.nn.functional.cosine_similarity(g_r, g_p, dim=0)
    assert g_r.norm() > 0 and g_p.norm() > 0 and cos < 0.99  # two different pulls, weighted differently
    # equal weights on every completion token: exactly TRL's completion-only loss (mean NLL of the labels)
    ones = (batch["labels"] != -100).float()
    loss_eq, _ = _grads(trainer, batch, ones, None)
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"]).logits[0, :-1].float()
        labels = batch["labels"][0, 1:]
        ref = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100)
    assert torch.isclose(loss_eq, ref, rtol=1e-4)


def test_run_folder_is_keyed_by_data_and_config(tmp_path, plan_rows, smollm2_dir):
    hp = TrainingConfig(dpo=True)
    a, spec = prepare_run(tmp_path, "plan_generation", smollm2_dir, hp, plan_rows["sft"], [], plan_rows["dpo"])
    again, _ = prepare_run(tmp_path, "plan_generation", smollm2_dir, hp, plan_rows["sft"], [], plan_rows["dpo"])
    assert again == a and spec["phases"] == ["sft", "dpo"]
    other_hp, _ = prepare_run(
        tmp_path,
        "plan_generation",
        smollm2_dir,
        hp.model_copy(update={"lr": 1e-3}),
        plan_rows["sft"],
        [],
        plan_rows["dpo"],
    )
    other_rows, _ = prepare_run(
        tmp_path, "plan_generation", smollm2_dir, hp, plan_rows["sft"][:-1], [], plan_rows["dpo"]
    )
    assert len({a, other_hp, other_rows}) == 3
    # a setting added later (fold_lora) keeps the key of the runs made before it while at its default
    weights = {k: v for k, v in hp.model_dump(mode="json").items() if k not in NOT_IN_WEIGHTS and k != "fold_lora"}
    assert (
        json.loads((a / "spec.json").read_text())["config_hash"]
        == _digest({"hp": weights, "phases": ["sft", "dpo"], "trainer": TRAINER_VERSION})[:16]
    )
    fold_off, _ = prepare_run(
        tmp_path,
        "plan_generation",
        smollm2_dir,
        hp.model_copy(update={"fold_lora": "off"}),
        plan_rows["sft"],
        [],
        plan_rows["dpo"],
    )
    assert fold_off != a
    assert json.loads((a / "spec.json").read_text())["run_key"] == a.name
    assert plan_phases(hp, 0) == (["sft"], {"dpo": "no DPO pairs in the train split"})
    assert training_command(a, 1)[1:3] == ["-m", "distill_assets.training.run"]
    multi = training_command(a, 2)
    assert multi[1:3] == ["-m", "accelerate.commands.launch"] and multi[multi.index("--num_processes") + 1] == "2"

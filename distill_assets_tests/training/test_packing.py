"""Padding-free packed SFT on the real SmolLM2 model (CPU, fp32): rows packed into one batch give each
row exactly the loss and the gradients it gets alone, through the project's packing, TRL's padding-free
collator, the span weights and the variable-length attention function."""

import pytest
import torch

from distill_assets.training.data import SpanWeightCollator, tokenise_sft
from distill_assets.training.packing import pack_rows, use_varlen_attention


@pytest.fixture(scope="module")
def tokenised(smollm2_dir, plan_rows):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    sft = plan_rows["sft"] * 2
    rows = [dict(r, difficulty=("easy", "hard")[i % 2]) for i, r in enumerate(sft)]
    return tok, tokenise_sft(rows, tok, reasoning_weight=0.5, plan_weight=1.0, max_length=4096)


def test_packing_keeps_every_row_whole_and_levels_apart(tokenised):
    _, t = tokenised
    assert len(t) >= 4
    longest = max(len(x) for x in t.input_ids)
    packed = pack_rows(t, pack_tokens=2 * longest)
    assert len(packed) < len(t)  # rows share batches
    assert sum(len(s) for s in packed["seq_lengths"]) == len(t)  # no row lost
    row_lengths = sorted(len(x) for x in t.input_ids)
    assert sorted(n for s in packed["seq_lengths"] for n in s) == row_lengths  # none cut
    for ids, labels, w, lens in zip(
        packed["input_ids"], packed["labels"], packed["loss_weights"], packed["seq_lengths"]
    ):
        assert len(ids) == len(labels) == len(w) == sum(lens) <= 2 * longest
    # the curriculum still orders packed batches: a batch holds rows of one level only
    by_level = {}
    for d, lens in zip(packed["difficulty"], packed["seq_lengths"]):
        by_level[d] = by_level.get(d, 0) + len(lens)
    assert by_level == {d: t.difficulty.count(d) for d in set(t.difficulty)}
    with pytest.raises(ValueError, match="below the longest row"):
        pack_rows(t, pack_tokens=longest - 1)


def _row_losses(model, batch, starts):
    """Weighted NLL per row: sum over the row's tokens of weight * -log p(token)."""
    inputs = {k: v for k, v in batch.items() if k not in ("loss_weights", "labels")}
    logits = model(**inputs, use_cache=False).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = (batch["labels"][:, 1:] != -100).float()
    per_token = -logp * batch["loss_weights"][:, 1:] * mask  # [B, T-1]
    return [per_token[0, s : e - 1].sum() for s, e in zip(starts[:-1], starts[1:])]


def test_packed_rows_get_the_loss_and_gradients_they_get_alone(smollm2_dir, tokenised):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tok, t = tokenised
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA, as in Qwen3
    use_varlen_attention(model)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(model, lora)  # non-zero B: the LoRA path carries gradient to every layer
    collate = SpanWeightCollator(DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True))
    distinct = {tuple(x): i for i, x in enumerate(t.input_ids)}  # the fixture repeats its rows
    order = sorted(distinct.values(), key=lambda i: len(t.input_ids[i]))[:3]
    assert len(order) == 3
    three = type(t)(
        input_ids=[t.input_ids[i] for i in order],
        labels=[t.labels[i] for i in order],
        loss_weights=[t.loss_weights[i] for i in order],
        difficulty=[0, 0, 0],
    )
    packed = pack_rows(three, pack_tokens=sum(len(x) for x in three.input_ids))
    assert len(packed) == 1 and len(packed[0]["seq_lengths"]) == 3  # one batch, three rows
    batch = collate([packed[0]])
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    lens = packed[0]["seq_lengths"]
    starts = [0]
    for n in lens:
        starts.append(starts[-1] + n)
    assert batch["cu_seq_lens_q"].tolist() == starts
    assert batch["position_ids"][0].tolist() == [p for n in lens for p in range(n)]  # positions restart per row

    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    packed_losses = _row_losses(model, batch, starts)
    torch.stack(packed_losses).sum().backward()
    packed_grads = [p.grad.clone() for p in params]

    # best-fit decreasing puts the longest row first: find each packed segment's row
    flat = packed[0]["input_ids"]
    rows_in_pack = [three.input_ids.index(flat[s:e]) for s, e in zip(starts[:-1], starts[1:])]
    assert sorted(rows_in_pack) == [0, 1, 2]
    alone_losses = []
    model.zero_grad()
    for i in rows_in_pack:
        one = collate(
            [{"input_ids": three.input_ids[i], "labels": three.labels[i], "loss_weights": three.loss_weights[i]}]
        )
        (loss,) = _row_losses(model, one, [0, len(three.input_ids[i])])
        loss.backward()
        alone_losses.append(loss.detach())
    for a, b in zip(packed_losses, alone_losses):
        assert a.item() == pytest.approx(b.item(), rel=1e-5)
    assert all(x.item() > 0 for x in alone_losses)
    worst = max(
        (g1 - p.grad).abs().max().item() / (p.grad.abs().max().item() + 1e-12) for g1, p in zip(packed_grads, params)
    )
    assert worst < 1e-4
    # the check could fail: without the row boundaries every row would see the ones before it
    plain = {k: v for k, v in batch.items() if not k.startswith(("cu_seq_lens", "max_length"))}
    plain["position_ids"] = torch.arange(batch["input_ids"].shape[1])[None]
    leaked = _row_losses(model, plain, starts)
    assert abs(leaked[1].item() - alone_losses[1].item()) > 1e-3 * abs(alone_losses[1].item())

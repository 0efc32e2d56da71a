"""Structured Agent Distillation weights: completion tokens of the [PLAN] span weigh more than the
[REASONING] span; prompt tokens weigh nothing (completion-only loss)."""

from __future__ import annotations

from dataclasses import dataclass


from distill_assets.prompts.tags import PLAN_TAG


@dataclass
class WeightedExample:
    input_ids: list[int]
    weights: list[float]  # per token; 0 for the prompt
    prompt_tokens: int
    reasoning_tokens: int
    plan_tokens: int


def weighted_example(
    tokenizer,
    prompt: list[dict],
    completion: str,
    *,
    reasoning_weight: float,
    plan_weight: float,
    max_length: int | None = None,
) -> WeightedExample:
    """Tokenise prompt + completion with the chat template; weight each completion token by its span.
    Text without a [PLAN] marker is all plan span (stages 1-3 and 5: the whole answer is the output)."""
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": completion}], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
    plan_at = completion.find(PLAN_TAG)
    comp_start = len(prompt_text)
    plan_start = comp_start + full_text[comp_start:].find(completion[plan_at:]) if plan_at >= 0 else comp_start
    enc = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    ids, weights = [], []
    n_prompt = n_reason = n_plan = 0
    for tok, (start, _end) in zip(enc["input_ids"], enc["offset_mapping"]):
        if start < comp_start:
            w = 0.0
            n_prompt += 1
        elif start < plan_start:
            w = reasoning_weight
            n_reason += 1
        else:
            w = plan_weight
            n_plan += 1
        ids.append(tok)
        weights.append(w)
    if max_length is not None:
        ids, weights = ids[:max_length], weights[:max_length]
    return WeightedExample(ids, weights, n_prompt, n_reason, n_plan)

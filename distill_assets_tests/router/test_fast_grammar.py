"""The grammar samplers of router/fast_grammar.py on the real SmolLM2 model: they answer token for token
what llama-cpp-python's own chain (grammar over the whole vocabulary, then greedy or top-k ... dist)
answers, greedy and sampled with a seed, and mask the whole vocabulary on only some of the steps."""

import pytest

from distill_assets.prompts.student import decoding
from distill_assets.router.engine import StageEngine


def _answers(gguf: str, calls: list[dict], sampled: dict, fast: bool):
    engine = StageEngine(n_ctx=4096, n_threads=2, fast_grammar=fast)
    try:
        llm = engine._base(gguf)
        done = [engine.complete(llm, **call) for call in calls]
        llm.reset()  # the sampled call starts from an empty cache, as in the other engine
        out = llm.create_chat_completion(**sampled)
        texts = [c.text for c in done] + [out["choices"][0]["message"]["content"]]
        # an unconstrained call keeps llama-cpp-python's own chain
        before = engine.grammar_stats.steps
        llm.create_completion("Name a colour:", max_tokens=4, temperature=0.0)
        assert engine.grammar_stats.steps == before
        return texts, sum(c.tokens_out for c in done) + out["usage"]["completion_tokens"], engine.grammar_stats
    finally:
        engine.close()


@pytest.mark.parametrize("stage", ["relevance", "plan_generation"])
def test_fast_grammar_answers_what_the_full_mask_answers(stage, sample_prompts, smollm2_gguf):
    calls = [
        {"messages": p.messages, "max_tokens": 96, "max_string_chars": 80, **decoding(stage, p.schema)}
        for p in sample_prompts[stage][:2]
    ]
    p = sample_prompts["relevance"][2]  # a teacher-style call: top-k sampling under the JSON schema
    sampled = {
        "messages": p.messages,
        "response_format": {"type": "json_object", "schema": p.schema},
        "temperature": 0.8,
        "top_k": 40,
        "seed": 7,
        "max_tokens": 64,
    }
    slow, _, slow_stats = _answers(str(smollm2_gguf), calls, sampled, fast=False)
    fast, tokens, stats = _answers(str(smollm2_gguf), calls, sampled, fast=True)
    assert all(fast) and fast == slow
    assert slow_stats.steps == 0  # the reference ran llama-cpp-python's chain untouched
    # every generated token went through the samplers, and most needed no whole-vocabulary mask
    assert stats.steps >= tokens > 0 and stats.full_masks < stats.steps / 2
    assert stats.argmax > 0 and stats.scan > 0


def test_a_grammar_that_allows_no_token_stops_constraining_instead_of_aborting(smollm2_gguf):
    """A logits processor can leave only tokens the grammar forbids (a string cap inside an enumerated
    string). llama.cpp would abort the whole process on accepting one; the sampler lets the generation go on
    unconstrained, which fails to parse as one answer, and counts it."""
    import numpy as np
    from llama_cpp import LlamaGrammar, LogitsProcessorList

    engine = StageEngine(n_ctx=1024, n_threads=2)
    try:
        llm = engine._base(str(smollm2_gguf))
        only = llm.tokenize(b"7", add_bos=False)

        def sevens(_ids, scores):
            out = np.full_like(scores, -np.inf)
            out[only] = scores[only]
            return out

        out = llm.create_completion(
            "Answer yes or no:",
            grammar=LlamaGrammar.from_string('root ::= "yes" | "no"', verbose=False),
            logits_processor=LogitsProcessorList([sevens]),
            max_tokens=3,
            temperature=0.0,
        )
        assert engine.grammar_stats.dead_ends == 1
        assert out["choices"][0]["text"].startswith("7")
    finally:
        engine.close()

"""router/runtime_model.py on the real SmolLM2 GGUF: the Q8_0 copy llama.cpp serves instead of the shipped
Q4_1 file is made once, cached, renewed when the source changes, and predicts what the Q4_1 file predicts."""

import os
import shutil

import numpy as np
import pytest

from distill_assets.router.engine import StageEngine
from distill_assets.router.runtime_model import RuntimeModelError, file_type, runtime_gguf

Q4_1, Q8_0 = 3, 7


def test_q4_1_is_served_from_a_cached_q8_0_copy(tmp_path, smollm2_gguf):
    assert file_type(smollm2_gguf) == Q4_1
    cache = tmp_path / "runtime"
    served = runtime_gguf(smollm2_gguf, "auto", cache)
    assert served != smollm2_gguf and served.parent == cache and file_type(served) == Q8_0
    made = served.stat().st_mtime_ns
    assert runtime_gguf(smollm2_gguf, "auto", cache) == served and served.stat().st_mtime_ns == made  # reused
    assert [p.name for p in cache.iterdir()] == [served.name]  # no partial file left behind
    # a Q8_0 file is served as it is; "off" serves the source
    assert runtime_gguf(served, "auto", cache) == served and runtime_gguf(served, "q8_0", cache) == served
    assert runtime_gguf(smollm2_gguf, "off", cache) == smollm2_gguf


def test_a_changed_source_gets_a_new_copy(tmp_path, smollm2_gguf):
    src = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_gguf, src)
    first = runtime_gguf(src, "auto", tmp_path / "rt")
    os.utime(src, ns=(1, 1))  # as if the file had been replaced
    second = runtime_gguf(src, "auto", tmp_path / "rt")
    assert second != first and file_type(second) == Q8_0


def test_a_file_that_is_not_gguf_gives_one_line_naming_it(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(RuntimeModelError, match="broken.gguf"):
        runtime_gguf(bad, "auto", tmp_path / "rt")


def _probs(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def test_the_served_copy_predicts_what_the_shipped_file_predicts(tmp_path, smollm2_gguf, sample_prompts):
    """Next-token distributions at every prompt position, on real stage prompts, of the file the engine serves
    (Q8_0 copy, flash attention) against the Q4_1 file as shipped (no flash attention). The yardstick is the
    shipped file with flash attention alone (same weights, f16 attention): the copy may differ from the shipped
    file only about as much as that numerical floor does (measured: mean TV 0.030 floor, 0.037 copy; top-1 96 %)."""
    from llama_cpp import Llama

    engine = StageEngine(n_ctx=1024, n_threads=2, runtime_dir=tmp_path / "rt")
    try:
        engine._base(str(smollm2_gguf))
        served = engine.served[str(smollm2_gguf)]
    finally:
        engine.close()
    assert served.endswith(".q8_0.gguf") and file_type(served) == Q8_0
    variants = {"shipped": (smollm2_gguf, False), "floor": (smollm2_gguf, True), "served": (served, True)}
    llms = {
        k: Llama(model_path=str(path), n_ctx=1024, n_threads=2, flash_attn=fa, logits_all=True, verbose=False)
        for k, (path, fa) in variants.items()
    }
    tv = {"floor": [], "served": []}
    top1 = {"floor": [], "served": []}
    for stage in ("relevance", "plan_generation", "code_generation"):
        for p in sample_prompts[stage][:2]:
            logits = {}
            for k, llm in llms.items():
                toks = llm.tokenize(p.messages[-1]["content"].encode())[:1000]
                llm.reset()
                llm.eval(toks)
                logits[k] = np.array(llm.scores[: llm.n_tokens], dtype=np.float64)
            ref = logits["shipped"]
            assert ref.std() > 0.1  # real logits, not an unwritten buffer
            for k in tv:
                tv[k].extend(0.5 * np.abs(_probs(ref) - _probs(logits[k])).sum(1))
                top1[k].extend(ref.argmax(1) == logits[k].argmax(1))
    floor, copy = float(np.mean(tv["floor"])), float(np.mean(tv["served"]))
    assert len(tv["served"]) > 1000
    assert copy < 0.06 and np.mean(top1["served"]) > 0.92, (copy, np.mean(top1["served"]))
    assert copy < 1.6 * floor, (copy, floor)  # within the numerical floor of f16 attention, not a different model

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


def test_the_served_copy_predicts_what_the_shipped_file_predicts(tmp_path, smollm2_gguf, sample_prompts):
    """Next-token logits of the Q8_0 copy (with flash attention) against the Q4_1 file as shipped (without),
    on real stage prompts: same top token, near-identical distributions."""
    engines = {
        "shipped": StageEngine(n_ctx=4096, n_threads=2, flash_attn=False, requantize="off"),
        "served": StageEngine(n_ctx=4096, n_threads=2, runtime_dir=tmp_path / "rt"),
    }
    try:
        llms = {k: e._base(str(smollm2_gguf)) for k, e in engines.items()}
        assert engines["served"].served[str(smollm2_gguf)].endswith(".q8_0.gguf")
        assert engines["shipped"].served[str(smollm2_gguf)] == str(smollm2_gguf)
        for stage in ("relevance", "plan_generation"):
            for p in sample_prompts[stage][:2]:
                logits = {}
                for k, llm in llms.items():
                    toks = llm.tokenize(p.messages[-1]["content"].encode())[:1500]
                    llm.reset()
                    llm.eval(toks)
                    logits[k] = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
                a, b = logits["shipped"], logits["served"]
                assert a.argmax() == b.argmax()
                pa, pb = np.exp(a - a.max()), np.exp(b - b.max())
                pa, pb = pa / pa.sum(), pb / pb.sum()
                assert 0.5 * np.abs(pa - pb).sum() < 0.05  # total variation distance
    finally:
        for e in engines.values():
            e.close()

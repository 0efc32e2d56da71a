"""GGUF LoRA export, proven against transformers + PEFT: the same greedy tokens from llama.cpp with
the exported adapter, on the same prompts; mismatches refused with their reason; Ollama Modelfiles."""

import ctypes
import json

import pytest
import torch

from distill_assets.export.gguf_lora import ExportError, export_gguf_lora, read_base, rewrite_gguf
from distill_assets.export.ollama import create_command, modelfile
from distill_assets_tests.router.conftest import make_peft_adapter


def dequantised_copy(src, dst):
    """The same GGUF with every tensor dequantised to F32: the numbers transformers computes with when it
    loads a GGUF, for exact comparisons. Written once."""
    return dst if dst.exists() else rewrite_gguf(src, dst)


PROMPTS = [
    "Write a haiku about git.",
    "What is a change plan?",
    "List three Python keywords.",
    "Which file holds the cart total?",
]
N_TOKENS = 16


def _llama_greedy(llm, adapter, text: str) -> list[int]:
    import llama_cpp

    if adapter is None:
        llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, None, 0, None)
    else:
        llama_cpp.llama_set_adapters_lora(
            llm._ctx.ctx, (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter), 1, (ctypes.c_float * 1)(1.0)
        )
    llm.reset()
    out = []
    for tok in llm.generate(llm.tokenize(text.encode(), add_bos=False, special=True), temp=0.0, top_k=1, reset=True):
        out.append(tok)
        if len(out) >= N_TOKENS or tok == llm.token_eos():
            break
    return out


def test_llama_cpp_with_the_gguf_adapter_matches_transformers_peft_token_for_token(tmp_path, smollm2_dir, smollm2_gguf):
    import llama_cpp
    from llama_cpp import Llama
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    peft_dir = make_peft_adapter(smollm2_dir, tmp_path / "peft", seed=11, std=0.08, rank=8)
    # the F32 copy of the shipped GGUF holds exactly the numbers transformers dequantises from it
    base_f32 = dequantised_copy(smollm2_gguf, tmp_path / "base-f32.gguf")
    info = export_gguf_lora(peft_dir, base_f32, tmp_path / "adapter.gguf")
    assert info["tensors"] == 30 * 7 * 2 and info["rank"] == 8 and info["alpha"] == 16.0 and info["arch"] == "llama"
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32), str(peft_dir)
    ).eval()
    llm = Llama(model_path=str(base_f32), n_ctx=512, n_threads=2, seed=0, verbose=False)
    handle = llama_cpp.llama_adapter_lora_init(llm._model.model, info["path"].encode())
    assert handle, "llama.cpp refused the exported adapter"
    changed = 0
    try:
        for prompt in PROMPTS:
            text = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            ids = tok(text, return_tensors="pt").input_ids
            with torch.no_grad():
                hf = model.generate(ids, max_new_tokens=N_TOKENS, do_sample=False)[0, ids.shape[1] :].tolist()
                with model.disable_adapter():
                    hf_base = model.generate(ids, max_new_tokens=N_TOKENS, do_sample=False)[0, ids.shape[1] :].tolist()
            assert _llama_greedy(llm, handle, text) == hf, prompt  # adapter: the same tokens in both runtimes
            assert _llama_greedy(llm, None, text) == hf_base, prompt  # and the base alone too
            changed += hf != hf_base
    finally:
        llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, None, 0, None)
        llama_cpp.llama_adapter_lora_free(handle)
        llm.close()
    assert changed >= len(PROMPTS) - 1  # the comparison is meaningful: the adapter changes the answers


def test_export_refuses_an_adapter_for_another_model(tmp_path, smollm2_gguf):
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(tiny).save_pretrained(tmp_path / "tiny")
    peft_dir = make_peft_adapter(tmp_path / "tiny", tmp_path / "peft", seed=0, std=0.01)
    with pytest.raises(ExportError, match="base/adapter mismatch"):
        export_gguf_lora(peft_dir, smollm2_gguf, tmp_path / "bad.gguf")
    assert not (tmp_path / "bad.gguf").exists() and not (tmp_path / "bad.gguf.partial").exists()
    cfg = json.loads((peft_dir / "adapter_config.json").read_text())
    (peft_dir / "adapter_config.json").write_text(json.dumps({**cfg, "peft_type": "IA3"}))
    with pytest.raises(ExportError, match="not LORA"):
        export_gguf_lora(peft_dir, smollm2_gguf, tmp_path / "bad.gguf")


def test_ollama_modelfile_names_base_adapter_template_and_stops(tmp_path, stage_ggufs, smollm2_gguf):
    base, adapter, _ = stage_ggufs["plan_generation"]
    text = modelfile("plan_generation", base, adapter, "Plan the change.", num_ctx=4096)
    lines = text.splitlines()
    assert f"FROM {base}" in lines and f"ADAPTER {adapter}" in lines
    assert 'PARAMETER stop "<|im_end|>"' in lines and "PARAMETER num_ctx 4096" in lines
    assert "<|im_start|>{{ .Role }}" in text and 'SYSTEM """Plan the change."""' in text
    assert create_command("plan_generation", tmp_path / "Modelfile").startswith(
        "ollama create distill-plan-generation -f "
    )
    assert read_base(smollm2_gguf).n_head_kv == 3


def test_merged_gguf_equals_base_plus_adapter_and_quantises_to_q4_k_m(tmp_path, smollm2_dir, smollm2_gguf):
    """One file per stage: base + adapter merged (F32 for the proof) gives llama.cpp's own base+adapter
    greedy tokens; the F16 merge quantised by llama.cpp to Q4_K_M is far smaller and still generates."""
    import llama_cpp
    from llama_cpp import Llama

    from distill_assets.export.merge import merge_gguf, quantize_gguf

    peft_dir = make_peft_adapter(smollm2_dir, tmp_path / "peft", seed=5, std=0.08, rank=8)
    base_f32 = dequantised_copy(smollm2_gguf, tmp_path / "base-f32.gguf")
    adapter = export_gguf_lora(peft_dir, base_f32, tmp_path / "adapter.gguf")["path"]
    merged = merge_gguf(base_f32, adapter, tmp_path / "merged-f32.gguf", dtype="f32")
    assert merged["merged_tensors"] == 30 * 7
    texts = [f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n" for p in PROMPTS]
    llm = Llama(model_path=str(base_f32), n_ctx=512, n_threads=2, seed=0, verbose=False)
    handle = llama_cpp.llama_adapter_lora_init(llm._model.model, adapter.encode())
    try:
        with_adapter = [_llama_greedy(llm, handle, t) for t in texts]
        base_only = [_llama_greedy(llm, None, t) for t in texts]
    finally:
        llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, None, 0, None)
        llama_cpp.llama_adapter_lora_free(handle)
        llm.close()
    one = Llama(model_path=merged["path"], n_ctx=512, n_threads=2, seed=0, verbose=False)
    try:
        assert [_llama_greedy(one, None, t) for t in texts] == with_adapter
    finally:
        one.close()
    assert with_adapter != base_only  # the merge carried the adapter, it is not the base

    f16 = merge_gguf(smollm2_gguf, adapter, tmp_path / "merged-f16.gguf")  # a quantised base works too
    q = quantize_gguf(f16["path"], tmp_path / "merged-q4_k_m.gguf", "Q4_K_M", threads=2)
    assert q["bytes"] < f16["bytes"] / 2.5
    from gguf import GGUFReader

    types = {t.tensor_type.name for t in GGUFReader(q["path"]).tensors}
    assert "Q4_K" in types or "Q5_0" in types  # llama.cpp chose k-quants (or its fallback for odd widths)
    small = Llama(model_path=q["path"], n_ctx=512, n_threads=2, seed=0, verbose=False)
    try:
        assert len(_llama_greedy(small, None, texts[0])) > 0
    finally:
        small.close()
    with pytest.raises(ExportError, match="not a GGUF LoRA adapter"):
        merge_gguf(base_f32, base_f32, tmp_path / "x.gguf")
    with pytest.raises(ExportError, match="Q4_K_M"):
        quantize_gguf(f16["path"], tmp_path / "y.gguf", "Q3_XYZ")

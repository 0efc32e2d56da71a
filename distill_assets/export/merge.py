"""One file per stage: the GGUF LoRA adapter merged into its base GGUF, then quantised by llama.cpp.

``merge_gguf``: every base matrix the adapter touches becomes ``W + alpha/r * B @ A`` (the adapter's own
GGUF, so names and llama.cpp's q/k row order are already right); the rest is copied dequantised. The
merged file is F16 (F32 on request, for exact comparisons). ``quantize_gguf``: llama.cpp's own quantiser
(``llama_model_quantize`` through llama-cpp-python), e.g. Q4_K_M; tensors whose rows do not fit a
k-quant block fall back to a legacy type inside llama.cpp.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from distill_assets.export.gguf_lora import ExportError, read_base, rewrite_gguf

QUANT_TYPES = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")  # llama.cpp's LLAMA_FTYPE_MOSTLY_<name>


def read_lora(adapter_gguf: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float, str]:
    """base tensor name -> (A [r, n_in], B [n_out, r]) float32, alpha, architecture."""
    from gguf import GGUFReader

    r = GGUFReader(str(adapter_gguf))

    def field(key: str):
        f = r.fields.get(key)
        return f.contents() if f is not None else None

    if field("general.type") != "adapter" or field("adapter.type") != "lora":
        raise ExportError(f"{adapter_gguf}: not a GGUF LoRA adapter")
    parts: dict[str, dict[str, np.ndarray]] = {}
    for t in r.tensors:
        name, _, ab = t.name.rpartition(".lora_")
        shape = tuple(int(x) for x in reversed(t.shape))
        parts.setdefault(name, {})[ab] = np.asarray(t.data, dtype=np.float32).reshape(shape)
    pairs = {}
    for name, d in parts.items():
        if set(d) != {"a", "b"}:
            raise ExportError(f"{adapter_gguf}: {name} lacks lora_a or lora_b")
        pairs[name] = (d["a"], d["b"])
    return pairs, float(field("adapter.lora.alpha")), str(field("general.architecture"))


def merge_gguf(base_gguf: Path, adapter_gguf: Path, out_path: Path, *, dtype: str = "f16") -> dict:
    """Write base + adapter as one model GGUF; returns facts (merged tensors, bytes)."""
    base = read_base(base_gguf)
    pairs, alpha, arch = read_lora(adapter_gguf)
    if arch != base.arch:
        raise ExportError(
            f"{adapter_gguf}: adapter architecture {arch!r} is not the base's {base.arch!r}: base/adapter mismatch"
        )
    for name, (a, b) in pairs.items():
        ne = base.tensors.get(name)
        if ne is None or a.shape[1] != ne[0] or b.shape[0] != ne[1]:
            raise ExportError(
                f"{adapter_gguf}: {name} A{a.shape} B{b.shape} does not fit the base ({ne}): base/adapter mismatch"
            )
    done: list[str] = []

    def add_delta(name: str, w: np.ndarray) -> np.ndarray:
        if name not in pairs:
            return w
        a, b = pairs[name]
        done.append(name)
        return w + (alpha / a.shape[0]) * (b @ a)

    matrix = {"f16": np.float16, "f32": np.float32}.get(dtype)
    if matrix is None:
        raise ExportError(f"merge dtype {dtype!r}: f16 or f32")
    rewrite_gguf(base_gguf, out_path, transform=add_delta, matrix_dtype=matrix)
    if len(done) != len(pairs):
        raise ExportError(f"{adapter_gguf}: {len(pairs) - len(done)} adapter tensors found no base matrix")
    return {"path": str(out_path), "merged_tensors": len(done), "bytes": Path(out_path).stat().st_size}


def quantize_gguf(src: Path, dst: Path, quant: str = "Q4_K_M", threads: int = 0) -> dict:
    """llama.cpp's quantiser on a F16/F32 model GGUF (atomic)."""
    import llama_cpp

    if quant not in QUANT_TYPES:
        raise ExportError(f"quantisation {quant!r}: one of {', '.join(QUANT_TYPES)}")
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.nthread = threads or (os.cpu_count() or 1)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise ExportError(f"llama.cpp could not quantise {src} to {quant} (code {rc})")
    os.replace(tmp, dst)
    return {"path": str(dst), "quant": quant, "bytes": dst.stat().st_size}


def merged_model(
    base_gguf: Path, adapter_gguf: Path, adapter_sha256: str, folder: Path, quant: str, keep_f16: bool = False
) -> tuple[Path, int | None, int | None]:
    """The base with the adapter merged in, quantised to ``quant``: (path, merged tensors, F16 bytes). Keyed
    by the adapter's content, so a second call returns the file it made (tensor counts then None); the F16
    intermediate is deleted unless ``keep_f16``."""
    folder = Path(folder)
    out = folder / f"{adapter_sha256[:16]}-{quant.lower()}.gguf"
    if out.exists():
        return out, None, None
    f16 = folder / f"{adapter_sha256[:16]}-f16.gguf"
    info = merge_gguf(Path(base_gguf), Path(adapter_gguf), f16)
    if quant == "F16":
        f16.replace(out)
    else:
        quantize_gguf(f16, out, quant)
        if not keep_f16:
            f16.unlink()
    return out, info["merged_tensors"], info["bytes"]

"""PEFT LoRA adapters as GGUF LoRA adapters for llama.cpp, written with the `gguf` package.

Tensor names come from gguf's own name maps (``TensorNameMap``: HF module name -> ``blk.N.attn_q``);
the base GGUF supplies the architecture and head counts. llama.cpp stores Llama-family q/k
projections with the rotary halves interleaved (its HF converter permutes them), so the output rows
of ``lora_B`` for q/k are permuted the same way; ``lora_A`` (input side) is unchanged. llama.cpp
checks ``general.type == adapter``, ``adapter.type == lora``, the architecture, and the shapes
``lora_a: [n_in, r]``, ``lora_b: [r, n_out]`` (ggml order), which PEFT's ``[r, n_in]`` / ``[n_out, r]``
arrays give as they are; it scales by ``alpha / r`` like PEFT.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# architectures whose HF -> GGUF conversion permutes the q/k projection rows (llama.cpp's converter)
PERMUTED_QK = {"llama", "mistral", "granite", "deci"}


class ExportError(ValueError):
    """An adapter that cannot become a GGUF adapter for this base (named reason)."""


@dataclass
class BaseInfo:
    path: Path
    arch: str
    n_blocks: int
    n_head: int
    n_head_kv: int
    n_embd: int
    tensors: dict[str, tuple[int, ...]]  # gguf name -> shape in ggml order (ne)


def read_base(path: Path) -> BaseInfo:
    from gguf import GGUFReader

    r = GGUFReader(str(path))

    def field(key: str, default=None):
        f = r.fields.get(key)
        return f.contents() if f is not None else default

    arch = field("general.architecture")
    if not arch:
        raise ExportError(f"{path}: not a model GGUF (no general.architecture)")
    if field("general.type", "model") != "model":
        raise ExportError(f"{path}: general.type is {field('general.type')!r}, not a base model")
    n_head = int(field(f"{arch}.attention.head_count"))
    return BaseInfo(
        path=Path(path),
        arch=arch,
        n_blocks=int(field(f"{arch}.block_count")),
        n_head=n_head,
        n_head_kv=int(field(f"{arch}.attention.head_count_kv", n_head)),
        n_embd=int(field(f"{arch}.embedding_length")),
        tensors={t.name: tuple(int(x) for x in t.shape) for t in r.tensors},
    )


def _permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: per head, the two rotary halves interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_LORA = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


def _gguf_arch(arch: str):
    from gguf import MODEL_ARCH_NAMES

    for enum, name in MODEL_ARCH_NAMES.items():
        if name == arch:
            return enum
    raise ExportError(f"the gguf package has no architecture {arch!r}")


def adapter_tensors(adapter_dir: Path, base: BaseInfo) -> tuple[dict[str, np.ndarray], dict]:
    """GGUF tensor name -> float32 array, and the adapter config."""
    from gguf import TensorNameMap
    from safetensors.numpy import load_file

    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    if cfg.get("peft_type") != "LORA":
        raise ExportError(f"{adapter_dir}: peft_type {cfg.get('peft_type')!r} is not LORA")
    if cfg.get("use_dora") or cfg.get("use_rslora"):
        raise ExportError(f"{adapter_dir}: DoRA / rsLoRA adapters have no llama.cpp equivalent")
    weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    names = TensorNameMap(_gguf_arch(base.arch), base.n_blocks)
    out: dict[str, np.ndarray] = {}
    for key, arr in sorted(weights.items()):
        m = _LORA.match(key)
        if not m:
            raise ExportError(
                f"{adapter_dir}: tensor {key!r} is not a LoRA A/B matrix (modules_to_save is not "
                "supported in GGUF adapters)"
            )
        gname = names.get_name(m["module"] + ".weight", try_suffixes=(".weight",))
        if gname is None:
            raise ExportError(f"{adapter_dir}: no GGUF name for module {m['module']!r} ({base.arch})")
        if gname not in base.tensors:
            raise ExportError(
                f"{adapter_dir}: {gname} is not in the base model {base.path.name}: "
                "the adapter was trained on another architecture or size"
            )
        out[f"{gname}.lora_{m['ab'].lower()}"] = np.asarray(arr, dtype=np.float32)
    # shape checks against the base, in numpy order: A [r, n_in], B [n_out, r]; base ne = [n_in, n_out]
    for name in [n for n in out if n.endswith(".lora_a")]:
        base_name = name[: -len(".lora_a")]
        a, b = out[name], out.get(base_name + ".lora_b")
        if b is None:
            raise ExportError(f"{adapter_dir}: {base_name} has lora_A but no lora_B")
        n_in, n_out = base.tensors[base_name][0], base.tensors[base_name][1]
        if a.shape[1] != n_in or b.shape[0] != n_out or a.shape[0] != b.shape[1]:
            raise ExportError(
                f"{adapter_dir}: {base_name}: adapter shapes A{a.shape} B{b.shape} do not fit the base "
                f"matrix [{n_in} -> {n_out}]: base/adapter mismatch"
            )
    if not out:
        raise ExportError(f"{adapter_dir}: no LoRA tensors")
    if base.arch in PERMUTED_QK:  # llama.cpp's row order for q/k: the output side (B) follows it
        for name in out:
            if name.endswith("attn_q.weight.lora_b"):
                out[name] = _permute_rows(out[name], base.n_head)
            elif name.endswith("attn_k.weight.lora_b"):
                out[name] = _permute_rows(out[name], base.n_head_kv)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}, cfg


def export_gguf_lora(adapter_dir: Path, base_gguf: Path, out_path: Path, *, name: str = "") -> dict:
    """Write the GGUF LoRA adapter; returns facts for metadata (tensors, rank, alpha, bytes, sha256)."""
    from gguf import GGUFWriter

    base = read_base(base_gguf)
    tensors, cfg = adapter_tensors(adapter_dir, base)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    w = GGUFWriter(str(tmp), base.arch)
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(cfg["lora_alpha"]))
    if name:
        w.add_name(name)
    for tname, arr in tensors.items():
        w.add_tensor(tname, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out_path)  # never a half-written adapter under the final name
    return {
        "path": str(out_path),
        "tensors": len(tensors),
        "rank": int(cfg["r"]),
        "alpha": float(cfg["lora_alpha"]),
        "bytes": out_path.stat().st_size,
        "sha256": file_sha256(out_path),
        "arch": base.arch,
        "base_gguf": str(base.path),
    }


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rewrite_gguf(src: Path, dst: Path, *, transform=None, matrix_dtype=np.float32) -> Path:
    """A copy of ``src`` with every tensor dequantised (metadata kept), 2-D matrices stored as
    ``matrix_dtype`` (F32 or F16) and 1-D tensors as F32; ``transform(name, array)`` may change a tensor
    (numpy order). Atomic: never a half-written file under the final name."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    r = GGUFReader(str(src))
    arch = r.fields["general.architecture"].contents()
    tmp = dst.with_name(dst.name + ".partial")
    w = GGUFWriter(str(tmp), arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        vtype = f.types[0]
        value = f.contents()
        if vtype == GGUFValueType.ARRAY:
            w.add_array(key, value)
        else:
            w.add_key_value(key, value, vtype)
    w.add_file_type(0 if matrix_dtype == np.float32 else 1)  # ALL_F32 / MOSTLY_F16
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))  # numpy order
        if t.tensor_type in (GGMLQuantizationType.F32,):
            arr = np.asarray(t.data, dtype=np.float32).reshape(shape)
        else:
            arr = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        if transform is not None:
            arr = transform(t.name, arr)
        w.add_tensor(t.name, arr.astype(matrix_dtype) if arr.ndim == 2 else arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, dst)
    return dst

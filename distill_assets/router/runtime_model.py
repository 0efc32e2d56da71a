"""The GGUF file llama.cpp actually serves, and how: weights stored in a type without llama.cpp's fast
CPU matrix kernels are served from a cached Q8_0 copy, and attention runs as flash attention.

Q4_1 and Q5_1 (SmolLM2-135M ships as Q4_1) have no tinyBLAS / repacked CPU path in llama.cpp, so every
prompt token goes through the generic dot products: about 260 prompt tokens/s on 2 cores. A Q8_0 copy of
the same weights processes prompts about twice as fast together with flash attention
(`bench/student_decoding.py`). Q8_0 keeps the Q4_1 values to within 1/254 of each 32-value block's
largest magnitude, about 3 % of one Q4_1 step, so the served weights stay those of the shipped file.

The copy is made once (llama.cpp's own quantiser, under a second for a 135M model) and cached under a
key of the source file's path, size and modification time; a changed source gives a new copy.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Literal

Requantize = Literal["auto", "off", "q8_0"]

# llama.cpp file types (general.file_type) whose weights have no fast CPU matmul path
SLOW_CPU_FILE_TYPES = {3: "Q4_1", 9: "Q5_1"}
_Q8_0 = 7


class RuntimeModelError(RuntimeError):
    pass


def file_type(path: Path) -> int | None:
    """llama.cpp's ``general.file_type`` of a GGUF, None when the file does not say."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).fields.get("general.file_type")
    except (OSError, ValueError) as exc:
        raise RuntimeModelError(f"{path}: not a readable GGUF model ({exc})") from None
    return int(field.contents()) if field is not None else None


def default_runtime_dir() -> Path:
    return Path(os.environ.get("DISTILL_RUNTIME_MODELS") or Path(tempfile.gettempdir()) / "distill-runtime-models")


def runtime_gguf(path: str | Path, requantize: Requantize = "auto", cache_dir: Path | None = None) -> Path:
    """The file to load for ``path``: ``path`` itself, or its cached Q8_0 copy when ``requantize`` is
    "q8_0", or "auto" and the file's weights are Q4_1 / Q5_1."""
    src = Path(path)
    if requantize == "off":
        return src
    ftype = file_type(src)
    if ftype == _Q8_0 or (requantize == "auto" and ftype not in SLOW_CPU_FILE_TYPES):
        return src
    st = src.stat()
    key = hashlib.sha256(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}|q8_0".encode()).hexdigest()[:16]
    out = Path(cache_dir or default_runtime_dir()) / f"{src.stem}.{key}.q8_0.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    _quantize(src, out)
    return out


def _quantize(src: Path, out: Path) -> None:
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True  # the source is already quantised; Q8_0 holds its values
    params.nthread = os.cpu_count() or 1
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".partial-", suffix=".gguf")
    os.close(fd)
    try:
        with suppress_stdout_stderr(disable=False):  # llama.cpp logs every tensor
            rc = llama_cpp.llama_model_quantize(str(src).encode(), tmp.encode(), ctypes.byref(params))
        if rc != 0:
            raise RuntimeModelError(f"llama.cpp could not requantise {src} to Q8_0 (return code {rc})")
        os.replace(tmp, out)  # atomic: a concurrent process sees the whole file or none
    finally:
        Path(tmp).unlink(missing_ok=True)

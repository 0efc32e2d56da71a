"""Padding-free SFT: rows packed into batches of up to ``pack_tokens`` tokens, every row attending only to
itself, so no padded token is ever computed and each row's loss is exactly what it would be alone.

- ``pack_rows``: TRL's best-fit-decreasing packing (``trl.pack_dataset``), run per difficulty level so the
  curriculum sampler still orders the packed batches easy -> hard. TRL's padding-free collator then flattens
  a packed batch into one row with per-row ``position_ids`` and the cumulative row lengths
  (``cu_seq_lens_q/k``).
- ``varlen_attention``: the attention function the packed model runs (registered with transformers as
  ``distill_varlen``): PyTorch's variable-length flash attention (``torch.nn.attention.varlen``) on CUDA, one
  causal SDPA call per row elsewhere. It gets the row boundaries from the collator, computed once per batch
  on the host, so no layer syncs with the device to find them.
"""

from __future__ import annotations

import inspect

import torch

ATTENTION = "distill_varlen"
_VARLEN: dict = {}  # PyTorch's varlen_attn and its parameter names, resolved once (not inside compiled code)


def pack_rows(tok, pack_tokens: int):
    """Tokenised SFT rows (``TokenisedSFT``) -> a ``datasets.Dataset`` of packed batches: ``input_ids``,
    ``labels``, ``loss_weights`` concatenated row after row, ``seq_lengths`` (each row's length) and the
    batch's ``difficulty`` (rows of one level are packed together). No row is cut: every row is at most
    ``max_length`` <= ``pack_tokens`` tokens long (longer ones were dropped and counted)."""
    from datasets import Dataset, concatenate_datasets
    from trl import pack_dataset

    longest = max((len(x) for x in tok.input_ids), default=0)
    if longest > pack_tokens:
        raise ValueError(f"pack_tokens {pack_tokens} is below the longest row ({longest} tokens)")
    parts = []
    for level in sorted(set(tok.difficulty)):
        idx = [i for i, d in enumerate(tok.difficulty) if d == level]
        ds = Dataset.from_dict(
            {
                "input_ids": [tok.input_ids[i] for i in idx],
                "labels": [tok.labels[i] for i in idx],
                "loss_weights": [tok.loss_weights[i] for i in idx],
            }
        )
        packed = pack_dataset(ds, pack_tokens, strategy="bfd")
        parts.append(packed.add_column("difficulty", [level] * len(packed)))
    if not parts:
        return Dataset.from_dict(
            {"input_ids": [], "labels": [], "loss_weights": [], "seq_lengths": [], "difficulty": []}
        )
    return concatenate_datasets(parts)


def _torch_varlen() -> dict:
    """PyTorch's variable-length attention and how this version takes causality and GQA (the signature
    changed between releases: ``is_causal=`` first, then ``window_size=`` and ``enable_gqa=``)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return {"fn": None, "params": frozenset()}
    return {"fn": varlen_attn, "params": frozenset(inspect.signature(varlen_attn).parameters)}


def _native_gqa() -> bool:
    """Whether this torch's varlen kernel takes fewer K/V heads than query heads (a tiny probe on the GPU);
    if not, K/V heads are repeated to match."""
    fn, params = _VARLEN.get("fn"), _VARLEN.get("params", frozenset())
    if fn is None or "window_size" not in params:
        return False
    if "enable_gqa" in params:
        return True
    q = torch.zeros(16, 4, 64, device="cuda", dtype=torch.bfloat16)
    kv = torch.zeros(16, 2, 64, device="cuda", dtype=torch.bfloat16)
    cu = torch.tensor([0, 16], device="cuda", dtype=torch.int32)
    try:
        fn(q, kv, kv, cu, cu, 16, 16, window_size=(-1, 0))
    except (RuntimeError, ValueError):
        return False
    return True


def _repeat_kv(x: torch.Tensor, groups: int, dim: int) -> torch.Tensor:
    return x if groups == 1 else x.repeat_interleave(groups, dim=dim)


def varlen_attention(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window=None,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    **kwargs,
):
    """transformers attention interface: ``query`` [1, Hq, T, D], ``key``/``value`` [1, Hkv, T, D] of a
    padding-free batch whose rows start at ``cu_seq_lens_q``; returns ([1, T, Hq, D], None). Causal within
    each row, nothing across rows."""
    if attention_mask is not None:
        raise ValueError(f"{ATTENTION} attention takes padding-free batches (no attention_mask)")
    if dropout:
        raise ValueError(f"{ATTENTION} attention has no dropout")
    b, hq, t, d = query.shape
    groups = hq // key.shape[1]
    if cu_seq_lens_q is None:  # one unpadded row per batch entry
        k, v = _repeat_kv(key, groups, 1), _repeat_kv(value, groups, 1)
        out = torch.nn.functional.scaled_dot_product_attention(query, k, v, is_causal=True, scale=scaling)
        return out.transpose(1, 2).contiguous(), None
    if b != 1:
        raise ValueError(f"{ATTENTION} attention: a padding-free batch is one row, got {b}")
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [T, H, D]
    fn, params = _VARLEN.get("fn"), _VARLEN.get("params", frozenset())
    if q.is_cuda and fn is not None:
        if q.dtype == torch.float32:  # QLoRA keeps norms in fp32; flash takes bf16 (as transformers' FA path)
            out, _ = varlen_attention(
                module,
                query.to(torch.bfloat16),
                key.to(torch.bfloat16),
                value.to(torch.bfloat16),
                None,
                scaling=scaling,
                cu_seq_lens_q=cu_seq_lens_q,
                cu_seq_lens_k=cu_seq_lens_k,
                max_length_q=max_length_q,
                max_length_k=max_length_k,
            )
            return out.to(query.dtype), None
        max_q = int(max_length_q or t)
        max_k = int(max_length_k or max_q)
        cu_q = cu_seq_lens_q.to(q.device, torch.int32)
        cu_k = (cu_seq_lens_k if cu_seq_lens_k is not None else cu_seq_lens_q).to(q.device, torch.int32)
        if "window_size" in params:  # causal = no window to the right
            if "enable_gqa" in params:
                extra = {"enable_gqa": groups > 1}
            else:  # flash's varlen kernel takes fewer K/V heads than query heads as they are (GQA)
                extra = {}
                if _VARLEN.get("repeat_kv"):
                    k, v = _repeat_kv(k, groups, 1), _repeat_kv(v, groups, 1)
            out = fn(q, k, v, cu_q, cu_k, max_q, max_k, window_size=(-1, 0), scale=scaling, **extra)
        else:
            k, v = _repeat_kv(k, groups, 1), _repeat_kv(v, groups, 1)
            extra = {"scale": scaling} if "scale" in params else {}
            out = fn(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=True, **extra)
        return out.unsqueeze(0), None
    # elsewhere (CPU): one causal SDPA call per row
    bounds = cu_seq_lens_q.tolist()
    k, v = _repeat_kv(k, groups, 1), _repeat_kv(v, groups, 1)
    outs = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (x[s:e].transpose(0, 1) for x in (q, k, v))  # [H, L, D]
        outs.append(
            torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scaling).transpose(0, 1)
        )
    return torch.cat(outs, dim=0).unsqueeze(0), None


def use_varlen_attention(model) -> str:
    """Register ``varlen_attention`` with transformers and switch ``model`` to it. No mask function is
    registered on purpose: transformers then builds no dense [T, T] mask for the packed batch."""
    from transformers import AttentionInterface

    if not _VARLEN:
        _VARLEN.update(_torch_varlen())
        _VARLEN["repeat_kv"] = torch.cuda.is_available() and not _native_gqa()
    AttentionInterface.register(ATTENTION, varlen_attention)
    model.set_attn_implementation(ATTENTION)
    return ATTENTION

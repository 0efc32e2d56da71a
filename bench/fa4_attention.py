"""FlashAttention-4's CuTe kernels (the ``flash-attn-4`` wheel, SM90 forward and backward) as a transformers
attention function that ``torch.compile`` treats as one opaque op, and a probe that times them against SDPA.

``bench/train_throughput.py``'s ``fa4`` token switches the model to it. The two kernels are wrapped as
``torch.library`` custom ops (``ttbench::fa4_fwd`` and ``ttbench::fa4_bwd``) with fake (meta) functions, so
the regionally compiled decoder layers keep one graph each with the attention as a call inside it, as they do
with SDPA. Causal attention only, no mask and no dropout: what the benchmark's 8,192-token rows need.

The wheel and its CuTe DSL compiler are carried to the GPU host (they are not on PyPI's torch index and
not in the project's CPU venv); nothing here is imported by the project itself.

Usage (on the GPU host, wheels installed): ``python3 bench/fa4_attention.py --out probe.json``: output and
gradient errors of FA4 and of SDPA against an fp32 reference, and forward / forward+backward time and
TFLOP/s of both at the Qwen3-4B attention shape (32 query heads, 8 K/V heads, head dim 128, 8,192 tokens).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

NAME = "fa4"
_STATE: dict = {}


def _kernels():
    if not _STATE:
        from flash_attn.cute import interface as fa

        _STATE.update(fwd=fa._flash_attn_fwd, bwd=fa._flash_attn_bwd)
        try:
            from importlib.metadata import version

            _STATE["version"] = version("flash-attn-4")
        except Exception:  # the version is only reported
            _STATE["version"] = None
    return _STATE


@torch.library.custom_op("ttbench::fa4_fwd", mutates_args=())
def fa4_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention, (batch, seq, heads, dim) layout; returns the output and the log-sum-exp
    (batch, heads, seq) that the backward needs."""
    out, lse, *_ = _kernels()["fwd"](q, k, v, softmax_scale=scale, causal=True, return_lse=True)
    return out, lse


@fa4_fwd.register_fake
def _(q, k, v, scale):
    b, s, h, _ = q.shape
    return torch.empty_like(q), q.new_empty((b, h, s), dtype=torch.float32)


@torch.library.custom_op("ttbench::fa4_bwd", mutates_args=())
def fa4_bwd(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv = _kernels()["bwd"](q, k, v, out, dout.contiguous(), lse, scale, True)[:3]
    return dq, dk, dv


@fa4_bwd.register_fake
def _(dout, q, k, v, out, lse, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup(ctx, inputs, output):
    q, k, v, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.scale = scale


def _backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = fa4_bwd(dout, q, k, v, out, lse, ctx.scale)
    return dq, dk, dv, None


fa4_fwd.register_autograd(_backward, setup_context=_setup)


def fa4_attention(q, k, v, scale: float | None = None):
    """Causal attention of (batch, seq, heads, dim) tensors (K/V may have fewer heads: GQA)."""
    scale = float(scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
    return fa4_fwd(q.contiguous(), k.contiguous(), v.contiguous(), scale)[0]


def attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """The transformers attention interface: (batch, heads, seq, dim) in, (batch, seq, heads, dim) out."""
    if dropout:
        raise ValueError("fa4: no attention dropout")
    out = fa4_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), scaling)
    return out, None


def register() -> str:
    """Register ``fa4`` with transformers (no mask function: none is built for causal rows without padding)."""
    from transformers import AttentionInterface

    _kernels()
    AttentionInterface.register(NAME, attention_forward)
    return NAME


def version() -> str | None:
    return _kernels().get("version")


def probe(seq: int = 8192, heads: int = 32, kv_heads: int = 8, dim: int = 128, iters: int = 20) -> dict:
    """Errors against an fp32 reference (outputs, dq/dk/dv) and timings, FA4 against SDPA's default pick."""
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    mk = lambda h: torch.randn(1, seq, h, dim, device=dev, dtype=torch.bfloat16, generator=g)  # noqa: E731
    q, k, v = mk(heads), mk(kv_heads), mk(kv_heads)
    do = torch.randn_like(q)
    scale = 1.0 / math.sqrt(dim)

    def run_sdpa(q, k, v):  # (b, s, h, d) in and out, like FA4
        o = sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=scale, enable_gqa=True)
        return o.transpose(1, 2)

    def grads(fn, dtype):
        xs = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
        o = fn(*xs)
        o.backward(do.to(dtype))
        return [o.detach().float()] + [x.grad.float() for x in xs]

    ref = grads(run_sdpa, torch.float32)
    res: dict = {"shape": dict(seq=seq, heads=heads, kv_heads=kv_heads, dim=dim), "fa4_version": version()}
    out, lse = fa4_fwd(q, k, v, scale)
    res["lse_shape_ok"] = list(lse.shape) == [1, heads, seq]
    for name, fn in (("fa4", lambda a, b, c: fa4_attention(a, b, c, scale)), ("sdpa", run_sdpa)):
        got = grads(fn, torch.bfloat16)
        res[f"{name}_rel_err"] = {
            n: float((a - r).norm() / r.norm()) for n, a, r in zip(("out", "dq", "dk", "dv"), got, ref)
        }
    del ref
    # causal: half the square; forward 2 GEMMs, backward 5 (incl. the recomputed scores), 2*S*S/2*H*D each
    f_fwd = 2 * 2 * seq * seq / 2 * heads * dim
    f_bwd = 2.5 * f_fwd

    def timed(fn, backward: bool) -> float:
        xs = [t.detach().clone().requires_grad_(backward) for t in (q, k, v)]
        for _ in range(3):
            o = fn(*xs)
            if backward:
                o.backward(do)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            o = fn(*xs)
            if backward:
                o.backward(do)
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / iters

    for name, fn in (("fa4", lambda a, b, c: fa4_attention(a, b, c, scale)), ("sdpa", run_sdpa)):
        with torch.no_grad():
            tf = timed(fn, False)
        tfb = timed(fn, True)
        res[name] = {
            "fwd_ms": 1e3 * tf,
            "fwd_bwd_ms": 1e3 * tfb,
            "bwd_ms": 1e3 * (tfb - tf),
            "fwd_tflops": f_fwd / tf / 1e12,
            "bwd_tflops": f_bwd / (tfb - tf) / 1e12,
        }
    res["speedup_fwd_bwd"] = res["sdpa"]["fwd_bwd_ms"] / res["fa4"]["fwd_bwd_ms"]
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    t = time.perf_counter()
    r = probe(a.seq)
    r["wall_s"] = time.perf_counter() - t
    print(json.dumps(r, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(r, f, indent=1)

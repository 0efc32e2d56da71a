#!/usr/bin/env python3
"""LoRA training-throughput benchmark for a Qwen3-4B-shaped model (random weights).

Measures, in one invocation, several training configurations of the same model and
LoRA adapter, each in its own fresh subprocess (clean peak-memory accounting, an OOM
in one configuration does not kill the others):

  plain            HF transformers + PEFT, gradient checkpointing on every layer
                   (use_reentrant=False), standard HF causal-LM loss (full logits),
                   PEFT defaults (fp32 adapter weights, input cast to adapter dtype),
                   bf16 autocast -- i.e. what Trainer(bf16=True) does.
  liger_*          liger-kernel patches for Qwen3 (fused linear cross-entropy, RMSNorm,
                   SwiGLU, RoPE), with a chosen number of checkpointed layers.
  qlora_*          base linear layers quantised to bitsandbytes NF4 (bf16 compute).

Configuration names are '_'-joined tokens:
  plain | liger     kernel set (plain = stock HF modules and loss)
  nocast            disable PEFT's cast of the layer input to the fp32 adapter dtype;
                    under bf16 autocast the LoRA matmuls then reuse the bf16 input
                    tensor that the frozen base matmul already saved, instead of saving
                    a second (autocast-cast) copy per LoRA module
  ckN               gradient-checkpoint N of the decoder layers (evenly spread);
                    ck0 = none, ck36 = all (for the 36-layer model)
  qlora             NF4 4-bit frozen base (bitsandbytes)
  compile           regional torch.compile of each decoder layer (LoRA included); inductor
                    fuses the pointwise work and its min-cut partitioner recomputes cheap
                    activations in the backward instead of saving them
  ligerce           liger's fused linear cross-entropy only (RMSNorm/SwiGLU/RoPE left to
                    inductor when combined with compile)
  ambNN             (with compile) torch._functorch activation_memory_budget = NN/100
  cudnn             SDPA restricted to the cuDNN attention backend (flash, mem-efficient and math
                    disabled; the worker fails if cuDNN cannot take the layer's shape).  NB: with
                    torch 2.11 / cuDNN 9.19 on an H200 the dispatcher already picks cuDNN by default
                    for this shape (each result records the default pick as `sdpa_backend`)
  flash             SDPA restricted to the flash-attention (FA2) backend, for comparison (its one
                    2026-12-04 run hit a stale compile cache and ran cuDNN kernels: not yet measured)
  fuselora          shared-input projections fused: q/k/v and gate/up each run as ONE frozen-base
                    GEMM (base weights concatenated once, the per-module weights become views of
                    it) plus ONE LoRA-A GEMM (the groups' A matrices concatenated); the B matmuls
                    stay per module.  Same function as PEFT's vanilla LoRA forward.
  fa4               attention through FlashAttention-4's CuTe kernels (the flash-attn-4 wheel, SM90
                    forward and backward) as an opaque custom op (bench/fa4_attention.py), not SDPA
  fold              LoRA-B folded into the frozen base GEMM (distill_assets/training/lora_fold.py): each
                    LoRA linear computes [x | s * x @ A^T] @ [W | B]^T as one GEMM, K + r wide, and its
                    backward dY @ [W | B] as one; no LoRA-B output, no M x N add, one read of dY fewer.
                    W becomes a view of the [W | B] buffer; B is mirrored into it after every step.
  cdt               (with compile) torch._inductor.config.coordinate_descent_tuning = True
  cg                (with compile) CUDA graphs for the compiled layers (mode="reduce-overhead")
  fp8 / fp8e5       frozen base GEMMs in float8 (Hopper, torch._scaled_mm, rowwise scales): every
                    LoRA layer's base linear becomes `FP8FrozenLinear`, which holds W twice in
                    float8_e4m3fn -- W (out x in) with one scale per output channel for the forward
                    x @ W^T, and W^T (in x out) with one scale per input channel for the backward
                    dY @ W -- and frees the bf16 weight (same bytes: 2 x 1 B against 2 B). The
                    activation x is quantised per token (e4m3), the incoming gradient dY per token
                    (e4m3 with `fp8`, e5m2 with `fp8e5`); outputs are bf16. `fp8fwd` (a diagnostic /
                    middle tier): float8 forward only, the backward's dY @ W in bf16 against the kept
                    bf16 W (weights 1.5x the bf16 bytes). Nothing is saved for the
                    backward of the base GEMM (W is constant). LoRA A/B stay as they were (fp32
                    params, bf16 matmuls under autocast). This changes the base model's numerics
                    (like QLoRA's NF4): a separate tier, not the bf16 result. Each fp8 config first
                    computes one step's LoRA gradients with the bf16 base in eager mode on the same
                    weights and batch, then quantises, and reports loss / gradient cosine against it.
                    On CPU the float8 GEMM is emulated (dequantise, fp32 matmul): same math.

FLOP accounting (reported as two MFU figures, peak = --peak-tflops, 989 dense bf16 for
H100 SXM / H200):
  mfu_6n    = 6 * (N_base + N_lora) * tokens/s / peak.  The customary approximation;
              an over-estimate of the matmul work for a frozen base (no weight grads
              for N_base) but it ignores attention scores.
  mfu_model = [4 * N_base + 6 * N_lora + 6 * L * S * H * d_head] * tokens/s / peak,
              per token: forward 2N + input-grad backward 2N for the frozen base, full
              6N for the LoRA weights, causal attention (QK^T and PV, half the square)
              forward 2*S*H*d per layer-token, backward twice that.  Recomputation
              from checkpointing is not counted (MFU, not HFU).
  N_base counts every base parameter (the tied embedding matrix counts once, as the
  lm_head matmul); N_lora the LoRA A/B matrices.

Usage:
  python bench/train_throughput.py --out bench/_work/train_throughput.json
  python bench/train_throughput.py --configs plain_ck36,liger_nocast_ck0 --steps 10
  python bench/train_throughput.py --profile 2 --configs plain_ck36,compile_ligerce_nocast_amb80_ck0
      (--profile N: after timing, N more steps under torch.profiler; GPU kernel ms/step by category
       and the top kernels go into each result's "profile")
  python bench/train_throughput.py --configs plain_ck36,compile_ligerce_nocast_amb80_fp8_cg_ck0
      (the fp8 tier: float8 frozen-base GEMMs, reported apart from the bf16 best)
  python bench/train_throughput.py --fp8-probe   (one layer's base GEMMs, bf16 vs float8, CUDA only)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass

# Qwen3-4B architecture (written out; no weights are loaded).
QWEN3_4B = dict(
    vocab_size=151936,
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    hidden_act="silu",
    attention_bias=False,
    attention_dropout=0.0,
)

# A tiny shape for smoke tests (--tiny), same code path.
TINY = dict(
    QWEN3_4B,
    vocab_size=1024,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

DEFAULT_CONFIGS = [
    "plain_ck36",
    "liger_ck36",
    "liger_nocast_ck36",
    "liger_ck0",
    "liger_nocast_ck0",
    "liger_nocast_ck6",
    "liger_nocast_ck12",
    "liger_nocast_ck18",
    "qlora_liger_nocast_ck36",
]


@dataclass
class Spec:
    name: str
    liger: bool
    nocast: bool
    ckpt_layers: int
    qlora: bool
    compile: bool = False  # regional torch.compile of every decoder layer (one compile, reused)
    ligerce: bool = False  # liger's fused linear cross-entropy only (inductor fuses the rest in-layer)
    amb: float | None = None  # compile's activation memory budget (fraction of what it would save)
    cudnn: bool = False  # SDPA through cuDNN attention only
    flash: bool = False  # SDPA through flash attention (FA2) only
    fuselora: bool = False  # fused q/k/v and gate/up projections (base GEMM + LoRA-A GEMM per group)
    cdt: bool = False  # inductor coordinate-descent tuning of its generated kernels
    cudagraphs: bool = False  # compile(mode="reduce-overhead")
    fp8: bool = False  # frozen base GEMMs in float8 (FP8FrozenLinear)
    fp8_grad: str = "e4m3"  # the backward's dY: e4m3 (fp8), e5m2 (fp8e5), or bf16 against the bf16 W (fp8fwd)
    fa4: bool = False  # attention through FlashAttention-4's CuTe kernels (bench/fa4_attention.py), not SDPA
    fold: bool = False  # LoRA-B folded into the base GEMM: [x | s*x@A^T] @ [W | B]^T (training/lora_fold.py)


FP8_GRAD = {"fp8e5": "e5m2", "fp8fwd": "bf16"}  # variant tokens -> the backward's dY format (plain fp8: e4m3)
FLAG_TOKENS = (
    "liger", "nocast", "qlora", "compile", "ligerce", "cudnn", "flash", "fuselora", "cdt", "cg", "fp8", "fa4",
    "fold",
)  # fmt: skip


def parse_spec(name: str, n_layers: int) -> Spec:
    flags: set[str] = set()
    ck = amb = None
    for tok in name.split("_"):
        if tok in FLAG_TOKENS:
            flags.add(tok)
        elif tok in FP8_GRAD:
            flags.update(("fp8", tok))
        elif tok == "plain":
            flags.discard("liger")
        elif tok.startswith("amb") and tok[3:].isdigit():
            amb = int(tok[3:]) / 100
        elif tok.startswith("ck") and tok[2:].isdigit():
            ck = int(tok[2:])
        else:
            raise ValueError(f"unknown token {tok!r} in config {name!r}")
    liger, nocast, qlora, comp, ligerce, cudnn, flash, fuselora, cdt, cg, fp8, fa4, fold = (
        t in flags for t in FLAG_TOKENS
    )
    if ck is None:
        ck = n_layers
    if ck > n_layers:
        raise ValueError(f"{name}: ck{ck} > {n_layers} layers")
    if amb is not None and not comp:
        raise ValueError(f"{name}: amb needs compile")
    if (cdt or cg) and not comp:
        raise ValueError(f"{name}: cdt/cg need compile")
    if cudnn + flash + fa4 > 1:
        raise ValueError(f"{name}: cudnn, flash and fa4 exclude each other")
    if fuselora and qlora:
        raise ValueError(f"{name}: fuselora needs a bf16 base (not qlora)")
    if len(flags & set(FP8_GRAD)) > 1:
        raise ValueError(f"{name}: one fp8 variant at most")
    if fp8 and (qlora or fuselora):
        raise ValueError(f"{name}: fp8 replaces the bf16 base GEMMs (not with qlora or fuselora)")
    if fold and (qlora or fuselora or fp8):
        raise ValueError(f"{name}: fold needs the bf16 base GEMMs (not with qlora, fuselora or fp8)")
    return Spec(
        name, liger, nocast, ck, qlora, comp, ligerce, amb, cudnn, flash, fuselora, cdt, cg, fp8,
        next((v for k, v in FP8_GRAD.items() if k in flags), "e4m3"), fa4, fold,
    )  # fmt: skip


def checkpointed_indices(n_layers: int, k: int) -> set[int]:
    """k layer indices spread evenly over n_layers."""
    if k <= 0:
        return set()
    return {int(math.floor(i * n_layers / k)) for i in range(k)}


# ----------------------------------------------------------------------------- worker


def quantize_base_nf4(model, torch):
    import bitsandbytes as bnb

    for layer in model.model.layers:
        for parent, names in (
            (layer.self_attn, ["q_proj", "k_proj", "v_proj", "o_proj"]),
            (layer.mlp, ["gate_proj", "up_proj", "down_proj"]),
        ):
            for n in names:
                lin = getattr(parent, n)
                q = bnb.nn.Linear4bit(
                    lin.in_features,
                    lin.out_features,
                    bias=False,
                    compute_dtype=torch.bfloat16,
                    compress_statistics=True,
                    quant_type="nf4",
                    device="meta",
                )
                w = bnb.nn.Params4bit(
                    lin.weight.data, requires_grad=False, quant_type="nf4", compress_statistics=True, module=q
                )
                q.weight = w.to(lin.weight.device)  # quantises on the way
                setattr(parent, n, q)
                del lin, w
    torch.cuda.empty_cache()


def _lora_group(owner, x):
    """The fused projections of one group: [base_i(x) + B_i(A_i(x)) * s_i for each module i].

    One GEMM against the concatenated frozen weights, one GEMM against the concatenated LoRA A
    matrices (fp32 parameters, cast by autocast like PEFT's), then one B matmul per module."""
    import torch
    import torch.nn.functional as F

    a = owner._fused_adapter
    mods = [getattr(owner, n) for n in owner._fused_names]
    base = F.linear(x, owner._fused_w)
    t = F.linear(x, torch.cat([m.lora_A[a].weight for m in mods]))
    outs = base.split(owner._fused_sizes, dim=-1)
    ts = t.split(owner._fused_ranks, dim=-1)
    return [o + F.linear(ti, m.lora_B[a].weight) * m.scaling[a] for o, ti, m in zip(outs, ts, mods)]


def fuse_lora_projections(model, torch, adapter: str = "default") -> int:
    """Route q/k/v and gate/up of every decoder layer through `_lora_group` (see `fuselora`).

    The frozen base weights of a group are concatenated once and each module's base weight becomes
    a view of that buffer (no extra memory). The attention and MLP forwards of this process's model
    classes are replaced by equivalents that call the fused groups (no KV cache: training only)."""
    import sys

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    layers = model.base_model.model.model.layers
    attn_cls, mlp_cls = type(layers[0].self_attn), type(layers[0].mlp)
    mmod = sys.modules[attn_cls.__module__]
    rope = mmod.apply_rotary_pos_emb

    def fuse(owner, names):
        mods = [getattr(owner, n) for n in names]
        for m in mods:
            assert not m.merged and m.base_layer.bias is None, "fuselora: unmerged, bias-free layers only"
            assert adapter not in getattr(m, "lora_variant", {}), "fuselora: vanilla LoRA only"
            assert isinstance(m.lora_dropout[adapter], torch.nn.Identity), "fuselora: lora_dropout must be 0"
        w = torch.cat([m.base_layer.weight.detach() for m in mods])
        off = 0
        for m in mods:
            n = m.base_layer.out_features
            m.base_layer.weight = torch.nn.Parameter(w[off : off + n], requires_grad=False)
            off += n
        owner.register_buffer("_fused_w", w, persistent=False)
        owner._fused_names = list(names)
        owner._fused_sizes = [m.base_layer.out_features for m in mods]
        owner._fused_ranks = [m.lora_A[adapter].weight.shape[0] for m in mods]
        owner._fused_adapter = adapter

    for layer in layers:
        fuse(layer.self_attn, ["q_proj", "k_proj", "v_proj"])
        fuse(layer.mlp, ["gate_proj", "up_proj"])

    def attn_forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        for k in ("cache", "past_key_values", "past_key_value"):
            if kwargs.get(k) is not None:
                raise NotImplementedError("fuselora: no KV cache (training only)")
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        q, k, v = _lora_group(self, hidden_states)
        q = self.q_norm(q.view(hidden_shape)).transpose(1, 2)
        k = self.k_norm(k.view(hidden_shape)).transpose(1, 2)
        v = v.view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = rope(q, k, cos, sin)
        impl = self.config._attn_implementation
        attn_fn = mmod.eager_attention_forward if impl == "eager" else ALL_ATTENTION_FUNCTIONS[impl]
        out, w = attn_fn(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            sliding_window=getattr(self, "sliding_window", None),
        )
        out = self.o_proj(out.reshape(*input_shape, -1).contiguous())
        return out, w

    def mlp_forward(self, x):
        g, u = _lora_group(self, x)
        return self.down_proj(self.act_fn(g) * u)

    attn_cls.forward = attn_forward
    mlp_cls.forward = mlp_forward
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return 2 * len(layers)


_FP8: dict = {}


def fp8_classes():
    """(FP8FrozenLinear, the autograd function): the project's float8 frozen-base layer
    (distill_assets/training/fp8.py, shared with the trainer's `fp8_base` option and the CPU emulation in
    bench/fp8_quality.py; torch is imported lazily)."""
    if _FP8:
        return _FP8["module"], _FP8["function"]
    from distill_assets.training import fp8

    _FP8.update(module=fp8.FP8FrozenLinear, function=fp8.FP8BaseMatmul, quant_rows=fp8.quant_rows)
    return fp8.FP8FrozenLinear, fp8.FP8BaseMatmul


def fp8_base_layers(model, torch, grad: str) -> dict:
    """Replace the base linear of every PEFT LoRA layer by an FP8FrozenLinear; the bf16 weights are freed."""
    from distill_assets.training import fp8

    return fp8.fp8_base_layers(model, grad)


def sdpa_backend_probe(torch, cfg, seq: int, dev) -> str:
    """The SDPA backend the dispatcher picks for this model's causal GQA attention (HF layout)."""
    from torch.nn.attention import SDPBackend

    H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    mk = lambda h: torch.randn(1, seq, h, D, device=dev, dtype=torch.bfloat16).transpose(1, 2).requires_grad_()  # noqa: E731
    c = int(torch._fused_sdp_choice(mk(H), mk(KV), mk(KV), None, 0.0, True, scale=None, enable_gqa=True))
    try:
        return SDPBackend(c).name
    except ValueError:  # a choice this torch's enum does not name: report the number
        return str(c)


def worker(args) -> dict:
    import torch

    arch = TINY if args.tiny else QWEN3_4B
    spec = parse_spec(args.worker, arch["num_hidden_layers"])
    res: dict = {
        "config": spec.name,
        "liger": spec.liger,
        "nocast": spec.nocast,
        "ckpt_layers": spec.ckpt_layers,
        "qlora": spec.qlora,
        "compile": spec.compile,
        "ligerce": spec.ligerce,
        "cudnn": spec.cudnn,
        "flash": spec.flash,
        "fuselora": spec.fuselora,
        "cdt": spec.cdt,
        "cudagraphs": spec.cudagraphs,
        "fp8": spec.fp8,
        "fp8_grad_dtype": spec.fp8_grad if spec.fp8 else None,
        "fa4": spec.fa4,
        "fold": spec.fold,
    }
    if spec.cudnn or spec.flash:
        # what torch.nn.attention.sdpa_kernel(SDPBackend.CUDNN_ATTENTION / FLASH_ATTENTION) does, process-wide
        # (the compiled graphs pick their SDPA kernel from these flags when they are traced)
        torch.backends.cuda.enable_flash_sdp(spec.flash)
        torch.backends.cuda.enable_mem_efficient_sdp(False)
        torch.backends.cuda.enable_math_sdp(False)
        torch.backends.cuda.enable_cudnn_sdp(spec.cudnn)

    if spec.liger:
        from liger_kernel.transformers import apply_liger_kernel_to_qwen3

        # class-level patch before the model is built (this process builds only this model)
        apply_liger_kernel_to_qwen3(
            rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=True
        )
        import liger_kernel

        res["liger_version"] = getattr(liger_kernel, "__version__", None) or _dist_version("liger-kernel")
    elif spec.ligerce:
        from liger_kernel.transformers import apply_liger_kernel_to_qwen3

        apply_liger_kernel_to_qwen3(
            rope=False, rms_norm=False, swiglu=False, cross_entropy=False, fused_linear_cross_entropy=True
        )
        res["liger_version"] = _dist_version("liger-kernel")

    import transformers
    import peft
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from peft import LoraConfig, get_peft_model

    dev = torch.device(args.device)
    torch.manual_seed(0)
    cfg = Qwen3Config(**arch)
    cfg.use_cache = False
    cfg._attn_implementation = args.attn
    if spec.fa4:
        import fa4_attention  # bench/ is this script's folder, first on sys.path

        cfg._attn_implementation = fa4_attention.register()
        res["fa4_version"] = fa4_attention.version()
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    with dev:
        model = Qwen3ForCausalLM(cfg)
    torch.set_default_dtype(prev)
    model.to(dev, torch.bfloat16)
    n_base = sum(p.numel() for p in model.parameters())

    if spec.qlora:
        quantize_base_nf4(model, torch)
        res["bitsandbytes_version"] = _dist_version("bitsandbytes")

    n_layers = cfg.num_hidden_layers
    ck_idx = checkpointed_indices(n_layers, spec.ckpt_layers)
    if ck_idx:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        layers = model.model.layers
        for i, layer in enumerate(layers):
            layer.gradient_checkpointing = i in ck_idx
        assert sum(bool(l.gradient_checkpointing) for l in layers) == len(ck_idx)
    model.train()

    lcfg = LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lcfg)
    if spec.nocast:
        n_set = 0
        for m in model.modules():
            if hasattr(m, "lora_A"):
                m.cast_input_dtype_enabled = False
                n_set += 1
        res["nocast_modules"] = n_set
    if spec.fuselora:
        res["fused_groups"] = fuse_lora_projections(model, torch)
    if spec.amb is not None:
        import torch._functorch.config as fconfig

        fconfig.activation_memory_budget = spec.amb
        res["activation_memory_budget"] = spec.amb
    if spec.compile:
        # regional compilation: each decoder layer (with its LoRA modules) compiled in place; the layers
        # share one graph (parameters are graph inputs), so 36 layers cost one compile
        if spec.cdt:
            import torch._inductor.config as iconfig

            iconfig.coordinate_descent_tuning = True
        for layer in model.base_model.model.model.layers:
            if spec.cudagraphs:
                layer.compile(mode="reduce-overhead")
            else:
                layer.compile()
        res["compiled_layers"] = len(model.base_model.model.model.layers)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_lora = sum(p.numel() for p in trainable)
    res.update(
        n_base=n_base,
        n_lora=n_lora,
        lora_param_dtype=str(trainable[0].dtype),
        torch=torch.__version__,
        transformers=transformers.__version__,
        peft=peft.__version__,
    )

    if dev.type == "cuda" and not spec.fa4:
        res["sdpa_backend"] = sdpa_backend_probe(torch, cfg, args.seq, dev)
        res["cudnn_version"] = torch.backends.cudnn.version()
        if spec.cudnn and res["sdpa_backend"] != "CUDNN_ATTENTION":
            raise RuntimeError(f"cudnn requested but SDPA picks {res['sdpa_backend']}")
        if spec.flash and res["sdpa_backend"] != "FLASH_ATTENTION":
            raise RuntimeError(f"flash requested but SDPA picks {res['sdpa_backend']}")

    opt = torch.optim.AdamW(trainable, lr=1e-5, fused=(dev.type == "cuda"))
    g = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=g).to(dev)

    def step():
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
            out = model(input_ids=ids, labels=ids, use_cache=False)
        loss = out.loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def grads():
        """One step's loss and LoRA gradients (flattened, fp32), without an optimizer step."""
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        g = torch.cat([p.grad.float().flatten() for p in trainable])
        opt.zero_grad(set_to_none=True)
        return float(loss.detach()), g

    def agree(a, b):
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0)), float((a - b).norm() / b.norm())

    import contextlib

    eager = (lambda: torch.compiler.set_stance("force_eager")) if spec.compile else contextlib.nullcontext
    g_ref = None
    if spec.fp8:
        # reference: the same weights and batch with the bf16 base, eager (the layers are compiled lazily: their
        # first compiled call comes after the quantisation)
        with eager():
            l_ref, g_ref = grads()
        res.update(fp8_base_layers(model, torch, spec.fp8_grad))
        res["fp8_ref_loss_bf16_eager"] = l_ref
        if dev.type == "cuda":
            res["mem_after_fp8_gb"] = torch.cuda.memory_allocated() / 1e9
    if spec.fold:
        # reference: PEFT's own LoRA forward on the same weights and batch, eager; then fold (the layers are
        # compiled lazily, so their first compiled call sees the folded modules)
        from distill_assets.training.lora_fold import fold_lora_layers

        with eager():
            l_ref, g_ref = grads()
        folded = fold_lora_layers(model)
        folded.attach(opt)  # the B mirrored in every [W | B] buffer follows each optimizer step
        res.update(folded_modules=len(folded.modules), fold_extra_bytes=folded.extra_bytes)
        res["fold_ref_loss_peft_eager"] = l_ref

    if spec.compile:
        # the compiled layers must compute what eager computes: LoRA gradients of one step, both ways
        l_c, g_c = grads()
        with eager():
            l_e, g_e = grads()
        cos, rel = agree(g_c, g_e)
        res.update(
            gradcheck_loss_compiled=l_c,
            gradcheck_loss_eager=l_e,
            gradcheck_cosine=cos,
            gradcheck_rel_norm=rel,
        )
    elif spec.fp8 or spec.fold:
        l_c, g_c = grads()
        l_e, g_e = l_c, g_c
    if g_ref is not None:
        # fp8 against the bf16 base, or the folded LoRA against PEFT's (both eager; and this config's own path,
        # compiled or not)
        cos_e, rel_e = agree(g_e, g_ref)
        cos_c, rel_c = agree(g_c, g_ref)
        tag, ref = ("fp8", "bf16") if spec.fp8 else ("fold", "peft")
        res.update(
            {
                f"{tag}_loss": l_c,
                f"{tag}_loss_eager": l_e,
                f"{tag}_vs_{ref}_eager_cosine": cos_e,
                f"{tag}_vs_{ref}_eager_rel_norm": rel_e,
                f"{tag}_run_vs_{ref}_eager_cosine": cos_c,
                f"{tag}_run_vs_{ref}_eager_rel_norm": rel_c,
            }
        )
    if spec.compile or spec.fp8 or spec.fold:
        del g_c, g_e, g_ref

    is_cuda = dev.type == "cuda"
    if is_cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        res["mem_after_setup_gb"] = torch.cuda.memory_allocated() / 1e9

    losses = []
    t_w = time.perf_counter()
    for _ in range(args.warmup):
        losses.append(float(step().detach()))
    if is_cuda:
        torch.cuda.synchronize()
    res["warmup_s"] = time.perf_counter() - t_w

    step_times = []
    if is_cuda:
        evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(args.steps)]
    t0 = time.perf_counter()
    last = None
    step_losses = []
    for i in range(args.steps):
        if is_cuda:
            evs[i][0].record()
        last = step()
        step_losses.append(last.detach())
        if is_cuda:
            evs[i][1].record()
        else:
            step_times.append(None)
    if is_cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    losses.append(float(last.detach()))
    res["losses"] = losses[:-1] + [float(x) for x in step_losses]
    if is_cuda:
        step_times = [a.elapsed_time(b) / 1e3 for a, b in evs]

    tokens = args.batch * args.seq * args.steps
    tok_s = tokens / wall
    L, S = cfg.num_hidden_layers, args.seq
    hd = cfg.num_attention_heads * cfg.head_dim
    flops_6n = 6.0 * (n_base + n_lora)
    flops_model = 4.0 * n_base + 6.0 * n_lora + 6.0 * L * S * hd
    peak = args.peak_tflops * 1e12
    res.update(
        tokens_per_s=tok_s,
        step_s_mean=wall / args.steps,
        step_s_min=min(t for t in step_times if t is not None) if is_cuda else None,
        step_s_max=max(t for t in step_times if t is not None) if is_cuda else None,
        mfu_6n=flops_6n * tok_s / peak,
        mfu_model=flops_model * tok_s / peak,
        model_tflops_per_s=flops_model * tok_s / 1e12,
        peak_mem_gb=(torch.cuda.max_memory_allocated() / 1e9) if is_cuda else None,
        peak_reserved_gb=(torch.cuda.max_memory_reserved() / 1e9) if is_cuda else None,
        loss_first=losses[0] if losses else None,
        loss_last=losses[-1],
        gpu=torch.cuda.get_device_name(0) if is_cuda else "cpu",
    )
    if is_cuda and args.profile:
        try:
            res["profile"] = profile_steps(torch, step, args.profile)
        except Exception as e:  # the timing above stands without it
            res["profile"] = {"error": f"{type(e).__name__}: {e}"[:300]}
    return res


def fp8_probe(args) -> dict:
    """The GEMMs of one decoder layer at M = batch*seq tokens: bf16 matmul against torch._scaled_mm with rowwise
    scales (e4m3 x e4m3; and e5m2 x e4m3 for the backward), TFLOP/s by CUDA events; plus the eager per-token
    quantisation cost. Says which float8 operand combinations this torch / cuBLAS accepts."""
    import torch

    fp8_classes()
    quant = _FP8["quant_rows"]
    arch = TINY if args.tiny else QWEN3_4B
    h, f = arch["hidden_size"], arch["intermediate_size"]
    qd, kvd = arch["num_attention_heads"] * arch["head_dim"], arch["num_key_value_heads"] * arch["head_dim"]
    M = args.batch * args.seq
    dev = torch.device("cuda")
    # (name, K, N): y = a (M, K) @ W^T, W (N, K); forward shapes, then the backward's dX = dY @ W as (N -> K)
    fwd = [("q", h, qd), ("kv", h, kvd), ("o", qd, h), ("gate/up", h, f), ("down", f, h)]
    shapes = [(n, k, o, "fwd") for n, k, o in fwd] + [(n, o, k, "bwd") for n, k, o in fwd]

    def timed(fn, it=20):
        for _ in range(3):
            fn()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        a.record()
        for _ in range(it):
            fn()
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b) / it / 1e3

    out: dict = {"M": M, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "gemms": []}
    combos = {}
    for adt in ("e4m3", "e5m2"):
        a = torch.randn(64, 64, device=dev).to(torch.float8_e4m3fn if adt == "e4m3" else torch.float8_e5m2)
        b = torch.randn(64, 64, device=dev).to(torch.float8_e4m3fn)
        try:
            torch._scaled_mm(
                a,
                b.t(),
                scale_a=torch.ones(64, 1, device=dev),
                scale_b=torch.ones(1, 64, device=dev),
                out_dtype=torch.bfloat16,
            )
            combos[f"{adt} x e4m3 rowwise"] = "ok"
        except Exception as e:
            combos[f"{adt} x e4m3 rowwise"] = f"{type(e).__name__}: {e}"[:200]
    out["combos"] = combos
    tot_bf16 = tot_fp8 = tot_q = 0.0
    for name, K, N, d in shapes:
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        w = torch.randn(N, K, device=dev, dtype=torch.bfloat16) / K**0.5
        xq, xs = quant(x, torch.float8_e4m3fn)
        wq, ws = quant(w, torch.float8_e4m3fn)
        wsr = ws.reshape(1, -1).contiguous()
        t_bf = timed(lambda: x @ w.t())
        t_f8 = timed(lambda: torch._scaled_mm(xq, wq.t(), scale_a=xs, scale_b=wsr, out_dtype=torch.bfloat16))
        t_q = timed(lambda: quant(x, torch.float8_e4m3fn))
        fl = 2.0 * M * K * N
        y_ref = x.float() @ w.float().t()
        y8 = torch._scaled_mm(xq, wq.t(), scale_a=xs, scale_b=wsr, out_dtype=torch.bfloat16).float()
        out["gemms"].append(
            dict(
                name=name,
                dir=d,
                M=M,
                K=K,
                N=N,
                bf16_ms=t_bf * 1e3,
                fp8_ms=t_f8 * 1e3,
                quant_eager_ms=t_q * 1e3,
                bf16_tflops=fl / t_bf / 1e12,
                fp8_tflops=fl / t_f8 / 1e12,
                fp8_rel_err=float((y8 - y_ref).norm() / y_ref.norm()),
            )
        )
        # per layer: q, o, down once; kv twice (k and v); gate/up twice
        mult = 2 if name in ("kv", "gate/up") else 1
        tot_bf16 += mult * t_bf
        tot_fp8 += mult * t_f8
        tot_q += mult * t_q
    L = arch["num_hidden_layers"]
    out["per_step_ms"] = {
        "bf16_base_gemms": tot_bf16 * L * 1e3,
        "fp8_base_gemms": tot_fp8 * L * 1e3,
        "eager_quantisation": tot_q * L * 1e3,
        "layers": L,
    }
    return out


# kernel-name patterns -> category (first match wins; names lower-cased)
KERNEL_CATEGORIES = [
    ("inductor triton", ("triton_",)),  # first: inductor names kernels after the ops they fuse
    ("attention", ("sdpa", "fmha", "flash", "attn", "attention")),
    ("gemm", ("gemm", "nvjet", "xmma", "cutlass", "wgmma", "sm90_", "cublas")),
    ("optimizer", ("adam", "multi_tensor")),
    ("loss (liger)", ("cross_entropy", "liger")),
    ("copy/cast/fill", ("copy", "cast", "fill", "memcpy", "memset", "cat")),
]


def profile_steps(torch, step, n: int) -> dict:
    """GPU kernel time of n extra training steps by category (torch.profiler, CUDA activity only)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            step()
        torch.cuda.synchronize()
    by_kernel: dict[str, list] = {}
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = e.time_range.elapsed_us()
        k = by_kernel.setdefault(e.name, [0.0, 0])
        k[0] += us
        k[1] += 1
    cats: dict[str, float] = {}
    for name, (us, _) in by_kernel.items():
        low = name.lower()
        cat = next((c for c, pats in KERNEL_CATEGORIES if any(p in low for p in pats)), "other")
        cats[cat] = cats.get(cat, 0.0) + us
    total = sum(cats.values())
    top = sorted(by_kernel.items(), key=lambda kv: -kv[1][0])[:30]
    return {
        "steps": n,
        "kernel_ms_per_step": total / 1e3 / n,
        "category_ms_per_step": {c: v / 1e3 / n for c, v in sorted(cats.items(), key=lambda kv: -kv[1])},
        "top_kernels": [{"name": k[:160], "ms_per_step": v[0] / 1e3 / n, "calls_per_step": v[1] / n} for k, v in top],
    }


def _dist_version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


# ----------------------------------------------------------------------------- driver


def fmt_table(rows, base_tok):
    hdr = [
        "config",
        "ckpt",
        "tok/s",
        "x plain",
        "MFU 6N",
        "MFU model",
        "peak GB",
        "peak GiB",
        "step s",
        "loss",
        "status",
    ]
    lines = [hdr]
    for r in rows:
        if "error" in r:
            lines.append([r["config"], "", "", "", "", "", "", "", "", "", r["error"][:60]])
            continue
        ratio = (r["tokens_per_s"] / base_tok) if base_tok else float("nan")
        lines.append(
            [
                r["config"],
                str(r["ckpt_layers"]),
                f"{r['tokens_per_s']:,.0f}",
                f"{ratio:.2f}x",
                f"{100 * r['mfu_6n']:.1f}%",
                f"{100 * r['mfu_model']:.1f}%",
                f"{r['peak_mem_gb']:.1f}" if r.get("peak_mem_gb") is not None else "-",
                f"{r['peak_mem_gb'] * 1e9 / 2**30:.1f}" if r.get("peak_mem_gb") is not None else "-",
                f"{r['step_s_mean']:.3f}",
                f"{r['loss_last']:.3f}",
                "ok",
            ]
        )
    w = [max(len(l[i]) for l in lines) for i in range(len(hdr))]
    out = []
    for j, l in enumerate(lines):
        out.append(" | ".join(c.ljust(w[i]) for i, c in enumerate(l)))
        if j == 0:
            out.append("-+-".join("-" * x for x in w))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated config names (see module doc)"
    )
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--alpha", type=int, default=256)
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the card (H100 SXM / H200: 989)"
    )
    ap.add_argument(
        "--mem-limit-gb",
        type=float,
        default=40.0,
        help="memory budget (GB = 1e9 bytes) used to pick the best liger configuration",
    )
    ap.add_argument("--tiny", action="store_true", help="tiny model shape, for smoke tests")
    ap.add_argument(
        "--profile", type=int, default=0, help="after timing, profile N extra steps' GPU kernels (by category)"
    )
    ap.add_argument("--timeout", type=int, default=400, help="per-config subprocess timeout, s")
    ap.add_argument(
        "--fp8-probe",
        action="store_true",
        help="only time one layer's base GEMMs, bf16 against float8 torch._scaled_mm (CUDA), and exit",
    )
    ap.add_argument(
        "--fa4-probe",
        action="store_true",
        help="only compare FlashAttention-4 (bench/fa4_attention.py) with SDPA at the model's attention shape, and exit",
    )
    ap.add_argument("--out", default=None, help="write JSON results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.fp8_probe:
        res = fp8_probe(args)
        print(json.dumps(res, indent=1))
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"args": vars(args), "fp8_probe": res}, f, indent=2)
        return
    if args.fa4_probe:
        import fa4_attention

        res = fa4_attention.probe(args.seq)
        print(json.dumps(res, indent=1))
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"args": vars(args), "fa4_probe": res}, f, indent=2)
        return
    if args.worker:
        res = worker(args)
        with open(args.worker_out, "w") as f:
            json.dump(res, f)
        return

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    n_layers = (TINY if args.tiny else QWEN3_4B)["num_hidden_layers"]
    for c in configs:
        parse_spec(c, n_layers)  # validate early

    rows = []
    passthru = [
        "--seq",
        str(args.seq),
        "--batch",
        str(args.batch),
        "--warmup",
        str(args.warmup),
        "--steps",
        str(args.steps),
        "--rank",
        str(args.rank),
        "--alpha",
        str(args.alpha),
        "--attn",
        args.attn,
        "--device",
        args.device,
        "--peak-tflops",
        str(args.peak_tflops),
        "--profile",
        str(args.profile),
    ]
    if args.tiny:
        passthru.append("--tiny")
    tmpdir = os.environ.get("TMPDIR", "/tmp")
    for c in configs:
        wout = os.path.join(tmpdir, f"train_throughput_{os.getpid()}_{c}.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", c, "--worker-out", wout] + passthru
        # one compile cache per configuration: the on-disk inductor/AOT-autograd caches appear not to be keyed
        # on the SDPA backend flags (2026-12-04: a `flash` config, run after cuDNN ones with a shared cache,
        # ran cuDNN kernels in its compiled layers); a repeat of the same config still hits its own cache
        env = dict(os.environ)
        env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(os.environ.get("TORCHINDUCTOR_CACHE_DIR", tmpdir), f"tt_{c}")
        print(f"\n=== {c}", flush=True)
        t = time.perf_counter()
        try:
            p = subprocess.run(cmd, timeout=args.timeout, capture_output=True, text=True, env=env)
            tail = (p.stdout + p.stderr)[-3000:]
            if p.returncode == 0 and os.path.exists(wout):
                with open(wout) as f:
                    r = json.load(f)
                os.remove(wout)
            else:
                lines = [l for l in tail.strip().splitlines() if l.strip()]
                err = lines[-1] if lines else f"rc={p.returncode}"
                if "OutOfMemoryError" in tail or "out of memory" in tail:
                    err = "OOM: " + err
                r = {"config": c, "error": err, "log_tail": tail}
                print(tail, flush=True)
        except subprocess.TimeoutExpired:
            r = {"config": c, "error": f"timeout after {args.timeout}s"}
        r["wall_s"] = time.perf_counter() - t
        rows.append(r)
        if args.out:  # partial results survive an interrupted run
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump({"args": vars(args), "results": rows, "partial": True}, f, indent=2)
        if "error" in r:
            print(f"  FAILED: {r['error']}", flush=True)
        else:
            pk = r.get("peak_mem_gb")
            print(
                f"  {r['tokens_per_s']:,.0f} tok/s  peak {pk if pk is None else round(pk, 1)} GB  "
                f"mfu_model {100 * r['mfu_model']:.1f}%  loss {r['loss_first']:.3f}->{r['loss_last']:.3f}  "
                f"({r['wall_s']:.0f}s)",
                flush=True,
            )

    base = next(
        (
            r
            for r in rows
            if r["config"].startswith("plain") and "error" not in r and not r.get("qlora") and not r.get("fp8")
        ),
        None,
    )
    base_tok = base["tokens_per_s"] if base else None
    ok_liger = [
        r
        for r in rows
        if "error" not in r
        and (r["liger"] or r.get("compile") or r.get("ligerce"))
        and not r["qlora"]
        and r.get("peak_mem_gb") is not None
        and r["peak_mem_gb"] <= args.mem_limit_gb
    ]
    # fp8 changes the base model's numerics: its own tier, never the bf16 best
    ok_fp8 = [r for r in ok_liger if r.get("fp8")]
    ok_liger = [r for r in ok_liger if not r.get("fp8")]
    best = max(ok_liger, key=lambda r: r["tokens_per_s"]) if ok_liger else None
    best_fp8 = max(ok_fp8, key=lambda r: r["tokens_per_s"]) if ok_fp8 else None
    by_name = {r["config"]: r for r in rows if "error" not in r}
    fp8_vs_bf16 = {}
    for r in rows:
        if "error" in r or not r.get("fp8"):
            continue
        twin = "_".join(t for t in r["config"].split("_") if t != "fp8" and t not in FP8_GRAD)
        d = {
            "grad_cosine_vs_bf16_eager": r.get("fp8_vs_bf16_eager_cosine"),
            "grad_cosine_run_vs_bf16_eager": r.get("fp8_run_vs_bf16_eager_cosine"),
            "loss_step0_fp8_vs_bf16": [r.get("fp8_loss"), r.get("fp8_ref_loss_bf16_eager")],
        }
        if twin in by_name:
            a, b = r["losses"], by_name[twin]["losses"]
            d.update(
                bf16_twin=twin,
                speedup_vs_twin=r["tokens_per_s"] / by_name[twin]["tokens_per_s"],
                losses_fp8_first_last=[a[0], a[-1]],
                losses_bf16_first_last=[b[0], b[-1]],
                max_abs_loss_diff=max(abs(x - y) for x, y in zip(a, b)),
            )
        fp8_vs_bf16[r["config"]] = d
    qlora_rows = [r for r in rows if r.get("qlora") and "error" not in r]

    print("\n" + fmt_table(rows, base_tok))
    summary = {
        "plain": base["config"] if base else None,
        "plain_tokens_per_s": base_tok,
        "best_liger_within_limit": best["config"] if best else None,
        "best_liger_tokens_per_s": best["tokens_per_s"] if best else None,
        "best_liger_peak_gb": best["peak_mem_gb"] if best else None,
        "ratio_best_over_plain": (best["tokens_per_s"] / base_tok) if (best and base_tok) else None,
        "best_fp8_within_limit": best_fp8["config"] if best_fp8 else None,
        "best_fp8_tokens_per_s": best_fp8["tokens_per_s"] if best_fp8 else None,
        "best_fp8_peak_gb": best_fp8["peak_mem_gb"] if best_fp8 else None,
        "ratio_best_fp8_over_plain": (best_fp8["tokens_per_s"] / base_tok) if (best_fp8 and base_tok) else None,
        "fp8_vs_bf16": fp8_vs_bf16,
        "mem_limit_gb": args.mem_limit_gb,
        "qlora_peak_gb": {r["config"]: r["peak_mem_gb"] for r in qlora_rows},
    }
    print("\nsummary:", json.dumps(summary, indent=2))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(
                {"args": vars(args), "arch": TINY if args.tiny else QWEN3_4B, "results": rows, "summary": summary},
                f,
                indent=2,
            )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

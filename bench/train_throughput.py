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


def parse_spec(name: str, n_layers: int) -> Spec:
    liger = nocast = qlora = comp = ligerce = False
    ck = amb = None
    for tok in name.split("_"):
        if tok == "plain":
            liger = False
        elif tok == "liger":
            liger = True
        elif tok == "nocast":
            nocast = True
        elif tok == "qlora":
            qlora = True
        elif tok == "compile":
            comp = True
        elif tok == "ligerce":
            ligerce = True
        elif tok.startswith("amb") and tok[3:].isdigit():
            amb = int(tok[3:]) / 100
        elif tok.startswith("ck") and tok[2:].isdigit():
            ck = int(tok[2:])
        else:
            raise ValueError(f"unknown token {tok!r} in config {name!r}")
    if ck is None:
        ck = n_layers
    if ck > n_layers:
        raise ValueError(f"{name}: ck{ck} > {n_layers} layers")
    if amb is not None and not comp:
        raise ValueError(f"{name}: amb needs compile")
    return Spec(name, liger, nocast, ck, qlora, comp, ligerce, amb)


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
    }

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
    if spec.amb is not None:
        import torch._functorch.config as fconfig

        fconfig.activation_memory_budget = spec.amb
        res["activation_memory_budget"] = spec.amb
    if spec.compile:
        # regional compilation: each decoder layer (with its LoRA modules) compiled in place; the layers
        # share one graph (parameters are graph inputs), so 36 layers cost one compile
        for layer in model.base_model.model.model.layers:
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

    if spec.compile:
        # the compiled layers must compute what eager computes: LoRA gradients of one step, both ways
        def grads():
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            g = torch.cat([p.grad.float().flatten() for p in trainable])
            opt.zero_grad(set_to_none=True)
            return float(loss.detach()), g

        l_c, g_c = grads()
        with torch.compiler.set_stance("force_eager"):
            l_e, g_e = grads()
        res.update(
            gradcheck_loss_compiled=l_c,
            gradcheck_loss_eager=l_e,
            gradcheck_cosine=float(torch.nn.functional.cosine_similarity(g_c, g_e, dim=0)),
            gradcheck_rel_norm=float((g_c - g_e).norm() / g_e.norm()),
        )
        del g_c, g_e

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
    return res


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
    ap.add_argument("--timeout", type=int, default=400, help="per-config subprocess timeout, s")
    ap.add_argument("--out", default=None, help="write JSON results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

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
    ]
    if args.tiny:
        passthru.append("--tiny")
    tmpdir = os.environ.get("TMPDIR", "/tmp")
    for c in configs:
        wout = os.path.join(tmpdir, f"train_throughput_{os.getpid()}_{c}.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", c, "--worker-out", wout] + passthru
        print(f"\n=== {c}", flush=True)
        t = time.perf_counter()
        try:
            p = subprocess.run(cmd, timeout=args.timeout, capture_output=True, text=True)
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

    base = next((r for r in rows if r["config"].startswith("plain") and "error" not in r and not r.get("qlora")), None)
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
    best = max(ok_liger, key=lambda r: r["tokens_per_s"]) if ok_liger else None
    qlora_rows = [r for r in rows if r.get("qlora") and "error" not in r]

    print("\n" + fmt_table(rows, base_tok))
    summary = {
        "plain": base["config"] if base else None,
        "plain_tokens_per_s": base_tok,
        "best_liger_within_limit": best["config"] if best else None,
        "best_liger_tokens_per_s": best["tokens_per_s"] if best else None,
        "best_liger_peak_gb": best["peak_mem_gb"] if best else None,
        "ratio_best_over_plain": (best["tokens_per_s"] / base_tok) if (best and base_tok) else None,
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

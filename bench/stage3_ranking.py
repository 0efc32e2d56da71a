"""Has the stage-3 adapter learned *which* shown symbols a change touches, whatever the decoding does? Each
shown ``path:symbol`` of a held-out task is scored by the model's log-probability of writing it as the first
selection, after the prompt and ``{"symbols":[{"path":"`` (the answers' compact form); the shown symbols are
ranked by it, base against adapter, paired by task:

    .venv/bin/python bench/stage3_ranking.py --work /tmp/lh/learn/click

Reads a `distill learn` run's work folder: the stage-3 prompts and schemas (the shown choices are the schema's
enums, ``<module>`` left out as the gold leaves it out), the reference plans, the served base model, the
exported stage-3 GGUF adapter (`gguf_adapters` table) and the task list of the last stage-3 evaluation.
Reports the mean reciprocal rank of the first gold symbol among the shown ones (tasks with a shown gold
symbol), recall@k and the symbol F1 of the top-k selection against the whole gold set (all tasks), with the
index order of the prompt (the ranking by the task's words) as a reference. A diagnostic, not the evaluation.
"""

import argparse
import glob
import json
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
from llama_cpp import Llama

from distill_assets.evaluation.metrics import gold_symbols, paired_gain, prf
from distill_assets.plans.schema import Plan

ANSWER_HEAD = '{"symbols":[{"path":"'


def shown(schema: dict) -> list[tuple[str, str]]:
    """The (path, symbol) pairs the schema offers for existing symbols, in the index's order."""
    item = schema["properties"]["symbols"]["items"]
    out: list[tuple[str, str]] = []
    for b in item.get("anyOf", [item]):
        if b["properties"]["action"].get("enum") == ["add"]:
            continue
        for p in b["properties"]["path"].get("enum", []):
            out += [(p, y) for y in b["properties"]["symbol"].get("enum", []) if y != "<module>"]
    return list(dict.fromkeys(out))


def chatml(llm: Llama, messages: list[dict]) -> str:
    template = llm.metadata.get("tokenizer.chat_template", "")
    if "<|im_start|>" not in template:
        raise SystemExit(f"the model's chat template is not ChatML: {template[:80]!r}")
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n"


def log_softmax(row: np.ndarray) -> np.ndarray:
    m = row.max()
    return row - m - np.log(np.exp(row - m).sum())


def score(llm: Llama, head: str, texts: list[str]) -> list[float]:
    """log p(text | head) for each text. The texts are visited in sorted order and each evaluation starts from
    the longest token prefix it shares with what the context already holds (the head, the same path), so a
    candidate costs only its own tokens; where the tokenizer merges across the head's end, the shared part
    is scored from the last common token."""
    prefix = llm.tokenize(head.encode(), add_bos=False, special=True)
    llm.reset()
    llm.eval(prefix)
    out = {}
    for t in sorted(set(texts)):
        full = llm.tokenize((head + t).encode(), add_bos=False, special=True)
        start = max(1, _lcp(full, prefix))
        held = _lcp(full, list(llm.input_ids[: llm.n_tokens]))
        llm.n_tokens = max(start, min(held, len(full) - 1))
        llm.eval(full[llm.n_tokens :])
        out[t] = sum(float(log_softmax(llm.scores[j - 1])[full[j]]) for j in range(start, len(full)))
    return [out[t] for t in texts]


def _lcp(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="a learn run's repository folder, e.g. /tmp/lh/learn/click")
    ap.add_argument("--out", help="write the per-task ranks here (JSON)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N tasks (a smoke run)")
    a = ap.parse_args()
    w = Path(a.work)
    evs = [pl.read_parquet(f) for f in sorted(glob.glob(f"{w}/cache/evaluations/*.parquet"), key=os.path.getmtime)]
    tasks = [d for d in evs if d["stage"][0] == "symbol_selection"][-1]["task_id"].unique().to_list()
    prompts = pl.read_parquet(w / "storage/tables/stage_prompts/symbol_selection.parquet")
    prompts = prompts.filter(pl.col("task_id").is_in(tasks)).sort("task_id")
    prompts = prompts.head(a.limit) if a.limit else prompts
    tasks = prompts["task_id"].to_list()
    refs = pl.read_parquet(w / "storage/tables/reference_plans.parquet").filter(pl.col("task_id").is_in(tasks))
    gold = {r["task_id"]: gold_symbols(Plan.model_validate_json(r["plan_json"])) for r in refs.iter_rows(named=True)}
    gg = pl.read_parquet(w / "storage/tables/gguf_adapters/symbol_selection.parquet").row(0, named=True)
    model = glob.glob(f"{w}/cache/runtime_models/*.gguf")[0]
    print(f"{prompts.height} tasks, adapter {gg['gguf_path']}", flush=True)

    ranked: dict[str, dict[str, list[str]]] = {"index order": {}}
    for r in prompts.iter_rows(named=True):
        ranked["index order"][r["task_id"]] = [f"{p}:{y}" for p, y in shown(json.loads(r["schema_json"]))]
    for system, lora in (("base", None), ("adapter", gg["gguf_path"])):
        llm = Llama(model_path=model, lora_path=lora, n_ctx=4096, n_threads=2, logits_all=True, verbose=False)
        t0, ranked[system] = time.time(), {}
        for i, r in enumerate(prompts.iter_rows(named=True)):
            pairs = shown(json.loads(r["schema_json"]))
            head = chatml(llm, json.loads(r["messages_json"])) + ANSWER_HEAD
            lps = score(llm, head, [f'{p}","symbol":"{y}","action":"' for p, y in pairs])
            order = sorted(range(len(pairs)), key=lambda k: -lps[k])
            ranked[system][r["task_id"]] = [f"{pairs[k][0]}:{pairs[k][1]}" for k in order]
            if (i + 1) % 10 == 0:
                print(f"  {system}: {i + 1}/{prompts.height} tasks, {time.time() - t0:.0f} s", flush=True)
        print(f"{system}: {time.time() - t0:.0f} s", flush=True)

    def rr(order: list[str], g: set[str]) -> float | None:
        hits = [k for k, s in enumerate(order) if s in g]
        return 1.0 / (hits[0] + 1) if hits else None

    metrics: dict[str, dict[str, dict[str, float | None]]] = {}
    for system, by_task in ranked.items():
        m: dict[str, dict[str, float | None]] = {"mrr": {}, "recall@3": {}, "f1@1": {}, "f1@3": {}}
        for tid, order in by_task.items():
            g = gold.get(tid, set())
            reach = g & set(order)
            m["mrr"][tid] = rr(order, g) if reach else None
            m["recall@3"][tid] = len(set(order[:3]) & reach) / len(reach) if reach else None
            m["f1@1"][tid] = prf(order[:1], g)["f1"]
            m["f1@3"][tid] = prf(order[:3], g)["f1"]
        metrics[system] = m
    n_reach = sum(v is not None for v in metrics["base"]["mrr"].values())
    print(f"\n{len(gold)} tasks, {n_reach} with a gold symbol among the shown ones")
    print("| metric | index order | base | adapter | adapter - base (paired, 95 %) |\n|---|---|---|---|---|")
    for name in ("mrr", "recall@3", "f1@1", "f1@3"):
        g = paired_gain(metrics["adapter"][name], metrics["base"][name], n_boot=2000)
        idx = [v for v in metrics["index order"][name].values() if v is not None]
        print(
            f"| {name} | {np.mean(idx):.3f} | {g['other']:.3f} | {g['candidate']:.3f} | "
            f"{g['gain']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}] (n={g['n']}) |"
        )
    if a.out:
        Path(a.out).write_text(json.dumps({"ranked": ranked, "metrics": metrics}, indent=1))


if __name__ == "__main__":
    main()

"""Stage-3 answers of the base model and a trained adapter, under the task's schema and under the same schema
without its free ``add`` branch (existing, shown symbols only), on the held-out tasks a `distill learn` run
evaluated: is the non-gain the decoding (a free name always fits) or the skill?

    .venv/bin/python bench/stage3_decoding.py --work /tmp/lh/learn/click

Reads the learn run's work folder (stage prompts and schemas, reference plans, the served base model and the
stage-3 GGUF adapter, the last stage-3 evaluation's task list). Greedy, 300 tokens, repeat penalty 1.15, the JSON
schema through llama-cpp-python's ``response_format`` (no StringCap: a diagnostic, not the evaluation).
"""

import argparse
import glob
import json
import os
import time

import polars as pl
from llama_cpp import Llama

from distill_assets.evaluation.metrics import gold_symbols, prf
from distill_assets.plans.schema import Plan


def without_add(schema: dict) -> dict:
    s = json.loads(json.dumps(schema))
    item = s["properties"]["symbols"]["items"]
    if "anyOf" in item:
        item["anyOf"] = [b for b in item["anyOf"] if b["properties"]["action"].get("enum") != ["add"]]
    return s


def shown_choices(schema: dict) -> set[str]:
    item = schema["properties"]["symbols"]["items"]
    out = set()
    for b in item.get("anyOf", [item]):
        if b["properties"]["action"].get("enum") == ["add"]:
            continue
        for p in b["properties"]["path"].get("enum", []):
            out |= {f"{p}:{y}" for y in b["properties"]["symbol"].get("enum", [])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="a learn run's repository folder, e.g. /tmp/lh/learn/click")
    a = ap.parse_args()
    w = a.work
    evs = [pl.read_parquet(f) for f in sorted(glob.glob(f"{w}/cache/evaluations/*.parquet"), key=os.path.getmtime)]
    tasks = [d for d in evs if d["stage"][0] == "symbol_selection"][-1]["task_id"].to_list()
    prompts = pl.read_parquet(f"{w}/storage/tables/stage_prompts/symbol_selection.parquet")
    prompts = prompts.filter(pl.col("task_id").is_in(tasks))
    refs = pl.read_parquet(f"{w}/storage/tables/reference_plans.parquet").filter(pl.col("task_id").is_in(tasks))
    gold = {
        r["task_id"]: gold_symbols(Plan.model_validate_json(r["plan_json"]))
        for r in refs.iter_rows(named=True)
        if r["plan_json"]
    }
    n_gold = n_shown = n_tasks = 0
    for r in prompts.iter_rows(named=True):
        hit = gold.get(r["task_id"], set()) & shown_choices(json.loads(r["schema_json"]))
        n_gold, n_shown, n_tasks = n_gold + len(gold.get(r["task_id"], ())), n_shown + len(hit), n_tasks + bool(hit)
    print(f"{prompts.height} tasks; {n_gold} gold symbols, {n_shown} of them shown; {n_tasks} tasks with one shown")
    model = glob.glob(f"{w}/cache/runtime_models/*.gguf")[0]
    adapter = glob.glob(f"{w}/cache/gguf_adapters/symbol_selection/*.gguf")[0]
    for system, lora in (("base", None), ("adapter", adapter)):
        llm = Llama(model_path=model, lora_path=lora, n_ctx=4096, n_threads=2, verbose=False, seed=0)
        for variant in ("schema", "no_add"):
            f1s, actions, t0 = [], {}, time.time()
            for r in prompts.iter_rows(named=True):
                schema = json.loads(r["schema_json"])
                res = llm.create_chat_completion(
                    messages=json.loads(r["messages_json"]),
                    temperature=0.0,
                    max_tokens=300,
                    repeat_penalty=1.15,
                    response_format={
                        "type": "json_object",
                        "schema": without_add(schema) if variant == "no_add" else schema,
                    },
                )
                try:
                    sel = json.loads(res["choices"][0]["message"]["content"] or "")["symbols"]
                except (ValueError, KeyError, TypeError):
                    f1s.append(0.0)
                    actions["unparsed"] = actions.get("unparsed", 0) + 1
                    continue
                for s in sel:
                    actions[s.get("action")] = actions.get(s.get("action"), 0) + 1
                f1s.append(prf({f"{s['path']}:{s['symbol']}" for s in sel}, gold.get(r["task_id"], set()))["f1"])
            print(
                f"{system:8} {variant:7} symbol F1 {sum(f1s) / len(f1s):.3f}  tasks > 0: {sum(x > 0 for x in f1s)}"
                f"  actions {actions}  {time.time() - t0:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()

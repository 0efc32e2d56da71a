"""A fault-injecting proxy in front of the real llama.cpp server: no answer lost, no paid call repeated,
malformed output a counted row, permanent errors one clear message, batch mode, crash and resume."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import httpx2 as httpx
import openai
import pytest

from distill_assets.teachers.cache import ResponseCache
from distill_assets.teachers.client import TeacherPermanentError, retry_after_seconds
from distill_assets.teachers.runner import candidates_table, run_teacher
from distill_assets_tests.faultproxy import FaultProxy
from distill_assets_tests.teachers.helpers import local_teacher, requests_for


def test_faults_lose_no_answer_and_repeat_no_paid_call(llama_server, sample_prompts, tmp_path):
    prompts = sample_prompts["task_analysis"]
    reqs = requests_for(prompts, 2, 120)  # 6 requests
    # one script per request (by body, whatever the arrival order): a loaded CPU can delay answers and make the
    # client time out and retry, but each request still meets its faults, and the cut answer stays cut
    scripts = [[("429", 1), ("429", 0)], ["500", "500"], ["timeout"], ["drop"], ["garbled"], ["cut_content"]]
    teacher = local_teacher(concurrency=2, timeout_s=30.0)  # well above a real answer (~2 s idle), below the stall
    cache = ResponseCache(tmp_path / "c.sqlite")
    with FaultProxy(llama_server, scripts=scripts, timeout_sleep_s=40.0) as proxy:
        t0 = time.time()
        answers, stats = run_teacher(teacher, proxy.base_url, None, cache, reqs)
        elapsed = time.time() - t0
        df = candidates_table(answers, teacher)
        assert df.height == 6 and df["call_error"].null_count() == 6  # every request answered
        assert set(proxy.injected) == {"429", "500", "timeout", "drop", "garbled", "cut_content"}
        assert stats["retries"] >= 6
        # each distinct request body was answered by the real server and delivered exactly once
        assert len(proxy.delivered) == 6 and set(proxy.delivered.values()) == {1}
        # the answer cut short is kept as a row with its parse error, not retried, not dropped
        assert df["parse_error"].drop_nulls().len() >= 1 and proxy.injected["cut_content"] >= 1
        assert elapsed >= 1.0  # Retry-After: 1 was honoured
        assert cache.count() == 6

        forwarded = proxy.forwarded
        again, stats2 = run_teacher(teacher, proxy.base_url, None, cache, reqs)
        assert proxy.forwarded == forwarded and stats2.get("calls", 0) == 0  # zero repeated calls
        assert all(a.cache_hit for a in again)
        assert candidates_table(again, teacher)["raw_text"].to_list() == df["raw_text"].to_list()


def test_exhausted_retries_are_counted_rows_not_cached(llama_server, sample_prompts, tmp_path):
    teacher = local_teacher(max_retries=1)
    cache = ResponseCache(tmp_path / "c.sqlite")
    with FaultProxy(llama_server, faults=["500", "500"]) as proxy:
        answers, stats = run_teacher(
            teacher, proxy.base_url, None, cache, requests_for(sample_prompts["task_analysis"][:1], 1, 60)
        )
        df = candidates_table(answers, teacher)
        assert df["call_error"][0].startswith("gave up after 2 attempts: InternalServerError")
        assert cache.count() == 0  # a rerun will ask again
        again, _ = run_teacher(
            teacher, proxy.base_url, None, cache, requests_for(sample_prompts["task_analysis"][:1], 1, 60)
        )
        assert again[0].error is None and cache.count() == 1


@pytest.mark.parametrize(
    "status, expect",
    [(401, "the API key was rejected (check the env var QWEN_KEY)"), (404, "model 'qwen-x' or endpoint not found")],
)
def test_permanent_errors_stop_at_once_with_one_message(status, expect, llama_server, sample_prompts, tmp_path):
    teacher = local_teacher(kind="openai", base_url="http://x", model="qwen-x", api_key_env="QWEN_KEY")
    with FaultProxy(llama_server) as proxy:
        proxy.status_override = status
        with pytest.raises(TeacherPermanentError) as err:
            run_teacher(
                teacher,
                proxy.base_url,
                "sk-secret-123",
                ResponseCache(tmp_path / "c.sqlite"),
                requests_for(sample_prompts["task_analysis"], 2, 60),
            )
        assert f"HTTP {status}" in str(err.value) and expect in str(err.value)
        assert "sk-secret-123" not in str(err.value)
        assert proxy.received <= teacher.concurrency + 1  # stopped at once, not retried


def test_batch_mode_through_an_openai_style_batch_endpoint(llama_server, sample_prompts, tmp_path):
    teacher = local_teacher(batch=True, batch_poll_s=0.2)
    cache = ResponseCache(tmp_path / "c.sqlite")
    reqs = requests_for(sample_prompts["task_analysis"], 1, 80)
    with FaultProxy(llama_server) as proxy:
        answers, _ = run_teacher(teacher, proxy.base_url, None, cache, reqs)
        assert len(answers) == 3 and all(a.error is None and a.content for a in answers)
        assert len(proxy._batches) == 1 and cache.pending_batches("local") == []
        again, _ = run_teacher(teacher, proxy.base_url, None, cache, reqs)
        assert len(proxy._batches) == 1 and all(a.cache_hit for a in again)  # nothing resubmitted


def test_a_killed_run_resumes_without_repeating_finished_calls(llama_server, sample_prompts, tmp_path):
    db = tmp_path / "c.sqlite"
    with FaultProxy(llama_server, latency_s=0.5) as proxy:
        script = textwrap.dedent(f"""
            from distill_assets.teachers.cache import ResponseCache
            from distill_assets.teachers.runner import run_teacher
            from distill_assets_tests.conftest import *  # noqa
            from distill_assets_tests.teachers.helpers import local_teacher, requests_for
            import pickle, sys
            prompts = pickle.loads(sys.stdin.buffer.read())
            run_teacher(local_teacher(), {proxy.base_url!r}, None, ResponseCache({str(db)!r}), requests_for(prompts, 2, 60))
        """)
        import pickle

        proc = subprocess.Popen(
            [sys.executable, "-c", script], stdin=subprocess.PIPE, cwd=os.getcwd(), start_new_session=True
        )
        proc.stdin.write(pickle.dumps(sample_prompts["task_analysis"]))
        proc.stdin.close()
        deadline = time.time() + 120
        done_before = 0
        while time.time() < deadline:
            if db.exists():
                with sqlite3.connect(db) as c:
                    try:
                        done_before = c.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                    except sqlite3.OperationalError:
                        done_before = 0
            if done_before >= 2:
                break
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        with sqlite3.connect(db) as c:
            done_before = c.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        assert 2 <= done_before < 6
        answers, stats = run_teacher(
            local_teacher(),
            proxy.base_url,
            None,
            ResponseCache(db),
            requests_for(sample_prompts["task_analysis"], 2, 60),
        )
        assert all(a.error is None for a in answers) and len(answers) == 6
        assert stats["cache_hits"] == done_before and stats["calls"] == 6 - done_before


def test_retry_after_header_forms():
    def exc(headers):
        return openai.RateLimitError(
            "x", response=httpx.Response(429, headers=headers, request=httpx.Request("POST", "http://x")), body=None
        )

    assert retry_after_seconds(exc({"retry-after": "3"})) == 3.0
    assert retry_after_seconds(exc({"retry-after-ms": "250"})) == 0.25
    assert 0 <= retry_after_seconds(exc({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) <= 0.0 + 1
    assert retry_after_seconds(exc({})) is None


def test_requests_per_minute_spaces_the_calls(llama_server, sample_prompts, tmp_path):
    teacher = local_teacher(concurrency=4, requests_per_minute=300)  # one call per 0.2 s
    reqs = requests_for(sample_prompts["task_analysis"][:1], 6, 1)
    t0 = time.time()
    answers, stats = run_teacher(teacher, llama_server, None, ResponseCache(tmp_path / "c.sqlite"), reqs)
    assert stats["calls"] == 6 and all(a.error is None for a in answers)
    assert time.time() - t0 >= 5 * 0.2 * 0.9

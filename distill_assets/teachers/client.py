"""Calling a teacher: any OpenAI-compatible endpoint through the `openai` async client.

Per teacher: a concurrency bound (semaphore) and a request-rate bound
(aiolimiter); retries with backoff (tenacity) that honour Retry-After on 408,
429 and 5xx answers, time-outs and dropped connections; permanent errors (401,
403, 404 model, 400) stop the whole run at once with one message. Every
finished answer goes to the response cache before anything else happens.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import openai
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from distill_assets.config import Teacher
from distill_assets.prompts.schemas import split_reasoning
from distill_assets.teachers.cache import ResponseCache, request_key

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
STOP_STATUS = {401, 403, 404}  # the whole run stops: no request can succeed (key, access, model)


class MalformedResponse(RuntimeError):
    """The HTTP answer came back, but not as a chat completion (truncated or garbled body)."""


class TeacherPermanentError(RuntimeError):
    """A mistake no retry fixes (bad key, unknown model, rejected request): stop at once."""


@dataclass
class TeacherRequest:
    task_id: str
    stage: str
    prompt_hash: str
    sample_index: int
    messages: list[dict[str, str]]
    schema: dict[str, Any] | None
    temperature: float
    max_tokens: int


@dataclass
class TeacherAnswer:
    request: TeacherRequest
    key: str
    content: str | None = None
    reasoning: str | None = None
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    cache_hit: bool = False
    error: str | None = None
    attempts: int = 0


def retry_after_seconds(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After / retry-after-ms), if it did."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            return max(when.timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


def is_retryable(exc: BaseException) -> bool:
    if isinstance(
        exc,
        (
            openai.APITimeoutError,
            openai.APIConnectionError,
            openai.APIResponseValidationError,
            asyncio.TimeoutError,
            json.JSONDecodeError,
            MalformedResponse,
        ),
    ):
        return True  # includes a truncated or garbled response body
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500
    return False


def _wait(max_wait: float) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(initial=0.5, max=max_wait, jitter=0.5)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        ra = retry_after_seconds(exc) if exc else None
        return min(ra, max_wait) if ra is not None else backoff(state)

    return wait


def request_params(teacher: Teacher, req: TeacherRequest) -> dict[str, Any]:
    """The request body beyond model and messages (all of it goes into the cache key)."""
    params: dict[str, Any] = {
        "temperature": req.temperature,
        "max_tokens": req.max_tokens,
        "seed": int(req.prompt_hash[:8], 16) % 2_000_000_000 + req.sample_index,
    }
    if req.schema is not None and teacher.structured_output == "json_schema":
        params["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": f"{req.stage}_answer", "schema": req.schema, "strict": True},
        }
    elif req.schema is not None and teacher.structured_output == "json_object":
        params["response_format"] = {"type": "json_object", "schema": req.schema}
    extra: dict[str, Any] = {}
    if teacher.kind == "openai" and "qwen" in teacher.model.lower():
        extra["enable_thinking"] = teacher.thinking
    if extra:
        params["extra_body"] = extra
    return params


def endpoint_id(teacher: Teacher, base_url: str | None) -> str:
    """What identifies the endpoint in cache keys: the URL, or for the local server (a new port each
    start) the model it serves."""
    if teacher.kind == "local_llama_cpp":  # with how it is served: both change the answers slightly
        served = "" if teacher.requantize == "off" else f"|requantize={teacher.requantize}"
        return f"local-llama-cpp:{teacher.model}{served}" + ("|flash_attn" if teacher.flash_attn else "")
    return (base_url or teacher.base_url or "").rstrip("/")


def cache_key(teacher: Teacher, base_url: str | None, req: TeacherRequest) -> str:
    return request_key(
        endpoint_id(teacher, base_url), teacher.model, req.messages, request_params(teacher, req), req.sample_index
    )


class TeacherClient:
    def __init__(
        self, teacher: Teacher, base_url: str, api_key: str | None, cache: ResponseCache, max_wait_s: float = 60.0
    ):
        self.teacher = teacher
        self.base_url = base_url.rstrip("/")
        self.endpoint = endpoint_id(teacher, base_url)
        self._secret = api_key or ""
        self.client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key or "no-key", max_retries=0, timeout=teacher.timeout_s
        )
        self.cache = cache
        self.max_wait_s = max_wait_s
        self.stats: Counter = Counter()
        self._sem: asyncio.Semaphore | None = None
        self._limiter: AsyncLimiter | None = None

    def _bounds(self) -> tuple[asyncio.Semaphore, AsyncLimiter | None]:
        if self._sem is None:  # created inside the running event loop
            self._sem = asyncio.Semaphore(self.teacher.concurrency)
            rpm = self.teacher.requests_per_minute
            # capacity 1: requests are spaced evenly, no burst of `rpm` calls at the start
            self._limiter = AsyncLimiter(1, 60.0 / rpm) if rpm else None
        return self._sem, self._limiter

    def key_for(self, req: TeacherRequest) -> str:
        return cache_key(self.teacher, self.base_url, req)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def permanent(self, exc: openai.APIStatusError) -> TeacherPermanentError:
        what = {
            401: f"the API key was rejected (check the env var {self.teacher.api_key_env or '-'})",
            403: "access denied",
            404: f"model {self.teacher.model!r} or endpoint not found",
        }.get(exc.status_code, "request rejected")
        msg = self._redact(str(getattr(exc, "message", exc)))[:300]
        return TeacherPermanentError(
            f"teacher {self.teacher.name!r} at {self.base_url}: HTTP {exc.status_code}: {what} ({msg})"
        )

    async def _call_once(self, req: TeacherRequest, params: dict[str, Any]) -> TeacherAnswer:
        sem, limiter = self._bounds()
        async with sem:
            if limiter is not None:
                await limiter.acquire()
            self.stats["calls"] += 1
            t0 = time.perf_counter()
            resp = await self.client.chat.completions.create(model=self.teacher.model, messages=req.messages, **params)
            latency = time.perf_counter() - t0
        if not getattr(resp, "choices", None):
            raise MalformedResponse("response without choices")
        return answer_from_completion(req, resp.model_dump(), latency)

    async def complete(self, req: TeacherRequest) -> TeacherAnswer:
        params = request_params(self.teacher, req)
        key = request_key(self.endpoint, self.teacher.model, req.messages, params, req.sample_index)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats["cache_hits"] += 1
            ans = TeacherAnswer(request=req, key=key, cache_hit=True, **cached)
            return ans
        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_retryable),
                stop=stop_after_attempt(self.teacher.max_retries + 1),
                wait=_wait(self.max_wait_s),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    if attempts > 1:
                        self.stats["retries"] += 1
                    ans = await self._call_once(req, params)
        except openai.APIStatusError as exc:
            if exc.status_code in STOP_STATUS:
                raise self.permanent(exc) from None
            return self._failed(req, key, attempts, exc)  # retries exhausted, or this request was rejected
        except Exception as exc:  # noqa: BLE001 - exhausted retries: a counted row, not a crash
            if not is_retryable(exc):
                raise
            return self._failed(req, key, attempts, exc)
        ans.key, ans.attempts = key, attempts
        self.cache.put(key, self.teacher.name, self.teacher.model, cache_record(ans))
        return ans

    def _failed(self, req: TeacherRequest, key: str, attempts: int, exc: BaseException) -> TeacherAnswer:
        self.stats["failed"] += 1
        return TeacherAnswer(
            request=req,
            key=key,
            attempts=attempts,
            error=self._redact(f"gave up after {attempts} attempts: {type(exc).__name__}: {exc}")[:500],
        )

    async def aclose(self) -> None:
        await self.client.close()


def answer_from_completion(req: TeacherRequest, body: dict[str, Any], latency: float) -> TeacherAnswer:
    choice = body["choices"][0]
    msg = choice.get("message") or {}
    content = msg.get("content") or ""
    content, think = split_reasoning(content)
    reasoning = msg.get("reasoning_content") or msg.get("reasoning") or think
    usage = body.get("usage") or {}
    return TeacherAnswer(
        request=req,
        key="",
        content=content,
        reasoning=reasoning,
        finish_reason=choice.get("finish_reason"),
        tokens_in=int(usage.get("prompt_tokens") or 0),
        tokens_out=int(usage.get("completion_tokens") or 0),
        latency_s=latency,
    )


def cache_record(ans: TeacherAnswer) -> dict[str, Any]:
    return {
        "content": ans.content,
        "reasoning": ans.reasoning,
        "finish_reason": ans.finish_reason,
        "tokens_in": ans.tokens_in,
        "tokens_out": ans.tokens_out,
        "latency_s": ans.latency_s,
    }

"""Batch mode: an OpenAI-style batch endpoint (/v1/files + /v1/batches), selectable per teacher.

Uncached requests go out as one JSONL file (custom_id = the cache key). The
batch id is stored in the response cache before polling, so a restarted run
polls the batch it already submitted instead of paying for it twice.
"""

from __future__ import annotations

import asyncio
import json
from typing import Callable

from distill_assets.teachers.client import (
    TeacherAnswer,
    TeacherClient,
    TeacherRequest,
    answer_from_completion,
    cache_record,
    request_params,
)

DONE = {"completed", "failed", "expired", "cancelled"}


def _body(client: TeacherClient, req: TeacherRequest) -> dict:
    params = dict(request_params(client.teacher, req))
    extra = params.pop("extra_body", {}) or {}
    return {"model": client.teacher.model, "messages": req.messages, **params, **extra}


async def _poll(client: TeacherClient, batch_id: str, poll_s: float):
    while True:
        b = await client.client.batches.retrieve(batch_id)
        if b.status in DONE:
            return b
        await asyncio.sleep(poll_s)


async def _collect(client: TeacherClient, batch, by_key: dict[str, TeacherRequest], errors: dict[str, str]) -> None:
    if getattr(batch, "output_file_id", None):
        text = (await client.client.files.content(batch.output_file_id)).text
        for line in text.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key = item.get("custom_id")
            req = by_key.get(key)
            resp = item.get("response") or {}
            if req is None:
                continue
            if resp.get("status_code") == 200 and resp.get("body", {}).get("choices"):
                ans = answer_from_completion(req, resp["body"], 0.0)
                client.cache.put(key, client.teacher.name, client.teacher.model, cache_record(ans))
                client.stats["calls"] += 1
            else:
                errors[key] = f"batch item failed: {resp.get('status_code')} {json.dumps(item.get('error'))[:200]}"
    if getattr(batch, "error_file_id", None):
        text = (await client.client.files.content(batch.error_file_id)).text
        for line in text.splitlines():
            if line.strip():
                item = json.loads(line)
                errors.setdefault(item.get("custom_id"), f"batch item failed: {json.dumps(item.get('error'))[:200]}")
    client.cache.finish_batch(batch.id, batch.status)


async def run_batch(
    client: TeacherClient, requests: list[TeacherRequest], progress: Callable[[int, int], None] | None = None
) -> list[TeacherAnswer]:
    try:
        keyed = [(client.key_for(r), r) for r in requests]
        by_key = {k: r for k, r in keyed}
        todo = {k for k, _ in keyed if client.cache.get(k) is None}
        errors: dict[str, str] = {}
        # 1. batches a crashed run already submitted: poll them, don't resubmit
        for batch_id, keys in client.cache.pending_batches(client.teacher.name):
            if todo & set(keys):
                batch = await _poll(client, batch_id, client.teacher.batch_poll_s)
                await _collect(client, batch, by_key, errors)
                todo = {k for k in todo if client.cache.get(k) is None}
        # 2. one new batch for what is left
        if todo:
            lines = "".join(
                json.dumps(
                    {"custom_id": k, "method": "POST", "url": "/v1/chat/completions", "body": _body(client, by_key[k])}
                )
                + "\n"
                for k in sorted(todo)
            )
            f = await client.client.files.create(file=("requests.jsonl", lines.encode()), purpose="batch")
            batch = await client.client.batches.create(
                input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            client.cache.add_batch(batch.id, client.teacher.name, sorted(todo))
            batch = await _poll(client, batch.id, client.teacher.batch_poll_s)
            await _collect(client, batch, by_key, errors)
        answers = []
        for i, (k, r) in enumerate(keyed):
            cached = client.cache.get(k)
            if cached is not None:
                answers.append(TeacherAnswer(request=r, key=k, cache_hit=k not in todo, **cached))
            else:
                answers.append(TeacherAnswer(request=r, key=k, error=errors.get(k, "no answer in the batch output")))
            if progress:
                progress(i + 1, len(keyed))
        client.stats["cache_hits"] += sum(1 for a in answers if a.cache_hit)
        return answers
    finally:
        await client.aclose()

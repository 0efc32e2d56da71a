"""A fault-injecting HTTP proxy in front of a real OpenAI-compatible server (llama.cpp here).

Faults are scripted either by arrival (``faults``: the n-th incoming chat
request gets the n-th fault) or by request (``scripts``: the i-th distinct
request body gets script i, one fault per attempt; "cut_content" sticks to its
request until an answer is delivered, so a client time-out under load cannot
make the retry escape it). Faults: 429 with Retry-After, 500, a time-out, a
dropped connection mid-body, a garbled body, or an answer whose content is cut
(malformed JSON from the model's side). It also emulates the
OpenAI batch endpoints (/v1/files, /v1/batches) by running each batch line
against the real server. Every request that reached the real server and whose
answer was delivered to the client is counted by its body, so tests can prove
"no answer lost, no paid call repeated".
"""

import asyncio
import hashlib
import itertools
import json
import threading
import time
from collections import Counter

import httpx2 as httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from distill_assets.teachers.local_server import free_port


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        faults: list | None = None,
        latency_s: float = 0.0,
        timeout_sleep_s: float = 5.0,
        scripts: list[list] | None = None,
    ):
        self.upstream = upstream.rstrip("/")  # e.g. http://127.0.0.1:1234/v1
        self.faults = list(faults or [])
        self.scripts = [list(s) for s in scripts or []]
        self._script_of: dict[str, list] = {}  # body hash -> its script (what is left of it)
        self.latency_s = latency_s
        self.timeout_sleep_s = timeout_sleep_s
        self.received = 0
        self.forwarded = 0  # requests that reached the real server
        self.delivered = Counter()  # body hash -> answers delivered whole to the client
        self.injected = Counter()
        self.undelivered = 0  # answers of the real server whose client had already gone
        self.status_override: int | None = None
        self._lock = threading.Lock()
        self._files: dict[str, bytes] = {}
        self._batches: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._client: httpx.AsyncClient | None = None
        self.port = free_port()
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/files", self.upload, methods=["POST"]),
                Route("/v1/files/{fid}/content", self.file_content, methods=["GET"]),
                Route("/v1/batches", self.create_batch, methods=["POST"]),
                Route("/v1/batches/{bid}", self.get_batch, methods=["GET"]),
            ]
        )
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def _next_fault(self, body: bytes):
        with self._lock:
            self.received += 1
            if not self.scripts and not self._script_of:
                return self.faults.pop(0) if self.faults else None
            key = hashlib.sha256(body).hexdigest()
            if key not in self._script_of:
                self._script_of[key] = self.scripts.pop(0) if self.scripts else []
            script = self._script_of[key]
            if not script:
                return None
            return script[0] if script[0] == "cut_content" else script.pop(0)

    async def _forward(self, body: bytes) -> httpx.Response:
        if self._client is None:  # one pooled client, made inside the server's event loop
            self._client = httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64))
        r = await self._client.post(
            f"{self.upstream}/chat/completions", content=body, headers={"Content-Type": "application/json"}
        )
        with self._lock:
            self.forwarded += 1
        return r

    def _delivered(self, body: bytes) -> None:
        with self._lock:
            self.delivered[hashlib.sha256(body).hexdigest()] += 1

    async def chat(self, request: Request) -> Response:
        body = await request.body()
        fault = self._next_fault(body)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.status_override:
            return JSONResponse(
                {"error": {"message": "Incorrect API key provided: sk-secret-123"}}, status_code=self.status_override
            )
        kind = fault[0] if isinstance(fault, tuple) else fault
        if kind:
            self.injected[kind] += 1
        if kind == "429":
            return JSONResponse(
                {"error": {"message": "rate limited"}},
                status_code=429,
                headers={"Retry-After": str(fault[1] if isinstance(fault, tuple) else 1)},
            )
        if kind == "500":
            return JSONResponse({"error": {"message": "internal error"}}, status_code=500)
        if kind == "timeout":
            await asyncio.sleep(self.timeout_sleep_s)
            return JSONResponse({"error": {"message": "too late"}}, status_code=504)
        if kind == "garbled":
            return Response(b'{"id": "x", "choices": [', media_type="application/json")
        upstream = await self._forward(body)
        data = upstream.content
        if kind == "drop":  # the real server answered; the connection dies mid-body

            async def broken():
                yield data[: len(data) // 2]
                raise ConnectionResetError("dropped by the fault proxy")

            return StreamingResponse(
                broken(), media_type="application/json", headers={"Content-Length": str(len(data))}
            )
        if kind == "cut_content":  # a whole, valid HTTP answer whose model output is cut short
            doc = json.loads(data)
            content = doc["choices"][0]["message"]["content"] or ""
            doc["choices"][0]["message"]["content"] = content[: max(len(content) // 2, 1)]
            data = json.dumps(doc).encode()
        if await request.is_disconnected():  # the client gave up (its time-out): nobody receives this answer
            with self._lock:
                self.undelivered += 1
            return Response(status_code=499)
        self._delivered(body)
        if kind == "cut_content":
            with self._lock:
                self._script_of[hashlib.sha256(body).hexdigest()] = []  # delivered: the fault has happened
        return Response(data, status_code=upstream.status_code, media_type="application/json")

    # ---- batch API emulation over the real server
    async def upload(self, request: Request) -> Response:
        form = await request.form()
        content = await form["file"].read()
        fid = f"file-{next(self._ids)}"
        self._files[fid] = content
        return JSONResponse(
            {
                "id": fid,
                "object": "file",
                "bytes": len(content),
                "created_at": int(time.time()),
                "filename": "requests.jsonl",
                "purpose": "batch",
                "status": "processed",
            }
        )

    async def file_content(self, request: Request) -> Response:
        return Response(self._files[request.path_params["fid"]], media_type="application/octet-stream")

    def _batch_doc(self, b: dict) -> dict:
        return {
            "id": b["id"],
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": b["input"],
            "completion_window": "24h",
            "status": b["status"],
            "created_at": b["created"],
            "output_file_id": b.get("output"),
            "error_file_id": None,
        }

    async def create_batch(self, request: Request) -> Response:
        req = await request.json()
        bid = f"batch-{next(self._ids)}"
        b = {"id": bid, "input": req["input_file_id"], "status": "in_progress", "created": int(time.time())}
        self._batches[bid] = b
        asyncio.get_running_loop().create_task(self._run_batch(b))
        return JSONResponse(self._batch_doc(b))

    async def _run_batch(self, b: dict) -> None:
        out = []
        for line in self._files[b["input"]].decode().splitlines():
            item = json.loads(line)
            body = json.dumps(item["body"]).encode()
            r = await self._forward(body)
            out.append(
                json.dumps(
                    {
                        "id": f"req-{next(self._ids)}",
                        "custom_id": item["custom_id"],
                        "response": {"status_code": r.status_code, "body": r.json()},
                        "error": None,
                    }
                )
            )
            self._delivered(body)
        fid = f"file-{next(self._ids)}"
        self._files[fid] = ("\n".join(out) + "\n").encode()
        b["output"], b["status"] = fid, "completed"

    async def get_batch(self, request: Request) -> Response:
        return JSONResponse(self._batch_doc(self._batches[request.path_params["bid"]]))

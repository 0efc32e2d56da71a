"""Teacher endpoints for assets: the local llama.cpp server or a remote OpenAI-compatible API."""

from contextlib import contextmanager
from typing import Iterator

import dagster as dg

from distill_assets.config import ConfigError, DistillConfig, Teacher, resolve_model_file
from distill_assets.teachers.cache import ResponseCache
from distill_assets.teachers.local_server import LocalLlamaServer, LocalServerError


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
    def endpoint(self, teacher: Teacher) -> Iterator[tuple[str, str | None]]:
        if teacher.kind == "local_llama_cpp":
            try:
                model = resolve_model_file(teacher.model)
                with LocalLlamaServer(model, n_ctx=teacher.n_ctx) as base_url:
                    yield base_url, None
            except (ConfigError, LocalServerError) as exc:
                raise dg.Failure(description=f"teacher {teacher.name!r}: {exc}", allow_retries=False) from None
            return
        key = dg.EnvVar(teacher.api_key_env).get_value() if teacher.api_key_env else None
        yield str(teacher.base_url), key


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"teachers": TeachersResource()})

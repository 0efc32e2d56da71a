"""The inference pipeline controller: a task on a repository through stages 1 -> 5, each on its own
adapter, every query and the outcome logged for self-improvement."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from distill_assets.config import STAGE_ORDER, DistillConfig
from distill_assets.contexts.build import SymbolCache, build_context
from distill_assets.plans.repair import repair_plan
from distill_assets.plans.validator import PlanContext, validate_plan
from distill_assets.prompts.builders import build_prompt
from distill_assets.prompts.student import decoding, parse_student_output
from distill_assets.router.engine import RouterError, StageEngine
from distill_assets.router.logstore import LogStore
from distill_assets.sandbox.backends import Limits, get_backend
from distill_assets.sandbox.plans import TestPlan
from distill_assets.sandbox.runner import RunResult, execute
from distill_assets.scoring.validate import diff_applies
from distill_assets.symbols import language_for_path
from distill_assets.tasks.snapshot import GitSnapshot

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_STOP = {
    "the",
    "and",
    "for",
    "with",
    "that",
    "this",
    "from",
    "into",
    "when",
    "add",
    "make",
    "use",
    "should",
    "all",
    "new",
    "are",
    "not",
    "can",
    "its",
    "has",
    "have",
    "was",
    "will",
    "each",
    "also",
    "them",
    "then",
}


@dataclass
class StageAdapter:
    stage: str
    base_gguf: str
    adapter_gguf: str | None  # None: the base student alone (the gate promoted nothing for the stage)
    sha256: str = ""


@dataclass
class RouteResult:
    run_id: str
    outputs: dict[str, object] = field(default_factory=dict)  # stage -> parsed pydantic object (or None)
    errors: dict[str, str] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    plan_json: str | None = None
    plan_violations: list[str] = field(default_factory=list)  # of the plan passed on (after its repair)
    plan_repairs: dict[str, int] = field(default_factory=dict)  # what repair_plan changed in the stage-4 answer
    diff: str | None = None
    diff_applied: bool = False
    apply_error: str = ""
    candidates: list[str] = field(default_factory=list)
    tests: RunResult | None = None  # the repository's tests on HEAD + diff, in the sandbox (None: not run)

    @property
    def tests_passed(self) -> bool | None:
        return None if self.tests is None else self.tests.status == "passed"


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def check_repo(repo: Path) -> str:
    """HEAD of a clean git work tree, or a RouterError that says what is wrong."""
    repo = Path(repo)
    if not repo.is_dir():
        raise RouterError(f"{repo} is not a directory")
    if _git(repo, "rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
        raise RouterError(f"{repo} is not a git repository (run-task reads the committed tree at HEAD)")
    head = _git(repo, "rev-parse", "HEAD")
    if head.returncode != 0:
        raise RouterError(f"{repo} has no commits yet")
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    if dirty:
        raise RouterError(f"{repo} has uncommitted changes; commit or stash them first:\n{dirty}")
    return head.stdout.strip()


def retrieve(snap: GitSnapshot, text: str, k: int, max_bytes: int = 200_000) -> list[str]:
    """Candidate files for the relevance stage: source files scored by task words in their path
    (3 points each) and their contents (1 point per distinct word)."""
    words = {w.lower() for w in _WORD.findall(text)} - _STOP
    parts = {p for w in words for p in re.split(r"_", w) if len(p) > 2} | words
    tree = [p for p in snap.tree() if language_for_path(p)]
    contents = snap.read(tree, max_bytes=max_bytes)
    scored = []
    for p in tree:
        body = contents.get(p, b"").decode("utf-8", "replace").lower()
        path_score = sum(3 for w in parts if w in p.lower())
        body_score = sum(1 for w in parts if w in body)
        if path_score or body_score:
            scored.append((-(path_score + body_score), p))
    scored.sort()
    return [p for _, p in scored[:k]] or sorted(tree)[:k]


def run_repo_tests(repo: Path, head: str, diff: str, commands: "list[str] | TestPlan", cfg: DistillConfig) -> RunResult:
    """The repository's test commands (or a test plan in its environment) on HEAD + ``diff`` in the configured
    sandbox (bwrap or Docker; never unsandboxed). ``status == "passed"`` only when every test seen passes."""
    sb = cfg.sandbox
    backend = get_backend("docker" if sb.backend == "dagster_docker" else sb.backend, sb.docker_image)
    limits = Limits(timeout_s=sb.timeout_s, memory_mb=sb.memory_mb, max_processes=sb.max_processes)
    return execute(str(repo), head, diff, commands, backend, limits)


def route_task(
    repo: Path,
    text: str,
    adapters: dict[str, StageAdapter],
    cfg: DistillConfig,
    *,
    engine: StageEngine | None = None,
    log: LogStore | None = None,
    progress: Callable[[str, str], None] | None = None,
    test_commands: "list[str] | TestPlan | None" = None,
) -> RouteResult:
    """Stages 1 -> 5 for ``text`` on ``repo``; stage 4's reasoning is stripped before stage 5; the diff is
    checked with ``git apply --check`` and, when ``test_commands`` are given and it applies, the repository's
    tests run on it in the sandbox. ``adapters`` must name all five stages."""
    repo = Path(repo).resolve()
    missing = [s for s in STAGE_ORDER if s not in adapters]
    if missing:
        raise RouterError(f"no adapter for stage(s) {', '.join(missing)}: materialize adapters and gguf_adapters")
    head = check_repo(repo)
    say = progress or (lambda stage, msg: None)
    own_engine = engine is None
    engine = engine or StageEngine.for_config(cfg)
    try:
        for s, a in adapters.items():
            if a.adapter_gguf and s not in engine.adapters:
                engine.load_adapter(s, a.base_gguf, a.adapter_gguf, a.sha256)
        run_id = uuid.uuid4().hex
        result = RouteResult(run_id=run_id)
        snap = GitSnapshot(str(repo), head)
        picked = retrieve(snap, text, cfg.router.max_candidates)
        task = {
            "task_id": f"adhoc:{hashlib.sha256((head + text).encode()).hexdigest()[:12]}",
            "repo": repo.name,
            "description": text,
            "repo_path": str(repo),
            "base_commit": head,
            "changed_files": [],
            "file_changes": [{"path": p, "old_path": None, "status": "M", "category": "source"} for p in picked],
        }
        ctx_cfg = cfg.context.model_copy(update={"max_distractors": 0})
        context = build_context(task, ctx_cfg, SymbolCache())
        result.candidates = [c["path"] for c in context["candidates"]]

        def run_stage(stage: str, ctx: dict, plan_json: str | None = None):
            prompt = build_prompt(
                stage,
                task,
                ctx,
                budget_tokens=cfg.router.prompt_token_budget,
                chars_per_token=cfg.context.chars_per_token,
                reference_plan=plan_json,
            )
            say(stage, "running")
            a = adapters[stage]
            llm = engine.use(stage) if a.adapter_gguf else engine.use_base(a.base_gguf)
            schema = prompt.schema
            comp = engine.complete(
                llm,
                prompt.messages,
                max_tokens=cfg.router.max_output_tokens,
                max_string_chars=cfg.router.max_string_chars,
                **decoding(stage, schema, list(ctx.get("symbols") or []), cfg.router.plan_decoder),
            )
            parsed, err = parse_student_output(stage, comp.text)
            result.outputs[stage], result.latency_ms[stage] = parsed, comp.latency_ms
            if err:
                result.errors[stage] = err
            if log is not None:
                log.record_query(
                    run_id=run_id,
                    repo=str(repo),
                    base_commit=head,
                    task_text=text,
                    stage=stage,
                    adapter_sha256=a.sha256 or "base",
                    base_gguf=a.base_gguf,
                    prompt=prompt.messages,
                    schema=schema,
                    output=comp.text,
                    parsed_ok=parsed is not None,
                    parse_error=err,
                    latency_ms=comp.latency_ms,
                    tokens_in=comp.tokens_in,
                    tokens_out=comp.tokens_out,
                )
            say(stage, f"{'ok' if parsed is not None else 'unparsed'} in {comp.latency_ms / 1000:.1f}s")
            return parsed

        run_stage("task_analysis", context)
        rel = run_stage("relevance", context)
        keep = [f.path for f in rel.files if f.relevant] if rel is not None else []
        narrowed = dict(context)
        if keep:  # later stages see the files judged relevant (all candidates if none was)
            narrowed["candidates"] = [c for c in context["candidates"] if c["path"] in keep]
        run_stage("symbol_selection", narrowed)
        plan_out = run_stage("plan_generation", narrowed)
        if plan_out is not None:
            # the chain of thought stays behind: stage 5 sees the plan object only
            repaired = repair_plan(plan_out.plan)  # edges on both ends, duplicates merged, a consistent order
            result.plan_json, result.plan_repairs = repaired.plan.model_dump_json(), dict(repaired.repairs)
            report = validate_plan(repaired.plan, PlanContext.from_rows(context["file_tree"], context["symbols"]))
            result.plan_violations = report.codes
        code = run_stage("code_generation", context, plan_json=result.plan_json or "{}")
        if code is not None:
            result.diff = code.diff
            result.diff_applied, result.apply_error = diff_applies(task, code.diff)
        if result.diff_applied and test_commands:
            say("tests", "running")
            result.tests = run_repo_tests(repo, head, result.diff, test_commands, cfg)
            say(
                "tests",
                f"{result.tests.status} ({result.tests.pass_rate:.0%} of {len(result.tests.selected)} "
                f"tests) in {result.tests.duration_s:.1f}s",
            )
        if log is not None:
            tests = result.tests
            log.record_outcome(
                run_id,
                repo=str(repo),
                task_text=text,
                plan_valid=(not result.plan_violations) if result.plan_json else False,
                diff_applied=result.diff_applied,
                tests_passed=result.tests_passed,
                detail=json.dumps(
                    {
                        "errors": result.errors,
                        "apply_error": result.apply_error[:2000],
                        "plan_repairs": result.plan_repairs,
                        "tests": None
                        if tests is None
                        else {
                            "status": tests.status,
                            "pass_rate": tests.pass_rate,
                            "n_tests": len(tests.selected),
                            "log": tests.log[-4000:],
                        },
                    }
                ),
            )
        return result
    finally:
        if own_engine:
            engine.close()


def adapters_from_tables(tables: Path, live: Path | None = None) -> dict[str, StageAdapter]:
    """Per stage, what the evaluation gate decided to serve (``live``: promotions/live.json, next to its
    decisions.jsonl): the live adapter; the base student alone when the gate judged the stage's adapters and
    promoted none; for a stage the gate never judged, the latest adapter exported by the `gguf_adapters`
    asset (``storage/tables``)."""
    from distill_assets.evaluation.gate import Registry

    registry = Registry(Path(live).parent) if live is not None and Path(live).parent.exists() else None
    live_set = json.loads(Path(live).read_text()) if live is not None and Path(live).exists() else {}
    import polars as pl

    out: dict[str, StageAdapter] = {}
    for stage in STAGE_ORDER:
        entry = live_set.get(stage)
        if entry and Path(entry.get("gguf_path") or "").exists():
            out[stage] = StageAdapter(stage, entry["base_gguf"], entry["gguf_path"], entry["adapter_sha256"])
            continue
        p = Path(tables) / "gguf_adapters" / f"{stage}.parquet"
        if not p.exists():
            continue
        df = pl.read_parquet(p)
        if df.height and df["status"][0] == "exported":
            r = df.row(0, named=True)
            judged = registry is not None and registry.judged(stage)
            out[stage] = StageAdapter(
                stage, r["base_gguf"], None if judged else r["gguf_path"], "" if judged else r["sha256"]
            )
    return out

"""Apply a diff to a repository snapshot, run its tests in a sandbox, and say what happened.

``execute``: snapshot at the base commit -> apply the test part of the gold
change (the task's tests, as SWE-bench's test_patch) -> apply the candidate
diff -> run the test commands in the sandbox -> per-test outcomes, pass rate
over the selected tests, logs, time, and why it failed (did_not_apply,
timeout, crashed, tests_failed).

``select_tests``: SWE-bench style: run the tests before (test part only) and
after the gold code; fail->pass and pass->pass tests are the ones a candidate
is scored on. Cached per task content; tasks with none are counted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from distill_assets.filecache import FileCache
from distill_assets.diffs import split_sections
from distill_assets.sandbox import reports
from distill_assets.sandbox.backends import BwrapBackend, DockerBackend, Limits
from distill_assets.sandbox.plans import REPORT_DIR, TestPlan, plan_for_commands

RUNNER_VERSION = "2"  # 2: structured reports, environments
PASS, FAIL, ERROR = reports.PASS, reports.FAIL, reports.ERROR
_UNITTEST_REPORTER = Path(__file__).with_name("unittest_report.py")
_JEST_RUNNER = Path(__file__).with_name("jest_run.js")

# ------------------------------------------------------------------ patches


def split_patch(patch: str) -> list[tuple[str, str]]:
    """A multi-file git diff as (path after the change, section) pairs (the one diff reader: ``diffs``)."""
    return [((fd.path if fd else ""), text) for fd, text in split_sections(patch)]


def partition_patch(patch: str, test_files: Iterable[str]) -> tuple[str, str]:
    """(code part, test part) of a gold patch."""
    tests = set(test_files)
    code, test = [], []
    for fd, section in split_sections(patch):
        in_tests = fd is not None and (fd.path in tests or (fd.old_path or "") in tests)
        (test if in_tests else code).append(section)
    return "".join(code), "".join(test)


# ------------------------------------------------------------------ structured reports

_PARSERS = {
    "junit_pytest": reports.parse_junit_pytest,
    "jest_json": reports.parse_jest_json,
    "mocha_json": reports.parse_mocha_json,
    "go_json": reports.parse_go_json,
    "unittest_json": reports.parse_unittest_json,
    "exit_markers": reports.parse_exit_markers,
}


def read_reports(plan: TestPlan, work: Path, stdouts: list[str]) -> tuple[dict[str, str], list[str]]:
    """Per-test outcomes from the plan's reports; the problems (a report missing or unreadable), one line each.
    A report that is missing or unreadable is an ``error`` outcome for what it covers (``<file>::<collection>``,
    or ``<report>::<collection>`` for a whole-suite report): never a silent gap."""
    tests: dict[str, str] = {}
    problems: list[str] = []
    for kind, where, file in plan.reports:
        lost = f"{file or where}::{reports.COLLECTION}"
        if where.startswith("stdout:"):
            i = int(where.split(":", 1)[1])
            text = stdouts[i] if i < len(stdouts) else ""
        else:
            p = work / where
            if not p.is_file():
                problems.append(f"no report {where} ({kind})")
                tests[lost] = ERROR
                continue
            text = p.read_text(errors="replace")
        try:
            found = reports.parse_junit_node(text, file) if kind == "junit_node" else _PARSERS[kind](text)
        except Exception as exc:  # noqa: BLE001 - an unreadable report is a stated problem of this run
            problems.append(f"report {where} unreadable: {type(exc).__name__}: {str(exc)[:200]}")
            tests[lost] = ERROR
            continue
        tests.update(found)
    return tests, problems


# ------------------------------------------------------------------ workspace


def materialize(repo_path: str, commit: str, dest: Path) -> None:
    """The tree of ``commit`` as plain files under ``dest`` (git archive; no .git)."""
    proc = subprocess.run(["git", "-C", repo_path, "archive", "--format=tar", commit], capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git archive {commit} failed in {repo_path}: {proc.stderr.decode(errors='replace')}")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")


def apply_patch(workdir: Path, patch: str) -> tuple[bool, str]:
    if not patch.strip():
        return True, ""
    text = patch if patch.endswith("\n") else patch + "\n"
    for args in (["apply", "--check"], ["apply"]):
        proc = subprocess.run(
            ["git", *args, "--whitespace=nowarn", "-"], cwd=workdir, input=text.encode(), capture_output=True
        )
        if proc.returncode != 0:
            return False, proc.stderr.decode(errors="replace").strip()[:2000]
    return True, ""


# ------------------------------------------------------------------ results


@dataclass
class RunResult:
    status: str  # passed | tests_failed | did_not_apply | timeout | crashed
    pass_rate: float
    tests: dict[str, str] = field(default_factory=dict)
    selected: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    log: str = ""
    backend: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "RunResult":
        return cls(**json.loads(text))


def execute(
    repo_path: str,
    base_commit: str,
    diff: str,
    plan: TestPlan | list[str],
    backend: BwrapBackend | DockerBackend,
    limits: Limits,
    *,
    test_patch: str = "",
    selected: list[str] | None = None,
) -> RunResult:
    """Run the plan's commands on base + test_patch + diff and read the per-test outcomes from its reports.
    ``plan``: a TestPlan, or plain commands (``plan_for_commands``). ``selected``: the tests the pass rate counts
    (default: every test seen). Status: passed | tests_failed | no_tests (the runner ran and found nothing) |
    crashed (no report and a failing command, or killed) | timeout | did_not_apply."""
    if not isinstance(plan, TestPlan):
        plan = plan_for_commands(list(plan))
    with tempfile.TemporaryDirectory(prefix="distill-sbx-") as tmp:
        os.chmod(tmp, 0o711)  # the sandbox user must reach work/ (and only work/)
        work = Path(tmp) / "work"
        work.mkdir()
        materialize(repo_path, base_commit, work)
        ok, err = apply_patch(work, test_patch)
        if not ok:
            return RunResult("did_not_apply", 0.0, log=f"test patch: {err}", backend=backend.name)
        ok, err = apply_patch(work, diff)
        if not ok:
            return RunResult("did_not_apply", 0.0, log=err, backend=backend.name)
        (work / REPORT_DIR).mkdir(exist_ok=True)
        shutil.copy2(_UNITTEST_REPORTER, work / REPORT_DIR / "unittest_report.py")
        shutil.copy2(_JEST_RUNNER, work / REPORT_DIR / "jest_run.js")
        logs, stdouts, total = [], [], 0.0
        status = None
        failing_exit = False
        for cmd in plan.commands:
            ex = backend.run(work, cmd, limits, mounts=plan.mounts, env=plan.env)
            total += ex.duration_s
            stdouts.append(ex.stdout)
            logs.append(
                f"$ {cmd}\n[exit {ex.returncode}{' timeout' if ex.timed_out else ''} "
                f"{ex.duration_s:.2f}s]\n{ex.stdout[-4000:]}{ex.stderr[-4000:]}"
            )
            if ex.timed_out:
                status = "timeout"
                break
            if ex.returncode is not None and (ex.returncode < 0 or ex.returncode > 128):
                status = status or "crashed"  # killed by a signal (memory, limits)
            failing_exit = failing_exit or bool(ex.returncode)
        tests, problems = read_reports(plan, work, stdouts)
        lost = sum(1 for p in problems if p.startswith(("no report", "report ")))
    if problems:
        logs.append("reports: " + "; ".join(problems))
    if status is None and len(tests) <= lost:
        # no report at all: the runner crashed (when a command failed) or found nothing; a report that is missing
        # beside others is an error outcome of what it covers (read_reports), and the run is judged on its tests
        status = "crashed" if failing_exit or problems else "no_tests"
    counted = selected if selected is not None else sorted(tests)
    passed = sum(1 for t in counted if tests.get(t) == PASS)
    rate = passed / len(counted) if counted else 0.0
    if status is None:
        status = "passed" if counted and passed == len(counted) else "tests_failed"
    if status in ("timeout", "crashed"):
        rate = 0.0
    return RunResult(status, rate, tests, list(counted), total, "\n".join(logs)[-20_000:], backend.name)


@dataclass
class TestSelection:
    __test__ = False  # not a pytest class
    fail_to_pass: list[str]
    pass_to_pass: list[str]
    before: RunResult
    after: RunResult

    @property
    def selected(self) -> list[str]:
        return sorted(set(self.fail_to_pass) | set(self.pass_to_pass))

    def to_json(self) -> str:
        return json.dumps(
            {
                "fail_to_pass": self.fail_to_pass,
                "pass_to_pass": self.pass_to_pass,
                "before": asdict(self.before),
                "after": asdict(self.after),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "TestSelection":
        d = json.loads(text)
        return cls(d["fail_to_pass"], d["pass_to_pass"], RunResult(**d["before"]), RunResult(**d["after"]))


def select_tests(
    repo_path: str,
    base_commit: str,
    gold_patch: str,
    test_files: list[str],
    plan: TestPlan | list[str],
    backend,
    limits: Limits,
    cache_dir: Path | None = None,
) -> TestSelection:
    """fail->pass and pass->pass tests of a task, from one run without and one with the gold code. Cached by the
    task's content, the plan (commands, environment, mounts: a rebuilt environment is a new key) and backend."""
    if not isinstance(plan, TestPlan):
        plan = plan_for_commands(list(plan))
    code, tests = partition_patch(gold_patch, test_files)
    key = hashlib.sha256(
        json.dumps(
            [RUNNER_VERSION, repo_path, base_commit, gold_patch, sorted(test_files), plan.key(), backend.name]
        ).encode()
    ).hexdigest()
    cache = (
        FileCache(
            cache_dir, ".json", lambda s, p: p.write_text(s.to_json()), lambda p: TestSelection.from_json(p.read_text())
        )
        if cache_dir
        else None
    )
    if cache and (hit := cache.get(key)) is not None:
        return hit
    before = execute(repo_path, base_commit, "", plan, backend, limits, test_patch=tests)
    after = execute(repo_path, base_commit, code, plan, backend, limits, test_patch=tests)
    f2p = sorted(t for t, s in after.tests.items() if s == PASS and before.tests.get(t) != PASS)
    p2p = sorted(t for t, s in after.tests.items() if s == PASS and before.tests.get(t) == PASS)
    sel = TestSelection(f2p, p2p, before, after)
    if cache:
        cache.put(key, sel)
    return sel

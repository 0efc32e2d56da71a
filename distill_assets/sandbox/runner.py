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
import re
import subprocess
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from distill_assets.sandbox.backends import BwrapBackend, DockerBackend, Limits

PASS, FAIL = "passed", "failed"

# ------------------------------------------------------------------ patches


def split_patch(patch: str) -> list[tuple[str, str]]:
    """A multi-file git diff as (path, section) pairs."""
    parts: list[tuple[str, str]] = []
    cur: list[str] = []
    path = ""
    for line in patch.splitlines(keepends=True):
        if line.startswith("diff --git "):
            if cur:
                parts.append((path, "".join(cur)))
            cur = [line]
            bits = line.split()
            path = bits[3][2:] if len(bits) > 3 and bits[3].startswith("b/") else (bits[-1] if bits else "")
        elif cur:
            cur.append(line)
    if cur:
        parts.append((path, "".join(cur)))
    return parts


def partition_patch(patch: str, test_files: Iterable[str]) -> tuple[str, str]:
    """(code part, test part) of a gold patch."""
    tests = set(test_files)
    code, test = [], []
    for path, section in split_patch(patch):
        (test if path in tests else code).append(section)
    return "".join(code), "".join(test)


# ------------------------------------------------------------------ test output parsers

_UNITTEST = re.compile(r"^(\w+) \(([\w.]+)\)(?:\n.*)?? \.\.\. (ok|FAIL|ERROR|skipped|expected failure|unexpected success)",
                       re.M)
_TAP = re.compile(r"^( *)(ok|not ok) \d+ - (.+?)(?: # (SKIP|TODO).*)?$", re.M)
_PYTEST = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS|SKIPPED) (\S+::\S+)", re.M)


def parse_test_output(text: str) -> dict[str, str]:
    """Test id -> passed/failed, from unittest -v, node --test (TAP) and pytest -rA output."""
    out: dict[str, str] = {}
    for _name, dotted, status in _UNITTEST.findall(text):
        out[dotted] = PASS if status in ("ok", "expected failure", "skipped") else FAIL
    stack: list[str] = []
    for indent, status, name, directive in _TAP.findall(text):
        level = len(indent) // 4
        stack = stack[:level] + [name.strip()]
        if directive == "SKIP":
            continue
        out["node: " + " > ".join(stack)] = PASS if status == "ok" else FAIL
    for status, node in _PYTEST.findall(text):
        out[node] = PASS if status in ("PASSED", "XFAIL", "SKIPPED") else FAIL
    return out


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
        proc = subprocess.run(["git", *args, "--whitespace=nowarn", "-"], cwd=workdir, input=text.encode(),
                              capture_output=True)
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


def execute(repo_path: str, base_commit: str, diff: str, commands: list[str], backend: BwrapBackend | DockerBackend,
            limits: Limits, *, test_patch: str = "", selected: list[str] | None = None) -> RunResult:
    """Run ``commands`` on base + test_patch + diff. ``selected``: the tests the pass rate counts
    (default: every test seen)."""
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
        tests: dict[str, str] = {}
        logs, total = [], 0.0
        status = None
        for cmd in commands:
            ex = backend.run(work, cmd, limits)
            total += ex.duration_s
            logs.append(f"$ {cmd}\n[exit {ex.returncode}{' timeout' if ex.timed_out else ''} "
                        f"{ex.duration_s:.2f}s]\n{ex.stdout[-4000:]}{ex.stderr[-4000:]}")
            found = parse_test_output(ex.stdout + "\n" + ex.stderr)
            tests.update(found)
            if ex.timed_out:
                status = "timeout"
                break
            if ex.returncode is not None and (ex.returncode < 0 or ex.returncode > 128):
                status = status or "crashed"  # killed by a signal (memory, limits)
    if status is None and not tests:
        status = "crashed"  # no command produced a single test result
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
        return json.dumps({"fail_to_pass": self.fail_to_pass, "pass_to_pass": self.pass_to_pass,
                           "before": asdict(self.before), "after": asdict(self.after)})

    @classmethod
    def from_json(cls, text: str) -> "TestSelection":
        d = json.loads(text)
        return cls(d["fail_to_pass"], d["pass_to_pass"], RunResult(**d["before"]), RunResult(**d["after"]))


def select_tests(repo_path: str, base_commit: str, gold_patch: str, test_files: list[str], commands: list[str],
                 backend, limits: Limits, cache_dir: Path | None = None) -> TestSelection:
    """fail->pass and pass->pass tests of a task, from one run without and one with the gold code."""
    code, tests = partition_patch(gold_patch, test_files)
    key = hashlib.sha256(json.dumps([repo_path, base_commit, gold_patch, sorted(test_files), commands,
                                     backend.name]).encode()).hexdigest()
    cached = cache_dir / f"{key}.json" if cache_dir else None
    if cached and cached.exists():
        return TestSelection.from_json(cached.read_text())
    before = execute(repo_path, base_commit, "", commands, backend, limits, test_patch=tests)
    after = execute(repo_path, base_commit, code, commands, backend, limits, test_patch=tests)
    f2p = sorted(t for t, s in after.tests.items() if s == PASS and before.tests.get(t) != PASS)
    p2p = sorted(t for t, s in after.tests.items() if s == PASS and before.tests.get(t) == PASS)
    sel = TestSelection(f2p, p2p, before, after)
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(sel.to_json())
        tmp.replace(cached)
    return sel



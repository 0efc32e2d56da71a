"""Which dependency manifests a repository has at a commit, what language its tests are in, and which test
runner they use: the facts a test environment is built from and keyed by.

Tasks whose base commits have the same manifests (by blob id) share one environment.
"""

from __future__ import annotations

import json
import posixpath
import re
import tomllib
from dataclasses import dataclass, field
from typing import Mapping

from distill_assets.tasks.external import stable_hash

PY_ROOT = (
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "tox.ini",
    "uv.lock",
    "poetry.lock",
    "Pipfile",
    "Pipfile.lock",
    "pytest.ini",
    "conftest.py",
)
_PY_REQ = re.compile(r"^(requirements[^/]*\.(txt|in)|[^/]*-requirements\.txt|requirements/[^/]+\.(txt|in))$")
JS_ROOT = ("package.json", "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml")
GO_ROOT = ("go.mod", "go.sum")

LANG_OF_EXT = {
    ".py": "python",
    ".pyi": "python",
    ".js": "node",
    ".mjs": "node",
    ".cjs": "node",
    ".jsx": "node",
    ".ts": "node",
    ".tsx": "node",
    ".mts": "node",
    ".cts": "node",
    ".go": "go",
}
RUNNERS = ("pytest", "unittest", "node_test", "jest", "mocha", "vitest", "node_scripts", "go_test")


def manifest_paths(tree: Mapping[str, str], language: str) -> list[str]:
    """The manifests of ``language`` at the top of the tree (and ``requirements/`` for Python)."""
    if language == "python":
        return sorted(p for p in tree if p in PY_ROOT or _PY_REQ.match(p))
    if language == "node":
        return sorted(p for p in tree if p in JS_ROOT)
    if language == "go":
        return sorted(p for p in tree if p in GO_ROOT)
    return []


def test_language(test_files: list[str], tree: Mapping[str, str]) -> str | None:
    """The language of a task's tests (by extension; the repository's manifests break a tie)."""
    counts: dict[str, int] = {}
    for p in test_files:
        lang = LANG_OF_EXT.get(posixpath.splitext(p)[1].lower())
        if lang:
            counts[lang] = counts.get(lang, 0) + 1
    if counts:
        return max(sorted(counts), key=lambda k: counts[k])
    if "package.json" in tree:
        return "node"
    if any(p in tree for p in ("pyproject.toml", "setup.py", "setup.cfg")):
        return "python"
    if "go.mod" in tree:
        return "go"
    return None


@dataclass
class RunnerInfo:
    runner: str | None  # one of RUNNERS, or None when none is found
    why: str  # what it was detected from
    node_package: dict = field(default_factory=dict)


def _toml(text: bytes | None) -> dict:
    if not text:
        return {}
    try:
        return tomllib.loads(text.decode("utf-8", "replace"))
    except tomllib.TOMLDecodeError:
        return {}


def detect_runner(
    language: str | None, files: Mapping[str, bytes], tree: Mapping[str, str], test_files: list[str]
) -> RunnerInfo:
    """The repository's test runner at the base commit, from its manifests and test files.

    ``files``: contents of the manifests (and of the task's test files, for imports)."""
    if language == "python":
        py = _toml(files.get("pyproject.toml"))
        text = b"\n".join(files.get(p, b"") for p in ("setup.cfg", "tox.ini", "pytest.ini", "setup.py")).decode(
            "utf-8", "replace"
        )
        reqs = b"\n".join(v for k, v in files.items() if _PY_REQ.match(k)).decode("utf-8", "replace")
        tests_src = b"\n".join(files.get(p, b"") for p in test_files).decode("utf-8", "replace")
        if (
            "pytest" in py.get("tool", {})
            or "pytest.ini" in tree
            or "conftest.py" in tree
            or any(p.endswith("conftest.py") for p in tree)
            or "[tool:pytest]" in text
            or "[pytest]" in text
        ):
            return RunnerInfo("pytest", "pytest configuration or conftest.py")
        if re.search(r"\bpytest\b", reqs + json.dumps(py) + text) or re.search(
            r"^\s*(import pytest|from pytest)", tests_src, re.M
        ):
            return RunnerInfo("pytest", "pytest in the dependencies or the tests")
        if re.search(r"^\s*(import unittest|from unittest)", tests_src, re.M):
            return RunnerInfo("unittest", "the tests import unittest")
        return RunnerInfo("pytest", "Python tests with no runner configured (pytest collects plain test functions)")
    if language == "node":
        try:
            pkg = json.loads(files.get("package.json", b"{}") or b"{}")
        except json.JSONDecodeError:
            pkg = {}
        deps = {**(pkg.get("dependencies") or {}), **(pkg.get("devDependencies") or {})}
        script = str((pkg.get("scripts") or {}).get("test", ""))
        if "vitest" in deps or "vitest" in script:
            return RunnerInfo("vitest", "vitest in package.json", pkg)
        if "jest" in deps or re.search(r"\bjest\b", script) or "jest" in pkg:
            return RunnerInfo("jest", "jest in package.json", pkg)
        if "mocha" in deps or re.search(r"\bmocha\b", script):
            return RunnerInfo("mocha", "mocha in package.json", pkg)
        if "node --test" in script or "node:test" in b"".join(files.get(p, b"") for p in test_files).decode(
            "utf-8", "replace"
        ):
            return RunnerInfo("node_test", "node --test in the test script or node:test in the tests", pkg)
        if test_files:
            return RunnerInfo("node_scripts", "each test file is a script that exits non-zero on failure", pkg)
        return RunnerInfo(None, "no JavaScript test runner in package.json", pkg)
    if language == "go":
        return RunnerInfo("go_test", "go.mod")
    return RunnerInfo(None, "no test language")


@dataclass
class EnvSpec:
    """What one environment is built from: the key is the content hash of the manifests (blob ids)."""

    language: str
    manifests: dict[str, str]  # path -> blob id
    key: str

    @classmethod
    def of(cls, language: str, tree: Mapping[str, str], builder_version: str, extra: str = "") -> "EnvSpec":
        manifests = {p: tree[p] for p in manifest_paths(tree, language)}
        key = stable_hash("env", language, builder_version, extra, json.dumps(sorted(manifests.items())))[:24]
        return cls(language, manifests, key)

"""Fixture projects whose tests need third-party packages, and a place for environments the sandbox can reach."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from distill_assets_tests.gitrepo import GitRepo

PYPROJECT = """[project]
name = "calc"
version = "0.1"
requires-python = ">=3.9"
dependencies = []

[project.optional-dependencies]
test = ["pytest", "{dep}"]
"""
TEST_V1 = "import six\nfrom calc.ops import double\n\n\ndef test_double():\n    assert double(2) == 4\n"
TEST_V2 = TEST_V1 + "\n\ndef test_triple():\n    from calc.ops import triple\n    assert six.PY3 and triple(2) == 6\n"


@pytest.fixture
def env_root():
    """Environments live where the sandbox user can reach them (pytest's own tmp folders are private to root)."""
    d = tempfile.mkdtemp(prefix="distill-envs-test-")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def _task(repo: GitRepo, base: str, head: str, test_files: list[str], task_id: str = "t1") -> dict:
    patch = repo.git("diff", "--full-index", base, head)
    changed = [p for p in repo.git("diff", "--name-only", base, head).split() if p]
    return {
        "task_id": task_id,
        "repo": "calc",
        "repo_path": str(repo.path),
        "base_commit": base,
        "gold_patch": patch,
        "has_tests": True,
        "test_files": test_files,
        "created_at": None,
        "file_changes": [{"path": p, "status": "M"} for p in changed],
    }


@pytest.fixture
def py_repo(tmp_path):
    """A Python project whose tests import a package (six) that neither the host nor the sandbox image has."""
    r = GitRepo(tmp_path / "calc")
    base = r.commit(
        "initial",
        {
            "pyproject.toml": PYPROJECT.format(dep="six"),
            "calc/__init__.py": "",
            "calc/ops.py": "def double(x):\n    return 2 * x\n",
            "tests/test_ops.py": TEST_V1,
        },
    )
    head = r.commit(
        "Add triple",
        {
            "calc/ops.py": "def double(x):\n    return 2 * x\n\n\ndef triple(x):\n    return 3 * x\n",
            "tests/test_ops.py": TEST_V2,
        },
    )
    return r, base, head

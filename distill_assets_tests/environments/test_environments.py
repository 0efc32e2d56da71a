"""Per-repository test environments, for real: fixture repositories whose tests need packages from PyPI and npm,
built with uv and npm, cached by their manifests, mounted read-only into the sandbox."""

import json
import os
import shutil
import subprocess

import polars as pl
import pytest

from distill_assets.environments.build import EnvironmentCache
from distill_assets.environments.manifests import detect_runner
from distill_assets.environments.selection import environments_for_tasks, env_by_task, selection_for_task
from distill_assets.sandbox import Limits, get_backend
from distill_assets_tests.environments.conftest import PYPROJECT, TEST_V1, _task
from distill_assets_tests.gitrepo import GitRepo

BACKENDS = ["bwrap", "docker"]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_a_python_environment_from_pypi_gives_fail_to_pass_tests(backend_name, py_repo, tmp_path, env_root):
    repo, base, head = py_repo
    cache = EnvironmentCache(env_root / "envs")
    task = _task(repo, base, head, ["tests/test_ops.py"])
    envs = environments_for_tasks([task], cache, "calc")
    row = envs.row(0, named=True)
    assert row["status"] == "ready", row["log_tail"]
    assert row["runner"] == "pytest" and row["language"] == "python" and row["n_tasks"] == 1
    assert "pyproject.toml" in row["manifests"] and not row["cache_hit"] and row["size_mb"] > 1
    assert any("extras ['test']" in s for s in row["sources"])
    sel = selection_for_task(
        task, env_by_task(envs)["t1"], None, get_backend(backend_name), Limits(timeout_s=120), tmp_path / "sel"
    )
    assert sel["status"] == "selected", sel["detail"]
    assert sel["fail_to_pass"] == ["tests/test_ops.py::test_triple"]
    assert sel["pass_to_pass"] == ["tests/test_ops.py::test_double"]
    assert sel["gold_pass_rate"] == 1.0 and sel["env_key"] == row["env_key"]


def test_the_cache_builds_once_per_manifest_and_rebuilds_when_it_changes(py_repo, tmp_path, env_root):
    repo, base, head = py_repo
    cache = EnvironmentCache(env_root / "envs")
    first = cache.get(str(repo.path), base, ["tests/test_ops.py"])
    assert first.status == "ready" and not first.cache_hit
    built_at = first.built_at
    again = cache.get(str(repo.path), head, ["tests/test_ops.py"])  # same manifests at another commit: a hit
    assert again.cache_hit and again.key == first.key and again.built_at == built_at
    # a fresh cache object on the same folder (the next nightly run) finds it too
    assert EnvironmentCache(env_root / "envs").get(str(repo.path), base, ["tests/test_ops.py"]).cache_hit
    # a changed manifest is a new environment, and a selection in it is a new sandbox run
    bumped = repo.commit(
        "Depend on iniconfig", {"pyproject.toml": PYPROJECT.format(dep="six").replace('"six"]', '"six", "iniconfig"]')}
    )
    new = cache.get(str(repo.path), bumped, ["tests/test_ops.py"])
    assert new.status == "ready" and not new.cache_hit and new.key != first.key
    assert (env_root / "envs" / new.key / "venv").is_dir() and (env_root / "envs" / first.key / "env.json").is_file()
    backend = get_backend("bwrap")
    t_old = _task(repo, base, head, ["tests/test_ops.py"])
    selection_for_task(t_old, first, None, backend, Limits(timeout_s=120), tmp_path / "sel")
    selection_for_task(t_old, first, None, backend, Limits(timeout_s=120), tmp_path / "sel")
    assert len(list((tmp_path / "sel").glob("*.json"))) == 1  # the same environment: cached
    selection_for_task(t_old, new, None, backend, Limits(timeout_s=120), tmp_path / "sel")
    assert len(list((tmp_path / "sel").glob("*.json"))) == 2  # another environment: run again


def test_a_pin_that_cannot_be_installed_falls_back_and_is_recorded(tmp_path, env_root):
    r = GitRepo(tmp_path / "calc")
    base = r.commit(
        "initial",
        {
            "pyproject.toml": PYPROJECT.format(dep="six==0.0.404"),
            "calc/__init__.py": "",
            "calc/ops.py": "def double(x):\n    return 2 * x\n",
            "tests/test_ops.py": TEST_V1,
        },
    )
    rec = EnvironmentCache(env_root / "envs").get(str(r.path), base, ["tests/test_ops.py"])
    assert rec.status == "ready", rec.log_tail
    assert any("without the pins" in f for f in rec.fallbacks), rec.fallbacks
    assert "six==0.0.404" in rec.log_tail


def test_an_uninstallable_environment_is_a_counted_reason_and_retried_later(tmp_path, env_root):
    r = GitRepo(tmp_path / "calc")
    # no interpreter here satisfies the project's Python: nothing can be built, and it says why
    base = r.commit(
        "initial",
        {
            "pyproject.toml": PYPROJECT.format(dep="six").replace(">=3.9", ">=3.99"),
            "calc/__init__.py": "",
            "calc/ops.py": "X = 1\n",
            "tests/test_ops.py": TEST_V1,
        },
    )
    cache = EnvironmentCache(env_root / "envs", retry_failed_s=3600)
    task = _task(r, base, base, ["tests/test_ops.py"])
    envs = environments_for_tasks([task], cache, "calc")
    row = envs.row(0, named=True)
    assert row["status"] == "install_failed" and "3.99" in row["detail"], row
    sel = selection_for_task(task, env_by_task(envs)["t1"], None, get_backend("bwrap"), Limits(), tmp_path / "sel")
    assert sel["status"] == "env_failed" and row["env_key"] in sel["detail"]
    assert cache.get(str(r.path), base, ["tests/test_ops.py"]).cache_hit  # remembered for retry_failed_s
    assert (
        not EnvironmentCache(env_root / "envs", retry_failed_s=0)
        .get(str(r.path), base, ["tests/test_ops.py"])
        .cache_hit
    )


def _npm_lock(path):
    subprocess.run(
        ["npm", "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=path,
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.mark.skipif(not shutil.which("npm"), reason="npm is installed by make setup")
def test_a_node_environment_from_a_lock_file(tmp_path, env_root):
    r = GitRepo(tmp_path / "fmt")
    pkg = {
        "name": "fmt",
        "version": "1.0.0",
        "scripts": {"test": "node --test test/"},
        "devDependencies": {"ms": "2.1.3"},
    }
    r.write(
        {
            "package.json": json.dumps(pkg, indent=2) + "\n",
            "lib/fmt.js": "function fmt(n) { return String(n); }\nmodule.exports = { fmt };\n",
            "test/fmt.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\n"
            "const ms = require('ms');\nconst { fmt } = require('../lib/fmt');\n"
            "test('fmt', () => assert.strictEqual(fmt(1), '1'));\n",
        }
    )
    _npm_lock(r.path)
    base = r.commit("initial")
    head = r.commit(
        "Format durations",
        {
            "lib/fmt.js": "const ms = require('ms');\nfunction fmt(n) { return String(n); }\n"
            "function dur(n) { return ms(n); }\nmodule.exports = { fmt, dur };\n",
            "test/fmt.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\n"
            "const { fmt, dur } = require('../lib/fmt');\n"
            "test('fmt', () => assert.strictEqual(fmt(1), '1'));\n"
            "test('dur', () => assert.strictEqual(dur(60000), '1m'));\n",
        },
    )
    task = _task(r, base, head, ["test/fmt.test.js"])
    envs = environments_for_tasks([task], EnvironmentCache(env_root / "envs"), "fmt")
    row = envs.row(0, named=True)
    assert row["status"] == "ready" and row["runner"] == "node_test", row["log_tail"]
    assert row["fallbacks"] == [] and "package-lock.json" in row["manifests"]  # npm ci, no fallback
    sel = selection_for_task(
        task, env_by_task(envs)["t1"], None, get_backend("bwrap"), Limits(timeout_s=120), tmp_path / "sel"
    )
    assert sel["status"] == "selected", sel["detail"]
    assert sel["fail_to_pass"] == ["test/fmt.test.js::dur"] and sel["pass_to_pass"] == ["test/fmt.test.js::fmt"]


def test_go_is_a_counted_unsupported_reason(tmp_path, env_root):
    r = GitRepo(tmp_path / "gomod")
    base = r.commit(
        "initial",
        {
            "go.mod": "module example.com/x\n\ngo 1.21\n",
            "x.go": "package x\n",
            "x_test.go": 'package x\n\nimport "testing"\n\nfunc TestX(t *testing.T) {}\n',
        },
    )
    task = _task(r, base, base, ["x_test.go"])
    envs = environments_for_tasks([task], EnvironmentCache(env_root / "envs"), "gomod")
    row = envs.row(0, named=True)
    assert row["status"] == "unsupported" and row["runner"] == "go_test" and row["detail"]
    sel = selection_for_task(task, env_by_task(envs)["t1"], None, get_backend("bwrap"), Limits(), tmp_path / "sel")
    assert sel["status"] == "unsupported" and sel["detail"] == row["detail"]


@pytest.mark.parametrize(
    "language,files,test_files,runner",
    [
        ("python", {"pyproject.toml": b"[tool.pytest.ini_options]\naddopts = '-q'\n"}, ["tests/test_a.py"], "pytest"),
        (
            "python",
            {"setup.py": b"from setuptools import setup\nsetup()\n", "tests/test_a.py": b"import unittest\n"},
            ["tests/test_a.py"],
            "unittest",
        ),
        ("python", {"tox.ini": b"[testenv]\ndeps = pytest\ncommands = pytest\n"}, ["t/test_a.py"], "pytest"),
        ("node", {"package.json": b'{"devDependencies": {"jest": "^29"}}'}, ["a.test.js"], "jest"),
        ("node", {"package.json": b'{"scripts": {"test": "mocha test"}}'}, ["test/a.js"], "mocha"),
        ("node", {"package.json": b'{"devDependencies": {"vitest": "^1"}}'}, ["a.test.ts"], "vitest"),
        ("node", {"package.json": b'{"scripts": {"test": "node --test"}}'}, ["tests/a.test.js"], "node_test"),
        ("node", {"package.json": b"{}", "test/a.js": b"require('node:test')"}, ["test/a.js"], "node_test"),
        ("node", {"package.json": b"{}"}, ["test/run.js"], "node_scripts"),
        ("go", {"go.mod": b"module x\n"}, ["x_test.go"], "go_test"),
    ],
)
def test_the_runner_is_detected_from_the_manifests_and_tests(language, files, test_files, runner):
    tree = {p: "blob" for p in files}
    assert detect_runner(language, files, tree, test_files).runner == runner


def test_environment_rows_have_the_schema_of_the_asset(py_repo, tmp_path, env_root):
    repo, base, head = py_repo
    envs = environments_for_tasks(
        [
            _task(repo, base, head, ["tests/test_ops.py"]),
            _task(repo, base, head, ["tests/test_ops.py"], task_id="t2"),
            {"task_id": "t3", "has_tests": False},
        ],
        EnvironmentCache(env_root / "envs"),
        "calc",
    )
    assert envs.height == 1 and envs["task_ids"].to_list() == [["t1", "t2"]]
    assert isinstance(envs, pl.DataFrame) and envs["n_tasks"][0] == 2
    assert not envs["cache_hit"][0]  # built for t1, found for t2: the group was built in this run


def test_an_environment_folder_the_sandbox_user_cannot_reach_is_one_clear_reason(py_repo, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only as root does the sandbox run as another user")
    repo, base, _ = py_repo
    hidden = tmp_path / "private"  # pytest-of-root is 0700 as well
    hidden.mkdir(mode=0o700)
    rec = EnvironmentCache(hidden / "envs").get(str(repo.path), base, ["tests/test_ops.py"])
    assert rec.status == "install_failed" and str(hidden) in rec.detail and "sandbox.env_dir" in rec.detail


def test_run_task_runs_the_whole_suite_in_the_same_environment(py_repo, env_root):
    from distill_assets.config import load_config
    from distill_assets.environments.selection import repo_test_plan
    from distill_assets.mining.miner import FileClassifier
    from distill_assets.router.pipeline import run_repo_tests

    repo, _, head = py_repo
    cfg = load_config()
    cfg = cfg.model_copy(update={"sandbox": cfg.sandbox.model_copy(update={"backend": "bwrap"})})
    cache = EnvironmentCache(env_root / "envs")
    plan, why = repo_test_plan(str(repo.path), head, cache, FileClassifier(cfg.mining).is_test)
    assert plan is not None and why == "pytest", why
    res = run_repo_tests(repo.path, head, "", plan, cfg)
    assert res.status == "passed" and set(res.tests) == {
        "tests/test_ops.py::test_double",
        "tests/test_ops.py::test_triple",
    }, res.log[-1500:]
    broken = "--- a/calc/ops.py\n+++ b/calc/ops.py\n@@ -5,2 +5,2 @@ def double(x):\n def triple(x):\n-    return 3 * x\n+    return 4 * x\n"
    res = run_repo_tests(repo.path, head, broken, plan, cfg)
    assert res.status == "tests_failed" and res.tests["tests/test_ops.py::test_triple"] == "failed"
    # the plan runs in the environment test_selections would use for this commit: the same key, a cache hit
    assert cache.get(str(repo.path), head, ["tests/test_ops.py"]).cache_hit


def test_user_commands_run_in_the_environment_and_quiet_pytest_is_read_from_its_report(py_repo, env_root):
    """`sandbox.environments: always` with `test_commands: [pytest -x -q]`: a quiet run is read from JUnit XML."""
    from distill_assets.sandbox import execute
    from distill_assets.sandbox.plans import plan_for_commands

    repo, _, head = py_repo
    env = EnvironmentCache(env_root / "envs").get(str(repo.path), head, ["tests/test_ops.py"])
    plan = plan_for_commands(["python -m pytest -x -q tests"], *env.sandbox())
    res = execute(str(repo.path), head, "", plan, get_backend("bwrap"), Limits(timeout_s=120))
    assert res.status == "passed" and len(res.tests) == 2, res.log[-1500:]


def test_the_disk_cap_evicts_the_least_recently_used_environment_never_one_in_use(py_repo, env_root):
    repo, base, _ = py_repo
    first = EnvironmentCache(env_root / "envs").get(str(repo.path), base, ["tests/test_ops.py"])
    bumped = repo.commit(
        "Depend on iniconfig", {"pyproject.toml": PYPROJECT.format(dep="six").replace('"six"]', '"six", "iniconfig"]')}
    )
    tiny = EnvironmentCache(env_root / "envs", cap_gb=0.001)  # ~1 MB: only what this run uses may stay
    second = tiny.get(str(repo.path), bumped, ["tests/test_ops.py"])
    assert second.status == "ready" and (env_root / "envs" / second.key / "env.json").is_file()
    assert not (env_root / "envs" / first.key).exists()
    again = tiny.get(str(repo.path), base, ["tests/test_ops.py"])  # gone, so built again
    assert again.status == "ready" and not again.cache_hit


def test_open_npm_ranges_are_capped_at_their_major(tmp_path):
    from distill_assets.environments.node import cap_open_ranges

    pkg = tmp_path / "package.json"
    pkg.write_text(
        json.dumps(
            {
                "devDependencies": {"sinon": ">= 1.14.1", "should": ">= 0.0.1", "ms": "2.1.3"},
                "dependencies": {"x": ">=2"},
            }
        )
    )
    assert cap_open_ranges(pkg) == ["x >=2 -> ^2", "sinon >= 1.14.1 -> ^1.14.1"]
    data = json.loads(pkg.read_text())
    assert data["devDependencies"] == {"sinon": "^1.14.1", "should": ">= 0.0.1", "ms": "2.1.3"}


def test_plan_executions_rows_run_coder_diffs_and_the_gold_code_in_the_sandbox(py_repo, tmp_path, env_root):
    """The rows plan_executions writes, from a real selection: a coder's diff run by the PlanRunner (a sandbox
    run, then a cache hit), a coder error (no diff, nothing run), the gold code, and a plan scored by overlap."""
    from distill_assets.sandbox import partition_patch
    from distill_assets.scoring.executions import PlanRunner, SandboxCache, execution_plan, execution_rows
    from distill_assets.teachers.client import TeacherAnswer, TeacherRequest

    repo, base, head = py_repo
    task = _task(repo, base, head, ["tests/test_ops.py"])
    other = {**task, "task_id": "t2"}
    envs = environments_for_tasks([task], EnvironmentCache(env_root / "envs"), "calc")
    backend = get_backend("bwrap")
    sel = {
        "t1": selection_for_task(task, env_by_task(envs)["t1"], None, backend, Limits(timeout_s=120), tmp_path / "s")
    }
    assert sel["t1"]["status"] == "selected", sel["t1"]["detail"]
    plan = '{"task_summary": "s", "affected_files": [], "execution_order": [], "rationale": ""}'
    by_source = {t: {"reference": [(f"reference:{t}", plan, None)]} for t in ("t1", "t2")}
    tasks = {"t1": {**task, "split": "train"}, "t2": {**other, "split": "train"}}
    ex = execution_plan(by_source, "reference", tasks, {"t1": {}, "t2": {}}, sel, 1, None)
    code, _ = partition_patch(task["gold_patch"], task["test_files"])
    req = TeacherRequest("t1", "code_generation", "h", 0, [], None, 0.0, 100)
    coded = [
        (ex.coded[0], TeacherAnswer(req, "k0", content=json.dumps({"diff": code}))),
        (ex.coded[0], TeacherAnswer(req, "k1", error="timeout after 3 attempts")),
    ]
    run = PlanRunner(tasks, sel, {}, "bwrap", None, Limits(timeout_s=120), SandboxCache(tmp_path / "runs"))
    rows = execution_rows(ex, coded, "coder", "m", run, with_gold=True)
    got = [(r["coder"], r["status"], r["pass_rate"], r["scored_by"], r["sandbox_cached"]) for r in rows]
    assert got == [
        ("coder", "passed", 1.0, "tests", False),
        ("coder", "no_diff", 0.0, "tests", False),
        ("gold", "passed", 1.0, "tests", True),  # the same code as the coder's: the cached run
        (None, "no_tests", None, "overlap_only", False),
    ]
    assert rows[1]["code_error"] == "timeout after 3 attempts" and rows[3]["task_id"] == "t2"

"""test_environments -> test_selections as Dagster assets on a fixture repository, and the blocking check that
demands a usable selection (no silent zeros)."""

import dagster as dg
import polars as pl
import yaml

from distill_assets.config import load_config
from distill_assets.defs.scoring import checks as scoring_checks
from distill_assets.orchestrate import materialize_all
from distill_assets.scoring.executions import SELECTION_SCHEMA
from distill_assets_tests.conftest import PROJECT, use_config
from distill_assets_tests.environments.conftest import PYPROJECT


def _config(tmp_path, monkeypatch, repo_path, env_root):
    data = yaml.safe_load((PROJECT / "data" / "distill.yaml").read_text())
    data["sources"] = {"repos": [{"name": "calc", "path": str(repo_path)}], "external": []}
    data["sandbox"].update(backend="bwrap", test_commands={}, env_dir=str(env_root))
    use_config(tmp_path, monkeypatch, data)


def _meta(instance, key, partition=None):
    rec = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition] if partition else None), limit=1
    )
    return rec.records[0].event_log_entry.asset_materialization.metadata


def test_environments_and_selections_as_assets(py_repo, tmp_path, dagster_home, monkeypatch, env_root):
    repo, _, _ = py_repo
    _config(tmp_path, monkeypatch, repo.path, env_root)
    instance = dg.DagsterInstance.get()
    try:
        logs: list[str] = []
        assert all(
            s.failed == 0 for s in materialize_all(load_config(), instance=instance, log=logs.append, select="sources")
        ), logs
        summary = materialize_all(load_config(), instance=instance, log=logs.append, select="test_*")
        assert {s.asset for s in summary} == {"test_environments", "test_selections"}
        assert all(s.failed == 0 for s in summary), logs
        t = dagster_home / "storage" / "tables"
        envs = pl.read_parquet(t / "test_environments" / "calc.parquet")
        assert envs["status"].to_list() == ["ready"] and envs["runner"].to_list() == ["pytest"]
        meta = _meta(instance, "test_environments", "calc")
        assert meta["environments_ready"].value == 1 and meta["environments_built"].value == 1
        assert meta["ready_task_share"].value == 1.0
        sel = pl.read_parquet(t / "test_selections.parquet")
        row = sel.filter(pl.col("status") != "no_tests").row(0, named=True)
        assert row["status"] == "selected" and row["fail_to_pass"] == ["tests/test_ops.py::test_triple"]
        assert row["env_key"] == envs["env_key"][0] and row["repo"] == "calc" and row["plan_json"]
        assert _meta(instance, "test_selections")["tasks_with_fail_to_pass"].value == 1
        # the nightly rerun builds nothing: the environment is a cache hit
        assert all(
            s.failed == 0
            for s in materialize_all(load_config(), instance=instance, log=logs.append, select="test_environments")
        )
        meta = _meta(instance, "test_environments", "calc")
        assert meta["environments_built"].value == 0 and meta["environments_cache_hits"].value == 1
    finally:
        instance.dispose()


def test_a_repository_with_tests_but_no_usable_selection_fails_the_blocking_check(
    tmp_path, dagster_home, monkeypatch, env_root
):
    from distill_assets_tests.gitrepo import GitRepo

    repo = GitRepo(tmp_path / "calc")
    tests = "import six\nfrom calc.ops import f\n\n\ndef test_f():\n    assert f() == {}\n"
    repo.commit(
        "initial",
        {
            "pyproject.toml": PYPROJECT.format(dep="six").replace(">=3.9", ">=3.99"),
            "calc/__init__.py": "",
            "calc/ops.py": "def f():\n    return 1\n",
            "tests/test_ops.py": tests.format(1),
        },
    )
    repo.commit("Return two", {"calc/ops.py": "def f():\n    return 2\n", "tests/test_ops.py": tests.format(2)})
    _config(tmp_path, monkeypatch, repo.path, env_root)
    instance = dg.DagsterInstance.get()
    try:
        logs: list[str] = []
        materialize_all(load_config(), instance=instance, log=logs.append, select="sources")
        summary = {
            s.asset: s for s in materialize_all(load_config(), instance=instance, log=logs.append, select="test_*")
        }
        assert summary["test_environments"].failed == 0
        t = dagster_home / "storage" / "tables"
        sel = pl.read_parquet(t / "test_selections.parquet")
        assert set(sel.filter(pl.col("status") != "no_tests")["status"]) == {"env_failed"}
        checks = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(dg.AssetKey("test_selections"), "test_selections_usable")
        )
        ev = checks.event.asset_check_evaluation
        assert not ev.passed and "calc: none of 1 test-touching tasks" in ev.description and "3.99" in ev.description
    finally:
        instance.dispose()


def test_the_check_has_nothing_to_judge_when_no_task_touches_tests():
    df = pl.DataFrame(
        [
            {k: None for k in SELECTION_SCHEMA}
            | {"task_id": "t1", "repo": "r", "status": "no_tests", "fail_to_pass": [], "pass_to_pass": []}
        ],
        schema=SELECTION_SCHEMA,
    )
    result = scoring_checks.test_selections_usable(test_selections=df)
    assert not result.passed and "nothing to judge" in result.description
    ok = df.with_columns(pl.lit("selected").alias("status"))
    assert scoring_checks.test_selections_usable(test_selections=ok).passed


def test_tasks_that_cannot_run_here_are_shown_not_judged():
    from distill_assets.environments.selection import plan_for_task

    rows = [
        {"task_id": "swe-1", "repo": "astropy/astropy", "status": "no_checkout"},
        {"task_id": "cp-1", "repo": "x/y", "status": "not_configured"},
        {"task_id": "git-1", "repo": "shop", "status": "selected"},
    ]
    df = pl.DataFrame(
        [{k: None for k in SELECTION_SCHEMA} | r | {"fail_to_pass": [], "pass_to_pass": []} for r in rows],
        schema=SELECTION_SCHEMA,
    )
    assert scoring_checks.test_selections_usable(test_selections=df).passed
    only_external = df.filter(pl.col("repo") != "shop")
    res = scoring_checks.test_selections_usable(test_selections=only_external)
    assert not res.passed and "nothing to judge" in res.description and "no_checkout 1" in res.description
    # an external dataset task with a local checkout but no test_commands: a reason, not "materialize it"
    task = {
        "task_id": "swe-2",
        "source": "swebench",
        "repo": "astropy/astropy",
        "repo_path": "/x",
        "base_commit": "c",
        "has_tests": True,
        "test_files": ["t/test_a.py"],
    }
    plan, status, detail = plan_for_task(task, None, None)
    assert plan is None and status == "not_configured" and "sandbox.test_commands['astropy/astropy']" in detail

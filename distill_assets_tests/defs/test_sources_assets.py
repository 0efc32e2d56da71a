"""The sources assets materialized for real through a Dagster instance on a real git repository."""

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from distill_assets.config import load_config
from distill_assets.defs.partitions import REPO_PARTITIONS_NAME, stage_teacher_partitions, stage_teacher_skip
from distill_assets.defs.sources.checks import reference_plans_valid
from distill_assets.defs.sources.sensors import source_repos_sync
from distill_assets.orchestrate import materialize_all
from distill_assets_tests.conftest import PROJECT, write_config


def latest_meta(instance, key: str, partition: str | None = None) -> dict:
    rec = instance.get_latest_materialization_event(dg.AssetKey(key)) if partition is None else None
    if partition is not None:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
        )
        rec = result.records[0].event_log_entry if result.records else None
    assert rec is not None, f"{key} was not materialized"
    return {k: v.value for k, v in rec.asset_materialization.metadata.items()}


def table(home: Path, key: str, partition: str | None = None) -> pl.DataFrame:
    base = home / "storage" / "tables" / key
    return pl.read_parquet(base / f"{partition}.parquet" if partition else base.with_suffix(".parquet"))


def test_materialize_all_sources_on_a_real_repository(shop_repo, tmp_path, dagster_home, monkeypatch):
    cfg_path = write_config(
        tmp_path,
        [{"name": "shop", "path": str(shop_repo.path)}],
        external=[{"kind": "commitpackft", "path": str(PROJECT / "data/samples/commitpackft_sample.jsonl")}],
    )
    monkeypatch.setenv("DISTILL_CONFIG", str(cfg_path))
    with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
        logs: list[str] = []
        summary = materialize_all(load_config(), instance=instance, log=logs.append, groups={"sources"})
        assert all(s.failed == 0 for s in summary), logs
        assert instance.get_dynamic_partitions(REPO_PARTITIONS_NAME) == ["shop"]

        mined = latest_meta(instance, "mined_commits", "shop")
        assert mined["commits"] == 12 and mined["kept"] == 4
        assert mined["dropped_merge"] == 1 and mined["dropped_formatting_only"] == 1
        assert mined["dropped_docs_only"] == 1
        assert "only_noise_files" in mined["drop_reasons"]

        tasks_meta = latest_meta(instance, "change_tasks")
        assert tasks_meta["dagster/row_count"] == 7 and tasks_meta["source_git"] == 4
        ctx_meta = latest_meta(instance, "task_contexts")
        assert ctx_meta["status_ok"] == 7 and ctx_meta["context_tokens_p50"] > 0
        ref_meta = latest_meta(instance, "reference_plans")
        assert ref_meta["valid_rate"] == 1.0 and ref_meta["status_ok"] == 7 and ref_meta["usable"] == 7
        assert ref_meta["difficulty_easy"] + ref_meta["difficulty_medium"] + ref_meta["difficulty_hard"] == 7
        assert ref_meta["example_plan"]["execution_order"]

        evals = {}
        for check in ("reference_plans_valid", "change_tasks_split_is_temporal"):
            key = dg.AssetCheckKey(dg.AssetKey(check.split("_")[0] + "_" + check.split("_")[1]), check)
            recs = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
            assert recs and recs[0].status.value == "SUCCEEDED", check
            evals[check] = recs[0]

        plans = table(dagster_home, "reference_plans")
        assert plans.filter(pl.col("status") == "ok")["valid"].all()
        contexts = table(dagster_home, "task_contexts")
        assert set(contexts["task_id"]) == set(plans["task_id"])


def test_a_bad_repository_fails_with_one_clear_message_and_writes_nothing(tmp_path, dagster_home, monkeypatch):
    (tmp_path / "plain").mkdir()
    cfg_path = write_config(tmp_path, [{"name": "plain", "path": str(tmp_path / "plain")}])
    monkeypatch.setenv("DISTILL_CONFIG", str(cfg_path))
    with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
        logs: list[str] = []
        summary = materialize_all(load_config(), instance=instance, log=logs.append, groups={"sources"})
        assert {s.asset: s.failed for s in summary}["mined_commits"] == 1
        assert any("not a git repository" in line for line in logs), logs
        assert any("skip change_tasks" in line for line in logs), logs
        assert not (dagster_home / "storage" / "tables" / "mined_commits" / "plain.parquet").exists()
        assert not list((dagster_home / "storage").rglob("*.tmp"))


def _plan_rows(n_valid: int, n_invalid: int) -> pl.DataFrame:
    """reference_plans rows whose validity comes from the real validator."""
    from distill_assets.plans.reference import REFERENCE_SCHEMA
    from distill_assets.plans.validator import PlanContext, validate_plan

    ctx = PlanContext.from_rows(["a.py", "b.py"], [{"path": "a.py", "name": "f"}])
    good = {
        "task_summary": "x",
        "rationale": "",
        "execution_order": ["a.py", "b.py"],
        "affected_files": [
            {
                "path": "a.py",
                "role": "primary",
                "changes": [
                    {
                        "symbol": "f",
                        "action": "modify",
                        "description": "",
                        "depends_on": [],
                        "depended_by": ["b.py:<module>"],
                    }
                ],
            },
            {
                "path": "b.py",
                "role": "supporting",
                "changes": [
                    {
                        "symbol": "<module>",
                        "action": "modify",
                        "description": "",
                        "depends_on": ["a.py:f"],
                        "depended_by": [],
                    }
                ],
            },
        ],
    }
    bad = json.loads(json.dumps(good))
    bad["execution_order"] = ["b.py", "a.py"]
    bad["affected_files"][0]["changes"][0]["symbol"] = "g"
    bad["affected_files"][0]["changes"][0]["depended_by"] = ["b.py:<module>"]
    bad["affected_files"][1]["changes"][0]["depends_on"] = ["a.py:g"]
    rows = []
    for i, plan in enumerate([good] * n_valid + [bad] * n_invalid):
        report = validate_plan(json.dumps(plan), ctx)
        rows.append(
            {k: None for k in REFERENCE_SCHEMA}
            | {
                "task_id": f"t{i}",
                "source": "reference",
                "status": "ok",
                "detail": "",
                "plan_json": json.dumps(plan),
                "valid": report.valid,
                "usable": report.valid,
                "violations": [str(v) for v in report.violations],
                "difficulty": "easy",
                "seconds": 0.0,
            }
        )
    return pl.DataFrame(rows, schema=REFERENCE_SCHEMA)


def test_the_blocking_check_allows_a_few_invalid_plans_and_names_each_violation(tmp_path):
    from distill_assets.defs.resources import DistillConfigResource

    distill = DistillConfigResource(config_path=str(write_config(tmp_path, [], plans={"max_invalid_rate": 0.03})))
    few = reference_plans_valid(distill=distill, reference_plans=_plan_rows(40, 1))  # 2.4 %: kept, not blocking
    assert few.passed, few.description
    assert few.metadata["plans_failing"].value == 1 and few.metadata["violation_unknown_symbol"].value == 1
    assert "unknown_symbol" in few.metadata["failing_examples"].value
    many = reference_plans_valid(distill=distill, reference_plans=_plan_rows(40, 2))  # 4.8 %: over the limit
    assert not many.passed and "2 of 42 plans are invalid" in many.description
    assert many.metadata["violation_order_violates_edge"].value == 2


def test_the_blocking_check_fails_when_no_plan_was_built(tmp_path):
    from distill_assets.defs.resources import DistillConfigResource
    from distill_assets.plans.reference import REFERENCE_SCHEMA

    distill = DistillConfigResource(config_path=str(write_config(tmp_path, [])))
    skipped = pl.DataFrame(
        [
            {k: None for k in REFERENCE_SCHEMA}
            | {
                "task_id": "t0",
                "source": "reference",
                "status": "skipped",
                "detail": "no task context (no_snapshot)",
                "valid": False,
                "usable": False,
                "violations": [],
                "seconds": 0.0,
            }
        ],
        schema=REFERENCE_SCHEMA,
    )
    result = reference_plans_valid(distill=distill, reference_plans=skipped)
    assert not result.passed and "no reference plan was built" in result.description
    assert "no_snapshot" in result.description
    empty = reference_plans_valid(distill=distill, reference_plans=pl.DataFrame(schema=REFERENCE_SCHEMA))
    assert not empty.passed and "no tasks" in empty.description


def test_sensor_adds_a_partition_per_configured_repository(tmp_path, monkeypatch, shop_repo):
    cfg_path = write_config(
        tmp_path,
        [{"name": "shop", "path": str(shop_repo.path)}, {"name": "other", "url": "https://example.invalid/x.git"}],
    )
    monkeypatch.setenv("DISTILL_CONFIG", str(cfg_path))
    with dg.instance_for_test() as instance:
        result = source_repos_sync(dg.build_sensor_context(instance=instance))
        assert sorted(r.partition_key for r in result.run_requests) == ["other", "shop"]
        assert result.dynamic_partitions_requests[0].partition_keys == ["shop", "other"]
        instance.add_dynamic_partitions(REPO_PARTITIONS_NAME, ["shop", "other"])
        again = source_repos_sync(dg.build_sensor_context(instance=instance))
        assert isinstance(again, dg.SkipReason)


def test_stage_teacher_partitions_skip_invalid_pairs_with_a_reason(monkeypatch):
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    cfg = load_config()
    keys = stage_teacher_partitions.get_partition_keys()
    assert len(keys) == 5 * len(cfg.teachers)
    assert {k for k in keys if stage_teacher_skip(cfg, k) is None} == {
        f"{s}|local" for s in ("task_analysis", "relevance", "symbol_selection", "plan_generation", "code_generation")
    }
    assert "not assigned" in stage_teacher_skip(cfg, "task_analysis|deepseek-v3.2")
    assert "DEEPSEEK_API_KEY" in stage_teacher_skip(cfg, "plan_generation|deepseek-v3.2")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "k")
    assert (
        stage_teacher_skip(cfg, dg.MultiPartitionKey({"stage": "plan_generation", "teacher": "deepseek-v3.2"})) is None
    )


def _sources_defs():
    from distill_assets.definitions import defs

    return defs()


def test_mined_commits_through_dagster_materialize(shop_repo, tmp_path, monkeypatch, dagster_home):
    from distill_assets.defs.io import PolarsIOManager
    from distill_assets.defs.resources import DistillConfigResource
    from distill_assets.defs.sources.assets import mined_commits

    cfg_path = write_config(tmp_path, [{"name": "shop", "path": str(shop_repo.path)}])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(REPO_PARTITIONS_NAME, ["shop"])
        result = dg.materialize(
            [mined_commits],
            partition_key="shop",
            instance=instance,
            resources={
                "distill": DistillConfigResource(config_path=str(cfg_path)),
                "io_manager": PolarsIOManager(base_dir=str(tmp_path / "tables")),
            },
        )
        assert result.success
        df = result.output_for_node("mined_commits")
        assert df.height == 12 and df["kept"].sum() == 4
        meta = result.asset_materializations_for_node("mined_commits")[0].metadata
        assert meta["kept"].value == 4 and meta["dropped_too_many_files"].value == 1
        assert (tmp_path / "tables" / "mined_commits" / "shop.parquet").exists()


@pytest.mark.parametrize("case", ["empty_repo", "bad_config"])
def test_user_mistakes_fail_the_asset_with_one_message(case, tmp_path):
    import git as gitpython

    from distill_assets.defs.io import PolarsIOManager
    from distill_assets.defs.resources import DistillConfigResource
    from distill_assets.defs.sources.assets import mined_commits

    gitpython.Repo.init(tmp_path / "empty")
    cfg_path = write_config(tmp_path, [{"name": "empty", "path": str(tmp_path / "empty")}])
    if case == "bad_config":
        cfg_path.write_text(cfg_path.read_text().replace("min_files: 2", "min_files: two"))
        expect = "mining.min_files: Input should be a valid integer"
    else:
        expect = "repository 'empty': the repository has no commits"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(REPO_PARTITIONS_NAME, ["empty"])
        result = dg.materialize(
            [mined_commits],
            partition_key="empty",
            instance=instance,
            raise_on_error=False,
            resources={
                "distill": DistillConfigResource(config_path=str(cfg_path)),
                "io_manager": PolarsIOManager(base_dir=str(tmp_path / "tables")),
            },
        )
        assert not result.success
        failure = [e for e in result.all_events if e.is_step_failure][0]
        assert expect in failure.step_failure_data.error.message
        assert not (tmp_path / "tables").exists()


def test_change_tasks_goes_on_when_one_repository_fails(shop_repo, git_repo, tmp_path, dagster_home, monkeypatch):
    import shutil

    git_repo.commit("init", {"a.py": "def a():\n    return 1\n", "b.py": "def b():\n    return 1\n"})
    git_repo.commit("Change both", {"a.py": "def a():\n    return 2\n", "b.py": "def b():\n    return 2\n"})
    cfg_path = write_config(
        tmp_path, [{"name": "shop", "path": str(shop_repo.path)}, {"name": "other", "path": str(git_repo.path)}]
    )
    monkeypatch.setenv("DISTILL_CONFIG", str(cfg_path))
    with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
        logs: list[str] = []
        materialize_all(load_config(), instance=instance, log=logs.append, select="mined_commits")
        materialize_all(load_config(), instance=instance, log=logs.append, select="external_tasks")
        shutil.rmtree(git_repo.path)  # the repository disappears after it was mined
        summary = materialize_all(load_config(), instance=instance, log=logs.append, select="change_tasks")
        assert all(s.failed == 0 for s in summary), logs
        meta = latest_meta(instance, "change_tasks")
        assert meta["repos_failed"] == 1 and "repository 'other'" in meta["repo_errors"]
        assert meta["source_git"] == 4  # the shop's tasks are all there
        assert set(table(dagster_home, "change_tasks")["repo"]) == {"shop"}


@pytest.mark.slow
def test_sources_on_samples_of_the_real_repositories(real_repo, tmp_path, dagster_home, monkeypatch):
    """click and commander (newest 700 commits each) through the sources assets: no failure, the blocking check
    passes, every difficulty level is populated, drops and plans are explained in the metadata."""
    cfg_path = write_config(
        tmp_path,
        [
            {"name": "click", "path": str(real_repo("click")), "max_commits": 700},
            {"name": "commander", "path": str(real_repo("commander")), "max_commits": 700},
        ],
    )
    monkeypatch.setenv("DISTILL_CONFIG", str(cfg_path))
    with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
        logs: list[str] = []
        summary = materialize_all(load_config(), instance=instance, log=logs.append, groups={"sources"})
        assert all(s.failed == 0 for s in summary), logs
        for repo in ("click", "commander"):
            mined = latest_meta(instance, "mined_commits", repo)
            assert mined["commits"] == 700 and mined["kept"] > 50
            assert mined["dropped_docs_only"] > 0 and mined["dropped_release"] + mined["dropped_dependency_bump"] > 0
        plans = latest_meta(instance, "reference_plans")
        assert plans["invalid_rate"] <= 0.03 and plans["usable"] > 150
        assert min(plans["difficulty_easy"], plans["difficulty_medium"], plans["difficulty_hard"]) > 0
        assert "task_seconds_max" in plans  # reported; the time goals are checked in bench/sources_real.py
        key = dg.AssetCheckKey(dg.AssetKey("reference_plans"), "reference_plans_valid")
        recs = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
        assert recs and recs[0].status.value == "SUCCEEDED"
        df = table(dagster_home, "reference_plans")
        tasks = table(dagster_home, "change_tasks")
        for repo in ("click", "commander"):
            ids = set(tasks.filter(pl.col("repo") == repo)["task_id"])
            levels = set(df.filter(pl.col("task_id").is_in(ids) & pl.col("usable"))["difficulty"])
            assert levels == {"easy", "medium", "hard"}, (repo, levels)


def test_the_split_check_fails_when_there_are_no_tasks():
    from distill_assets.defs.sources.checks import change_tasks_split_is_temporal
    from distill_assets.tasks.build import CHANGE_TASK_SCHEMA

    result = change_tasks_split_is_temporal(change_tasks=pl.DataFrame(schema=CHANGE_TASK_SCHEMA))
    assert not result.passed and "nothing to judge" in result.description

"""Operating it: the nightly retrain runs in dependency order, sensors react to new commits, production
logs and failed runs, flaky steps retry, and a changed code version marks exactly the downstream stale."""

import datetime as dt
import json

import dagster as dg

from distill_assets.config import STAGE_ORDER
from distill_assets.router.logstore import LogStore
from distill_assets_tests.conftest import PROJECT, use_config

UTC = dt.timezone.utc


def _defs():
    from distill_assets.definitions import defs

    return defs()


def _requested(result) -> set[str]:
    return {r.key.to_user_string() for r in result.results if r.true_subset.size > 0}


def test_nightly_retrain_starts_at_the_cron_tick_and_follows_dependency_order(tmp_path, monkeypatch):
    import yaml

    data = yaml.safe_load((PROJECT / "data" / "distill.yaml").read_text())
    data["automation"] = {"nightly_cron": "0 2 * * *"}
    use_config(tmp_path, monkeypatch, data)
    defs = _defs()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source_repos", ["demo-shop"])
        day = dt.datetime(2026, 11, 28, tzinfo=UTC)
        before = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=day.replace(hour=1))
        assert before.total_requested == 0
        tick = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=before.cursor, evaluation_time=day.replace(hour=2, minute=1)
        )
        # the roots (and what only depends on roots requested in the same tick); nothing further downstream
        assert {"mined_commits", "external_tasks", "production_feedback"} <= _requested(tick)
        assert not {"change_tasks", "teacher_outputs", "adapters", "evaluations"} & _requested(tick)
        for key, partition in (("mined_commits", "demo-shop"), ("external_tasks", None)):
            instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))
        after = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=tick.cursor, evaluation_time=day.replace(hour=2, minute=5)
        )
        assert "change_tasks" in _requested(after)  # the next layer, once its inputs were refreshed
        assert not {"adapters", "evaluations", "teacher_outputs"} & _requested(after)  # not before theirs
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("adapters")).assets_def.op.pool == "gpu"  # one training at a time (pool limit 1)


def test_new_commits_sensor_mines_a_repository_again_when_its_branch_moves(shop_repo, tmp_path, monkeypatch):
    from distill_assets.defs.automation.sensors import source_repos_new_commits
    from distill_assets_tests.conftest import write_config

    cfg = write_config(tmp_path, repos=[{"name": "shop", "path": str(shop_repo.path)}])
    monkeypatch.setenv("DISTILL_CONFIG", str(cfg))
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance)
        first = source_repos_new_commits(ctx)
        assert [r.partition_key for r in first] == ["shop"]
        ctx = dg.build_sensor_context(instance=instance, cursor=ctx.cursor)
        assert isinstance(source_repos_new_commits(ctx), dg.SkipReason)
        shop_repo.commit("Add a note", {"NOTES.md": "new\n"})
        ctx = dg.build_sensor_context(instance=instance, cursor=ctx.cursor)
        again = source_repos_new_commits(ctx)
        assert [r.partition_key for r in again] == ["shop"] and again[0].run_key != first[0].run_key


def test_production_logs_sensor_requests_a_retrain_past_the_threshold(tmp_path, monkeypatch):
    import yaml

    from distill_assets.defs.automation.sensors import production_logs_retrain

    url = f"sqlite:///{tmp_path / 'logs.sqlite'}"
    data = yaml.safe_load((PROJECT / "data" / "distill.yaml").read_text())
    data["router"] = {"log_url": url}
    data["automation"] = {"feedback_threshold": 3}
    use_config(tmp_path, monkeypatch, data)
    store = LogStore(url)
    for i in range(2):
        store.record_outcome(f"r{i}", repo="/r", task_text="t", diff_applied=True, tests_passed=bool(i))
    store.record_outcome("pending", repo="/r", task_text="t", diff_applied=True, tests_passed=None)
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance)
        skip = production_logs_retrain(ctx)
        assert isinstance(skip, dg.SkipReason) and "2 new tasks" in skip.skip_message
        store.record_outcome("r2", repo="/r", task_text="t", diff_applied=True, tests_passed=True)
        ctx = dg.build_sensor_context(instance=instance, cursor=ctx.cursor)
        reqs = production_logs_retrain(ctx)
        assert sorted(r.partition_key for r in reqs) == sorted(STAGE_ORDER)
        assert all(r.tags["distill/trigger"] == "production_logs" for r in reqs)
        ctx = dg.build_sensor_context(instance=instance, cursor=ctx.cursor)
        assert isinstance(production_logs_retrain(ctx), dg.SkipReason)  # counted from the last request
    store.close()


def test_failed_runs_are_recorded_on_their_assets(tmp_path, dagster_home, monkeypatch):
    from distill_assets.defs.automation.sensors import record_run_failures
    from distill_assets_tests.conftest import write_config

    cfg = write_config(tmp_path, repos=[{"name": "ghost", "path": str(tmp_path / "missing-repo")}])
    monkeypatch.setenv("DISTILL_CONFIG", str(cfg))
    defs = _defs()
    instance = dg.DagsterInstance.get()
    try:
        instance.add_dynamic_partitions("source_repos", ["ghost"])
        job = defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("mined_commits")],
            partition_key="ghost",
            raise_on_error=False,
        )
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        (entry,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        failure = entry.dagster_event
        ctx = dg.build_run_status_sensor_context(
            sensor_name="record_run_failures", dagster_event=failure, dagster_instance=instance, dagster_run=run
        ).for_run_failure()
        record_run_failures(ctx)
        obs = instance.fetch_observations(dg.AssetKey("mined_commits"), limit=5).records
        assert len(obs) == 1
        meta = obs[0].event_log_entry.asset_observation.metadata
        assert meta["status"].value == "failed" and meta["failed_run"].value == result.run_id
        assert "missing-repo" in meta["error"].value or "ghost" in meta["error"].value
        line = json.loads((dagster_home / "cache" / "failures.jsonl").read_text().splitlines()[-1])
        assert line["run_id"] == result.run_id and line["assets"] == ["mined_commits"]
    finally:
        instance.dispose()


def test_flaky_steps_retry_and_permanent_errors_do_not():
    graph = _defs().resolve_asset_graph()
    for key in ("teacher_outputs", "plan_executions", "test_selections", "evaluations"):
        policy = graph.get(dg.AssetKey(key)).assets_def.op.retry_policy
        assert policy is not None and policy.max_retries >= 2, key
    assert graph.get(dg.AssetKey("adapters")).assets_def.op.retry_policy is None  # a crash resumes, by hand
    import yaml

    conf = yaml.safe_load((PROJECT / "dagster.yaml").read_text())
    assert conf["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}


def test_a_changed_code_version_marks_exactly_the_downstream_partitions_stale(tmp_path, dagster_home, monkeypatch):
    """Materialize the preparation chain on the external samples, then load definitions in which
    `reference_plans` has a new code version (its schema changed): it and everything computed from it
    (the five stage_prompts partitions) are stale; what it reads from is not."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus  # what the UI uses

    from distill_assets.config import load_config
    from distill_assets.orchestrate import materialize_all
    from distill_assets_tests.conftest import write_config

    external = [{"kind": "commitpackft", "path": str(PROJECT / "data" / "samples" / "commitpackft_sample.jsonl")}]
    monkeypatch.setenv("DISTILL_CONFIG", str(write_config(tmp_path, repos=[], external=external)))
    defs = _defs()
    instance = dg.DagsterInstance.get()
    try:
        logs: list[str] = []
        done = materialize_all(load_config(), instance=instance, log=logs.append, select="*", groups={"sources"})
        done += materialize_all(load_config(), instance=instance, log=logs.append, select="stage_prompts")
        assert all(s.failed == 0 for s in done), logs
        chain = ["external_tasks", "change_tasks", "task_contexts", "reference_plans"]

        def stale(graph) -> dict[str, set]:
            view = AssetGraphView(
                temporal_context=TemporalContext(effective_dt=dt.datetime.now(UTC), last_event_id=None),
                instance=instance,
                asset_graph=graph,
            )
            resolver = CachingStaleStatusResolver(instance, graph, loading_context=view)
            out = {}
            for key in chain:
                out[key] = {None} if resolver.get_status(dg.AssetKey(key)) == StaleStatus.STALE else set()
            out["stage_prompts"] = {
                s for s in STAGE_ORDER if resolver.get_status(dg.AssetKey("stage_prompts"), s) == StaleStatus.STALE
            }
            return {k: v for k, v in out.items() if v}

        assert stale(defs.resolve_asset_graph()) == {}  # freshly materialized: nothing is stale
        old = defs.resolve_assets_def("reference_plans")
        bumped = old.map_asset_specs(lambda spec: spec.replace_attributes(code_version=f"{spec.code_version}-next"))
        changed = AssetGraph.from_assets(
            [bumped if isinstance(a, dg.AssetsDefinition) and a.keys == old.keys else a for a in defs.assets]
        )
        # the changed asset is stale at once (its code version is new) ...
        assert stale(changed) == {"reference_plans": {None}}
        # ... and once it is recomputed (a backfill of it), exactly what it feeds is stale: all five
        # stage_prompts partitions; what it reads from stays fresh
        from distill_assets.defs.io import PolarsIOManager
        from distill_assets.defs.resources import DistillConfigResource
        from distill_assets.defs.sources import assets as src

        raw = src.reference_plans.map_asset_specs(
            lambda spec: spec.replace_attributes(code_version=f"{spec.code_version}-next")
        )
        res = dg.materialize(
            [raw, src.change_tasks, src.task_contexts, src.external_tasks, src.mined_commits],
            selection=[dg.AssetKey("reference_plans")],
            instance=instance,
            raise_on_error=False,
            resources={"distill": DistillConfigResource(), "io_manager": PolarsIOManager()},
        )
        assert res.success
        assert stale(changed) == {"stage_prompts": set(STAGE_ORDER)}
    finally:
        instance.dispose()

"""Errors a user can act on: source checks in `distill check-config`, one line per failure in `distill demo`,
partitions that follow distill.yaml (removal included, history kept), `--select` by asset group.

Real git repositories (GitRepo), the real `distill` typer app (CliRunner) and a real Dagster instance."""

import os
import socket
import subprocess
import sys

import dagster as dg
import pytest
from typer.testing import CliRunner

from distill_assets.cli import app
from distill_assets.config import load_config
from distill_assets.defs.partitions import REPO_PARTITIONS_NAME
from distill_assets.defs.sources.sensors import source_repos_sync
from distill_assets.orchestrate import SelectionError, materialize_all, report_run, select_asset_keys
from distill_assets_tests.conftest import PROJECT, write_config
from distill_assets_tests.gitrepo import GitRepo


def small_repo(path, branch: str = "main") -> GitRepo:
    r = GitRepo(path, branch=branch)
    r.commit("initial", {"app/a.py": "A = 1\n", "app/b.py": "B = 1\n"})
    r.commit("change both", {"app/a.py": "A = 2\nA2 = 3\n", "app/b.py": "from app.a import A\nB = A\n"})
    return r


def source_lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("source error:")]


def check_config(cfg_path, *args):
    return CliRunner().invoke(app, ["check-config", str(cfg_path), *args])


# --------------------------------------------------------------------------- check-config


def _missing(tmp_path):
    return {"name": "gone", "path": str(tmp_path / "nowhere")}, "repository 'gone': path does not exist: "


def _plain_folder(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "README").write_text("not a repository\n")
    return {"name": "plain", "path": str(tmp_path / "plain")}, "repository 'plain': not a git repository: "


def _unknown_branch(tmp_path):
    small_repo(tmp_path / "r")
    return {
        "name": "r",
        "path": str(tmp_path / "r"),
        "branch": "develop",
    }, "repository 'r': branch or ref 'develop' not found"


def _empty_repo(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path / "empty")], check=True)
    return {"name": "empty", "path": str(tmp_path / "empty")}, "repository 'empty': the repository has no commits"


def _bundle_unknown_branch(tmp_path):
    small_repo(tmp_path / "r").git("bundle", "create", str(tmp_path / "r.bundle"), "--all")
    return (
        {"name": "b", "url": str(tmp_path / "r.bundle"), "branch": "release"},
        "repository 'b': branch or ref 'release' not found at ",
    )


def _remote_refused(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.git"
    return {"name": "remote", "url": url}, f"repository 'remote': unreachable: {url}: fatal: unable to access"


@pytest.mark.parametrize(
    "make", [_missing, _plain_folder, _unknown_branch, _empty_repo, _bundle_unknown_branch, _remote_refused]
)
def test_check_config_gives_one_line_and_exit_2_for_a_bad_source(make, tmp_path):
    source, reason = make(tmp_path)
    res = check_config(write_config(tmp_path, [source]))
    assert res.exit_code == 2, res.output
    assert "teacher" in res.output and "local" in res.output  # the teachers table is still printed
    lines = source_lines(res.output)
    assert len(lines) == 1 and reason in lines[0], res.output


def test_check_config_accepts_bare_and_normal_clones_and_bundles(tmp_path):
    src = small_repo(tmp_path / "src", branch="trunk")
    subprocess.run(["git", "clone", "-q", "--bare", str(src.path), str(tmp_path / "bare.git")], check=True)
    src.git("bundle", "create", str(tmp_path / "src.bundle"), "--all")
    cfg = write_config(
        tmp_path,
        [
            {"name": "bare", "path": str(tmp_path / "bare.git"), "branch": "trunk"},
            {"name": "worktree", "path": str(src.path)},
            {"name": "bundle", "url": str(tmp_path / "src.bundle"), "branch": "trunk"},
            {"name": "folder-url", "url": f"file://{tmp_path / 'bare.git'}"},
        ],
        external=[
            {
                "kind": "swebench",
                "path": str(PROJECT / "data/samples/swebench_sample.jsonl"),
                "checkouts": {"o/bare": str(tmp_path / "bare.git")},
            }
        ],
    )
    res = check_config(cfg)
    assert res.exit_code == 0, res.output
    assert not source_lines(res.output)
    assert "repos: bare, worktree, bundle, folder-url" in res.output
    # the mining of the bare clone works as check-config promised
    from distill_assets.mining.miner import mine_repository, open_repository

    config = load_config(cfg)
    repo = open_repository(config.repo("bare"), tmp_path / "cache")
    assert len(mine_repository(repo, config.repo("bare"), config.mining).commits) == 2


def test_check_config_one_line_per_failing_source_among_good_ones(tmp_path):
    small_repo(tmp_path / "good")
    (tmp_path / "plain").mkdir()
    cfg = write_config(
        tmp_path,
        [
            {"name": "good", "path": str(tmp_path / "good")},
            {"name": "plain", "path": str(tmp_path / "plain")},
            {"name": "gone", "url": str(tmp_path / "gone.bundle")},
        ],
        external=[
            {"kind": "commitpackft", "path": str(tmp_path / "missing.jsonl")},
            {
                "kind": "swebench",
                "path": str(PROJECT / "data/samples/swebench_sample.jsonl"),
                "checkouts": {"o/plain": str(tmp_path / "plain")},
            },
        ],
    )
    res = check_config(cfg)
    assert res.exit_code == 2
    lines = source_lines(res.output)
    assert lines == [
        f"source error: repository 'plain': not a git repository: {tmp_path / 'plain'}",
        f"source error: repository 'gone': url path does not exist: {tmp_path / 'gone.bundle'}",
        f"source error: sources.external[0] (commitpackft): path does not exist: {tmp_path / 'missing.jsonl'}",
        f"source error: sources.external[1] (swebench): checkout 'o/plain': not a git repository: {tmp_path / 'plain'}",
    ], res.output


def test_check_config_gives_up_on_a_remote_that_never_answers(tmp_path):
    server = socket.socket()  # accepts connections (the kernel's backlog) and never says a word
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    url = f"http://127.0.0.1:{server.getsockname()[1]}/x.git"
    try:
        res = check_config(write_config(tmp_path, [{"name": "silent", "url": url}]), "--timeout", "1")
    finally:
        server.close()
    assert res.exit_code == 2
    assert source_lines(res.output) == [f"source error: repository 'silent': unreachable: {url}: no answer within 1s"]


# --------------------------------------------------------------------------- demo: one line per failure


def test_demo_prints_one_line_for_a_failed_asset_and_keeps_the_trace_in_the_event_log(
    tmp_path, dagster_home, monkeypatch
):
    (tmp_path / "plain").mkdir()
    monkeypatch.setenv(
        "DISTILL_CONFIG", str(write_config(tmp_path, [{"name": "plain", "path": str(tmp_path / "plain")}]))
    )
    res = CliRunner().invoke(app, ["demo", "--select", "mined_commits"])
    assert res.exit_code == 1, res.output
    reason = f"repository 'plain': not a git repository: {tmp_path / 'plain'}"
    assert res.output.count(reason) == 1, res.output
    assert [ln.strip() for ln in res.output.splitlines() if "failed:" in ln] == [
        f"failed: mined_commits [plain]: {reason}"
    ]
    assert "Traceback" not in res.output and "Stack Trace" not in res.output and "dagster._core" not in res.output
    out = res.output.splitlines()
    failed_at = next(i for i, ln in enumerate(out) if "failed:" in ln)
    row = next(i for i, ln in enumerate(out) if ln.startswith("│ mined_commits"))  # the summary table follows
    assert row > failed_at and out[row].split("│")[4].strip() == "1"  # its "failed" column

    instance = dg.DagsterInstance.get()  # the demo's instance ($DAGSTER_HOME): the trace is kept there, for the UI
    try:
        failures = [
            r.event_log_entry
            for r in instance.get_records_for_run(instance.get_runs(limit=1)[0].run_id).records
            if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.is_step_failure
        ]
        assert len(failures) == 1
        error = failures[0].dagster_event.step_failure_data.error
        assert reason in error.message and "raise dg.Failure" in "".join(error.stack)
    finally:
        instance.dispose()


def test_report_run_one_line_per_failure_check_and_unreached_asset(tmp_path):
    """Dagster wraps step errors and repeats them on retries and in the run failure: each shows once."""

    @dg.asset
    def counted():
        return 1

    @dg.asset_check(asset=counted, blocking=True)
    def counted_positive(counted):
        return dg.AssetCheckResult(passed=False, description="3 rows are negative\nfirst: row 7")

    @dg.asset(deps=[counted])
    def after_check():
        return 2

    @dg.asset
    def chained():
        try:
            {}["region"]
        except KeyError as exc:
            raise ValueError("no region configured") from exc

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=2))
    def retried():
        raise dg.Failure(description="teacher said 401: the key is wrong", allow_retries=True)

    @dg.asset
    def downstream(chained):
        return chained

    defs = dg.Definitions(assets=[counted, after_check, chained, retried, downstream], asset_checks=[counted_positive])
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        )
        keys = [dg.AssetKey(k) for k in ("counted", "after_check", "chained", "retried", "downstream")]
        report = report_run(result, job, keys, None)
    assert sorted(report.lines) == sorted(
        [
            "  check failed (blocking): counted_positive on counted: 3 rows are negative | first: row 7",
            "  failed: chained: ValueError: no region configured (caused by KeyError: 'region')",
            "  failed: retried: teacher said 401: the key is wrong",
            "  skip after_check: not run (an upstream step or blocking check failed)",
            "  skip downstream: not run (an upstream step or blocking check failed)",
        ]
    )
    assert report.blocked == {dg.AssetKey("counted")} and report.materialized == {dg.AssetKey("counted")}


# --------------------------------------------------------------------------- partitions follow distill.yaml


def _partition_materialized(instance, partition: str) -> bool:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("mined_commits"), asset_partitions=[partition]), limit=1
    ).records
    return bool(records) and records[0].partition_key == partition


def test_materialize_all_removes_the_partition_of_a_removed_repository_and_keeps_its_history(
    tmp_path, dagster_home, monkeypatch
):
    small_repo(tmp_path / "alpha")
    small_repo(tmp_path / "beta")
    both = write_config(
        tmp_path, [{"name": "alpha", "path": str(tmp_path / "alpha")}, {"name": "beta", "path": str(tmp_path / "beta")}]
    )
    monkeypatch.setenv("DISTILL_CONFIG", str(both))
    with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
        logs: list[str] = []
        summary = materialize_all(load_config(), instance=instance, log=logs.append, select="mined_commits")
        assert [(s.partitions, s.ok) for s in summary] == [(2, 2)], logs

        write_config(tmp_path, [{"name": "beta", "path": str(tmp_path / "beta")}])
        logs.clear()
        summary = materialize_all(load_config(), instance=instance, log=logs.append, select="mined_commits")
        assert instance.get_dynamic_partitions(REPO_PARTITIONS_NAME) == ["beta"]
        assert [(s.partitions, s.ok, s.failed) for s in summary] == [(1, 1, 0)], logs
        assert any(ln.startswith("remove partition alpha:") for ln in logs), logs
        assert not any("[alpha]" in ln for ln in logs), logs
        assert _partition_materialized(instance, "alpha")  # its history is still in the event log


def test_sensor_deletes_partitions_of_removed_repositories_and_mines_a_readded_one_again(
    tmp_path, monkeypatch, dagster_home
):
    small_repo(tmp_path / "alpha")
    small_repo(tmp_path / "beta")
    alpha = {"name": "alpha", "path": str(tmp_path / "alpha")}
    beta = {"name": "beta", "path": str(tmp_path / "beta")}
    monkeypatch.setenv("DISTILL_CONFIG", str(write_config(tmp_path, [alpha, beta])))

    def tick(instance, cursor):
        result = source_repos_sync(dg.build_sensor_context(instance=instance, cursor=cursor))
        if isinstance(result, dg.SensorResult):  # what the daemon does with the requests
            for req in result.dynamic_partitions_requests:
                if isinstance(req, dg.DeleteDynamicPartitionsRequest):
                    for key in req.partition_keys:
                        instance.delete_dynamic_partition(req.partitions_def_name, key)
                else:
                    instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        return result

    with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
        first = tick(instance, None)
        assert [r.run_key for r in first.run_requests] == ["mine-alpha", "mine-beta"]
        materialize_all(load_config(), instance=instance, log=lambda m: None, select="mined_commits")
        assert _partition_materialized(instance, "alpha")
        skip = tick(instance, first.cursor)
        assert isinstance(skip, dg.SkipReason)
        assert skip.skip_message == (
            "the partitions match distill.yaml: 2 configured repositories (alpha, beta), none to add or remove"
        )

        write_config(tmp_path, [beta])
        removal = tick(instance, first.cursor)
        assert not removal.run_requests
        [delete] = removal.dynamic_partitions_requests
        assert isinstance(delete, dg.DeleteDynamicPartitionsRequest) and list(delete.partition_keys) == ["alpha"]
        assert instance.get_dynamic_partitions(REPO_PARTITIONS_NAME) == ["beta"]
        assert _partition_materialized(instance, "alpha")  # history kept after the delete
        assert isinstance(tick(instance, removal.cursor), dg.SkipReason)

        write_config(tmp_path, [beta, alpha])  # listed again: a new partition and a new run key, so it is mined
        readded = tick(instance, removal.cursor)
        assert [r.run_key for r in readded.run_requests] == ["mine-alpha-1"]
        assert sorted(instance.get_dynamic_partitions(REPO_PARTITIONS_NAME)) == ["alpha", "beta"]


# --------------------------------------------------------------------------- --select by group


def test_select_resolves_groups_and_globs():
    from distill_assets.definitions import defs

    graph = defs().resolve_asset_graph()
    sources = [k.to_user_string() for k in select_asset_keys(graph, "sources")]
    assert sources[0] in ("mined_commits", "external_tasks") and "reference_plans" in sources
    assert all(graph.get(dg.AssetKey(k)).group_name == "sources" for k in sources)
    assert [k.to_user_string() for k in select_asset_keys(graph, "group:sources")] == sources
    assert set(select_asset_keys(graph, "group:sour*")) == set(select_asset_keys(graph, "sources"))
    assert [k.to_user_string() for k in select_asset_keys(graph, "mined_*")] == ["mined_commits"]
    with pytest.raises(SelectionError, match="groups: .*sources.*teachers"):
        select_asset_keys(graph, "group:nope")


def test_demo_select_by_group_name_runs_that_group(tmp_path, dagster_home, monkeypatch):
    small_repo(tmp_path / "alpha")
    monkeypatch.setenv(
        "DISTILL_CONFIG", str(write_config(tmp_path, [{"name": "alpha", "path": str(tmp_path / "alpha")}]))
    )
    res = CliRunner().invoke(app, ["demo", "--select", "sources"])
    assert res.exit_code == 0, res.output
    ran = [ln for ln in res.output.splitlines() if ln.startswith("materialize ")]
    assert "materialize mined_commits [alpha]" in ran and any("reference_plans" in ln for ln in ran), res.output
    assert not any(w in ln for ln in ran for w in ("stage_prompts", "teacher_outputs")), res.output


def test_demo_select_unknown_name_exits_2_listing_the_groups_and_runs_nothing(tmp_path, dagster_home, monkeypatch):
    small_repo(tmp_path / "alpha")
    monkeypatch.setenv(
        "DISTILL_CONFIG", str(write_config(tmp_path, [{"name": "alpha", "path": str(tmp_path / "alpha")}]))
    )
    res = CliRunner().invoke(app, ["demo", "--select", "sauces"])
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "'sauces' matches no asset key and no asset group" in errors[0]
    assert "groups: evaluation, export, feedback, scoring, sources, teachers, training" in errors[0]
    instance = dg.DagsterInstance.get()
    try:
        assert not instance.get_runs() and not instance.get_dynamic_partitions(REPO_PARTITIONS_NAME)
    finally:
        instance.dispose()


@pytest.mark.parametrize(
    "text,message",
    [
        ("version: 1\nteachers: [\n", "not valid YAML"),
        ("version: 1\nteachers: 7\n", "teachers"),
    ],
)
def test_a_broken_config_is_one_clear_error_where_the_definitions_load_and_in_the_cli(
    tmp_path, dagster_home, text, message
):
    """The code location (what the UI and `dagster definitions validate` load) and the CLI both name the file
    and the problem, without an import trace through the asset modules."""
    bad = tmp_path / "distill.yaml"
    bad.write_text(text)
    env = {**os.environ, "DISTILL_CONFIG": str(bad), "DAGSTER_HOME": str(dagster_home)}
    cmd = [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "distill_assets.definitions"]
    res = subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert f"ConfigError: distill_assets cannot load its definitions: {bad}" in out and message in out
    assert "partitions.py" not in out and "assets.py" not in out  # no trace through the modules
    cli = check_config(bad)
    assert cli.exit_code == 2 and cli.output.startswith("config error:") and str(bad) in cli.output

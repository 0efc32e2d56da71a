"""The Docker deployment for real: docker/build-images.sh builds the code-location and Postgres images with
no registry, docker/compose.yaml starts Postgres, the code location (gRPC), the webserver and the daemon,
a materialization submitted to the webserver is queued, dequeued by the daemon and launched by the
DockerRunLauncher as a container of the code-location image, and its events are read back from the
webserver and straight from Postgres."""

import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid

import pytest

from distill_assets_tests.conftest import PROJECT
from distill_assets_tests.test_webserver import free_port

CODE_IMAGE = "distill-assets:latest"
PG_IMAGE = "distill-postgres:15"
ASSET = "external_tasks"


def _compose_cmd() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed (scripts/setup-system.sh installs it)")


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    out = json.loads(urllib.request.urlopen(req, timeout=30).read())
    assert "errors" not in out, out["errors"]
    return out["data"]


REPOS = """{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name location { name } } }
            ... on PythonError { message } } }"""
LAUNCH = """mutation($p: ExecutionParams!) { launchPipelineExecution(executionParams: $p) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message stack }
  ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
RUN = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status tags { key value } } } }"""
POOLS = """{ instance { concurrencyLimits { concurrencyKey slotCount } } }"""
LOGS = """query($id: ID!) { logsForRun(runId: $id) { __typename ... on EventConnection { events { __typename
  ... on MessageEvent { message } ... on MaterializationEvent { assetKey { path } } } } } }"""


@pytest.mark.slow
def test_compose_deployment_runs_a_materialization_in_a_container_against_postgres():
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.fail("no Docker daemon (make test starts one with scripts/start-dockerd.sh)")
    built = subprocess.run(["bash", "docker/build-images.sh", "all"], cwd=PROJECT, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]

    tag = "distilltest" + uuid.uuid4().hex[:8]
    port = free_port()
    env = {
        "COMPOSE_PROJECT_NAME": tag,
        "DISTILL_NETWORK": f"{tag}_net",
        "DISTILL_DATA_VOLUME": f"{tag}_data",
        "DAGSTER_WEBSERVER_PORT": str(port),
        "DAGSTER_CODE_IMAGE": CODE_IMAGE,
        "POSTGRES_IMAGE": PG_IMAGE,
        "DAGSTER_POSTGRES_PASSWORD": uuid.uuid4().hex,
    }
    full_env = {**os.environ, **env}
    compose = [*_compose_cmd(), "-f", str(PROJECT / "docker" / "compose.yaml")]

    def dc(*args, check=True, timeout=600):
        r = subprocess.run([*compose, *args], env=full_env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, f"{args}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
        return r

    run_container = None
    try:
        dc("up", "-d")
        # the webserver answers once it has loaded the code location over gRPC
        deadline, repo = time.time() + 300, None
        while time.time() < deadline and repo is None:
            try:
                data = _graphql(port, REPOS)["repositoriesOrError"]
                nodes = data.get("nodes") or []
                repo = next((n for n in nodes if n["location"]["name"] == "distill_assets"), None)
            except (OSError, AssertionError, ValueError):
                pass
            if repo is None:
                time.sleep(2)
        assert repo, (
            "the webserver never loaded the distill_assets code location:\n" + dc("logs", check=False).stdout[-4000:]
        )

        # the daemon set the project's pools in Postgres before it started
        deadline, limits = time.time() + 120, {}
        while time.time() < deadline and "gpu" not in limits:
            limits = {
                c["concurrencyKey"]: c["slotCount"] for c in _graphql(port, POOLS)["instance"]["concurrencyLimits"]
            }
            time.sleep(0 if "gpu" in limits else 2)
        assert limits.get("gpu") == 1 and limits.get("teacher_api") == 8, limits

        params = {
            "selector": {
                "repositoryLocationName": "distill_assets",
                "repositoryName": repo["name"],
                "pipelineName": "__ASSET_JOB",
                "assetSelection": [{"path": [ASSET]}],
            },
            "mode": "default",
            "runConfigData": {},
        }
        launched = _graphql(port, LAUNCH, {"p": params})["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]

        # QUEUED -> the daemon dequeues -> the DockerRunLauncher starts a container -> SUCCESS
        deadline, status, tags = time.time() + 600, None, {}
        while time.time() < deadline:
            run = _graphql(port, RUN, {"id": run_id})["runOrError"]
            status, tags = run["status"], {t["key"]: t["value"] for t in run["tags"]}
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(3)
        run_container = tags.get("docker/container_id")
        diag = dc("logs", "daemon", check=False).stdout[-4000:]
        if run_container:
            diag += subprocess.run(["docker", "logs", run_container], capture_output=True, text=True).stderr[-4000:]
        assert status == "SUCCESS", f"run {run_id} ended {status}\n{diag}"

        # the run executed in its own container, made from the code-location image
        assert run_container, tags
        assert tags.get("dagster/image") == CODE_IMAGE
        inspect = json.loads(
            subprocess.run(["docker", "inspect", run_container], capture_output=True, text=True, check=True).stdout
        )[0]
        assert inspect["Config"]["Image"] == CODE_IMAGE
        assert f"{tag}_net" in inspect["NetworkSettings"]["Networks"]
        assert run_id in " ".join(inspect["Config"]["Cmd"])  # `dagster api execute_run` for this run

        # events back through the webserver ...
        events = _graphql(port, LOGS, {"id": run_id})["logsForRun"]["events"]
        kinds = [e["__typename"] for e in events]
        assert "RunSuccessEvent" in kinds and "RunStartEvent" in kinds
        assert [e["assetKey"]["path"] for e in events if e["__typename"] == "MaterializationEvent"] == [[ASSET]]
        # ... and from Postgres itself
        sql = (
            f"select dagster_event_type, count(*) from event_logs where run_id = '{run_id}' "
            "and dagster_event_type is not null group by 1 order by 1"
        )
        rows = dc("exec", "-T", "postgres", "psql", "-U", "dagster", "-d", "dagster", "-tA", "-c", sql).stdout
        counts = dict(line.split("|") for line in rows.split())
        assert counts.get("ASSET_MATERIALIZATION") == "1", counts
        assert counts.get("STEP_SUCCESS") == "1", counts
        assert (counts.get("PIPELINE_SUCCESS") or counts.get("RUN_SUCCESS")) == "1", counts  # stored under its old name
        # the table landed in the shared data volume, where the next run's container (and the webserver,
        # for compute logs) finds it
        found = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "-v",
                f"{tag}_data:/data:ro",
                "distill-sandbox:bookworm",
                "sh",
                "-c",
                f"find /data/storage -path '*{ASSET}*' -type f -size +0",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert found, "no materialized table in the data volume"
    finally:
        # run containers are not compose's: remove every container on the test network (the daemon may have
        # launched more runs, e.g. eager automation) before the network and volumes go
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"network={tag}_net"], capture_output=True, text=True
        ).stdout.split()
        if run_container:
            ids.append(run_container)
        if ids:
            subprocess.run(["docker", "rm", "-f", *set(ids)], capture_output=True)
        dc("down", "-v", "--remove-orphans", check=False)
        subprocess.run(["docker", "volume", "rm", "-f", f"{tag}_data"], capture_output=True)

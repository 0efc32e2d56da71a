"""The code location loads in the real Dagster webserver (what `make ui` serves)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from distill_assets_tests.conftest import PROJECT

QUERY = """{ assetNodes { assetKey { path } isPartitioned partitionDefinition { type name }
             hasAssetChecks assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_webserver_serves_the_asset_graph(dagster_home):
    port = free_port()
    webserver = Path(sys.executable).parent / "dagster-webserver"
    proc = subprocess.Popen(
        [str(webserver), "-h", "127.0.0.1", "-p", str(port), "-w", str(PROJECT / "workspace.yaml")],
        cwd=PROJECT,
        env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        data = None
        while time.time() < deadline:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=json.dumps({"query": QUERY}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                data = json.loads(urllib.request.urlopen(req, timeout=10).read())
                if data.get("data", {}).get("assetNodes"):
                    break
            except OSError:
                pass
            time.sleep(1)
        assert data and data.get("data"), data
        nodes = {"/".join(n["assetKey"]["path"]): n for n in data["data"]["assetNodes"]}
        assert {"mined_commits", "external_tasks", "change_tasks", "task_contexts", "reference_plans"} <= set(nodes)
        assert nodes["mined_commits"]["isPartitioned"]
        assert nodes["mined_commits"]["partitionDefinition"]["name"] == "source_repos"
        checks = {c["name"]: c["blocking"] for c in nodes["reference_plans"]["assetChecksOrError"]["checks"]}
        assert checks == {"reference_plans_valid": True}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

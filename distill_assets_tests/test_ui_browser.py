"""The Dagster web UI in a real headless browser: the asset graph and partitions are shown, a
materialization and a backfill launched by clicking in the UI run to success.

Real processes only: `dagster-webserver` and `dagster-daemon run` (the queued run coordinator and the
backfill loop live in the daemon) on this project's workspace.yaml with a fresh DAGSTER_HOME, Debian's
`chromium` driven through `chromium-driver` by Selenium. The project's sensors are stopped before the
daemon starts, so the only runs are the ones this test asks for.

Screenshots are kept under $DISTILL_TEST_ARTIFACTS/ui (default: test-artifacts/ui in the repository);
on a failure the page's screenshot, its text and the webserver and daemon logs are written there too.
"""

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from distill_assets.config import STAGE_ORDER, load_config
from distill_assets_tests.conftest import PROJECT, write_config
from distill_assets_tests.test_webserver import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LOCATION = {"repositoryLocationName": "distill_assets", "repositoryName": "__repository__"}
STAGES = list(STAGE_ORDER)  # stage_prompts' partition keys
SOURCES = ["mined_commits", "external_tasks", "change_tasks", "task_contexts", "reference_plans"]
RUN_TIMEOUT = 180
BACKFILL_TIMEOUT = 300
SCREENSHOTS = [
    "1-sources-graph.png",
    "2-teachers-graph.png",
    "3-stage-prompts-partitions.png",
    "4-mined-commits-run.png",
    "5-mined-commits-partitions.png",
    "6-backfill.png",
    "7-stage-prompts-materialized.png",
]


def artifacts_dir() -> Path:
    d = Path(os.environ.get("DISTILL_TEST_ARTIFACTS") or PROJECT / "test-artifacts") / "ui"
    d.mkdir(parents=True, exist_ok=True)
    return d


class GraphQL:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/graphql"

    def __call__(self, query: str, variables: dict | None = None) -> dict:
        req = urllib.request.Request(
            self.url,
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        out = json.loads(urllib.request.urlopen(req, timeout=30).read())
        assert not out.get("errors"), out["errors"]
        return out["data"]


SENSORS = """{ repositoriesOrError { __typename ... on RepositoryConnection {
  nodes { name location { name } sensors { name sensorState { id status } } } } } }"""
STOP_SENSOR = """mutation($id: String) { stopSensor(id: $id) { __typename
  ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }"""
ADD_PARTITION = """mutation($repo: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $name, partitionKey: $key) {
    __typename ... on PythonError { message } ... on UnauthorizedError { message } } }"""
LAUNCH_RUN = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on InvalidSubsetError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""
RUNS = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { __typename
  ... on Runs { results { runId status assetSelection { path } tags { key value } } } } }"""
RUN = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { runId status } } }"""
BACKFILLS = """{ partitionBackfillsOrError { __typename ... on PartitionBackfills { results { id } } } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { id status numPartitions partitionNames assetSelection { path }
                             runs { runId status tags { key value } } error { message } }
  ... on PythonError { message } } }"""
TERMINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
TERMINAL_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def wait_for(what: str, fn, timeout: float, interval: float = 1.0):
    """fn() until it returns something truthy (then that), or fail after ``timeout`` seconds."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, ValueError, AssertionError) as exc:  # not up yet / a transient GraphQL error
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:  # a file, not a pipe: nobody reads a pipe while the test runs
        return subprocess.Popen(cmd, cwd=PROJECT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen | None) -> None:
    """SIGTERM the process group (the server and its code servers / run workers), SIGKILL after 20 s."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_leftovers(marker: str) -> list[int]:
    """SIGKILL any process still carrying this test's DAGSTER_HOME (a run worker that left its group)."""
    killed = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            env = (p / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"DAGSTER_HOME={marker}".encode() in env:
            try:
                os.kill(int(p.name), signal.SIGKILL)
                killed.append(int(p.name))
            except OSError:
                pass
    return killed


class Browser:
    """Headless chromium through chromedriver; elements found by their visible text."""

    def __init__(self, base_url: str, shots: Path, profile: Path):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1600,1000",
            f"--user-data-dir={profile}",
            "--no-first-run",
        ):
            opts.add_argument(arg)
        # own session: chromedriver and every chromium process it starts form one group, killed at the end
        self.service = Service(executable_path=CHROMEDRIVER, popen_kw={"start_new_session": True})
        self.driver = webdriver.Chrome(service=self.service, options=opts)
        self.driver.set_page_load_timeout(120)
        self.base_url, self.shots = base_url, shots

    def quit(self) -> None:
        pgid = self.service.process.pid if getattr(self.service, "process", None) else None
        try:
            self.driver.quit()
        finally:
            if pgid:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # ---------------------------------------------------------------- reading
    def text(self) -> str:
        from selenium.webdriver.common.by import By

        try:
            return self.driver.find_element(By.TAG_NAME, "body").text
        except Exception:  # noqa: BLE001 - diagnostics only
            return ""

    def wait_text(self, *needles: str, timeout: float = 90) -> str:
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(
                lambda d: all(n in self.text() for n in needles)
            )
        except Exception as exc:  # TimeoutException
            missing = [n for n in needles if n not in self.text()]
            raise AssertionError(f"{self.driver.current_url}: not shown after {timeout:.0f}s: {missing}") from exc
        return self.text()

    def seen(self, needle: str, timeout: float = 15) -> str | None:
        """The page's text once it shows ``needle`` (a toast, which fades), or None."""
        try:
            return self.wait_text(needle, timeout=timeout)
        except AssertionError:
            return None

    def open(self, path: str, *needles: str, timeout: float = 90) -> str:
        self.driver.get(self.base_url + path)
        text = self.wait_text(*needles, timeout=timeout)
        self.dismiss_community_modal()
        return text

    def dismiss_community_modal(self) -> None:
        """The first visit shows a 'Join the Dagster community' dialog over the page: skip it."""
        from selenium.webdriver.common.by import By

        for b in self.driver.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
            if b.is_displayed():
                b.click()
                time.sleep(0.5)

    # ---------------------------------------------------------------- acting
    def click(self, xpath: str, what: str, timeout: float = 60) -> None:
        from selenium.common.exceptions import ElementClickInterceptedException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            el = WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(
                EC.element_to_be_clickable((By.XPATH, xpath))
            )
        except Exception as exc:
            raise AssertionError(f"{self.driver.current_url}: no clickable {what} after {timeout:.0f}s") from exc
        try:
            el.click()
        except ElementClickInterceptedException:  # a dialog that opened late (the community prompt) covers it
            self.dismiss_community_modal()
            el.click()

    def click_button(self, label: str, *, prefix: bool = False, in_dialog: bool = False, timeout: float = 60) -> None:
        test = f"starts-with(normalize-space(), '{label}')" if prefix else f"normalize-space()='{label}'"
        scope = "//*[@role='dialog' and @aria-modal='true']" if in_dialog else ""
        self.click(f"{scope}//button[{test} and not(@disabled)]", f"button {label!r}", timeout)

    def screenshot(self, name: str) -> Path:
        path = self.shots / name
        assert self.driver.save_screenshot(str(path)), f"could not save {path}"
        return path


def sensor_states(gql: GraphQL) -> dict[str, dict]:
    data = gql(SENSORS)["repositoriesOrError"]
    assert data["__typename"] == "RepositoryConnection" and data["nodes"], data
    return {s["name"]: s["sensorState"] for n in data["nodes"] for s in n["sensors"]}


def runs_of(gql: GraphQL, asset: str, partition: str | None = None) -> list[dict]:
    tags = [{"key": "dagster/partition", "value": partition}] if partition else None
    data = gql(RUNS, {"tags": tags})["runsOrError"]
    assert data["__typename"] == "Runs", data
    return [r for r in data["results"] if [asset] in [a["path"] for a in r["assetSelection"] or []]]


def wait_run(gql: GraphQL, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
    def done():
        run = gql(RUN, {"id": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        return run["status"] if run["status"] in TERMINAL_RUN else None

    return wait_for(f"run {run_id}", done, timeout)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ui_shows_the_graph_and_launches_a_run_and_a_backfill(shop_repo, tmp_path, dagster_home):
    started = time.time()
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: install Debian's browser and its driver "
            "(apt-get install -y chromium chromium-driver)",
            pytrace=False,
        )
    if importlib.util.find_spec("selenium") is None:
        pytest.fail("selenium is not installed in this environment (pip install selenium)", pytrace=False)

    shots = artifacts_dir()
    for name in [*SCREENSHOTS, "failure.png", "failure.txt", "webserver.log", "daemon.log"]:
        (shots / name).unlink(missing_ok=True)

    cfg = write_config(tmp_path, [{"name": "shop", "path": str(shop_repo.path), "branch": "main"}])
    n_teachers = len(load_config(cfg).teachers)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "DISTILL_CONFIG": str(cfg)}
    for var in ("DASHSCOPE_API_KEY", "DEEPSEEK_API_KEY", "DEEPINFRA_API_KEY"):
        env.pop(var, None)
    bin_dir = Path(sys.executable).parent
    port = free_port()
    gql = GraphQL(port)
    web_log, daemon_log = tmp_path / "webserver.log", tmp_path / "daemon.log"
    webserver = daemon = browser = None
    try:
        webserver = start(
            [
                str(bin_dir / "dagster-webserver"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                str(PROJECT / "workspace.yaml"),
            ],
            env,
            web_log,
        )
        sensors = wait_for("the webserver to load the code location", lambda: sensor_states(gql), 180)

        # The project's sensors start RUNNING by default (repository sync, new commits, automation): stop them
        # before the daemon starts, so that nothing but this test launches runs.
        for name, state in sensors.items():
            res = gql(STOP_SENSOR, {"id": state["id"]})["stopSensor"]
            assert res["__typename"] == "StopSensorMutationResult", (name, res)
        assert {s["status"] for s in sensor_states(gql).values()} == {"STOPPED"}
        # the repository's partition (what the source_repos_sync sensor would add)
        res = gql(ADD_PARTITION, {"repo": LOCATION, "name": "source_repos", "key": "shop"})["addDynamicPartition"]
        assert res["__typename"] == "AddDynamicPartitionSuccess", res
        daemon = start([str(bin_dir / "dagster-daemon"), "run", "-w", str(PROJECT / "workspace.yaml")], env, daemon_log)

        browser = Browser(f"http://127.0.0.1:{port}", shots, tmp_path / "chromium-profile")
        step = "start"
        try:
            # ---- 1. the asset graph and the partitions
            step = "asset graph"
            browser.open("/locations/distill_assets/asset-groups/sources", *SOURCES)
            # the graph's nodes: every source asset, and the repository partition (none materialized yet)
            text = browser.wait_text(*SOURCES, "1 partition", "0% filled")
            assert "Never materialized" in text
            browser.screenshot(SCREENSHOTS[0])
            # stage_prompts: one partition per stage; teacher_outputs: one per stage x teacher
            browser.open(
                "/locations/distill_assets/asset-groups/teachers",
                "stage_prompts",
                f"{len(STAGES)} partitions",
                "teacher_outputs",
                f"{len(STAGES) * n_teachers} partitions",
            )
            browser.screenshot(SCREENSHOTS[1])

            step = "stage partitions"
            browser.open(
                "/assets/stage_prompts?view=partitions", *STAGES, f"Missing ({len(STAGES)})", "Materialized (0)"
            )
            browser.screenshot(SCREENSHOTS[2])

            # ---- 2. materialize the repository's mining partition by clicking
            step = "materialize mined_commits[shop]"
            browser.open("/assets/mined_commits", "mined_commits", "Never materialized")
            browser.click_button("Materialize", prefix=True)
            browser.wait_text("Launch runs to materialize mined_commits")
            browser.click("//*[normalize-space()='Select a partition or create one']", "the partition picker")
            browser.click(
                "//*[@role='dialog' or @role='listbox' or @role='menu']//*[normalize-space()='shop']",
                "partition 'shop' in the picker",
            )
            browser.wait_text("1 partition")
            browser.click_button("Launch 1 run", in_dialog=True)
            toast = browser.seen("Launched run")
            runs = wait_for("the mined_commits run", lambda: runs_of(gql, "mined_commits", "shop"), 30)
            assert len(runs) == 1, runs
            run_id = runs[0]["runId"]
            # the UI's toast names the run (it fades after a few seconds: the run above is what counts)
            assert toast is None or re.search(rf"Launched run\s+{run_id[:8]}", toast), toast
            assert wait_run(gql, run_id) == "SUCCESS", f"mined_commits[shop] run {run_id} did not succeed"
            browser.open(f"/runs/{run_id}", "Success", "mined_commits")
            browser.screenshot(SCREENSHOTS[3])
            browser.open("/assets/mined_commits?view=partitions", "shop", "Materialized (1)", "Missing (0)")
            browser.screenshot(SCREENSHOTS[4])

            # ---- 3. the rest of the sources: one run through GraphQL (the UI's own API)
            step = "materialize the sources"
            sel = {
                **LOCATION,
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": [k]} for k in SOURCES if k != "mined_commits"],
            }
            res = gql(LAUNCH_RUN, {"p": {"selector": sel, "mode": "default"}})["launchRun"]
            assert res["__typename"] == "LaunchRunSuccess", res
            sources_run = res["run"]["runId"]
            assert wait_run(gql, sources_run) == "SUCCESS", f"sources run {sources_run} did not succeed"

            # ---- 4. a backfill of every stage partition of stage_prompts, launched by clicking
            step = "backfill stage_prompts"
            before = {b["id"] for b in gql(BACKFILLS)["partitionBackfillsOrError"]["results"]}
            browser.open("/assets/stage_prompts?view=partitions", "stage_prompts", f"Missing ({len(STAGES)})")
            browser.click_button("Materialize", prefix=True)
            browser.wait_text("Launch runs to materialize stage_prompts")
            browser.click_button("All", in_dialog=True)
            browser.wait_text(f"{len(STAGES)} partitions")
            browser.click_button("Launch backfill", in_dialog=True)
            toast = browser.seen("Created backfill")
            new = wait_for(
                "the new backfill",
                lambda: [
                    b["id"] for b in gql(BACKFILLS)["partitionBackfillsOrError"]["results"] if b["id"] not in before
                ],
                30,
            )
            assert len(new) == 1, new
            backfill_id = new[0]
            assert toast is None or re.search(rf"Created backfill\s+{backfill_id}", toast), toast

            def backfill_done():
                b = gql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
                assert b["__typename"] == "PartitionBackfill", b
                return b if b["status"] in TERMINAL_BACKFILL else None

            b = wait_for(f"backfill {backfill_id}", backfill_done, BACKFILL_TIMEOUT, interval=2)
            assert b["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), b
            assert b["numPartitions"] == len(STAGES) and sorted(b["partitionNames"]) == sorted(STAGES), b
            assert [a["path"] for a in b["assetSelection"]] == [["stage_prompts"]], b
            assert len(b["runs"]) == len(STAGES) and {r["status"] for r in b["runs"]} == {"SUCCESS"}, b["runs"]
            partitions = {t["value"] for r in b["runs"] for t in r["tags"] if t["key"] == "dagster/partition"}
            assert partitions == set(STAGES), partitions
            for stage in STAGES:  # written by the IO manager, one table per partition
                assert (dagster_home / "storage" / "tables" / "stage_prompts" / f"{stage}.parquet").stat().st_size > 0

            browser.open(f"/runs/b/{backfill_id}", "Succeeded", "stage_prompts", "100% completed")
            browser.screenshot(SCREENSHOTS[5])
            browser.open(
                "/assets/stage_prompts?view=partitions", *STAGES, f"Materialized ({len(STAGES)})", "Missing (0)"
            )
            browser.screenshot(SCREENSHOTS[6])
        except BaseException as exc:
            # what the browser showed, and both servers' logs, next to the screenshots
            try:
                browser.screenshot("failure.png")
            except Exception:  # noqa: BLE001
                pass
            try:
                url = browser.driver.current_url
            except Exception:  # noqa: BLE001
                url = "?"
            (shots / "failure.txt").write_text(f"step: {step}\nurl: {url}\nerror: {exc!r}\n\n{browser.text()}\n")
            for log in (web_log, daemon_log):
                if log.exists():
                    shutil.copy(log, shots / log.name)
            raise AssertionError(
                f"UI step {step!r} failed: {exc}\n(screenshot, page text and logs in {shots})\n"
                f"--- page text ---\n{browser.text()[-3000:]}"
            ) from exc
    finally:
        if browser is not None:
            browser.quit()
        stop(daemon)
        stop(webserver)
        kill_leftovers(str(dagster_home))

    for name in SCREENSHOTS:
        png = shots / name
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert png.stat().st_size > 20_000, f"{png} is only {png.stat().st_size} bytes"
    print(f"UI screenshots in {shots}; the test took {time.time() - started:.0f}s")

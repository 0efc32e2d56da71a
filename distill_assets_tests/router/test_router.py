"""The inference pipeline on a real repository: five stages, five adapters on one llama.cpp model
switched without reloading, a plan object, a diff attempt, and logs in SQLite and a real Postgres."""

import subprocess
from pathlib import Path

import pytest

from distill_assets.config import STAGE_ORDER, load_config
from distill_assets.plans.schema import Plan
from distill_assets.router.engine import RouterError, StageEngine, StringCap
from distill_assets.router.logstore import LogStore
from distill_assets.router.pipeline import StageAdapter, check_repo, route_task
from distill_assets_tests.conftest import PROJECT


class MultiLog:
    """Writes every record to several stores (a local SQLite file and a central Postgres here)."""

    def __init__(self, *stores: LogStore):
        self.stores = stores

    def record_query(self, **row) -> None:
        for s in self.stores:
            s.record_query(**dict(row))

    def record_outcome(self, run_id: str, **row) -> None:
        for s in self.stores:
            s.record_outcome(run_id, **dict(row))


TASK = "Add a discount parameter to the cart total and apply it at checkout"


@pytest.fixture
def demo_repo(tmp_path) -> Path:
    repo = tmp_path / "demo-shop"
    subprocess.run(["git", "clone", "-q", str(PROJECT / "data/repos/demo-shop.bundle"), str(repo)], check=True)
    return repo


def _adapters(stage_ggufs) -> dict[str, StageAdapter]:
    return {s: StageAdapter(s, b, a, sha) for s, (b, a, sha) in stage_ggufs.items()}


def _cfg():
    cfg = load_config(PROJECT / "data" / "distill.yaml")
    router = cfg.router.model_copy(
        update={
            "n_ctx": 4096,
            "max_output_tokens": 700,
            "max_string_chars": 80,
            "prompt_token_budget": 1500,
            "n_threads": 2,
        }
    )
    return cfg.model_copy(update={"router": router})


def test_router_runs_five_stages_on_one_model_and_logs_everywhere(demo_repo, stage_ggufs, tmp_path, postgres_url):
    sqlite, pg = LogStore(f"sqlite:///{tmp_path / 'logs.sqlite'}"), LogStore(postgres_url)
    engine = StageEngine(n_ctx=4096, n_threads=2)
    try:
        cfg = _cfg()
        adapters = _adapters(stage_ggufs)
        # the gate promoted nothing for stage 1: the base student answers it, on the same loaded model
        adapters["task_analysis"] = StageAdapter("task_analysis", adapters["task_analysis"].base_gguf, None, "")
        res = route_task(
            demo_repo,
            TASK,
            adapters,
            cfg,
            engine=engine,
            log=MultiLog(sqlite, pg),
            test_commands=cfg.sandbox.test_commands["demo-shop"],
        )
        assert len(engine.bases) == 1 and len(engine.adapters) == 4  # one model, every adapter loaded once
        assert engine.switches == 4  # one switch per adapter stage, no reload
    finally:
        engine.close()
    assert set(res.outputs) == set(STAGE_ORDER)
    assert "shop/cart.py" in res.candidates
    assert res.plan_json is not None, res.errors  # schema-constrained decoding gives a plan object
    plan = Plan.model_validate_json(res.plan_json)
    assert plan.affected_files and all(f.path for f in plan.affected_files)
    assert res.diff is not None, res.errors  # a diff attempt; whether it applies is recorded, not assumed
    for store in (sqlite, pg):
        rows = store.queries(res.run_id)
        assert [r["stage"] for r in rows] == list(STAGE_ORDER)
        assert all(r["latency_ms"] > 0 and r["tokens_out"] > 0 for r in rows)
        assert [r["adapter_sha256"] for r in rows] == ["base"] + [stage_ggufs[s][2] for s in STAGE_ORDER[1:]]
        plan_row = rows[STAGE_ORDER.index("plan_generation")]
        # stage 4 answers in the format the student was trained on: [REASONING] ... [PLAN] {plan}
        assert plan_row["parsed_ok"] and plan_row["output"].startswith("[REASONING] ")
        reasoning = plan_row["output"].split("[PLAN]")[0][len("[REASONING] ") :].strip()
        code_prompt = rows[-1]["prompt"]
        assert "[REASONING]" not in code_prompt and reasoning not in code_prompt  # the CoT never reaches stage 5
        outcome = [o for o in store.outcomes() if o["run_id"] == res.run_id]
        assert len(outcome) == 1 and outcome[0]["diff_applied"] is res.diff_applied
        # tests run only on a diff that applies; otherwise the outcome says "unknown", not "failed"
        assert (res.tests is not None) is res.diff_applied
        assert outcome[0]["tests_passed"] is res.tests_passed
    pg.record_outcome(res.run_id, tests_passed=False)
    assert [o["tests_passed"] for o in pg.outcomes() if o["run_id"] == res.run_id] == [False]
    sqlite.close()
    pg.close()


def test_repo_tests_run_on_a_diff_in_the_sandbox(demo_repo):
    """The outcome step on a real commit: its gold diff passes the repository's tests, a broken one fails."""
    cfg = _cfg()
    git = lambda *a: (
        subprocess.run(
            ["git", "-C", str(demo_repo), *a],
            check=True,
            capture_output=True,  # noqa: E731
            text=True,
        ).stdout
    )
    commit = git("log", "--format=%H", "-1", "--grep", "Format negative amounts").strip()
    parent = git("rev-parse", f"{commit}^").strip()
    git("reset", "-q", "--hard", parent)
    gold = git("diff", parent, commit)
    commands = cfg.sandbox.test_commands["demo-shop"]
    from distill_assets.router.pipeline import run_repo_tests

    ok = run_repo_tests(demo_repo, check_repo(demo_repo), gold, commands, cfg)
    assert ok.status == "passed" and ok.pass_rate == 1.0 and len(ok.selected) > 20, ok.log[-2000:]
    assert any(t.startswith("web/test/") for t in ok.tests) and any(t.startswith("tests/test_") for t in ok.tests), (
        sorted(ok.tests)
    )
    # the same change without its code part: the new tests fail
    only_tests = "".join(
        sec
        for path, sec in __import__("distill_assets.sandbox.runner", fromlist=["x"]).split_patch(gold)
        if "test" in path
    )
    bad = run_repo_tests(demo_repo, check_repo(demo_repo), only_tests, commands, cfg)
    assert bad.status == "tests_failed" and 0 < bad.pass_rate < 1.0
    assert git("status", "--porcelain") == ""  # the user's work tree is never touched


def test_report_outcome_cli_updates_a_logged_run(tmp_path):
    import json
    import sys

    url = f"sqlite:///{tmp_path / 'logs.sqlite'}"
    store = LogStore(url)
    store.record_query(
        run_id="r1",
        repo="/x",
        base_commit="a" * 40,
        task_text="t",
        stage="task_analysis",
        prompt=[{"role": "user", "content": "hi"}],
        parsed_ok=True,
        latency_ms=1.0,
    )
    store.record_outcome(
        "r1",
        repo="/x",
        task_text="t",
        plan_valid=True,
        diff_applied=True,
        tests_passed=None,
        detail=json.dumps({"apply_error": ""}),
    )
    distill = str(Path(sys.executable).parent / "distill")
    env = {**__import__("os").environ, "DAGSTER_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [distill, "report-outcome", "r1", "--tests-failed", "--note", "CI red", "--log-url", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = store.outcomes()
    assert row["tests_passed"] is False and row["diff_applied"] is True
    assert json.loads(row["detail"]) == {"apply_error": "", "reported": True, "note": "CI red"}
    proc = subprocess.run(
        [distill, "report-outcome", "nope", "--tests-passed", "--log-url", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "no routed run 'nope'" in proc.stderr
    store.close()


def test_router_says_what_is_wrong(demo_repo, stage_ggufs, tmp_path, smollm2_gguf):
    adapters = _adapters(stage_ggufs)
    cfg = _cfg()
    with pytest.raises(RouterError, match="no adapter for stage.*code_generation"):
        route_task(demo_repo, TASK, {k: v for k, v in adapters.items() if k != "code_generation"}, cfg)
    with pytest.raises(RouterError, match="not a git repository"):
        check_repo(tmp_path)
    (demo_repo / "shop" / "cart.py").write_text("# edited\n")
    with pytest.raises(RouterError, match="uncommitted changes"):
        check_repo(demo_repo)
    subprocess.run(["git", "-C", str(demo_repo), "checkout", "-q", "--", "."], check=True)
    assert len(check_repo(demo_repo)) == 40

    # an adapter whose tensors do not fit the base: llama.cpp refuses it, the router says so
    from gguf import GGUFWriter
    import numpy as np

    bad = tmp_path / "bad.gguf"
    w = GGUFWriter(str(bad), "llama")
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 8.0)
    w.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((4, 64), dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((64, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    engine = StageEngine(n_ctx=512)
    try:
        with pytest.raises(RouterError, match="base/adapter mismatch"):
            engine.load_adapter("relevance", str(smollm2_gguf), str(bad))
        with pytest.raises(RouterError, match="does not exist"):
            engine.load_adapter("relevance", str(smollm2_gguf), str(tmp_path / "missing.gguf"))
    finally:
        engine.close()


def test_string_cap_finds_the_open_string_and_its_key():
    cap = StringCap.__new__(StringCap)  # the parser only; the processor needs a model
    cap.free_keys = frozenset({"diff"})
    assert cap._open_string('{"intent": "abc') == (3, "intent")
    assert cap._open_string('{"a": "x", "diff": "--- a') == (5, "diff")
    assert cap._open_string('{"a": "x"') is None
    assert cap._open_string('{"a": ["x\\"y') == (4, "a")  # an escaped quote does not close it


def test_run_task_cli_reports_missing_adapters(tmp_path, demo_repo):
    import sys

    env = {**__import__("os").environ, "DAGSTER_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "distill"), "run-task", "--repo", str(demo_repo), TASK],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "no adapter for stage(s) task_analysis" in proc.stderr and "gguf_adapters" in proc.stderr


def test_router_serves_the_promoted_adapter_before_the_latest_export(tmp_path):
    import json

    import polars as pl

    from distill_assets.router.pipeline import adapters_from_tables

    tables = tmp_path / "tables" / "gguf_adapters"
    tables.mkdir(parents=True)
    for stage in ("relevance", "plan_generation"):
        latest = tmp_path / f"{stage}-latest.gguf"
        latest.write_bytes(b"x")
        pl.DataFrame(
            [
                {
                    "stage": stage,
                    "status": "exported",
                    "gguf_path": str(latest),
                    "base_gguf": "/b.gguf",
                    "sha256": "latest",
                }
            ]
        ).write_parquet(tables / f"{stage}.parquet")
    live_file = tmp_path / "live.gguf"
    live_file.write_bytes(b"y")
    live = tmp_path / "live.json"
    live.write_text(
        json.dumps({"plan_generation": {"gguf_path": str(live_file), "base_gguf": "/b.gguf", "adapter_sha256": "live"}})
    )
    got = adapters_from_tables(tmp_path / "tables", live)
    assert got["plan_generation"].sha256 == "live" and got["relevance"].sha256 == "latest"
    assert adapters_from_tables(tmp_path / "tables")["plan_generation"].sha256 == "latest"
    # the gate judged relevance's adapter and promoted none: the base student serves, not the latest export
    from distill_assets.evaluation.gate import Decision, Registry

    Registry(tmp_path).record(Decision("relevance", "latest", None, False, "does not beat the base"))
    got = adapters_from_tables(tmp_path / "tables", live)
    assert got["relevance"].adapter_gguf is None and got["relevance"].base_gguf == "/b.gguf"
    assert got["plan_generation"].sha256 == "live"

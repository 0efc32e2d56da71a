"""The on-disk cache layer: one file per content key, atomic writes, values read back with their loader."""

import json

import polars as pl

from distill_assets.evaluation.run import EvalCache
from distill_assets.filecache import FileCache, content_key
from distill_assets.sandbox import RunResult
from distill_assets.scoring.executions import SandboxCache


def test_entries_round_trip_by_content_key_and_leave_no_partial_file(tmp_path):
    cache = FileCache(
        tmp_path / "c", ".json", lambda v, p: p.write_text(json.dumps(v)), lambda p: json.loads(p.read_text())
    )
    key = content_key("task", ["a", "b"], {"x": 1})
    assert key == content_key("task", ["a", "b"], {"x": 1}) != content_key("task", ["b", "a"], {"x": 1})
    assert cache.get(key) is None
    cache.put(key, {"pass_rate": 0.5})
    assert cache.get(key) == {"pass_rate": 0.5} and [p.name for p in (tmp_path / "c").iterdir()] == [f"{key}.json"]

    def broken(value, path):
        path.write_text("half")
        raise OSError("disk full")

    failing = FileCache(tmp_path / "c", ".json", broken, lambda p: json.loads(p.read_text()))
    try:
        failing.put("k2", {})
    except OSError:
        pass
    assert failing.get("k2") is None  # the half-written file never looks like a result
    assert [p.name for p in (tmp_path / "c").iterdir()] == [f"{key}.json"]  # and is not left behind


def test_the_sandbox_and_evaluation_caches_keep_their_types(tmp_path):
    sandbox = SandboxCache(tmp_path / "s")
    sandbox.put("k", RunResult("passed", 1.0, selected=["t"], duration_s=1.5))
    assert sandbox.get("k") == RunResult("passed", 1.0, selected=["t"], duration_s=1.5)
    evals = EvalCache(tmp_path / "e")
    evals.put("k", pl.DataFrame({"a": [1, 2]}))
    assert evals.get("k")["a"].to_list() == [1, 2] and evals.path("k").suffix == ".parquet"

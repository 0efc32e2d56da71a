"""The learning report: base against adapter on the same tasks, with intervals and the paired gain, a
learning curve and a transfer block; and the learning profile as `distill learn` writes it."""

import polars as pl
import pytest

from distill_assets.config import load_config
from distill_assets.evaluation.learning import gain_table, render, verdict
from distill_assets.learning import PROFILE, repo_entry, write_config
from distill_assets_tests.conftest import PROJECT


def _rows(stage, base, adapter, metric):
    out = [{"stage": stage, "system": s, "task_id": f"t{i}", metric: v, "validity": 1.0}
           for s, vals in (("base", base), ("adapter", adapter)) for i, v in enumerate(vals)]
    return pl.DataFrame(out)


def test_gain_table_pairs_by_task_and_the_report_says_gain_or_not():
    runs = {
        "r 50%": {"relevance": _rows("relevance", [0.0, 0.5, 0.0, 0.5], [0.5, 0.5, 0.0, 0.5], "file_f1")},
        "r 100%": {"relevance": _rows("relevance", [0.0, 0.5, 0.0, 0.5], [1.0, 1.0, 0.5, 1.0], "file_f1"),
                   "symbol_selection": _rows("symbol_selection", [0.5] * 4, [0.5] * 4, "symbol_f1")},
    }
    t = gain_table(runs, n_boot=500)
    f1 = t.filter((pl.col("run") == "r 100%") & (pl.col("metric") == "file_f1")).row(0, named=True)
    assert f1["n"] == 4 and f1["base"] == pytest.approx(0.25) and f1["adapter"] == pytest.approx(0.875)
    assert f1["gain"] == pytest.approx(0.625) and f1["gain_low"] > 0 and verdict(f1) == "gain"
    same = t.filter(pl.col("metric") == "symbol_f1").row(0, named=True)
    assert same["gain"] == 0 and verdict(same) == "no clear difference"
    # metrics no system measured are left out, not shown as zeros
    assert set(t.filter(pl.col("stage") == "relevance")["metric"]) == {"validity", "file_f1"}
    md = render(t, "r 100%", [("r 50%", 0.5), ("r 100%", 1.0)], transfer_run="r 50%", header="# h")
    assert md.startswith("# h") and "## Held-out tasks: r 100%" in md and "## Transfer: r 50%" in md
    assert "| relevance | file_f1 * | 4 | 0.250 [" in md and "| gain |" in md
    curve = next(line for line in md.splitlines() if line.startswith("| relevance | file_f1 | "))
    assert "gain +0.125" in curve and "gain +0.625" in curve
    assert "| symbol_selection | symbol_f1 | - |" in md  # not trained at 50 %


def test_the_learning_profile_takes_the_repository_and_a_row_cap(tmp_path):
    bundle = PROJECT / "data" / "repos" / "demo-shop.bundle"
    assert repo_entry(str(bundle)) == {"name": "demo-shop", "url": str(bundle.resolve())}
    assert repo_entry(str(tmp_path)) == {"name": tmp_path.name, "path": str(tmp_path)}
    assert repo_entry("https://github.com/pallets/click.git")["name"] == "click"
    cfg = load_config(write_config(PROFILE, str(bundle), tmp_path / "w", max_train_rows=7))
    assert [r.name for r in cfg.sources.repos] == ["demo-shop"] and not cfg.sources.external
    assert cfg.stage("relevance").training.max_train_rows == 7
    assert cfg.stage("task_analysis").training.max_train_rows == 240  # not a learned stage: the profile's cap
    assert cfg.scoring.reference_stages == ["relevance", "symbol_selection", "plan_generation"]
    assert not cfg.teacher("local").availability()[0]  # the gold patch is the teacher: no endpoint is called

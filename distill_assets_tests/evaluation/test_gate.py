"""The promotion gate: a candidate goes live only if it beats the base student on the stage's gain metric
(paired bootstrap interval above zero) and regresses no headline metric against what is served."""

import polars as pl
import pytest

from distill_assets.evaluation.gate import GateSettings, Registry, comparisons_table, decide
from distill_assets.evaluation.metrics import paired_gain

STAGE = "plan_generation"  # gain metric file_recall; headline structural_validity, file_recall, ...
GATE = GateSettings(min_gain_over_base=0.02, tolerance=0.02, n_boot=2000, level=0.95, seed=0)


def rows(**systems: dict[str, list[float | None]]) -> pl.DataFrame:
    """Per-task evaluation rows: system -> metric -> values for tasks t0, t1, ..."""
    out = []
    for system, metrics in systems.items():
        n = len(next(iter(metrics.values())))
        for i in range(n):
            out.append(
                {"stage": STAGE, "system": system, "task_id": f"t{i}", **{m: vals[i] for m, vals in metrics.items()}}
            )
    return pl.DataFrame(out)


BASE = {"file_recall": [0.0, 0.5, 0.0, 0.5, 0.0, 0.5, 0.0, 0.5], "structural_validity": [1.0] * 8}
BETTER = {"file_recall": [1.0, 1.0, 0.5, 1.0, 0.5, 1.0, 0.5, 1.0], "structural_validity": [1.0] * 8}


def test_paired_gain_pairs_by_task_and_skips_unmeasured():
    g = paired_gain({"a": 1.0, "b": 0.5, "c": None}, {"a": 0.5, "b": 0.5, "c": 1.0, "d": 0.0}, n_boot=500)
    assert g["n"] == 2 and g["gain"] == pytest.approx(0.25) and g["candidate"] == pytest.approx(0.75)
    assert g["ci_low"] == pytest.approx(0.0) and g["ci_high"] == pytest.approx(0.5)
    assert paired_gain({"a": None}, {"a": 1.0})["n"] == 0


def test_a_candidate_worse_than_the_base_is_not_promoted():
    worse = {"file_recall": [0.0] * 8, "structural_validity": [1.0] * 8}
    d = decide(STAGE, "cand", rows(base=BASE, adapter=worse), None, GATE)
    assert not d.promote and d.serving == "base" and "does not beat the base on file_recall" in d.reason
    (base_cmp, *_) = d.comparisons
    assert base_cmp["against"] == "base" and base_cmp["gain"] == pytest.approx(-0.25) and not base_cmp["passed"]


def test_better_than_the_base_but_regressing_against_the_live_adapter_is_not_promoted():
    live_scores = {"file_recall": [1.0] * 8, "structural_validity": [1.0] * 8}
    live = {"adapter_sha256": "live", "metrics": {"file_recall": 1.0}}
    d = decide(STAGE, "cand", rows(base=BASE, adapter=BETTER, live=live_scores), live, GATE)
    assert d.comparisons[0]["passed"]  # it does beat the base
    assert not d.promote and set(d.regressions) == {"file_recall"} and d.serving == "adapter live"
    assert "against the live adapter" in d.reason and "file_recall vs live: 1.000 -> 0.812" in d.reason
    assert {c["against"] for c in d.comparisons[1:]} == {"live"}


def test_better_on_both_is_promoted_and_the_registry_serves_it(tmp_path):
    reg = Registry(tmp_path)
    d = reg.record(
        decide(STAGE, "cand", rows(base=BASE, adapter=BETTER), None, GATE),
        {"gguf_path": "/c.gguf", "base_gguf": "/b.gguf"},
    )
    assert d.promote and d.serving == "adapter cand" and "beats the base on file_recall" in d.reason
    assert d.comparisons[0]["ci_low"] > 0 and d.comparisons[0]["gain"] == pytest.approx(0.5625)
    # with nothing live, the headline metrics are compared against the base (what the router served)
    assert {c["against"] for c in d.comparisons[1:]} == {"base"}
    assert reg.live()[STAGE]["adapter_sha256"] == "cand" and reg.judged(STAGE) and not reg.judged("relevance")
    # the next candidate, as good on every task, is measured against the live one on the same tasks
    nxt = decide(STAGE, "next", rows(base=BASE, adapter=BETTER, live=BETTER), reg.live()[STAGE], GATE)
    assert nxt.promote and all(c["gain"] == 0 for c in nxt.comparisons[1:])
    assert "| file_recall | base | 8 |" in comparisons_table(nxt.comparisons)


def test_the_interval_rule_a_mean_gain_from_one_lucky_task_is_not_enough():
    base = {"file_recall": [0.0] * 10, "structural_validity": [1.0] * 10}
    lucky = {"file_recall": [1.0] + [0.0] * 9, "structural_validity": [1.0] * 10}
    d = decide(STAGE, "cand", rows(base=base, adapter=lucky), None, GATE)
    cmp = d.comparisons[0]
    assert cmp["gain"] == pytest.approx(0.1) and cmp["gain"] >= GATE.min_gain_over_base
    assert cmp["ci_low"] <= 0 and not d.promote  # the lower end is not above zero
    # the same mean gain, spread over every task, passes
    steady = {"file_recall": [0.1] * 10, "structural_validity": [1.0] * 10}
    assert decide(STAGE, "cand", rows(base=base, adapter=steady), None, GATE).promote
    # and a consistent gain below min_gain_over_base does not
    small = {"file_recall": [0.01] * 10, "structural_validity": [1.0] * 10}
    assert not decide(STAGE, "cand", rows(base=base, adapter=small), None, GATE).promote


def test_a_gain_bought_with_another_headline_metric_is_a_regression():
    broken = {"file_recall": BETTER["file_recall"], "structural_validity": [0.0] * 4 + [1.0] * 4}
    d = decide(STAGE, "cand", rows(base=BASE, adapter=broken), None, GATE)
    assert not d.promote and set(d.regressions) == {"structural_validity"} and d.comparisons[0]["passed"]


def test_nothing_to_judge_and_unmeasured_metrics():
    d = decide(STAGE, "cand", rows(adapter=BETTER), None, GATE)  # no base rows
    assert not d.promote and "not measured on a common task" in d.reason
    # the live adapter's rows are gone (its file was removed): its recorded means, unpaired
    live = {"adapter_sha256": "old", "metrics": {"file_recall": 0.9, "exec_pass_rate": 0.4}}
    d = decide(STAGE, "cand", rows(base=BASE, adapter=BETTER), live, GATE)
    assert not d.promote and set(d.regressions) == {"file_recall", "exec_pass_rate"}
    assert {c["against"] for c in d.comparisons[1:]} == {"live (recorded means)"}
    same = decide(STAGE, "old", rows(base=BASE, adapter=BETTER), live, GATE)
    assert same.promote and same.reason == "already live (same adapter)"


def test_live_rows_of_another_adapter_do_not_judge_the_candidate():
    """Rows scored as "live" while another adapter was live are not the served adapter's answers: the gate
    falls back to the means recorded at the live adapter's promotion (unpaired)."""
    stale = rows(base=BASE, adapter=BETTER, live={"file_recall": [1.0] * 8, "structural_validity": [1.0] * 8})
    stale = stale.with_columns(
        system_id=pl.when(pl.col("system") == "live").then(pl.lit("adapter:old")).otherwise(pl.lit("x"))
    )
    live = {"adapter_sha256": "now", "metrics": {"file_recall": 0.5, "structural_validity": 1.0}}
    d = decide(STAGE, "cand", stale, live, GATE)
    assert d.promote and {c["against"] for c in d.comparisons[1:]} == {"live (recorded means)"}
    # the same rows scored with the live adapter's identity are compared paired, and regress
    current = stale.with_columns(
        system_id=pl.when(pl.col("system") == "live").then(pl.lit("adapter:now")).otherwise(pl.lit("x"))
    )
    d = decide(STAGE, "cand", current, live, GATE)
    assert not d.promote and set(d.regressions) == {"file_recall"}
    assert {c["against"] for c in d.comparisons[1:]} == {"live"}


def test_run_gate_records_each_outcome_as_the_assets_row(tmp_path):
    from types import SimpleNamespace

    from distill_assets.evaluation.gate import decisions_table, run_gate

    reg = Registry(tmp_path)
    cand = SimpleNamespace(sha256="cand", gguf_path="/c.gguf", base_gguf="/b.gguf")
    skipped = run_gate(reg, STAGE, None, rows(base=BASE, adapter=BETTER), GATE)
    assert skipped.status == "skipped" and "no evaluated adapter" in skipped.reason and not reg.judged(STAGE)
    assert run_gate(reg, STAGE, cand, rows(base=BASE), GATE).status == "skipped"  # no adapter rows: nothing judged
    worse = run_gate(reg, STAGE, cand, rows(base=BASE, adapter={"file_recall": [0.0] * 8}), GATE).row()
    assert worse["status"] == "rejected" and worse["serving"] == "base" and worse["live_sha256"] is None
    assert worse["gguf_path"] is None and worse["base_gguf"] == "/b.gguf"
    good = run_gate(reg, STAGE, cand, rows(base=BASE, adapter=BETTER), GATE).row()
    assert good["status"] == "promoted" and good["live_sha256"] == "cand" and good["gguf_path"] == "/c.gguf"
    assert [d["promote"] for d in reg.decisions(STAGE)] == [False, True]
    assert decisions_table(reg.decisions(STAGE)).count("| cand |") == 2

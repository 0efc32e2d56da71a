"""Evaluation metrics on hand-built cases with known answers, the promotion gate's decisions, the
student's stage-4 format, and the report naming every metric for every system."""

import json

import polars as pl
import pytest

from distill_assets.evaluation.judge import parse_judge
from distill_assets.evaluation.metrics import (
    HEADLINE,
    STAGE_METRICS,
    bootstrap_ci,
    correlation,
    plan_metrics,
    prf,
    reference_scope,
    relevance_metrics,
    share_of_teacher,
    symbol_metrics,
    task_analysis_metrics,
)
from distill_assets.evaluation.report import render
from distill_assets.evaluation.run import SUMMARY_SCHEMA, SYSTEMS
from distill_assets.plans.schema import Plan
from distill_assets.plans.validator import PlanContext
from distill_assets.prompts.schemas import RelevanceOutput, SymbolSelectionOutput, TaskAnalysis
from distill_assets.prompts.student import parse_student_output, tagged_plan_grammar

CTX = PlanContext(
    tree={"shop/cart.py", "shop/orders.py", "shop/pricing.py"},
    symbols={"shop/cart.py": {"Cart", "Cart.total"}, "shop/orders.py": {"place_order"}, "shop/pricing.py": {"price"}},
)


def plan(files, order=None, edges=()):
    """files: [(path, [(symbol, action)])]; edges: [(from 'path:sym', to 'path:sym')] meaning from depends on to."""
    deps: dict = {}
    for a, b in edges:
        deps.setdefault(a, {"depends_on": [], "depended_by": []})["depends_on"].append(b)
        deps.setdefault(b, {"depends_on": [], "depended_by": []})["depended_by"].append(a)
    return Plan.model_validate(
        {
            "task_summary": "add a discount",
            "rationale": "because",
            "affected_files": [
                {
                    "path": p,
                    "role": "primary",
                    "changes": [
                        {"symbol": s, "action": a, "description": "change it", **deps.get(f"{p}:{s}", {})}
                        for s, a in ch
                    ],
                }
                for p, ch in files
            ],
            "execution_order": order if order is not None else [p for p, _ in files],
        }
    )


REF = plan(
    [("shop/cart.py", [("Cart.total", "modify")]), ("shop/orders.py", [("place_order", "modify")])],
    edges=[("shop/orders.py:place_order", "shop/cart.py:Cart.total")],
)


def test_perfect_plan_scores_one_everywhere():
    m = plan_metrics(REF, REF, CTX)
    assert m["structural_validity"] == 1.0 and m["validity"] == 1.0
    assert m["file_recall"] == m["file_precision"] == m["symbol_recall"] == 1.0
    assert m["order_tau"] == 1.0 and m["violations"] == ""


def test_missing_file_halves_recall_and_keeps_precision():
    p = plan([("shop/cart.py", [("Cart.total", "modify")])])
    m = plan_metrics(p, REF, CTX)
    assert m["file_recall"] == 0.5 and m["file_precision"] == 1.0 and m["symbol_recall"] == 0.5
    assert m["order_tau"] is None  # one shared file: no order to compare
    extra = plan(
        [
            ("shop/cart.py", [("Cart.total", "modify")]),
            ("shop/orders.py", [("place_order", "modify")]),
            ("shop/pricing.py", [("price", "modify")]),
        ]
    )
    m = plan_metrics(extra, REF, CTX)
    assert m["file_recall"] == 1.0 and m["file_precision"] == pytest.approx(2 / 3)


def test_wrong_order_gives_negative_tau_and_violates_the_edges():
    p = plan(
        [("shop/cart.py", [("Cart.total", "modify")]), ("shop/orders.py", [("place_order", "modify")])],
        order=["shop/orders.py", "shop/cart.py"],
        edges=[("shop/orders.py:place_order", "shop/cart.py:Cart.total")],
    )
    m = plan_metrics(p, REF, CTX)
    assert m["order_tau"] == -1.0
    assert m["structural_validity"] == 0.0 and "order_violates_edge" in m["violations"]
    assert m["file_recall"] == 1.0  # the right files, in the wrong order


def test_cyclic_edges_are_structurally_invalid():
    p = plan(
        [("shop/cart.py", [("Cart.total", "modify")]), ("shop/orders.py", [("place_order", "modify")])],
        edges=[
            ("shop/orders.py:place_order", "shop/cart.py:Cart.total"),
            ("shop/cart.py:Cart.total", "shop/orders.py:place_order"),
        ],
    )
    m = plan_metrics(p, REF, CTX)
    assert m["structural_validity"] == 0.0 and "cycle" in m["violations"]
    assert plan_metrics(None, REF, CTX)["validity"] == 0.0  # an unparsed answer counts as a miss, not a skip


def test_set_metrics_stage1_to_3():
    assert prf({"a", "b"}, {"b", "c"}) == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert prf(set(), set()) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert prf(set(), {"a"})["f1"] == 0.0 and prf({"a"}, set())["precision"] == 0.0
    rel = RelevanceOutput.model_validate(
        {
            "files": [
                {"path": "shop/cart.py", "relevant": True, "reason": "x"},
                {"path": "shop/pricing.py", "relevant": True, "reason": "y"},
                {"path": "shop/orders.py", "relevant": False, "reason": "z"},
            ]
        }
    )
    m = relevance_metrics(
        rel, {"shop/cart.py", "shop/orders.py"}, ["shop/cart.py", "shop/orders.py", "shop/pricing.py"]
    )
    assert m["file_precision"] == 0.5 and m["file_recall"] == 0.5 and m["file_accuracy"] == pytest.approx(1 / 3)
    sym = SymbolSelectionOutput.model_validate(
        {"symbols": [{"path": "shop/cart.py", "symbol": "Cart.total", "action": "modify", "reason": "r"}]}
    )
    m = symbol_metrics(sym, {"shop/cart.py:Cart.total", "shop/orders.py:place_order"})
    assert m["symbol_precision"] == 1.0 and m["symbol_recall"] == 0.5
    ta = TaskAnalysis(intent="x", change_kind="feature", scope="multi_file", risks=[], planner_questions=[])
    label = ta.model_copy(update={"change_kind": "bugfix"})
    assert reference_scope(REF, {"shop/cart.py": "python", "shop/orders.py": "python"}) == "multi_file"
    assert reference_scope(REF, {"shop/cart.py": "python", "shop/orders.py": "javascript"}) == "cross_language"
    m = task_analysis_metrics(ta, "multi_file", label)
    assert m == {"validity": 1.0, "scope_accuracy": 1.0, "kind_agreement": 0.0}
    assert task_analysis_metrics(ta, "multi_file", None)["kind_agreement"] is None


def test_bootstrap_interval_correlation_and_share():
    ci = bootstrap_ci([1.0, 0.0, 1.0, None, 1.0], n_boot=500)
    assert ci["n"] == 4 and ci["mean"] == 0.75 and 0.0 <= ci["ci_low"] <= 0.75 <= ci["ci_high"] <= 1.0
    assert bootstrap_ci([0.5] * 5)["ci_low"] == bootstrap_ci([0.5] * 5)["ci_high"] == 0.5
    assert bootstrap_ci([None])["mean"] is None
    c = correlation([0.1, 0.5, 0.9, None], [0.0, 0.4, 1.0, 1.0])
    assert c["n"] == 3 and c["spearman"] == pytest.approx(1.0) and c["pearson"] > 0.95
    assert correlation([1, 1, 1], [0, 1, 0.5])["pearson"] is None  # constant: undefined, not 0
    assert share_of_teacher(0.35, 0.5) == pytest.approx(0.7) and share_of_teacher(0.3, 0.0) is None


def test_student_plan_format_parses_and_its_grammar_compiles():
    text = "[REASONING] the cart total needs a discount\n[PLAN] " + REF.model_dump_json()
    out, err = parse_student_output("plan_generation", text)
    assert err is None and out.reasoning == "the cart total needs a discount" and out.plan == REF
    out, err = parse_student_output("plan_generation", json.dumps({"reasoning": "r", "plan": REF.model_dump()}))
    assert err is None and out.plan == REF  # a teacher's JSON answer still reads
    assert parse_student_output("plan_generation", '[REASONING] x\n[PLAN] {"task_summary": 1}')[1].startswith("schema")
    from llama_cpp import LlamaGrammar

    from distill_assets.prompts.schemas import task_schema

    schema = task_schema(
        "plan_generation", ["shop/cart.py"], sorted(CTX.tree), {p: sorted(s) for p, s in CTX.symbols.items()}
    )
    gbnf = tagged_plan_grammar(schema, max_reasoning_chars=50)
    assert gbnf.startswith('root ::= "[REASONING] "') and "plan-root ::=" in gbnf
    LlamaGrammar.from_string(gbnf, verbose=False)  # llama.cpp's parser accepts it


def test_judge_answers_parse_and_normalise():
    s, err = parse_judge('{"completeness": 5, "ordering": 1, "rationale": 3, "comment": "ok"}')
    assert err is None and s.normalised() == {"judge_completeness": 1.0, "judge_ordering": 0.0, "judge_rationale": 0.5}
    assert parse_judge('{"completeness": 9, "ordering": 1, "rationale": 3}')[1].startswith("schema")
    assert parse_judge("no json")[1].startswith("json")


def test_report_names_every_metric_for_every_system():
    rows = []
    for stage, metrics in STAGE_METRICS.items():
        for system in SYSTEMS:
            for m in metrics:
                rows.append(
                    {
                        "stage": stage,
                        "system": system,
                        "metric": m,
                        "headline": m in HEADLINE[stage],
                        "n": 3,
                        "mean": 0.5,
                        "ci_low": 0.4,
                        "ci_high": 0.6,
                        "share_of_teacher": None if system == "teacher" else 1.0,
                    }
                )
    summary = pl.DataFrame(rows, schema=SUMMARY_SCHEMA)
    md, page, plots = render(summary, pl.DataFrame(), pl.DataFrame(), {"n": 0}, 0.7, {s: 3 for s in STAGE_METRICS})
    for stage, metrics in STAGE_METRICS.items():
        for m in metrics:
            line = next(l for l in md.splitlines() if l.startswith(f"| {stage} | {m}"))
            assert line.count("0.500 [0.400, 0.600] n=3") == len(SYSTEMS), line  # base, adapter, live, teacher
    assert set(plots) == {f"bars_{s}" for s in STAGE_METRICS}
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") == len(plots)


def test_the_gold_patch_answers_of_stages_2_to_4_parse_and_score_perfectly():
    """The reference rows SFT learns from (scoring.reference_stages) are what the evaluation calls right."""
    from distill_assets.datasets.build import reference_completion
    from distill_assets.evaluation.metrics import gold_symbols, relevance_metrics, symbol_metrics

    ref = plan(
        [
            ("shop/cart.py", [("Cart.total", "modify"), ("<module>", "modify")]),
            ("shop/orders.py", [("place_order", "add")]),
        ]
    )
    shown = ["shop/cart.py", "shop/pricing.py", "shop/orders.py"]
    rel, err = parse_student_output("relevance", reference_completion("relevance", ref.model_dump_json(), shown))
    assert err is None and [f.path for f in rel.files] == shown
    assert [f.relevant for f in rel.files] == [True, False, True]
    assert "modifys" not in rel.files[0].reason and "Cart.total" in rel.files[0].reason
    m = relevance_metrics(rel, {f.path for f in ref.affected_files}, shown)
    assert m["file_f1"] == 1.0 and m["file_accuracy"] == 1.0
    sym, err = parse_student_output(
        "symbol_selection", reference_completion("symbol_selection", ref.model_dump_json(), shown)
    )
    assert err is None and {(s.symbol, s.action) for s in sym.symbols} == {
        ("Cart.total", "modify"),
        ("place_order", "add"),
    }
    assert symbol_metrics(sym, gold_symbols(ref))["symbol_f1"] == 1.0
    out, err = parse_student_output(
        "plan_generation", reference_completion("plan_generation", ref.model_dump_json(), shown)
    )
    assert err is None and out.plan == ref
    # no candidate shown: no relevance answer; a plan of module-level changes only: no symbol answer
    assert reference_completion("relevance", ref.model_dump_json(), []) is None
    only_module = plan([("setup.py", [("<module>", "modify")])])
    assert reference_completion("symbol_selection", only_module.model_dump_json(), shown) is None
    assert reference_completion("task_analysis", ref.model_dump_json(), shown) is None


def test_stage_3_gold_answers_for_training_keep_only_what_the_task_schema_lets_the_student_write():
    """A gold symbol the prompt does not show could neither be read nor, under the task's grammar, written: the
    SFT answer leaves it out (and counts it), keeps the shown ones and the new ones in candidate files."""
    from collections import Counter

    from distill_assets.datasets.build import reference_completion
    from distill_assets.prompts.schemas import selection_allowed, task_schema

    ref = plan(
        [
            ("shop/cart.py", [("Cart.total", "modify"), ("Cart.hidden", "modify"), ("<module>", "modify")]),
            ("shop/orders.py", [("place_order", "add"), ("Order", "modify")]),
        ]
    )
    shown = ["shop/cart.py", "shop/orders.py"]
    schema = task_schema("symbol_selection", shown, shown, {"shop/cart.py": ["Cart", "Cart.total"]})
    assert selection_allowed(schema, "shop/cart.py", "Cart.total", "modify")
    assert not selection_allowed(schema, "shop/cart.py", "Cart.hidden", "modify")  # not shown
    assert not selection_allowed(schema, "shop/orders.py", "Cart.total", "modify")  # another file's symbol
    assert selection_allowed(schema, "shop/orders.py", "place_order", "add")  # a new name in a candidate
    assert not selection_allowed(schema, "shop/other.py", "x", "add")  # not a candidate file
    stats = Counter()
    sym, err = parse_student_output(
        "symbol_selection", reference_completion("symbol_selection", ref.model_dump_json(), shown, schema, stats)
    )
    assert err is None and [(s.path, s.symbol) for s in sym.symbols] == [
        ("shop/cart.py", "Cart.total"),
        ("shop/orders.py", "place_order"),
    ]
    assert stats == {"symbols_shown": 2, "symbols_not_shown": 2, "tasks_with_no_shown_symbol": 0}
    # without the schema (the evaluation's reference system): every gold symbol, as before
    full, _ = parse_student_output(
        "symbol_selection", reference_completion("symbol_selection", ref.model_dump_json(), shown)
    )
    assert len(full.symbols) == 4
    hidden_only = plan([("shop/cart.py", [("Cart.hidden", "modify")])])
    assert reference_completion("symbol_selection", hidden_only.model_dump_json(), shown, schema, stats) is None
    assert stats["tasks_with_no_shown_symbol"] == 1


def test_reference_rows_per_stage_come_from_usable_gold_plans_and_gold_executions():
    """sft_datasets' gold rows: stages 2-4 from usable reference plans (stage 2 only where candidates were
    shown; stage 4 passes by construction where the task's tests are selected), stage 5 the gold diffs."""
    import polars as pl

    from distill_assets.datasets.build import reference_rows

    ref = plan([("shop/cart.py", [("Cart.total", "modify")]), ("shop/orders.py", [("place_order", "add")])])
    plans = pl.DataFrame(
        {"task_id": ["t1", "t2", "t3"], "usable": [True, True, False], "plan_json": [ref.model_dump_json()] * 3}
    )
    contexts = pl.DataFrame(
        {"task_id": ["t1", "t2"], "candidates": [[{"path": "shop/cart.py"}, {"path": "shop/orders.py"}], []]}
    )
    selections = pl.DataFrame({"task_id": ["t1", "t2"], "status": ["selected", "no_tests"]})
    rel = reference_rows("relevance", plans, contexts, selections, None)
    assert [(t, s) for t, s, _, _ in rel] == [("t1", "reference")]  # t2 showed nothing, t3 is not usable
    plan_rows = reference_rows("plan_generation", plans, contexts, selections, None)
    assert [(t, rate) for t, _, _, rate in plan_rows] == [("t1", 1.0), ("t2", None)]
    # test_selections never materialized (an empty optional table): no pass rate claimed
    assert [r[3] for r in reference_rows("plan_generation", plans, contexts, pl.DataFrame(), None)] == [None, None]
    assert reference_rows("task_analysis", plans, contexts, selections, None) == []
    execs = pl.DataFrame(
        {"task_id": ["t1", "t1"], "coder": ["gold", "teacher"], "diff": ["D", "X"], "pass_rate": [1.0, 0.0]}
    )
    code = reference_rows("code_generation", plans, contexts, selections, execs)
    assert code == [("t1", "reference", '{"diff": "D"}', 1.0)]
    assert reference_rows("code_generation", plans, contexts, selections, None) == []

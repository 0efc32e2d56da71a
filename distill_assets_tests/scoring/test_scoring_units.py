import json

import polars as pl
import pytest

from distill_assets.datasets.build import PLAN_TAG, REASONING_TAG, completion_text, dpo_rows, sft_rows
from distill_assets.plans.schema import Plan
from distill_assets.scoring.agreement import agreement_table, compare, jaccard, kendall_tau
from distill_assets.scoring.validate import check_candidate, dedup_flags, diff_applies

CTX = {
    "file_tree": ["a.py", "b.py", "README.md"],
    "candidates": [{"path": "a.py", "content": "def f():\n    return 1\n"}, {"path": "b.py", "content": "x = 1\n"}],
    "symbols": [{"path": "a.py", "name": "f", "kind": "function", "start_line": 1, "end_line": 2}],
}


def plan(files, order=None, edges=()):
    return Plan.model_validate(
        {
            "task_summary": "t",
            "rationale": "r",
            "execution_order": order or [p for p, _ in files],
            "affected_files": [
                {
                    "path": p,
                    "role": "primary",
                    "changes": [{"symbol": s, "action": "modify", "description": "d"} for s in syms],
                }
                for p, syms in files
            ],
        }
    )


def test_metrics():
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3) and jaccard(set(), set()) == 1.0
    assert kendall_tau(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert kendall_tau(["a", "b", "c"], ["c", "b", "a"]) == -1.0
    assert kendall_tau(["a", "b"], ["b", "x"]) is None
    m = compare(plan([("a.py", ["f"]), ("b.py", ["<module>"])]), plan([("a.py", ["f"])]))
    assert m["file_jaccard"] == 0.5 and m["symbol_jaccard"] == 0.5 and m["order_tau"] is None


def test_agreement_labels_and_hard_examples():
    same = plan([("a.py", ["f"]), ("b.py", ["<module>"])])
    other = plan([("c.py", ["g"])])
    df = agreement_table(
        {"t1": {"local": same, "reference": same}, "t2": {"local": other, "reference": same}}, 0.7, 0.3
    )
    rows = {r["task_id"]: r for r in df.iter_rows(named=True)}
    assert rows["t1"]["label"] == "agree" and not rows["t1"]["hard_example"]
    assert rows["t2"]["label"] == "disagree" and rows["t2"]["hard_example"]  # kept, flagged


def test_stage_checks_against_the_context():
    rel = json.dumps(
        {
            "files": [
                {"path": "a.py", "relevant": True, "reason": "r"},
                {"path": "b.py", "relevant": False, "reason": "r"},
            ]
        }
    )
    assert check_candidate("relevance", rel, {}, CTX) == []
    rel_bad = json.dumps({"files": [{"path": "zzz.py", "relevant": True, "reason": "r"}]})
    assert check_candidate("relevance", rel_bad, {}, CTX) == ["candidates_not_answered_once", "unknown_file"]
    sym = json.dumps({"symbols": [{"path": "a.py", "symbol": "g", "action": "modify", "reason": "r"}]})
    assert check_candidate("symbol_selection", sym, {}, CTX) == ["unknown_symbol"]
    sym_add = json.dumps({"symbols": [{"path": "a.py", "symbol": "g", "action": "add", "reason": "r"}]})
    assert check_candidate("symbol_selection", sym_add, {}, CTX) == []
    p = json.dumps(
        {
            "reasoning": "x",
            "plan": json.loads(plan([("a.py", ["f"]), ("b.py", ["<module>"])], order=["a.py"]).model_dump_json()),
        }
    )
    assert check_candidate("plan_generation", p, {}, CTX) == ["plan:order_missing_file"]


def test_stage5_diffs_must_apply_inline_and_in_git(git_repo):
    task = {"inline_files": [{"path": "a.py", "old_path": None, "old_contents": "x = 1\n", "new_contents": "x = 2\n"}]}
    good = "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"
    assert diff_applies(task, good)[0]
    assert not diff_applies(task, good.replace("-x = 1", "-x = 9"))[0]
    git_repo.commit("init", {"a.py": "x = 1\n"})
    gtask = {"repo_path": str(git_repo.path), "base_commit": git_repo.head()}
    assert diff_applies(gtask, good)[0] and not diff_applies(gtask, "garbage")[0]
    assert check_candidate("code_generation", json.dumps({"diff": "garbage"}), gtask, CTX) == ["diff_does_not_apply"]


def test_exact_and_near_duplicates_within_a_task():
    base = {
        "intent": "Add a width parameter to wrap and thread it through the command line entry point",
        "change_kind": "feature",
        "scope": "multi_file",
        "risks": ["callers break"],
        "planner_questions": ["which default width"],
    }
    near = dict(base, risks=["callers break", "docs"])
    other = dict(base, intent="Remove the deprecated logging module entirely and its configuration", risks=[])
    items = [
        (("t1", "s"), json.dumps(base)),
        (("t1", "s"), json.dumps(base, indent=2)),
        (("t1", "s"), json.dumps(near)),
        (("t1", "s"), json.dumps(other)),
        (("t2", "s"), json.dumps(base)),
    ]
    assert dedup_flags(items, 0.7) == [None, "duplicate", "near_duplicate", None, None]


def test_dpo_pairs_need_a_margin_and_a_valid_rejected_side():
    tasks = {"t": {"split": "train"}}
    cands = [
        {"completion": "good", "source": "reference", "pass_rate": 1.0, "valid": True, "can_reject": False},
        {"completion": "meh", "source": "local", "pass_rate": 0.6, "valid": True},
        {"completion": "bad", "source": "local", "pass_rate": 0.0, "valid": True},
        {"completion": "broken", "source": "local", "pass_rate": 0.0, "valid": False},
    ]
    df = dpo_rows("plan_generation", {("t", "t"): cands}, {"t": "[]"}, tasks, {"t": "hard"}, margin=0.5)
    row = df.row(0, named=True)
    assert json.loads(row["chosen"])[0]["content"] == "good" and json.loads(row["rejected"])[0]["content"] == "bad"
    assert row["margin"] == 1.0 and row["difficulty"] == "hard" and row["split"] == "train"
    assert dpo_rows("plan_generation", {("t", "t"): cands[:2]}, {"t": "[]"}, tasks, {}, margin=0.5).height == 0


def test_sft_rows_stage4_format_pass_filter_and_cap():
    parsed = json.dumps({"reasoning": "Change f first.", "plan": json.loads(plan([("a.py", ["f"])]).model_dump_json())})
    text = completion_text("plan_generation", parsed)
    assert text.startswith(f"{REASONING_TAG} Change f first.\n{PLAN_TAG} {{")
    cands = pl.DataFrame(
        {
            "task_id": ["t"] * 4,
            "sample_index": [0, 1, 2, 3],
            "source": ["local"] * 4,
            "request_key": ["k0", "k1", "k2", "k3"],
            "parsed_json": [parsed] * 4,
        }
    )
    df = sft_rows(
        "plan_generation",
        cands,
        {"t": "[]"},
        {"t": {"split": "val"}},
        {},
        {"k0": 0.0, "k1": 1.0},
        min_pass_rate=1.0,
        max_per_task=2,
    )
    assert df["candidate_key"].to_list() == ["k1", "k2"]  # k0 failed its tests; cap of 2 per task
    assert json.loads(df["completion"][0])[0]["role"] == "assistant" and set(df["split"]) == {"val"}


def test_plan_scores_rank_by_pass_rate_then_agreement():
    from distill_assets.scoring.plans import score_plans

    by_source = {"t": {"local": [("k1", "{}", "c1"), ("k2", "{}", "c2")], "reference": [("reference:t", "{}", "c")]}}
    ex = pl.DataFrame(
        {
            "plan_key": ["k1", "k1", "k2", "reference:t"],
            "coder": ["local", "local", "local", "gold"],
            "pass_rate": [0.0, 0.5, 0.5, 1.0],
        }
    )
    agree = pl.DataFrame({"task_id": ["t"], "source_a": ["local"], "source_b": ["reference"], "agreement": [0.4]})
    df = score_plans(by_source, ex, agree)
    rows = {r["plan_key"]: r for r in df.iter_rows(named=True)}
    assert rows["k1"]["pass_rate"] == 0.5 and rows["k1"]["executions"] == 2  # best coder sample counts
    assert rows["reference:t"]["pass_rate"] is None  # gold code rows do not score plans
    assert rows["k1"]["rank"] in (1, 2) and rows["reference:t"]["rank"] == 3


def test_dpo_candidates_reference_never_rejected_and_undiffed_answers_left_out():
    from distill_assets.scoring.plans import code_dpo_candidates, plan_dpo_candidates

    by_source = {
        "t": {"local": [("k1", "{}", "bad plan")], "reference": [("reference:t", "{}", "gold plan")]},
        "u": {"reference": [("reference:u", "{}", "gold")]},
    }
    cands = plan_dpo_candidates(by_source, {"k1": 0.0}, include_reference=True)
    ref = [c for c in cands[("t", "t")] if c["source"] == "reference"][0]
    assert ref["pass_rate"] == 1.0 and not ref["can_reject"]
    assert cands[("u", "u")][0]["pass_rate"] is None  # untested task: the reference is not assumed passing
    assert all(c["source"] != "reference" for c in plan_dpo_candidates(by_source, {"k1": 0.0}, False)[("t", "t")])
    ex = pl.DataFrame(
        {
            "task_id": ["t"] * 3,
            "plan_source": ["reference"] * 3,
            "coder": ["gold", "local", "local"],
            "diff": ["diff --git a/x b/x", "broken", None],
            "pass_rate": [1.0, 0.0, 0.0],
        }
    )
    code = code_dpo_candidates(ex, include_reference=True)[("t", "t")]
    assert [c["valid"] for c in code] == [True, True, False]
    df = dpo_rows("code_generation", {("t", "t"): code}, {"t": "[]"}, {"t": {"split": "train"}}, {}, 0.5)
    assert df.height == 1 and json.loads(df["rejected"][0])[0]["content"] == '{"diff": "broken"}'

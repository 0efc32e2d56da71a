import copy
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from distill_assets.evaluation.metrics import plan_metrics
from distill_assets.plans.repair import REPAIR_KINDS, repair_plan
from distill_assets.plans.schema import Plan
from distill_assets.plans.validator import PlanContext, validate_plan
from distill_assets.prompts.student import parse_student_output
from distill_assets_tests.plans.test_validator import CTX, dag_plans, good_plan


def content(plan: Plan) -> set[tuple[str, str, str]]:
    return {(f.path, c.symbol, c.action) for f in plan.affected_files for c in f.changes}


def edges(plan: Plan) -> set[tuple[str, str]]:
    """(A, B): A depends on B, from either end of the edge."""
    out = set()
    for f in plan.affected_files:
        for c in f.changes:
            me = f"{f.path}:{c.symbol}"
            out |= {(me, t) for t in c.depends_on} | {(t, me) for t in c.depended_by}
    return out


@settings(max_examples=100, deadline=None)
@given(dag_plans())
def test_a_valid_plan_comes_back_as_written(case):
    plan, ctx, *_ = case
    p = Plan.model_validate(plan)
    res = repair_plan(p)
    assert not res.changed and res.plan == p


@settings(max_examples=150, deadline=None)
@given(dag_plans(), st.data())
def test_broken_bookkeeping_is_repaired_and_the_content_kept(case, data):
    """Whatever a student does to the redundant fields (one end of each edge, the order, a file split in two
    entries, edges to nothing), the repaired plan is valid, names the same changes and keeps every edge."""
    plan, ctx, *_ = case
    want = Plan.model_validate(plan)
    broken = copy.deepcopy(plan)
    rng = random.Random(data.draw(st.integers(0, 10**6)))
    change = {f"{f['path']}:{c['symbol']}": c for f in broken["affected_files"] for c in f["changes"]}
    for c in change.values():
        c["depends_on"], c["depended_by"] = [], []
    for a, b in sorted(edges(want)):  # each edge written on both ends, or on one of them only
        ends = rng.choice(["both", "a", "b"])
        if ends in ("both", "a"):
            change[a]["depends_on"].append(b)
        if ends in ("both", "b"):
            change[b]["depended_by"].append(a)
    for c in change.values():
        if rng.random() < 0.3:
            c["depends_on"].append(rng.choice(["nowhere.py:f", "not an edge", "pkg/gone.py:<module>"]))
    order = list(broken["execution_order"])
    rng.shuffle(order)
    broken["execution_order"] = order[: rng.randint(0, len(order))] + rng.sample(order, min(1, len(order)))
    first = broken["affected_files"][0]
    if len(first["changes"]) > 1:  # the same file listed twice, its changes split between the entries
        broken["affected_files"].append({**first, "changes": first["changes"][1:]})
        first["changes"] = first["changes"][:1]
    res = repair_plan(Plan.model_validate(broken))
    report = validate_plan(res.plan, ctx)
    assert report.valid, report.violations
    assert content(res.plan) == content(want)
    assert edges(res.plan) == edges(want)
    assert set(res.repairs) <= set(REPAIR_KINDS)


def test_cycles_lose_one_edge_and_files_named_as_edges_point_at_their_first_change():
    p = good_plan()
    handler, client = p["affected_files"][0]["changes"][0], p["affected_files"][1]["changes"][0]
    handler["depends_on"] = ["src/client.py:Client.send"]  # handler <-> client: a cycle
    client["depends_on"].append("src/retry.py")  # a file, not 'path:symbol'
    res = repair_plan(Plan.model_validate(p))
    assert validate_plan(res.plan, CTX).valid
    assert res.repairs["dropped_cycle_edge"] == 1 and res.repairs["edge_to_file"] == 1
    assert ("src/client.py:Client.send", "src/retry.py:backoff") in edges(res.plan)
    order = res.plan.execution_order
    assert order.index("src/retry.py") < order.index("src/client.py")


def test_content_errors_are_not_repaired():
    p = good_plan()
    p["affected_files"][1]["changes"][0]["symbol"] = "Client.recv"  # src/client.py has no such symbol
    p["execution_order"] = []
    res = repair_plan(Plan.model_validate(p))
    assert validate_plan(res.plan, CTX).codes == ["unknown_symbol"]


# a stage-4 answer of the SmolLM2 adapter trained on click (held-out task 029bbeda76aa), as it came out
CLICK_ANSWER = (
    '[REASONING] Files with changes are ordered by their file size.\n[PLAN] {"task_summary":"Hide UNSET in the '
    'callback","affected_files":[{"path":"CHANGES.rst","role":"primary","changes":[{"symbol":"<module>","action":'
    '"modify","description":"Update top-level code (imports, constants or module setup).","depends_on":['
    '"README.md"],"depended_by":[]},{"symbol":"test_formatting.py","action":"add","description":"Add function '
    '`test_formatting`.","depends_on":["CHANGES.rst"],"depended_by":[]}]},{"path":"tests/test_options.py","role":'
    '"primary","changes":[{"symbol":"<module>","action":"modify","description":"Update top-level code (imports, '
    'constants or module setup).","depends_on":["CHANGES.rst"],"depended_by":[]}]},{"path":"tests/test_options.py",'
    '"role":"supporting","changes":[{"symbol":"<module>","action":"add","description":"Add function '
    '`test_formatting`.","depends_on":["README.md"],"depended_by":[]}]}],"execution_order":["CHANGES.rst",'
    '"tests/test_options.py","tests/test_options.py"],"rationale":"The gold change touches 3 files."}'
)


def test_a_real_student_plan_is_repaired_and_measured_both_ways():
    out, err = parse_student_output("plan_generation", CLICK_ANSWER)
    assert err is None
    ctx = PlanContext(tree={"CHANGES.rst", "README.md", "tests/test_options.py"}, symbols={})
    before = validate_plan(out.plan, ctx)
    assert {"bad_edge", "duplicate_file", "order_duplicate_file"} <= set(before.codes)
    res = repair_plan(out.plan)
    assert validate_plan(res.plan, ctx).valid
    assert [f.path for f in res.plan.affected_files] == ["CHANGES.rst", "tests/test_options.py"]
    assert res.plan.execution_order == ["CHANGES.rst", "tests/test_options.py"]
    assert res.repairs["merged_file"] == 1 and res.repairs["dropped_edge"] == 2  # README.md is not in the plan
    m = plan_metrics(out.plan, res.plan, ctx)
    assert m["structural_validity"] == 0.0 and m["repaired_validity"] == 1.0
    assert "merged_file=1" in m["repairs"] and "duplicate_file" in m["violations"]

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from distill_assets.plans.schema import Plan
from distill_assets.plans.validator import VIOLATION_CODES, PlanContext, find_cycle, looks_like_code, validate_plan

CTX = PlanContext(
    tree={"src/handler.py", "src/client.py", "tests/test_client.py", "README.md"},
    symbols={
        "src/handler.py": {"RequestHandler", "RequestHandler.process"},
        "src/client.py": {"Client", "Client.send"},
        "tests/test_client.py": {"test_send"},
    },
)


def good_plan() -> dict:
    return {
        "task_summary": "Add a timeout to request processing",
        "affected_files": [
            {
                "path": "src/handler.py",
                "role": "primary",
                "changes": [
                    {
                        "symbol": "RequestHandler.process",
                        "action": "modify",
                        "description": "Accept a timeout.",
                        "depends_on": [],
                        "depended_by": ["src/client.py:Client.send"],
                    }
                ],
            },
            {
                "path": "src/client.py",
                "role": "supporting",
                "changes": [
                    {
                        "symbol": "Client.send",
                        "action": "modify",
                        "description": "Pass the timeout on.",
                        "depends_on": ["src/handler.py:RequestHandler.process"],
                        "depended_by": [],
                    }
                ],
            },
            {
                "path": "src/retry.py",
                "role": "supporting",
                "changes": [
                    {
                        "symbol": "backoff",
                        "action": "add",
                        "description": "New helper.",
                        "depends_on": [],
                        "depended_by": [],
                    }
                ],
            },
        ],
        "execution_order": ["src/handler.py", "src/client.py", "src/retry.py"],
        "rationale": "The signature change propagates from handler to client.",
    }


def codes(plan) -> list[str]:
    return validate_plan(plan, CTX).codes


def test_a_perfect_plan_is_valid():
    report = validate_plan(json.dumps(good_plan()), CTX)
    assert report.valid, report.violations
    assert isinstance(report.plan, Plan)


def test_parse_errors_name_the_field():
    assert codes("{not json") == ["parse_error"]
    p = good_plan()
    p["affected_files"][0]["changes"][0]["action"] = "rewrite"
    report = validate_plan(p, CTX)
    assert report.codes == ["parse_error"] and "affected_files.0.changes.0.action" in report.violations[0].message
    p = good_plan()
    p["extra"] = 1
    assert codes(p) == ["parse_error"]


def test_unknown_file_and_symbol():
    p = good_plan()
    p["affected_files"][2]["changes"][0]["action"] = "modify"  # src/retry.py does not exist
    assert "unknown_file" in codes(p)
    p = good_plan()
    p["affected_files"][0]["changes"][0]["symbol"] = "RequestHandler.handle"
    p["affected_files"][1]["changes"][0]["depends_on"] = ["src/handler.py:RequestHandler.handle"]
    assert codes(p) == ["unknown_symbol"]


def test_module_pseudo_symbol_exists_in_every_tree_file():
    p = good_plan()
    p["affected_files"].append(
        {
            "path": "README.md",
            "role": "supporting",
            "changes": [{"symbol": "<module>", "action": "modify", "description": "Document it."}],
        }
    )
    p["execution_order"].append("README.md")
    assert validate_plan(p, CTX).valid
    p["affected_files"][-1]["changes"][0]["symbol"] = "Intro"  # README.md has no symbol index
    assert codes(p) == ["unknown_symbol"]


def test_add_of_existing_symbol():
    p = good_plan()
    p["affected_files"][1]["changes"].append({"symbol": "Client", "action": "add", "description": "again"})
    assert codes(p) == ["add_existing_symbol"]


def test_missing_file_in_order_and_wrong_order():
    p = good_plan()
    p["execution_order"] = ["src/handler.py", "src/client.py"]
    assert codes(p) == ["order_missing_file"]
    p = good_plan()
    p["execution_order"] = ["src/client.py", "src/handler.py", "src/retry.py"]
    assert codes(p) == ["order_violates_edge"]
    p = good_plan()
    p["execution_order"] = good_plan()["execution_order"] + ["src/handler.py", "docs/x.md"]
    assert codes(p) == ["order_duplicate_file", "order_unknown_file"]


def test_edges_must_be_mutual_and_point_into_the_plan():
    p = good_plan()
    p["affected_files"][0]["changes"][0]["depended_by"] = []
    assert codes(p) == ["edge_not_mutual"]
    p = good_plan()
    p["affected_files"][1]["changes"][0]["depends_on"].append("src/other.py:x")
    assert codes(p) == ["dangling_edge"]
    p = good_plan()
    p["affected_files"][1]["changes"][0]["depends_on"].append("no-colon")
    assert codes(p) == ["bad_edge"]


def test_cyclic_edges():
    p = good_plan()
    a, b = p["affected_files"][0]["changes"][0], p["affected_files"][1]["changes"][0]
    a["depends_on"] = ["src/client.py:Client.send"]
    b["depended_by"] = ["src/handler.py:RequestHandler.process"]
    assert "cycle" in codes(p)


def test_code_in_plan():
    p = good_plan()
    p["affected_files"][0]["changes"][0]["description"] = "```python\ndef process(self, timeout):\n    pass\n```"
    assert codes(p) == ["code_in_plan"]
    p = good_plan()
    p["rationale"] = "diff --git a/x b/x\n@@ -1 +1 @@"
    assert codes(p) == ["code_in_plan"]
    assert not looks_like_code("Rename `Cart.total` to `Cart.sum` and update callers in cart.py.")


def test_find_cycle():
    assert find_cycle("abc", {"a": ["b"], "b": ["c"]}) is None
    assert find_cycle("abc", {"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle("a", {"a": ["a"]}) == ["a", "a"]


# ---------------------------------------------------------------- property tests


@st.composite
def dag_plans(draw):
    """A random valid plan over a random DAG of symbol changes, with its context."""
    n_files = draw(st.integers(1, 5))
    files = [f"pkg/m{i}.py" for i in range(n_files)]
    changes = []  # (file index, symbol)
    for fi in range(n_files):
        for si in range(draw(st.integers(1, 3))):
            changes.append((fi, f"f{si}"))
    # edges only from later to earlier changes in a global order -> acyclic; file order = index order
    edges = set()
    for a in range(len(changes)):
        for b in range(a):
            if changes[b][0] <= changes[a][0] and draw(st.booleans()):
                edges.add((a, b))  # a depends on b
    ref = lambda i: f"{files[changes[i][0]]}:{changes[i][1]}"
    actions = draw(
        st.lists(st.sampled_from(["modify", "delete", "rename"]), min_size=len(changes), max_size=len(changes))
    )
    affected = []
    for fi, path in enumerate(files):
        chs = []
        for ci, (f, sym) in enumerate(changes):
            if f != fi:
                continue
            chs.append(
                {
                    "symbol": sym,
                    "action": actions[ci],
                    "description": f"Update {sym}.",
                    "depends_on": sorted(ref(b) for a, b in edges if a == ci),
                    "depended_by": sorted(ref(a) for a, b in edges if b == ci),
                }
            )
        affected.append({"path": path, "role": "primary", "changes": chs})
    plan = {
        "task_summary": "Random change",
        "affected_files": affected,
        "execution_order": list(files),
        "rationale": "Generated.",
    }
    ctx = PlanContext(tree=set(files), symbols={p: {s for f, s in changes if files[f] == p} for p in files})
    return plan, ctx, sorted(edges), changes, files


@settings(max_examples=150, deadline=None)
@given(dag_plans())
def test_generated_dag_plans_are_valid(case):
    plan, ctx, *_ = case
    report = validate_plan(plan, ctx)
    assert report.valid, report.violations


@settings(max_examples=150, deadline=None)
@given(dag_plans(), st.data())
def test_each_mutation_is_reported_by_name(case, data):
    plan, ctx, edges, changes, files = case
    mutation = data.draw(st.sampled_from(["drop_back_edge", "reverse_order", "cycle", "unknown_symbol", "drop_order"]))
    change_objs = [c for f in plan["affected_files"] for c in f["changes"]]
    if mutation == "drop_back_edge":
        if not edges:
            return
        a, b = data.draw(st.sampled_from(edges))
        target = [
            c
            for f in plan["affected_files"]
            for c in f["changes"]
            if f"{f['path']}:{c['symbol']}" == f"{files[changes[b][0]]}:{changes[b][1]}"
        ][0]
        target["depended_by"] = []
        expected = "edge_not_mutual"
    elif mutation == "reverse_order":
        cross = [(a, b) for a, b in edges if changes[a][0] != changes[b][0]]
        if not cross:
            return
        plan["execution_order"] = list(reversed(plan["execution_order"]))
        expected = "order_violates_edge"
    elif mutation == "cycle":
        c = data.draw(st.sampled_from(change_objs))
        path = [f["path"] for f in plan["affected_files"] if c in f["changes"]][0]
        me = f"{path}:{c['symbol']}"
        c["depends_on"] = sorted(set(c["depends_on"]) | {me})
        c["depended_by"] = sorted(set(c["depended_by"]) | {me})
        expected = "cycle"
    elif mutation == "unknown_symbol":
        c = data.draw(st.sampled_from(change_objs))
        c["symbol"] = c["symbol"] + "_missing"
        c["depends_on"], c["depended_by"] = [], []
        for other in change_objs:  # keep edges consistent: drop any pointing at the renamed change
            other["depends_on"] = [r for r in other["depends_on"] if not r.endswith(":" + c["symbol"][:-8])]
            other["depended_by"] = [r for r in other["depended_by"] if not r.endswith(":" + c["symbol"][:-8])]
        expected = "unknown_symbol"
    else:
        plan["execution_order"] = plan["execution_order"][1:]
        expected = "order_missing_file"
    report = validate_plan(plan, ctx)
    assert expected in report.codes, (mutation, report.violations)
    assert set(report.codes) <= set(VIOLATION_CODES)

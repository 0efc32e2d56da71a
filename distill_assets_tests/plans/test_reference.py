import pytest

from distill_assets.config import ContextConfig, MiningConfig, RepoSource, SplitConfig, load_config
from distill_assets.contexts.build import build_contexts
from distill_assets.mining.miner import FileClassifier, mine_repository, open_repository
from distill_assets.plans.reference import build_reference_plans
from distill_assets.plans.schema import Plan
from distill_assets.tasks.build import build_change_tasks, mined_table
from distill_assets.tasks.external import read_external_sources


@pytest.fixture
def shop_plans(shop_repo, tmp_path):
    source = RepoSource(name="shop", path=shop_repo.path)
    mined = mined_table(mine_repository(open_repository(source, tmp_path), source, MiningConfig()))
    ext, _ = read_external_sources(load_config().sources.external)
    tasks = build_change_tasks([mined], ext, MiningConfig(), SplitConfig())
    contexts, _ = build_contexts(tasks, ContextConfig())
    refs = build_reference_plans(tasks, contexts, is_test=FileClassifier(MiningConfig()).is_test)
    by_desc = {}
    for t, r in zip(tasks.iter_rows(named=True), refs.iter_rows(named=True)):
        assert t["task_id"] == r["task_id"]
        by_desc[t["description"].splitlines()[0]] = r
    return by_desc


def plan_of(row) -> Plan:
    return Plan.model_validate_json(row["plan_json"])


def changes(plan: Plan) -> dict[str, dict[str, str]]:
    return {f.path: {c.symbol: c.action for c in f.changes} for f in plan.affected_files}


def test_every_reference_plan_passes_the_validator(shop_plans):
    built = [r for r in shop_plans.values() if r["status"] == "ok"]
    assert len(built) >= 7
    for r in built:
        assert r["valid"], (r["task_id"], r["violations"])


def test_signature_change_propagates_pricing_to_cart_to_tests(shop_plans):
    row = shop_plans["Add discount to gross()"]
    plan = plan_of(row)
    assert changes(plan) == {
        "shop/pricing.py": {"net": "modify", "gross": "modify"},
        "shop/cart.py": {"Cart.__init__": "modify", "Cart.total": "modify"},
        "tests/test_cart.py": {"CartTest.test_discount": "add"},
    }
    refs = {f"{f.path}:{c.symbol}": c for f in plan.affected_files for c in f.changes}
    assert "shop/pricing.py:gross" in refs["shop/cart.py:Cart.total"].depends_on
    assert "shop/pricing.py:net" in refs["shop/pricing.py:gross"].depends_on
    assert "shop/cart.py:Cart.total" in refs["shop/pricing.py:gross"].depended_by
    assert plan.execution_order == ["shop/pricing.py", "shop/cart.py", "tests/test_cart.py"]
    roles = {f.path: f.role for f in plan.affected_files}
    assert roles["shop/pricing.py"] == "primary" and roles["tests/test_cart.py"] == "supporting"
    assert row["difficulty"] in ("medium", "hard") and row["n_cross_file_edges"] >= 2


def test_rename_addition_and_deletion(shop_plans):
    plan = plan_of(shop_plans["Rename format.js to money.js and add currency"])
    ch = changes(plan)
    assert ch["web/format.js"] == {"<module>": "rename"}  # listed under its base path
    assert ch["web/view.js"] == {"render": "add"}
    order = plan.execution_order
    assert order.index("web/view.js") < order.index("web/test/view.test.js")
    plan = plan_of(shop_plans["Remove checkout module; Cart.checkout replaces it"])
    ch = changes(plan)
    assert ch["shop/checkout.py"] == {"<module>": "delete"}
    assert ch["shop/cart.py"] == {"Cart.checkout": "add"}


def test_external_tasks_get_plans_from_inline_contents(shop_plans):
    cpf = shop_plans["Add width parameter to wrap()"]
    plan = plan_of(cpf)
    assert changes(plan) == {"textkit/wrap.py": {"wrap": "modify"}, "textkit/cli.py": {"main": "modify"}}
    main = plan.affected_files[[f.path for f in plan.affected_files].index("textkit/cli.py")].changes[0]
    assert main.depends_on == ["textkit/wrap.py:wrap"]
    assert plan.execution_order == ["textkit/wrap.py", "textkit/cli.py"]
    go = plan_of(shop_plans["Add Store.Len and use it in Stats"])
    assert changes(go) == {"store/store.go": {"Store.Len": "add"}, "store/stats.go": {"Stats": "modify"}}
    # SWE-bench rows without a local checkout have no context, so no plan: counted, not guessed
    swe = shop_plans["divide() raises ZeroDivisionError instead of returning None"]
    assert swe["status"] == "skipped" and "no_snapshot" in swe["detail"]


def test_swebench_instances_with_a_local_checkout_get_contexts_and_plans(git_repo, tmp_path):
    import json

    from distill_assets.config import ExternalSource

    git_repo.commit(
        "base",
        {
            "calc/ops.py": "def divide(a, b):\n    return a / b\n",
            "calc/report.py": "from calc.ops import divide\n\n\ndef ratio(a, b):\n    return divide(a, b)\n",
            "tests/test_ops.py": "from calc.ops import divide\n\n\ndef test_divide():\n    assert divide(4, 2) == 2\n",
        },
    )
    base = git_repo.head()
    git_repo.write(
        {
            "calc/ops.py": "def divide(a, b):\n    if b == 0:\n        return None\n    return a / b\n",
            "calc/report.py": "from calc.ops import divide\n\n\ndef ratio(a, b):\n    value = divide(a, b)\n    return 0.0 if value is None else value\n",
        }
    )
    patch = git_repo.git("diff")
    git_repo.git("checkout", "--", ".")
    git_repo.write(
        {
            "tests/test_ops.py": "from calc.ops import divide\n\n\ndef test_divide():\n    assert divide(4, 2) == 2\n\n\ndef test_zero():\n    assert divide(1, 0) is None\n"
        }
    )
    test_patch = git_repo.git("diff")
    git_repo.git("checkout", "--", ".")
    row = {
        "repo": "acme/calc",
        "instance_id": "acme__calc-1",
        "base_commit": base,
        "patch": patch,
        "test_patch": test_patch,
        "problem_statement": "divide by zero crashes",
        "hints_text": "",
        "created_at": "2024-01-01T00:00:00Z",
        "version": "0.1",
        "environment_setup_commit": base,
        "FAIL_TO_PASS": json.dumps(["tests/test_ops.py::test_zero"]),
        "PASS_TO_PASS": json.dumps(["tests/test_ops.py::test_divide"]),
    }
    src = tmp_path / "swe.jsonl"
    src.write_text(json.dumps(row) + "\n")
    ext, _ = read_external_sources([ExternalSource(kind="swebench", path=src, checkouts={"acme/calc": git_repo.path})])
    tasks = build_change_tasks([], ext, MiningConfig(), SplitConfig())
    contexts, _ = build_contexts(tasks, ContextConfig())
    assert contexts["status"].to_list() == ["ok"]
    refs = build_reference_plans(tasks, contexts, is_test=FileClassifier(MiningConfig()).is_test)
    r = refs.row(0, named=True)
    assert r["status"] == "ok" and r["valid"], r["violations"]
    plan = plan_of(r)
    assert changes(plan) == {
        "calc/ops.py": {"divide": "modify"},
        "calc/report.py": {"ratio": "modify"},
        "tests/test_ops.py": {"test_zero": "add"},
    }
    assert plan.execution_order == ["calc/ops.py", "calc/report.py", "tests/test_ops.py"]


from distill_assets.config import ContextConfig, MiningConfig, RepoSource, SplitConfig
from distill_assets.contexts.build import build_contexts
from distill_assets.mining.miner import mine_repository, open_repository
from distill_assets.tasks.build import build_change_tasks, mined_table


def contexts_for(repo, tmp_path, **ctx_kwargs):
    source = RepoSource(name="shop", path=repo.path)
    mined = mined_table(mine_repository(open_repository(source, tmp_path), source, MiningConfig()))
    tasks = build_change_tasks([mined], None, MiningConfig(), SplitConfig())
    ctx, cache = build_contexts(tasks, ContextConfig(**ctx_kwargs))
    return tasks, ctx, cache


def test_context_has_tree_candidates_and_symbols_at_the_base(shop_repo, tmp_path):
    tasks, ctx, cache = contexts_for(shop_repo, tmp_path)
    row = dict(zip(tasks["description"].to_list(), ctx.iter_rows(named=True)))
    c = next(v for k, v in row.items() if k.startswith("Add discount"))
    assert c["status"] == "ok"
    assert "shop/pricing.py" in c["file_tree"] and "shop/checkout.py" not in c["file_tree"]  # base, not after
    paths = [x["path"] for x in c["candidates"]]
    assert {"shop/pricing.py", "shop/cart.py", "tests/test_cart.py"} <= set(paths)
    assert "shop/__init__.py" in paths  # a distractor from the same folder
    names = {(s["path"], s["name"]) for s in c["symbols"]}
    assert ("shop/cart.py", "Cart.total") in names and ("shop/pricing.py", "gross") in names
    pricing = next(x for x in c["candidates"] if x["path"] == "shop/pricing.py")
    assert "def gross(price):" in pricing["content"]  # the base version
    assert cache.hits > 0  # unchanged blobs are parsed once across tasks


def test_the_token_budget_bounds_file_contents(git_repo, tmp_path):
    big = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(400))
    git_repo.commit("init", {"a/big.py": big, "a/small.py": "def s():\n    return 1\n"})
    git_repo.commit("Change both", {"a/big.py": big.replace("x + 3\n", "x + 33\n"),
                                    "a/small.py": "def s():\n    return 2\n"})
    _, ctx, _ = contexts_for(git_repo, tmp_path, token_budget=500, chars_per_token=4.0)
    c = ctx.row(0, named=True)
    assert c["context_tokens"] <= 500
    by = {x["path"]: x for x in c["candidates"]}
    assert by["a/big.py"]["truncated"] or by["a/small.py"]["truncated"]
    assert len({s["name"] for s in c["symbols"] if s["path"] == "a/big.py"}) == 400  # index is not budgeted


def test_candidate_order_does_not_reveal_the_changed_files(shop_repo, tmp_path):
    tasks, ctx, _ = contexts_for(shop_repo, tmp_path, max_distractors=6)
    first_is_changed = []
    for t, c in zip(tasks.iter_rows(named=True), ctx.iter_rows(named=True)):
        paths = [x["path"] for x in c["candidates"]]
        if len(paths) > len(t["plan_files"]):
            first_is_changed.append(paths[0] in t["plan_files"])
    assert first_is_changed and not all(first_is_changed)


def test_files_mentioning_a_changed_module(shop_repo):
    from distill_assets.tasks.snapshot import GitSnapshot, InlineSnapshot

    snap = GitSnapshot(shop_repo.path, "HEAD")
    assert snap.files_mentioning(["gross"]) == {"shop/pricing.py", "shop/cart.py"}
    assert snap.files_mentioning(["gro"]) == set()  # whole words only
    inline = InlineSnapshot({"a.py": "import pricing\n", "b.py": "pricingx = 1\n"})
    assert inline.files_mentioning(["pricing"]) == {"a.py"}

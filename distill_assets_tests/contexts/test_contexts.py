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
    git_repo.commit(
        "Change both", {"a/big.py": big.replace("x + 3\n", "x + 33\n"), "a/small.py": "def s():\n    return 2\n"}
    )
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


def test_the_budget_is_shared_so_one_long_file_cannot_empty_the_others():
    from distill_assets.contexts.build import share_budget

    assert share_budget([100, 200], 1000) == [100, 200]  # all fit: whole
    assert share_budget([100, 5000, 9000], 1000) == [100, 450, 450]  # the small one whole, the rest split
    assert share_budget([50, 400, 5000], 1000) == [50, 400, 550]
    assert sum(share_budget([3000] * 7, 2500)) <= 2500 and min(share_budget([3000] * 7, 2500)) == 357
    assert share_budget([900] * 30, 1000) == [128] * 7 + [0] * 23  # under the floor: first come, 128 each


def test_a_long_changelog_in_the_change_does_not_take_the_whole_budget(git_repo, tmp_path):
    """Seen on click: CHANGES.rst (tens of thousands of tokens) is part of most changes and came first, so
    it took the whole context budget and every code candidate was left "(contents not available)"."""
    changes = "".join(f"Version 1.{i}\n-----------\n\n-   Fixed issue {i} in the parser.\n\n" for i in range(600))
    code = "".join(f"def handler_{i}(x):\n    return x * {i}\n\n\n" for i in range(150))
    files = {
        "CHANGES.rst": changes,
        "pkg/core.py": code,
        "pkg/util.py": "def u():\n    return 1\n",
        "pkg/other.py": code.replace("handler", "other"),
        "pkg/more.py": code.replace("handler", "more"),
    }
    git_repo.commit("init", files)
    git_repo.commit(
        "Fix handler 3",
        {
            "CHANGES.rst": "Unreleased\n\n-   Fix handler 3.\n\n" + changes,
            "pkg/core.py": code.replace("x * 3\n", "x * 33\n"),
            "pkg/util.py": "def u():\n    return 2\n",
        },
    )
    _, ctx, _ = contexts_for(git_repo, tmp_path, token_budget=1500, chars_per_token=4.0, max_distractors=2)
    c = ctx.row(0, named=True)
    by = {x["path"]: x for x in c["candidates"]}
    assert {"CHANGES.rst", "pkg/core.py", "pkg/util.py"} <= set(by) and len(by) >= 4
    assert all(x["content"] for x in by.values()), {p: x["tokens"] for p, x in by.items()}  # every file has text
    assert by["pkg/util.py"]["truncated"] is False  # a small file stays whole
    assert "def handler_0(x):" in by["pkg/core.py"]["content"] and by["pkg/core.py"]["truncated"]
    big = [x["tokens"] for p, x in by.items() if p != "pkg/util.py"]
    assert max(big) - min(big) <= 40  # the long files get equal shares, changed or not
    assert c["context_tokens"] <= 1500

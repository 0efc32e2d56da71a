"""The execution sandbox, for real, in both backends: escapes contained, gold patches reproduce fail->pass."""

import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import polars as pl
import pytest

from distill_assets.config import load_config
from distill_assets.mining.miner import mine_repository, open_repository
from distill_assets.sandbox import Limits, execute, get_backend, partition_patch, select_tests
from distill_assets.tasks.build import build_change_tasks, mined_table

BACKENDS = ["bwrap", "docker"]
UNITTEST = "python3 -m unittest discover -s tests -t . -v"


def survivors(token: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", token], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


ATTACKS = {
    "socket": """
    def test_attack(self):
        import socket
        s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
        s.sendall(b"escaped")
""",
    "write_outside": """
    def test_attack(self):
        with open("{outside}/escaped.txt", "w") as f:
            f.write("escaped")
""",
    "fork_bomb": """
    def test_attack(self):
        import os
        kids = 0
        for _ in range(5000):  # {token}
            if os.fork() == 0:
                import time
                time.sleep(30)
                os._exit(0)
            kids += 1
        self.assertGreater(kids, 4000)
""",
    "endless_loop": """
    def test_attack(self):
        while True:  # {token}
            pass
""",
    "memory_hog": """
    def test_attack(self):
        block = bytearray(1 << 30)  # 1 GiB over a 256 MiB limit
        block[-1] = 1
        self.assertEqual(len(block), 1 << 30)
""",
    "read_host_file": """
    def test_attack(self):
        with open("{secret}") as f:  # a world-readable file of the host, outside what tests need
            self.assertIn("sk-", f.read())
""",
    "sleeping_child": """
    def test_attack(self):
        import subprocess
        subprocess.Popen(["sh", "-c", "sleep 4; echo escaped > {outside}/late.txt; exec sleep 300 # {token}"],
                         start_new_session=True)
        self.fail("a child was left behind on purpose")
""",
}


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.5)
    got: list[bytes] = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                got.append(conn.recv(100) or b"connected")
            except OSError:
                pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield srv.getsockname()[1], got
    stop.set()
    t.join()
    srv.close()


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_escape_attempts_are_contained(attack, backend_name, git_repo, tmp_path, listener, request):
    port, received = listener
    outside = tmp_path / "outside"
    outside.mkdir()
    os.chmod(outside, 0o777)  # only the sandbox may stop the write, not file permissions
    token = f"distill-escape-{uuid.uuid4().hex[:8]}"
    # like a project's .env with a teacher key: mode 644, outside /tmp, readable by the sandbox user on the host
    secret = Path(__file__).resolve().parents[2] / f".{token}.env"
    secret.write_text("DISTILL_TEACHER_KEY=sk-secret\n")
    secret.chmod(0o644)
    request.addfinalizer(lambda: secret.unlink(missing_ok=True))
    body = ATTACKS[attack].format(port=port, outside=outside, token=token, secret=secret)
    git_repo.commit(
        "attack",
        {
            "tests/__init__.py": "",
            "tests/test_attack.py": "import unittest\n\n\nclass Attack(unittest.TestCase):" + body,
        },
    )
    backend = get_backend(backend_name)
    limits = Limits(timeout_s=8 if attack == "endless_loop" else 30, memory_mb=256, max_processes=64)
    res = execute(str(git_repo.path), "HEAD", "", [UNITTEST], backend, limits)
    assert res.pass_rate == 0.0, (attack, res.status, res.log[-1500:])
    if attack == "endless_loop":
        assert res.status == "timeout"
    if attack == "read_host_file":  # not refused: absent (only /usr, /lib*, /bin, some of /etc and mounts exist)
        assert "No such file" in res.log, res.log[-1500:]
    assert received == []  # nothing reached the host's network
    time.sleep(5 if attack == "sleeping_child" else 0.5)
    assert not list(outside.iterdir())  # nothing written outside the snapshot, not even later
    assert survivors(token) == []  # nothing left running
    if backend_name == "docker":
        assert (
            subprocess.run(
                ["docker", "ps", "-q", "--filter", "name=distill-sbx-"], capture_output=True, text=True
            ).stdout.strip()
            == ""
        )


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_a_diff_that_does_not_apply(backend_name, shop_repo):
    res = execute(
        str(shop_repo.path),
        "HEAD",
        "diff --git a/nope.py b/nope.py\n--- a/nope.py\n+++ b/nope.py\n@@ -1 +1 @@\n-x\n+y\n",
        [UNITTEST],
        get_backend(backend_name),
        Limits(timeout_s=30),
    )
    assert res.status == "did_not_apply" and res.pass_rate == 0.0 and "nope.py" in res.log


def demo_tasks(tmp_path) -> pl.DataFrame:
    cfg = load_config()
    source = cfg.sources.repos[0]
    repo = open_repository(source, tmp_path / "cache")
    mined = mined_table(mine_repository(repo, source, cfg.mining))
    return build_change_tasks([mined], None, cfg.mining, cfg.split)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_gold_patches_reproduce_fail_to_pass_on_the_embedded_default(backend_name, tmp_path):
    cfg = load_config()
    commands = cfg.sandbox.test_commands["demo-shop"]
    tasks = demo_tasks(tmp_path).filter(pl.col("has_tests"))
    if backend_name == "docker":
        tasks = tasks.head(6)  # the same code path; containers cost ~1 s more per run
    backend = get_backend(backend_name)
    with_f2p = 0
    for t in tasks.iter_rows(named=True):
        sel = select_tests(
            t["repo_path"],
            t["base_commit"],
            t["gold_patch"],
            t["test_files"],
            commands,
            backend,
            Limits(timeout_s=60),
            cache_dir=tmp_path / "selection",
        )
        assert sel.selected, t["task_id"]
        code, tests = partition_patch(t["gold_patch"], t["test_files"])
        gold = execute(
            t["repo_path"],
            t["base_commit"],
            code,
            commands,
            backend,
            Limits(timeout_s=60),
            test_patch=tests,
            selected=sel.selected,
        )
        assert gold.status == "passed" and gold.pass_rate == 1.0, (t["task_id"], gold.log[-2000:])
        if sel.fail_to_pass:
            with_f2p += 1
            base = execute(
                t["repo_path"],
                t["base_commit"],
                "",
                commands,
                backend,
                Limits(timeout_s=60),
                test_patch=tests,
                selected=sel.fail_to_pass,
            )
            assert base.pass_rate < 1.0, t["task_id"]
    assert with_f2p >= len(tasks) * 0.8, (with_f2p, len(tasks))


def test_selection_is_cached(shop_repo, tmp_path):
    t = demo_tasks(tmp_path).filter(pl.col("has_tests")).row(0, named=True)
    backend = get_backend("bwrap")
    cmds = load_config().sandbox.test_commands["demo-shop"]
    t0 = time.time()
    a = select_tests(
        t["repo_path"],
        t["base_commit"],
        t["gold_patch"],
        t["test_files"],
        cmds,
        backend,
        Limits(),
        cache_dir=tmp_path / "sel",
    )
    first = time.time() - t0
    t0 = time.time()
    b = select_tests(
        t["repo_path"],
        t["base_commit"],
        t["gold_patch"],
        t["test_files"],
        cmds,
        backend,
        Limits(),
        cache_dir=tmp_path / "sel",
    )
    assert a.fail_to_pass == b.fail_to_pass and len(list((tmp_path / "sel").iterdir())) == 1
    assert time.time() - t0 < first


def test_the_docker_sandbox_through_dagster_docker_pipes(tmp_path, listener):
    """The scale-out path: a Dagster step launches the sandbox container with PipesDockerClient."""
    import dagster as dg

    port, received = listener
    cfg = load_config()
    commands = cfg.sandbox.test_commands["demo-shop"]
    t = demo_tasks(tmp_path).filter(pl.col("has_tests")).row(0, named=True)
    code, tests = partition_patch(t["gold_patch"], t["test_files"])
    escape = (
        "diff --git a/tests/test_zz_escape.py b/tests/test_zz_escape.py\nnew file mode 100644\n--- /dev/null\n"
        "+++ b/tests/test_zz_escape.py\n@@ -0,0 +1,7 @@\n+import socket\n+import unittest\n+\n+\n"
        "+class Escape(unittest.TestCase):\n+    def test_escape(self):\n"
        f"+        socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'x')\n"
    )

    @dg.asset
    def sandboxed(context: dg.AssetExecutionContext):
        from distill_assets.defs.sandbox import backends

        backend = backends(context)("dagster_docker", cfg.sandbox.docker_image)
        sel = select_tests(
            t["repo_path"], t["base_commit"], t["gold_patch"], t["test_files"], commands, backend, Limits(timeout_s=60)
        )
        gold = execute(
            t["repo_path"],
            t["base_commit"],
            code,
            commands,
            backend,
            Limits(timeout_s=60),
            test_patch=tests,
            selected=sel.selected,
        )
        bad = execute(
            t["repo_path"],
            t["base_commit"],
            code + escape,
            commands,
            backend,
            Limits(timeout_s=60),
            test_patch=tests,
            selected=["tests/test_zz_escape.py::Escape::test_escape"],
        )
        # a step that opened Pipes sessions returns an explicit Output
        return dg.Output(
            {
                "f2p": len(sel.fail_to_pass),
                "gold": gold.pass_rate,
                "gold_status": gold.status,
                "escape": bad.pass_rate,
                "backend": gold.backend,
            }
        )

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [sandboxed],
            instance=instance,
            resources={"io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "io"))},
        )
        assert result.success
        out = result.output_for_node("sandboxed")
    assert out["backend"] == "dagster_docker" and out["f2p"] > 0
    assert out["gold"] == 1.0 and out["gold_status"] == "passed"
    assert out["escape"] == 0.0 and received == []
    assert (
        subprocess.run(
            ["docker", "ps", "-aq", "--filter", "label=distill-sandbox"], capture_output=True, text=True
        ).stdout.strip()
        == ""
    )


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_a_test_module_that_cannot_import_is_an_error_never_a_pass(backend_name, git_repo):
    ok = "import unittest\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertTrue(True)\n"
    git_repo.commit(
        "tests",
        {
            "tests/__init__.py": "",
            "tests/test_ok.py": ok,
            "tests/test_needs_dep.py": "import typeguard_not_installed\n" + ok,
        },
    )
    res = execute(str(git_repo.path), "HEAD", "", [UNITTEST], get_backend(backend_name), Limits(timeout_s=60))
    assert res.tests == {"tests/test_ok.py::T::test_a": "passed", "tests/test_needs_dep.py::<collection>": "error"}
    assert res.status == "tests_failed" and res.pass_rate == 0.5


def test_a_missing_report_is_an_error_of_what_it_covers(git_repo):
    ok = "import unittest\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        pass\n"
    git_repo.commit("tests", {"tests/__init__.py": "", "tests/test_ok.py": ok})
    # the node command finds no folder and writes no report: its share is an error, the unittest share stands
    res = execute(
        str(git_repo.path), "HEAD", "", [UNITTEST, "node --test web/test/"], get_backend("bwrap"), Limits(timeout_s=60)
    )
    assert res.tests == {"tests/test_ok.py::T::test_a": "passed", "web/test/::<collection>": "error"}
    assert res.status == "tests_failed" and "no report" in res.log
    only = execute(
        str(git_repo.path), "HEAD", "", ["node --test web/test/"], get_backend("bwrap"), Limits(timeout_s=60)
    )
    assert only.status == "crashed" and only.pass_rate == 0.0

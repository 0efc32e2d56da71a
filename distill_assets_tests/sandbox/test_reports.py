"""Per-test outcomes from structured reports: real pytest, unittest and node runs where the runner is here, the
documented report shapes of jest, mocha and go where it is not."""

import json
import subprocess
import sys

from distill_assets.sandbox import reports
from distill_assets.sandbox.plans import plan_for_runner, runnable_test_files

PASSING = "def test_ok():\n    assert True\n\n\nclass TestC:\n    def test_m(self):\n        assert 1 == 2\n"


def test_pytest_junit_from_a_real_run(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(PASSING)
    (tmp_path / "tests" / "test_broken.py").write_text("import not_a_module_here\n\n\ndef test_x():\n    pass\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--continue-on-collection-errors",
            "-o",
            "junit_family=xunit1",
            f"--junitxml={tmp_path / 'j.xml'}",
            "tests",
        ],
        cwd=tmp_path,
        capture_output=True,
    )
    out = reports.parse_junit_pytest((tmp_path / "j.xml").read_text(), root=str(tmp_path))
    assert out == {
        "tests/test_a.py::test_ok": "passed",
        "tests/test_a.py::TestC::test_m": "failed",
        "tests/test_broken.py::<collection>": "error",
    }


def test_unittest_report_from_a_real_run(tmp_path):
    from distill_assets.sandbox.runner import _UNITTEST_REPORTER

    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "__init__.py").write_text("")
    (tmp_path / "tests" / "test_u.py").write_text(
        "import unittest\n\n\nclass U(unittest.TestCase):\n    def test_a(self):\n        pass\n\n"
        "    @unittest.skip('later')\n    def test_b(self):\n        pass\n\n    def test_c(self):\n        raise KeyError\n"
    )
    (tmp_path / "tests" / "test_gone.py").write_text("import tornado_is_not_here\n")
    proc = subprocess.run(
        [sys.executable, str(_UNITTEST_REPORTER), "out.json", "discover", "-s", "tests", "-t", "."],
        cwd=tmp_path,
        capture_output=True,
    )
    assert proc.returncode == 1
    assert reports.parse_unittest_json((tmp_path / "out.json").read_text()) == {
        "tests/test_u.py::U::test_a": "passed",
        "tests/test_u.py::U::test_b": "skipped",
        "tests/test_u.py::U::test_c": "error",
        "tests/test_gone.py::<collection>": "error",
    }


def test_node_junit_from_a_real_run(tmp_path):
    (tmp_path / "t.test.js").write_text(
        "const test = require('node:test');\nconst assert = require('node:assert');\n"
        "test('a', () => {});\ntest.describe('g', () => {\n"
        "  test('b', () => assert.equal(1, 2));\n});\n"
    )
    (tmp_path / "bad.test.js").write_text("this is not javascript\n")
    for name in ("t.test.js", "bad.test.js"):
        subprocess.run(
            ["node", "--test", "--test-reporter=junit", f"--test-reporter-destination={name}.xml", name],
            cwd=tmp_path,
            capture_output=True,
        )
    assert reports.parse_junit_node((tmp_path / "t.test.js.xml").read_text(), "t.test.js") == {
        "t.test.js::a": "passed",
        "t.test.js::g > b": "failed",
    }
    assert reports.parse_junit_node((tmp_path / "bad.test.js.xml").read_text(), "bad.test.js") == {
        "bad.test.js::<collection>": "error"
    }


def test_jest_and_vitest_json():
    text = json.dumps(
        {
            "testResults": [
                {
                    "name": "/sandbox/tests/a.test.js",
                    "status": "failed",
                    "assertionResults": [
                        {"fullName": "parse > flags", "status": "passed"},
                        {"fullName": "parse > args", "status": "failed"},
                        {"ancestorTitles": ["x"], "title": "y", "status": "pending"},
                    ],
                },
                {
                    "name": "/sandbox/tests/b.test.js",
                    "status": "failed",
                    "assertionResults": [],
                    "message": "SyntaxError: Unexpected token",
                },
            ]
        }
    )
    assert reports.parse_jest_json(text) == {
        "tests/a.test.js::parse > flags": "passed",
        "tests/a.test.js::parse > args": "failed",
        "tests/a.test.js::x > y": "skipped",
        "tests/b.test.js::<collection>": "error",
    }


def test_mocha_json_and_go_json():
    mocha = "some console noise\n" + json.dumps(
        {
            "tests": [
                {"file": "/sandbox/test/a.js", "fullTitle": "cmd parses", "err": {}},
                {"file": "/sandbox/test/a.js", "fullTitle": "cmd fails", "err": {"message": "x"}},
                {"file": "/sandbox/test/a.js", "fullTitle": "cmd later", "pending": True},
            ],
            "failures": [
                {"file": "/sandbox/test/a.js", "fullTitle": "cmd fails"},
                {"file": "/sandbox/test/b.js", "fullTitle": '"before all" hook'},
            ],
        }
    )
    assert reports.parse_mocha_json(mocha) == {
        "test/a.js::cmd parses": "passed",
        "test/a.js::cmd fails": "failed",
        "test/a.js::cmd later": "skipped",
        'test/b.js::"before all" hook': "failed",
    }
    go = "\n".join(
        json.dumps(e)
        for e in [
            {"Action": "run", "Package": "ex/p", "Test": "TestA"},
            {"Action": "pass", "Package": "ex/p", "Test": "TestA"},
            {"Action": "fail", "Package": "ex/p", "Test": "TestB"},
            {"Action": "fail", "Package": "ex/p"},
            {"Action": "output", "Package": "ex/q", "Output": "# ex/q\nq.go:3: undefined: x\n"},
            {"Action": "fail", "Package": "ex/q"},
        ]
    )
    assert reports.parse_go_json(go) == {
        "ex/p::TestA": "passed",
        "ex/p::TestB": "failed",
        "ex/q::<collection>": "error",
    }


def test_plans_run_the_task_test_files_with_their_runner():
    files = ["tests/a.test.js", "tests/fixtures/x.js", "typings/index.test-d.ts", "lib/a.js"]
    runnable = runnable_test_files("jest", files)
    assert runnable == ["tests/a.test.js", "typings/index.test-d.ts"]
    plan = plan_for_runner("jest", runnable, {"DISTILL_NODE_MODULES": "/envs/k/node/node_modules"}, ["/envs/k"])
    assert plan.commands[0].startswith("[ -e node_modules ]")
    assert "node_modules/.bin/tsd" in plan.commands[1] and "__DISTILL_EXIT typings/index.test-d.ts" in plan.commands[1]
    assert "DISTILL_JEST_FILES='[\"tests/a.test.js\"]'" in plan.commands[2]
    assert [r[0] for r in plan.reports] == ["exit_markers", "jest_json"]
    py = plan_for_runner("pytest", runnable_test_files("pytest", ["tests/test_a.py", "tests/conftest.py"]), {}, [])
    assert py.commands[0].endswith("tests/test_a.py") and "--junitxml" in py.commands[0]
    assert plan_for_runner("pytest", ["tests/test_a.py"], {}, [], full_suite=True).commands[0].endswith("junit.xml")

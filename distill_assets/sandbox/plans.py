"""How a repository's tests are run in the sandbox and where their structured report is read from.

``plan_for_runner``: a detected runner in a built environment, on given test files. ``plan_for_commands``: the
user's own ``sandbox.test_commands``, with a structured report added where the runner is known (pytest gets
``--junitxml``, ``python -m unittest`` runs through the project's unittest reporter, ``node --test`` gets the
JUnit reporter); any other command counts by its exit status.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from distill_assets.sandbox.backends import WORKDIR

REPORT_DIR = ".distill"  # inside the workspace (WORKDIR/.distill)


@dataclass
class TestPlan:
    __test__ = False  # not a pytest class
    runner: str
    commands: list[str]
    reports: list[tuple[str, str, str]] = field(
        default_factory=list
    )  # (parser, report path in the workspace or "stdout:i", file)
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def key(self) -> list:
        """What a cached result depends on (besides the code): commands, environment, mounts."""
        return [self.runner, self.commands, sorted(self.env.items()), sorted(self.mounts)]


_PY_TEST_FILE = re.compile(r"(^|/)(test_[^/]*|[^/]*_test)\.py$")
_JS_TEST_FILE = re.compile(r"\.(test|spec)\.[cm]?[jt]sx?$|(^|/)(test|tests|__tests__)/.*\.[cm]?[jt]sx?$")


def runnable_test_files(runner: str, files: list[str]) -> list[str]:
    """The test files of a task that the runner can run (fixtures, helpers and conftest left out)."""
    if runner in ("pytest", "unittest"):
        return [f for f in files if _PY_TEST_FILE.search(f) and "/fixtures/" not in f]
    if runner in ("jest", "mocha", "vitest", "node_test", "node_scripts"):
        keep = [
            f
            for f in files
            if _JS_TEST_FILE.search(f) and "/fixtures/" not in f and "/helpers/" not in f and not f.endswith(".d.ts")
        ]
        if runner == "node_scripts":
            keep = [f for f in keep if re.search(r"\.[cm]?js$", f) and not re.search(r"(^|/)(run|index)\.js$", f)]
        return keep + [f for f in files if f.endswith(".test-d.ts")]  # type tests: tsd
    if runner == "go_test":
        return [f for f in files if f.endswith("_test.go")]
    return []


def _q(files: list[str]) -> str:
    return " ".join(shlex.quote(f) for f in files)


def plan_for_runner(
    runner: str, files: list[str], env: dict[str, str], mounts: list[str], full_suite: bool = False
) -> TestPlan:
    files = [] if full_suite else files
    d = f"{WORKDIR}/{REPORT_DIR}"
    plan = TestPlan(runner, [], env=dict(env), mounts=list(mounts), files=list(files))
    if env.get("DISTILL_NODE_MODULES"):
        plan.commands.append('[ -e node_modules ] || ln -s "$DISTILL_NODE_MODULES" node_modules')
    type_tests = [f for f in files if f.endswith(".test-d.ts")]
    if type_tests:  # TypeScript type tests (tsd): one run checks them all; each file gets its exit status
        files = [f for f in files if f not in type_tests]
        marks = "; ".join(f'echo "__DISTILL_EXIT {f} $c"' for f in type_tests)
        plan.commands.append(
            f"if [ -x node_modules/.bin/tsd ]; then node_modules/.bin/tsd; c=$?; "
            f"else echo 'tsd is not installed'; c=127; fi; {marks}"
        )
        plan.reports += [("exit_markers", f"stdout:{len(plan.commands) - 1}", f) for f in type_tests][:1]
        if not files:
            return plan
    if runner in ("pytest", "unittest"):  # unittest cases run through pytest (the environment brings it)
        plan.commands.append(
            f"python -m pytest -p no:cacheprovider -q --continue-on-collection-errors "
            f"-o junit_family=xunit1 "
            f"--junitxml={d}/junit.xml {_q(files)}".rstrip()
        )
        plan.reports.append(("junit_pytest", f"{REPORT_DIR}/junit.xml", ""))
    elif runner == "node_test":
        for i, f in enumerate(files):
            plan.commands.append(
                f"node --test --test-reporter=junit --test-reporter-destination={d}/node-{i}.xml {shlex.quote(f)}"
            )
            plan.reports.append(("junit_node", f"{REPORT_DIR}/node-{i}.xml", f))
    elif runner == "jest":
        listed = shlex.quote(json.dumps(files))
        plan.commands.append(f"DISTILL_JEST_FILES={listed} DISTILL_JEST_OUT={d}/jest.json node {d}/jest_run.js")
        plan.reports.append(("jest_json", f"{REPORT_DIR}/jest.json", ""))
    elif runner == "vitest":
        plan.commands.append(
            f"node node_modules/vitest/vitest.mjs run --reporter=json --outputFile={d}/vitest.json {_q(files)}".rstrip()
        )
        plan.reports.append(("jest_json", f"{REPORT_DIR}/vitest.json", ""))
    elif runner == "mocha":
        plan.commands.append(f"node node_modules/mocha/bin/mocha --reporter json {_q(files)} > {d}/mocha.json")
        plan.reports.append(("mocha_json", f"{REPORT_DIR}/mocha.json", ""))
    elif runner == "node_scripts":
        for f in files:
            plan.commands.append(f'node {shlex.quote(f)}; echo "__DISTILL_EXIT {f} $?"')
            plan.reports.append(("exit_markers", f"stdout:{len(plan.commands) - 1}", f))
    elif runner == "go_test":
        plan.commands.append(f"go test -json ./... > {d}/go.json")
        plan.reports.append(("go_json", f"{REPORT_DIR}/go.json", ""))
    return plan


_UNITTEST = re.compile(r"^\s*(?P<py>\S*python[\d.]*)\s+-m\s+unittest\b(?P<rest>.*)$")


def plan_for_commands(
    commands: list[str], env: dict[str, str] | None = None, mounts: list[str] | None = None
) -> TestPlan:
    d = f"{WORKDIR}/{REPORT_DIR}"
    plan = TestPlan("commands", [], env=dict(env or {}), mounts=list(mounts or []))
    for i, cmd in enumerate(commands):
        m = _UNITTEST.match(cmd)
        if m:
            plan.commands.append(f"{m['py']} {d}/unittest_report.py {d}/cmd-{i}.json{m['rest']}")
            plan.reports.append(("unittest_json", f"{REPORT_DIR}/cmd-{i}.json", ""))
        elif re.search(r"\bpytest\b", cmd) and "--junitxml" not in cmd:
            plan.commands.append(f"{cmd} -o junit_family=xunit1 --junitxml={d}/cmd-{i}.xml")
            plan.reports.append(("junit_pytest", f"{REPORT_DIR}/cmd-{i}.xml", ""))
        elif re.match(r"^\s*node\s+--test\b", cmd) and "--test-reporter" not in cmd:
            args = [a for a in shlex.split(cmd)[2:] if not a.startswith("-")]
            head, _, tail = cmd.partition("--test")  # node takes options only before the files
            plan.commands.append(
                f"{head}--test --test-reporter=junit --test-reporter-destination={d}/cmd-{i}.xml{tail}"
            )
            plan.reports.append(("junit_node", f"{REPORT_DIR}/cmd-{i}.xml", " ".join(args) or "node"))
        else:  # a command we cannot read a report from: it counts by its exit status
            plan.commands.append(f'{cmd}; echo "__DISTILL_EXIT cmd:{i} $?"')
            plan.reports.append(("exit_markers", f"stdout:{i}", f"cmd:{i}"))
    return plan

"""Per-test outcomes from the structured reports test runners write (never from console text).

Outcomes: ``passed``, ``failed``, ``error`` (the test, or the whole file it lives in, could not be collected or
imported), ``skipped``. Test ids are file-qualified: ``tests/test_x.py::TestC::test_y`` (pytest, unittest),
``tests/a.test.js::group > name`` (node --test, jest, mocha, vitest), ``pkg/path::TestName`` (go test), and a
file that could not even load is ``<file>::<collection>`` with outcome ``error``.
"""

from __future__ import annotations

import json
import posixpath
import xml.etree.ElementTree as ET
from distill_assets.sandbox.backends import WORKDIR

PASS, FAIL, ERROR, SKIP = "passed", "failed", "error", "skipped"
COLLECTION = "<collection>"
SCRIPT = "<script>"


def _rel(path: str, root: str = WORKDIR) -> str:
    path = path.replace("\\", "/")
    if path.startswith(root + "/"):
        return path[len(root) + 1 :]
    return path.lstrip("./") if path.startswith("./") else path


def parse_junit_pytest(text: str, root: str = WORKDIR) -> dict[str, str]:
    """pytest's JUnit XML (``-o junit_family=xunit1``: every case carries its file)."""
    out: dict[str, str] = {}
    if not text.strip():
        return out
    tree = ET.fromstring(text)
    for case in tree.iter("testcase"):
        file = case.get("file")
        classname = case.get("classname") or ""
        name = case.get("name") or ""
        children = {c.tag for c in case}
        if not classname and (not file or "error" in children):  # a collection error: name is the dotted module
            file = _rel(file, root) if file else name.replace(".", "/") + ".py"
            out[f"{file}::{COLLECTION}"] = ERROR
            continue
        if not file:
            file = classname.replace(".", "/") + ".py"
        file = _rel(file, root)
        module = file[:-3].replace("/", ".") if file.endswith(".py") else ""
        cls = classname[len(module) + 1 :] if module and classname.startswith(module + ".") else ""
        if not cls and classname and not classname.startswith(module):
            cls = classname.rsplit(".", 1)[-1] if classname.count(".") else ""
        test_id = "::".join(x for x in (file, cls.replace(".", "::"), name) if x)
        if "error" in children and name in ("", COLLECTION):
            out[f"{file}::{COLLECTION}"] = ERROR
        elif "error" in children:
            out[test_id] = ERROR
        elif "failure" in children:
            out[test_id] = FAIL
        elif "skipped" in children:
            out[test_id] = SKIP
        else:
            out[test_id] = PASS
    return out


def parse_junit_node(text: str, file: str) -> dict[str, str]:
    """``node --test --test-reporter=junit`` for ONE test file (its cases carry no file: we give it)."""
    out: dict[str, str] = {}
    if not text.strip():
        return out

    def walk(el, prefix: list[str]) -> None:
        for child in el:
            if child.tag == "testsuite":
                walk(child, prefix + [child.get("name") or ""])
            elif child.tag == "testcase":
                name = child.get("name") or ""
                tags = {c.tag for c in child}
                if name.endswith(file) or posixpath.isabs(name):  # the file itself failed (did not load)
                    out[f"{file}::{COLLECTION}"] = ERROR if ("failure" in tags or "error" in tags) else PASS
                    continue
                tid = f"{file}::" + " > ".join([p for p in prefix if p] + [name])
                out[tid] = FAIL if ("failure" in tags or "error" in tags) else SKIP if "skipped" in tags else PASS

    walk(ET.fromstring(text), [])
    return out


def parse_jest_json(text: str, root: str = WORKDIR) -> dict[str, str]:
    """jest ``--json`` / vitest ``--reporter=json`` (the same shape)."""
    out: dict[str, str] = {}
    if not text.strip():
        return out
    data = json.loads(text)
    for suite in data.get("testResults", []):
        file = _rel(suite.get("name") or suite.get("testFilePath") or "", root)
        cases = suite.get("assertionResults") or suite.get("testResults") or []
        if not cases and (suite.get("status") == "failed" or suite.get("failureMessage") or suite.get("message")):
            out[f"{file}::{COLLECTION}"] = ERROR  # the file failed to run (syntax, import)
            continue
        for c in cases:
            name = c.get("fullName") or " > ".join((c.get("ancestorTitles") or []) + [c.get("title") or ""])
            status = c.get("status")
            out[f"{file}::{name}"] = PASS if status == "passed" else FAIL if status == "failed" else SKIP
    return out


def parse_mocha_json(text: str, root: str = WORKDIR) -> dict[str, str]:
    out: dict[str, str] = {}
    if not text.strip():
        return out
    start = text.find("{")
    data = json.loads(text[start:]) if start >= 0 else {}
    failed = {(t.get("file"), t.get("fullTitle")) for t in data.get("failures", [])}
    for t in data.get("tests", []):
        key = f"{_rel(t.get('file') or '', root)}::{t.get('fullTitle')}"
        if (t.get("file"), t.get("fullTitle")) in failed:
            out[key] = FAIL
        elif t.get("pending"):
            out[key] = SKIP
        else:
            out[key] = PASS
    for t in data.get("failures", []):  # hooks and load errors appear only among failures
        key = f"{_rel(t.get('file') or '', root)}::{t.get('fullTitle')}"
        out.setdefault(key, FAIL)
    return out


def parse_go_json(text: str) -> dict[str, str]:
    """``go test -json``: one event per line; a package that fails to build is an error."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        action, pkg, test = ev.get("Action"), ev.get("Package", ""), ev.get("Test")
        if test and action in ("pass", "fail", "skip"):
            out[f"{pkg}::{test}"] = {"pass": PASS, "fail": FAIL, "skip": SKIP}[action]
        elif not test and action == "fail" and not any(k.startswith(pkg + "::") for k in out):
            out[f"{pkg}::{COLLECTION}"] = ERROR
    return out


def parse_unittest_json(text: str) -> dict[str, str]:
    """The report of ``unittest_report.py`` (our unittest runner): {"tests": {id: outcome}}."""
    if not text.strip():
        return {}
    return dict(json.loads(text).get("tests", {}))


def parse_exit_markers(text: str) -> dict[str, str]:
    """Test files run as scripts: ``__DISTILL_EXIT <file> <code>`` lines our runner prints after each."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("__DISTILL_EXIT "):
            _, file, code = line.split(" ", 2)
            out[f"{file}::{SCRIPT}"] = PASS if code.strip() == "0" else FAIL
    return out

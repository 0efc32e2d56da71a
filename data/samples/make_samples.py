"""Writes the small CommitPackFT- and SWE-bench-schema samples shipped for tests and the demo.

The rows are made up by this project (no data from the published datasets);
only the field names and value types follow the published schemas.
Run: python data/samples/make_samples.py
"""

import difflib
import json
from pathlib import Path

HERE = Path(__file__).parent


def udiff(path, old, new):
    head = f"diff --git a/{path} b/{path}\n"
    if not old:
        head += "new file mode 100644\n"
    lines = difflib.unified_diff(
        old.splitlines(True), new.splitlines(True), f"a/{path}" if old else "/dev/null", f"b/{path}", n=3
    )
    return head + "".join(lines)


CPF = [
    # one commit, two files: a helper gains a parameter and its caller passes it
    dict(
        commit="3f1c2a9b7e5d4c3b2a19f8e7d6c5b4a392817160",
        lang="Python",
        license="mit",
        repos="example-org/textkit",
        subject="Add width parameter to wrap()",
        message="Add width parameter to wrap()\n\nCallers can now choose the line width instead of the fixed 72.",
        files=[
            (
                "textkit/wrap.py",
                "def wrap(text):\n    words = text.split()\n    return _fill(words, 72)\n\n\ndef _fill(words, width):\n    lines, cur = [], ''\n    for w in words:\n        if len(cur) + len(w) + 1 > width:\n            lines.append(cur)\n            cur = w\n        else:\n            cur = (cur + ' ' + w).strip()\n    lines.append(cur)\n    return '\\n'.join(lines)\n",
                "def wrap(text, width=72):\n    words = text.split()\n    return _fill(words, width)\n\n\ndef _fill(words, width):\n    lines, cur = [], ''\n    for w in words:\n        if len(cur) + len(w) + 1 > width:\n            lines.append(cur)\n            cur = w\n        else:\n            cur = (cur + ' ' + w).strip()\n    lines.append(cur)\n    return '\\n'.join(lines)\n",
            ),
            (
                "textkit/cli.py",
                "import sys\n\nfrom textkit.wrap import wrap\n\n\ndef main(argv):\n    print(wrap(' '.join(argv)))\n",
                "import sys\n\nfrom textkit.wrap import wrap\n\n\ndef main(argv, width=72):\n    print(wrap(' '.join(argv), width=width))\n",
            ),
        ],
    ),
    # a single-file commit (easy end of the curriculum)
    dict(
        commit="8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b",
        lang="JavaScript",
        license="apache-2.0",
        repos="example-org/tinyfmt,mirror-org/tinyfmt",
        subject="Handle negative numbers in pad()",
        message="Handle negative numbers in pad()\n",
        files=[
            (
                "src/pad.js",
                "function pad(n, width) {\n  let s = String(n);\n  while (s.length < width) s = '0' + s;\n  return s;\n}\n\nmodule.exports = { pad };\n",
                "function pad(n, width) {\n  const neg = n < 0;\n  let s = String(Math.abs(n));\n  while (s.length < width - (neg ? 1 : 0)) s = '0' + s;\n  return neg ? '-' + s : s;\n}\n\nmodule.exports = { pad };\n",
            ),
        ],
    ),
    # a Go commit: new method used by an existing function
    dict(
        commit="c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00",
        lang="Go",
        license="bsd-3-clause",
        repos="example-org/kvstore",
        subject="Add Store.Len and use it in Stats",
        message="Add Store.Len and use it in Stats\n\nStats no longer reaches into the map directly.",
        files=[
            (
                "store/store.go",
                "package store\n\ntype Store struct {\n\titems map[string]string\n}\n\nfunc (s *Store) Get(k string) string {\n\treturn s.items[k]\n}\n",
                "package store\n\ntype Store struct {\n\titems map[string]string\n}\n\nfunc (s *Store) Get(k string) string {\n\treturn s.items[k]\n}\n\nfunc (s *Store) Len() int {\n\treturn len(s.items)\n}\n",
            ),
            (
                "store/stats.go",
                'package store\n\nfunc Stats(s *Store) map[string]int {\n\treturn map[string]int{"items": len(s.items)}\n}\n',
                'package store\n\nfunc Stats(s *Store) map[string]int {\n\treturn map[string]int{"items": s.Len()}\n}\n',
            ),
        ],
    ),
]

SWE = [
    dict(
        repo="example-org/calclib",
        instance_id="example-org__calclib-101",
        base_commit="1111111111111111111111111111111111111111",
        problem_statement="divide() raises ZeroDivisionError instead of returning None\n\nThe docs say divide(x, 0) returns None.",
        hints_text="",
        created_at="2024-03-01T10:00:00Z",
        version="1.0",
        environment_setup_commit="1111111111111111111111111111111111111111",
        files=[
            (
                "calclib/ops.py",
                "def divide(a, b):\n    return a / b\n",
                "def divide(a, b):\n    if b == 0:\n        return None\n    return a / b\n",
            )
        ],
        tests=[
            (
                "tests/test_ops.py",
                "from calclib.ops import divide\n\n\ndef test_divide():\n    assert divide(4, 2) == 2\n",
                "from calclib.ops import divide\n\n\ndef test_divide():\n    assert divide(4, 2) == 2\n\n\ndef test_divide_by_zero():\n    assert divide(1, 0) is None\n",
            )
        ],
        f2p=["tests/test_ops.py::test_divide_by_zero"],
        p2p=["tests/test_ops.py::test_divide"],
    ),
    dict(
        repo="example-org/calclib",
        instance_id="example-org__calclib-117",
        base_commit="2222222222222222222222222222222222222222",
        problem_statement="mean() of an empty list should raise ValueError with a clear message",
        hints_text="See stats.mean and its caller summary().",
        created_at="2024-05-12T08:30:00Z",
        version="1.1",
        environment_setup_commit="2222222222222222222222222222222222222222",
        files=[
            (
                "calclib/stats.py",
                "def mean(xs):\n    return sum(xs) / len(xs)\n",
                "def mean(xs):\n    if not xs:\n        raise ValueError('mean() of an empty sequence')\n    return sum(xs) / len(xs)\n",
            ),
            (
                "calclib/report.py",
                "from calclib.stats import mean\n\n\ndef summary(xs):\n    return {'mean': mean(xs)}\n",
                "from calclib.stats import mean\n\n\ndef summary(xs):\n    return {'mean': mean(xs) if xs else None}\n",
            ),
        ],
        tests=[
            (
                "tests/test_stats.py",
                "",
                "import pytest\n\nfrom calclib.stats import mean\n\n\ndef test_empty():\n    with pytest.raises(ValueError):\n        mean([])\n",
            )
        ],
        f2p=["tests/test_stats.py::test_empty"],
        p2p=[],
    ),
]


def main():
    with open(HERE / "commitpackft_sample.jsonl", "w") as fh:
        for c in CPF:
            for path, old, new in c["files"]:
                fh.write(
                    json.dumps(
                        {
                            "commit": c["commit"],
                            "old_file": path,
                            "new_file": path,
                            "old_contents": old,
                            "new_contents": new,
                            "subject": c["subject"],
                            "message": c["message"],
                            "lang": c["lang"],
                            "license": c["license"],
                            "repos": c["repos"],
                        }
                    )
                    + "\n"
                )
    with open(HERE / "swebench_sample.jsonl", "w") as fh:
        for s in SWE:
            patch = "".join(udiff(p, o, n) for p, o, n in s["files"])
            test_patch = "".join(udiff(p, o, n) for p, o, n in s["tests"])
            fh.write(
                json.dumps(
                    {
                        "repo": s["repo"],
                        "instance_id": s["instance_id"],
                        "base_commit": s["base_commit"],
                        "patch": patch,
                        "test_patch": test_patch,
                        "problem_statement": s["problem_statement"],
                        "hints_text": s["hints_text"],
                        "created_at": s["created_at"],
                        "version": s["version"],
                        "environment_setup_commit": s["environment_setup_commit"],
                        "FAIL_TO_PASS": json.dumps(s["f2p"]),
                        "PASS_TO_PASS": json.dumps(s["p2p"]),
                    }
                )
                + "\n"
            )


if __name__ == "__main__":
    main()

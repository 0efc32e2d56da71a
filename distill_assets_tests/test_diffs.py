"""The one diff reader, on real git output: spaces, quoted non-ASCII paths, renames, binary and mode changes."""

import subprocess

from distill_assets.diffs import line_hunks, parse_patch, unquote_path


def test_real_git_patches_read_back(git_repo):
    git_repo.commit(
        "init",
        {
            "my file.txt": "a\n",
            "café.py": "x = 1\n",
            "old.py": "def f():\n    return 1\n",
            "logo.bin": bytes(range(256)),
            "run.sh": "echo hi\n",
        },
    )
    git_repo.git("mv", "old.py", "new name.py")
    git_repo.write(
        {"my file.txt": "a\nb\n", "café.py": "x = 2\n", "logo.bin": bytes(range(255, -1, -1)), "added.py": "y = 1\n"}
    )
    (git_repo.path / "run.sh").chmod(0o755)
    git_repo.commit("change everything")
    patch = git_repo.git("log", "-1", "-p", "-M", "--binary", "--format=")
    by = {f.path: f for f in parse_patch(patch)}
    assert set(by) == {"my file.txt", "café.py", "new name.py", "logo.bin", "added.py", "run.sh"}
    assert by["my file.txt"].status == "M" and by["my file.txt"].additions == 1
    assert by["my file.txt"].hunks[0].added == [(2, "b")]
    assert by["café.py"].hunks[0].removed == [(1, "x = 1")] and by["café.py"].hunks[0].added == [(1, "x = 2")]
    assert by["new name.py"].status == "R" and by["new name.py"].old_path == "old.py" and not by["new name.py"].hunks
    assert by["logo.bin"].binary and by["logo.bin"].additions is None
    assert by["added.py"].status == "A" and by["run.sh"].status == "M" and by["run.sh"].additions == 0
    # and it still applies
    wt = git_repo.path.parent / "wt"
    git_repo.git("worktree", "add", "-q", "--detach", str(wt), "HEAD~1")
    subprocess.run(["git", "-C", str(wt), "apply", "--check", "-"], input=patch.encode(), check=True)


def test_unquote_and_line_hunks():
    assert unquote_path('"a/caf\\303\\251 x.py"') == "a/café x.py"
    assert unquote_path("plain/path.py") == "plain/path.py"
    hunks = line_hunks("a\nb\nc\n", "a\nB\nc\nd\n")
    assert [(h.removed, h.added) for h in hunks] == [([(2, "b")], [(2, "B")]), ([], [(4, "d")])]

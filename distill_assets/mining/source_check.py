"""Check the sources of distill.yaml before anything runs: one line per source that cannot be used.

Repositories (``sources.repos``):

- a local ``path``: it exists, is a git repository (bare or with a work tree), has commits, and its
  ``branch`` (default ``HEAD``) resolves to a commit; checked with the miner's own
  :func:`~distill_assets.mining.miner.open_repository` and :func:`~distill_assets.mining.miner.resolve_ref`,
  so the reasons are the ones mining would give;
- a ``url`` naming a local bundle file or folder (``/x/repo.bundle``, ``file:///x/repo.git``): it exists, and
  ``git bundle list-heads`` (a bundle) or the checks above (a folder) find the branch;
- a remote ``url``: ``git ls-remote`` answers within a short time-out (no prompt for credentials:
  ``GIT_TERMINAL_PROMPT=0``, ssh in batch mode) and lists the branch; otherwise it is unreachable, with
  git's own last line as the reason.

External datasets (``sources.external``): the ``path`` exists and every ``checkouts`` path is a git repository.

Nothing is cloned or fetched and nothing is written. No Dagster here: the CLI and the Dagster layer both use it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import git

from distill_assets.config import ExternalSource, RepoSource, SourcesConfig
from distill_assets.mining.miner import MiningError, open_repository, resolve_ref

DEFAULT_TIMEOUT_S = 10.0
_SHA = re.compile(r"^[0-9a-fA-F]{7,40}$")


@dataclass(frozen=True)
class SourceProblem:
    """A source that cannot be used: ``name`` is the repository name (or ``sources.external[i]``),
    ``message`` one line that names it and says why."""

    name: str
    message: str

    def __str__(self) -> str:
        return self.message


def one_line(text: str) -> str:
    """Collapse a multi-line message (git's stderr, an exception) into one line."""
    return " | ".join(ln.strip() for ln in str(text).splitlines() if ln.strip())


def git_last_line(text: str) -> str:
    """git's reason out of its stderr: the last ``fatal:``/``error:`` line, else the last line
    (hints such as ``To add an exception ... call:`` follow the reason, they are not it)."""
    text = str(text).strip()
    if "stderr: '" in text:  # str(GitCommandError): git's stderr wrapped in "stderr: '...'"
        text = text.split("stderr: '", 1)[1].removesuffix("'")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(("fatal:", "error:")):
            return ln
    return lines[-1] if lines else "git failed"


# --------------------------------------------------------------------------- repositories


def local_url_path(url: str) -> Path | None:
    """The path of a ``url`` that names a local file or folder, None for a remote URL.

    distill.yaml resolves relative local URLs against its folder, so a local one is absolute here
    (or a ``file://`` URL); ``host:path`` (scp-like ssh) and ``scheme://`` are remote."""
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    if "://" in url:
        return None
    if ":" in url.split("/")[0]:  # git@host:owner/repo.git
        return None
    return Path(url)


def _bundle_heads(path: Path) -> list[tuple[str, str]]:
    """(sha, ref name) of every ref a bundle file holds; raises git.GitCommandError if it is not a bundle."""
    out = git.Git().bundle("list-heads", str(path))
    heads = []
    for ln in out.splitlines():
        sha, _, name = ln.strip().partition(" ")
        if sha and name:
            heads.append((sha, name))
    return heads


def _ref_problem(source: RepoSource, refs: list[tuple[str, str]], where: str) -> str | None:
    """Does the branch (or HEAD) of ``source`` appear among ``refs`` (as `git ls-remote` lists them)?"""
    prefix = f"repository {source.name!r}"
    if not refs:
        return f"{prefix}: the repository has no commits ({where})"
    names = {name for _, name in refs}
    branches = sorted(n[len("refs/heads/") :] for n in names if n.startswith("refs/heads/"))
    known = f" (branches: {', '.join(branches[:8])}{', ...' if len(branches) > 8 else ''})" if branches else ""
    ref = source.branch
    if ref is None:
        if "HEAD" in names:
            return None
        return f"{prefix}: {where} has no HEAD to mine; set `branch`{known}"
    base = re.split(r"[~^@:]", ref, maxsplit=1)[0] or "HEAD"  # main~3, v1.0^{commit}
    if _SHA.match(base):
        return None  # a commit id: only a clone can tell whether it is reachable
    candidates = {base, f"refs/heads/{base}", f"refs/tags/{base}", f"refs/{base}"}
    if names & candidates:
        return None
    return f"{prefix}: branch or ref {ref!r} not found at {where}{known}"


def _check_local(source: RepoSource, cache_dir: Path) -> str | None:
    """A local repository (a ``path`` source, or a folder given as ``url``), with the miner's own checks."""
    path = Path(source.path)
    if path.is_file():
        try:
            _bundle_heads(path)
            return f"repository {source.name!r}: {path} is a git bundle, not a repository: give it as `url:`"
        except git.GitCommandError:
            return f"repository {source.name!r}: not a git repository: {path} (a file)"
    try:
        repo = open_repository(source, cache_dir)
        try:
            resolve_ref(repo, source)
        finally:
            repo.close()
    except MiningError as exc:
        return one_line(str(exc))
    except git.GitCommandError as exc:  # git refused the repository (e.g. dubious ownership)
        return f"repository {source.name!r}: git cannot read {path}: {git_last_line(str(exc))}"
    except (git.GitError, OSError) as exc:
        return f"repository {source.name!r}: cannot open {path}: {one_line(str(exc))}"
    return None


def _ls_remote(url: str, timeout_s: float) -> tuple[int | None, str, str]:
    """Run ``git ls-remote`` without prompts; (returncode or None on time-out, stdout, stderr).

    It runs in its own process group, killed whole on time-out: git's transport helpers
    (git-remote-https, ssh) would otherwise keep the pipes open after git itself is gone."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never"}
    env.setdefault("GIT_SSH_COMMAND", f"ssh -o BatchMode=yes -o ConnectTimeout={max(1, int(timeout_s))}")
    proc = subprocess.Popen(
        ["git", "ls-remote", "--", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        return None, "", ""


def _check_remote(source: RepoSource, url: str, timeout_s: float) -> str | None:
    prefix = f"repository {source.name!r}"
    rc, out, err = _ls_remote(url, timeout_s)
    if rc is None:
        return f"{prefix}: unreachable: {url}: no answer within {timeout_s:g}s"
    if rc != 0:
        return f"{prefix}: unreachable: {url}: {git_last_line(err)}"
    refs = []
    for ln in out.splitlines():
        sha, _, name = ln.partition("\t")
        if sha and name:
            refs.append((sha.strip(), name.strip()))
    return _ref_problem(source, refs, url)


def check_repo_source(source: RepoSource, cache_dir: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """None when ``source`` can be mined as configured, else one line naming it and the reason."""
    if source.path is not None:
        return _check_local(source, cache_dir)
    url = str(source.url)
    local = local_url_path(url)
    if local is None:
        return _check_remote(source, url, timeout_s)
    if not local.exists():
        return f"repository {source.name!r}: url path does not exist: {local}"
    if local.is_dir():
        return _check_local(source.model_copy(update={"path": local, "url": None}), cache_dir)
    try:
        heads = _bundle_heads(local)
    except git.GitCommandError as exc:
        return f"repository {source.name!r}: not a git bundle: {local}: {git_last_line(str(exc))}"
    return _ref_problem(source, heads, str(local))


# --------------------------------------------------------------------------- external datasets


def check_external_source(index: int, source: ExternalSource) -> str | None:
    """None when the dataset path exists and every checkout is a git repository, else one line."""
    reasons = []
    if not Path(source.path).exists():
        reasons.append(f"path does not exist: {source.path}")
    for repo_name, path in source.checkouts.items():
        p = Path(path)
        if not p.exists():
            reasons.append(f"checkout {repo_name!r}: path does not exist: {p}")
            continue
        try:
            git.Repo(p).close()
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            reasons.append(f"checkout {repo_name!r}: not a git repository: {p}")
    if not reasons:
        return None
    return f"sources.external[{index}] ({source.kind}): " + "; ".join(reasons)


def check_sources(
    sources: SourcesConfig, cache_dir: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S, workers: int = 8
) -> list[SourceProblem]:
    """Every problem of ``sources``, in the order of distill.yaml: repositories, then external datasets.

    Repositories are checked in parallel (a few remote URLs cost one time-out, not one each)."""
    repos = list(sources.repos)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(repos) or 1))) as pool:
        repo_results = list(pool.map(lambda r: check_repo_source(r, cache_dir, timeout_s=timeout_s), repos))
    problems = [SourceProblem(r.name, msg) for r, msg in zip(repos, repo_results) if msg]
    for i, ext in enumerate(sources.external):
        msg = check_external_source(i, ext)
        if msg:
            problems.append(SourceProblem(f"sources.external[{i}]", msg))
    return problems

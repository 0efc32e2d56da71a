"""Mine a git repository for multi-file change commits.

One ``git log`` pass (through gitpython's command wrapper) yields every commit
with its raw file list (status, renames) and whitespace-insensitive numstat.
Each commit is kept or dropped with exactly one reason; dropped commits stay
in the table so nothing is lost and the UI can show why.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import git

from distill_assets.config import MiningConfig, RepoSource
from distill_assets.mining.globs import GlobSet
from distill_assets.mining.text import decode_path, decode_text

# Drop reasons, in the order they are tested.
DROP_REASONS = (
    "merge",
    "root_commit",
    "undecodable_path",
    "formatting_only",
    "only_noise_files",
    "too_few_files",
    "too_many_files",
    "docs_only",
    "release",
    "dependency_bump",
    "too_small",
    "too_large",
)

# Files a plan never names. A submodule is a pointer to another repository (mode 160000): its files are
# outside this repository's tree.
NOISE_CATEGORIES = ("excluded", "lockfile", "vendored", "generated", "binary", "submodule")

_RS, _US, _GS = "\x1e", "\x1f", "\x1d"
_FORMAT = f"{_RS}%H{_US}%P{_US}%an{_US}%ae{_US}%aI{_US}%cI{_US}%B{_GS}"


class MiningError(RuntimeError):
    """The repository cannot be mined (not git, empty, unreachable, bad branch)."""


@dataclass
class FileChange:
    path: str  # path after the change ("" never; for deletions the old path)
    old_path: str | None  # before the change (renames/copies), else None
    status: str  # A M D R C T
    additions: int | None  # whitespace-insensitive; None for binary
    deletions: int | None
    binary: bool
    category: str  # source | test | docs | lockfile | vendored | generated | binary | submodule | excluded


@dataclass
class MinedCommit:
    sha: str
    parents: list[str]
    author: str
    author_email: str
    authored_at: datetime
    committed_at: datetime
    subject: str
    message: str
    files: list[FileChange] = field(default_factory=list)
    kept: bool = False
    drop_reason: str | None = None
    message_encoding: str | None = None  # the fallback that decoded a message that is not UTF-8
    detail: str | None = None  # e.g. the undecodable path
    meaningful_files: int = 0
    changed_lines: int = 0
    test_files: int = 0

    def row(self) -> dict:
        d = asdict(self)
        d["parent"] = self.parents[0] if self.parents else None
        return d


@dataclass
class MiningResult:
    repo: str
    repo_path: str
    head: str
    commits: list[MinedCommit]

    @property
    def kept(self) -> list[MinedCommit]:
        return [c for c in self.commits if c.kept]

    def drop_counts(self) -> dict[str, int]:
        counts = Counter(c.drop_reason for c in self.commits if not c.kept)
        return {r: counts.get(r, 0) for r in DROP_REASONS}


class FileClassifier:
    def __init__(self, cfg: MiningConfig, include: list[str] | None = None, exclude: list[str] | None = None):
        self.include = GlobSet(include or ["**"])
        self.exclude = GlobSet(exclude or [])
        self.lock = GlobSet(cfg.lockfiles)
        self.vendored = GlobSet(cfg.vendored)
        self.generated = GlobSet(cfg.generated)
        self.tests = GlobSet(cfg.tests)
        self.docs = GlobSet(cfg.docs)

    def category(self, path: str, binary: bool, submodule: bool = False) -> str:
        if not self.include.matches(path) or self.exclude.matches(path):
            return "excluded"
        if submodule:
            return "submodule"
        if self.lock.matches(path):
            return "lockfile"
        if self.vendored.matches(path):
            return "vendored"
        if self.generated.matches(path):
            return "generated"
        if binary:
            return "binary"
        if self.tests.matches(path):
            return "test"
        if self.docs.matches(path):
            return "docs"
        return "source"

    def is_test(self, path: str) -> bool:
        return self.tests.matches(path)


# --------------------------------------------------------------------------- repo access


def open_repository(source: RepoSource, cache_dir: Path) -> git.Repo:
    """Open a local repository, or clone/update a URL under ``cache_dir/repos/<name>``.

    Raises MiningError with one clear message for every user mistake.
    """
    if source.path is not None:
        p = Path(source.path)
        if not p.exists():
            raise MiningError(f"repository {source.name!r}: path does not exist: {p}")
        try:
            repo = git.Repo(p)
        except git.InvalidGitRepositoryError:
            raise MiningError(f"repository {source.name!r}: not a git repository: {p}") from None
    else:
        dest = cache_dir / "repos" / f"{source.name}.git"
        url = str(source.url)
        if (dest / "HEAD").exists():
            repo = git.Repo(dest)
            try:
                repo.git.fetch(url, "+refs/heads/*:refs/heads/*", "--prune", "--force")
            except git.GitCommandError as exc:
                raise MiningError(f"repository {source.name!r}: could not update from {url}: {_git_err(exc)}") from None
        else:
            tmp = dest.with_name(dest.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            try:
                git.Repo.clone_from(url, tmp, bare=True, env={"GIT_TERMINAL_PROMPT": "0"})
            except git.GitCommandError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise MiningError(f"repository {source.name!r}: could not clone {url}: {_git_err(exc)}") from None
            tmp.rename(dest)  # atomic: a crashed clone never looks complete
            repo = git.Repo(dest)
    try:
        has_commits = _has_commits(repo)
    except MiningError as exc:
        raise MiningError(f"repository {source.name!r}: {exc}") from None
    if not has_commits:
        raise MiningError(f"repository {source.name!r}: the repository has no commits ({repo.git_dir})")
    return repo


def _has_commits(repo: git.Repo) -> bool:
    try:
        repo.git.rev_parse("--verify", "-q", "HEAD^{commit}")
        return True
    except git.GitCommandError:
        pass
    try:
        return bool(repo.git.for_each_ref("--count=1", "refs/heads").strip())
    except git.GitCommandError as exc:  # e.g. git refuses a repository another user owns ("dubious ownership")
        text = exc.stderr or str(exc)
        if "dubious ownership" in text:
            raise MiningError(
                f"git refuses to read {repo.git_dir}: it belongs to another user (dubious ownership); "
                f"to trust it: git config --global --add safe.directory {repo.working_tree_dir or repo.git_dir}"
            ) from None
        raise MiningError(f"git cannot read {repo.git_dir}: {_git_err(exc)}") from None


def _git_err(exc: git.GitCommandError) -> str:
    text = (exc.stderr or str(exc)).strip().strip("'").strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else text


def resolve_ref(repo: git.Repo, source: RepoSource) -> str:
    ref = source.branch or "HEAD"
    try:
        return repo.git.rev_parse("--verify", "-q", f"{ref}^{{commit}}").strip()
    except git.GitCommandError:
        raise MiningError(f"repository {source.name!r}: branch or ref {ref!r} not found") from None


# --------------------------------------------------------------------------- parsing


def _parse_body(
    body: bytes,
) -> tuple[list[tuple[str, bytes, bytes | None, bool]], dict[bytes, tuple[int | None, int | None]]]:
    """Parse the NUL-separated --raw and --numstat sections of one commit (paths stay bytes)."""
    tokens = body.split(b"\0")
    raw: list[tuple[str, bytes, bytes | None, bool]] = []  # (status, path, old_path, submodule)
    numstat: dict[bytes, tuple[int | None, int | None]] = {}
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i].lstrip(b"\n")
        if not tok:
            i += 1
            continue
        if tok.startswith(b":"):
            meta = tok.split()
            letter = meta[-1][:1].decode()
            gitlink = b"160000" in (meta[0][1:], meta[1] if len(meta) > 1 else b"")
            if letter in "RC":
                old, new = tokens[i + 1], tokens[i + 2]
                raw.append((letter, new, old, gitlink))
                i += 3
            else:
                raw.append((letter, tokens[i + 1], None, gitlink))
                i += 2
            continue
        parts = tok.split(b"\t")
        if len(parts) == 3:
            add, dele, path = parts
            if path == b"":  # rename: paths follow as two tokens
                path = tokens[i + 2]
                i += 3
            else:
                i += 1
            a = None if add == b"-" else int(add)
            d = None if dele == b"-" else int(dele)
            numstat[path] = (a, d)
            continue
        i += 1
    return raw, numstat


def _decide(c: MinedCommit, cfg: MiningConfig) -> None:
    if len(c.parents) > 1:
        c.drop_reason = "merge"
        return
    if not c.parents:
        c.drop_reason = "root_commit"
        return
    if c.detail and c.detail.startswith("undecodable path"):
        c.drop_reason = "undecodable_path"
        return
    # Formatting-only: git saw file changes, but none survives -w --ignore-blank-lines.
    if c.files and all(
        f.status in "MT" and not f.binary and (f.additions or 0) + (f.deletions or 0) == 0 for f in c.files
    ):
        c.drop_reason = "formatting_only"
        return
    meaningful = [f for f in c.files if f.category not in NOISE_CATEGORIES]
    c.meaningful_files = len(meaningful)
    c.changed_lines = sum((f.additions or 0) + (f.deletions or 0) for f in meaningful)
    c.test_files = sum(1 for f in meaningful if f.category == "test")
    if not meaningful:
        c.drop_reason = "only_noise_files"
    elif len(meaningful) < cfg.min_files:
        c.drop_reason = "too_few_files"
    elif len(meaningful) > cfg.max_files:
        c.drop_reason = "too_many_files"
    elif cfg.drop_docs_only and all(f.category == "docs" for f in meaningful):
        c.drop_reason = "docs_only"
    elif cfg.release_pattern().search(c.subject):
        c.drop_reason = "release"
    elif cfg.dependency_bump_pattern().search(c.subject):
        c.drop_reason = "dependency_bump"
    elif c.changed_lines < cfg.min_changed_lines:
        c.drop_reason = "too_small"
    elif c.changed_lines > cfg.max_changed_lines:
        c.drop_reason = "too_large"
    else:
        c.kept = True


def mine_repository(repo: git.Repo, source: RepoSource, cfg: MiningConfig, *, ref: str | None = None) -> MiningResult:
    """Mine ``source`` (already opened as ``repo``); every commit reachable from its branch."""
    head = ref or resolve_ref(repo, source)
    classifier = FileClassifier(cfg, source.include, source.exclude)
    args = [
        head,
        "-z",
        "--raw",
        "--numstat",
        "-M",
        "-w",
        "--ignore-blank-lines",
        "--no-abbrev",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        f"--format={_FORMAT}",
    ]
    if source.max_commits:
        args.append(f"--max-count={source.max_commits}")
    try:
        out = repo.git.log(*args, strip_newline_in_stdout=False, stdout_as_string=False)
    except git.GitCommandError as exc:
        raise MiningError(f"repository {source.name!r}: git log failed: {_git_err(exc)}") from None

    commits: list[MinedCommit] = []
    for record in out.split(_RS.encode()):
        if not record.strip(b"\0\n"):
            continue
        header, _, body = record.partition(_GS.encode())
        sha, parents, author, email, adate, cdate, message = header.split(_US.encode(), 6)
        text, enc = decode_text(message.strip())
        author_text, author_enc = decode_text(author)
        email_text, _ = decode_text(email)
        raw, numstat = _parse_body(body)
        files, bad_path = [], None
        for status, bpath, bold, gitlink in raw:
            path, old = decode_path(bpath), decode_path(bold) if bold is not None else None
            if path is None or (bold is not None and old is None):
                bad_path = bad_path or (bpath if path is None else bold)
                continue
            add, dele = numstat.get(bpath, (0, 0))
            binary = add is None
            files.append(
                FileChange(
                    path=path,
                    old_path=old,
                    status=status,
                    additions=add,
                    deletions=dele,
                    binary=binary,
                    category=classifier.category(path, binary, submodule=gitlink),
                )
            )
        c = MinedCommit(
            sha=sha.decode(),
            parents=parents.decode().split(),
            author=author_text,
            author_email=email_text,
            authored_at=datetime.fromisoformat(adate.decode()),
            committed_at=datetime.fromisoformat(cdate.decode()),
            subject=text.splitlines()[0] if text else "",
            message=text,
            files=files,
            message_encoding=enc or author_enc,
            detail=f"undecodable path {bad_path!r} (not UTF-8)" if bad_path is not None else None,
        )
        _decide(c, cfg)
        commits.append(c)
    return MiningResult(repo=source.name, repo_path=str(Path(repo.git_dir).resolve()), head=head, commits=commits)


def repo_head(repo: RepoSource) -> str | None:
    """The commit at the tip of the configured branch (local path or URL), or None if unreachable."""
    ref = f"refs/heads/{repo.branch}" if repo.branch else "HEAD"
    if repo.path:
        proc = subprocess.run(["git", "-C", str(repo.path), "rev-parse", ref], capture_output=True, text=True)
        return (proc.stdout.strip() or None) if proc.returncode == 0 else None
    proc = subprocess.run(["git", "ls-remote", str(repo.url), ref], capture_output=True, text=True, timeout=60)
    return proc.stdout.split()[0] if proc.returncode == 0 and proc.stdout.strip() else None

"""Mine a git repository for multi-file change commits.

One ``git log`` pass (through gitpython's command wrapper) yields every commit
with its raw file list (status, renames) and whitespace-insensitive numstat.
Each commit is kept or dropped with exactly one reason; dropped commits stay
in the table so nothing is lost and the UI can show why.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import git

from distill_assets.config import MiningConfig, RepoSource
from distill_assets.mining.globs import GlobSet

# Drop reasons, in the order they are tested.
DROP_REASONS = (
    "merge",
    "root_commit",
    "formatting_only",
    "only_noise_files",
    "too_few_files",
    "too_many_files",
    "too_small",
    "too_large",
)

NOISE_CATEGORIES = ("excluded", "lockfile", "vendored", "generated", "binary")

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
    category: str  # source | test | lockfile | vendored | generated | binary | excluded


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

    def category(self, path: str, binary: bool) -> str:
        if not self.include.matches(path) or self.exclude.matches(path):
            return "excluded"
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
                raise MiningError(
                    f"repository {source.name!r}: could not update from {url}: {_git_err(exc)}"
                ) from None
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
    if not _has_commits(repo):
        raise MiningError(f"repository {source.name!r}: the repository has no commits ({repo.git_dir})")
    return repo


def _has_commits(repo: git.Repo) -> bool:
    try:
        repo.git.rev_parse("--verify", "-q", "HEAD^{commit}")
        return True
    except git.GitCommandError:
        return bool(repo.git.for_each_ref("--count=1", "refs/heads").strip())


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


def _parse_body(body: str) -> tuple[list[tuple[str, str, str | None]], dict[str, tuple[int | None, int | None]]]:
    """Parse the NUL-separated --raw and --numstat sections of one commit."""
    tokens = body.split("\0")
    raw: list[tuple[str, str, str | None]] = []  # (status, path, old_path)
    numstat: dict[str, tuple[int | None, int | None]] = {}
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i].lstrip("\n")
        if not tok:
            i += 1
            continue
        if tok.startswith(":"):
            status = tok.split()[-1]
            letter = status[0]
            if letter in "RC":
                old, new = tokens[i + 1], tokens[i + 2]
                raw.append((letter, new, old))
                i += 3
            else:
                raw.append((letter, tokens[i + 1], None))
                i += 2
            continue
        parts = tok.split("\t")
        if len(parts) == 3:
            add, dele, path = parts
            if path == "":  # rename: paths follow as two tokens
                path = tokens[i + 2]
                i += 3
            else:
                i += 1
            a = None if add == "-" else int(add)
            d = None if dele == "-" else int(dele)
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
        head, "-z", "--raw", "--numstat", "-M", "-w", "--ignore-blank-lines",
        "--no-abbrev", "--no-color", "--no-ext-diff", "--no-textconv", f"--format={_FORMAT}",
    ]
    if source.max_commits:
        args.append(f"--max-count={source.max_commits}")
    try:
        out = repo.git.log(*args, strip_newline_in_stdout=False)
    except git.GitCommandError as exc:
        raise MiningError(f"repository {source.name!r}: git log failed: {_git_err(exc)}") from None

    commits: list[MinedCommit] = []
    for record in out.split(_RS):
        if not record.strip("\0\n"):
            continue
        header, _, body = record.partition(_GS)
        sha, parents, author, email, adate, cdate, message = header.split(_US, 6)
        message = message.strip()
        raw, numstat = _parse_body(body)
        files = []
        for status, path, old in raw:
            add, dele = numstat.get(path, (0, 0))
            binary = add is None
            files.append(
                FileChange(path=path, old_path=old, status=status, additions=add, deletions=dele,
                           binary=binary, category=classifier.category(path, binary))
            )
        c = MinedCommit(
            sha=sha, parents=parents.split() if parents else [], author=author, author_email=email,
            authored_at=datetime.fromisoformat(adate), committed_at=datetime.fromisoformat(cdate),
            subject=message.splitlines()[0] if message else "", message=message, files=files,
        )
        _decide(c, cfg)
        commits.append(c)
    return MiningResult(repo=source.name, repo_path=str(Path(repo.git_dir).resolve()), head=head, commits=commits)

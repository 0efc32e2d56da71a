"""Real git repositories for tests, built commit by commit with fixed dates."""

import os
import subprocess
from pathlib import Path

BASE_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


class GitRepo:
    def __init__(self, path: Path, branch: str = "main"):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.day = 0
        self.git("init", "-q", "-b", branch)
        self.git("config", "commit.gpgsign", "false")

    def git(self, *args: str, input: str | None = None) -> str:
        env = {**os.environ, **BASE_ENV}
        date = "2025-01-01T00:00:00+00:00"
        if self.day:
            date = f"2025-01-{1 + self.day // 24:02d}T{self.day % 24:02d}:00:00+00:00"
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
        return subprocess.run(
            ["git", "-C", str(self.path), *args], env=env, check=True, capture_output=True, text=True, input=input
        ).stdout

    def write(self, files: dict[str, str | bytes | None]) -> None:
        for rel, content in files.items():
            p = self.path / rel
            if content is None:
                if p.exists():
                    self.git("rm", "-q", rel)
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content)

    def commit(
        self, message: str, files: dict[str, str | bytes | None] | None = None, *, renames: dict[str, str] | None = None
    ) -> str:
        self.day += 1
        for old, new in (renames or {}).items():
            (self.path / new).parent.mkdir(parents=True, exist_ok=True)
            self.git("mv", old, new)
        if files:
            self.write(files)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()

    def branch(self, name: str) -> None:
        self.git("checkout", "-q", "-b", name)

    def checkout(self, name: str) -> None:
        self.git("checkout", "-q", name)

    def merge(self, name: str, message: str) -> str:
        self.day += 1
        self.git("merge", "-q", "--no-ff", "-m", message, name)
        return self.head()

"""Test environments built once per dependency-manifest content and reused: the cache behind ``test_environments``.

``EnvironmentCache.get(repo_path, commit, test_files)`` finds the language of the task's tests, the manifests at
the base commit, the runner, and (for Python) the interpreter; their hash is the key. A ready environment is a
cache hit (nothing runs); a missing one is built under a lock in ``<root>/<key>/`` (``env.json`` is written last,
so a crashed build is never mistaken for a finished one). A failed build is remembered for
``retry_failed_s`` (then tried again: registries come back). Disk use stays under ``cap_gb``: least recently
used environments go first, never one in use by the current run.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from distill_assets.environments.manifests import EnvSpec, RunnerInfo, detect_runner, test_language
from distill_assets.environments.node import build_node_env
from distill_assets.environments.python import (
    Interpreter,
    build_python_env,
    choose_interpreter,
    discover_interpreters,
    python_sandbox_env,
)
from distill_assets.tasks.snapshot import GitSnapshot
from distill_assets.sandbox.backends import WORKDIR

BUILDER_VERSION = "2"  # 2: unlocked npm installs resolve as of the commit date
STATUSES = ("ready", "install_failed", "unsupported")
SYSTEM_PREFIXES = ("/usr/", "/bin/", "/lib")


@dataclass
class EnvRecord:
    key: str
    language: str | None
    status: str  # ready | install_failed | unsupported
    detail: str = ""
    path: str = ""
    runner: str | None = None
    runner_why: str = ""
    interpreter: str = ""
    interpreter_prefix: str = ""
    python_version: str = ""
    manifests: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    seconds: float = 0.0
    size_mb: float = 0.0
    log_tail: str = ""
    built_at: float = 0.0
    cache_hit: bool = False

    def sandbox(self) -> tuple[dict[str, str], list[str]]:
        """(environment variables, read-only mounts) for a sandboxed run in this environment."""
        if self.status != "ready":
            return {}, []
        root = Path(self.path)
        if self.language == "python":
            env, mounts = python_sandbox_env(root / "venv", self.interpreter_prefix)
            return env, [m for m in mounts if m == str(root) or not (m == "/usr" or m.startswith(SYSTEM_PREFIXES))]
        if self.language == "node":
            nm = root / "node" / "node_modules"
            return {
                "PATH": f"{WORKDIR}/node_modules/.bin:{nm}/.bin:/usr/local/bin:/usr/bin:/bin",
                "DISTILL_NODE_MODULES": str(nm),
                "NODE_OPTIONS": "--no-warnings",
            }, [str(root)]
        return {}, []


def sandbox_unreachable(path: Path) -> str | None:
    """The first folder at or above ``path`` that the sandbox user cannot pass, or None. Only as root: bwrap then
    runs as uid 65534, which must reach a mounted environment by its path (Docker's daemon mounts as root)."""
    if os.geteuid() != 0:
        return None
    p = Path(path).resolve()
    for d in [p, *p.parents]:
        if d.exists() and not d.stat().st_mode & 0o001:
            return str(d)
    return None


def _du_mb(path: Path) -> float:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return round(total / 2**20, 1)


class EnvironmentCache:
    def __init__(
        self,
        root: Path,
        *,
        cap_gb: float = 20.0,
        retry_failed_s: float = 24 * 3600,
        pythons: tuple[str, ...] = (),
        uv: str | None = None,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cap_gb = cap_gb
        self.retry_failed_s = retry_failed_s
        self.pythons = tuple(pythons)
        pinned = Path(sys.executable).parent / "uv"  # the project's own (pyproject.toml pins it)
        self.uv = uv or (str(pinned) if pinned.is_file() else shutil.which("uv") or "uv")
        self.in_use: set[str] = set()

    # ------------------------------------------------------------------ facts about a commit

    def spec_for(
        self, repo_path: str, commit: str, test_files: list[str], commit_date: str | None = None
    ) -> tuple[EnvSpec | None, RunnerInfo, Interpreter | None, str]:
        snap = GitSnapshot(repo_path, commit)
        tree = snap.tree()
        language = test_language(test_files, tree)
        if language is None:
            return None, RunnerInfo(None, "no test files in a supported language"), None, ""
        probe = EnvSpec.of(language, tree, BUILDER_VERSION)
        files = snap.read(list(probe.manifests) + [p for p in test_files if p in tree], max_bytes=2_000_000)
        runner = detect_runner(language, files, tree, test_files)
        interp, why = None, ""
        extra = ""
        if language == "python":
            with tempfile.TemporaryDirectory() as tmp:
                for p, data in files.items():
                    if p in probe.manifests and "/" not in p:
                        (Path(tmp) / p).write_bytes(data)
                interp, why = choose_interpreter(discover_interpreters(self.pythons), Path(tmp), commit_date)
            extra = interp.short if interp else "none"
        return EnvSpec.of(language, tree, BUILDER_VERSION, extra=f"{extra}|{runner.runner}"), runner, interp, why

    # ------------------------------------------------------------------ the cache

    def _read(self, key: str) -> EnvRecord | None:
        f = self.root / key / "env.json"
        if not f.is_file():
            return None
        try:
            return EnvRecord(**json.loads(f.read_text()))
        except (ValueError, TypeError):
            return None

    def get(self, repo_path: str, commit: str, test_files: list[str], commit_date: str | None = None) -> EnvRecord:
        if not commit_date:  # unpinned dependencies resolve as of the commit's date
            proc = subprocess.run(
                ["git", "-C", repo_path, "show", "-s", "--format=%cI", commit], capture_output=True, text=True
            )
            commit_date = proc.stdout.strip() or None
        spec, runner, interp, interp_why = self.spec_for(repo_path, commit, test_files, commit_date)
        if spec is None:
            return EnvRecord(key="", language=None, status="unsupported", detail=runner.why)
        blocked = sandbox_unreachable(self.root)
        if blocked:
            return EnvRecord(
                key=spec.key,
                language=spec.language,
                status="install_failed",
                runner=runner.runner,
                detail=f"the sandbox user (uid 65534) cannot pass {blocked} (mode "
                f"{oct(os.stat(blocked).st_mode & 0o777)}) to reach the environments in {self.root}: "
                "set sandbox.env_dir to a folder it can reach",
            )
        self.in_use.add(spec.key)
        rec = self._cached(spec.key)
        if rec is not None:
            return rec
        lock = self.root / f"{spec.key}.lock"
        with open(lock, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # another process building the same key: wait, then it is a hit
            rec = self._cached(spec.key)
            if rec is not None:
                return rec
            rec = self._build(spec, runner, interp, interp_why, repo_path, commit, commit_date)
        self.evict()
        return rec

    def _cached(self, key: str) -> EnvRecord | None:
        rec = self._read(key)
        if rec is None:
            return None
        if rec.status == "install_failed" and time.time() - rec.built_at > self.retry_failed_s:
            return None
        (self.root / key / "env.json").touch()  # last use, for eviction
        rec.cache_hit = True
        return rec

    def _build(
        self,
        spec: EnvSpec,
        runner: RunnerInfo,
        interp: Interpreter | None,
        interp_why: str,
        repo_path: str,
        commit: str,
        commit_date: str | None,
    ) -> EnvRecord:
        dest = self.root / spec.key
        shutil.rmtree(dest, ignore_errors=True)  # a crashed earlier build
        dest.mkdir(parents=True)
        t0 = time.perf_counter()
        log: list[str] = []
        rec = EnvRecord(
            key=spec.key,
            language=spec.language,
            status="install_failed",
            path=str(dest),
            runner=runner.runner,
            runner_why=runner.why,
            manifests=sorted(spec.manifests),
        )
        if runner.runner is None:
            rec.status, rec.detail = "unsupported", runner.why
        elif spec.language == "go":
            rec.status, rec.detail = (
                "unsupported",
                (
                    "Go modules cannot be fetched here (only PyPI, Debian and npm are reachable)"
                    if shutil.which("go")
                    else "go is not installed"
                ),
            )
        else:
            with tempfile.TemporaryDirectory(prefix="distill-env-") as tmp:
                tree = Path(tmp) / "tree"
                tree.mkdir()
                proc = subprocess.run(["git", "-C", repo_path, "archive", "--format=tar", commit], capture_output=True)
                subprocess.run(["tar", "-x", "-C", str(tree)], input=proc.stdout, check=True)
                if spec.language == "python":
                    built = build_python_env(
                        dest,
                        tree,
                        runner.runner,
                        uv=self.uv,
                        cache_dir=self.root / "_uv-cache",
                        interpreters=discover_interpreters(self.pythons),
                        log=log,
                        commit_date=commit_date,
                        interpreter_store=self.root / "_pythons",
                    )
                    rec.fallbacks, rec.sources = built.fallbacks, built.sources
                    if built.interpreter:
                        rec.interpreter, rec.interpreter_prefix = built.interpreter.path, built.interpreter.prefix
                        rec.python_version = ".".join(map(str, built.interpreter.version))
                    rec.status = "ready" if built.ok else "install_failed"
                    rec.detail = built.why or interp_why
                elif spec.language == "node":
                    built = build_node_env(
                        dest, tree, cache_dir=self.root / "_npm-cache", log=log, commit_date=commit_date
                    )
                    rec.fallbacks = built.fallbacks
                    rec.status = "ready" if built.ok else "install_failed"
                    rec.detail = built.why
        rec.seconds = round(time.perf_counter() - t0, 2)
        rec.size_mb = _du_mb(dest)
        rec.log_tail = "\n".join(log)[-3000:]
        rec.built_at = time.time()
        (dest / "build.log").write_text("\n".join(log))
        tmpf = dest / "env.json.tmp"
        tmpf.write_text(json.dumps(asdict(rec)))
        tmpf.replace(dest / "env.json")
        return rec

    def evict(self) -> list[str]:
        """Remove least recently used environments until the cache is under ``cap_gb`` (those in use stay)."""
        envs = []
        for d in self.root.iterdir():
            f = d / "env.json"
            if d.is_dir() and not d.name.startswith("_") and f.is_file():
                envs.append((f.stat().st_mtime, d))
        sizes = {d: _du_mb(d) for _, d in envs}
        total = sum(sizes.values())
        removed = []
        for _, d in sorted(envs):
            if total <= self.cap_gb * 1024:
                break
            if d.name in self.in_use:
                continue
            shutil.rmtree(d, ignore_errors=True)
            total -= sizes[d]
            removed.append(d.name)
        return removed


def environment_cache(cfg) -> EnvironmentCache:
    """The project's environment cache, from distill.yaml's ``sandbox`` settings."""
    sb = cfg.sandbox
    return EnvironmentCache(
        sb.env_dir or cfg.resolved_cache_dir() / "environments",
        cap_gb=sb.env_cache_gb,
        retry_failed_s=sb.env_retry_failed_h * 3600,
        pythons=tuple(sb.pythons),
    )


def wants_environment(cfg, repo: str) -> tuple[bool, str]:
    """Whether ``repo`` gets test environments, and why not when it does not."""
    mode = cfg.sandbox.environments
    if mode == "never":
        return False, "sandbox.environments is never"
    if mode == "auto" and cfg.sandbox.test_commands.get(repo):
        return False, "sandbox.test_commands names this repository (sandbox.environments: always builds anyway)"
    return True, ""

"""Where untrusted code runs: bubblewrap on one machine, Docker containers to scale out.

Both give: no network, a read-only view of everything but the workspace and a
scratch /tmp, a non-root user, a wall-clock time-out, memory and process-count
limits, and nothing left running afterwards. A backend that cannot give these
raises ``SandboxUnavailable``; code never runs unsandboxed as a fallback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

NOBODY = 65534
# where the workspace appears inside a sandbox: a path no host file lives at (environments are mounted at their
# own host paths, which may well be under /work or /home)
WORKDIR = "/sandbox"
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
# what a test needs of the host: programs and libraries, and the few files of /etc that they read. Nothing else
# of the host is visible (not /root, /home, /work, /srv, the project's checkout or its .env files).
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = (
    "passwd",
    "group",
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "alternatives",
    "mime.types",
    "hosts",
    "host.conf",
    "os-release",
    "ssl",
    "ca-certificates",
    "debian_version",
    "protocols",
    "services",
    "npmrc",
    "gitconfig",
)


def system_binds() -> list[str]:
    """bwrap arguments that show the host's programs, libraries and needed /etc files (read-only), nothing more."""
    import glob

    args: list[str] = []
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    etc = [f"/etc/{n}" for n in _ETC] + sorted(glob.glob("/etc/python3*")) + sorted(glob.glob("/etc/node*"))
    for p in etc:
        if os.path.islink(p):
            args += ["--symlink", os.readlink(p), p]
        elif os.path.exists(p):
            args += ["--ro-bind", p, p]
    return args


class SandboxUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 300.0
    memory_mb: int = 2048
    max_processes: int = 256
    max_file_mb: int = 512


@dataclass
class Execution:
    returncode: int | None  # None: killed at the time-out
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool


def decode_output(b: bytes | None, limit: int = 200_000) -> str:
    text = (b or b"").decode("utf-8", "replace")
    return text if len(text) <= limit else text[: limit // 2] + "\n... (cut) ...\n" + text[-limit // 2 :]


def run_killable(argv: list[str], timeout_s: float, kill, cleanup=None) -> Execution:
    """Run ``argv`` in its own session; past ``timeout_s`` call ``kill(proc)`` and keep what it wrote so far.
    ``cleanup()`` runs in every case (e.g. removing a container)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        kill(proc)
        out, err = proc.communicate()
        timed_out = True
    finally:
        if cleanup is not None:
            cleanup()
    rc = None if timed_out else proc.returncode
    return Execution(rc, decode_output(out), decode_output(err), time.perf_counter() - t0, timed_out)


class BwrapBackend:
    """bubblewrap: new user/pid/net/ipc/uts namespaces; only the host's programs, libraries and a few /etc files
    (``system_binds``) and the test environment's mounts, read-only; the workspace at WORKDIR (/sandbox); rlimits.

    As root, the sandbox drops to uid 65534 first (setpriv) so the process-count limit binds
    and nothing runs as root even inside; the workspace is handed to that user.
    """

    name = "bwrap"

    def __init__(self):
        self.bwrap = shutil.which("bwrap")
        if not self.bwrap:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed: `make setup` installs it (apt-get install bubblewrap)"
            )
        self.setpriv = shutil.which("setpriv") if os.geteuid() == 0 else None
        if os.geteuid() == 0 and not self.setpriv:
            raise SandboxUnavailable("running as root needs `setpriv` (util-linux) to drop to an unprivileged user")

    def prepare(self, workspace: Path) -> None:
        if os.geteuid() == 0:
            for root, dirs, files in os.walk(workspace):
                os.chown(root, NOBODY, NOBODY)
                for f in files:
                    os.lchown(os.path.join(root, f), NOBODY, NOBODY)

    def argv(
        self,
        workspace: Path,
        command: str,
        limits: Limits,
        mounts: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        inner = [self.bwrap, *system_binds(), "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        for m in mounts:  # a test environment (venv, node_modules, an interpreter) at its own path, read-only
            inner += ["--ro-bind", m, m]
        inner += [
            "--bind",
            str(workspace),
            WORKDIR,
            "--chdir",
            WORKDIR,
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--clearenv",
        ]
        for k, v in {**BASE_ENV, **(env or {})}.items():
            inner += ["--setenv", k, v]
        inner += ["--", "/bin/sh", "-c", command]
        rl = [
            "prlimit",
            f"--nproc={limits.max_processes}",
            f"--as={limits.memory_mb * 1024 * 1024}",
            f"--fsize={limits.max_file_mb * 1024 * 1024}",
            "--core=0",
            "--",
        ]
        if self.setpriv:
            return [
                self.setpriv,
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
                "--inh-caps=-all",
                *rl,
                *inner,
            ]
        return [*rl, *inner]

    def run(
        self,
        workspace: Path,
        command: str,
        limits: Limits,
        mounts: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> Execution:
        self.prepare(workspace)
        # killing bwrap tears down its pid namespace: every process inside dies with it
        return run_killable(
            self.argv(workspace, command, limits, mounts, env),
            limits.timeout_s,
            kill=lambda proc: os.killpg(proc.pid, signal.SIGKILL),
        )


class DockerBackend:
    """A throw-away container per run from a per-repository image (its dependencies baked in)."""

    name = "docker"

    def __init__(self, image: str):
        self.image = image
        self.docker = shutil.which("docker")
        if not self.docker:
            raise SandboxUnavailable("docker is not installed: `make setup` installs docker.io")
        probe = subprocess.run([self.docker, "image", "inspect", image], capture_output=True)
        if probe.returncode != 0:
            msg = probe.stderr.decode(errors="replace").strip().splitlines()
            raise SandboxUnavailable(
                f"docker image {image!r} is not available ({msg[-1] if msg else 'no daemon'}); "
                "build it with docker/sandbox/build-base.sh"
            )

    def prepare(self, workspace: Path) -> None:
        BwrapBackend.prepare(self, workspace)  # same ownership hand-over to uid 65534

    def argv(
        self,
        name: str,
        workspace: Path,
        command: str,
        limits: Limits,
        mounts: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        extra: list[str] = []
        for d in sorted({root_parent(m) for m in mounts} - {None}):  # /root/...: a traversable empty parent
            extra += ["--tmpfs", f"{d}:rw,nosuid,mode=755,size=1m"]
        for m in mounts:
            extra += ["-v", f"{m}:{m}:ro"]
        for k, v in {**BASE_ENV, **(env or {})}.items():
            extra += ["-e", f"{k}={v}"]
        return [
            self.docker,
            "run",
            "--rm",
            "--name",
            name,
            "--network",
            "none",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,nosuid,size=256m",
            "--user",
            f"{NOBODY}:{NOBODY}",
            "--memory",
            f"{limits.memory_mb}m",
            "--memory-swap",
            f"{limits.memory_mb}m",
            "--pids-limit",
            str(limits.max_processes),
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--ulimit",
            f"fsize={limits.max_file_mb * 1024 * 1024}",
            *extra,
            "-v",
            f"{workspace}:{WORKDIR}",
            "-w",
            WORKDIR,
            self.image,
            "/bin/sh",
            "-c",
            command,
        ]

    def run(
        self,
        workspace: Path,
        command: str,
        limits: Limits,
        mounts: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> Execution:
        self.prepare(workspace)
        name = f"distill-sbx-{uuid.uuid4().hex[:12]}"
        return run_killable(
            self.argv(name, workspace, command, limits, mounts, env),
            limits.timeout_s,
            kill=lambda proc: subprocess.run([self.docker, "kill", name], capture_output=True),
            cleanup=lambda: subprocess.run([self.docker, "rm", "-f", name], capture_output=True),
        )


def root_parent(mount: str) -> str | None:
    """A mount under a private home (``/root/...``) needs its top folder made traversable in a container."""
    parts = Path(mount).parts
    return "/" + parts[1] if len(parts) > 2 and parts[1] in ("root",) else None


DEFAULT_IMAGE = "distill-sandbox:bookworm"


def get_backend(name: str, image: str | None = None):
    """The sandbox backend ``name``: bwrap or docker. The dagster_docker backend lives in the Dagster layer
    (``distill_assets.defs.sandbox``): it launches its containers from a Dagster step."""
    if name == "bwrap":
        return BwrapBackend()
    if name == "docker":
        return DockerBackend(image or DEFAULT_IMAGE)
    if name == "dagster_docker":
        raise SandboxUnavailable("the dagster_docker backend runs inside a Dagster step (it needs its context)")
    raise SandboxUnavailable(f"unknown sandbox backend {name!r} (bwrap, docker or dagster_docker)")

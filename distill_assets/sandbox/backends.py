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

NOBODY = 65534


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


def _decode(b: bytes | None, limit: int = 200_000) -> str:
    text = (b or b"").decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit // 2] + "\n... (cut) ...\n" + text[-limit // 2:]


class BwrapBackend:
    """bubblewrap: new user/pid/net/ipc/uts namespaces, / read-only, workspace at /work, rlimits.

    As root, the sandbox drops to uid 65534 first (setpriv) so the process-count limit binds
    and nothing runs as root even inside; the workspace is handed to that user.
    """

    name = "bwrap"

    def __init__(self):
        self.bwrap = shutil.which("bwrap")
        if not self.bwrap:
            raise SandboxUnavailable("bubblewrap (bwrap) is not installed: `make setup` installs it "
                                     "(apt-get install bubblewrap)")
        self.setpriv = shutil.which("setpriv") if os.geteuid() == 0 else None
        if os.geteuid() == 0 and not self.setpriv:
            raise SandboxUnavailable("running as root needs `setpriv` (util-linux) to drop to an unprivileged user")

    def prepare(self, workspace: Path) -> None:
        if os.geteuid() == 0:
            for root, dirs, files in os.walk(workspace):
                os.chown(root, NOBODY, NOBODY)
                for f in files:
                    os.lchown(os.path.join(root, f), NOBODY, NOBODY)

    def argv(self, workspace: Path, command: str, limits: Limits) -> list[str]:
        inner = [
            self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
            "--bind", str(workspace), "/work", "--chdir", "/work", "--unshare-all", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--clearenv",
            "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--", "/bin/sh", "-c", command,
        ]
        rl = ["prlimit", f"--nproc={limits.max_processes}", f"--as={limits.memory_mb * 1024 * 1024}",
              f"--fsize={limits.max_file_mb * 1024 * 1024}", "--core=0", "--"]
        if self.setpriv:
            return [self.setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
                    *rl, *inner]
        return [*rl, *inner]

    def run(self, workspace: Path, command: str, limits: Limits) -> Execution:
        self.prepare(workspace)
        t0 = time.perf_counter()
        proc = subprocess.Popen(self.argv(workspace, command, limits), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=limits.timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            # killing bwrap tears down its pid namespace: every process inside dies with it
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            timed_out = True
        return Execution(None if timed_out else proc.returncode, _decode(out), _decode(err),
                         time.perf_counter() - t0, timed_out)


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
            raise SandboxUnavailable(f"docker image {image!r} is not available ({msg[-1] if msg else 'no daemon'}); "
                                     "build it with docker/sandbox/build-base.sh")

    def prepare(self, workspace: Path) -> None:
        BwrapBackend.prepare(self, workspace)  # same ownership hand-over to uid 65534

    def argv(self, name: str, workspace: Path, command: str, limits: Limits) -> list[str]:
        return [self.docker, "run", "--rm", "--name", name, "--network", "none", "--read-only",
                "--tmpfs", "/tmp:rw,nosuid,size=256m", "--user", f"{NOBODY}:{NOBODY}",
                "--memory", f"{limits.memory_mb}m", "--memory-swap", f"{limits.memory_mb}m",
                "--pids-limit", str(limits.max_processes), "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges", "--ulimit", f"fsize={limits.max_file_mb * 1024 * 1024}",
                "-e", "HOME=/tmp", "-e", "PYTHONDONTWRITEBYTECODE=1", "-v", f"{workspace}:/work", "-w", "/work",
                self.image, "/bin/sh", "-c", command]

    def run(self, workspace: Path, command: str, limits: Limits) -> Execution:
        self.prepare(workspace)
        name = f"distill-sbx-{uuid.uuid4().hex[:12]}"
        t0 = time.perf_counter()
        proc = subprocess.Popen(self.argv(name, workspace, command, limits), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=limits.timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            subprocess.run([self.docker, "kill", name], capture_output=True)
            out, err = proc.communicate()
            timed_out = True
        finally:
            subprocess.run([self.docker, "rm", "-f", name], capture_output=True)
        return Execution(None if timed_out else proc.returncode, _decode(out), _decode(err),
                         time.perf_counter() - t0, timed_out)


def get_backend(name: str, image: str | None = None) -> BwrapBackend | DockerBackend:
    if name == "bwrap":
        return BwrapBackend()
    if name == "docker":
        return DockerBackend(image or "distill-sandbox:bookworm")
    raise SandboxUnavailable(f"unknown sandbox backend {name!r} (bwrap or docker)")

"""The sandbox backend of the Dagster layer: the Docker sandbox launched through dagster-docker's
PipesDockerClient from inside a step (its container logs stream into the run). The domain package
``distill_assets.sandbox`` knows nothing of Dagster; ``backends(context)`` hands the domain a factory that
knows this backend too."""

import shlex
import time
import uuid
from pathlib import Path
from typing import Callable, Mapping, Sequence

import dagster as dg
from dagster_docker import PipesDockerClient

from distill_assets.containers import remove_containers
from distill_assets.sandbox.backends import (
    BASE_ENV,
    DEFAULT_IMAGE,
    NOBODY,
    WORKDIR,
    BwrapBackend,
    DockerBackend,
    Execution,
    Limits,
    decode_output,
    get_backend,
    root_parent,
)


def backends(context: dg.AssetExecutionContext | None) -> Callable[[str, str | None], object]:
    """(backend name, image) -> backend: the domain's backends, and dagster_docker within this step."""

    def make(name: str, image: str | None = None):
        if name == "dagster_docker" and context is not None:
            return PipesDockerBackend(context, image or DEFAULT_IMAGE)
        return get_backend(name, image)

    return make


class PipesDockerBackend:
    """The Docker sandbox launched through dagster-docker's PipesDockerClient, from inside a Dagster step.

    Same isolation as ``DockerBackend``; the container's logs stream into the Dagster run. The
    test output is written into the workspace (the container always exits 0 so the Pipes client
    does not treat a failing test as a broken step); a coreutils ``timeout`` enforces the wall clock.
    """

    name = "dagster_docker"

    def __init__(self, context: dg.AssetExecutionContext, image: str):
        DockerBackend(image)  # same availability checks: docker CLI, daemon, image
        self.context = context
        self.image = image
        self.client = PipesDockerClient()

    def prepare(self, workspace: Path) -> None:
        BwrapBackend.prepare(self, workspace)

    def run(
        self,
        workspace: Path,
        command: str,
        limits: Limits,
        mounts: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> Execution:
        self.prepare(workspace)
        label = f"distill-sbx-{uuid.uuid4().hex[:12]}"
        out, err, rc = ".distill-sbx.out", ".distill-sbx.err", ".distill-sbx.rc"
        wrapped = (
            f"timeout -s KILL {int(limits.timeout_s)} /bin/sh -c {shlex.quote(command)} > {WORKDIR}/{out} 2> {WORKDIR}/{err};"
            f" echo $? > {WORKDIR}/{rc}; exit 0"
        )
        t0 = time.perf_counter()
        try:
            volumes = {str(workspace): {"bind": WORKDIR, "mode": "rw"}}
            volumes.update({m: {"bind": m, "mode": "ro"} for m in mounts})
            tmpfs = {"/tmp": "rw,nosuid,size=256m"}
            tmpfs.update({d: "rw,nosuid,mode=755,size=1m" for d in {root_parent(m) for m in mounts} - {None}})
            self.client.run(
                context=self.context,
                image=self.image,
                command=["/bin/sh", "-c", wrapped],
                env={**BASE_ENV, **(env or {})},
                container_kwargs={
                    "network_mode": "none",
                    "read_only": True,
                    "tmpfs": tmpfs,
                    "user": f"{NOBODY}:{NOBODY}",
                    "mem_limit": f"{limits.memory_mb}m",
                    "memswap_limit": f"{limits.memory_mb}m",
                    "pids_limit": limits.max_processes,
                    "cap_drop": ["ALL"],
                    "security_opt": ["no-new-privileges"],
                    "volumes": volumes,
                    "working_dir": WORKDIR,
                    "labels": {"distill-sandbox": label},
                },
            )
        finally:
            remove_containers("distill-sandbox", label)
        duration = time.perf_counter() - t0

        def read(name: str) -> str:
            p = workspace / name
            text = p.read_text(errors="replace") if p.exists() else ""
            p.unlink(missing_ok=True)
            return text

        code_text = read(rc).strip()
        code = int(code_text) if code_text.lstrip("-").isdigit() else None
        timed_out = code == 137 and duration >= limits.timeout_s * 0.95
        return Execution(
            None if timed_out else code,
            decode_output(read(out).encode()),
            decode_output(read(err).encode()),
            duration,
            timed_out,
        )

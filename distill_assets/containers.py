"""Docker containers launched through dagster-docker's PipesDockerClient (training runs, sandboxed tests):
the container settings built from configuration, and the clean-up the client leaves to its caller."""

from __future__ import annotations

from typing import Iterable


def bind_volumes(rw: Iterable[str] = (), specs: Iterable[str] = ()) -> dict[str, dict[str, str]]:
    """docker-py volumes: each ``rw`` path mounted read-write at the same path, then each ``HOST:BIND[:MODE]``
    spec (read-only unless it says otherwise)."""
    volumes = {p: {"bind": p, "mode": "rw"} for p in rw}
    for spec in specs:
        host, bind, *mode = spec.split(":")
        volumes[host] = {"bind": bind, "mode": mode[0] if mode else "ro"}
    return volumes


def remove_containers(label: str, value: str) -> int:
    """Remove every container (running or not) labelled ``label=value``; PipesDockerClient stops its
    container but never removes it. Returns how many were removed."""
    import docker

    client = docker.from_env()
    found = client.containers.list(all=True, filters={"label": f"{label}={value}"})
    for c in found:
        c.remove(force=True)
    return len(found)

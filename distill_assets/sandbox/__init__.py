"""Execution sandbox: apply a diff to a repository snapshot and run its tests in isolation (bwrap or Docker)."""

from distill_assets.sandbox.backends import (
    BwrapBackend,
    DockerBackend,
    Execution,
    Limits,
    SandboxUnavailable,
    get_backend,
)
from distill_assets.sandbox.runner import RunResult, TestSelection, execute, partition_patch, select_tests, split_patch

__all__ = [
    "BwrapBackend",
    "DockerBackend",
    "Execution",
    "Limits",
    "SandboxUnavailable",
    "get_backend",
    "RunResult",
    "TestSelection",
    "execute",
    "partition_patch",
    "select_tests",
    "split_patch",
]

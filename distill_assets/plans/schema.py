"""The stage-4 change plan (DESIGN.md): what changes, at which symbols, in which order.

Edge references are ``"path:symbol"``. The pseudo-symbol ``<module>`` names a
file's top-level code (imports, module constants, file creation/deletion/
renaming) and exists in every file of the base tree.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MODULE = "<module>"
Action = Literal["modify", "add", "delete", "rename"]
Role = Literal["primary", "supporting", "type_stub"]


class Change(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=1, description="qualified symbol, e.g. 'Cart.total', or '<module>'")
    action: Action
    description: str = Field(default="", description="what changes and why; no code")
    depends_on: list[str] = Field(default_factory=list, description="'path:symbol' changes this one needs first")
    depended_by: list[str] = Field(default_factory=list, description="'path:symbol' changes that need this one")


class AffectedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    role: Role
    changes: list[Change] = Field(min_length=1)


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_summary: str
    affected_files: list[AffectedFile] = Field(min_length=1)
    execution_order: list[str]
    rationale: str = ""

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        return cls.model_validate(json.loads(text))

    def refs(self) -> dict[str, tuple[str, Change]]:
        """'path:symbol' -> (path, change) for every change in the plan."""
        return {f"{f.path}:{c.symbol}": (f.path, c) for f in self.affected_files for c in f.changes}


def ref(path: str, symbol: str) -> str:
    return f"{path}:{symbol}"


def split_ref(r: str) -> tuple[str, str] | None:
    """'a/b.py:Cls.m' -> ('a/b.py', 'Cls.m'). The symbol never contains ':', the path may."""
    if ":" not in r:
        return None
    path, _, sym = r.rpartition(":")
    if not path or not sym:
        return None
    return path, sym

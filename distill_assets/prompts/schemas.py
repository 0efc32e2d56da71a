"""Output schemas of the five stages, and per-task JSON schemas that constrain decoding.

The pydantic models are what an answer must parse into. ``task_schema`` builds
the JSON schema sent with each request: the same shape, plus ``enum``s of the
task's real file paths and symbols (so a model cannot name what does not
exist), ``maxItems`` bounds (so a small model cannot ramble forever), all
properties required and no extra properties (what strict providers demand).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill_assets.plans.schema import MODULE, Plan

ChangeKind = Literal[
    "feature", "bugfix", "refactor", "rename", "api_change", "performance", "tests", "docs", "build", "other"
]
Scope = Literal["single_file", "multi_file", "cross_module", "cross_language"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskAnalysis(_Out):
    intent: str = Field(min_length=1)
    change_kind: ChangeKind
    scope: Scope
    risks: list[str]
    planner_questions: list[str]


class FileRelevance(_Out):
    path: str
    relevant: bool
    reason: str


class RelevanceOutput(_Out):
    files: list[FileRelevance]


class SelectedSymbol(_Out):
    path: str
    symbol: str
    action: Literal["modify", "add", "delete", "rename"]
    reason: str


class SymbolSelectionOutput(_Out):
    symbols: list[SelectedSymbol]


class PlanOutput(_Out):
    reasoning: str
    plan: Plan


class CodeOutput(_Out):
    diff: str = Field(min_length=1)


STAGE_MODELS: dict[str, type[BaseModel]] = {
    "task_analysis": TaskAnalysis,
    "relevance": RelevanceOutput,
    "symbol_selection": SymbolSelectionOutput,
    "plan_generation": PlanOutput,
    "code_generation": CodeOutput,
}

MAX_ENUM = 400  # past this many paths, a path is a free string (grammar size)


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


MAX_SYMBOLS = 12  # symbols a stage-3 answer may select


def _str_or_enum(values: list[str]) -> dict[str, Any]:
    values = list(dict.fromkeys(values))
    if values and len(values) <= MAX_ENUM:
        return {"type": "string", "enum": values}
    return {"type": "string"}


def _strs(max_items: int) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}, "maxItems": max_items}


def _symbol_choice(candidates: list[str], symbols: dict[str, list[str]]) -> dict[str, Any]:
    """A stage-3 selection: an existing symbol is one of its own file's, as the prompt shows them (a name
    cannot be invented or paired with the wrong file); a new one ("add") is any name in a candidate file.
    Past MAX_ENUM // 10 indexed files (grammar size) the selection is one flat object."""

    def choice(paths: list[str], names: dict[str, Any], actions: list[str]) -> dict[str, Any]:
        return _obj(
            {
                "path": _str_or_enum(paths),
                "symbol": names,
                "action": {"type": "string", "enum": actions},
                "reason": {"type": "string"},
            }
        )

    indexed = [p for p in candidates if symbols.get(p)]
    if not candidates or len(indexed) > MAX_ENUM // 10:
        return choice(
            candidates,
            _str_or_enum([s for p in candidates for s in symbols.get(p, [])] + [MODULE]),
            ["modify", "add", "delete", "rename"],
        )
    existing = ["modify", "delete", "rename"]
    branches = [choice([p], _str_or_enum(symbols[p] + [MODULE]), existing) for p in indexed]
    if bare := [p for p in candidates if p not in indexed]:
        branches.append(choice(bare, _str_or_enum([MODULE]), existing))
    return {"anyOf": [*branches, choice(candidates, {"type": "string"}, ["add"])]}


def task_schema(stage: str, candidates: list[str], tree: list[str], symbols: dict[str, list[str]]) -> dict[str, Any]:
    """The JSON schema for one task's answer. ``symbols``: path -> the candidates' symbol names an answer may
    name (the ones the prompt's symbol index shows)."""
    cand_symbols = [s for p in candidates for s in symbols.get(p, [])]
    paths = candidates + [p for p in tree if p not in candidates]
    if stage == "task_analysis":
        return _obj(
            {
                "intent": {"type": "string"},
                "change_kind": {"type": "string", "enum": list(ChangeKind.__args__)},
                "scope": {"type": "string", "enum": list(Scope.__args__)},
                "risks": _strs(5),
                "planner_questions": _strs(5),
            }
        )
    if stage == "relevance":
        n = max(len(candidates), 1)
        return _obj(
            {
                "files": {
                    "type": "array",
                    "minItems": n,
                    "maxItems": n,
                    "items": _obj(
                        {
                            "path": _str_or_enum(candidates),
                            "relevant": {"type": "boolean"},
                            "reason": {"type": "string"},
                        }
                    ),
                }
            }
        )
    if stage == "symbol_selection":
        return _obj(
            {"symbols": {"type": "array", "maxItems": MAX_SYMBOLS, "items": _symbol_choice(candidates, symbols)}}
        )
    if stage == "plan_generation":
        edge = _strs(5)
        existing = _obj(
            {
                "symbol": _str_or_enum(cand_symbols + [MODULE]),
                "action": {"type": "string", "enum": ["modify", "delete", "rename"]},
                "description": {"type": "string"},
                "depends_on": edge,
                "depended_by": edge,
            }
        )
        added = _obj(
            {
                "symbol": {"type": "string"},
                "action": {"type": "string", "enum": ["add"]},
                "description": {"type": "string"},
                "depends_on": edge,
                "depended_by": edge,
            }
        )
        afile = _obj(
            {
                "path": {"type": "string"} if len(paths) > MAX_ENUM else _str_or_enum(paths),
                "role": {"type": "string", "enum": ["primary", "supporting", "type_stub"]},
                "changes": {"type": "array", "minItems": 1, "maxItems": 6, "items": {"anyOf": [existing, added]}},
            }
        )
        plan = _obj(
            {
                "task_summary": {"type": "string"},
                "affected_files": {"type": "array", "minItems": 1, "maxItems": 8, "items": afile},
                "execution_order": {
                    "type": "array",
                    "maxItems": 8,
                    "items": {"type": "string"} if len(paths) > MAX_ENUM else _str_or_enum(paths),
                },
                "rationale": {"type": "string"},
            }
        )
        return _obj({"reasoning": {"type": "string"}, "plan": plan})
    if stage == "code_generation":
        return _obj({"diff": {"type": "string", "minLength": 1}})
    raise KeyError(f"unknown stage {stage!r}")


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.S)
_THINK = re.compile(r"<think>(.*?)</think>", re.S)


def split_reasoning(text: str) -> tuple[str, str | None]:
    """Content without <think>...</think> blocks, and the thinking (kept apart)."""
    thoughts = _THINK.findall(text or "")
    return _THINK.sub("", text or "").strip(), ("\n".join(t.strip() for t in thoughts) or None)


_DECODER = json.JSONDecoder(strict=False)  # strict=False: raw newlines/tabs inside strings are common


def extract_json(text: str) -> Any:
    """The JSON value in a model answer: whole text, a fenced block, or the object that starts at the first
    ``{`` (text after it is ignored). An object cut off by the output cap raises "truncated JSON"."""
    t = _FENCE.sub("", text.strip())
    try:
        return json.loads(t, strict=False)
    except json.JSONDecodeError:
        pass
    start = t.find("{")
    if start == -1:
        raise ValueError("no JSON object in the answer")
    try:
        return _DECODER.raw_decode(t, start)[0]
    except json.JSONDecodeError as exc:
        if exc.pos >= len(t.rstrip()) or exc.msg.startswith("Unterminated string"):
            raise ValueError("truncated JSON (unbalanced braces)") from None
        raise


def parse_output(stage: str, text: str) -> tuple[BaseModel | None, str | None]:
    """(parsed answer, None) or (None, why it does not parse)."""
    content, _ = split_reasoning(text)
    try:
        data = extract_json(content)
    except (ValueError, json.JSONDecodeError) as exc:
        return None, f"json: {exc}"
    try:
        return STAGE_MODELS[stage].model_validate(data), None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        return None, f"schema: {loc}: {err['msg']}{more}"

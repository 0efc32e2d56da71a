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
MAX_SYMBOLS = 12  # symbols a stage-3 answer may select
_ANNOTATIONS = ("title", "description", "default")


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in the form strict providers and llama.cpp's grammar take: ``$ref``s inlined,
    every property required (a default does not make a field optional to the model), no extra properties,
    no titles, descriptions or defaults (they would only grow the grammar)."""
    raw = model.model_json_schema()
    defs = raw.pop("$defs", {})

    def node(n: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in n:
            return node(defs[n["$ref"].rsplit("/", 1)[1]])
        out: dict[str, Any] = {}
        for k, v in n.items():
            if k in _ANNOTATIONS:
                continue
            if k == "properties":
                out[k] = {name: node(sub) for name, sub in v.items()}
            elif isinstance(v, dict):
                out[k] = node(v)
            elif isinstance(v, list):
                out[k] = [node(x) if isinstance(x, dict) else x for x in v]
            else:
                out[k] = v
        if "properties" in out:
            out["required"] = list(out["properties"])
            out["additionalProperties"] = False
        return out

    return node(raw)


def _with(schema: dict[str, Any], **props: dict[str, Any]) -> dict[str, Any]:
    """An object schema with some of its properties replaced."""
    return {**schema, "properties": {**schema["properties"], **props}}


def _capped(array: dict[str, Any], max_items: int, **more: Any) -> dict[str, Any]:
    return {**array, "maxItems": max_items, **more}


def _enum(values: list[str], free: dict[str, Any] | None = None) -> dict[str, Any]:
    """One of ``values``; past MAX_ENUM of them (or none) the field's own free-string schema."""
    values = list(dict.fromkeys(values))
    if values and len(values) <= MAX_ENUM:
        return {"type": "string", "enum": values}
    return free or {"type": "string"}


def _symbol_choice(selected: dict[str, Any], candidates: list[str], symbols: dict[str, list[str]]) -> dict[str, Any]:
    """A stage-3 selection (``selected``: the SelectedSymbol schema): an existing symbol is one of its own
    file's, as the prompt shows them (a name cannot be invented or paired with the wrong file); a new one
    ("add") is any name in a candidate file. Past MAX_ENUM // 10 indexed files (grammar size) the selection
    is one flat object."""

    def choice(paths: list[str], names: dict[str, Any], actions: list[str]) -> dict[str, Any]:
        return _with(selected, path=_enum(paths, selected["properties"]["path"]), symbol=names, action=_enum(actions))

    indexed = [p for p in candidates if symbols.get(p)]
    if not candidates or len(indexed) > MAX_ENUM // 10:
        names = _enum([s for p in candidates for s in symbols.get(p, [])] + [MODULE])
        return choice(candidates, names, ["modify", "add", "delete", "rename"])
    existing = ["modify", "delete", "rename"]
    branches = [choice([p], _enum(symbols[p] + [MODULE]), existing) for p in indexed]
    if bare := [p for p in candidates if p not in indexed]:
        branches.append(choice(bare, _enum([MODULE]), existing))
    return {"anyOf": [*branches, choice(candidates, selected["properties"]["symbol"], ["add"])]}


def _plan_schema(plan: dict[str, Any], paths: list[str], cand_symbols: list[str]) -> dict[str, Any]:
    """The Plan schema for one task: real paths, existing symbols from the prompt's index for
    modify/delete/rename (any new name for add), bounded lists."""
    afile = plan["properties"]["affected_files"]["items"]
    change = afile["properties"]["changes"]["items"]
    cp = change["properties"]
    edges = {"depends_on": _capped(cp["depends_on"], 5), "depended_by": _capped(cp["depended_by"], 5)}
    existing = _with(
        change,
        symbol=_enum(cand_symbols + [MODULE], cp["symbol"]),
        action=_enum(["modify", "delete", "rename"]),
        **edges,
    )
    added = _with(change, action=_enum(["add"]), **edges)
    path = afile["properties"]["path"]
    afile = _with(
        afile,
        path=_enum(paths, path),
        changes=_capped(afile["properties"]["changes"], 6, items={"anyOf": [existing, added]}),
    )
    pp = plan["properties"]
    return _with(
        plan,
        affected_files=_capped(pp["affected_files"], 8, items=afile),
        execution_order=_capped(pp["execution_order"], 8, items=_enum(paths, path)),
    )


def _accepts(node: dict[str, Any], value: Any) -> bool:
    """Whether a string ``value`` fits a field's schema: its enum, or any string where it has none."""
    if "anyOf" in node:
        return any(_accepts(n, value) for n in node["anyOf"])
    if "enum" in node:
        return value in node["enum"]
    return isinstance(value, str)


def selection_allowed(schema: dict[str, Any], path: str, symbol: str, action: str) -> bool:
    """Whether a stage-3 task schema (`task_schema("symbol_selection", ...)`) lets an answer select ``symbol``
    of ``path`` with ``action``: an existing symbol only where the prompt shows it in that file, a new one
    ("add") in a candidate file."""
    item = schema["properties"]["symbols"]["items"]
    value = {"path": path, "symbol": symbol, "action": action}
    return any(
        all(_accepts(branch["properties"][k], v) for k, v in value.items()) for branch in item.get("anyOf", [item])
    )


def task_schema(stage: str, candidates: list[str], tree: list[str], symbols: dict[str, list[str]]) -> dict[str, Any]:
    """The JSON schema for one task's answer: the stage model's own schema (``strict_schema``) with the task's
    real paths and symbols as ``enum``s and ``maxItems`` bounds on top. ``symbols``: path -> the candidates'
    symbol names an answer may name (the ones the prompt's symbol index shows)."""
    if stage not in STAGE_MODELS:
        raise KeyError(f"unknown stage {stage!r}")
    base = strict_schema(STAGE_MODELS[stage])
    props = base["properties"]
    if stage == "task_analysis":
        return _with(base, risks=_capped(props["risks"], 5), planner_questions=_capped(props["planner_questions"], 5))
    if stage == "relevance":
        n = max(len(candidates), 1)
        files = props["files"]
        item = _with(files["items"], path=_enum(candidates, files["items"]["properties"]["path"]))
        return _with(base, files={**files, "minItems": n, "maxItems": n, "items": item})
    if stage == "symbol_selection":
        sym = props["symbols"]
        return _with(base, symbols=_capped(sym, MAX_SYMBOLS, items=_symbol_choice(sym["items"], candidates, symbols)))
    if stage == "plan_generation":
        cand_symbols = [s for p in candidates for s in symbols.get(p, [])]
        paths = candidates + [p for p in tree if p not in candidates]
        return _with(base, plan=_plan_schema(props["plan"], paths, cand_symbols))
    return base


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

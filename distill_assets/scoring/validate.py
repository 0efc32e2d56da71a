"""Filtering teacher candidates: structural checks per stage, then exact and near-duplicate removal.

Stage 4 plans go through the plan validator; stages 1-3 through format and
consistency checks against the task context (named files and symbols exist);
stage 5 diffs must apply to the base commit. Every dropped row keeps its reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping

import polars as pl
from datasketch import MinHash, MinHashLSH

from distill_assets.plans.schema import MODULE
from distill_assets.plans.validator import PlanContext, validate_plan
from distill_assets.prompts.schemas import STAGE_MODELS


def check_candidate(stage: str, parsed_json: str, task: Mapping[str, Any], context: Mapping[str, Any]) -> list[str]:
    """Reasons a parsed answer is unusable ([] = keep)."""
    data = STAGE_MODELS[stage].model_validate_json(parsed_json)
    tree = set(context.get("file_tree") or [])
    cands = [c["path"] for c in context.get("candidates") or []]
    symbols: dict[str, set[str]] = {}
    for s in context.get("symbols") or []:
        symbols.setdefault(s["path"], set()).add(s["name"])
    reasons: list[str] = []
    if stage == "task_analysis":
        if len(data.intent.split()) < 3:
            reasons.append("intent_too_short")
    elif stage == "relevance":
        named = [f.path for f in data.files]
        if set(named) - set(cands):
            reasons.append("unknown_file")
        if sorted(named) != sorted(cands):
            reasons.append("candidates_not_answered_once")
        if not any(f.relevant for f in data.files):
            reasons.append("no_relevant_file")
    elif stage == "symbol_selection":
        if not data.symbols:
            reasons.append("no_symbol")
        for s in data.symbols:
            if s.path not in tree and s.action != "add":
                reasons.append("unknown_file")
            elif s.action != "add" and s.symbol != MODULE and s.symbol not in symbols.get(s.path, set()):
                reasons.append("unknown_symbol")
    elif stage == "plan_generation":
        report = validate_plan(data.plan, PlanContext(tree=tree, symbols=symbols))
        reasons.extend(f"plan:{c}" for c in report.codes)
    elif stage == "code_generation":
        ok, err = diff_applies(task, data.diff)
        if not ok:
            reasons.append("diff_does_not_apply")
    return sorted(set(reasons))


def diff_applies(task: Mapping[str, Any], diff: str) -> tuple[bool, str]:
    """`git apply --check` at the base commit (temporary index, no work tree) or on inline files."""
    text = diff if diff.endswith("\n") else diff + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        if task.get("repo_path") and task.get("base_commit"):
            env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
            subprocess.run(
                ["git", "-C", task["repo_path"], "read-tree", task["base_commit"]],
                env=env,
                check=True,
                capture_output=True,
            )
            proc = subprocess.run(
                ["git", "-C", task["repo_path"], "apply", "--cached", "--check", "-"],
                env=env,
                input=text.encode(),
                capture_output=True,
            )
        else:
            for f in task.get("inline_files") or []:
                if f["old_contents"]:
                    p = Path(tmp) / (f["old_path"] or f["path"])
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_text(f["old_contents"])
            proc = subprocess.run(["git", "apply", "--check", "-"], cwd=tmp, input=text.encode(), capture_output=True)
    return proc.returncode == 0, proc.stderr.decode(errors="replace").strip()[:500]


_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_./:<>-]*")


def canonical(parsed_json: str) -> str:
    return json.dumps(json.loads(parsed_json), sort_keys=True, separators=(",", ":"))


def minhash(text: str, num_perm: int = 64) -> MinHash:
    m = MinHash(num_perm=num_perm)
    toks = _TOKEN.findall(text.lower())
    for shingle in {" ".join(toks[i : i + 3]) for i in range(max(len(toks) - 2, 1))}:
        m.update(shingle.encode())
    return m


def dedup_flags(items: list[tuple[tuple[str, str], str]], threshold: float) -> list[str | None]:
    """For (group key, parsed json) items in order: None, 'duplicate' or 'near_duplicate' within the
    group (task, stage). The first of a group is kept."""
    flags: list[str | None] = [None] * len(items)
    seen: dict[tuple[str, str], set[str]] = {}
    lsh: dict[tuple[str, str], MinHashLSH] = {}
    for i, (group, parsed) in enumerate(items):
        text = canonical(parsed)
        h = hashlib.sha256(text.encode()).hexdigest()
        if h in seen.setdefault(group, set()):
            flags[i] = "duplicate"
            continue
        seen[group].add(h)
        m = minhash(text)
        index = lsh.setdefault(group, MinHashLSH(threshold=threshold, num_perm=64))
        if index.query(m):
            flags[i] = "near_duplicate"
            continue
        index.insert(str(i), m)
    return flags


VALIDATED_EXTRA = {"kept": pl.Boolean, "drop_reason": pl.Utf8, "check_reasons": pl.List(pl.Utf8)}


def validate_candidates(
    candidates: pl.DataFrame, tasks: Mapping[str, Mapping], contexts: Mapping[str, Mapping], near_threshold: float
) -> pl.DataFrame:
    """Every candidate row with kept / drop_reason (call_error, parse_error, invalid, duplicate, ...)."""
    if candidates.height == 0:
        return candidates.with_columns(*(pl.lit(None, dtype=t).alias(c) for c, t in VALIDATED_EXTRA.items()))
    kept, reason, checks = [], [], []
    valid_items: list[tuple[int, tuple[str, str], str]] = []
    for i, r in enumerate(candidates.iter_rows(named=True)):
        why: list[str] = []
        drop = None
        if r["call_error"]:
            drop = "call_error"
        elif r["parsed_json"] is None:
            drop = "parse_error"
        else:
            task, ctx = tasks.get(r["task_id"]), contexts.get(r["task_id"])
            if task is None or ctx is None:
                drop = "no_context"
            else:
                why = check_candidate(r["stage"], r["parsed_json"], task, ctx)
                if why:
                    drop = "invalid"
                else:
                    valid_items.append((i, (r["task_id"], r["stage"]), r["parsed_json"]))
        reason.append(drop)
        checks.append(why)
    for (i, _, _), flag in zip(valid_items, dedup_flags([(g, p) for _, g, p in valid_items], near_threshold)):
        reason[i] = flag
    kept = [r is None for r in reason]
    return candidates.with_columns(
        pl.Series("kept", kept, dtype=pl.Boolean),
        pl.Series("drop_reason", reason, dtype=pl.Utf8),
        pl.Series("check_reasons", checks, dtype=pl.List(pl.Utf8)),
    )

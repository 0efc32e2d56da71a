"""What a trained student writes, and how its answer is decoded and read back.

Students learn the completions of `datasets.build`: JSON for stages 1-3 and 5, and for stage 4 the
span-tagged text ``[REASONING] ... [PLAN] {plan json}`` (the spans get different loss weights).
Decoding follows the same format: a JSON schema for the JSON stages, and for stage 4 a llama.cpp
grammar that is the tag text followed by the task's plan schema. The base model is decoded under the
same constraints, so base and adapter are compared on equal terms.
"""

from __future__ import annotations

import json
import re

from pydantic import BaseModel, ValidationError

from distill_assets.prompts.tags import PLAN_TAG, REASONING_TAG
from distill_assets.plans.schema import Plan
from distill_assets.prompts.schemas import PlanOutput, extract_json, parse_output

TAGGED_STAGES = frozenset({"plan_generation"})
_TAGGED = re.compile(re.escape(REASONING_TAG) + r"(.*?)" + re.escape(PLAN_TAG) + r"(.*)", re.S)


def tagged_plan_grammar(task_schema: dict, max_reasoning_chars: int = 400) -> str:
    """GBNF: ``[REASONING] <text without newlines, brackets or quotes> \\n[PLAN] <plan per schema>``.
    ``task_schema`` is the stage-4 prompt schema ({reasoning, plan}); its ``plan`` part (with the task's
    enums of real paths and symbols) constrains the JSON."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    plan_schema = dict(task_schema["properties"]["plan"])
    if "$defs" in task_schema:
        plan_schema["$defs"] = task_schema["$defs"]
    gbnf = json_schema_to_gbnf(json.dumps(plan_schema))
    gbnf = re.sub(r"^root ::=", "plan-root ::=", gbnf, flags=re.M)
    n = max(1, int(max_reasoning_chars))
    head = (
        f'root ::= "{REASONING_TAG} " reasoning-text "\\n{PLAN_TAG} " plan-root\n'
        f'reasoning-text ::= [^\\n\\[\\]"]{{1,{n}}}\n'
    )
    return head + gbnf


def decoding(
    stage: str, task_schema: dict | None, context_symbols: list[dict] | None = None, bookkeeping: bool = False
) -> dict:
    """How to constrain the student's answer: {"schema": json schema} (stages 1-3, 5); for stage 4
    {"grammar": gbnf}, the task's plan schema as one grammar, or with ``bookkeeping=True`` {"plan": PlanSpec},
    the plan decoder that keeps the bookkeeping right as it writes (`router.plan_decoder`;
    ``context_symbols``: the task's symbol rows, binding each shown symbol to its file). The router's default
    (`router.plan_decoder`): under the one grammar no plan was valid as written on click's held-out tasks,
    under the decoder all were (`bench/results/student_gain.md`)."""
    if stage in TAGGED_STAGES and task_schema is not None:
        if bookkeeping:
            from distill_assets.router.plan_decoder import PlanSpec

            return {"plan": PlanSpec.from_schema(task_schema, context_symbols)}
        return {"grammar": tagged_plan_grammar(task_schema)}
    return {"schema": task_schema}


def parse_student_output(stage: str, text: str) -> tuple[BaseModel | None, str | None]:
    """Stage 4: the tagged text (or, failing that, the JSON object teachers write); others: JSON."""
    if stage in TAGGED_STAGES:
        m = _TAGGED.search(text or "")
        if m:
            try:
                plan = Plan.model_validate(extract_json(m.group(2)))
            except ValidationError as exc:  # (a ValueError too: caught first)
                err = exc.errors()[0]
                return None, f"schema: plan.{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"
            except (ValueError, json.JSONDecodeError) as exc:
                return None, f"json: {exc}"
            return PlanOutput(reasoning=m.group(1).strip(), plan=plan), None
    return parse_output(stage, text)

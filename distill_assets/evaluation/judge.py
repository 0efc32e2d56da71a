"""LLM-as-judge for change plans: a configured teacher scores completeness, ordering and rationale
(1-5 each) with the gold change as its reference; scores are reported on 0-1 and calibrated against
execution outcomes by the report (a calibration of the judge against the tests)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill_assets.prompts.schemas import extract_json, split_reasoning

CRITERIA = ("completeness", "ordering", "rationale")

SYSTEM = (
    "You review change plans for a code change. Score the candidate plan against the task and the reference "
    "change (the real diff), each from 1 (poor) to 5 (excellent):\n"
    "- completeness: does the plan name every file and symbol the change needs, and nothing needless?\n"
    "- ordering: are execution_order and the dependency edges an order a developer could follow?\n"
    "- rationale: does the rationale explain why these changes achieve the task?\n"
    'Answer with one JSON object: {"completeness": n, "ordering": n, "rationale": n, "comment": "..."}.'
)


class JudgeScores(BaseModel):
    model_config = ConfigDict(extra="ignore")

    completeness: int = Field(ge=1, le=5)
    ordering: int = Field(ge=1, le=5)
    rationale: int = Field(ge=1, le=5)
    comment: str = ""

    def normalised(self) -> dict[str, float]:
        return {f"judge_{c}": (getattr(self, c) - 1) / 4 for c in CRITERIA}


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{c: {"type": "integer", "minimum": 1, "maximum": 5} for c in CRITERIA},
        "comment": {"type": "string"},
    },
    "required": [*CRITERIA, "comment"],
    "additionalProperties": False,
}


def judge_messages(task: Mapping[str, Any], plan_json: str, max_patch_chars: int = 6000) -> list[dict[str, str]]:
    patch = task.get("gold_patch") or ""
    if len(patch) > max_patch_chars:
        patch = patch[:max_patch_chars] + "\n... (cut)"
    user = (
        f"Task:\n{task['description']}\n\nReference change (the real diff):\n{patch}\n\n"
        f"Candidate plan:\n{json.dumps(json.loads(plan_json), indent=1)}"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def messages_hash(messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


def parse_judge(text: str | None) -> tuple[JudgeScores | None, str | None]:
    content, _ = split_reasoning(text or "")
    try:
        return JudgeScores.model_validate(extract_json(content)), None
    except ValidationError as exc:  # (a ValueError too: caught first)
        err = exc.errors()[0]
        return None, f"schema: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}"
    except (ValueError, json.JSONDecodeError) as exc:
        return None, f"json: {exc}"

"""The promotion gate: a new adapter becomes the live one for its stage only if none of the stage's
headline metrics falls more than ``tolerance`` below the live adapter's; every decision is recorded
with its reason (``decisions.jsonl``), and the live set (``live.json``) is what the router serves."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping


@dataclass
class Decision:
    stage: str
    candidate_sha256: str
    live_sha256: str | None
    promote: bool
    reason: str
    regressions: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> {live, candidate, drop}
    candidate_metrics: dict[str, float | None] = field(default_factory=dict)
    ts: str = ""


def decide(stage: str, candidate_sha: str, candidate: Mapping[str, float | None], live: Mapping[str, Any] | None,
           tolerance: float) -> Decision:
    """Compare headline means. A metric the candidate could not be measured on while the live one was is
    a regression; a metric neither could measure is ignored."""
    if live is None:
        return Decision(stage, candidate_sha, None, True, "no live adapter yet: the first evaluated one goes live",
                        candidate_metrics=dict(candidate))
    if live.get("adapter_sha256") == candidate_sha:
        return Decision(stage, candidate_sha, candidate_sha, True, "already live (same adapter)",
                        candidate_metrics=dict(candidate))
    regressions = {}
    live_metrics = live.get("metrics") or {}
    for metric, old in live_metrics.items():
        if old is None:
            continue
        new = candidate.get(metric)
        if new is None or new < old - tolerance:
            regressions[metric] = {"live": old, "candidate": new, "drop": old - (new or 0.0)}
    if regressions:
        worst = ", ".join(f"{m} {v['live']:.3f} -> " + ("n/a" if v["candidate"] is None else f"{v['candidate']:.3f}")
                          for m, v in regressions.items())
        return Decision(stage, candidate_sha, live.get("adapter_sha256"), False,
                        f"headline regression beyond tolerance {tolerance}: {worst}", regressions, dict(candidate))
    return Decision(stage, candidate_sha, live.get("adapter_sha256"), True,
                    f"no headline metric drops more than {tolerance} against the live adapter", {}, dict(candidate))


class Registry:
    """``live.json`` (stage -> live adapter and its headline metrics) and ``decisions.jsonl``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.live_path, self.log_path = self.root / "live.json", self.root / "decisions.jsonl"

    def live(self) -> dict[str, dict[str, Any]]:
        return json.loads(self.live_path.read_text()) if self.live_path.exists() else {}

    def record(self, decision: Decision, entry: Mapping[str, Any] | None = None) -> Decision:
        """Append the decision; on promotion, make ``entry`` (adapter paths, hashes) live for the stage."""
        decision.ts = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        with open(self.log_path, "a") as fh:
            fh.write(json.dumps(asdict(decision)) + "\n")
        if decision.promote and entry is not None:
            live = self.live()
            live[decision.stage] = {**entry, "adapter_sha256": decision.candidate_sha256,
                                    "metrics": decision.candidate_metrics, "promoted_at": decision.ts}
            tmp = self.live_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(live, indent=2))
            os.replace(tmp, self.live_path)
        return decision

    def decisions(self, stage: str | None = None) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        rows = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
        return [r for r in rows if stage is None or r["stage"] == stage]

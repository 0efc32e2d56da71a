"""The promotion gate: a new adapter becomes the live one for its stage only if, on the same held-out
tasks, it beats the base student on the stage's gain metric (mean paired gain at least
``min_gain_over_base`` and the paired bootstrap interval's lower end above zero) and none of the stage's
headline metrics falls more than ``tolerance`` below what the router serves now: the live adapter, or the
base student when nothing is live. Every decision is recorded with both comparisons and their intervals
(``decisions.jsonl``); the live set (``live.json``) is what the router serves."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from distill_assets.evaluation.metrics import GAIN_METRIC, HEADLINE, paired_gain


@dataclass(frozen=True)
class GateSettings:
    min_gain_over_base: float = 0.02
    tolerance: float = 0.02
    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0


@dataclass
class Comparison:
    """The candidate against another system on one metric, over the tasks both were measured on."""

    metric: str
    against: str  # base | live | live (recorded means)
    n: int
    candidate: float | None
    other: float | None
    gain: float | None  # mean paired difference candidate - other
    ci_low: float | None
    ci_high: float | None
    passed: bool
    rule: str

    def line(self) -> str:
        if self.gain is None:
            return f"{self.metric} vs {self.against}: not measured on a common task"
        iv = "" if self.ci_low is None else f" [{self.ci_low:+.3f}, {self.ci_high:+.3f}]"
        return (
            f"{self.metric} vs {self.against}: {self.other:.3f} -> {self.candidate:.3f}, gain {self.gain:+.3f}"
            f"{iv} over {self.n} task(s)"
        )


@dataclass
class Decision:
    stage: str
    candidate_sha256: str
    live_sha256: str | None
    promote: bool
    reason: str
    regressions: dict[str, dict[str, float | None]] = field(default_factory=dict)  # metric -> {live, candidate, drop}
    candidate_metrics: dict[str, float | None] = field(default_factory=dict)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    serving: str = ""  # what the router serves for the stage after the decision
    ts: str = ""


def scores(rows: pl.DataFrame, system: str, metric: str) -> dict[str, float | None]:
    """Per-task values of one system's metric (task id -> value; None where it does not apply)."""
    if not rows.height or metric not in rows.columns:
        return {}
    part = rows.filter(pl.col("system") == system)
    return dict(zip(part["task_id"].to_list(), part[metric].to_list()))


def _mean(values: Mapping[str, float | None]) -> float | None:
    xs = [v for v in values.values() if v is not None]
    return sum(xs) / len(xs) if xs else None


def decide(
    stage: str, candidate_sha: str, rows: pl.DataFrame, live: Mapping[str, Any] | None, settings: GateSettings
) -> Decision:
    """Judge the candidate (``rows`` with ``system == "adapter"``) against the base student (``"base"``) and
    the live adapter (``"live"``: its answers on the same tasks; when they are missing, the means recorded
    at its promotion, compared unpaired). A metric the candidate could not be measured on while the other
    system was is a regression; a metric neither was measured on is ignored."""
    s = settings
    means = {m: _mean(scores(rows, "adapter", m)) for m in HEADLINE[stage]}
    live_sha = (live or {}).get("adapter_sha256")
    if live_sha == candidate_sha:
        return Decision(
            stage,
            candidate_sha,
            live_sha,
            True,
            "already live (same adapter)",
            candidate_metrics=means,
            serving=f"adapter {candidate_sha[:12]}",
        )
    gm = GAIN_METRIC[stage]
    g = paired_gain(scores(rows, "adapter", gm), scores(rows, "base", gm), s.n_boot, s.level, s.seed)
    beats = g["n"] > 0 and g["gain"] >= s.min_gain_over_base and g["ci_low"] > 0
    comparisons = [
        Comparison(
            gm,
            "base",
            passed=beats,
            rule=f"gain >= {s.min_gain_over_base} and the lower end of the paired {s.level:.0%} interval above 0",
            **g,
        )
    ]

    against = "base" if live is None else "live"
    if live is not None and rows.height and "system_id" in rows.columns:
        # "live" rows of another adapter (the live set changed since they were scored) judge nothing
        rows = rows.filter((pl.col("system") != "live") | (pl.col("system_id") == f"adapter:{live_sha}"))
    live_rows = scores(rows, "live", HEADLINE[stage][0]) if live is not None else {}
    if live is not None and not live_rows:
        against = "live (recorded means)"
    regressions: dict[str, dict[str, float | None]] = {}
    for m in HEADLINE[stage]:
        cand = scores(rows, "adapter", m)
        if against == "live (recorded means)":
            old = (live.get("metrics") or {}).get(m)
            if old is None:
                continue
            new = means[m]
            c = Comparison(
                m,
                against,
                sum(v is not None for v in cand.values()),
                new,
                old,
                None if new is None else new - old,
                None,
                None,
                False,
                "",
            )
        else:
            other = scores(rows, against, m)
            if all(v is None for v in other.values()):
                continue  # the system the router serves was not measured on it
            c = Comparison(m, against, passed=False, rule="", **paired_gain(cand, other, s.n_boot, s.level, s.seed))
        c.passed = c.gain is not None and c.gain >= -s.tolerance
        c.rule = f"mean drop at most {s.tolerance}"
        comparisons.append(c)
        if not c.passed:
            regressions[m] = {against: c.other, "candidate": c.candidate, "drop": None if c.gain is None else -c.gain}

    promote = beats and not regressions
    whom = "the live adapter" if live is not None else "the base student (nothing is live)"
    if promote:
        reason = (
            f"beats the base on {gm} ({comparisons[0].line()}) and no headline metric drops more than "
            f"{s.tolerance} against {whom}"
        )
    else:
        parts = []
        if not beats:
            parts.append(
                f"does not beat the base on {gm}: {comparisons[0].line()} (needs a gain of at least "
                f"{s.min_gain_over_base} with the interval's lower end above 0)"
            )
        if regressions:
            parts.append(
                f"headline regression beyond tolerance {s.tolerance} against {whom}: "
                + "; ".join(c.line() for c in comparisons[1:] if not c.passed)
            )
        reason = "; ".join(parts)
    serving = f"adapter {candidate_sha[:12]}" if promote else (f"adapter {live_sha[:12]}" if live_sha else "base")
    return Decision(
        stage, candidate_sha, live_sha, promote, reason, regressions, means, [asdict(c) for c in comparisons], serving
    )


def comparisons_table(comparisons: list[Mapping[str, Any]]) -> str:
    """A decision's comparisons as a markdown table (metric, against, n, means, gain and interval, verdict)."""
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        "| metric | against | n | other | candidate | gain | interval | ok | rule |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        iv = "-" if c["ci_low"] is None else f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
        gain = "n/a" if c["gain"] is None else f"{c['gain']:+.3f}"
        lines.append(
            f"| {c['metric']} | {c['against']} | {c['n']} | {f(c['other'])} | {f(c['candidate'])} | {gain} "
            f"| {iv} | {'yes' if c['passed'] else 'no'} | {c['rule']} |"
        )
    return "\n".join(lines)


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
            live[decision.stage] = {
                **entry,
                "adapter_sha256": decision.candidate_sha256,
                "metrics": decision.candidate_metrics,
                "promoted_at": decision.ts,
            }
            tmp = self.live_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(live, indent=2))
            os.replace(tmp, self.live_path)
        return decision

    def judged(self, stage: str) -> bool:
        """Whether the gate ever decided on an adapter of the stage."""
        return bool(self.decisions(stage))

    def decisions(self, stage: str | None = None) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        rows = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
        return [r for r in rows if stage is None or r["stage"] == stage]


@dataclass
class Promotion:
    """The gate's outcome for one stage: a decision recorded in the registry, or skipped (with the reason)."""

    stage: str
    status: str  # promoted | rejected | skipped
    reason: str
    candidate_sha256: str | None
    live: dict[str, Any]  # the stage's live entry after the decision ({} when the base is served)
    base_gguf: str | None
    decision: Decision | None = None

    def row(self) -> dict[str, Any]:
        d = self.decision
        return {
            "stage": self.stage,
            "status": self.status,
            "reason": self.reason,
            "candidate_sha256": self.candidate_sha256,
            "live_sha256": self.live.get("adapter_sha256"),
            "serving": d.serving if d else None,
            "gguf_path": self.live.get("gguf_path") if d else None,
            "base_gguf": (self.live.get("base_gguf") or self.base_gguf) if d else None,
            "metrics_json": json.dumps(d.candidate_metrics) if d else None,
            "regressions_json": json.dumps(d.regressions) if d else None,
            "comparisons_json": json.dumps(d.comparisons) if d else None,
        }


def run_gate(
    registry: Registry, stage: str, candidate: Any | None, rows: pl.DataFrame, settings: GateSettings
) -> Promotion:
    """Decide on ``candidate`` (an exported adapter: ``sha256``, ``gguf_path``, ``base_gguf``; None when the
    stage has none) from its evaluation ``rows``, record the decision and, on promotion, make it live."""
    live_before = registry.live().get(stage)
    if candidate is None or not rows.filter(pl.col("system") == "adapter").height:
        reason = "no evaluated adapter for this stage (train, export and evaluate it first)"
        return Promotion(stage, "skipped", reason, None, live_before or {}, None)
    decision = registry.record(
        decide(stage, candidate.sha256, rows, live_before, settings),
        {"gguf_path": candidate.gguf_path, "base_gguf": candidate.base_gguf},
    )
    status = "promoted" if decision.promote else "rejected"
    live = registry.live().get(stage) or {}
    return Promotion(stage, status, decision.reason, candidate.sha256, live, candidate.base_gguf, decision)


def decisions_table(decisions: list[Mapping[str, Any]], last: int = 10) -> str:
    """The latest decisions as a markdown table (when, candidate, promoted, reason)."""
    lines = ["| when | candidate | promoted | reason |", "|---|---|---|---|"]
    lines += [
        f"| {d['ts']} | {d['candidate_sha256'][:12]} | {d['promote']} | {d['reason'][:160]} |"
        for d in decisions[-last:]
    ]
    return "\n".join(lines)

"""Did the student learn? Base against adapter on the same held-out tasks, per stage and metric, with
bootstrap intervals and the paired gain; the same at several shares of the training rows (a learning
curve); rendered as the markdown of ``bench/results/student_gain.md``."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import polars as pl

from distill_assets.evaluation.gate import scores
from distill_assets.evaluation.metrics import GAIN_METRIC, STAGE_METRICS, bootstrap_ci, paired_gain

GAIN_SCHEMA = {
    "run": pl.Utf8,
    "stage": pl.Utf8,
    "metric": pl.Utf8,
    "n": pl.Int64,
    "base": pl.Float64,
    "base_low": pl.Float64,
    "base_high": pl.Float64,
    "adapter": pl.Float64,
    "adapter_low": pl.Float64,
    "adapter_high": pl.Float64,
    "gain": pl.Float64,
    "gain_low": pl.Float64,
    "gain_high": pl.Float64,
}


def gain_rows(
    run: str, stage: str, rows: pl.DataFrame, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> list[dict[str, Any]]:
    """Per metric of the stage: base and adapter means with intervals (each over its measured tasks) and
    the paired gain over the tasks both were measured on."""
    out = []
    for metric in STAGE_METRICS[stage]:
        base, adapter = scores(rows, "base", metric), scores(rows, "adapter", metric)
        if not any(v is not None for v in [*base.values(), *adapter.values()]):
            continue
        b = bootstrap_ci(list(base.values()), n_boot=n_boot, level=level, seed=seed)
        a = bootstrap_ci(list(adapter.values()), n_boot=n_boot, level=level, seed=seed)
        g = paired_gain(adapter, base, n_boot=n_boot, level=level, seed=seed)
        out.append(
            {
                "run": run,
                "stage": stage,
                "metric": metric,
                "n": g["n"],
                "base": b["mean"],
                "base_low": b["ci_low"],
                "base_high": b["ci_high"],
                "adapter": a["mean"],
                "adapter_low": a["ci_low"],
                "adapter_high": a["ci_high"],
                "gain": g["gain"],
                "gain_low": g["ci_low"],
                "gain_high": g["ci_high"],
            }
        )
    return out


def gain_table(runs: Mapping[str, Mapping[str, pl.DataFrame]], **kw) -> pl.DataFrame:
    """``runs``: run label -> stage -> evaluation rows (systems base and adapter)."""
    rows = [r for run, stages in runs.items() for stage, df in stages.items() for r in gain_rows(run, stage, df, **kw)]
    return pl.DataFrame(rows, schema=GAIN_SCHEMA) if rows else pl.DataFrame(schema=GAIN_SCHEMA)


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _iv(mean, low, high, signed: bool = False) -> str:
    if mean is None:
        return "n/a"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"{fmt.format(mean)} [{fmt.format(low)}, {fmt.format(high)}]"


def verdict(row: Mapping[str, Any]) -> str:
    if row["gain"] is None:
        return "not measured"
    if row["gain_low"] > 0:
        return "gain"
    if row["gain_high"] < 0:
        return "loss"
    return "no clear difference"


def render(
    table: pl.DataFrame,
    headline_run: str,
    curve_points: Sequence[tuple[str, str, float]] = (),
    transfer_run: str | None = None,
    header: str = "",
    skipped: Sequence[tuple[str, str, str]] = (),
) -> str:
    """The markdown: the headline run per stage and metric, the learning curve of each stage's gain
    metric (``curve_points``: run label, stage, share of the stage's training rows; ``skipped``: stage,
    point, why for the points that could not be measured) and the transfer run."""
    lines = [header.rstrip(), ""] if header else []

    def block(run: str, title: str) -> None:
        part = table.filter(pl.col("run") == run)
        lines.extend(
            [
                f"## {title}",
                "",
                "| stage | metric | tasks | base | adapter | paired gain | verdict |",
                "|---|---|---|---|---|---|---|",
            ]
        )
        for r in part.iter_rows(named=True):
            star = " *" if GAIN_METRIC[r["stage"]] == r["metric"] else ""
            lines.append(
                f"| {r['stage']} | {r['metric']}{star} | {r['n']} | "
                f"{_iv(r['base'], r['base_low'], r['base_high'])} | "
                f"{_iv(r['adapter'], r['adapter_low'], r['adapter_high'])} | "
                f"{_iv(r['gain'], r['gain_low'], r['gain_high'], signed=True)} | {verdict(r)} |"
            )
        lines.extend(
            [
                "",
                "Means with 95 % bootstrap intervals; the gain is paired by task (adapter - base). "
                "`*`: the stage's gain metric (the promotion gate's).",
                "",
            ]
        )

    block(headline_run, f"Held-out tasks: {headline_run}")
    if curve_points or skipped:
        lines.extend(
            [
                "## Learning curve (each stage's gain metric against the share of its training rows)",
                "",
                "| stage | metric | share of the training rows | adapter | paired gain | verdict | run |",
                "|---|---|---|---|---|---|---|",
            ]
        )
        for run, stage, share in sorted(curve_points, key=lambda p: (list(GAIN_METRIC).index(p[1]), p[2])):
            metric = GAIN_METRIC[stage]
            hit = table.filter((pl.col("run") == run) & (pl.col("stage") == stage) & (pl.col("metric") == metric))
            if hit.height:
                r = hit.row(0, named=True)
                lines.append(
                    f"| {stage} | {metric} | {share:.0%} | {_f(r['adapter'])} | "
                    f"{_iv(r['gain'], r['gain_low'], r['gain_high'], signed=True)} | {verdict(r)} | {run} |"
                )
            else:
                lines.append(f"| {stage} | {metric} | {share:.0%} | n/a | n/a | not measured (no rows) | {run} |")
        lines.extend(["", "0 % is the base model (the gain's other side in every row).", ""])
        if skipped:
            lines.extend(["Curve points not measured:", ""])
            lines.extend(f"- {stage}, {point}: {why}" for stage, point, why in skipped)
            lines.append("")
    if transfer_run:
        block(transfer_run, f"Transfer: {transfer_run}")
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["GAIN_SCHEMA", "gain_rows", "gain_table", "render", "verdict"]

"""The evaluation report: a markdown summary and a self-contained HTML page (plots inlined as PNG) with
per-stage bars and intervals, recall distributions, the judge-vs-execution scatter and the history of
headline metrics across adapter versions."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from typing import Any, Mapping

import polars as pl

from distill_assets.evaluation.metrics import HEADLINE, STAGE_METRICS
from distill_assets.evaluation.run import ROW_SCHEMA, SYSTEMS

HISTORY_SCHEMA = {"ts": pl.Utf8, "stage": pl.Utf8, "adapter_sha256": pl.Utf8, "metric": pl.Utf8, "mean": pl.Float64}

COLOURS = {"base": "#9aa5b1", "adapter": "#2f80ed", "teacher": "#27ae60"}


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def stage_bars(summary: pl.DataFrame, stage: str) -> str | None:
    """Grouped bars: every metric of the stage, one bar per system, bootstrap interval as error bars."""
    part = summary.filter(pl.col("stage") == stage)
    if not part.height:
        return None
    plt = _plt()
    metrics = [m for m in STAGE_METRICS[stage] if m in set(part["metric"].to_list())]
    systems = [s for s in SYSTEMS if s in set(part["system"].to_list())]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(metrics) + 2), 3.2))
    width = 0.8 / max(1, len(systems))
    for j, system in enumerate(systems):
        rows = {r["metric"]: r for r in part.filter(pl.col("system") == system).iter_rows(named=True)}
        xs, ys, lo, hi = [], [], [], []
        for i, m in enumerate(metrics):
            r = rows.get(m)
            if r is None or r["mean"] is None:
                continue
            xs.append(i + (j - (len(systems) - 1) / 2) * width)
            ys.append(r["mean"])
            lo.append(r["mean"] - r["ci_low"])
            hi.append(r["ci_high"] - r["mean"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=system, color=COLOURS.get(system))
    ax.set_xticks(range(len(metrics)), metrics, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(-1.05 if "order_tau" in metrics else 0, 1.05)
    ax.set_title(f"{stage}: mean and {int(100 * 0.95)}% bootstrap interval")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def recall_distributions(rows: pl.DataFrame) -> str | None:
    """Per-task recall of files and symbols (stage 4) and of relevant files (stage 2), per system."""
    panels = [("plan_generation", "file_recall"), ("plan_generation", "symbol_recall"), ("relevance", "file_recall")]
    panels = [(s, m) for s, m in panels if rows.filter((pl.col("stage") == s) & pl.col(m).is_not_null()).height]
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 2.8), squeeze=False)
    for ax, (stage, metric) in zip(axes[0], panels):
        part = rows.filter(pl.col("stage") == stage)
        data, labels = [], []
        for system in SYSTEMS:
            vals = part.filter(pl.col("system") == system)[metric].drop_nulls().to_list()
            if vals:
                data.append(vals)
                labels.append(system)
        ax.boxplot(data, tick_labels=labels, showmeans=True)
        ax.set_title(f"{stage}\n{metric}", fontsize=9)
        ax.set_ylim(-0.05, 1.05)
    return _png(fig)


def judge_scatter(rows: pl.DataFrame, calibration: Mapping[str, Any]) -> str | None:
    part = rows.filter(pl.col("stage") == "plan_generation")
    if not part.height or part["judge_completeness"].drop_nulls().len() == 0:
        return None
    part = part.with_columns(
        pl.mean_horizontal("judge_completeness", "judge_ordering", "judge_rationale").alias("judge")
    )
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for system in SYSTEMS:
        p = part.filter(
            (pl.col("system") == system) & pl.col("judge").is_not_null() & pl.col("exec_pass_rate").is_not_null()
        )
        if p.height:
            ax.scatter(
                p["judge"].to_list(), p["exec_pass_rate"].to_list(), label=system, alpha=0.7, color=COLOURS.get(system)
            )
    r = calibration.get("spearman")
    ax.set_title(
        f"judge vs execution (n={calibration.get('n', 0)}, spearman={'n/a' if r is None else f'{r:.2f}'})", fontsize=9
    )
    ax.set_xlabel("judge mean score (0-1)")
    ax.set_ylabel("execution pass rate")
    ax.legend(fontsize=8)
    return _png(fig)


def history_plot(history: pl.DataFrame) -> str | None:
    """Headline means of each adapter version, in the order versions were evaluated."""
    if history.height < 1:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    for (stage, metric), part in history.sort("ts").group_by(["stage", "metric"], maintain_order=True):
        ax.plot(range(1, part.height + 1), part["mean"].to_list(), marker="o", ms=3, label=f"{stage}:{metric}")
    ax.set_xlabel("adapter version (evaluation order)")
    ax.set_ylabel("mean")
    ax.set_title("headline metrics of the adapter across versions")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    return _png(fig)


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.0f}%" if pct else f"{v:.3f}"


def headline_table(summary: pl.DataFrame) -> list[list[str]]:
    """Rows: stage, metric, base, adapter, teacher (mean [low, high]), adapter's share of teacher."""
    out = []
    for stage, metrics in HEADLINE.items():
        for metric in STAGE_METRICS[stage]:
            part = {
                r["system"]: r
                for r in summary.filter((pl.col("stage") == stage) & (pl.col("metric") == metric)).iter_rows(named=True)
            }
            if not part:
                continue
            cells = []
            for s in SYSTEMS:
                r = part.get(s)
                cells.append(
                    "-"
                    if r is None
                    else (
                        f"{_fmt(r['mean'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] n={r['n']}"
                        if r["mean"] is not None
                        else f"n/a n={r['n']}"
                    )
                )
            share = (part.get("adapter") or {}).get("share_of_teacher")
            out.append([stage, metric + (" *" if metric in metrics else ""), *cells, _fmt(share, pct=True)])
    return out


def render(
    summary: pl.DataFrame,
    rows: pl.DataFrame,
    history: pl.DataFrame,
    calibration: Mapping[str, Any],
    target_share: float,
    tasks_per_stage: Mapping[str, int],
) -> tuple[str, str, dict[str, str]]:
    """(markdown, html, plots by name as base64 PNG)."""
    rows = rows if rows.columns else pl.DataFrame(schema=ROW_SCHEMA)
    history = history if history.columns else pl.DataFrame(schema=HISTORY_SCHEMA)
    plots: dict[str, str] = {}
    for stage in STAGE_METRICS:
        png = stage_bars(summary, stage)
        if png:
            plots[f"bars_{stage}"] = png
    for name, png in (
        ("recall_distributions", recall_distributions(rows)),
        ("judge_vs_execution", judge_scatter(rows, calibration)),
        ("history", history_plot(history)),
    ):
        if png:
            plots[name] = png
    table = headline_table(summary)
    head = ["stage", "metric", *SYSTEMS, "adapter/teacher"]
    exec_share = summary.filter(
        (pl.col("stage") == "plan_generation")
        & (pl.col("metric") == "exec_pass_rate")
        & (pl.col("system") == "adapter")
    )["share_of_teacher"].to_list()
    share_line = (
        f"Stage-4 execution pass rate, adapter as a share of the teacher: "
        f"{_fmt(exec_share[0] if exec_share else None, pct=True)} (target {target_share:.0%})."
    )
    cal = (
        f"Judge calibration (stage 4, judge mean vs execution pass rate): n={calibration.get('n', 0)}, "
        f"pearson={_fmt(calibration.get('pearson'))}, spearman={_fmt(calibration.get('spearman'))}."
    )
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    tasks = ", ".join(f"{s}: {n}" for s, n in tasks_per_stage.items())
    md = [
        f"# Evaluation report ({stamp})",
        "",
        f"Held-out test tasks per stage: {tasks}. "
        "Systems: `base` (the untrained student), `adapter` (the trained stage adapter), `teacher`. "
        "`*` marks headline metrics (the promotion gate).",
        "",
        share_line,
        "",
        cal,
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    md += ["| " + " | ".join(r) + " |" for r in table]
    for name, png in plots.items():
        md += ["", f"![{name}](data:image/png;base64,{png})"]
    esc = html.escape
    body = [
        f"<h1>Evaluation report</h1><p>{esc(stamp)}. Held-out test tasks per stage: {esc(tasks)}.</p>",
        f"<p>{esc(share_line)}</p><p>{esc(cal)}</p>",
        "<table><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in head)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in table)
        + "</table>",
    ]
    body += [
        f"<h2>{esc(name)}</h2><img alt='{esc(name)}' src='data:image/png;base64,{png}'>" for name, png in plots.items()
    ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>distill-assets evaluation</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}</style></head><body>"
        + "".join(body)
        + "</body></html>"
    )
    return "\n".join(md) + "\n", page, plots

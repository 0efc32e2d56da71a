"""Metadata helpers: what a user sees of an asset in the Dagster UI."""

from typing import Any, Mapping

import dagster as dg
import polars as pl


def _cell(v: Any, width: int) -> str:
    if isinstance(v, (list, tuple)):
        v = ", ".join(str(x) for x in v)
    s = "" if v is None else str(v)
    s = s.replace("\n", " ").replace("|", "\\|")
    return s if len(s) <= width else s[: width - 1] + "…"


def md_table(df: pl.DataFrame, columns: list[str] | None = None, n: int = 10, width: int = 60) -> dg.MetadataValue:
    cols = columns or df.columns
    if df.height == 0:
        return dg.MetadataValue.md("_(no rows)_")
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "".join(
        "| " + " | ".join(_cell(r.get(c), width) for c in cols) + " |\n" for r in df.head(n).iter_rows(named=True)
    )
    more = f"\n_{df.height - n} more rows_" if df.height > n else ""
    return dg.MetadataValue.md(head + body + more)


def md_counts(counts: Mapping[str, int | float], key: str = "reason", value: str = "count") -> dg.MetadataValue:
    if not counts:
        return dg.MetadataValue.md("_(none)_")
    total = sum(counts.values()) or 1
    rows = "".join(f"| {k} | {v} | {'█' * int(round(20 * v / total))} |\n" for k, v in counts.items())
    return dg.MetadataValue.md(f"| {key} | {value} | |\n|---|---|---|\n{rows}")


def percentiles(values: list[float], qs=(50, 90, 99)) -> dict[str, float]:
    if not values:
        return {f"p{q}": 0.0 for q in qs}
    s = pl.Series(values, dtype=pl.Float64)
    return {f"p{q}": float(s.quantile(q / 100, "nearest")) for q in qs}


def table_meta(df: pl.DataFrame) -> dict[str, Any]:
    return {
        "dagster/row_count": dg.MetadataValue.int(df.height),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=c, type=str(t)) for c, t in df.schema.items()]
        ),
    }


def md_line_plot(
    series: Mapping[str, list[tuple[float, float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    width: float = 6.0,
    height: float = 3.2,
) -> dg.MetadataValue:
    """A small PNG line plot embedded in markdown metadata (the Dagster UI renders data: images)."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = {k: v for k, v in series.items() if v}
    if not pts:
        return dg.MetadataValue.md("_(no points)_")
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    for name, xy in pts.items():
        ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o" if len(xy) < 30 else None, ms=3, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(pts) > 1:
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})")

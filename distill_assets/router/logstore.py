"""The production log store: every routed stage query (prompt, output, latency, adapter) and the
later outcome of the task (did the diff apply, did the tests pass). SQLite by default, Postgres by URL
(SQLAlchemy; ``postgresql+psycopg2://...``). This is what self-improvement reads."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

METADATA = sa.MetaData()

QUERIES = sa.Table(
    "routed_queries",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("repo", sa.Text, nullable=False),
    sa.Column("base_commit", sa.String(64)),
    sa.Column("task_text", sa.Text, nullable=False),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("adapter_sha256", sa.String(64)),
    sa.Column("base_gguf", sa.Text),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("schema", sa.Text),
    sa.Column("output", sa.Text),
    sa.Column("parsed_ok", sa.Boolean, nullable=False),
    sa.Column("parse_error", sa.Text),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("tokens_in", sa.Integer),
    sa.Column("tokens_out", sa.Integer),
)

OUTCOMES = sa.Table(
    "task_outcomes",
    METADATA,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("repo", sa.Text, nullable=False),
    sa.Column("task_text", sa.Text, nullable=False),
    sa.Column("plan_valid", sa.Boolean),
    sa.Column("diff_applied", sa.Boolean),
    sa.Column("tests_passed", sa.Boolean),
    sa.Column("detail", sa.Text),
)


def _as_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return value if isinstance(value, dict) else {"text": value}


def default_url(home: str | Path) -> str:
    return f"sqlite:///{Path(home) / 'production_logs.sqlite'}"


class LogStore:
    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        METADATA.create_all(self.engine)

    def record_query(self, **row: Any) -> None:
        row.setdefault("ts", dt.datetime.now(dt.timezone.utc))
        for key in ("prompt", "schema"):
            if row.get(key) is not None and not isinstance(row[key], str):
                row[key] = json.dumps(row[key])
        with self.engine.begin() as conn:
            conn.execute(QUERIES.insert().values(**row))

    def record_outcome(self, run_id: str, **row: Any) -> None:
        """Insert or update a task's outcome (tests may report later than the diff)."""
        row.setdefault("ts", dt.datetime.now(dt.timezone.utc))
        with self.engine.begin() as conn:
            done = conn.execute(sa.select(OUTCOMES.c.detail).where(OUTCOMES.c.run_id == run_id)).first()
            if done:
                if row.get("detail") and done.detail:  # a later report adds to the detail, never drops it
                    row["detail"] = json.dumps({**_as_dict(done.detail), **_as_dict(row["detail"])})
                conn.execute(
                    OUTCOMES.update()
                    .where(OUTCOMES.c.run_id == run_id)
                    .values(**{k: v for k, v in row.items() if v is not None})
                )
            else:
                conn.execute(OUTCOMES.insert().values(run_id=run_id, **row))

    def has_run(self, run_id: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(sa.select(OUTCOMES.c.run_id).where(OUTCOMES.c.run_id == run_id)).first() is not None
                or conn.execute(sa.select(QUERIES.c.id).where(QUERIES.c.run_id == run_id).limit(1)).first() is not None
            )

    def queries(self, run_id: str | None = None) -> list[dict]:
        q = sa.select(QUERIES).order_by(QUERIES.c.id)
        if run_id:
            q = q.where(QUERIES.c.run_id == run_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def outcomes(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(OUTCOMES).order_by(OUTCOMES.c.ts))]

    def close(self) -> None:
        self.engine.dispose()

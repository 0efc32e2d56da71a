"""Projected teacher spend (tokens and dollars) at full scale next to what was actually spent."""

from __future__ import annotations

import polars as pl

from distill_assets.config import DistillConfig
from distill_assets.teachers.runner import samples_for

COST_SCHEMA = {
    "stage": pl.Utf8,
    "teacher": pl.Utf8,
    "available": pl.Boolean,
    "tasks": pl.Int64,
    "n_samples": pl.Int64,
    "calls": pl.Int64,
    "input_tokens_per_call": pl.Float64,
    "output_tokens_per_call": pl.Float64,
    "output_tokens_measured": pl.Boolean,
    "projected_usd": pl.Float64,
    "target_tasks": pl.Int64,
    "target_calls": pl.Int64,
    "target_usd": pl.Float64,
    "spent_usd": pl.Float64,
    "answers": pl.Int64,
}


def cost_table(cfg: DistillConfig, prompts: dict[str, pl.DataFrame], outputs: pl.DataFrame) -> pl.DataFrame:
    """One row per (stage, assigned teacher): projections for the tasks at hand and at full scale."""
    rows = []
    for st in cfg.stages:
        p = prompts.get(st.key.value)
        n_tasks = p.height if p is not None else 0
        in_tok = (
            float(p["prompt_tokens"].mean()) if p is not None and p.height else float(cfg.cost.assumed_input_tokens)
        )
        for name in st.teachers:
            te = cfg.teacher(name)
            ok, _ = cfg.stage_teacher_status(st.key.value, name)
            mine = (
                outputs.filter((pl.col("stage") == st.key.value) & (pl.col("teacher") == name))
                if outputs.height
                else outputs
            )
            answered = mine.filter(pl.col("call_error").is_null()) if mine.height else mine
            measured = answered.height > 0
            out_tok = float(answered["tokens_out"].mean()) if measured else float(cfg.cost.assumed_output_tokens)
            if measured and answered["tokens_in"].sum() > 0:
                in_tok = float(answered["tokens_in"].mean())
            n = samples_for(st, te) if te.kind == "local_llama_cpp" else st.n_samples
            tasks = min(n_tasks, te.max_tasks) if te.max_tasks else n_tasks
            price = lambda calls: calls * (in_tok * te.price_input_per_mtok + out_tok * te.price_output_per_mtok) / 1e6
            target = cfg.cost.target_tasks.get(st.key, 0)
            rows.append(
                {
                    "stage": st.key.value,
                    "teacher": name,
                    "available": ok,
                    "tasks": tasks,
                    "n_samples": n,
                    "calls": tasks * n,
                    "input_tokens_per_call": round(in_tok, 1),
                    "output_tokens_per_call": round(out_tok, 1),
                    "output_tokens_measured": measured,
                    "projected_usd": round(price(tasks * n), 6),
                    "target_tasks": target,
                    "target_calls": target * st.n_samples,
                    "target_usd": round(price(target * st.n_samples), 2),
                    "spent_usd": round(float(mine["cost_usd"].sum()) if mine.height else 0.0, 6),
                    "answers": mine.height,
                }
            )
    return pl.DataFrame(rows, schema=COST_SCHEMA)

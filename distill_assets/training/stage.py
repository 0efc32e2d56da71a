"""One stage's adapter as the pipeline sees it: the rows a training takes (the teacher's SFT rows with the
production rows mixed in, the DPO pairs) and the adapters-table row that describes what was trained. The
training itself runs in its own process (``launch``); nothing here knows Dagster."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from distill_assets.feedback.selfimprove import mix
from distill_assets.training.launch import loss_curve

ADAPTER_SCHEMA = {
    "stage": pl.Utf8,
    "status": pl.Utf8,
    "reason": pl.Utf8,
    "adapter_dir": pl.Utf8,
    "adapter_sha256": pl.Utf8,
    "base_model": pl.Utf8,
    "base_model_dir": pl.Utf8,
    "student_model": pl.Utf8,
    "run_key": pl.Utf8,
    "config_hash": pl.Utf8,
    "data_hash": pl.Utf8,
    "phases": pl.List(pl.Utf8),
    "train_rows": pl.Int64,
    "val_rows": pl.Int64,
    "dpo_pairs": pl.Int64,
    "sft_first_loss": pl.Float64,
    "sft_last_loss": pl.Float64,
    "val_loss": pl.Float64,
    "dpo_first_margin": pl.Float64,
    "dpo_last_margin": pl.Float64,
    "tokens_per_s": pl.Float64,
    "peak_mem_gb": pl.Float64,
    "trainable_params": pl.Int64,
    "total_params": pl.Int64,
}

SFT_COLS = ["task_id", "prompt", "completion", "difficulty", "source"]
DPO_COLS = ["task_id", "prompt", "chosen", "rejected", "difficulty"]


def split_rows(df: pl.DataFrame | None, split: str, cols: list[str]) -> list[dict]:
    """The rows of one split as dicts of ``cols``, in a stable order (so the data hash is stable)."""
    if df is None or df.height == 0:
        return []
    part = df.filter(pl.col("split") == split).sort(
        [c for c in ("task_id", "candidate_key", "chosen_source") if c in df.columns]
    )
    return [{c: r.get(c) for c in cols if c in df.columns} for r in part.iter_rows(named=True)]


@dataclass
class StageRows:
    train: list[dict]
    val: list[dict]
    pairs: list[dict]
    student_rows: int = 0  # production rows mixed into the train split


def stage_rows(
    sft: pl.DataFrame,
    dpo_pairs: pl.DataFrame | None,
    self_improvement: pl.DataFrame | None,
    student_share: float,
    seed: int,
) -> StageRows:
    """Every teacher train row stays; the student's production rows join at ``student_share`` of the mix."""
    n_student = 0
    if self_improvement is not None and self_improvement.height and sft.height:
        teacher_train = sft.filter(pl.col("split") == "train")
        mixed = mix(teacher_train, self_improvement, student_share, seed=seed)
        n_student = mixed.height - teacher_train.height
        sft = pl.concat([mixed, sft.filter(pl.col("split") != "train").select(mixed.columns)])
    return StageRows(
        split_rows(sft, "train", SFT_COLS),
        split_rows(sft, "val", SFT_COLS),
        split_rows(dpo_pairs, "train", DPO_COLS),
        n_student,
    )


@dataclass
class AdapterRecord:
    """The adapters-table row of one stage, and what its metadata plots: the loss per phase, DPO margins."""

    row: dict[str, Any]
    loss_by_phase: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    margins: list[tuple[int, float]] = field(default_factory=list)

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame([self.row], schema=ADAPTER_SCHEMA)


def skipped_record(stage: str, st, rows: StageRows, reason: str) -> AdapterRecord:
    return AdapterRecord({**_known(stage, st, rows), "status": "skipped", "reason": reason})


def trained_record(
    stage: str, st, rows: StageRows, result: dict, spec: dict, base_dir: Path, run_dir: Path
) -> AdapterRecord:
    """The row of a finished training (``result.json`` of the run folder, ``spec`` its run spec)."""
    phases = result["phase_results"]
    sft, dpo = phases.get("sft", {}), phases.get("dpo", {})
    row = {
        **_known(stage, st, rows),
        "status": "trained",
        "reason": "; ".join(f"{k}: {v}" for k, v in spec["skipped_phases"].items()),
        "adapter_dir": result["adapter_dir"],
        "adapter_sha256": result["adapter_sha256"],
        "base_model_dir": str(base_dir),
        "run_key": spec["run_key"],
        "config_hash": spec["config_hash"],
        "data_hash": spec["data_hash"],
        "phases": result["phases"],
        "sft_first_loss": sft.get("first_loss"),
        "sft_last_loss": sft.get("last_loss"),
        "val_loss": sft.get("val_loss"),
        "dpo_first_margin": dpo.get("first_margin"),
        "dpo_last_margin": dpo.get("last_margin"),
        "tokens_per_s": sft.get("tokens_per_s"),
        "peak_mem_gb": sft.get("peak_mem_gb"),
        "trainable_params": sft.get("trainable_params"),
        "total_params": sft.get("total_params"),
    }
    by_phase: dict[str, list[tuple[int, float]]] = {}
    for rec in loss_curve(run_dir):
        by_phase.setdefault(rec["phase"], []).append((rec["step"], rec["loss"]))
    return AdapterRecord(row, by_phase, [(i + 1, m) for i, m in enumerate(dpo.get("margins") or [])])


def _known(stage: str, st, rows: StageRows) -> dict[str, Any]:
    return {
        "stage": stage,
        "base_model": st.base_model,
        "student_model": st.student_model,
        "train_rows": len(rows.train),
        "val_rows": len(rows.val),
        "dpo_pairs": len(rows.pairs),
        "phases": [],
    }


__all__ = [
    "ADAPTER_SCHEMA",
    "AdapterRecord",
    "StageRows",
    "skipped_record",
    "split_rows",
    "stage_rows",
    "trained_record",
]

"""What the adapters asset hands the trainer and what it records, without Dagster: the rows of a stage
(production rows mixed in at the configured share), and the adapters-table row of a finished run."""

import json

import polars as pl

from distill_assets.config import load_config
from distill_assets.datasets.build import DPO_SCHEMA, SFT_SCHEMA
from distill_assets.training.stage import ADAPTER_SCHEMA, skipped_record, stage_rows, trained_record
from distill_assets_tests.conftest import PROJECT


def _sft(n: int, split: str, source: str = "teacher:a", prefix: str = "t") -> list[dict]:
    return [
        {
            "task_id": f"{prefix}{i:02d}",
            "stage": "relevance",
            "split": split,
            "source": source,
            "difficulty": "easy",
            "prompt": f"p{i}",
            "completion": f"c{i}",
            "pass_rate": 1.0,
            "candidate_key": f"{prefix}{i:02d}:{source}",
        }
        for i in range(n)
    ]


def test_production_rows_join_at_the_configured_share_and_teacher_rows_all_stay():
    sft = pl.DataFrame(_sft(6, "train") + _sft(2, "val", prefix="v"), schema=SFT_SCHEMA)
    student = pl.DataFrame(_sft(20, "train", source="student", prefix="s"), schema=SFT_SCHEMA)
    dpo = pl.DataFrame(
        [
            {
                "task_id": "t00",
                "stage": "relevance",
                "split": s,
                "difficulty": "easy",
                "prompt": "p",
                "chosen": "a",
                "rejected": "b",
                "chosen_source": "x",
                "rejected_source": "y",
            }
            for s in ("train", "val")
        ],
        schema=DPO_SCHEMA,
    )
    rows = stage_rows(sft, dpo, student, student_share=0.25, seed=3)
    assert rows.student_rows == 2 and len(rows.train) == 8  # 6 teacher rows, 2/(6+2) = 25 % student
    assert {r["task_id"] for r in rows.train} >= {f"t{i:02d}" for i in range(6)}
    assert [r["task_id"] for r in rows.val] == ["v00", "v01"] and len(rows.pairs) == 1
    assert set(rows.train[0]) == {"task_id", "prompt", "completion", "difficulty", "source"}
    assert rows.train == stage_rows(sft, dpo, student, 0.25, 3).train  # deterministic: the data hash is stable
    alone = stage_rows(sft, None, pl.DataFrame(schema=SFT_SCHEMA), 0.25, 3)
    assert alone.student_rows == 0 and len(alone.train) == 6 and alone.pairs == []


def test_the_adapter_row_of_a_skipped_and_of_a_trained_stage(tmp_path):
    st = load_config(PROJECT / "data" / "distill.yaml").stage("relevance")
    rows = stage_rows(pl.DataFrame(_sft(3, "train"), schema=SFT_SCHEMA), None, None, 0.0, 0)
    skipped = skipped_record("relevance", st, rows, "nothing to train").frame()
    assert skipped.schema == pl.Schema(ADAPTER_SCHEMA) and skipped.row(0, named=True)["status"] == "skipped"
    (tmp_path / "progress.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"phase": "sft", "step": 1, "loss": 2.0},
                {"phase": "sft", "step": 2, "loss": 1.5},
                {"phase": "sft", "step": 2, "loss": 1.4},
            ]
        )
    )  # a resumed run logs step 2 again: the last one counts
    result = {
        "adapter_dir": str(tmp_path / "adapter"),
        "adapter_sha256": "ab",
        "phases": ["sft", "dpo"],
        "phase_results": {
            "sft": {"first_loss": 2.0, "last_loss": 1.4, "tokens_per_s": 10.0},
            "dpo": {"first_margin": 0.1, "last_margin": 0.5, "margins": [0.1, 0.5]},
        },
    }
    spec = {"run_key": "k", "config_hash": "c", "data_hash": "d", "skipped_phases": {"kd": "off"}}
    rec = trained_record("relevance", st, rows, result, spec, tmp_path / "base", tmp_path)
    row = rec.frame().row(0, named=True)
    assert row["status"] == "trained" and row["train_rows"] == 3 and row["reason"] == "kd: off"
    assert row["sft_last_loss"] == 1.4 and row["dpo_last_margin"] == 0.5 and row["phases"] == ["sft", "dpo"]
    assert rec.loss_by_phase == {"sft": [(1, 2.0), (2, 1.4)]} and rec.margins == [(1, 0.1), (2, 0.5)]

"""Blocking checks fail when they have nothing to judge, and say why: a stage with no training rows, an
evaluation with no held-out task, a promotion with no evaluated adapter. A gate that kept a candidate out
warns (a decision, not a broken run)."""

import json

import dagster as dg
import polars as pl

from distill_assets.defs.evaluation.assets import PROMOTED_SCHEMA, evaluations
from distill_assets.defs.evaluation.checks import no_headline_regression
from distill_assets.defs.resources import DistillConfigResource
from distill_assets.defs.scoring.checks import sft_has_train_rows
from distill_assets.defs.teachers.resources import TeachersResource
from distill_assets.evaluation.run import ROW_SCHEMA
from distill_assets_tests.conftest import PROJECT


def test_a_stage_without_train_rows_fails_the_sft_check():
    empty = pl.DataFrame(schema={"split": pl.Utf8, "source": pl.Utf8})
    res = sft_has_train_rows(sft_datasets=empty)
    assert not res.passed and "no rows at all" in res.description and res.severity == dg.AssetCheckSeverity.WARN
    only_val = pl.DataFrame({"split": ["val", "test"], "source": ["teacher", "reference"]})
    res = sft_has_train_rows(sft_datasets=only_val)
    assert not res.passed and "val/teacher 1" in res.description and res.metadata["train_rows"].value == 0
    assert sft_has_train_rows(sft_datasets=pl.DataFrame({"split": ["train"], "source": ["teacher"]})).passed


def test_the_promotion_check_fails_on_nothing_and_warns_on_a_rejection():
    skipped = pl.DataFrame(
        [{"stage": "relevance", "status": "skipped", "reason": "no evaluated adapter"}], schema=PROMOTED_SCHEMA
    )
    res = no_headline_regression(promoted_adapters=skipped)
    assert not res.passed and res.severity == dg.AssetCheckSeverity.ERROR and "nothing to judge" in res.description
    res = no_headline_regression(promoted_adapters=pl.DataFrame(schema=PROMOTED_SCHEMA))
    assert not res.passed and res.severity == dg.AssetCheckSeverity.ERROR
    rejected = pl.DataFrame(
        [
            {
                "stage": "relevance",
                "status": "rejected",
                "reason": "does not beat the base",
                "serving": "base",
                "regressions_json": json.dumps({}),
            }
        ],
        schema=PROMOTED_SCHEMA,
    )
    res = no_headline_regression(promoted_adapters=rejected)
    assert not res.passed and res.severity == dg.AssetCheckSeverity.WARN
    assert res.description.startswith("not promoted; the router keeps serving base: does not beat the base")


def test_an_evaluation_with_no_held_out_task_fails_its_check(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    prompts = pl.DataFrame(
        {
            "task_id": ["a", "b"],
            "split": ["test", "train"],
            "messages_json": ["[]", "[]"],
            "schema_json": [None, None],
            "prompt_hash": ["h", "h"],
        }
    )
    empty = pl.DataFrame(schema={"task_id": pl.Utf8, "plan_json": pl.Utf8, "usable": pl.Boolean, "status": pl.Utf8})
    out = list(
        evaluations(
            context=dg.build_asset_context(partition_key="relevance"),
            distill=DistillConfigResource(config_path=str(PROJECT / "data" / "distill.yaml")),
            teachers=TeachersResource(),
            stage_prompts=prompts,
            reference_plans=empty,
            change_tasks=empty,
            task_contexts=empty,
            test_selections=empty,
            gguf_adapters=pl.DataFrame(),
        )
    )
    output, check = out
    assert output.value.height == 0 and output.value.schema == pl.Schema(ROW_SCHEMA)
    assert output.metadata["status"].value == "skipped"
    assert check.passed is False and check.check_name == "evaluated_tasks"
    assert "1 test prompt(s), 1 without a usable reference plan" in check.description

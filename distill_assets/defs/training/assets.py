"""Training: one LoRA adapter per stage (SFT -> DPO -> KD), run outside the code server, pool `gpu`."""

import json
from pathlib import Path

import dagster as dg
import polars as pl

from distill_assets.config import ConfigError
from distill_assets.containers import bind_volumes, remove_containers
from distill_assets.defs.automation_conditions import NIGHTLY
from distill_assets.defs.metadata import md_line_plot, md_table, table_meta
from distill_assets.defs.partitions import stage_partitions
from distill_assets.defs.resources import DistillConfigResource
from distill_assets.training.base_model import resolve_base_model
from distill_assets.training.launch import TRAINER_VERSION, TrainingFailed, launch, load_result, prepare_run
from distill_assets.training.stage import AdapterRecord, StageRows, skipped_record, stage_rows, trained_record

GROUP = "training"


def _launch_docker(context: dg.AssetExecutionContext, cfg, run_dir: Path) -> None:
    """The same training process in a container through dagster-docker's PipesDockerClient; the cache
    folder is mounted at the same path, so the run folder's paths hold inside; every GPU is requested
    unless ``trainer.docker_gpus`` is off."""
    import docker.types
    from dagster_docker import PipesDockerClient

    volumes = bind_volumes([str(cfg.resolved_cache_dir())], cfg.trainer.docker_volumes)
    label = {"distill/training_run": f"{context.run_id}:{context.partition_key}"}
    kwargs = {
        "volumes": volumes,
        "working_dir": str(run_dir),
        "shm_size": "8g",
        "network_mode": "none",
        "labels": label,
    }
    if cfg.trainer.docker_gpus:
        kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    try:
        PipesDockerClient().run(
            context=context,
            image=cfg.trainer.docker_image,
            command=[
                cfg.trainer.docker_python,
                "-m",
                "distill_assets.training.run",
                str(run_dir / "spec.json"),
                "--pipes",
            ],
            env={"HOME": "/tmp", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"},
            container_kwargs=kwargs,
        )
    finally:  # the container's logs are already in the run
        remove_containers("distill/training_run", label["distill/training_run"])


@dg.asset(
    automation_condition=NIGHTLY,
    group_name=GROUP,
    partitions_def=stage_partitions,
    code_version=TRAINER_VERSION,
    pool="gpu",
    kinds={"pytorch", "polars"},
    tags={"distill/gpu": "true"},
    ins={
        "self_improvement_data": dg.AssetIn(metadata={"optional_table": True}),
        "dpo_pairs": dg.AssetIn(metadata={"optional_table": True}),
    },
    description="The stage's LoRA adapter: span-weighted CoT-SFT (curriculum where configured), then DPO from the "
    "SFT adapter, then optional on-policy logit distillation; trained in a subprocess (accelerate launch on "
    "several GPUs) or a container, cached by data + config hash, resumable from checkpoints.",
)
def adapters(
    context: dg.AssetExecutionContext,
    distill: DistillConfigResource,
    sft_datasets: pl.DataFrame,
    dpo_pairs: pl.DataFrame,
    self_improvement_data: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    cfg = distill.load()
    stage = context.partition_key
    st = cfg.stage(stage)
    rows = stage_rows(sft_datasets, dpo_pairs, self_improvement_data, cfg.automation.student_share, st.training.seed)
    if not rows.train:
        reason = "no SFT rows in the train split: nothing to train"
        context.log.warning(f"{stage}: {reason}")
        df = skipped_record(stage, st, rows, reason).frame()
        return dg.Output(df, metadata={**table_meta(df), "status": "skipped", "reason": reason})
    cache = cfg.resolved_cache_dir()
    try:
        base_dir = resolve_base_model(st.base_model, cache)
        kd_dir = str(resolve_base_model(st.training.kd_teacher, cache)) if st.training.kd else None
    except ConfigError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    run_dir, spec = prepare_run(
        cache / "adapters",
        stage,
        base_dir,
        st.training,
        rows.train,
        rows.val,
        rows.pairs,
        kd_dir,
    )
    result = load_result(run_dir)
    cache_hit = result is not None
    if cache_hit:
        context.log.info(f"{stage}: adapter {spec['run_key']} already trained on these rows and this config")
    else:
        context.log.info(
            f"{stage}: training {spec['phases']} on {len(rows.train)} rows, {len(rows.pairs)} pairs in {run_dir}"
        )
        result = _train(context, cfg, run_dir)
    record = trained_record(stage, st, rows, result, spec, base_dir, run_dir)
    # an explicit Output: a Pipes session (docker launcher) puts the step in typed-event mode
    return dg.Output(record.frame(), metadata=_adapter_metadata(stage, record, rows, result, spec, run_dir, cache_hit))


def _train(context: dg.AssetExecutionContext, cfg, run_dir: Path) -> dict:
    """The training process (a subprocess, or a container with the docker launcher), its progress in the
    run's log; the run's result.json."""
    stage, last = context.partition_key, {"t": 0}

    def progress(rec: dict) -> None:
        step, total = rec.get("step", 0), rec.get("max_steps") or 0
        if "loss" in rec and (step == 1 or step == total or step - last["t"] >= max(1, total // 20)):
            last["t"] = step
            context.log.info(f"{stage} {rec['phase']} step {step}/{total} loss {rec['loss']:.4f}")

    try:
        if cfg.trainer.launcher == "docker":
            _launch_docker(context, cfg, run_dir)
            result = load_result(run_dir)
            if result is None:
                raise TrainingFailed(f"the training container finished without {run_dir / 'result.json'}")
            return result
        return launch(
            run_dir, num_processes=cfg.trainer.num_processes, timeout_s=cfg.trainer.timeout_s, on_progress=progress
        )
    except TrainingFailed as exc:
        # checkpoints are kept: a retry of this step resumes where the run stopped
        raise dg.Failure(description=f"{stage}: {exc}", metadata={"run_dir": str(run_dir)}) from None


def _adapter_metadata(
    stage: str, record: AdapterRecord, rows: StageRows, result: dict, spec: dict, run_dir: Path, cache_hit: bool
) -> dict:
    sft = result["phase_results"].get("sft", {})
    df = record.frame()
    meta = {
        **table_meta(df),
        "cache_hit": cache_hit,
        "adapter_path": dg.MetadataValue.path(result["adapter_dir"]),
        "adapter_sha256": result["adapter_sha256"],
        "config_hash": spec["config_hash"],
        "data_hash": spec["data_hash"],
        "run_dir": dg.MetadataValue.path(str(run_dir)),
        "phases": ", ".join(result["phases"]),
        "train_rows": len(rows.train),
        "val_rows": len(rows.val),
        "dpo_pairs": len(rows.pairs),
        "student_rows_mixed": rows.student_rows,
        "dropped_rows": json.dumps(sft.get("dropped") or {}),
        "trainable_params": sft.get("trainable_params") or 0,
        "total_params": sft.get("total_params") or 0,
        "tokens_per_s": sft.get("tokens_per_s") or 0.0,
        "peak_mem_gb": sft.get("peak_mem_gb") or 0.0,
        "qlora": bool(sft.get("qlora")),
        "curriculum": bool(sft.get("curriculum")),
        "reasoning_tokens": sft.get("reasoning_tokens") or 0,
        "plan_tokens": sft.get("plan_tokens") or 0,
        "loss_curve": md_line_plot(
            record.loss_by_phase, title=f"{stage}: training loss", xlabel="optimizer step", ylabel="loss"
        ),
        "summary": md_table(
            df,
            [
                "phases",
                "sft_first_loss",
                "sft_last_loss",
                "val_loss",
                "dpo_last_margin",
                "tokens_per_s",
                "trainable_params",
            ],
        ),
    }
    for key in ("first_loss", "last_loss", "val_loss"):
        if sft.get(key) is not None:
            meta[f"sft_{key}" if key != "val_loss" else "val_loss"] = float(sft[key])
    if record.margins:
        meta["dpo_margin_curve"] = md_line_plot(
            {"reward margin": record.margins},
            title=f"{stage}: DPO reward margin",
            xlabel="optimizer step",
            ylabel="chosen - rejected",
        )
        meta["dpo_last_margin"] = float(record.margins[-1][1])
    if spec["skipped_phases"]:
        meta["skipped_phases"] = json.dumps(spec["skipped_phases"])
    return meta

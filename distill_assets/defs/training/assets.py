"""Training: one LoRA adapter per stage (SFT -> DPO -> KD), run outside the code server, pool `gpu`."""

import json
from pathlib import Path

import dagster as dg
import polars as pl

from distill_assets.config import ConfigError
from distill_assets.feedback.selfimprove import mix
from distill_assets.defs.automation_conditions import NIGHTLY
from distill_assets.defs.metadata import md_line_plot, md_table, table_meta
from distill_assets.defs.partitions import stage_partitions
from distill_assets.defs.resources import DistillConfigResource
from distill_assets.training.base_model import resolve_base_model
from distill_assets.training.launch import (TRAINER_VERSION, TrainingFailed, launch, load_result, loss_curve,
                                            prepare_run)

GROUP = "training"

ADAPTER_SCHEMA = {
    "stage": pl.Utf8, "status": pl.Utf8, "reason": pl.Utf8, "adapter_dir": pl.Utf8, "adapter_sha256": pl.Utf8,
    "base_model": pl.Utf8, "base_model_dir": pl.Utf8, "student_model": pl.Utf8, "run_key": pl.Utf8,
    "config_hash": pl.Utf8, "data_hash": pl.Utf8, "phases": pl.List(pl.Utf8), "train_rows": pl.Int64,
    "val_rows": pl.Int64, "dpo_pairs": pl.Int64, "sft_first_loss": pl.Float64, "sft_last_loss": pl.Float64,
    "val_loss": pl.Float64, "dpo_first_margin": pl.Float64, "dpo_last_margin": pl.Float64,
    "tokens_per_s": pl.Float64, "peak_mem_gb": pl.Float64, "trainable_params": pl.Int64, "total_params": pl.Int64,
}

_SFT_COLS = ["task_id", "prompt", "completion", "difficulty", "source"]
_DPO_COLS = ["task_id", "prompt", "chosen", "rejected", "difficulty"]


def _rows(df: pl.DataFrame, split: str, cols: list[str]) -> list[dict]:
    if df is None or df.height == 0:
        return []
    part = df.filter(pl.col("split") == split).sort([c for c in ("task_id", "candidate_key", "chosen_source")
                                                       if c in df.columns])
    return [{c: r.get(c) for c in cols if c in df.columns} for r in part.iter_rows(named=True)]


def _launch_docker(context: dg.AssetExecutionContext, cfg, run_dir: Path) -> None:
    """The same training process in a container through dagster-docker's PipesDockerClient; the cache
    folder is mounted at the same path, so the run folder's paths hold inside; every GPU is requested
    unless ``trainer.docker_gpus`` is off."""
    import docker
    import docker.types
    from dagster_docker import PipesDockerClient

    cache = str(cfg.resolved_cache_dir())
    volumes = {cache: {"bind": cache, "mode": "rw"}}
    for spec in cfg.trainer.docker_volumes:
        host, bind, *mode = spec.split(":")
        volumes[host] = {"bind": bind, "mode": mode[0] if mode else "ro"}
    label = {"distill/training_run": f"{context.run_id}:{context.partition_key}"}
    kwargs = {"volumes": volumes, "working_dir": str(run_dir), "shm_size": "8g", "network_mode": "none",
              "labels": label}
    if cfg.trainer.docker_gpus:
        kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    try:
        PipesDockerClient().run(
            context=context, image=cfg.trainer.docker_image,
            command=[cfg.trainer.docker_python, "-m", "distill_assets.training.run", str(run_dir / "spec.json"), "--pipes"],
            env={"HOME": "/tmp", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"},
            container_kwargs=kwargs)
    finally:  # PipesDockerClient stops its container but never removes it; its logs are already in the run
        client = docker.from_env()
        for c in client.containers.list(all=True, filters={"label": f"distill/training_run={label['distill/training_run']}"}):
            c.remove(force=True)


@dg.asset(automation_condition=NIGHTLY, group_name=GROUP, partitions_def=stage_partitions, code_version=TRAINER_VERSION, pool="gpu",
          kinds={"pytorch", "polars"}, tags={"distill/gpu": "true"},
          ins={"self_improvement_data": dg.AssetIn(metadata={"optional_table": True}),
               "dpo_pairs": dg.AssetIn(metadata={"optional_table": True})},
          description="The stage's LoRA adapter: span-weighted CoT-SFT (curriculum where configured), then DPO from the "
          "SFT adapter, then optional on-policy logit distillation; trained in a subprocess (accelerate launch on "
          "several GPUs) or a container, cached by data + config hash, resumable from checkpoints.")
def adapters(context: dg.AssetExecutionContext, distill: DistillConfigResource, sft_datasets: pl.DataFrame,
             dpo_pairs: pl.DataFrame, self_improvement_data: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    cfg = distill.load()
    stage = context.partition_key
    st = cfg.stage(stage)
    hp = st.training.model_dump(mode="json")
    sft = sft_datasets
    n_student = 0
    if self_improvement_data.height and sft_datasets.height:
        # every teacher row stays; student rows from production join at automation.student_share
        teacher_train = sft_datasets.filter(pl.col("split") == "train")
        mixed = mix(teacher_train, self_improvement_data, cfg.automation.student_share, seed=st.training.seed)
        n_student = mixed.height - teacher_train.height
        sft = pl.concat([mixed, sft_datasets.filter(pl.col("split") != "train").select(mixed.columns)])
    train, val = _rows(sft, "train", _SFT_COLS), _rows(sft, "val", _SFT_COLS)
    pairs = _rows(dpo_pairs, "train", _DPO_COLS)
    row = {"stage": stage, "base_model": st.base_model, "student_model": st.student_model, "train_rows": len(train),
           "val_rows": len(val), "dpo_pairs": len(pairs), "phases": []}
    if not train:
        reason = "no SFT rows in the train split: nothing to train"
        context.log.warning(f"{stage}: {reason}")
        df = pl.DataFrame([{**row, "status": "skipped", "reason": reason}], schema=ADAPTER_SCHEMA)
        return dg.Output(df, metadata={**table_meta(df), "status": "skipped", "reason": reason})
    cache = cfg.resolved_cache_dir()
    try:
        base_dir = resolve_base_model(st.base_model, cache)
        kd_dir = str(resolve_base_model(st.training.kd_teacher, cache)) if st.training.kd else None
    except ConfigError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    run_dir, spec = prepare_run(cache / "adapters", stage, base_dir, hp, train, val, pairs, kd_dir)
    result = load_result(run_dir)
    cache_hit = result is not None
    if cache_hit:
        context.log.info(f"{stage}: adapter {spec['run_key']} already trained on these rows and this config")
    else:
        context.log.info(f"{stage}: training {spec['phases']} on {len(train)} rows, {len(pairs)} pairs in {run_dir}")
        last = {"t": 0}

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
            else:
                result = launch(run_dir, num_processes=cfg.trainer.num_processes, timeout_s=cfg.trainer.timeout_s,
                                on_progress=progress)
        except TrainingFailed as exc:
            # checkpoints are kept: a retry of this step resumes where the run stopped
            raise dg.Failure(description=f"{stage}: {exc}", metadata={"run_dir": str(run_dir)}) from None
    phases = result["phase_results"]
    sft, dpo = phases.get("sft", {}), phases.get("dpo", {})
    row.update({
        "status": "trained", "reason": "; ".join(f"{k}: {v}" for k, v in spec["skipped_phases"].items()),
        "adapter_dir": result["adapter_dir"], "adapter_sha256": result["adapter_sha256"],
        "base_model_dir": str(base_dir), "run_key": spec["run_key"], "config_hash": spec["config_hash"],
        "data_hash": spec["data_hash"], "phases": result["phases"], "sft_first_loss": sft.get("first_loss"),
        "sft_last_loss": sft.get("last_loss"), "val_loss": sft.get("val_loss"),
        "dpo_first_margin": dpo.get("first_margin"), "dpo_last_margin": dpo.get("last_margin"),
        "tokens_per_s": sft.get("tokens_per_s"), "peak_mem_gb": sft.get("peak_mem_gb"),
        "trainable_params": sft.get("trainable_params"), "total_params": sft.get("total_params"),
    })
    df = pl.DataFrame([row], schema=ADAPTER_SCHEMA)
    curve = loss_curve(run_dir)
    by_phase: dict[str, list] = {}
    for rec in curve:
        by_phase.setdefault(rec["phase"], []).append((rec["step"], rec["loss"]))
    margins = [(i + 1, m) for i, m in enumerate(dpo.get("margins") or [])]
    meta = {
        **table_meta(df), "cache_hit": cache_hit, "adapter_path": dg.MetadataValue.path(result["adapter_dir"]),
        "adapter_sha256": result["adapter_sha256"], "config_hash": spec["config_hash"], "data_hash": spec["data_hash"],
        "run_dir": dg.MetadataValue.path(str(run_dir)), "phases": ", ".join(result["phases"]),
        "train_rows": len(train), "val_rows": len(val), "dpo_pairs": len(pairs), "student_rows_mixed": n_student,
        "dropped_rows": json.dumps(sft.get("dropped") or {}),
        "trainable_params": sft.get("trainable_params") or 0, "total_params": sft.get("total_params") or 0,
        "tokens_per_s": sft.get("tokens_per_s") or 0.0, "peak_mem_gb": sft.get("peak_mem_gb") or 0.0,
        "qlora": bool(sft.get("qlora")), "curriculum": bool(sft.get("curriculum")),
        "reasoning_tokens": sft.get("reasoning_tokens") or 0, "plan_tokens": sft.get("plan_tokens") or 0,
        "loss_curve": md_line_plot(by_phase, title=f"{stage}: training loss", xlabel="optimizer step", ylabel="loss"),
        "summary": md_table(df, ["phases", "sft_first_loss", "sft_last_loss", "val_loss", "dpo_last_margin",
                                 "tokens_per_s", "trainable_params"]),
    }
    for key in ("first_loss", "last_loss", "val_loss"):
        if sft.get(key) is not None:
            meta[f"sft_{key}" if key != "val_loss" else "val_loss"] = float(sft[key])
    if margins:
        meta["dpo_margin_curve"] = md_line_plot({"reward margin": margins}, title=f"{stage}: DPO reward margin",
                                                xlabel="optimizer step", ylabel="chosen - rejected")
        meta["dpo_last_margin"] = float(margins[-1][1])
    if spec["skipped_phases"]:
        meta["skipped_phases"] = json.dumps(spec["skipped_phases"])
    # an explicit Output: a Pipes session (docker launcher) puts the step in typed-event mode
    return dg.Output(df, metadata=meta)

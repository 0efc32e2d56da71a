"""Export: each stage's adapter as a GGUF LoRA adapter for llama.cpp, and an Ollama Modelfile."""

from pathlib import Path

import dagster as dg
import polars as pl

from distill_assets.config import ConfigError, resolve_model_file
from distill_assets.defs.automation_conditions import NIGHTLY
from distill_assets.defs.metadata import table_meta
from distill_assets.defs.partitions import stage_partitions
from distill_assets.defs.resources import DistillConfigResource
from distill_assets.export.gguf_lora import ExportError, export_gguf_lora, file_sha256
from distill_assets.export.merge import merged_model
from distill_assets.export.ollama import create_command, modelfile
from distill_assets.prompts.builders import SYSTEM

GROUP = "export"

GGUF_SCHEMA = {
    "stage": pl.Utf8,
    "status": pl.Utf8,
    "reason": pl.Utf8,
    "gguf_path": pl.Utf8,
    "sha256": pl.Utf8,
    "bytes": pl.Int64,
    "tensors": pl.Int64,
    "rank": pl.Int64,
    "alpha": pl.Float64,
    "arch": pl.Utf8,
    "base_gguf": pl.Utf8,
    "adapter_sha256": pl.Utf8,
}
MERGED_SCHEMA = {
    "stage": pl.Utf8,
    "status": pl.Utf8,
    "reason": pl.Utf8,
    "gguf_path": pl.Utf8,
    "quant": pl.Utf8,
    "bytes": pl.Int64,
    "sha256": pl.Utf8,
    "merged_tensors": pl.Int64,
    "f16_bytes": pl.Int64,
    "adapter_gguf_sha256": pl.Utf8,
}
MODELFILE_SCHEMA = {
    "stage": pl.Utf8,
    "status": pl.Utf8,
    "reason": pl.Utf8,
    "modelfile_path": pl.Utf8,
    "modelfile": pl.Utf8,
    "create_command": pl.Utf8,
}


def _skip(schema: dict, stage: str, reason: str, context) -> dg.Output:
    context.log.warning(f"{stage}: {reason}")
    df = pl.DataFrame([{"stage": stage, "status": "skipped", "reason": reason}], schema=schema)
    return dg.Output(df, metadata={**table_meta(df), "status": "skipped", "reason": reason})


@dg.asset(
    automation_condition=NIGHTLY,
    group_name=GROUP,
    partitions_def=stage_partitions,
    code_version="1",
    kinds={"gguf", "polars"},
    description="The stage's PEFT adapter as a GGUF LoRA adapter that llama.cpp loads on the stage's base GGUF "
    "(tensor names from the gguf package's maps; Llama q/k rows permuted as llama.cpp stores them).",
)
def gguf_adapters(
    context: dg.AssetExecutionContext, distill: DistillConfigResource, adapters: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    cfg = distill.load()
    stage = context.partition_key
    row_in = adapters.row(0, named=True) if adapters.height else {}
    if row_in.get("status") != "trained":
        why = row_in.get("reason") or "adapters is empty"
        return _skip(GGUF_SCHEMA, stage, f"no trained adapter ({why})", context)
    spec = cfg.stage(stage).inference_gguf()
    if not spec:
        return _skip(
            GGUF_SCHEMA,
            stage,
            f"set stages[{cfg.stage(stage).number - 1}].base_gguf: the base model as GGUF for llama.cpp",
            context,
        )
    try:
        base = resolve_model_file(spec)
        out = cfg.resolved_cache_dir() / "gguf_adapters" / stage / f"{row_in['adapter_sha256'][:16]}.gguf"
        info = export_gguf_lora(Path(row_in["adapter_dir"]), base, out, name=f"distill-{stage}")
    except (ConfigError, ExportError) as exc:
        raise dg.Failure(description=f"{stage}: {exc}", allow_retries=False) from None
    keys = ("sha256", "bytes", "tensors", "rank", "alpha", "arch", "base_gguf")
    row = {"stage": stage, "status": "exported", "reason": "", "gguf_path": info["path"], **{k: info[k] for k in keys}}
    df = pl.DataFrame([{**row, "adapter_sha256": row_in["adapter_sha256"]}], schema=GGUF_SCHEMA)
    return dg.Output(df, metadata={**table_meta(df), **_gguf_metadata(info)})


def _gguf_metadata(info: dict) -> dict:
    return {
        "gguf_path": dg.MetadataValue.path(info["path"]),
        "sha256": info["sha256"],
        "megabytes": round(info["bytes"] / 1e6, 2),
        "tensors": info["tensors"],
        "rank": info["rank"],
        "alpha": info["alpha"],
        "arch": info["arch"],
        "base_gguf": dg.MetadataValue.path(info["base_gguf"]),
        "llama_cpp": dg.MetadataValue.md(f"```\nllama-cli -m {info['base_gguf']} --lora {info['path']}\n```"),
    }


@dg.asset(
    automation_condition=NIGHTLY,
    group_name=GROUP,
    partitions_def=stage_partitions,
    code_version="1",
    kinds={"ollama"},
    description="An Ollama Modelfile per stage (FROM base GGUF, ADAPTER, ChatML template, stop tokens, "
    "the stage's system prompt, greedy decoding) and the `ollama create` command.",
)
def ollama_modelfiles(
    context: dg.AssetExecutionContext, distill: DistillConfigResource, gguf_adapters: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    cfg = distill.load()
    stage = context.partition_key
    row = gguf_adapters.row(0, named=True) if gguf_adapters.height else {}
    if row.get("status") != "exported":
        return _skip(MODELFILE_SCHEMA, stage, f"no GGUF adapter ({row.get('reason') or 'empty'})", context)
    try:
        text = modelfile(stage, Path(row["base_gguf"]), Path(row["gguf_path"]), SYSTEM[stage], num_ctx=cfg.router.n_ctx)
    except ExportError as exc:
        raise dg.Failure(description=f"{stage}: {exc}", allow_retries=False) from None
    path = cfg.resolved_cache_dir() / "ollama" / stage / "Modelfile"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    cmd = create_command(stage, path)
    df = pl.DataFrame(
        [
            {
                "stage": stage,
                "status": "written",
                "reason": "",
                "modelfile_path": str(path),
                "modelfile": text,
                "create_command": cmd,
            }
        ],
        schema=MODELFILE_SCHEMA,
    )
    return dg.Output(
        df,
        metadata={
            **table_meta(df),
            "modelfile_path": dg.MetadataValue.path(str(path)),
            "modelfile": dg.MetadataValue.md(f"```\n{text}```"),
            "create_command": dg.MetadataValue.md(f"```\n{cmd}\n```"),
        },
    )


@dg.asset(
    automation_condition=NIGHTLY,
    group_name=GROUP,
    partitions_def=stage_partitions,
    code_version="1",
    kinds={"gguf"},
    description="Optional (export.merged): the stage's adapter merged into its base GGUF and quantised by "
    "llama.cpp (export.merged_quant, Q4_K_M by default): one self-contained model file per stage.",
)
def merged_models(
    context: dg.AssetExecutionContext, distill: DistillConfigResource, gguf_adapters: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    cfg = distill.load()
    stage = context.partition_key
    adapter = gguf_adapters.row(0, named=True) if gguf_adapters.height else {}
    if not cfg.export.merged:
        why = "export.merged is off (the GGUF adapter on its base is the default)"
        return _skip(MERGED_SCHEMA, stage, why, context)
    if adapter.get("status") != "exported":
        return _skip(MERGED_SCHEMA, stage, f"no GGUF adapter ({adapter.get('reason') or 'empty'})", context)
    quant = cfg.export.merged_quant
    try:
        out, merged_tensors, f16_bytes = merged_model(
            Path(adapter["base_gguf"]),
            Path(adapter["gguf_path"]),
            adapter["sha256"],
            cfg.resolved_cache_dir() / "merged" / stage,
            quant,
            keep_f16=cfg.export.keep_f16,
        )
    except ExportError as exc:
        raise dg.Failure(description=f"{stage}: {exc}", allow_retries=False) from None
    size = out.stat().st_size
    row = {"stage": stage, "status": "merged", "reason": "", "gguf_path": str(out), "quant": quant, "bytes": size}
    row |= {"sha256": file_sha256(out), "merged_tensors": merged_tensors, "f16_bytes": f16_bytes}
    df = pl.DataFrame([{**row, "adapter_gguf_sha256": adapter["sha256"]}], schema=MERGED_SCHEMA)
    return dg.Output(df, metadata={**table_meta(df), **_merged_metadata(out, quant, size, merged_tensors, f16_bytes)})


def _merged_metadata(out: Path, quant: str, size: int, merged_tensors: int | None, f16_bytes: int | None) -> dict:
    return {
        "gguf_path": dg.MetadataValue.path(str(out)),
        "quant": quant,
        "megabytes": round(size / 1e6, 1),
        "cache_hit": merged_tensors is None,
        **(
            {
                "merged_tensors": merged_tensors,
                "f16_megabytes": round(f16_bytes / 1e6, 1),
                "compression": round(f16_bytes / size, 2),
            }
            if merged_tensors
            else {}
        ),
        "llama_cpp": dg.MetadataValue.md(f"```\nllama-cli -m {out}\n```"),
    }

"""The training process: ``python -m distill_assets.training.run RUN_DIR/spec.json`` (or under
``accelerate launch``). Everything it needs is in the run folder:

    spec.json              stage, base model directory, hyper-parameters, phases
    data/sft_train.jsonl   TRL conversational prompt/completion rows (+ difficulty)
    data/sft_val.jsonl     held-out rows for the validation loss (may be empty)
    data/dpo_train.jsonl   preference pairs (prompt, chosen, rejected)

Phases run in order, each into its own folder with checkpoints every ``save_steps`` optimizer steps:
``sft`` (span-weighted CoT-SFT, optional curriculum) -> ``dpo`` (from the SFT adapter, the reference is
a frozen copy of it) -> ``kd`` (on-policy logit distillation from a same-tokenizer teacher). A phase that
finished is not run again; a phase that was killed resumes from its last checkpoint. The final adapter is
``adapter/``; ``result.json`` is written last and marks the run complete.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from distill_assets.training.config import TrainingConfig

PHASES = ("sft", "dpo", "kd")


def read_hp(spec: dict) -> TrainingConfig:
    """The run's hyper-parameters, validated again on this side of the process boundary."""
    from pydantic import ValidationError

    try:
        return TrainingConfig.model_validate(spec["hp"])
    except ValidationError as exc:
        raise SystemExit(f"spec.json: hp is not a valid training config: {exc}") from None


def _rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def _common_args(hp: TrainingConfig, out: Path, *, lr: float, epochs: float, n_rows: int) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    args = dict(
        output_dir=str(out),
        learning_rate=lr,
        num_train_epochs=epochs,
        per_device_train_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.grad_accum,
        lr_scheduler_type="cosine",
        warmup_steps=float(hp.warmup_ratio),
        weight_decay=0.0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=hp.save_steps,
        save_total_limit=hp.keep_checkpoints,
        seed=hp.seed,
        data_seed=hp.seed,
        report_to=[],
        bf16=cuda,
        fp16=False,
        gradient_checkpointing=False,  # applied per layer by apply_checkpointing
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not cuda,
        ddp_find_unused_parameters=False if cuda else None,
    )
    if hp.max_steps:
        args["max_steps"] = hp.max_steps
    return args


def _adapter_sha256(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.glob("adapter_*")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _finish_phase(trainer, out: Path, started: float, extra: dict) -> dict:
    final = out / "final"
    trainer.save_model(str(final))  # written by the main process
    trainer.accelerator.wait_for_everyone()  # every rank reads it in the next phase
    hist = trainer.state.log_history
    losses = [r["loss"] for r in hist if "loss" in r]
    train = next((r for r in reversed(hist) if "train_runtime" in r), {})
    tokens = int(getattr(trainer, "_total_train_tokens", 0) or 0)
    info = {
        "steps": trainer.state.global_step,
        "losses": losses,
        "log_history": hist,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_runtime_s": train.get("train_runtime"),
        "wall_s": round(time.time() - started, 2),
        "tokens": tokens,
        **extra,
    }
    rt = train.get("train_runtime") or 0
    info["tokens_per_s"] = round(tokens / rt, 1) if tokens and rt else None
    if _rank0():
        (out / "phase.json").write_text(json.dumps(info, indent=1, default=str))
    return info


def run_sft(spec: dict, hp: TrainingConfig, run_dir: Path, tokenizer) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import SFTConfig

    from distill_assets.training.data import read_jsonl, tokenise_sft
    from distill_assets.training.trainer import (
        ProgressCallback,
        WeightedSFTTrainer,
        apply_checkpointing,
        apply_liger,
        checkpoint_setting,
        compile_layers,
        compile_wanted,
        FoldRefresh,
        disable_lora_input_cast,
        fold_lora,
        load_base,
        trainable_counts,
        want,
    )
    from distill_assets.training.packing import pack_rows, use_varlen_attention

    out = run_dir / "sft"
    rows = read_jsonl(run_dir / "data" / "sft_train.jsonl")[: hp.max_train_rows]
    tok = tokenise_sft(
        rows,
        tokenizer,
        reasoning_weight=hp.reasoning_weight,
        plan_weight=hp.plan_weight,
        max_length=hp.max_length,
    )
    if not len(tok):
        raise SystemExit(f"sft: no trainable rows ({dict(tok.dropped) or 'the train split is empty'})")
    val = tokenise_sft(
        read_jsonl(run_dir / "data" / "sft_val.jsonl"),
        tokenizer,
        reasoning_weight=hp.reasoning_weight,
        plan_weight=hp.plan_weight,
        max_length=hp.max_length,
    )
    started = time.time()
    torch.manual_seed(hp.seed)
    model, load_info = load_base(spec["base_model"], hp)
    packing = want(hp.packing, torch.cuda.is_available())
    grad_accum, pack_info = hp.grad_accum, {}
    if packing:  # padding-free: rows packed into batches, each attending only to itself
        pack_tokens = hp.pack_tokens or hp.max_length
        train_ds, val_ds = pack_rows(tok, pack_tokens), pack_rows(val, pack_tokens) if len(val) else None
        rows_per_pack = len(tok) / max(len(train_ds), 1)
        grad_accum = max(1, round(hp.grad_accum * hp.batch_size / rows_per_pack))
        pack_info = {
            "packed_batches": len(train_ds),
            "rows_per_packed_batch": round(rows_per_pack, 2),
            "pack_tokens": pack_tokens,
            "attention": use_varlen_attention(model),
        }
    else:
        train_ds = Dataset.from_dict(tok.as_dict())
        val_ds = Dataset.from_dict(val.as_dict()) if len(val) else None
    qlora = bool(load_info["qlora"])
    liger = apply_liger(model, hp, qlora)
    ckpt = apply_checkpointing(model, checkpoint_setting(hp.checkpoint_layers, compile_wanted(hp, qlora)))
    lcfg = LoraConfig(
        r=hp.rank,
        lora_alpha=hp.alpha,
        lora_dropout=hp.dropout,
        target_modules=hp.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lcfg)
    nocast = disable_lora_input_cast(model) if torch.cuda.is_available() else 0
    folded = fold_lora(model, hp, qlora)
    compiled = compile_layers(model, hp, qlora)
    trainable, total = trainable_counts(model)
    common = _common_args(hp, out, lr=hp.lr, epochs=hp.epochs, n_rows=len(tok))
    if packing:  # one packed batch per device step (TRL's padding-free collator flattens it)
        common.update(
            per_device_train_batch_size=1, per_device_eval_batch_size=1, gradient_accumulation_steps=grad_accum
        )
    args = SFTConfig(
        **common,
        max_length=hp.max_length,
        dataset_kwargs={"skip_prepare_dataset": True},
        eval_strategy="no",
        shuffle_dataset=False,
        packing=packing,  # the rows come packed already (pack_rows); this selects the padding-free collator
        padding_free=packing,
    )
    trainer = WeightedSFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        curriculum=hp.curriculum,
        callbacks=[ProgressCallback("sft", run_dir / "progress.jsonl")] + ([FoldRefresh(folded)] if folded else []),
    )
    resume = _last_checkpoint(out)
    trainer.train(resume_from_checkpoint=resume)
    graphs = _compiled_graphs() if compiled else None  # before evaluation: training's recompiles only
    val_loss = trainer.evaluate()["eval_loss"] if len(val) else None
    peak = round(torch.cuda.max_memory_allocated() / 1e9, 3) if torch.cuda.is_available() else None
    return _finish_phase(
        trainer,
        out,
        started,
        {
            "rows": len(tok),
            "dropped": dict(tok.dropped),
            "val_rows": len(val),
            "val_loss": val_loss,
            "reasoning_tokens": tok.reasoning_tokens,
            "plan_tokens": tok.plan_tokens,
            "resumed_from": resume,
            "trainable_params": trainable,
            "total_params": total,
            "checkpointed_layers": ckpt,
            "liger": liger,
            "lora_input_cast_disabled": nocast,
            "folded_lora_modules": len(folded.modules) if folded else 0,
            "compiled_layers": compiled,
            "activation_memory_budget": hp.activation_memory_budget if compiled else None,
            "compiled_graphs": graphs,
            "peak_mem_gb": peak,
            "curriculum": hp.curriculum,
            "packing": packing,
            "grad_accum": grad_accum,
            **pack_info,
            **load_info,
        },
    )


def _compiled_graphs() -> int:
    """Distinct graphs torch.compile made (one per layer code and shape class: a new row length must not
    add one per length)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _peft_from(spec: dict, adapter: Path, hp: TrainingConfig, checkpointing: int | str):
    from peft import PeftModel

    from distill_assets.training.trainer import apply_checkpointing, checkpoint_setting, load_base

    model, load_info = load_base(spec["base_model"], hp)
    load_info["checkpointed_layers"] = apply_checkpointing(model, checkpoint_setting(checkpointing, False))
    return PeftModel.from_pretrained(model, str(adapter), is_trainable=True), load_info


def run_dpo(spec: dict, hp: TrainingConfig, run_dir: Path, tokenizer, previous: Path) -> dict:
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from distill_assets.training.data import preference_rows, read_jsonl
    from distill_assets.training.trainer import ProgressCallback, trainable_counts

    out = run_dir / "dpo"
    pairs = preference_rows(read_jsonl(run_dir / "data" / "dpo_train.jsonl"))[: hp.max_train_rows]
    started = time.time()
    if torch.cuda.is_available():  # DPO's own peak, not SFT's before it in this process
        torch.cuda.reset_peak_memory_stats()
    model, load_info = _peft_from(spec, previous, hp, hp.dpo_checkpoint_layers)
    args = DPOConfig(
        **_common_args(hp, out, lr=hp.dpo_lr, epochs=hp.dpo_epochs, n_rows=len(pairs)),
        beta=hp.dpo_beta,
        max_length=hp.max_length,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        callbacks=[ProgressCallback("dpo", run_dir / "progress.jsonl")],
    )
    resume = _last_checkpoint(out)
    trainer.train(resume_from_checkpoint=resume)
    hist = trainer.state.log_history
    margins = [r["rewards/margins"] for r in hist if "rewards/margins" in r]
    trainable, total = trainable_counts(model)
    # the "ref" adapter TRL added as the frozen reference is not part of the result
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
    peak = round(torch.cuda.max_memory_allocated() / 1e9, 3) if torch.cuda.is_available() else None
    return _finish_phase(
        trainer,
        out,
        started,
        {
            "pairs": len(pairs),
            "margins": margins,
            "first_margin": margins[0] if margins else None,
            "last_margin": margins[-1] if margins else None,
            "resumed_from": resume,
            "trainable_params": trainable,
            "total_params": total,
            "peak_mem_gb": peak,
            **load_info,
        },
    )


def run_kd(spec: dict, hp: TrainingConfig, run_dir: Path, tokenizer, previous: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DistillationConfig, DistillationTrainer

    from distill_assets.training.data import prompt_rows, read_jsonl
    from distill_assets.training.trainer import ProgressCallback

    out = run_dir / "kd"
    rows = prompt_rows(read_jsonl(run_dir / "data" / "sft_train.jsonl"))[: hp.max_train_rows]
    started = time.time()
    model, load_info = _peft_from(spec, previous, hp, hp.checkpoint_layers)
    cuda = torch.cuda.is_available()
    teacher = AutoModelForCausalLM.from_pretrained(
        spec["kd_teacher_path"], dtype=torch.bfloat16 if cuda else torch.float32
    )
    if teacher.config.vocab_size != model.config.vocab_size:
        raise SystemExit(
            f"kd: teacher vocabulary {teacher.config.vocab_size} != student "
            f"{model.config.vocab_size}; logit distillation needs the same tokenizer"
        )
    common = _common_args(hp, out, lr=hp.kd_lr, epochs=hp.kd_epochs, n_rows=len(rows))
    args = DistillationConfig(**common, beta=hp.kd_beta, max_completion_length=hp.kd_max_new_tokens, temperature=1.0)
    trainer = DistillationTrainer(
        model=model,
        teacher_model=teacher,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[ProgressCallback("kd", run_dir / "progress.jsonl")],
    )
    resume = _last_checkpoint(out)
    trainer.train(resume_from_checkpoint=resume)
    return _finish_phase(trainer, out, started, {"prompts": len(rows), "resumed_from": resume, **load_info})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", type=Path)
    ap.add_argument("--pipes", action="store_true", help="report to Dagster through dagster-pipes (containers)")
    ns = ap.parse_args(argv)
    spec_path = ns.spec.resolve()
    spec = json.loads(spec_path.read_text())
    run_dir = spec_path.parent
    with contextlib.ExitStack() as stack:
        if ns.pipes:  # launched in a container by PipesDockerClient: progress goes to the Dagster run
            from dagster_pipes import open_dagster_pipes

            from distill_assets.training import trainer

            pipes = stack.enter_context(open_dagster_pipes())
            trainer.PROGRESS_HOOKS.append(lambda rec: pipes.log.info(json.dumps(rec)))
            result = train(spec, run_dir)
            pipes.report_custom_message({"adapter_sha256": result.get("adapter_sha256"), "phases": result["phases"]})
        else:
            train(spec, run_dir)
    return 0


def train(spec: dict, run_dir: Path) -> dict:
    import torch
    from transformers import AutoTokenizer, set_seed

    hp = read_hp(spec)
    set_seed(hp.seed)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    tokenizer = AutoTokenizer.from_pretrained(spec["base_model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    phases, done = spec["phases"], {}
    previous: Path | None = None
    for phase in phases:
        folder = run_dir / phase
        if (folder / "phase.json").exists() and (folder / "final" / "adapter_config.json").exists():
            done[phase] = json.loads((folder / "phase.json").read_text())
            done[phase]["cached"] = True
        elif phase == "sft":
            done[phase] = run_sft(spec, hp, run_dir, tokenizer)
        elif phase == "dpo":
            done[phase] = run_dpo(spec, hp, run_dir, tokenizer, previous)
        elif phase == "kd":
            done[phase] = run_kd(spec, hp, run_dir, tokenizer, previous)
        else:
            raise SystemExit(f"unknown phase {phase!r}; known: {', '.join(PHASES)}")
        previous = folder / "final"
    final = run_dir / "adapter"
    result = {
        "stage": spec["stage"],
        "phases": phases,
        "phase_results": done,
        "adapter_dir": str(final),
        "base_model": spec["base_model"],
    }
    if _rank0():
        tmp = run_dir / "adapter.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(previous, tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        result["adapter_sha256"] = _adapter_sha256(final)
        tmp_res = run_dir / "result.json.partial"
        tmp_res.write_text(json.dumps(result, indent=1, default=str))
        os.replace(tmp_res, run_dir / "result.json")
    return result


if __name__ == "__main__":
    raise SystemExit(main())

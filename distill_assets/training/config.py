"""A stage's training hyper-parameters: validated in distill.yaml, written into the run's ``spec.json`` and
validated again by the training process (``python -m distill_assets.training.run``), which reads them as this
typed object, never as a dict with defaults restated. This module needs pydantic only, so the training
process (and a GPU machine running the benchmarks) imports no more than that."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(default=64, ge=1)
    alpha: int = Field(default=128, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"
    lr: float = Field(default=2e-4, gt=0)
    epochs: float = Field(default=2, gt=0)
    max_length: int = Field(default=4096, ge=64)
    batch_size: int = Field(default=1, ge=1)
    grad_accum: int = Field(default=8, ge=1)
    dpo: bool = False
    dpo_lr: float = Field(default=5e-5, gt=0)
    dpo_epochs: float = Field(default=1, gt=0)
    dpo_beta: float = Field(default=0.1, gt=0, description="DPO temperature (TRL's beta)")
    reasoning_weight: float = Field(default=0.5, ge=0.0, description="loss weight of [REASONING] tokens")
    plan_weight: float = Field(default=1.0, ge=0.0, description="loss weight of [PLAN] tokens")
    curriculum: bool = Field(default=False, description="easy -> hard by difficulty label, as a sampler")
    kd: bool = Field(default=False, description="phase 3: on-policy logit distillation (TRL DistillationTrainer)")
    kd_teacher: str | None = Field(
        default=None, description="same-tokenizer teacher for kd: HF dir, hub id or 'package:file.gguf'"
    )
    kd_lr: float = Field(default=5e-5, gt=0)
    kd_epochs: float = Field(default=1, gt=0)
    kd_beta: float = Field(default=0.5, ge=0.0, le=1.0, description="0 forward KL, 1 reverse KL, 0.5 JSD")
    kd_max_new_tokens: int = Field(default=256, ge=8, description="student completion length in kd")
    qlora: Literal["auto", "on", "off"] = Field(
        default="auto", description="4-bit NF4 base (bitsandbytes); auto: on when CUDA and bitsandbytes are present"
    )
    liger: Literal["auto", "on", "off"] = Field(
        default="auto", description="liger-kernel RMSNorm/SwiGLU/RoPE; auto: on when CUDA and liger are present"
    )
    compile: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="regional torch.compile of the decoder layers in SFT (replaces liger's in-layer "
        "kernels); auto: on when CUDA and the base is not 4-bit. Packed stage-4 rows, Qwen3-4B shape, H200: "
        "17,741 real tokens/s at 36.7 GB against 15,529 at 38.2 GB for liger with 8 checkpointed layers "
        "(3.41x and 2.98x TRL's defaults, bench/results/train_scale_gpu.md)",
    )
    fold_lora: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="LoRA-B folded into the frozen base GEMM in SFT: each LoRA linear is one GEMM "
        "[x | s x A^T] @ [W | B]^T instead of three matmuls and an add (same function and gradients). auto: on "
        "with CUDA and a bf16 base. Qwen3-4B shape, H100, same memory: +3.9-5.0% real tokens/s through this trainer "
        "on packed stage-4 rows, +3.6-4.2% in the 8,192-token harness (bench/results/train_scale_gpu.md, "
        "train_throughput.md)",
    )
    activation_memory_budget: float | None = Field(
        default=0.8,
        gt=0,
        le=1,
        description="with compile: the share of activations the backward keeps; the rest "
        "is recomputed, cheapest first (torch._functorch activation_memory_budget)",
    )
    checkpoint_layers: int | Literal["auto", "all", "none"] = Field(
        default="auto",
        description="gradient checkpointing: all layers, none, or N layers spread evenly; auto: none when the "
        "layers are compiled (the activation memory budget saves memory instead), all otherwise",
    )
    dpo_checkpoint_layers: int | Literal["all", "none"] = Field(
        default="all",
        description="gradient checkpointing in DPO (its own setting: DPO runs the policy on chosen and "
        "rejected answers, so it keeps twice the activations of SFT on the same rows)",
    )
    packing: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="SFT rows packed (best-fit decreasing) into batches of up to pack_tokens tokens, each row "
        "attending only to itself (variable-length flash attention on CUDA): no padded token is computed and "
        "each row's loss is what it is alone. auto: on when CUDA. grad_accum is divided by the mean rows per "
        "packed batch, so an optimizer step still sees about batch_size x grad_accum rows",
    )
    pack_tokens: int | None = Field(default=None, ge=64, description="tokens per packed batch (default: max_length)")
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0)
    save_steps: int = Field(default=50, ge=1, description="checkpoint every N optimizer steps (resumable)")
    keep_checkpoints: int = Field(
        default=2,
        ge=1,
        description="checkpoints kept on disk (the newest; more give a "
        "learning curve from one training, see `distill learn`)",
    )
    max_steps: int | None = Field(default=None, gt=0, description="cap optimizer steps per phase (CPU demos)")
    max_train_rows: int | None = Field(default=None, gt=0, description="cap training rows per phase (CPU demos)")
    max_val_rows: int | None = Field(
        default=None,
        gt=0,
        description="cap the held-out rows of the validation loss (CPU demos: it runs after training)",
    )
    seed: int = 42

    @model_validator(mode="after")
    def _kd_teacher(self) -> TrainingConfig:
        if self.kd and not self.kd_teacher:
            raise ValueError("kd: true needs kd_teacher (a model with the student's tokenizer)")
        return self

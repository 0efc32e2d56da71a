"""TRL's trainers with the project's additions: span-weighted CoT-SFT loss, a curriculum sampler,
per-step progress and throughput, and model loading (fp32 on CPU, bf16 or QLoRA NF4 on CUDA)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import SFTTrainer

from distill_assets.training.config import TrainingConfig
from distill_assets.training.data import CurriculumSampler, SpanWeightCollator
from distill_assets.training.io import PROGRESS_PREFIX


class WeightedSFTTrainer(SFTTrainer):
    """SFTTrainer whose per-token loss is scaled by the example's span weights (Structured Agent
    Distillation: [PLAN] tokens pull harder than [REASONING] tokens, prompt tokens not at all).

    The dataset comes tokenised (``input_ids``, ``labels``, ``loss_weights``, ``difficulty``); the loss
    is normalised by the number of completion tokens, like TRL's own, so with equal weights it is exactly
    TRL's loss."""

    def __init__(self, *args, curriculum: bool = False, **kwargs):
        self.curriculum = curriculum
        super().__init__(*args, **kwargs)
        self.data_collator = SpanWeightCollator(self.data_collator)

    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        if self.curriculum and ds is not None and "difficulty" in ds.column_names:
            return CurriculumSampler(ds["difficulty"], seed=self.args.data_seed or self.args.seed)
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop("loss_weights")
        inputs.pop("difficulty", None)
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        loss = span_weighted_loss(outputs.log_probs, weights, outputs.label_mask, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        mask = outputs.label_mask
        num_valid = self.accelerator.gather_for_metrics(mask.sum()).sum()
        if outputs.entropy is not None and outputs.is_top1 is not None:
            ent = self.accelerator.gather_for_metrics(outputs.entropy.detach().sum()).sum()
            top1 = self.accelerator.gather_for_metrics(outputs.is_top1.sum()).sum()
            self._metrics[mode]["entropy"].append((ent / num_valid).item() if num_valid > 0 else 0.0)
            self._metrics[mode]["mean_token_accuracy"].append((top1 / num_valid).item() if num_valid > 0 else 0.0)
        if mode == "train":
            n = (
                inputs["attention_mask"].sum()
                if "attention_mask" in inputs
                else torch.tensor(inputs["input_ids"].numel())
            )
            self._total_train_tokens += int(self.accelerator.gather_for_metrics(n.to(mask.device)).sum().item())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        if return_outputs:
            with torch.no_grad():
                outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            return loss, outputs
        return loss


def span_weighted_loss(
    log_probs: torch.Tensor, weights: torch.Tensor, label_mask: torch.Tensor, num_items_in_batch=None
) -> torch.Tensor:
    """``log_probs[b, t]`` is log p(token t+1) (zero where ignored), so token t+1's weight scales it.
    Divided by the completion-token count (of the whole accumulated batch when given)."""
    w = weights[:, 1:].to(log_probs.dtype)
    if w.shape != log_probs.shape:
        raise ValueError(f"span weights {tuple(w.shape)} do not line up with log-probs {tuple(log_probs.shape)}")
    denom = label_mask.sum() if num_items_in_batch is None else num_items_in_batch
    return -(log_probs * w).sum() / torch.as_tensor(denom, device=log_probs.device).clamp(min=1)


PROGRESS_HOOKS: list = []  # extra receivers of progress records (dagster-pipes in containers)


class ProgressCallback(TrainerCallback):
    """One JSON line per log event on stdout (the launcher relays it to Dagster) and in a file;
    tokens/s from the trainer's token count."""

    def __init__(self, phase: str, log_path: Path):
        self.phase = phase
        self.log_path = Path(log_path)
        self.t0 = None
        self.tokens0 = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.perf_counter()
        self.tokens0 = int(state.num_input_tokens_seen or 0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or logs is None:
            return
        rec = {
            "phase": self.phase,
            "step": state.global_step,
            "max_steps": state.max_steps,
            "epoch": round(state.epoch or 0.0, 4),
            **{k: v for k, v in logs.items() if _finite(v)},
        }
        rec["elapsed_s"] = round(time.perf_counter() - (self.t0 or time.perf_counter()), 3)
        if torch.cuda.is_available():
            rec["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(PROGRESS_PREFIX + json.dumps(rec), flush=True)
        sys.stdout.flush()
        for hook in PROGRESS_HOOKS:
            hook(rec)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# --------------------------------------------------------------------------- models


def want(flag: str, available: bool) -> bool:
    return flag == "on" or (flag == "auto" and available)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def load_base(path: str, hp: TrainingConfig, *, for_training: bool = True):
    """The frozen base: fp32 on CPU; bf16 on CUDA, or 4-bit NF4 (QLoRA) when ``hp.qlora`` asks for it."""
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    kwargs: dict = {"dtype": torch.bfloat16 if cuda else torch.float32}
    qlora = want(hp.qlora, cuda and _importable("bitsandbytes"))
    if qlora and not cuda:
        raise RuntimeError("qlora: on needs a CUDA GPU (bitsandbytes NF4)")
    if qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    if cuda:
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model.config.use_cache = False
    if qlora and for_training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model, {"qlora": qlora, "dtype": str(kwargs["dtype"]).replace("torch.", "")}


def compile_wanted(hp: TrainingConfig, qlora: bool = False) -> bool:
    """auto: on with CUDA, not with a 4-bit (QLoRA) base (measured only with bf16: packed stage-4 rows,
    Qwen3-4B shape, H200, 1.14x liger with 8 checkpointed layers at less memory,
    bench/results/train_scale_gpu.md)."""
    return want(hp.compile, torch.cuda.is_available() and not qlora)


def checkpoint_setting(setting: int | str, compiled: bool) -> int | str:
    """A ``checkpoint_layers`` setting resolved: ``auto`` is none when the layers are compiled (the activation
    memory budget does the saving), all otherwise."""
    if setting == "auto":
        return "none" if compiled else "all"
    return setting


def apply_liger(model, hp: TrainingConfig, qlora: bool = False) -> bool:
    """liger-kernel RMSNorm / SwiGLU / RoPE on the model instance (the loss is TRL's fused LM head).
    Not with ``compile``: inductor fuses those itself, and liger's kernels would break its graphs."""
    if compile_wanted(hp, qlora) or not want(hp.liger, torch.cuda.is_available() and _importable("liger_kernel")):
        return False
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(
        model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False
    )
    return True


def decoder_layers(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", base)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder layers of {type(base).__name__}")
    return layers


def checkpointed_indices(n_layers: int, k: int) -> set[int]:
    """k layer indices spread evenly over n_layers."""
    return {int(math.floor(i * n_layers / k)) for i in range(k)} if k > 0 else set()


def apply_checkpointing(model, setting) -> int:
    """Gradient checkpointing on all, none, or N evenly spread decoder layers (selective checkpointing:
    most of the speed of none at a fraction of its memory, measured in bench/train_throughput.py).
    Returns the number of checkpointed layers."""
    layers = decoder_layers(model)
    if setting == "none" or setting == 0:
        return 0
    model.activation_checkpointing_enable({"use_reentrant": False})
    if setting == "all":
        return len(layers)
    keep = checkpointed_indices(len(layers), min(int(setting), len(layers)))
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = i in keep
    return len(keep)


def disable_lora_input_cast(model) -> int:
    """Under bf16 the LoRA matmuls reuse the bf16 input the frozen base already saved instead of an fp32
    copy per module (same numbers, less activation memory). Only applies when the base is bf16."""
    n = 0
    for m in model.modules():
        if hasattr(m, "lora_A") and hasattr(m, "cast_input_dtype_enabled"):
            m.cast_input_dtype_enabled = False
            n += 1
    return n


def compile_layers(model, hp: TrainingConfig, qlora: bool = False) -> int:
    """Regional compilation: every decoder layer, its LoRA modules included, compiled in place by
    torch.compile (the layers share one graph, so one compile serves all). Inductor fuses the pointwise
    work, and ``activation_memory_budget`` (0-1) makes its partitioner recompute the cheapest activations
    in the backward instead of saving them. Qwen3-4B shape, seq 8192, H200: 2.13x plain HF+PEFT tokens/s
    at 36.7 GB with budget 0.8 and no layer checkpointing (bench/results/train_throughput.md).
    Returns the number of compiled layers (0: off)."""
    if not compile_wanted(hp, qlora):
        return 0
    budget = hp.activation_memory_budget
    if budget is not None:
        import torch._functorch.config as functorch_config

        functorch_config.activation_memory_budget = float(budget)
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile()
    return len(layers)


def fold_wanted(hp: TrainingConfig, qlora: bool = False) -> bool:
    """auto: on with CUDA and a bf16 base (the fold needs the base's nn.Linear weights, not NF4)."""
    return want(hp.fold_lora, torch.cuda.is_available() and not qlora)


def fold_lora(model, hp: TrainingConfig, qlora: bool = False):
    """LoRA-B folded into the frozen base GEMM of every LoRA linear (distill_assets/training/lora_fold.py):
    one GEMM ``[x | s x A^T] @ [W | B]^T`` per module instead of PEFT's three matmuls and an add. Returns the
    ``FoldedLoRA`` handle (its B mirrors must follow every optimizer step: ``FoldRefresh``), or None when off."""
    if not fold_wanted(hp, qlora):
        return None
    if qlora:
        raise RuntimeError("fold_lora: on needs a bf16/fp32 base (not the 4-bit QLoRA one)")
    from distill_assets.training.lora_fold import fold_lora_layers

    return fold_lora_layers(model)


class FoldRefresh(TrainerCallback):
    """Mirror the LoRA B weights into the folded ``[W | B]`` buffers at the start of training (after a resumed
    checkpoint's weights are loaded) and after every optimizer step."""

    def __init__(self, folded):
        self.folded = folded

    def on_train_begin(self, args, state, control, **kwargs):
        self.folded.refresh()

    def on_step_end(self, args, state, control, **kwargs):
        self.folded.refresh()


def trainable_counts(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total

"""LoRA-B folded into the frozen base GEMM.

PEFT's LoRA linear computes ``y = x @ W^T + s * (x @ A^T) @ B^T`` as three matmuls and an add: the base
output and the LoRA-B output are each written out (M x N) and read back by the add (or by whatever
pointwise kernel follows it), and in the backward ``dY`` (M x N) is read twice for the input gradients,
once against W and once against B. Concatenating along the reduction dimension gives the same product in
one GEMM:

    y  = [x | s * (x @ A^T)] @ [W | B]^T          (K grows by the rank r: 2,560 -> 2,688 for r = 128)
    dX' = dY @ [W | B]  ->  dx = dX'[:, :K] + s * dX'[:, K:] @ A,   dA = (s * dX'[:, K:])^T @ x,
                            dB = dY^T @ (s * x @ A^T)

so the LoRA-B forward matmul, the M x N add and one full read of ``dY`` disappear (on a Qwen3-4B-shaped
layer about 1.5 GB of memory traffic per layer and step at 8,192 tokens), and the skinny rank-128 GEMMs
that remain are the A-side ones and ``dB``. The weights gain no copy: every folded module holds one buffer
``[W | B]`` (out x (in + r), the base dtype); the frozen W becomes a view of its left part and the trainable
B (the PEFT parameter, fp32 or whatever it was) is mirrored into the right part by ``refresh()``, which must
run after every optimizer step (``FoldedLoRA.attach(optimizer)`` registers that as a step post-hook).
Under ``torch.compile`` the autograd function is traced like any other, so inductor can write the
concatenated input straight from the op that produces x (RMSNorm, SwiGLU).

Same function and gradients as PEFT's vanilla LoRA forward (no dropout, no DoRA, unmerged, bias-free,
one active adapter): checked in distill_assets_tests/training/test_lora_fold.py. Speed:
bench/train_throughput.py's ``fold`` token, results in bench/results/train_throughput.md. Imports torch only.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


class FoldedLoRAMatmul(torch.autograd.Function):
    """``y = [x | s * x @ A^T] @ wc^T`` with ``wc = [W | B]``; gradients for x, A and B (W is frozen, and the
    B inside ``wc`` is a mirror of the parameter ``b``, which is passed only to receive its gradient)."""

    @staticmethod
    def forward(ctx, x, wc, a, b, scale: float):
        a_c = a.to(x.dtype)
        u = F.linear(x, a_c) * scale  # (..., r)
        y = F.linear(torch.cat([x, u], dim=-1), wc)
        ctx.save_for_backward(x, u, wc, a_c)
        ctx.scale = scale
        ctx.a_dtype = a.dtype
        ctx.b_dtype = b.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        x, u, wc, a_c = ctx.saved_tensors
        k = x.shape[-1]
        dxc = dy.matmul(wc)  # (..., K + r): [dY @ W | dY @ B]
        du0 = dxc[..., k:] * ctx.scale  # the gradient of x @ A^T
        dx = dxc[..., :k] + du0.matmul(a_c)
        da = du0.reshape(-1, du0.shape[-1]).t().matmul(x.reshape(-1, k))
        db = dy.reshape(-1, dy.shape[-1]).t().matmul(u.reshape(-1, u.shape[-1]))
        return dx, None, da.to(ctx.a_dtype), db.to(ctx.b_dtype), None


def _folded_forward(self, x, *args, **kwargs):
    if self.disable_adapters or self.merged or list(self.active_adapters) != [self._fold_adapter]:
        # the base alone (e.g. DPO's reference pass under PEFT's disable_adapter()), or a state the fold does
        # not cover: PEFT's own forward
        return self._fold_peft_forward(x, *args, **kwargs)
    a = self._fold_adapter
    w_a, w_b = self.lora_A[a].weight, self.lora_B[a].weight
    if x.dtype != self._fold_wc.dtype:
        x = x.to(self._fold_wc.dtype)
    return FoldedLoRAMatmul.apply(x, self._fold_wc, w_a, w_b, self._fold_scale)


class FoldedLoRA:
    """The folded modules of one model: ``refresh()`` mirrors every B into its ``[W | B]`` buffer."""

    def __init__(self, modules: list):
        self.modules = modules

    @torch.no_grad()
    def refresh(self) -> None:
        for m in self.modules:
            k = m._fold_k
            m._fold_wc[:, k:].copy_(m.lora_B[m._fold_adapter].weight)

    def attach(self, optimizer) -> None:
        """Refresh after every step of ``optimizer``."""
        optimizer.register_step_post_hook(lambda *_: self.refresh())

    @property
    def extra_bytes(self) -> int:
        return sum(m._fold_wc[:, m._fold_k :].numel() * m._fold_wc.element_size() for m in self.modules)


def _check_foldable(m, adapter: str) -> str | None:
    base = getattr(m, "base_layer", None)
    if not isinstance(base, torch.nn.Linear):
        return "its base layer is not an nn.Linear"
    if base.bias is not None:
        return "its base layer has a bias"
    if getattr(m, "merged", False):
        return "the adapter is merged"
    if adapter not in m.lora_A or list(m.active_adapters) != [adapter]:
        return f"adapter {adapter!r} is not the one active adapter"
    if getattr(m, "use_dora", {}).get(adapter, False) or adapter in getattr(m, "lora_variant", {}):
        return "it is not a vanilla LoRA (DoRA or another variant)"
    if not isinstance(m.lora_dropout[adapter], torch.nn.Identity):
        return "lora_dropout is not 0"
    if getattr(m, "fan_in_fan_out", False):
        return "fan_in_fan_out layers are not supported"
    return None


def fold_lora_layers(model, adapter: str = "default") -> FoldedLoRA:
    """Fold LoRA-B into the base GEMM of every PEFT LoRA linear layer of ``model`` (see the module doc).

    The base weight of each module becomes a view of the new ``[W | B]`` buffer (no extra copy of W); the
    module's forward is replaced for this instance only. Raises ValueError naming the first module that cannot
    be folded. Call ``refresh()`` (or ``attach(optimizer)``) after every update of the B parameters."""
    mods = []
    for name, m in model.named_modules():
        if not hasattr(m, "lora_A") or not hasattr(m, "base_layer"):
            continue
        why = _check_foldable(m, adapter)
        if why is not None:
            raise ValueError(f"cannot fold LoRA into {name}: {why}")
        mods.append((name, m))
    if not mods:
        raise ValueError("fold_lora_layers: the model has no PEFT LoRA linear layers")
    for _name, m in mods:
        base = m.base_layer
        w = base.weight.detach()
        b = m.lora_B[adapter].weight
        n, k = w.shape
        wc = torch.empty(n, k + b.shape[1], dtype=w.dtype, device=w.device)
        wc[:, :k].copy_(w)
        base.weight = torch.nn.Parameter(wc[:, :k], requires_grad=False)
        m.register_buffer("_fold_wc", wc, persistent=False)
        m._fold_k = k
        m._fold_adapter = adapter
        m._fold_scale = float(m.scaling[adapter])
        m._fold_peft_forward = m.forward
        m.forward = types.MethodType(_folded_forward, m)
    # DDP would broadcast every buffer from rank 0 before each forward (its default, and the HF Trainer's): the
    # [W | B] buffers hold the whole base, and each rank builds its own from the same weights and its own B (kept
    # equal by the gradient all-reduce), so DDP is told to leave them alone
    names = [f"{name}._fold_wc" if name else "_fold_wc" for name, _ in mods]
    ignored = list(getattr(model, "_ddp_params_and_buffers_to_ignore", []))
    torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored + names)
    handle = FoldedLoRA([m for _, m in mods])
    handle.refresh()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return handle

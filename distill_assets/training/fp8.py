"""Float8 frozen-base GEMMs for LoRA training.

The base weights of a LoRA run get no gradients, so each PEFT LoRA layer's base ``nn.Linear`` can be
replaced by ``FP8FrozenLinear``, which holds W twice in ``float8_e4m3fn`` and frees the original weight:

* W (out x in), one scale per output channel, for the forward ``y = x @ W^T`` (x quantised per row/token);
* W^T (in x out), one scale per input channel, for the backward ``dx = dY @ W`` (dY quantised per row).

No weight gradient is computed and nothing of x is saved. The LoRA path is PEFT's and unchanged. On CUDA
the products run in ``torch._scaled_mm`` with rowwise scales (Hopper / Ada, compute capability 8.9+). On
any other device the same quantised operands are dequantised and multiplied in fp32: the CPU emulation of
what ``_scaled_mm`` computes (up to the accumulation order), sharing every quantisation step with the GPU
path. The output dtype is the input's (bf16 in CUDA training, fp32 in the CPU emulation, so the emulation
measures the float8 error alone).

Measured: bench/results/train_throughput.md (speed: 2.50x plain, Qwen3-4B shape, H200) and
bench/results/fp8_quality.md (LoRA training on the real SmolLM2-135M weights and stage-4 rows: validation loss
1.8 % and 2.6 % above the exact base's for two seeds). That quality gap is why the trainer
(distill_assets/training/run.py) does not use this yet; bench/train_throughput.py and bench/fp8_quality.py do.
This module imports torch only, so the benchmarks can use it on a bare GPU machine."""

from __future__ import annotations

import torch

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
GRAD_CODES = {"e4m3": 0, "e5m2": 1, "bf16": 2}  # the backward's dY format; bf16: against the kept W (diagnostic)
MIN_CAPABILITY = (8, 9)


def quant_rows(t: torch.Tensor, dtype: torch.dtype = E4M3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (last dim) scaled cast: ``t ~= q * s`` with q in ``dtype`` (float8) and s (rows, 1) fp32; each
    row's largest magnitude maps to the format's largest finite value."""
    fmax = torch.finfo(dtype).max
    amax = t.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12)
    s = amax / fmax
    q = (t.float() / s).clamp(-fmax, fmax).to(dtype)
    return q, s


def scaled_mm(a_q, a_s, b_q, b_s_row, out_dtype: torch.dtype) -> torch.Tensor:
    """``(a_q * a_s) @ (b_q * b_s)^T``: a (M, K) row-major float8 with per-row scales (M, 1); b (N, K)
    row-major float8 (given to _scaled_mm as the column-major (K, N) view) with per-row scales as (1, N).
    CUDA: ``torch._scaled_mm``. Elsewhere: the same product, dequantised and multiplied in fp32."""
    if a_q.is_cuda:
        return torch._scaled_mm(a_q, b_q.t(), scale_a=a_s, scale_b=b_s_row, out_dtype=out_dtype)
    return ((a_q.float() * a_s) @ (b_q.float() * b_s_row.t()).t()).to(out_dtype)


class FP8BaseMatmul(torch.autograd.Function):
    """y = x @ W^T with W frozen: forward in float8 against W (per-output-channel scales), backward
    dx = dY @ W in float8 against the pre-quantised W^T (per-input-channel scales). No weight gradient;
    nothing of x is saved."""

    @staticmethod
    def forward(ctx, x, w_q, w_s, wt_q, wt_s, grad: int):
        k = x.shape[-1]
        xq, xs = quant_rows(x.reshape(-1, k), E4M3)
        y = scaled_mm(xq, xs, w_q, w_s, x.dtype)
        ctx.save_for_backward(wt_q, wt_s)
        ctx.grad = grad  # 0: dY in e4m3, 1: e5m2, 2: unquantised against the kept W (wt_q is W, out x in)
        ctx.x_dtype = x.dtype
        return y.view(*x.shape[:-1], w_q.shape[0])

    @staticmethod
    def backward(ctx, dy):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        wt_q, wt_s = ctx.saved_tensors
        n = dy.shape[-1]
        if ctx.grad == 2:
            dx = dy.reshape(-1, n).to(wt_q.dtype) @ wt_q
        else:
            gq, gs = quant_rows(dy.reshape(-1, n), E5M2 if ctx.grad == 1 else E4M3)
            dx = scaled_mm(gq, gs, wt_q, wt_s, ctx.x_dtype)
        return dx.view(*dy.shape[:-1], dx.shape[-1]).to(ctx.x_dtype), None, None, None, None, None


class FP8FrozenLinear(torch.nn.Module):
    """A frozen bias-free nn.Linear as two float8_e4m3fn copies of its weight; the original weight is not
    kept (``grad="bf16"`` keeps it for the backward: a diagnostic, forward-only float8)."""

    def __init__(self, lin: torch.nn.Linear, grad: str = "e4m3"):
        super().__init__()
        if lin.bias is not None:
            raise ValueError("fp8: bias-free base layers only")
        if grad not in GRAD_CODES:
            raise ValueError(f"fp8: grad must be one of {', '.join(GRAD_CODES)}, not {grad!r}")
        w = lin.weight.detach()
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self.grad = grad
        self.grad_code = GRAD_CODES[grad]
        w_q, w_s = quant_rows(w, E4M3)  # (out, in), per output channel
        self.register_buffer("w_q", w_q, persistent=False)
        self.register_buffer("w_s", w_s.reshape(1, -1).contiguous(), persistent=False)
        if grad == "bf16":
            self.register_buffer("wt_q", w.clone(), persistent=False)
            self.wt_s = None
        else:
            wt_q, wt_s = quant_rows(w.t().contiguous(), E4M3)  # (in, out), per input channel
            self.register_buffer("wt_q", wt_q, persistent=False)
            self.register_buffer("wt_s", wt_s.reshape(1, -1).contiguous(), persistent=False)

    def forward(self, x):
        return FP8BaseMatmul.apply(x, self.w_q, self.w_s, self.wt_q, self.wt_s, self.grad_code)

    def dequantised(self, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        """W as the forward sees it, for checks."""
        return (self.w_q.float() * self.w_s.t()).to(dtype)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8 e4m3 weights, grad {self.grad}"


def fp8_base_layers(model, grad: str = "e4m3") -> dict:
    """Replace the base linear of every PEFT LoRA layer by an FP8FrozenLinear; the original weights are freed.
    Returns counts and the first weight's quantisation error (relative Frobenius)."""
    n, numel, err = 0, 0, None
    for m in list(model.modules()):
        if hasattr(m, "lora_A") and isinstance(getattr(m, "base_layer", None), torch.nn.Linear):
            lin = m.base_layer
            m.base_layer = FP8FrozenLinear(lin, grad)
            if err is None:
                w = lin.weight.detach().float()
                err = float((m.base_layer.dequantised(torch.float32) - w).norm() / w.norm())
            numel += lin.weight.numel()
            lin.weight = None  # drop the weight now (the module object may linger in PEFT's bookkeeping)
            del lin
            n += 1
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {
        "fp8_modules": n,
        "fp8_base_params": numel,
        "fp8_weight_bytes": (3 if grad == "bf16" else 2) * numel,
        "fp8_weight_rel_err": err,
    }


def fp8_unsupported_reason() -> str | None:
    """None where float8 GEMMs can run (CUDA, compute capability 8.9+); otherwise why not, in one line."""
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        return f"this torch ({torch.__version__}) has no float8 GEMMs (torch._scaled_mm)"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    cap = torch.cuda.get_device_capability()
    if cap < MIN_CAPABILITY:
        name = torch.cuda.get_device_name()
        return f"{name} is compute capability {cap[0]}.{cap[1]}, float8 GEMMs need 8.9+ (Ada, Hopper or newer)"
    return None

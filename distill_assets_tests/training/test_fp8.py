"""The float8 frozen-base layer (distill_assets/training/fp8.py) in its CPU emulation: the same quantisation as
the GPU path, with the dequantised operands multiplied in fp32. Checked against a float8 roundtrip written out
here, and on a tiny random LoRA model."""

from __future__ import annotations

import pytest
import torch

from distill_assets.training.fp8 import FP8FrozenLinear, fp8_base_layers, fp8_unsupported_reason
from distill_assets_tests.training.tiny import tiny_lora


def _roundtrip_rows(t: torch.Tensor, dtype=torch.float8_e4m3fn) -> torch.Tensor:
    """Each row scaled so its largest magnitude is the format's largest value, cast to float8, and back."""
    fmax = torch.finfo(dtype).max
    s = t.abs().amax(dim=-1, keepdim=True) / fmax
    return (t / s).to(dtype).to(torch.float32) * s


def _linear(out_f=48, in_f=80, seed=0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    lin = torch.nn.Linear(in_f, out_f, bias=False)
    with torch.no_grad():
        lin.weight.mul_(torch.linspace(0.1, 10.0, out_f).unsqueeze(1))  # channels of very different scale
    return lin


def test_emulated_forward_is_the_float8_roundtrip_product_and_not_the_exact_one():
    lin = _linear()
    w = lin.weight.detach().clone()
    f = FP8FrozenLinear(lin)
    x = torch.randn(3, 7, 80) * torch.linspace(0.01, 5, 7).view(1, 7, 1)  # tokens of very different scale
    y = f(x)
    ref = _roundtrip_rows(x.reshape(-1, 80)) @ _roundtrip_rows(w).t()  # x per token, W per output channel
    assert y.shape == (3, 7, 48) and y.dtype == torch.float32
    torch.testing.assert_close(y.reshape(-1, 48), ref, rtol=1e-5, atol=1e-5)
    exact = x @ w.t()
    err = float((y - exact).norm() / exact.norm())
    assert 1e-3 < err < 0.1  # float8 really happened, and it is still a close product
    assert list(f.parameters()) == []  # frozen: nothing to train, no weight gradient


@pytest.mark.parametrize("grad,dtype", [("e4m3", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)])
def test_emulated_input_gradient_is_quantised_dy_times_per_input_channel_w(grad, dtype):
    lin = _linear(seed=1)
    w = lin.weight.detach().clone()
    f = FP8FrozenLinear(lin, grad=grad)
    x = torch.randn(5, 80, requires_grad=True)
    dy = torch.randn(5, 48) * torch.logspace(-3, 1, 5).unsqueeze(1)
    f(x).backward(dy)
    # dx = dY @ W with dY per row in `dtype` and W^T (in x out) quantised per input channel (its rows)
    ref = _roundtrip_rows(dy, dtype) @ _roundtrip_rows(w.t().contiguous()).t()
    torch.testing.assert_close(x.grad, ref, rtol=1e-5, atol=1e-6)
    assert float((x.grad - dy @ w).norm() / (dy @ w).norm()) > 1e-3


def test_bias_and_unknown_gradient_formats_are_refused():
    with pytest.raises(ValueError, match="bias-free"):
        FP8FrozenLinear(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="grad must be one of"):
        FP8FrozenLinear(torch.nn.Linear(4, 4, bias=False), grad="fp16")


def _tiny_lora(seed=0):
    return tiny_lora(seed, arch="llama", alpha=8)


def _lora_grads(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return float(out.loss), torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.requires_grad])


def test_a_lora_model_on_a_float8_base_keeps_its_lora_and_learns_the_same_direction(tmp_path):
    ids = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(3))
    exact = _tiny_lora()
    l_exact, g_exact = _lora_grads(exact, ids)
    model = _tiny_lora()
    info = fp8_base_layers(model)
    assert info["fp8_modules"] == 2 * 7  # q k v o gate up down in each of the 2 layers
    assert 0 < info["fp8_weight_rel_err"] < 0.05
    lora_layers = [m for m in model.modules() if hasattr(m, "lora_A")]
    assert lora_layers and all(isinstance(m.base_layer, FP8FrozenLinear) for m in lora_layers)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    l_fp8, g_fp8 = _lora_grads(model, ids)
    assert abs(l_fp8 - l_exact) < 0.02 and l_fp8 != l_exact
    cos = float(g_fp8 @ g_exact / (g_fp8.norm() * g_exact.norm()))
    assert 0.98 < cos < 1.0
    # the adapter saves as usual and loads onto the exact base (how it is deployed)
    model.save_pretrained(tmp_path / "adapter")
    from peft import PeftModel
    from transformers import LlamaConfig, LlamaForCausalLM

    base = LlamaForCausalLM(LlamaConfig(**exact.get_base_model().config.to_dict()))
    loaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    saved = {n.replace(".default", ""): p for n, p in model.named_parameters() if "lora_" in n}
    again = {n.replace(".default", ""): p for n, p in loaded.named_parameters() if "lora_" in n}
    assert saved.keys() == again.keys()
    assert all(torch.equal(saved[n], again[n]) for n in saved)


def test_without_a_float8_gpu_the_reason_is_one_line():
    if torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9):
        assert fp8_unsupported_reason() is None
    else:
        reason = fp8_unsupported_reason()
        assert reason and "\n" not in reason
        assert "CUDA" in reason or "8.9" in reason

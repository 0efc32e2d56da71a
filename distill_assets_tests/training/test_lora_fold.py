"""LoRA-B folded into the frozen base GEMM (distill_assets/training/lora_fold.py): on a tiny random LoRA model,
in fp32 on the CPU, the folded forward gives PEFT's loss and LoRA gradients, keeps doing so across optimizer steps
(the mirrored B is refreshed by the step hook), traces under torch.compile without a graph break, and refuses the
layers it cannot fold."""

from __future__ import annotations

import pytest
import torch

from distill_assets.training.lora_fold import FoldedLoRAMatmul, fold_lora_layers
from distill_assets_tests.training.tiny import tiny_lora


def _tiny_lora(seed=0, dropout=0.0):
    return tiny_lora(seed, arch="qwen3", alpha=12, dropout=dropout)


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    named = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return float(out.loss), named


IDS = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(3))


def test_the_folded_matmul_is_the_lora_product_with_its_gradients():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(12, 16, dtype=torch.float64)
    a = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    b = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)

    def folded(x, a, b):  # the mirror follows b, as refresh() keeps it after every step
        return FoldedLoRAMatmul.apply(x, torch.cat([w, b.detach()], dim=1), a, b, 1.5)

    assert torch.autograd.gradcheck(folded, (x, a, b))
    wc = torch.cat([w, b.detach()], dim=1)
    ref = x @ w.t() + 1.5 * (x @ a.t()) @ b.t()
    torch.testing.assert_close(FoldedLoRAMatmul.apply(x, wc, a, b, 1.5), ref)


def test_folded_model_gives_peft_loss_and_gradients_and_keeps_them_across_steps():
    ref, model = _tiny_lora(), _tiny_lora()
    handle = fold_lora_layers(model)
    assert len(handle.modules) == 2 * 7  # q k v o gate up down in each of the 2 layers
    assert handle.extra_bytes == sum(m.lora_B["default"].weight.numel() * 4 for m in handle.modules)
    # the frozen W is a view of the folded buffer: no second copy
    m0 = handle.modules[0]
    assert m0.base_layer.weight.data_ptr() == m0._fold_wc.data_ptr()
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    # DDP must not broadcast the [W | B] buffers (the whole base) before every forward
    folded_buffers = {n for n, _ in model.named_buffers() if n.endswith("_fold_wc")}
    assert len(folded_buffers) == 14 and set(model._ddp_params_and_buffers_to_ignore) == folded_buffers

    opt_r = torch.optim.AdamW([p for p in ref.parameters() if p.requires_grad], lr=1e-2)
    opt_m = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    handle.attach(opt_m)
    for step in range(3):
        l_r, g_r = _loss_and_grads(ref, IDS)
        l_m, g_m = _loss_and_grads(model, IDS)
        assert g_r.keys() == g_m.keys() and len(g_r) == 2 * 2 * 7
        assert abs(l_m - l_r) < 1e-5, step
        for n in g_r:
            torch.testing.assert_close(g_m[n], g_r[n], rtol=1e-4, atol=1e-6, msg=f"step {step}: {n}")
        opt_r.step()
        opt_m.step()
    # the B parameters moved, so without the hook the mirror would be stale and the loss would differ
    b = handle.modules[0].lora_B["default"].weight
    assert torch.equal(handle.modules[0]._fold_wc[:, handle.modules[0]._fold_k :], b.detach())


def test_a_stale_mirror_changes_the_result_so_the_refresh_matters():
    model = _tiny_lora()
    handle = fold_lora_layers(model)
    before = _loss_and_grads(model, IDS)[0]
    with torch.no_grad():
        for m in handle.modules:
            m.lora_B["default"].weight.mul_(3.0)
    stale = _loss_and_grads(model, IDS)[0]
    handle.refresh()
    fresh = _loss_and_grads(model, IDS)[0]
    assert stale == pytest.approx(before, abs=1e-6)
    assert abs(fresh - before) > 1e-3


def test_the_folded_layer_traces_under_torch_compile_in_one_graph():
    torch._dynamo.reset()
    ref, model = _tiny_lora(), _tiny_lora()
    fold_lora_layers(model)
    layer = model.base_model.model.model.layers[0].mlp
    ref_layer = ref.base_model.model.model.layers[0].mlp
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 7, 64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y = compiled(x)
    y_ref = ref_layer(x_ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-6)
    ga = layer.gate_proj.lora_A["default"].weight.grad
    torch.testing.assert_close(ga, ref_layer.gate_proj.lora_A["default"].weight.grad, rtol=1e-4, atol=1e-6)


def test_with_the_adapter_disabled_the_folded_model_is_the_base_as_in_peft():
    # DPO's reference pass runs the policy under disable_adapter(): the fold must step aside there
    ref, model = _tiny_lora(), _tiny_lora()
    fold_lora_layers(model)
    with torch.no_grad():
        on = model(input_ids=IDS).logits
        with model.disable_adapter(), ref.disable_adapter():
            off, off_ref = model(input_ids=IDS).logits, ref(input_ids=IDS).logits
        again = model(input_ids=IDS).logits
    torch.testing.assert_close(off, off_ref, rtol=1e-5, atol=1e-5)
    assert float((on - off).abs().max()) > 1e-3  # the adapter does change the output
    torch.testing.assert_close(again, on)


def test_layers_that_cannot_be_folded_are_named():
    with pytest.raises(ValueError, match=r"q_proj.*lora_dropout is not 0"):
        fold_lora_layers(_tiny_lora(dropout=0.1))
    with pytest.raises(ValueError, match="no PEFT LoRA"):
        fold_lora_layers(torch.nn.Sequential(torch.nn.Linear(4, 4)))

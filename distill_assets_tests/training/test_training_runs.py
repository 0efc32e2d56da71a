"""Real training processes on SmolLM2-135M (CPU): SFT then DPO through TRL, the saved adapter, and a run
killed mid-way that resumes with the losses of an uninterrupted run."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from distill_assets.config import TrainingConfig
from distill_assets.training.launch import TrainingFailed, launch, loss_curve, prepare_run, training_command


def _hp(**kw) -> TrainingConfig:
    base = dict(
        rank=8,
        alpha=16,
        dropout=0.0,
        lr=2e-3,
        epochs=1,
        max_length=2048,
        batch_size=1,
        grad_accum=1,
        dpo=True,
        dpo_lr=1e-3,
        dpo_epochs=1,
        max_steps=8,
        save_steps=100,
        warmup_ratio=0.0,
        seed=3,
    )
    base.update(kw)
    return TrainingConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smollm2_dir, plan_rows):
    root = tmp_path_factory.mktemp("runs")
    sft = plan_rows["sft"][:2] * 4  # two tasks seen four times: the loss must fall
    run_dir, spec = prepare_run(
        root, "plan_generation", smollm2_dir, _hp(), sft, plan_rows["sft"][2:], plan_rows["dpo"]
    )
    progress: list[dict] = []
    result = launch(run_dir, num_processes=1, on_progress=progress.append)
    return run_dir, spec, result, progress


def test_sft_loss_falls_and_progress_streams(trained):
    run_dir, spec, result, progress = trained
    assert result["phases"] == ["sft", "dpo"]
    sft = result["phase_results"]["sft"]
    losses = sft["losses"]
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < 0.7 * sum(losses[:2]) / 2  # clearly falling
    assert sft["val_rows"] == 1 and sft["val_loss"] is not None
    assert sft["reasoning_tokens"] > 0 and sft["plan_tokens"] > 0
    assert 0 < sft["trainable_params"] < sft["total_params"] / 10
    assert sft["tokens_per_s"] > 0
    steps = [p["step"] for p in progress if p["phase"] == "sft" and "loss" in p]
    assert steps == list(range(1, 9))  # every step reached the launcher as it happened
    assert [r["loss"] for r in loss_curve(run_dir) if r["phase"] == "sft"] == pytest.approx(losses)


def test_dpo_raises_the_reward_margin_on_its_pairs(trained):
    _, _, result, _ = trained
    dpo = result["phase_results"]["dpo"]
    assert dpo["pairs"] == 3
    margins = dpo["margins"]
    assert margins[0] == pytest.approx(0.0, abs=1e-4)  # the reference is the SFT adapter itself at step 1
    assert margins[-1] > 0.5 and max(margins[-3:]) > margins[0]


def test_lora_moves_the_base_stays_and_the_adapter_reloads_and_changes_output(trained, smollm2_dir, plan_rows):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _, result, _ = trained
    adapter = Path(result["adapter_dir"])
    weights = load_file(adapter / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)  # only LoRA tensors are saved; no "ref" copy
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # B starts at zero: it moved
    base_before = load_file(Path(smollm2_dir) / "model.safetensors")
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter))
    model.eval()
    for name, p in model.get_base_model().named_parameters():
        if "lora_" not in name and name.replace("base_layer.", "") in base_before:
            assert torch.equal(p.detach(), base_before[name.replace("base_layer.", "")])  # frozen base untouched
    row = plan_rows["sft"][0]
    prompt = tok.apply_chat_template(json.loads(row["prompt"]), tokenize=False, add_generation_prompt=True)
    target = json.loads(row["completion"])[0]["content"]
    ids = tok(prompt, return_tensors="pt").input_ids
    full = tok(prompt + target, return_tensors="pt").input_ids

    def target_nll():
        with torch.no_grad():
            logits = model(input_ids=full).logits[0, ids.shape[1] - 1 : -1]
        return torch.nn.functional.cross_entropy(logits, full[0, ids.shape[1] :]).item()

    with torch.no_grad():
        tuned = model.generate(ids, max_new_tokens=24, do_sample=False)[0, ids.shape[1] :]
        with model.disable_adapter():
            plain = model.generate(ids, max_new_tokens=24, do_sample=False)[0, ids.shape[1] :]
    assert tuned.tolist() != plain.tolist()
    tuned_nll = target_nll()
    with model.disable_adapter():
        plain_nll = target_nll()
    assert tuned_nll < 0.9 * plain_nll  # the trained completion became likelier


def test_a_finished_run_is_not_trained_again(trained):
    run_dir, _, result, _ = trained
    logged = (run_dir / "progress.jsonl").read_text()
    again = launch(run_dir, num_processes=1)  # phases marked done: only loading, no training
    assert again["adapter_sha256"] == result["adapter_sha256"]
    assert all(p.get("cached") for p in again["phase_results"].values())
    assert (run_dir / "progress.jsonl").read_text() == logged  # not one training step ran


def test_a_killed_run_resumes_with_the_losses_of_an_uninterrupted_run(tmp_path, smollm2_dir, plan_rows):
    hp = _hp(dpo=False, max_steps=6, save_steps=2, dropout=0.05, curriculum=True)
    sft = plan_rows["sft"] * 2
    whole_dir, _ = prepare_run(tmp_path / "whole", "plan_generation", smollm2_dir, hp, sft, [], [])
    whole = launch(whole_dir, num_processes=1)["phase_results"]["sft"]["losses"]

    run_dir, _ = prepare_run(tmp_path / "killed", "plan_generation", smollm2_dir, hp, sft, [], [])
    proc = subprocess.Popen(
        training_command(run_dir, 1),
        cwd=run_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ckpt = run_dir / "sft" / "checkpoint-4"
    deadline = time.time() + 600
    while not (ckpt / "trainer_state.json").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # a crash: no clean shutdown
    proc.wait()
    assert not (run_dir / "result.json").exists()
    resumed = launch(run_dir, num_processes=1)["phase_results"]["sft"]
    assert resumed["resumed_from"].endswith("checkpoint-4")
    assert len(resumed["losses"]) == 6
    assert resumed["losses"] == pytest.approx(whole, rel=1e-3, abs=1e-4)


def test_a_failing_run_raises_with_its_output(tmp_path, smollm2_dir):
    run_dir, _ = prepare_run(
        tmp_path,
        "plan_generation",
        smollm2_dir,
        _hp(max_length=64),
        [
            {
                "prompt": json.dumps([{"role": "user", "content": "x " * 200}]),
                "completion": json.dumps([{"role": "assistant", "content": "y"}]),
            }
        ],
        [],
        [],
    )
    with pytest.raises(TrainingFailed, match="no trainable rows.*longer_than_max_length"):
        launch(run_dir, num_processes=1)


@pytest.mark.slow
def test_on_policy_distillation_phase_runs_from_a_same_tokenizer_teacher(tmp_path, smollm2_dir, plan_rows):
    hp = _hp(dpo=False, kd=True, kd_teacher="unused-here", max_steps=2, kd_max_new_tokens=16, kd_lr=1e-3)
    run_dir, spec = prepare_run(
        tmp_path, "plan_generation", smollm2_dir, hp, plan_rows["sft"][:2], [], [], kd_teacher_path=str(smollm2_dir)
    )
    result = launch(run_dir, num_processes=1)
    assert result["phases"] == ["sft", "kd"]
    kd = result["phase_results"]["kd"]
    assert kd["steps"] == 2 and all(l == l for l in kd["losses"])  # finite losses
    sft_adapter = (run_dir / "sft" / "final" / "adapter_model.safetensors").read_bytes()
    assert (Path(result["adapter_dir"]) / "adapter_model.safetensors").read_bytes() != sft_adapter


@pytest.mark.slow
def test_compiled_layers_train_to_the_same_losses_as_eager(trained, tmp_path, smollm2_dir, plan_rows):
    """`compile: on` (regional torch.compile with an activation memory budget, forced here on CPU) is an
    optimisation only: the same run computes the same SFT losses as the eager run of the fixture."""
    _, _, eager, _ = trained
    sft = plan_rows["sft"][:2] * 4
    run_dir, _ = prepare_run(
        tmp_path,
        "plan_generation",
        smollm2_dir,
        _hp(dpo=False, compile="on", activation_memory_budget=0.5),
        sft,
        plan_rows["sft"][2:],
        [],
    )
    result = launch(run_dir, num_processes=1)
    compiled = result["phase_results"]["sft"]
    assert compiled["compiled_layers"] == 30 and compiled["activation_memory_budget"] == 0.5  # SmolLM2: 30 layers
    assert eager["phase_results"]["sft"]["compiled_layers"] == 0
    assert compiled["losses"] == pytest.approx(eager["phase_results"]["sft"]["losses"], rel=2e-3)


def test_folded_lora_trains_to_the_same_losses_and_adapter_as_peft(trained, tmp_path, smollm2_dir, plan_rows):
    """`fold_lora: on` (LoRA-B folded into the base GEMM, forced here on CPU, fp32) is an optimisation only: the
    fixture's SFT run (fold off: auto on a CPU) computes the same losses, and the saved adapter loads onto the
    base and gives the same output as the unfolded run's; the B mirrors followed all 8 optimizer steps."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir, _, eager, _ = trained
    sft = plan_rows["sft"][:2] * 4
    hp = _hp(dpo=False, fold_lora="on")
    fold_dir, _ = prepare_run(tmp_path, "plan_generation", smollm2_dir, hp, sft, plan_rows["sft"][2:], [])
    folded = launch(fold_dir, num_processes=1)["phase_results"]["sft"]
    ref = eager["phase_results"]["sft"]
    assert folded["folded_lora_modules"] == 30 * 7 and ref["folded_lora_modules"] == 0  # SmolLM2: 30 layers
    assert folded["losses"] == pytest.approx(ref["losses"], rel=1e-3)
    assert folded["losses"][-1] < 0.7 * folded["losses"][0]
    ids = torch.tensor([[1, 42, 7, 300, 9, 12]])
    outs = []
    for d in (fold_dir / "sft" / "final", run_dir / "sft" / "final"):
        base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
        with torch.no_grad():
            outs.append(PeftModel.from_pretrained(base, str(d)).eval()(input_ids=ids).logits)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-3, atol=2e-3)


def test_packed_sft_trains_on_every_real_token_and_no_padding(tmp_path, smollm2_dir, plan_rows):
    """`packing: on` (forced here on CPU): the rows go packed, several to a batch, through TRL's padding-free
    collator; the trainer counts exactly the rows' tokens (nothing padded) and the loss falls."""
    from transformers import AutoTokenizer

    from distill_assets.training.data import tokenise_sft

    sft = plan_rows["sft"][:2] * 4
    hp = _hp(dpo=False, packing="on", max_steps=None, epochs=3, grad_accum=2)
    run_dir, _ = prepare_run(tmp_path, "plan_generation", smollm2_dir, hp, sft, plan_rows["sft"][2:], [])
    result = launch(run_dir, num_processes=1)
    s = result["phase_results"]["sft"]
    assert s["packing"] is True and s["attention"] == "distill_varlen"
    assert s["rows_per_packed_batch"] > 1 and s["packed_batches"] < len(sft)
    assert s["grad_accum"] == max(1, round(2 / s["rows_per_packed_batch"]))
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    lengths = [len(x) for x in tokenise_sft(sft, tok, reasoning_weight=0.5, plan_weight=1.0, max_length=2048).input_ids]
    assert s["tokens"] == 3 * sum(lengths)  # every real token, three epochs, no padding
    assert s["val_loss"] is not None and s["losses"][-1] < s["losses"][0]


def test_how_many_checkpoints_are_kept_does_not_change_the_run(tmp_path):
    """keep_checkpoints decides what stays on disk, not the weights: the same rows and settings with another
    value resume the same run (its cache and checkpoints), any weight-changing setting makes a new one."""
    rows = [{"task_id": "t", "prompt": "[]", "completion": "x", "difficulty": "easy", "source": "reference"}]
    key = lambda **kw: prepare_run(tmp_path, "relevance", "base-id", _hp(**kw), rows, [], [])[1]["run_key"]
    assert key(keep_checkpoints=2) == key(keep_checkpoints=5)
    assert key(keep_checkpoints=2) != key(save_steps=7) and key() != key(lr=1e-3)
    run_dir, spec = prepare_run(tmp_path, "relevance", "base-id", _hp(keep_checkpoints=5), rows, [], [])
    assert json.loads((run_dir / "spec.json").read_text())["hp"]["keep_checkpoints"] == 5  # what the trainer reads


def test_max_val_rows_caps_the_validation_rows_and_changes_the_run_only_when_it_cuts(tmp_path):
    """max_val_rows (the CPU demo's cap on the validation loss) writes only the first N held-out rows; a cap
    that cuts nothing is the same run as no cap, so runs made before the setting existed are reused."""
    row = lambda i: {"task_id": f"v{i}", "prompt": "[]", "completion": "x", "difficulty": "easy", "source": "reference"}
    train, val = [row("t")], [row(i) for i in range(5)]
    run = lambda **kw: prepare_run(tmp_path, "relevance", "base-id", _hp(**kw), train, val, [])
    (capped_dir, capped), (_, whole) = run(max_val_rows=2), run()
    assert [
        r["task_id"] for r in map(json.loads, (capped_dir / "data" / "sft_val.jsonl").read_text().splitlines())
    ] == [
        "v0",
        "v1",
    ]
    assert capped["run_key"] != whole["run_key"] and run(max_val_rows=5)[1]["run_key"] == whole["run_key"]

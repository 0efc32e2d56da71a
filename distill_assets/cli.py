"""`distill`: the command line. `distill demo` materializes every asset on the configured sources.

Runs go through the Dagster instance in $DAGSTER_HOME, so everything the demo
does shows up afterwards in the UI (`make ui`) with its metadata and lineage.
"""

import os
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from distill_assets.config import PROJECT_ROOT, ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)


POOL_LIMITS = {"gpu": 1, "teacher_api": 8}


def _ensure_home() -> Path:
    """$DAGSTER_HOME with the project's dagster.yaml and pool limits (idempotent)."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        for pool, limit in POOL_LIMITS.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)
    return home


@app.command()
def init_instance():
    """Create $DAGSTER_HOME (dagster.yaml, storage) and set the pool limits: gpu=1, teacher_api=8."""
    home = _ensure_home()
    console.print(f"DAGSTER_HOME={home}; pools: " + ", ".join(f"{k}={v}" for k, v in POOL_LIMITS.items()))


@app.command()
def check_config(path: str = typer.Argument(None, help="distill.yaml (default: $DISTILL_CONFIG or data/distill.yaml)")):
    """Validate distill.yaml and print what it configures."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2)
    t = Table("teacher", "model", "available")
    for te in cfg.teachers:
        ok, why = te.availability()
        t.add_row(te.name, te.model, "yes" if ok else why)
    console.print(t)
    console.print(f"repos: {', '.join(r.name for r in cfg.sources.repos) or 'none'}; "
                  f"external sources: {len(cfg.sources.external)}")


@app.command()
def demo(
    select: str = typer.Option("*", help="asset key glob to materialize (default: every asset)"),
):
    """Materialize every asset, in dependency order, for every partition that applies."""
    home = _ensure_home()
    try:
        cfg = load_config()
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2)
    from distill_assets.orchestrate import materialize_all

    console.print(f"DAGSTER_HOME={home}")
    started = time.time()
    results = materialize_all(cfg, select=select, log=lambda m: console.print(m, markup=False, highlight=False),
                              log_level="ERROR")
    t = Table("asset", "partitions", "ok", "failed", "seconds")
    failed = 0
    for r in results:
        failed += r.failed
        t.add_row(r.asset, str(r.partitions), str(r.ok), str(r.failed), f"{r.seconds:.1f}")
    console.print(t)
    console.print(f"done in {time.time() - started:.0f}s; open the UI with `make ui` to see metadata and lineage")
    if failed:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover
    sys.exit(app())

"""`distill`: the command line. `distill demo` materializes every asset on the configured sources.

Runs go through the Dagster instance in $DAGSTER_HOME, so everything the demo
does shows up afterwards in the UI (`make ui`) with its metadata and lineage.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
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


def _config_or_exit():
    try:
        return load_config()
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2)


@app.command()
def init_instance():
    """Create $DAGSTER_HOME (dagster.yaml, storage) and set the pool limits: gpu=1, teacher_api=8."""
    home = _ensure_home()
    console.print(f"DAGSTER_HOME={home}; pools: " + ", ".join(f"{k}={v}" for k, v in POOL_LIMITS.items()))


@app.command()
def check_config(
    path: str = typer.Argument(None, help="distill.yaml (default: $DISTILL_CONFIG or data/distill.yaml)"),
    timeout: float = typer.Option(10.0, "--timeout", help="seconds to wait for a remote repository (git ls-remote)"),
):
    """Validate distill.yaml, check every source (path, git repository, branch, commits; remote URLs answer)
    and print what it configures. Exit code 2 when the file or any source is wrong."""
    from distill_assets.mining.source_check import check_sources

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2)
    t = Table("teacher", "model", "available")
    for te in cfg.teachers:
        ok, why = te.availability()
        t.add_row(te.name, te.model, "yes" if ok else why)
    console.print(t)
    console.print(
        f"repos: {', '.join(r.name for r in cfg.sources.repos) or 'none'}; "
        f"external sources: {len(cfg.sources.external)}",
        soft_wrap=True,
    )
    problems = check_sources(cfg.sources, cfg.resolved_cache_dir(), timeout_s=timeout)
    for problem in problems:  # one line each, never wrapped
        console.print(f"[red]source error:[/red] {escape(problem.message)}", soft_wrap=True)
    if problems:
        raise typer.Exit(2)


@app.command()
def demo(
    select: str = typer.Option(
        "*",
        help="what to materialize: an asset group (`sources`, `group:sources`) or an "
        "asset key glob (`mined_*`); default: every asset",
    ),
):
    """Materialize every asset, in dependency order, for every partition that applies.

    Each failure is one line (asset, partition, reason); stack traces stay in the run's event log (the UI)."""
    home = _ensure_home()
    cfg = _config_or_exit()
    from distill_assets.orchestrate import SelectionError, materialize_all

    console.print(f"DAGSTER_HOME={home}", soft_wrap=True)
    started = time.time()
    try:
        results = materialize_all(
            cfg,
            select=select,
            log_level="CRITICAL",
            log=lambda m: console.print(m, markup=False, highlight=False, soft_wrap=True),
        )
    except SelectionError as exc:
        console.print(f"[red]error:[/red] --select {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2)
    t = Table("asset", "partitions", "ok", "failed", "seconds")
    failed = 0
    for r in results:
        failed += r.failed
        t.add_row(r.asset, str(r.partitions), str(r.ok), str(r.failed), f"{r.seconds:.1f}")
    console.print(t)
    console.print(f"done in {time.time() - started:.0f}s; open the UI with `make ui` to see metadata and lineage")
    if failed:
        raise typer.Exit(1)


@app.command()
def learn(
    source: str = typer.Argument(..., help="the repository to learn from: a git bundle, a local repository or a URL"),
    transfer: str = typer.Option(
        None, "--transfer", help="also evaluate the adapters on this repository's held-out tasks"
    ),
    profile: Path = typer.Option(None, "--profile", help="the learning profile (default: data/learn.yaml)"),
    fractions: str = typer.Option(
        "1.0",
        "--fractions",
        help="shares of the training rows to train at, one "
        "training each (e.g. 0.25,0.5,1.0; the largest is the headline)",
    ),
    checkpoints: bool = typer.Option(
        True,
        "--checkpoints/--no-checkpoints",
        help="also evaluate the headline training's intermediate checkpoints (a learning curve from one training)",
    ),
    stages: str = typer.Option("relevance,symbol_selection,plan_generation", "--stages"),
    work: Path = typer.Option(None, "--work", help="folder of the run's Dagster homes (default: $DAGSTER_HOME/learn)"),
    out: Path = typer.Option(None, "--out", help="write the markdown report here (default: WORK/student_gain.md)"),
):
    """Does the student learn? Train stage adapters on a real repository's history with the gold patches as
    the teacher, at several shares of the training rows, and compare each with the untrained base on the
    held-out (latest) tasks: per stage and metric, means, intervals and the paired gain."""
    from distill_assets.evaluation.learning import gain_table, render
    from distill_assets.learning import PROFILE, LearnError
    from distill_assets.learning import learn as run_learn

    home = _ensure_home()
    work = (work or home / "learn").resolve()
    keys = tuple(s.strip() for s in stages.split(",") if s.strip())
    shares = tuple(float(f) for f in fractions.split(","))
    started = time.time()
    try:
        res = run_learn(
            source,
            work,
            profile=profile or PROFILE,
            stages=keys,
            fractions=shares,
            transfer=transfer,
            checkpoints=checkpoints,
            log=lambda m: console.print(m, markup=False, highlight=False, soft_wrap=True),
        )
    except (LearnError, ConfigError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1)
    table = gain_table(res.runs)
    cmd = "distill learn " + " ".join(sys.argv[2:])
    header = (
        f"# Student gain: {res.headline}\n\nCommand: `{cmd}`; profile `{(profile or PROFILE).name}`; "
        f"training rows at 100 %: {res.train_rows}; wall time {time.time() - started:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in res.seconds.items())})."
    )
    md = render(table, res.headline, res.curve, res.transfer, header, res.skipped)
    out = out or work / "student_gain.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    console.print(md, markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {out}")


@app.command()
def run_task(
    task: str = typer.Argument(..., help="what to change, in words"),
    repo: Path = typer.Option(..., "--repo", help="a clean git repository (its HEAD is read)"),
    out: Path = typer.Option(None, "--out", help="write the diff here (default: REPO/.. /distill-<run>.diff)"),
    log_url: str = typer.Option(
        None, "--log-url", help="production log store URL (default: router.log_url, else sqlite under $DAGSTER_HOME)"
    ),
    tests: bool = typer.Option(
        True,
        "--tests/--no-tests",
        help="run the repository's tests on the diff in the "
        "sandbox when it applies (commands: --test-cmd, else sandbox.test_commands[repo name])",
    ),
    test_cmd: list[str] = typer.Option(None, "--test-cmd", help="a shell command that runs the tests (repeatable)"),
):
    """Run stages 1-5 on a repository with the exported stage adapters; print the plan, write the diff, run
    the repository's tests on it in the sandbox and log the outcome."""
    import json as _json

    from distill_assets.router.engine import RouterError
    from distill_assets.router.logstore import LogStore, default_url
    from distill_assets.router.pipeline import adapters_from_tables, route_task

    home = _ensure_home()
    cfg = _config_or_exit()
    adapters = adapters_from_tables(home / "storage" / "tables", cfg.resolved_cache_dir() / "promotions" / "live.json")
    for a in adapters.values():  # what the gate decided to serve
        console.print(
            f"{a.stage}: "
            + (f"adapter {a.sha256[:12]}" if a.adapter_gguf else "base student (the gate promoted no adapter)"),
            soft_wrap=True,
        )
    commands = (list(test_cmd or []) or cfg.sandbox.test_commands.get(Path(repo).resolve().name, [])) if tests else []
    if tests and not commands:  # no commands: the repository's own runner in a built test environment
        from distill_assets.environments.build import environment_cache
        from distill_assets.environments.selection import repo_test_plan
        from distill_assets.mining.miner import FileClassifier

        with console.status("preparing the repository's test environment"):
            head = subprocess.run(
                ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
            ).stdout.strip()
            plan, why = repo_test_plan(
                str(Path(repo).resolve()), head, environment_cache(cfg), FileClassifier(cfg.mining).is_test
            )
        if plan is None:
            console.print(f"[yellow]tests:[/yellow] {why}")
        else:
            commands = plan
            console.print(f"tests: {why} in the repository's test environment")
    log = LogStore(log_url or cfg.router.log_url or default_url(home))
    started = time.time()
    try:
        with console.status("loading the model and adapters") as status:

            def progress(stage: str, msg: str) -> None:
                status.update(f"stage {stage}: {msg}")
                if msg != "running":
                    console.print(f"  {stage}: {msg}")

            res = route_task(repo, task, adapters, cfg, log=log, progress=progress, test_commands=commands)
    except RouterError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    finally:
        log.close()
    console.print(f"candidates: {', '.join(res.candidates)}")
    if res.plan_json:
        print(_json.dumps(_json.loads(res.plan_json), indent=2))
        if res.plan_repairs:
            console.print(
                "[yellow]plan repaired:[/yellow] " + ", ".join(f"{k}={v}" for k, v in res.plan_repairs.items())
            )
        if res.plan_violations:
            console.print(f"[yellow]plan violations:[/yellow] {', '.join(res.plan_violations)}")
    else:
        console.print(f"[yellow]no plan:[/yellow] {res.errors.get('plan_generation')}")
    target = out or Path(repo).resolve().parent / f"distill-{res.run_id[:8]}.diff"
    if res.diff:
        target.write_text(res.diff if res.diff.endswith("\n") else res.diff + "\n")
        console.print(
            f"diff written to {target}; git apply --check: "
            + (
                "[green]applies[/green]"
                if res.diff_applied
                else f"[red]does not apply[/red] ({res.apply_error.strip()[:200]})"
            )
        )
    if res.tests is not None:
        colour = "green" if res.tests_passed else "red"
        console.print(
            f"tests: [{colour}]{res.tests.status}[/{colour}] ({res.tests.pass_rate:.0%} of {len(res.tests.selected)})"
        )
    elif res.diff_applied and not commands:
        console.print(
            "tests: not run (no --test-cmd and no sandbox.test_commands for this repository); report "
            f"later with `distill report-outcome {res.run_id} --tests-passed|--tests-failed`"
        )
    console.print(f"run {res.run_id} logged; {time.time() - started:.0f}s")


@app.command()
def report_outcome(
    run_id: str = typer.Argument(..., help="the run id printed by run-task"),
    tests_passed: bool = typer.Option(..., "--tests-passed/--tests-failed", help="did the change pass the tests?"),
    note: str = typer.Option(None, "--note", help="free text kept with the outcome"),
    log_url: str = typer.Option(None, "--log-url", help="production log store URL (as for run-task)"),
):
    """Record a routed task's later outcome (tests run elsewhere, a reviewer's verdict) in the log store."""
    import json as _json

    from distill_assets.router.logstore import LogStore, default_url

    home = _ensure_home()
    cfg = _config_or_exit()
    log = LogStore(log_url or cfg.router.log_url or default_url(home))
    try:
        if not log.has_run(run_id):
            console.print(f"[red]error:[/red] no routed run {run_id!r} in {log.url}")
            raise typer.Exit(2)
        log.record_outcome(
            run_id, tests_passed=tests_passed, detail=_json.dumps({"reported": True, "note": note}) if note else None
        )
    finally:
        log.close()
    console.print(f"run {run_id}: tests_passed={tests_passed} recorded")


def main() -> None:  # pragma: no cover
    sys.exit(app())

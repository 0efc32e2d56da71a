"""Sandbox overhead: the same test command on the same snapshot, bare vs bwrap vs Docker, same run.

    python bench/sandbox_overhead.py [--repeat 7] [--command "python3 -m unittest discover -s tests -t . -v"]
    python bench/sandbox_overhead.py --env-repo REPO --command "python -m pytest -q -p no:cacheprovider tests/x.py"

Uses the embedded demo repository at HEAD, or (``--env-repo``) a real repository at HEAD in its built test
environment (the venv and interpreter mounted read-only, as test_selections runs it; bare runs the same venv).
Prints the median time of each and the bwrap overhead against the goal: bwrap <= 1.2 x bare + 100 ms.
Docker is reported.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill_assets.config import load_config  # noqa: E402
from distill_assets.mining.miner import open_repository  # noqa: E402
from distill_assets.sandbox import Limits, SandboxUnavailable, get_backend  # noqa: E402
from distill_assets.sandbox.backends import WORKDIR  # noqa: E402
from distill_assets.sandbox.runner import materialize  # noqa: E402


def timed(fn, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--command", default="python3 -m unittest discover -s tests -t . -v")
    ap.add_argument("--env-repo", type=Path, default=None, help="a real repository, run in its test environment")
    ap.add_argument(
        "--env-cache", type=Path, default=Path(__file__).resolve().parent / "_work" / "envs" / "environments"
    )
    args = ap.parse_args()
    cfg = load_config()
    env_vars: dict[str, str] = {}
    mounts: list[str] = []
    if args.env_repo is not None:
        from distill_assets.config import RepoSource
        from distill_assets.environments.build import EnvironmentCache

        source = RepoSource(name=args.env_repo.resolve().name, path=args.env_repo.resolve())
        tests = [a for a in args.command.split() if a.endswith((".py", ".js", ".ts"))]
        env = EnvironmentCache(args.env_cache).get(str(args.env_repo.resolve()), "HEAD", tests)
        if env.status != "ready":
            print(f"environment {env.key}: {env.status}: {env.detail}")
            return 1
        env_vars, mounts = env.sandbox()
        print(
            f"environment {env.key} ({env.language}, {env.runner}, {'cache hit' if env.cache_hit else 'built'}); "
            f"mounts {mounts}"
        )
    else:
        source = cfg.sources.repos[0]
    repo = open_repository(source, cfg.resolved_cache_dir())
    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.chmod(tmp, 0o711)
        work = Path(tmp) / "work"
        work.mkdir()
        materialize(repo.git_dir, "HEAD", work)
        limits = Limits(timeout_s=120)

        def bare():
            # the sandbox's environment, so the same python3 runs in both
            env = {
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "HOME": tmp,
                "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1",
                **{k: v.replace(WORKDIR, str(work)) for k, v in env_vars.items()},
            }
            r = subprocess.run(["/bin/sh", "-c", args.command], cwd=work, capture_output=True, env=env)
            assert r.returncode == 0, r.stderr[-500:]

        bare()  # warm-up (and a failing command says so before anything is timed)
        results = {"bare": timed(bare, args.repeat)}
        for name in ("bwrap", "docker"):
            try:
                backend = get_backend(name, cfg.sandbox.docker_image if name == "docker" else None)
            except SandboxUnavailable as exc:
                print(f"{name}: unavailable ({exc})")
                continue

            def run(backend=backend):
                ex = backend.run(work, args.command, limits, mounts=mounts, env=env_vars)
                assert ex.returncode == 0, ex.stderr[-500:]

            run()  # warm-up
            results[name] = timed(run, args.repeat)
    b = results["bare"]
    print(f"command : {args.command}  (median of {args.repeat})")
    for name, t in results.items():
        print(f"{name:7s}: {t * 1000:8.1f} ms   ratio {t / b:5.2f}x   overhead {(t - b) * 1000:7.1f} ms")
    if "bwrap" in results:
        limit = 1.2 * b + 0.1
        print(
            f"goal    : bwrap <= 1.2 x bare + 100 ms = {limit * 1000:.1f} ms -> "
            f"{'OK' if results['bwrap'] <= limit else 'OVER GOAL'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

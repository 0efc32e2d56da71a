"""Sandbox overhead: the same test command on the same snapshot, bare vs bwrap vs Docker, same run.

    python bench/sandbox_overhead.py [--repeat 7] [--command "python3 -m unittest discover -s tests -t . -v"]

Uses the embedded demo repository at HEAD. Prints the median time of each and the
bwrap overhead against the goal: bwrap <= 1.2 x bare + 100 ms. Docker is reported.
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
    args = ap.parse_args()
    cfg = load_config()
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
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": tmp, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
            r = subprocess.run(["/bin/sh", "-c", args.command], cwd=work, capture_output=True, env=env)
            assert r.returncode == 0, r.stderr[-500:]

        results = {"bare": timed(bare, args.repeat)}
        for name in ("bwrap", "docker"):
            try:
                backend = get_backend(name, cfg.sandbox.docker_image if name == "docker" else None)
            except SandboxUnavailable as exc:
                print(f"{name}: unavailable ({exc})")
                continue

            def run(backend=backend):
                ex = backend.run(work, args.command, limits)
                assert ex.returncode == 0, ex.stderr[-500:]

            run()  # warm-up
            results[name] = timed(run, args.repeat)
    b = results["bare"]
    print(f"command : {args.command}  (median of {args.repeat})")
    for name, t in results.items():
        print(f"{name:7s}: {t * 1000:8.1f} ms   ratio {t / b:5.2f}x   overhead {(t - b) * 1000:7.1f} ms")
    if "bwrap" in results:
        limit = 1.2 * b + 0.1
        print(f"goal    : bwrap <= 1.2 x bare + 100 ms = {limit * 1000:.1f} ms -> "
              f"{'OK' if results['bwrap'] <= limit else 'OVER GOAL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

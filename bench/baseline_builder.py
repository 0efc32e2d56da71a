"""The reference-plan builder of an earlier commit, loaded from git, to measure against in the same run."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_reference_builder(rev: str, work: Path):
    """``build_reference_plans`` as it was at ``rev`` (its module loaded under another name)."""
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:distill_assets/plans/reference.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"reference_at_{rev}.py"
    path.write_text(src)
    name = f"reference_at_{rev}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod.build_reference_plans

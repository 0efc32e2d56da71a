"""JavaScript/TypeScript test environments: ``node_modules`` from the package manifest, installed once per lock file.

``npm ci`` when a lock file is there (``npm install`` when it is not, or when the lock no longer matches
``package.json``: recorded as a fallback). Without a usable lock, versions are resolved as of the commit's date
(``npm install --before``): an old commit's ``"sinon": ">= 1.14.1"`` gets the sinon of its time, not today's
(then, if that fails, without the date: recorded), and open ranges (``>= 1.14.1``) are capped at the major
version they name (``^1.14.1``), the versions the authors tested with. Install scripts never run (``--ignore-scripts``): this is
the host, not the sandbox.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from distill_assets.environments.python import _run


@dataclass
class NodeBuild:
    ok: bool
    why: str = ""
    fallbacks: list[str] = field(default_factory=list)


_OPEN = re.compile(r"^\s*>=?\s*v?(\d+(?:\.\d+){0,2})\s*$")


def cap_open_ranges(package_json: Path) -> list[str]:
    """Rewrite ``>= X.Y.Z`` dependency ranges (X >= 1) of a package.json to ``^X.Y.Z``; the names rewritten."""
    try:
        pkg = json.loads(package_json.read_text())
    except (OSError, ValueError):
        return []
    changed = []
    for section in ("dependencies", "devDependencies"):
        deps = pkg.get(section)
        if not isinstance(deps, dict):
            continue
        for name, rng in deps.items():
            m = _OPEN.match(str(rng))
            if m and int(m.group(1).split(".")[0]) >= 1:  # ^0.x is narrower than any author meant
                deps[name] = "^" + m.group(1)
                changed.append(f"{name} {rng.strip()} -> ^{m.group(1)}")
    if changed:
        package_json.write_text(json.dumps(pkg, indent=2))
    return changed


def build_node_env(
    dest: Path, tree: Path, *, cache_dir: Path, log: list[str], commit_date: str | None = None
) -> NodeBuild:
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        return NodeBuild(False, "node and npm are not installed (`make setup` installs nodejs)")
    work = dest / "node"
    work.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json", "npm-shrinkwrap.json", ".npmrc"):
        if (tree / name).is_file() and name != ".npmrc":
            shutil.copy2(tree / name, work / name)
    if not (work / "package.json").is_file():
        return NodeBuild(False, "no package.json")
    env = {
        **os.environ,
        "npm_config_cache": str(cache_dir),
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
        "npm_config_loglevel": "error",
    }
    common = ["--ignore-scripts", "--no-audit", "--no-fund", "--include=dev"]
    fallbacks: list[str] = []
    locked = (work / "package-lock.json").is_file() or (work / "npm-shrinkwrap.json").is_file()
    if locked and _run([npm, "ci", *common], log, cwd=work, env=env):
        return NodeBuild(True)
    if locked:
        fallbacks.append(
            "npm ci failed (the lock file does not match package.json or cannot be installed): npm install instead"
        )
    elif (tree / "yarn.lock").is_file() or (tree / "pnpm-lock.yaml").is_file():
        fallbacks.append("only a yarn/pnpm lock file: npm install resolves the versions itself")
    else:
        fallbacks.append("no lock file: npm install resolves the versions")
    shutil.rmtree(work / "node_modules", ignore_errors=True)
    capped = cap_open_ranges(work / "package.json")
    if capped:
        fallbacks.append("open ranges capped at their major version: " + ", ".join(capped))
    install = [npm, "install", *common, "--no-package-lock"]
    if commit_date:
        if _run(install + [f"--before={commit_date}"], log, cwd=work, env=env):
            return NodeBuild(True, fallbacks=fallbacks + [f"versions as published on {commit_date[:10]}"])
        fallbacks.append(f"npm install --before={commit_date[:10]} failed: versions of today instead")
        shutil.rmtree(work / "node_modules", ignore_errors=True)
    if _run(install, log, cwd=work, env=env):
        return NodeBuild(True, fallbacks=fallbacks)
    return NodeBuild(False, "npm install failed", fallbacks)

"""Python test environments: an interpreter that fits the commit, and a virtual environment (made by uv) with the
repository's dependencies and test dependencies, but not the repository itself (its code comes from the sandbox's
workspace, on ``PYTHONPATH``).

Where the dependencies come from, all of what applies:
* ``uv.lock``: ``uv export --frozen`` of the project's dependencies and its test groups/extras (pins honoured);
* ``pyproject.toml``: ``[project].dependencies``, test-like ``optional-dependencies`` and ``dependency-groups``;
* requirement files for tests or development (``requirements/tests.txt``, ``test-requirements.txt``, ...);
* ``setup.py`` / ``setup.cfg`` without a ``[project]`` table: the project is installed from its tree with its
  test extras (so its build backend reports ``install_requires``), then uninstalled;
* ``tox.ini``'s ``[testenv] deps``;
* the runner itself (pytest) when nothing above brings it.

When pinned versions cannot be installed any more (yanked, no wheel for this Python), the install is retried
without the pins, then package by package; every such fallback is recorded.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from distill_assets.sandbox.backends import WORKDIR

TEST_WORDS = re.compile(r"^(test|tests|testing|test-?deps)$", re.I)
DEV_WORDS = re.compile(r"^(dev|develop|development)$", re.I)  # only where nothing is named for tests
_REQ_FILE = re.compile(
    r"(^|/)([^/]*(test|dev)[^/]*requirements[^/]*|requirements[^/]*(test|dev)[^/]*|"
    r"requirements/(tests?|testing|dev)[^/]*)\.(txt|in)$",
    re.I,
)


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: tuple[int, int, int]
    prefix: str  # sys.base_prefix: what the sandbox must see (mounted read-only at the same path)

    @property
    def short(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


def _candidates(extra: tuple[str, ...]) -> list[str]:
    home = os.path.expanduser("~")
    # system interpreters first: they live under /usr, which every sandbox already shows
    pats = [
        "/usr/bin/python3.[0-9]*",
        "/usr/local/bin/python3.[0-9]*",
        "/opt/python*/bin/python3",
        "/opt/python/*/bin/python3",
        f"{home}/.pyenv/versions/*/bin/python3",
    ]
    found = [p for pat in pats for p in sorted(glob.glob(pat)) if re.search(r"python3(\.\d+)?$", p)]
    return list(dict.fromkeys(list(extra) + found))


@functools.lru_cache(maxsize=8)
def discover_interpreters(extra: tuple[str, ...] = ()) -> tuple[Interpreter, ...]:
    """Python 3.8+ interpreters on this machine (``sandbox.pythons`` first), one per version (the first found)."""
    out: dict[tuple[int, int], Interpreter] = {}
    for path in _candidates(extra):
        try:
            proc = subprocess.run(
                [path, "-c", "import sys,json;print(json.dumps([list(sys.version_info[:3]), sys.base_prefix]))"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            ver, prefix = json.loads(proc.stdout)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            continue
        v = tuple(ver)
        if v >= (3, 8, 0) and (v[0], v[1]) not in out:
            out[(v[0], v[1])] = Interpreter(os.path.realpath(path), v, prefix)  # type: ignore[arg-type]
    return tuple(sorted(out.values(), key=lambda i: i.version))


def _toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(errors="replace")) if path.is_file() else {}
    except tomllib.TOMLDecodeError:
        return {}


def python_constraints(tree: Path) -> tuple[SpecifierSet | None, list[tuple[int, int]]]:
    """(requires-python, the 3.x versions the classifiers list) of the project at ``tree``."""
    spec = None
    texts = []
    py = _toml(tree / "pyproject.toml")
    raw = (py.get("project") or {}).get("requires-python")
    for f in ("setup.py", "setup.cfg"):
        if (tree / f).is_file():
            texts.append((tree / f).read_text(errors="replace"))
    if raw is None:
        m = re.search(r"python_requires\s*[=:]\s*['\"]?([^'\"\n]+)", "\n".join(texts))
        raw = m.group(1).strip() if m else None
    if raw:
        try:
            spec = SpecifierSet(raw.replace(" ", ""))
        except InvalidSpecifier:
            spec = None
    classifiers = list((py.get("project") or {}).get("classifiers") or [])
    joined = "\n".join(classifiers + texts)
    listed = sorted({(3, int(m)) for m in re.findall(r"Programming Language :: Python :: 3\.(\d+)", joined)})
    return spec, listed


# first release of each CPython minor version: for a commit that names no versions, the newest Python of its day
RELEASED = {
    (3, 8): "2019-10-14",
    (3, 9): "2020-10-05",
    (3, 10): "2021-10-04",
    (3, 11): "2022-10-24",
    (3, 12): "2023-10-02",
    (3, 13): "2024-10-07",
    (3, 14): "2025-10-07",
}


def choose_interpreter(
    interps: tuple[Interpreter, ...], tree: Path, commit_date: str | None = None
) -> tuple[Interpreter | None, str]:
    """The newest interpreter that requires-python admits and the classifiers list; else the newest one released
    before the commit (``commit_date``, ISO); code older than every interpreter here runs on the oldest one."""
    spec, listed = python_constraints(tree)
    ok = [i for i in interps if spec is None or Version(".".join(map(str, i.version))) in spec]
    if not ok:
        return None, f"no interpreter here satisfies requires-python {spec} (have {[i.short for i in interps]})"
    if listed:
        fitting = [i for i in ok if (i.version[0], i.version[1]) in listed]
        if fitting:
            return fitting[-1], f"newest listed in the classifiers ({[f'3.{m}' for _, m in listed]})"
        older = [i for i in ok if (i.version[0], i.version[1]) <= listed[-1]]
        if older:
            return older[-1], f"newest not newer than the classifiers' {listed[-1][0]}.{listed[-1][1]}"
        return ok[0], f"the classifiers list only {listed[-1][0]}.{listed[-1][1]} and older: the oldest here"
    if commit_date:
        then = [i for i in ok if RELEASED.get((i.version[0], i.version[1]), "9999") <= commit_date[:10]]
        if then:
            return then[-1], f"newest released before the commit ({commit_date[:10]})"
        return ok[0], f"the commit ({commit_date[:10]}) is older than every interpreter here: the oldest"
    return ok[-1], "newest that requires-python admits" if spec else "newest (no requires-python)"


# --------------------------------------------------------------------------- requirements


@dataclass
class Requirements:
    lines: list[str] = field(default_factory=list)  # requirement strings
    files: list[str] = field(default_factory=list)  # requirement files (relative to the tree)
    install_project: bool = False  # setup.py-only: install it with test extras, then remove it
    sources: list[str] = field(default_factory=list)  # where they came from (for the record)


def _test_like(names) -> list[str]:
    names = [str(n) for n in names]
    return [n for n in names if TEST_WORDS.match(n)] or [n for n in names if DEV_WORDS.match(n)]


def _group(groups: dict, name: str, seen: set[str] | None = None) -> list[str]:
    seen = seen or set()
    if name in seen:
        return []
    seen.add(name)
    out = []
    for item in groups.get(name) or []:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict) and "include-group" in item:
            out.extend(_group(groups, item["include-group"], seen))
    return out


def gather_requirements(tree: Path, uv: str, env: dict[str, str], log: list[str]) -> Requirements:
    req = Requirements()
    py = _toml(tree / "pyproject.toml")
    project = py.get("project") or {}
    groups = py.get("dependency-groups") or {}
    extras = project.get("optional-dependencies") or {}
    test_groups, test_extras = _test_like(groups), _test_like(extras)
    if (tree / "uv.lock").is_file() and project:
        args = [uv, "export", "--frozen", "--no-emit-project", "--no-hashes", "--no-header", "--no-default-groups"]
        for g in test_groups:
            args += ["--group", g]
        for e in test_extras:
            args += ["--extra", e]
        proc = subprocess.run(args, cwd=tree, capture_output=True, text=True, env=env, timeout=300)
        if proc.returncode == 0:
            lines = [
                ln.strip() for ln in proc.stdout.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", "-e"))
            ]
            req.lines += [ln for ln in lines if not ln.startswith(".")]
            req.sources.append(f"uv.lock (groups {test_groups}, extras {test_extras})")
            return _finish(req, tree)
        log.append(f"uv export failed, reading pyproject.toml instead: {proc.stderr.strip()[-400:]}")
    if project:
        req.lines += list(project.get("dependencies") or [])
        for e in test_extras:
            req.lines += list(extras.get(e) or [])
        for g in test_groups:
            req.lines += _group(groups, g)
        req.sources.append(f"pyproject.toml (extras {test_extras}, groups {test_groups})")
    near = [p for p in tree.iterdir() if p.is_file()] + (
        [p for p in (tree / "requirements").iterdir() if p.is_file()] if (tree / "requirements").is_dir() else []
    )
    files = sorted(p.relative_to(tree).as_posix() for p in near if _REQ_FILE.search(p.relative_to(tree).as_posix()))
    files = [f for f in files if not f.endswith(".in") or f[:-3] + ".txt" not in files]  # pip-compile: the .txt
    files = [f for f in files if re.search(r"test", f, re.I)] or files  # development files only without test ones
    if files:
        req.files += files
        req.sources.append(f"requirement files {files}")
    if not project and ((tree / "setup.py").is_file() or (tree / "setup.cfg").is_file()):
        req.install_project = True
        req.sources.append("setup.py/setup.cfg (the project installed with its test extras, then removed)")
    tox = tree / "tox.ini"
    if tox.is_file():
        deps = re.search(
            r"^\[testenv\][^\[]*?^deps\s*=\s*((?:.*\n(?:[ \t]+.*\n)*))", tox.read_text(errors="replace"), re.M
        )
        if deps:
            for ln in deps.group(1).splitlines():
                ln = ln.strip()
                if ln and not ln.startswith(("-", "#", "{", ".")) and "{" not in ln:
                    req.lines.append(ln)
            req.sources.append("tox.ini [testenv] deps")
    return _finish(req, tree)


def _finish(req: Requirements, tree: Path) -> Requirements:
    clean = []
    for ln in req.lines:
        ln = ln.split(" #", 1)[0].strip()
        try:
            r = Requirement(ln)
        except InvalidRequirement:
            continue
        if r.url and r.url.startswith("file:"):
            continue
        clean.append(str(r))
    req.lines = list(dict.fromkeys(clean))
    return req


def _unpinned(line: str) -> str:
    try:
        r = Requirement(line)
    except InvalidRequirement:
        return line
    extras = f"[{','.join(sorted(r.extras))}]" if r.extras else ""
    marker = f"; {r.marker}" if r.marker else ""
    return f"{r.name}{extras}{marker}"


def _names(lines: list[str]) -> set[str]:
    out = set()
    for ln in lines:
        try:
            out.add(Requirement(ln).name.lower().replace("_", "-"))
        except InvalidRequirement:
            pass
    return out


def _read_req_file(path: Path, seen: set[Path] | None = None) -> list[str]:
    """Requirement lines of a file, following ``-r`` includes; options and local paths left out."""
    seen = seen or set()
    if path in seen or not path.is_file():
        return []
    seen.add(path)
    out = []
    for ln in path.read_text(errors="replace").splitlines():
        ln = ln.split(" #", 1)[0].strip()
        if not ln or ln.startswith("#"):
            continue
        if ln.startswith(("-r ", "--requirement ", "-c ", "--constraint ")):
            out += _read_req_file(path.parent / ln.split(None, 1)[1], seen)
            continue
        if ln.startswith(("-", ".", "/")):
            continue
        out.append(ln)
    return out


# --------------------------------------------------------------------------- build


@dataclass
class PythonBuild:
    ok: bool
    interpreter: Interpreter | None
    why: str = ""
    fallbacks: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def _run(args: list[str], log: list[str], cwd: Path | None = None, env: dict | None = None, timeout: int = 900) -> bool:
    log.append("$ " + " ".join(args))
    try:
        proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        log.append(f"timed out after {timeout} s")
        return False
    out = (proc.stdout + proc.stderr).strip()
    if out:
        log.append(out[-3000:])
    return proc.returncode == 0


def build_python_env(
    dest: Path,
    tree: Path,
    runner: str | None,
    *,
    uv: str,
    cache_dir: Path,
    interpreters: tuple[Interpreter, ...],
    log: list[str],
    commit_date: str | None = None,
    interpreter_store: Path | None = None,
) -> PythonBuild:
    """A venv at ``dest/venv`` for the project at ``tree`` (a plain checkout of the base commit)."""
    interp, why = choose_interpreter(interpreters, tree, commit_date)
    if interp is None:
        return PythonBuild(False, None, why)
    if interpreter_store is not None:
        interp = sandbox_readable(interp, interpreter_store)
    log.append(f"interpreter {interp.path} ({interp.short}): {why}")
    env = {
        **os.environ,
        "UV_CACHE_DIR": str(cache_dir),
        "UV_NO_CONFIG": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "VIRTUAL_ENV": str(dest / "venv"),
    }
    env.pop("PYTHONPATH", None)
    if not _run([uv, "venv", "--quiet", "--python", interp.path, str(dest / "venv")], log, env=env):
        return PythonBuild(False, interp, "uv venv failed")
    py = str(dest / "venv" / "bin" / "python")
    req = gather_requirements(tree, uv, env, log)
    lines = list(req.lines)
    for f in req.files:
        lines += _read_req_file(tree / f)
    if runner in ("pytest", "unittest") and "pytest" not in _names(lines):
        lines.append("pytest")
    fallbacks: list[str] = []
    install = [uv, "pip", "install", "--quiet", "--python", py]
    if req.install_project:
        if not _run(install + [f"{tree}[test,tests,testing]"], log, cwd=tree, env=env):
            fallbacks.append("the project could not be installed to read its dependencies (setup.py)")
        else:
            name = _project_name(tree, py, log)
            if name:
                _run([uv, "pip", "uninstall", "--quiet", "--python", py, name], log, env=env)
    if lines:
        reqs = dest / "requirements.txt"
        reqs.write_text("\n".join(lines) + "\n")
        if not _run(install + ["-r", str(reqs)], log, cwd=tree, env=env):
            fallbacks.append("pinned versions could not be installed: installed without the pins")
            unpinned = list(dict.fromkeys(_unpinned(ln) for ln in lines))
            reqs.write_text("\n".join(unpinned) + "\n")
            if not _run(install + ["-r", str(reqs)], log, cwd=tree, env=env):
                failed = [ln for ln in unpinned if not _run(install + [ln], log, cwd=tree, env=env)]
                fallbacks.append(f"installed one by one; these could not be installed: {failed}")
    if runner in ("pytest", "unittest") and not _run([py, "-c", "import pytest"], log, env=env):
        return PythonBuild(False, interp, "pytest is not importable in the environment", fallbacks, req.sources)
    return PythonBuild(True, interp, "", fallbacks, req.sources)


def _project_name(tree: Path, py: str, log: list[str]) -> str | None:
    m = re.search(
        r"name\s*=\s*['\"]([^'\"]+)['\"]",
        "\n".join((tree / f).read_text(errors="replace") for f in ("setup.py", "setup.cfg") if (tree / f).is_file()),
    )
    return m.group(1) if m else None


def python_sandbox_env(venv: Path, interp_prefix: str) -> tuple[dict[str, str], list[str]]:
    """Environment variables and read-only mounts a sandboxed run of this environment needs."""
    env = {
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": f"{WORKDIR}/src:{WORKDIR}",
        "PYTHONNOUSERSITE": "1",
    }
    if not interp_prefix.startswith("/usr"):
        env["LD_LIBRARY_PATH"] = f"{interp_prefix}/lib"  # a copied interpreter's libpython (its RUNPATH is elsewhere)
    return env, sorted({str(venv.parent), interp_prefix})


def _world_readable(path: str) -> bool:
    """Whether a user with no rights of its own (the sandbox's uid 65534) can reach and read ``path``."""
    p = Path(path)
    for parent in [*reversed(p.parents), p]:
        try:
            mode = parent.stat().st_mode
        except OSError:
            return False
        if parent != p and not mode & 0o001:
            return False
    return bool(p.stat().st_mode & 0o004)


def sandbox_readable(interp: Interpreter, store: Path) -> Interpreter:
    """The interpreter itself when the sandbox user can read it; else a world-readable copy of its installation
    (without its test suite and site-packages) under ``store``, made once per interpreter."""
    if _world_readable(interp.path) and _world_readable(interp.prefix):
        return interp
    import hashlib

    dest = store / f"{interp.short}-{hashlib.sha256(interp.prefix.encode()).hexdigest()[:10]}"
    stamp = dest / ".complete"
    if not stamp.exists():
        shutil.rmtree(dest, ignore_errors=True)
        lib = f"python{interp.short}"

        def ignore(d: str, names: list[str]) -> list[str]:
            rel = os.path.relpath(d, interp.prefix)
            if rel == f"lib/{lib}":
                return [n for n in names if n in ("test", "idlelib", "tkinter", "turtledemo")]
            if rel == f"lib/{lib}/site-packages":
                return list(names)
            return []

        shutil.copytree(interp.prefix, dest, symlinks=True, ignore=ignore)
        for root, dirs, files in os.walk(dest):
            os.chmod(root, 0o755)
            for f in files:
                fp = os.path.join(root, f)
                if not os.path.islink(fp):
                    os.chmod(fp, os.stat(fp).st_mode | 0o444)
        stamp.write_text(interp.path)
    exe = dest / os.path.relpath(interp.path, interp.prefix)
    return Interpreter(str(exe), interp.version, str(dest))


def copy_tree_clean(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, symlinks=True)

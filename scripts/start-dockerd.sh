#!/usr/bin/env bash
# Start a Docker daemon if none answers (as root; no bridge, no iptables: sandboxes use --network none).
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then echo "dockerd is not running and only root can start it" >&2; exit 1; fi
command -v dockerd >/dev/null || { echo "dockerd missing: run scripts/setup-system.sh" >&2; exit 1; }
nohup dockerd --bridge=none --iptables=false >/var/log/distill-dockerd.log 2>&1 &
for _ in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 0.5; done
echo "dockerd did not start; see /var/log/distill-dockerd.log" >&2; exit 1

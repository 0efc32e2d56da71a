#!/usr/bin/env bash
# The sandbox base image: Debian bookworm (minbase) with python3 and nodejs, made with debootstrap and
# `docker import`, so no registry is needed. A repository that needs more gets its own image FROM this
# one (sandbox.images in distill.yaml). Usage: docker/sandbox/build-base.sh [IMAGE]
set -euo pipefail
IMAGE=${1:-distill-sandbox:bookworm}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then exit 0; fi
ROOTFS=${DISTILL_ROOTFS:-/var/cache/distill/rootfs-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ ! -x "$ROOTFS/usr/bin/python3" ] || [ ! -x "$ROOTFS/usr/bin/node" ]; then
  echo "debootstrap bookworm into $ROOTFS (about a minute) ..."
  rm -rf "$ROOTFS.partial"
  mkdir -p "$(dirname "$ROOTFS")"
  debootstrap --variant=minbase --include=python3,nodejs bookworm "$ROOTFS.partial" "$MIRROR" >/dev/null
  rm -rf "$ROOTFS" && mv "$ROOTFS.partial" "$ROOTFS"
fi
tar -C "$ROOTFS" -c . | docker import -c 'CMD ["/bin/sh"]' -c 'ENV LANG=C.UTF-8' - "$IMAGE" >/dev/null
echo "built $IMAGE"

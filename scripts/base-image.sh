#!/usr/bin/env bash
# A Debian bookworm base image built from the Debian mirror alone, for machines that cannot pull from Docker Hub:
# mmdebstrap's minbase variant plus Debian's Python 3.11 with venv support, imported into docker as
# harmonizer-deploy/base:bookworm. Every docker/*.Dockerfile takes it as `--build-arg BASE_IMAGE=...`, and
# `make image` uses it by itself when the public python:3.11-slim-bookworm cannot be pulled.
# Usage (root, or a user in the docker group with mmdebstrap's unshare mode): scripts/base-image.sh [TAG]
#   MIRROR=http://deb.debian.org/debian  SECURITY_MIRROR=http://deb.debian.org/debian-security
# Plain-http mirrors are verified by apt's signatures, so no CA certificate is needed here.
set -euo pipefail
tag="${1:-harmonizer-deploy/base:bookworm}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
security="${SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
command -v mmdebstrap >/dev/null || { echo "base-image.sh: mmdebstrap not found — apt-get install mmdebstrap" >&2; exit 1; }
command -v docker >/dev/null || { echo "base-image.sh: docker not found — apt-get install docker.io" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "base-image.sh: no docker daemon answers — start dockerd" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# ca-certificates: Debian's public roots (a proxy's CA is added per build, never baked in; see docs/containers.md).
# python3-venv brings ensurepip, which scripts/install.sh needs to create /opt/venv.
mmdebstrap --variant=minbase --quiet \
  --include=ca-certificates,python3,python3-venv \
  --aptopt='Acquire::Languages "none"' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log "$1"/var/log/apt/*' \
  bookworm "$work/rootfs.tar" \
  "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main"
docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --message "scripts/base-image.sh: mmdebstrap minbase bookworm + python3-venv from $mirror" \
  "$work/rootfs.tar" "$tag" >/dev/null
echo "base-image.sh: $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"

#!/usr/bin/env bash
# Builds docker/TARGET.Dockerfile as an image: what `make image target=TARGET` runs (docs/containers.md).
# Usage: docker/build.sh TARGET [TAG] [extra docker build arguments...]   (TAG default harmonizer-deploy:TARGET)
# Environment:
#   DOCKER      the docker CLI (default docker)
#   BASE_IMAGE  the FROM image; default: the Dockerfile's public one when it is here or can be pulled, else the
#               local harmonizer-deploy/base:bookworm (built by scripts/base-image.sh when missing)
#   CA_BUNDLE   a PEM file of extra CA certificates (a TLS-intercepting proxy's): handed to the build as the
#               BuildKit secret `ca_bundle`, used by apt, pip and npm, never stored in a layer
# BuildKit is required (the Dockerfiles use RUN --mount): `docker buildx build --load` when the buildx plugin is
# there, else the CLI's built-in BuildKit, which docker CLIs before 23 have (Debian bookworm's docker.io 20.10).
set -euo pipefail
[ -z "${CA_BUNDLE:-}" ] || CA_BUNDLE="$(realpath -m -- "$CA_BUNDLE")"  # relative to where make ran
cd "$(dirname "$0")/.."
fail() { echo "error: $1 — $2" >&2; exit 2; }
[ $# -ge 1 ] || fail "no target given" "usage: docker/build.sh TARGET [TAG] [docker build args...]"
target="$1"; shift
tag="${1:-harmonizer-deploy:$target}"; [ $# -gt 0 ] && shift
dockerfile="docker/$target.Dockerfile"
[ -f "$dockerfile" ] || fail "no $dockerfile" "valid targets: $(cd docker && ls ./*.Dockerfile | sed 's|^\./||; s|\.Dockerfile$||' | paste -sd' ')"
if [ -n "${CA_BUNDLE:-}" ]; then  # checked before anything runs
  [ -f "$CA_BUNDLE" ] && [ -s "$CA_BUNDLE" ] || fail "CA_BUNDLE=$CA_BUNDLE is not a readable, non-empty file" \
    "point CA_BUNDLE at a PEM bundle, e.g. /etc/ssl/certs/ca-certificates.crt"
  grep -q -- "-----BEGIN CERTIFICATE-----" "$CA_BUNDLE" || fail "CA_BUNDLE=$CA_BUNDLE holds no PEM certificate" \
    "point CA_BUNDLE at a PEM bundle, e.g. /etc/ssl/certs/ca-certificates.crt"
fi
cli="${DOCKER:-docker}"
"$cli" info >/dev/null 2>&1 || fail "no docker daemon answers ($cli info)" "start dockerd (or set DOCKER=...)"

client_major() { "$1" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1; }
if "$cli" buildx version >/dev/null 2>&1; then
  build=("$cli" buildx build --load)
elif [ "$(client_major "$cli")" -lt 23 ] 2>/dev/null; then
  build=(env DOCKER_BUILDKIT=1 "$cli" build)
elif [ -x /usr/bin/docker ] && [ "$(client_major /usr/bin/docker)" -lt 23 ] 2>/dev/null; then
  # a newer CLI first on PATH without its buildx plugin; Debian's 20.10 CLI still has BuildKit built in
  echo "build.sh: $cli has no buildx plugin; using /usr/bin/docker $(/usr/bin/docker version --format '{{.Client.Version}}') (built-in BuildKit)"
  build=(env DOCKER_BUILDKIT=1 /usr/bin/docker build)
else
  fail "$cli cannot build with BuildKit (no buildx plugin)" "install the buildx plugin (apt-get install docker-buildx) or use a docker CLI < 23"
fi

if [ -z "${BASE_IMAGE:-}" ]; then
  public="$(sed -n 's/^ARG BASE_IMAGE=//p' "$dockerfile" | head -1)"
  if "$cli" image inspect "$public" >/dev/null 2>&1 || "$cli" pull -q "$public" >/dev/null 2>&1; then
    BASE_IMAGE="$public"
  else
    BASE_IMAGE=harmonizer-deploy/base:bookworm
    echo "build.sh: cannot pull $public; using the local Debian base $BASE_IMAGE"
    "$cli" image inspect "$BASE_IMAGE" >/dev/null 2>&1 || scripts/base-image.sh "$BASE_IMAGE"
  fi
fi
args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" -f "$dockerfile" -t "$tag")
[ -z "${CA_BUNDLE:-}" ] || args+=(--secret "id=ca_bundle,src=$CA_BUNDLE")
echo "build.sh: ${build[*]} ${args[*]} $* ."
start=$(date +%s)
"${build[@]}" "${args[@]}" "$@" .
echo "build.sh: $tag built in $(( $(date +%s) - start )) s, $("$cli" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"

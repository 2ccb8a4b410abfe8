#!/usr/bin/env bash
# `make test-containers`: build the cpu, wasm and cuda images and run them; needs a running docker daemon and
# starts nothing itself. Not part of `make test`. Steps (each one's time is printed; docs/containers.md):
#   1. build harmonizer-deploy:cpu, :wasm, :cuda (docker/build.sh: BuildKit, CA_BUNDLE secret, local base fallback)
#   2. cpu:  make target=cpu runner=docker (convert → compile → verify → bench → harmonize), the artifact verifies
#            again in a fresh container, the harmonized sample exists, `doctor --strict` exits 0
#   3. wasm: the browser verify (headless Chromium) inside the image, then a second verify of the artifact
#   4. cuda: `make compile target=cuda` builds the artifact with no GPU; `verify` exits 4 (no device)
#   5. reproducibility: the cpu image built again with --no-cache has the same `pip freeze`
#   6. no secret: no CA bundle certificate (beyond the base image's public ones) nor /run/secrets file in any
#      layer of any of the three images, nor in `docker history --no-trunc`
# Environment: DOCKER, CA_BUNDLE, BASE_IMAGE (as for docker/build.sh); KEEP_GOING=1 runs every step after a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
cli="${DOCKER:-docker}"
if ! "$cli" info >/dev/null 2>&1; then
  echo "error: no docker daemon answers ($cli info) — start dockerd first; make test-containers starts nothing" >&2
  exit 2
fi
out="$PWD/build/test-containers"
mkdir -p "$out"
failures=()
t0=$(date +%s)
step() { echo; echo "== test-containers [$(( $(date +%s) - t0 )) s]: $*"; }
fail() {
  echo "FAIL: $*" >&2
  failures+=("$*")
  [ "${KEEP_GOING:-0}" = 1 ] || { echo "test-containers: FAILED: $*" >&2; exit 1; }
}
timed() {  # timed NAME cmd... : run, print the seconds it took
  local start rc; start=$(date +%s); "${@:2}"; rc=$?
  echo "test-containers: $1 took $(( $(date +%s) - start )) s (exit $rc)"; return $rc
}
in_image() {  # in_image IMAGE BUILD_DIR cmd... : run cmd in a fresh container with BUILD_DIR as /app/build
  local image="$1" dir="$2"; shift 2
  "$cli" run --rm -v "$dir:/app/build" "$image" "$@"
}
fresh() {  # an empty build folder for one image: its previous contents were written by this script's containers
  rm -rf "${out:?}/$1" && mkdir -p "$out/$1" && echo "$out/$1"
}

step "1. build the images"
for t in cpu wasm cuda; do
  timed "build $t" docker/build.sh "$t" "harmonizer-deploy:$t" || fail "docker/build.sh $t"
done
"$cli" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^harmonizer-deploy' | sort

step "2. cpu: make target=cpu runner=docker"
cpu="$(fresh cpu)"
timed "make target=cpu runner=docker" make target=cpu runner=docker DOCKER="$cli" BUILD="$cpu" \
  CA_BUNDLE="${CA_BUNDLE:-}" BASE_IMAGE="${BASE_IMAGE:-}" || fail "make target=cpu runner=docker"
timed "verify cpu (fresh container)" in_image harmonizer-deploy:cpu "$cpu" harmonizer-deploy verify build/cpu \
  --target cpu || fail "the cpu artifact does not verify"
[ -s "$cpu/ode-to-joy-chorale.mid" ] || fail "no harmonized sample $cpu/ode-to-joy-chorale.mid"
in_image harmonizer-deploy:cpu "$cpu" harmonizer-deploy doctor --strict >/dev/null \
  || fail "doctor --strict in harmonizer-deploy:cpu"

step "3. wasm: browser verify inside the image"
wasm="$(fresh wasm)"
timed "make verify target=wasm (in the image)" in_image harmonizer-deploy:wasm "$wasm" \
  make verify target=wasm runner=host VENV=/opt/venv BUILD=build || fail "wasm: make verify in the image"
timed "verify wasm (fresh container)" in_image harmonizer-deploy:wasm "$wasm" harmonizer-deploy verify build/wasm \
  --target wasm || fail "the wasm artifact does not verify"

step "4. cuda: compile without a GPU, verify exits 4"
cuda="$(fresh cuda)"
timed "make compile target=cuda (in the image)" in_image harmonizer-deploy:cuda "$cuda" \
  make compile target=cuda runner=host VENV=/opt/venv BUILD=build || fail "cuda: make compile in the image"
[ -s "$cuda/cuda/model.so" ] || [ -n "$(find "$cuda/cuda" -name '*.so' 2>/dev/null | head -1)" ] \
  || fail "cuda: no compiled library under $cuda/cuda"
in_image harmonizer-deploy:cuda "$cuda" harmonizer-deploy verify build/cuda --target cuda
rc=$?
[ "$rc" = 4 ] && echo "test-containers: cuda verify without --gpus exited 4 (no device), as it must" \
  || fail "cuda verify without --gpus exited $rc, not 4"

step "5. reproducibility: the cpu image built twice has the same pip freeze"
timed "rebuild cpu --no-cache" docker/build.sh cpu harmonizer-deploy:cpu-rebuild --no-cache \
  || fail "docker/build.sh cpu --no-cache"
"$cli" run --rm harmonizer-deploy:cpu pip freeze --all > "$out/pip-freeze-1.txt"
"$cli" run --rm harmonizer-deploy:cpu-rebuild pip freeze --all > "$out/pip-freeze-2.txt"
if [ -s "$out/pip-freeze-1.txt" ] && diff "$out/pip-freeze-1.txt" "$out/pip-freeze-2.txt"; then
  echo "test-containers: same $(wc -l < "$out/pip-freeze-1.txt") packages in both builds"
else
  fail "the two cpu builds differ in pip freeze ($out/pip-freeze-{1,2}.txt)"
fi

step "6. no CA bundle or secret in any layer or in docker history"
base="$("$cli" image inspect --format '{{index .Config.Labels "org.harmonizer-deploy.base"}}' harmonizer-deploy:cpu)"
case "$base" in ""|"<no value>") base=harmonizer-deploy/base:bookworm ;; esac
"$cli" run --rm --entrypoint cat "$base" /etc/ssl/certs/ca-certificates.crt \
  > "$out/public-ca.crt" || fail "cannot read the base image's ca-certificates.crt"
if [ -n "${CA_BUNDLE:-}" ]; then
  # the scan must see a leak: an image that copies the bundle in and deletes it in the next layer
  leak="$out/leak-context"; rm -rf "$leak"; mkdir -p "$leak"; cp "$CA_BUNDLE" "$leak/bundle.pem"
  printf 'FROM %s\nCOPY bundle.pem /usr/local/share/leak.pem\nRUN rm /usr/local/share/leak.pem\n' "$base" \
    > "$leak/Dockerfile"
  if DOCKER_BUILDKIT=0 "$cli" build -q -t harmonizer-deploy:leak-control "$leak" >/dev/null; then  # classic builder
    if "$cli" save harmonizer-deploy:leak-control | python3 docker/scan_layers.py --public "$out/public-ca.crt" \
         --bundle "$CA_BUNDLE" >/dev/null 2>&1; then
      fail "the layer scan does not find a CA bundle copied into a layer and deleted in the next"
    else
      echo "test-containers: control: the scan finds the bundle in a deliberately leaky image"
    fi
    "$cli" rmi harmonizer-deploy:leak-control >/dev/null
  else
    fail "could not build the leaky control image"
  fi
  rm -rf "$leak"
fi
for image in harmonizer-deploy:cpu harmonizer-deploy:wasm harmonizer-deploy:cuda; do
  "$cli" history --no-trunc "$image" > "$out/history.txt"
  rc=0
  timed "scan $image" bash -c 'set -o pipefail; "$0" save "$1" | python3 docker/scan_layers.py --public "$2" --history "$3" $4' \
    "$cli" "$image" "$out/public-ca.crt" "$out/history.txt" "${CA_BUNDLE:+--bundle $CA_BUNDLE}" || rc=$?
  if [ "$rc" = 1 ]; then
    fail "$image: a CA bundle or secret is left in the image"
  elif [ "$rc" != 0 ]; then
    fail "$image: could not be scanned (exit $rc; see the lines above)"
  fi
done

echo
if [ ${#failures[@]} -gt 0 ]; then
  printf 'test-containers: FAILED: %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "test-containers: passed in $(( $(date +%s) - t0 )) s"

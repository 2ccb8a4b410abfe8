# harmonizer-deploy for target wasm-mt: WebAssembly on several threads (Web Workers on shared memory), run on the
# CPU by headless Chromium on a cross-origin isolated page. The same image as wasm but for its default job.
#   make image target=wasm-mt [CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt]       (docs/containers.md)
#   docker run --rm -v "$PWD/build:/app/build" harmonizer-deploy:wasm-mt
# Debian's emscripten (pinned: the runtime objects and the link depend on its LLVM) and chromium are in the image;
# npm only in the build stage, which fetches TVM's JS runtime (pinned) and builds TVM's web runtime objects into
# the cache (scripts/install-web-deps.sh, the same script CI runs); the image gets the venv and that cache.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HARMONIZER_DEPLOY_CACHE=/opt/harmonizer-deploy-cache
COPY docker/ca-env.sh docker/apt-ca.conf /app/docker/
RUN --mount=type=secret,id=ca_bundle,required=false \
    . /app/docker/ca-env.sh \
    && apt-get update \
    && apt-get install -y --no-install-recommends g++ make "emscripten=3.1.6~dfsg-5" node-acorn chromium \
    && rm -rf /var/lib/apt/lists/*

FROM runtime AS build
WORKDIR /app
# Only what the install reads, so edits to the code keep this slow layer cached (see cpu.Dockerfile).
COPY pyproject.toml constraints.txt README.md /app/
COPY scripts/install.sh /app/scripts/
COPY targets /app/targets
COPY src/harmonizer_deploy/__init__.py /app/src/harmonizer_deploy/
RUN --mount=type=secret,id=ca_bundle,required=false --mount=type=cache,target=/root/.cache/pip \
    . docker/ca-env.sh \
    && EXTRAS=convert scripts/install.sh /opt/venv \
    && touch /opt/venv/.installed
# what install-web-deps.sh reads (it imports the package): edits elsewhere (docs, tests, docker/) keep its layer
COPY src /app/src
COPY scripts/install-web-deps.sh /app/scripts/
RUN --mount=type=secret,id=ca_bundle,required=false \
    . docker/ca-env.sh \
    && scripts/install-web-deps.sh /opt/venv \
    && rm -rf /var/lib/apt/lists/*

FROM runtime
# the FROM image, for the secret scan of make test-containers (its public CA certificates)
ARG BASE_IMAGE
LABEL org.harmonizer-deploy.base="${BASE_IMAGE}"
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# npm: the browser targets list it among their tools (compile checks for it; the pinned npm packages themselves
# are already in the cache). A layer of its own after the runtime stage, so the stages above stay shared.
RUN --mount=type=secret,id=ca_bundle,required=false \
    . /app/docker/ca-env.sh \
    && apt-get update \
    && apt-get install -y --no-install-recommends npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/harmonizer-deploy-cache /opt/harmonizer-deploy-cache
CMD ["make", "target=wasm-mt", "runner=host", "VENV=/opt/venv"]

# harmonizer-deploy for target cpu. Build from the repository root (docs/containers.md):
#   make image target=cpu [CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt] [BASE_IMAGE=...]
#   docker run --rm -v "$PWD/build:/app/build" harmonizer-deploy:cpu     (convert → compile → verify → bench → harmonize)
# BuildKit is required (RUN --mount). BASE_IMAGE: any Debian bookworm image with python3 + venv; the default is
# the public one, scripts/base-image.sh builds harmonizer-deploy/base:bookworm from the Debian mirror alone.
# Stages: runtime (g++/make: TVM links the model library at compile time) → build (the venv, extras: convert)
# → the image = runtime + the venv + the source; pip's cache, the CA secret and apt's lists stay behind.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY docker/ca-env.sh docker/apt-ca.conf /app/docker/
RUN --mount=type=secret,id=ca_bundle,required=false \
    . /app/docker/ca-env.sh \
    && apt-get update \
    && apt-get install -y --no-install-recommends g++ make \
    && rm -rf /var/lib/apt/lists/*

FROM runtime AS build
WORKDIR /app
# Only what the install reads (the editable install needs the package folder, not its modules), so edits to the
# code keep this slow layer cached. pip's downloads stay in a BuildKit cache mount, outside every layer.
COPY pyproject.toml constraints.txt README.md /app/
COPY scripts/install.sh /app/scripts/
COPY targets /app/targets
COPY src/harmonizer_deploy/__init__.py /app/src/harmonizer_deploy/
# The one install recipe (same as `make setup` and CI), at the tested versions of constraints.txt.
RUN --mount=type=secret,id=ca_bundle,required=false --mount=type=cache,target=/root/.cache/pip \
    . docker/ca-env.sh \
    && EXTRAS=convert scripts/install.sh /opt/venv \
    && touch /opt/venv/.installed

FROM runtime
# the FROM image, for the secret scan of make test-containers (its public CA certificates)
ARG BASE_IMAGE
LABEL org.harmonizer-deploy.base="${BASE_IMAGE}"
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY . /app
COPY --from=build /opt/venv /opt/venv
CMD ["make", "target=cpu", "runner=host", "VENV=/opt/venv"]

# harmonizer-deploy for target vulkan. PyPI's apache-tvm is built with USE_VULKAN=OFF, so stage tvm-build builds
# TVM from source with USE_VULKAN=ON (needs github.com; TVM_REF must be the tag of the apache-tvm the project pins)
# and stage build installs that wheel through the shared install script (TVM_WHEEL).
# Mesa's lavapipe (mesa-vulkan-drivers) gives a CPU Vulkan device, so verify runs with no GPU at all.
#   make image target=vulkan [CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt]     (docs/containers.md)
#   docker run --rm -v "$PWD/build:/app/build" harmonizer-deploy:vulkan
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS tvm-build
ARG TVM_REF=v0.27.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
COPY docker/ca-env.sh docker/apt-ca.conf /app/docker/
RUN --mount=type=secret,id=ca_bundle,required=false \
    . /app/docker/ca-env.sh \
    && apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake ninja-build git python3-dev python3-venv \
       llvm-15-dev libzstd-dev libvulkan-dev spirv-headers spirv-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN --mount=type=secret,id=ca_bundle,required=false \
    . /app/docker/ca-env.sh \
    && if [ -s /run/secrets/ca_bundle ]; then export GIT_SSL_CAINFO=/run/secrets/ca_bundle; fi \
    && git clone --depth 1 --branch "${TVM_REF}" --recursive https://github.com/apache/tvm.git tvm
WORKDIR /src/tvm
RUN --mount=type=secret,id=ca_bundle,required=false --mount=type=cache,target=/root/.cache/pip \
    . /app/docker/ca-env.sh \
    && python3 -m venv /opt/build-venv \
    && /opt/build-venv/bin/python -m pip install "pip==26.3" \
    && /opt/build-venv/bin/python -m pip wheel --no-deps -w /wheels . \
       -Ccmake.define.USE_VULKAN=ON -Ccmake.define.USE_LLVM=/usr/bin/llvm-config-15 -Ccmake.define.USE_CUDA=OFF \
    && /opt/build-venv/bin/python -c "import glob, sys; sys.exit(0 if glob.glob('/wheels/apache_tvm-*.whl') else 1)"

FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY docker/ca-env.sh docker/apt-ca.conf /app/docker/
# g++/make; lavapipe (a Vulkan device on the CPU), the Vulkan loader and vulkaninfo for `harmonizer-deploy doctor`
RUN --mount=type=secret,id=ca_bundle,required=false \
    . /app/docker/ca-env.sh \
    && apt-get update \
    && apt-get install -y --no-install-recommends g++ make mesa-vulkan-drivers libvulkan1 vulkan-tools libllvm15 \
       libzstd1 \
    && rm -rf /var/lib/apt/lists/*

FROM runtime AS build
COPY --from=tvm-build /wheels /wheels
WORKDIR /app
# Only what the install reads, so edits to the code keep this slow layer cached (see cpu.Dockerfile).
COPY pyproject.toml constraints.txt README.md /app/
COPY scripts/install.sh /app/scripts/
COPY targets /app/targets
COPY src/harmonizer_deploy/__init__.py /app/src/harmonizer_deploy/
RUN --mount=type=secret,id=ca_bundle,required=false --mount=type=cache,target=/root/.cache/pip \
    . docker/ca-env.sh \
    && EXTRAS=convert TVM_WHEEL="$(ls /wheels/apache_tvm-*.whl)" scripts/install.sh /opt/venv \
    && touch /opt/venv/.installed

FROM runtime
# the FROM image, for the secret scan of make test-containers (its public CA certificates)
ARG BASE_IMAGE
LABEL org.harmonizer-deploy.base="${BASE_IMAGE}"
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY . /app
COPY --from=build /opt/venv /opt/venv
CMD ["make", "target=vulkan", "runner=host", "VENV=/opt/venv"]

# harmonizer-deploy for target vulkan. PyPI's apache-tvm is built with USE_VULKAN=OFF, so stage 1 builds
# TVM from source with USE_VULKAN=ON (needs github.com; TVM_REF must be the tag of the apache-tvm the
# project pins) and stage 2 installs that wheel through the shared install script (TVM_WHEEL).
# Mesa's lavapipe (mesa-vulkan-drivers) gives a CPU Vulkan device, so verify runs with no GPU at all.
#   docker build -f docker/vulkan.Dockerfile -t harmonizer-deploy:vulkan .
#   docker run --rm -v "$PWD/build:/app/build" harmonizer-deploy:vulkan
FROM python:3.11-bookworm AS tvm-build

ARG TVM_REF=v0.27.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake ninja-build git llvm-15-dev libzstd-dev libvulkan-dev \
       spirv-headers spirv-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN git clone --depth 1 --branch "${TVM_REF}" --recursive https://github.com/apache/tvm.git tvm
WORKDIR /src/tvm
RUN python -m pip install --no-cache-dir "pip==26.3" \
    && python -m pip wheel --no-cache-dir --no-deps -w /wheels . \
       -Ccmake.define.USE_VULKAN=ON -Ccmake.define.USE_LLVM=/usr/bin/llvm-config-15 -Ccmake.define.USE_CUDA=OFF \
    && python -c "import glob, sys; sys.exit(0 if glob.glob('/wheels/apache_tvm-*.whl') else 1)"

FROM python:3.11-slim-bookworm

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# lavapipe (a Vulkan device on the CPU), the Vulkan loader and vulkaninfo for `harmonizer-deploy doctor`
RUN apt-get update \
    && apt-get install -y --no-install-recommends mesa-vulkan-drivers libvulkan1 vulkan-tools libllvm15 libzstd1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=tvm-build /wheels /wheels
WORKDIR /app
COPY . /app
RUN TVM_WHEEL="$(ls /wheels/apache_tvm-*.whl)" scripts/install.sh /opt/venv \
    && touch /opt/venv/.installed \
    && rm -rf /var/lib/apt/lists/*
CMD ["make", "target=vulkan", "runner=host", "VENV=/opt/venv"]

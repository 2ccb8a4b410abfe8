# harmonizer-deploy for target cuda: nvcc to build the kernels, an NVIDIA GPU to verify and bench them.
#   make image target=cuda [CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt]       (docs/containers.md)
#   docker run --rm --gpus all -v "$PWD/build:/app/build" harmonizer-deploy:cuda
# No nvidia/cuda base: the CUDA 13.0 toolchain (nvcc, cicc, ptxas, crt and CCCL headers, libcudart.so.13, which
# PyPI's apache-tvm 0.27 links) comes from NVIDIA's PyPI wheels, the project's `cuda` extra, on a plain Debian
# bookworm Python. The GPU driver (libcuda.so.1, nvidia-smi; host driver >= 580) is mounted by `--gpus`.
# Without --gpus the image still builds the artifact and bundle; verify/bench then exit 4 (no device).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY docker/ca-env.sh docker/apt-ca.conf /app/docker/
# g++: nvcc's host compiler and TVM's linker for the host code
RUN --mount=type=secret,id=ca_bundle,required=false \
    . /app/docker/ca-env.sh \
    && apt-get update \
    && apt-get install -y --no-install-recommends g++ make \
    && rm -rf /var/lib/apt/lists/*

FROM runtime AS build
WORKDIR /app
# Only what the install reads, so edits to the code keep this slow layer cached (see cpu.Dockerfile).
COPY pyproject.toml constraints.txt README.md /app/
COPY scripts/install.sh /app/scripts/
COPY targets /app/targets
COPY src/harmonizer_deploy/__init__.py /app/src/harmonizer_deploy/
# /opt/venv/cuda: a fixed path to the wheels' CUDA tree (site-packages/nvidia/cu13: bin, include, lib, nvvm)
RUN --mount=type=secret,id=ca_bundle,required=false --mount=type=cache,target=/root/.cache/pip \
    . docker/ca-env.sh \
    && EXTRAS=convert,cuda scripts/install.sh /opt/venv \
    && ln -s "$(/opt/venv/bin/python -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')" \
       /opt/venv/cuda \
    && /opt/venv/cuda/bin/nvcc --version \
    && touch /opt/venv/.installed

FROM runtime
# the FROM image, for the secret scan of make test-containers (its public CA certificates)
ARG BASE_IMAGE
LABEL org.harmonizer-deploy.base="${BASE_IMAGE}"
# nvcc on PATH is how TVM finds the CUDA tree (CUDA_PATH = nvcc's ../..); libcudart.so.13 for TVM's CUDA runtime.
# The NVIDIA container runtime mounts the driver's compute libraries and nvidia-smi into this image under --gpus.
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/cuda/bin:/opt/venv/bin:$PATH LD_LIBRARY_PATH=/opt/venv/cuda/lib \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /app
COPY . /app
COPY --from=build /opt/venv /opt/venv
CMD ["make", "target=cuda", "runner=host", "VENV=/opt/venv"]

# harmonizer-deploy for target cuda: nvcc to build the kernels, an NVIDIA GPU to verify and bench them.
#   docker build -f docker/cuda.Dockerfile -t harmonizer-deploy:cuda .
#   docker run --rm --gpus all -v "$PWD/build:/app/build" harmonizer-deploy:cuda
# The PyPI apache-tvm 0.27 CUDA runtime links libcudart.so.13, so the base is CUDA 13 (host driver >= 580).
# Without --gpus the image still builds the artifact and bundle; verify/bench then exit 4 (no device).
FROM nvidia/cuda:13.0.0-devel-ubuntu24.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# install.sh needs a python3 to start from; everything else it installs itself.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN scripts/install.sh /opt/venv \
    && touch /opt/venv/.installed \
    && rm -rf /var/lib/apt/lists/*
CMD ["make", "target=cuda", "runner=host", "VENV=/opt/venv"]

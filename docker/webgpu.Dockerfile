# harmonizer-deploy for target webgpu: emscripten links the WebAssembly module, headless Chromium runs it.
#   docker build -f docker/webgpu.Dockerfile -t harmonizer-deploy:webgpu .
#   docker run --rm -v "$PWD/build:/app/build" harmonizer-deploy:webgpu
# Chromium's WebGPU needs a GPU (or SwiftShader's software adapter, which headless Chromium can use).
FROM python:3.11-bookworm

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends emscripten chromium nodejs \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN scripts/install.sh /opt/venv \
    && touch /opt/venv/.installed \
    && rm -rf /var/lib/apt/lists/*
CMD ["make", "target=webgpu", "runner=host", "VENV=/opt/venv"]

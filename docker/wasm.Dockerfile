# harmonizer-deploy for target wasm: a WebAssembly module run on the CPU by headless Chromium.
#   docker build -f docker/wasm.Dockerfile -t harmonizer-deploy:wasm .
#   docker run --rm -v "$PWD/build:/app/build" harmonizer-deploy:wasm
# The browser pieces (emscripten pinned, chromium, npm's TVM JS runtime, TVM's web runtime objects) come from
# scripts/install-web-deps.sh, the same script CI runs.
FROM python:3.11-bookworm

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY . /app
RUN scripts/install.sh /opt/venv \
    && scripts/install-web-deps.sh /opt/venv \
    && touch /opt/venv/.installed \
    && rm -rf /var/lib/apt/lists/*
CMD ["make", "target=wasm", "runner=host", "VENV=/opt/venv"]

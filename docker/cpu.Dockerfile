# harmonizer-deploy for target cpu. Build from the repository root:
#   docker build -f docker/cpu.Dockerfile -t harmonizer-deploy:cpu .
#   docker run --rm -v "$PWD/build:/app/build" harmonizer-deploy:cpu make target=cpu runner=host
FROM python:3.11-slim-bookworm

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY . /app
# The one install recipe (same as `make setup` and CI): apt-gets g++/make, creates the venv, pip installs every
# extra at the tested versions of constraints.txt.
RUN scripts/install.sh /opt/venv \
    && touch /opt/venv/.installed \
    && rm -rf /var/lib/apt/lists/*
CMD ["make", "target=cpu", "runner=host", "VENV=/opt/venv"]

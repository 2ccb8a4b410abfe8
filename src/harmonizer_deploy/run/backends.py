"""One interface over every way to run the harmonizer: TensorFlow, onnxruntime, and each TVM artifact.

`open_backend("tvm-cpu")` etc. Bench, verify and the sampler all use this, so adding a backend is one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.music.encoding import INPUT_NAME, OUTPUT_NAME

DEFAULT_BUILD_DIR = Path("build")


class Backend(Protocol):
    name: str

    def run(self, x: np.ndarray) -> np.ndarray: ...


@dataclass
class OnnxRuntimeBackend:
    """onnxruntime with its worker threads parked between calls (no spin-waiting).

    Why: by default ORT's idle workers spin on every core for a while after each call. Measured here (2 cores,
    interleaved with a TVM artifact): the TVM call right after an ORT call took 35 ms instead of 3.4 ms, while
    ORT's own latency was the same either way (3.17 ms). Parking keeps one backend from taxing the next one.
    """

    onnx_path: Path
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    name: str = "onnxruntime"

    def __post_init__(self) -> None:
        import onnxruntime as ort

        from harmonizer_deploy.conversion.convert import check_onnx_file

        check_onnx_file(Path(self.onnx_path))
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.onnx_path), options, providers=list(self.providers))

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.asarray(x, dtype=np.float32)})[0]


class TensorFlowBackend:
    name = "tensorflow"

    def __init__(self, model: str | Path | None = None) -> None:
        from harmonizer_deploy.conversion.source import load_source

        self.source = load_source(model)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.source.run(np.asarray(x, dtype=np.float32))[OUTPUT_NAME]


class TvmBackend:
    """A compiled artifact; named `tvm-<artifact dir>` (build/cpu → tvm-cpu, build/cpu-b1 → tvm-cpu-b1)."""

    def __init__(self, artifact_dir: Path) -> None:
        from harmonizer_deploy.run.tvm import CompiledModel

        self.model = CompiledModel(artifact_dir)
        self.name = f"tvm-{Path(artifact_dir).name}"
        self.accepts = self.model.accepts

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.model.run(x)


def onnxruntime_cuda_available() -> bool:
    """onnxruntime-gpu installed *and* an NVIDIA GPU present (the provider is listed even without one)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    from harmonizer_deploy.run.tvm import device_present

    return device_present("cuda")


def source_of_onnx(onnx_path: Path) -> str | None:
    """The TensorFlow model an ONNX file was converted from, per its sidecar (None if unknown)."""
    sidecar = onnx_path.with_suffix(".json")
    if not sidecar.is_file():
        return None
    path = json.loads(sidecar.read_text()).get("source", {}).get("path", "")
    return path.removeprefix("bundled:") or None


def built_tvm_targets(build_dir: Path = DEFAULT_BUILD_DIR) -> list[str]:
    """Artifact directories under build_dir (each `build/<name>/manifest.json`; usually named after the target)."""
    return sorted(p.parent.name for p in Path(build_dir).glob("*/manifest.json"))


def open_backend(name: str, build_dir: str | Path = DEFAULT_BUILD_DIR, model: str | Path | None = None) -> Backend:
    """Open a backend by report name: tensorflow, onnxruntime, or tvm-<artifact dir under build_dir>."""
    build_dir = Path(build_dir)
    onnx_path = build_dir / "model.onnx"
    if name == "tensorflow":
        return TensorFlowBackend(model if model is not None else source_of_onnx(onnx_path))
    if name == "onnxruntime":
        return OnnxRuntimeBackend(onnx_path)
    if name == "onnxruntime-cuda":
        if not onnxruntime_cuda_available():
            from harmonizer_deploy.core.errors import DeviceUnavailable

            raise DeviceUnavailable("onnxruntime's CUDA provider needs onnxruntime-gpu and an NVIDIA GPU",
                                    "pip install onnxruntime-gpu on a GPU machine, or bench --backend onnxruntime")
        return OnnxRuntimeBackend(onnx_path, ("CUDAExecutionProvider", "CPUExecutionProvider"), "onnxruntime-cuda")
    if name.startswith("tvm-"):
        return TvmBackend(build_dir / name.removeprefix("tvm-"))
    raise HarmonizerError(
        f"unknown backend {name!r}",
        "use tensorflow, onnxruntime, onnxruntime-cuda or tvm-<dir> for an artifact compiled into build/<dir>",
    )


FIXED_BACKENDS = ("tensorflow", "onnxruntime", "onnxruntime-cuda")


def backend_names(build_dir: str | Path = DEFAULT_BUILD_DIR) -> list[str]:
    """Every valid backend name: the fixed ones, tvm-<target> for each target and tvm-<dir> for each artifact
    already compiled into build_dir (e.g. tvm-cpu-b1)."""
    from harmonizer_deploy.compiler.targets import available_targets

    tvm = dict.fromkeys([*available_targets(), *built_tvm_targets(Path(build_dir))])
    return [*FIXED_BACKENDS, *(f"tvm-{t}" for t in tvm)]


def check_backend_name(name: str, build_dir: str | Path = DEFAULT_BUILD_DIR) -> None:
    """Refuse an unknown backend name before any work starts, listing the valid ones."""
    valid = backend_names(build_dir)
    if name not in valid:
        raise HarmonizerError(f"unknown backend {name!r}", f"valid backends: {', '.join(valid)} (tvm-<dir> for an "
                              f"artifact compiled into {Path(build_dir)}/<dir>; `harmonizer-deploy backends` "
                              "says which can run here)")


def target_can_run(device: str, runner: str) -> tuple[bool, str]:
    """Whether this machine can run an artifact of `device` with `runner` (local TVM runtime or a browser)."""
    if runner == "browser":
        from harmonizer_deploy.web.browser import chromium_path

        try:
            return True, f"in headless Chromium ({chromium_path()})"
        except HarmonizerError as exc:
            return False, exc.problem
    from harmonizer_deploy.run.tvm import device_present

    if device_present(device):
        return True, f"{device} device 0 present"
    return False, f"no {device} device here"


def backend_status(build_dir: str | Path = DEFAULT_BUILD_DIR) -> list[dict]:
    """One row per backend name: whether it can run here, whether its files are built yet, and why not."""
    from harmonizer_deploy.compiler.targets import available_targets, load_target
    from harmonizer_deploy.core.extras import install_hint, installed

    build_dir = Path(build_dir)
    onnx_built = (build_dir / "model.onnx").is_file()
    rows = [
        {"name": "tensorflow", "can_run": installed("tensorflow"),
         "detail": "TensorFlow installed" if installed("tensorflow") else f"needs {install_hint('convert')}",
         "built": True},
        {"name": "onnxruntime", "can_run": True, "detail": "CPU execution provider", "built": onnx_built},
    ]
    cuda = onnxruntime_cuda_available()
    rows.append({"name": "onnxruntime-cuda", "can_run": cuda, "built": onnx_built,
                 "detail": "CUDA execution provider and a GPU" if cuda else "needs onnxruntime-gpu and an NVIDIA GPU"})
    built = set(built_tvm_targets(build_dir))
    for target in available_targets():
        spec = load_target(target)
        ok, why = target_can_run(spec.device, spec.runner)
        rows.append({"name": f"tvm-{target}", "can_run": ok, "detail": why, "built": target in built})
    for artifact in sorted(built - set(available_targets())):
        try:
            manifest = json.loads((build_dir / artifact / "manifest.json").read_text())
            ok, why = target_can_run(str(manifest.get("device", "cpu")), str(manifest.get("runner", "local")))
        except (OSError, ValueError, AttributeError) as exc:
            ok, why = False, f"unreadable manifest.json ({exc})"
        rows.append({"name": f"tvm-{artifact}", "can_run": ok, "detail": why, "built": True})
    return rows

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


def backend_signature(backend: Backend) -> tuple[list[dict], int]:
    """(inputs as {name, shape}, number of outputs) of an opened backend, whatever it runs."""
    if isinstance(backend, TensorFlowBackend):
        return [sig.to_dict() for sig in backend.source.inputs], len(backend.source.outputs)
    if isinstance(backend, OnnxRuntimeBackend):
        return ([{"name": i.name, "shape": list(i.shape)} for i in backend.session.get_inputs()],
                len(backend.session.get_outputs()))
    if isinstance(backend, TvmBackend):
        return list(backend.model.manifest.get("inputs", [])), len(backend.model.manifest.get("outputs", []) or [1])
    return [{"name": INPUT_NAME, "shape": [None, None, 46, 8]}], 1


def open_harmonizer(name: str, build_dir: str | Path, model: str | Path | None, command: str,
                    fix: str | None = None) -> Backend:
    """`open_backend` for the music commands (and bench, which times the pianoroll input): refuses, in one line,
    a model without the harmonizer's signature."""
    from harmonizer_deploy.conversion.inputs import is_harmonizer_io

    backend = open_backend(name, build_dir, model)
    inputs, outputs = backend_signature(backend)
    if not is_harmonizer_io(inputs) or outputs != 1:
        takes = ", ".join(f"{i['name']}{list(i['shape'])}" for i in inputs)
        raise HarmonizerError(
            f"`{command}` needs the harmonizer (one input {INPUT_NAME}[batch, time, 46, 8] → {OUTPUT_NAME}); "
            f"the {backend.name} model takes {takes} and has {outputs} output(s)",
            fix or "use convert/compile/verify for this model; harmonize with a Coconet model (bundled, a .keras "
            "built from a model config, or its build directory)",
        )
    return backend


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

"""Load a compiled artifact directory and run it. Needs only TVM's runtime pieces plus the Relax VM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.core.cpus import use_all_cpu_cores
from harmonizer_deploy.core.errors import DeviceUnavailable, HarmonizerError, reason
from harmonizer_deploy.core.manifest import verified_manifest
from harmonizer_deploy.core.params import PARAM_TRANSFORM, PARAMS_FILE, load_params

DEVICE_NEEDS = {"cuda": "an NVIDIA GPU with its driver", "vulkan": "a Vulkan device (a GPU, or Mesa's lavapipe: "
                "apt-get install mesa-vulkan-drivers)", "rocm": "an AMD GPU", "metal": "an Apple GPU"}


def device_present(kind: str) -> bool:
    """Whether TVM sees device 0 of `kind` here (False, not an error, when the driver library is absent)."""
    import tvm

    try:
        return bool(tvm.device(kind, 0).exist)
    except Exception:  # e.g. a device API that fails to initialise without its driver
        return False


def tvm_device(kind: str, artifact_dir: str | Path | None = None) -> Any:
    """TVM device 0 of `kind`, or DeviceUnavailable (exit code 4) saying what is needed and where to go."""
    import tvm

    if not device_present(kind):
        where = Path(artifact_dir) if artifact_dir else None
        bundle = where / "bundle" if where and (where / "bundle" / "run.py").is_file() else None
        fix = (f"copy {bundle} to a machine with one and run `python run.py verify` / `python run.py bench` there"
               if bundle else f"run verify/bench on a machine with a {kind} device")
        raise DeviceUnavailable(
            f"no {kind} device on this machine: running a {kind} artifact needs {DEVICE_NEEDS.get(kind, kind)}", fix)
    return tvm.device(kind, 0)




def prepare_params(vm: Any, arrays: list[np.ndarray], device: Any) -> list[Any]:
    """The weights as `main` takes them: uploaded, then re-laid-out once by `main_transform_params` when the
    pipeline lifted one (the CPU pipeline does: NHWC/HWIO weights), instead of on every call."""
    import tvm

    params = [tvm.runtime.tensor(a, device) for a in arrays]
    if not vm.module.implements_function(PARAM_TRANSFORM):
        return params
    transformed = vm[PARAM_TRANSFORM](params)
    return [transformed] if isinstance(transformed, tvm.runtime.Tensor) else list(transformed)


class CompiledModel:
    """A loaded artifact: `run(x)` takes the `[batch, time, 46, 8]` input and returns the output array."""

    def __init__(self, artifact_dir: str | Path) -> None:
        import tvm
        from tvm import relax

        self.dir = Path(artifact_dir)
        self.manifest = verified_manifest(self.dir)  # hashes checked before the library reaches dlopen
        if self.manifest.get("runner") != "local":
            raise HarmonizerError(
                f"artifact {self.dir} (target {self.manifest.get('target')}) does not run in this process",
                "use `harmonizer-deploy verify --target <target>`, which picks the right runner",
            )
        if self.manifest["device"] == "cpu":
            use_all_cpu_cores()
        self.device = tvm_device(self.manifest["device"], self.dir)
        library = self.dir / self.manifest["library"]
        try:
            module = tvm.runtime.load_module(str(library))
        except Exception as exc:
            raise HarmonizerError(f"cannot load {library}: {reason(exc)}",
                                  "recompile the artifact") from exc
        self.vm = relax.VirtualMachine(module, self.device)
        arrays = load_params(self.dir / PARAMS_FILE, expected=len(self.manifest["params"]))
        self.params = prepare_params(self.vm, arrays, self.device)
        self.main = self.vm["main"]  # looked up once: run() is the sampler's hot loop
        self.input_name = self.manifest["inputs"][0]["name"]

    def accepts(self, batch: int, time_steps: int) -> bool:
        static = self.manifest.get("static_shape")
        return static is None or list(static) == [batch, time_steps]

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Any signature: {input name: array} in, every output (in the manifest's order) out."""
        import tvm

        missing = [i["name"] for i in self.manifest["inputs"] if i["name"] not in feeds]
        if missing:
            raise HarmonizerError(f"no value for input(s) {', '.join(missing)} of {self.dir}",
                                  "pass every input the model takes")
        args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[i["name"]], dtype=i.get("dtype", "float32")),
                                   self.device) for i in self.manifest["inputs"]]
        result = self.main(*args, *self.params)
        if isinstance(result, tvm.runtime.Tensor):
            return [result.numpy()]
        return [r.numpy() for r in result]

    def run(self, x: np.ndarray) -> np.ndarray:
        import tvm

        if not self.accepts(*x.shape[:2]):
            raise HarmonizerError(
                f"artifact {self.dir} was compiled for [batch, time] = {self.manifest['static_shape']}, "
                f"got {list(x.shape[:2])}",
                "recompile without --batch/--time (any shape) or with the shape you run",
            )
        result = self.main(tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32), self.device),
                                 *self.params)
        if isinstance(result, tvm.runtime.Tensor):
            return result.numpy()
        return result[0].numpy()

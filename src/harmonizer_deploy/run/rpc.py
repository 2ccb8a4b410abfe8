"""Run a compiled artifact on a remote device through TVM's RPC tracker (`--rpc HOST:PORT --rpc-key KEY`).

The artifact's library is uploaded to a device the tracker assigns, loaded there by TVM's runtime and driven
through the Relax VM over RPC; inputs go out and outputs come back as arrays. The comparison (verify) or the
timing (bench) stays on this machine. A device lost mid-run is replaced once by another under the same key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harmonizer_deploy.compiler.tracker import RemoteSession, request_session
from harmonizer_deploy.core.errors import DeviceUnavailable, HarmonizerError
from harmonizer_deploy.core.manifest import read_manifest
from harmonizer_deploy.core.params import PARAMS_FILE, load_params
from harmonizer_deploy.core.remote import RemoteSpec

log = logging.getLogger(__name__)
PARAM_TRANSFORM = "main_transform_params"


class RemoteDeviceLost(DeviceUnavailable):
    """The RPC session broke while the artifact was running (the device server stopped or the link dropped)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


class RemoteModel:
    """An artifact loaded on a remote device: `run(x)` sends x there and returns the output array here."""

    def __init__(self, artifact_dir: str | Path, spec: RemoteSpec) -> None:
        self.dir = Path(artifact_dir)
        self.manifest = read_manifest(self.dir)
        if self.manifest.get("runner", "local") != "local":
            raise HarmonizerError(f"artifact {self.dir} (target {self.manifest.get('target')}) runs in a browser, "
                                  "not through TVM's RPC runtime", "use --rpc with cpu, cuda or vulkan artifacts")
        self.spec = spec
        self.arrays = load_params(self.dir / PARAMS_FILE, expected=len(self.manifest["params"]))
        self.remote: RemoteSession = request_session(spec)
        self.name = self.remote.name
        try:
            self._load()
        except HarmonizerError:
            raise
        except Exception as exc:
            raise RemoteDeviceLost(f"remote device {self.name} failed while loading the artifact: {_first_line(exc)}",
                                   "check the device server's log; rerun to get another device") from None

    def _load(self) -> None:
        import tvm
        from tvm import relax

        session, kind = self.remote.session, self.manifest["device"]
        device = session.device(kind, 0)
        if not device.exist:  # before uploading anything: a cuda artifact on a cpu-only server stops here
            raise DeviceUnavailable(
                f"remote device {self.name} has no {kind} device: this {self.manifest['target']} artifact needs one",
                f"register a {kind} machine under its own key (device-server --key {kind}-...) and pass that key")
        library = self.manifest["library"]
        session.upload(str(self.dir / library))
        self.vm = relax.VirtualMachine(session.load_module(library), device)
        self.device = device
        params = [tvm.runtime.tensor(a, device) for a in self.arrays]
        if self.vm.module.implements_function(PARAM_TRANSFORM):
            # RPC passes tensors, not arrays of them: build the argument list and read the result there
            packed = session.get_function("ffi.Array")(*params)
            transformed = self.vm[PARAM_TRANSFORM](packed)
            item = session.get_function("ffi.ArrayGetItem")
            params = [item(transformed, i) for i in range(session.get_function("ffi.ArraySize")(transformed))]
        self.params = params
        self.main = self.vm["main"]
        self.static = self.manifest.get("static_shape")

    def accepts(self, batch: int, time_steps: int) -> bool:
        return self.static is None or list(self.static) == [batch, time_steps]

    def run(self, x: np.ndarray) -> np.ndarray:
        import tvm

        if not self.accepts(*x.shape[:2]):
            raise HarmonizerError(f"artifact {self.dir} was compiled for [batch, time] = {self.static}, got "
                                  f"{list(x.shape[:2])}", "recompile without --batch/--time or run that shape")
        try:
            result = self.main(tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32), self.device),
                               *self.params)
            return (result if isinstance(result, tvm.runtime.Tensor) else result[0]).numpy()
        except Exception as exc:
            raise RemoteDeviceLost(f"remote device {self.name} was lost mid-run: {_first_line(exc)}",
                                   "check that device server; rerun to get another device") from None


class RemoteRunner:
    """Runs batches of inputs on one remote device and keeps it; when that device is lost, reopens the
    artifact on another device under the key once and reruns the batch, then reports."""

    def __init__(self, artifact_dir: str | Path, spec: RemoteSpec,
                 opener: Callable[[Path, RemoteSpec], RemoteModel] = RemoteModel) -> None:
        self.artifact_dir = Path(artifact_dir)
        self.spec = spec
        self.opener = opener
        self.model: RemoteModel | None = None
        self.devices: list[str] = []  # every device that ran (or tried to run) this artifact, in order
        self.events: list[str] = []
        self.retried = False

    def _open(self) -> RemoteModel:
        model = self.opener(self.artifact_dir, self.spec)
        self.devices.append(model.name)
        return model

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if self.model is None:
            self.model = self._open()
        try:
            return [self.model.run(x) for x in inputs]
        except RemoteDeviceLost as lost:
            if self.retried:
                raise
            self.retried = True
            self.events.append(f"{lost.problem}; retried once on another device under {self.spec.key!r}")
            log.warning("%s; retrying on another device", lost.problem)
            self.model = None
            try:
                self.model = self._open()
                return [self.model.run(x) for x in inputs]
            except RemoteDeviceLost as again:
                raise RemoteDeviceLost(f"{lost.problem}; the retry failed too: {again.problem}", again.fix) from None
            except DeviceUnavailable as none:
                raise DeviceUnavailable(f"{lost.problem}; no device to retry on: {none.problem}", none.fix) from None

    @property
    def device(self) -> str:
        return self.model.name if self.model is not None else (self.devices[-1] if self.devices else "")


class RemoteBackend:
    """A bench/harmonize backend running an artifact remotely: `tvm-<dir>@rpc`."""

    def __init__(self, artifact_dir: Path, spec: RemoteSpec) -> None:
        self.runner = RemoteRunner(artifact_dir, spec)
        self.runner.model = self.runner._open()
        self.name = f"tvm-{Path(artifact_dir).name}@rpc"
        self.accepts = self.runner.model.accepts

    @property
    def where(self) -> str:
        return f"remote {self.runner.device}"

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.runner([x])[0]

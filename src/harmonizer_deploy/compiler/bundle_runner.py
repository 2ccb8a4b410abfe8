"""Run a deploy bundle with only the TVM *runtime*: libtvm_runtime*.so (shipped in the bundle) + apache-tvm-ffi.

This file is copied into every bundle as `run.py`. It imports nothing from harmonizer_deploy or from the
`tvm` compiler package (260 MB), so a GPU box needs only `pip install apache-tvm-ffi numpy` (and onnxruntime
for a live comparison or onnxruntime timings). It drives the Relax VM through the executable's own functions:
`vm_load_executable` → `vm_initialization(device triples)` → `main`.

    python run.py info                     what is in the bundle, whether the device is here
    python run.py verify [--onnxruntime]   compare with the onnxruntime outputs stored at compile time
                                           (or, with --onnxruntime, with onnxruntime run here on fresh inputs)
    python run.py bench [--batch N ...]    latency of the model (and of onnxruntime when installed)
    python run.py run IN.npz OUT.npz       run every array of IN.npz, write the outputs (used by tests/tools)
    python run.py serve --tracker H:P --key K   join a TVM RPC tracker as a device server, so a build machine can
                                           `harmonizer-deploy verify/bench --rpc H:P --rpc-key K` on this device

Exit codes: 0 ok, 2 bad bundle/usage, 3 verify failed, 4 the device (e.g. an NVIDIA GPU) is not here.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import random
import select
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

EXIT_USER_ERROR, EXIT_VERIFY_FAILED, EXIT_NO_DEVICE = 2, 3, 4
DEVICE_TYPES = {"cpu": 1, "cuda": 2, "vulkan": 7, "metal": 8, "rocm": 10, "webgpu": 15}
POOLED_ALLOCATOR = 2
KDL_EXIST = 0  # runtime.GetDeviceAttr attribute id: does the device exist
BUNDLE_JSON = "bundle.json"
DRIVER_LIBS = ("libcuda.so", "libvulkan.so", "libamdhip64.so")  # come with the GPU driver, never in a bundle


class BundleError(Exception):
    """A problem with the bundle or the machine, with the exit code the command ends with."""

    def __init__(self, message: str, code: int = EXIT_USER_ERROR) -> None:
        super().__init__(message)
        self.code = code


def read_bundle(bundle_dir: Path) -> dict:
    path = bundle_dir / BUNDLE_JSON
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not a deploy bundle (no {BUNDLE_JSON})")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise BundleError(f"{path} is not a bundle description (not a JSON object)")
    return info


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_files(bundle_dir: Path, info: dict) -> None:
    """Every file this runner loads must match the hash recorded when the bundle was written, checked before
    anything is loaded: a damaged library must not reach dlopen (it can die with SIGILL/SIGBUS, no message).

    Bundles from before `files` was recorded: the library and params against manifest.json's hashes."""
    try:
        expected = info.get("files")
        loaded = [info["library"], info["params"]]
        if expected is None:
            artifacts = json.loads((bundle_dir / "manifest.json").read_text())["artifacts"]
            expected = {name: artifacts[name] for name in loaded}
        else:
            loaded += [f"lib/{name}" for name in info["runtime_libs"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{bundle_dir} has no usable file hashes ({type(exc).__name__}: {exc})") from exc
    for name in loaded:
        entry = expected.get(name) if isinstance(expected, dict) else None
        path = bundle_dir / str(name)
        if not isinstance(entry, dict) or not isinstance(name, str) or ".." in name.split("/"):
            raise BundleError(f"bundle file {name} has no recorded hash; rebuild the bundle")
        if path.is_symlink() or not path.is_file() or _sha256(path) != entry.get("sha256"):
            raise BundleError(f"bundle file {name} is missing or modified since the bundle was written; "
                              "copy the bundle again")


def load_runtime(bundle_dir: Path, info: dict) -> Any:
    """Load the bundle's runtime libraries (global symbols, so the model library resolves against them)."""
    if sys.modules.get("tvm") is not None:
        raise BundleError("the full tvm package is already imported; a second runtime copy would clash")
    import tvm_ffi

    for name in info["runtime_libs"]:
        try:
            ctypes.CDLL(str(bundle_dir / "lib" / name), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            if any(driver in str(exc) for driver in DRIVER_LIBS):  # no GPU driver: no device here
                raise BundleError(f"no {info['device']} device on this machine: cannot load {name} ({exc})",
                                  EXIT_NO_DEVICE) from exc
            raise BundleError(f"cannot load {name}: {exc}") from exc
    return tvm_ffi


def device_exists(ffi: Any, device: str) -> bool:
    return bool(ffi.get_global_func("runtime.GetDeviceAttr")(DEVICE_TYPES[device], 0, KDL_EXIST))


class BundleModel:
    """The bundle's model on its device: `run(x)` takes `[batch, time, 46, 8]` float32 and returns the output."""

    def __init__(self, bundle_dir: str | Path) -> None:
        self.dir = Path(bundle_dir)
        self.info = read_bundle(self.dir)
        check_files(self.dir, self.info)
        if self.info["device"] == "cpu":  # TVM's x86 default is half the vCPUs (it assumes SMT): use them all
            os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))
        self.ffi = ffi = load_runtime(self.dir, self.info)
        device = self.info["device"]
        if not device_exists(ffi, device):
            raise BundleError(f"no {device} device on this machine; run this bundle where there is one",
                              EXIT_NO_DEVICE)
        self.device = ffi.device(device, 0)
        self.cpu = ffi.device("cpu", 0)
        self._alloc = ffi.get_global_func("runtime.TVMTensorAllocWithScope")
        self._copy = ffi.get_global_func("runtime.TVMTensorCopyFromTo")
        executable = ffi.load_module(str(self.dir / self.info["library"]))["vm_load_executable"]()
        triples = [DEVICE_TYPES[device], 0, POOLED_ALLOCATOR]
        if device != "cpu":  # the VM runs shape computations on the host CPU
            triples += [DEVICE_TYPES["cpu"], 0, POOLED_ALLOCATOR]
        executable["vm_initialization"](*triples)
        self.main = executable["main"]
        self._keep = executable
        with np.load(self.dir / self.info["params"], allow_pickle=False) as data:
            self.params = [self.to_device(data[k]) for k in sorted(data.files)]
        try:  # the CPU pipeline lifts weight re-layout into main_transform_params: run it once, here
            transform = executable["main_transform_params"]
        except Exception:  # no such function: the weights go in as stored
            transform = None
        if transform is not None:
            self.params = list(transform(self.params))
        static = self.info.get("static_shape")
        self.static_shape = list(static) if static else None

    def to_device(self, array: np.ndarray) -> Any:
        host = np.ascontiguousarray(array)
        out = self._alloc(list(host.shape), str(host.dtype), self.device, None)
        self._copy(self.ffi.from_dlpack(host), out)
        return out

    def to_numpy(self, tensor: Any) -> np.ndarray:
        host = self._alloc(list(tensor.shape), str(tensor.dtype), self.cpu, None)
        self._copy(tensor, host)
        return np.from_dlpack(host).copy()

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.static_shape and list(x.shape[:2]) != self.static_shape:
            raise BundleError(f"bundle compiled for [batch, time] = {self.static_shape}, got {list(x.shape[:2])}")
        result = self.main(self.to_device(np.asarray(x, dtype=np.float32)), *self.params)
        if not hasattr(result, "shape"):  # a tuple of outputs: the first is the model's output
            result = result[0]
        return self.to_numpy(result)


def seeded_inputs(seed: int, count: int, batch: int, steps: int) -> list[np.ndarray]:
    """Coconet inputs: one-hot pianoroll (4 voices, some masked out) + the mask, [batch, time, 46, 8]."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        roll = np.zeros((batch, steps, 46, 4), np.float32)
        pitches = rng.integers(0, 46, size=(batch, steps, 4))
        b, t, v = np.meshgrid(range(batch), range(steps), range(4), indexing="ij")
        roll[b, t, pitches, v] = 1.0
        mask = (rng.random((batch, steps, 1, 4)) < 0.5).astype(np.float32) * np.ones((1, 1, 46, 1), np.float32)
        out.append(np.concatenate([roll * (1 - mask), mask], axis=-1))
    return out


def compare(actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> dict:
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bad = ~(err <= atol + rtol * np.abs(expected))  # NaN counts as bad
    return {"max_abs_err": float(np.nanmax(err)) if err.size else 0.0, "mismatched_elements": int(bad.sum()),
            "total_elements": int(err.size), "nan_count": int(np.isnan(actual).sum()), "passed": not bad.any()}


def _onnxruntime_session(bundle_dir: Path, info: dict, prefer_gpu: bool) -> tuple[Any, str]:
    import onnxruntime as ort

    sys.path.insert(0, str(bundle_dir))
    from ort_session import ort_session  # the package's own session factory, shipped beside this script

    providers = ["CPUExecutionProvider"]
    if prefer_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort_session(bundle_dir / info["onnx"], providers=providers)
    return session, session.get_providers()[0]


def cmd_verify(bundle_dir: Path, live: bool, seed: int) -> dict:
    model = BundleModel(bundle_dir)
    info, tol = model.info, model.info["tolerance"]
    if live:
        session, provider = _onnxruntime_session(bundle_dir, info, prefer_gpu=False)
        ref = np.load(bundle_dir / info["reference"])
        shape = ref["input_0"].shape
        inputs = seeded_inputs(seed, 2, shape[0], shape[1])
        expected = [session.run(None, {info["input_name"]: x})[0] for x in inputs]
        reference = f"onnxruntime {provider} (live)"
    else:
        with np.load(bundle_dir / info["reference"]) as ref:
            n = len([k for k in ref.files if k.startswith("input_")])
            inputs = [ref[f"input_{i}"] for i in range(n)]
            expected = [ref[f"expected_{i}"] for i in range(n)]
        reference = "onnxruntime CPU outputs stored at compile time"
    actual = [model.run(x) for x in inputs]
    stats = compare(np.concatenate([a.ravel() for a in actual]), np.concatenate([e.ravel() for e in expected]),
                    tol["atol"], tol["rtol"])
    agree = float(np.mean([np.mean(np.argmax(a, 2) == np.argmax(e, 2)) for a, e in zip(actual, expected, strict=True)]))
    return {"target": info["target"], "device": info["device"], "reference": reference, "inputs": len(inputs),
            "tolerance": tol, "argmax_agreement": agree, **stats}


def _time(fn: Any, x: np.ndarray, warmup: int, repeats: int) -> dict:
    for _ in range(warmup):
        fn(x)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        samples.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": statistics.median(samples), "min_ms": min(samples), "repeats": repeats}


def cmd_bench(bundle_dir: Path, batches: list[int], steps: int, warmup: int, repeats: int) -> dict:
    """Wall-clock per call including host↔device copies, as an application sees it."""
    model = BundleModel(bundle_dir)
    rows = []
    try:
        session, provider = _onnxruntime_session(bundle_dir, model.info, prefer_gpu=True)
    except ImportError:
        session, provider = None, None
    for batch in batches:
        if model.static_shape and model.static_shape != [batch, steps]:
            continue
        (x,) = seeded_inputs(0, 1, batch, steps)
        rows.append({"backend": model.info["backend"], "batch": batch, "time_steps": steps,
                     **_time(model.run, x, warmup, repeats)})
        if session is not None:
            rows.append({"backend": f"onnxruntime ({provider})", "batch": batch, "time_steps": steps,
                         **_time(lambda a: session.run(None, {model.info["input_name"]: a}), x, warmup, repeats)})
    return {"target": model.info["target"], "rows": rows}


# --- serve: TVM's RPC device server, for a machine that has only this bundle ----------------------------------
# TVM's server (tvm/rpc/server.py) needs the full `tvm` package; this is the same tracker protocol and the same
# runtime session loop (`rpc.ServerLoop` in libtvm_runtime.so) without it. No authentication: trusted networks.
RPC_MAGIC, RPC_TRACKER_MAGIC = 0xFF271, 0x2F271
RPC_CODE_SUCCESS, RPC_CODE_MISMATCH = RPC_MAGIC + 0, RPC_MAGIC + 2
TRACKER_SUCCESS, TRACKER_PUT, TRACKER_UPDATE_INFO, TRACKER_GET_PENDING = 0, 3, 5, 7
PING_S = 2.0


def _send_json(sock: socket.socket, value: Any) -> None:
    data = json.dumps(value).encode()
    sock.sendall(struct.pack("<i", len(data)) + data)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = b""
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed")
        chunks += chunk
    return chunks


def _recv_json(sock: socket.socket) -> Any:
    size = struct.unpack("<i", _recv_exact(sock, 4))[0]
    return json.loads(_recv_exact(sock, size).decode())


def _tracker_call(sock: socket.socket, message: list) -> Any:
    _send_json(sock, message)
    return _recv_json(sock)


def _join_tracker(tracker: tuple[str, int], key: str, port: int) -> socket.socket:
    try:
        sock = socket.create_connection(tracker, timeout=10)
        sock.sendall(struct.pack("<i", RPC_TRACKER_MAGIC))
        if struct.unpack("<i", _recv_exact(sock, 4))[0] != RPC_TRACKER_MAGIC:
            raise ConnectionError("not a TVM RPC tracker")
        if _tracker_call(sock, [TRACKER_UPDATE_INFO, {"key": "server:" + key, "addr": [None, port]}]) != 0:
            raise ConnectionError("the tracker refused the registration")
    except OSError as exc:
        raise BundleError(f"cannot join the RPC tracker at {tracker[0]}:{tracker[1]}: {exc}", EXIT_NO_DEVICE) from exc
    sock.settimeout(None)
    return sock


def _serve_session(ffi: Any, conn: socket.socket, bundle_dir: Path) -> None:
    """One client session in a forked child: uploads land in a fresh temp dir, removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="run-py-rpc-"))
    pid = os.fork()
    if pid == 0:  # child: serve until the client closes the session
        code = 0
        try:
            os.chdir(work)
            ffi.register_global_func("tvm.rpc.server.workpath", lambda path: str(work / path), override=True)
            ffi.register_global_func("tvm.rpc.server.load_module", lambda name: ffi.load_module(str(work / name)),
                                     override=True)
            ffi.get_global_func("rpc.ServerLoop")(conn.fileno())
        except BaseException:  # a client that vanished mid-session: end this child only
            code = 1
        finally:
            os._exit(code)
    conn.close()
    os.waitpid(pid, 0)
    shutil.rmtree(work, ignore_errors=True)


def cmd_serve(bundle_dir: Path, tracker: str, key: str, host: str, port: int) -> int:
    """Register this machine's device with a TVM RPC tracker under `key` and serve sessions one at a time."""
    info = read_bundle(bundle_dir)
    ffi = load_runtime(bundle_dir, info)
    if not device_exists(ffi, info["device"]):
        raise BundleError(f"no {info['device']} device on this machine to serve", EXIT_NO_DEVICE)
    tracker_host, _, tracker_port = tracker.rpartition(":")
    if not tracker_host or not tracker_port.isdigit():
        raise BundleError(f"--tracker {tracker!r} is not HOST:PORT")
    listen = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listen.bind((host, port))
    except OSError as exc:
        raise BundleError(f"cannot listen on {host}:{port}: {exc}") from exc
    listen.listen(1)
    port = listen.getsockname()[1]
    address = (tracker_host, int(tracker_port))
    conn_tracker = _join_tracker(address, key, port)
    print(f"serving {info['device']} under key {key} on {host}:{port} via tracker {tracker} (Ctrl-C stops)",
          flush=True)
    try:
        while True:
            match_key = f"{key}:{random.random()}"
            _tracker_call(conn_tracker, [TRACKER_PUT, key, [port, match_key], None])
            unmatched = 0
            while True:  # wait for the client the tracker sends here; re-announce if it never comes
                ready, _, _ = select.select([listen], [], [], PING_S)
                if ready:
                    conn, _ = listen.accept()
                    if _handshake(conn, key, match_key):
                        break
                    continue
                pending = _tracker_call(conn_tracker, [TRACKER_GET_PENDING])
                unmatched = 0 if match_key in pending else unmatched + 1
                if unmatched * PING_S > 4 + PING_S:
                    match_key = f"{key}:{random.random()}"
                    _tracker_call(conn_tracker, [TRACKER_PUT, key, [port, match_key], None])
                    unmatched = 0
            _serve_session(ffi, conn, bundle_dir)
    except (ConnectionError, OSError) as exc:
        raise BundleError(f"lost the RPC tracker at {tracker}: {exc}", EXIT_NO_DEVICE) from exc
    finally:
        with contextlib.suppress(OSError):
            conn_tracker.close()
        listen.close()


def _handshake(conn: socket.socket, key: str, match_key: str) -> bool:
    """TVM's RPC server handshake: the client must present the match key the tracker handed out."""
    try:
        conn.settimeout(10)
        if struct.unpack("<i", _recv_exact(conn, 4))[0] != RPC_MAGIC:
            conn.close()
            return False
        size = struct.unpack("<i", _recv_exact(conn, 4))[0]
        words = _recv_exact(conn, size).decode().split()
        if not words or words[0] != "client:" + match_key:
            conn.sendall(struct.pack("<i", RPC_CODE_MISMATCH))
            conn.close()
            return False
        server_key = ("server:" + key).encode()
        conn.sendall(struct.pack("<i", RPC_CODE_SUCCESS) + struct.pack("<i", len(server_key)) + server_key)
        conn.settimeout(None)
        return True
    except (OSError, ValueError):
        conn.close()
        return False


def cmd_info(bundle_dir: Path) -> dict:
    info = read_bundle(bundle_dir)
    try:
        ffi = load_runtime(bundle_dir, info)
        present = device_exists(ffi, info["device"])
    except BundleError as exc:
        present = False
        info = {**info, "device_problem": str(exc)}
    return {**info, "device_present": present}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run.py", description="Run a harmonizer deploy bundle (TVM runtime only)")
    parser.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parent)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info")
    v = sub.add_parser("verify")
    v.add_argument("--onnxruntime", action="store_true", help="run onnxruntime here on fresh seeded inputs")
    v.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("bench")
    b.add_argument("--batch", type=int, action="append")
    b.add_argument("--time", type=int, default=32)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--repeats", type=int, default=20)
    r = sub.add_parser("run")
    r.add_argument("inputs", type=Path)
    r.add_argument("outputs", type=Path)
    srv = sub.add_parser("serve", help="join a TVM RPC tracker as a device server (trusted networks only)")
    srv.add_argument("--tracker", required=True, help="HOST:PORT of the tracker")
    srv.add_argument("--key", required=True, help="device key clients ask for (--rpc-key)")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=9090, help="port to listen on (0: any free port)")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return cmd_serve(args.bundle, args.tracker, args.key, args.host, args.port)
        if args.command == "info":
            result = cmd_info(args.bundle)
        elif args.command == "verify":
            result = cmd_verify(args.bundle, args.onnxruntime, args.seed)
        elif args.command == "bench":
            result = cmd_bench(args.bundle, args.batch or [1], args.time, args.warmup, args.repeats)
        else:
            model = BundleModel(args.bundle)
            with np.load(args.inputs) as data:
                outputs = {k: model.run(data[k]) for k in data.files}
            np.savez(args.outputs, **outputs)
            result = {"ran": sorted(outputs)}
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2))
    return EXIT_VERIFY_FAILED if args.command == "verify" and not result["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())

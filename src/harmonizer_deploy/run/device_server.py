"""Thin wrappers over TVM's RPC tracker and RPC server, for `harmonizer-deploy tracker` / `device-server`.

Both bind 127.0.0.1 unless told otherwise: TVM RPC has no authentication, and a device server runs any code
a client uploads, so exposing one is an explicit choice (`--host`), for trusted networks only.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from typing import Any

from harmonizer_deploy.compiler.tracker import servers_under, tracker_summary
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.remote import RemoteSpec

LOCALHOST = "127.0.0.1"
DEVICE_PORT, DEVICE_PORT_END = 9090, 9190


def _needs_tornado() -> None:
    import importlib.util

    if importlib.util.find_spec("tornado") is None:
        raise HarmonizerError("TVM's RPC tracker needs tornado", "pip install -e '.[remote]' (tornado==6.6.1)")


def _check_bindable(host: str, port: int) -> None:
    """Say 'port in use' / 'not an address here' as one line before TVM's worker process fails on it."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        raise HarmonizerError(f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                              "pick another --port, or a --host address of this machine") from None


def _wait(proc: Any, stop: Callable[[], None]) -> None:
    """Block until the TVM worker process ends; SIGTERM and Ctrl-C stop it (never leave it orphaned)."""
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        proc.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            stop()
        except Exception:  # e.g. TVM's tracker stop dials 127.0.0.1, which a tracker on another --host ignores
            proc.kill()


def start_tracker(host: str = LOCALHOST, port: int = 9190) -> Any:
    """TVM's tracker on exactly host:port (in its own worker process); returns the `tvm.rpc.tracker.Tracker`."""
    _needs_tornado()
    _check_bindable(host, port)
    from tvm.rpc.tracker import Tracker

    return Tracker(host, port=port, port_end=port + 1, silent=True)


def serve_tracker(tracker: Any) -> None:
    _wait(tracker.proc, tracker.terminate)


def start_device_server(tracker: RemoteSpec, host: str = LOCALHOST, port: int = DEVICE_PORT,
                        port_end: int = DEVICE_PORT_END) -> Any:
    """TVM's RPC server registered under `tracker.key`; the tracker must answer first (one line if not)."""
    tracker_summary(tracker)  # raises DeviceUnavailable: tracker unreachable / not a tracker
    if port_end <= port:
        raise HarmonizerError(f"--port-end {port_end} must be above --port {port}", "widen the range")
    from tvm import rpc

    try:
        return rpc.Server(host, port, port_end, tracker_addr=(tracker.host, tracker.port), key=tracker.key,
                          silent=True)
    except Exception as exc:  # TVM's worker raises ValueError/OSError when it cannot bind
        raise HarmonizerError(f"cannot start a device server on {host}:{port}-{port_end - 1}: "
                              f"{str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else exc!r}",
                              "pick another --port, or a --host address of this machine") from None


def serve_device(server: Any) -> None:
    _wait(server.proc, server.terminate)


def tracker_status(spec: RemoteSpec) -> dict:
    """Per key: the device servers registered (host:port), how many are free, how many requests wait."""
    summary = tracker_summary(spec)
    keys = sorted({s["key"].removeprefix("server:") for s in summary.get("server_info", [])}
                  | set(summary.get("queue_info", {})))
    devices = []
    for key in keys:
        queue = summary.get("queue_info", {}).get(key, {})
        devices.append({"key": key, "servers": servers_under(summary, key), "free": int(queue.get("free", 0)),
                        "pending": int(queue.get("pending", 0))})
    return {"tracker": spec.tracker, "keys": devices}

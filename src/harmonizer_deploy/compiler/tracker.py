"""A client of TVM's RPC tracker with deadlines: every wait is bounded, every failure is one clear line.

TVM's own `TrackerSession.request` waits forever for a free device and hides which server it handed out.
This speaks the same protocol through `tvm.rpc.base` (the tracker's own message helpers) so the caller gets
the device's address (for reports and logs) and a timeout. Here, below run/, so tune can use it too.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

from harmonizer_deploy.core.errors import DeviceUnavailable
from harmonizer_deploy.core.remote import RemoteSpec

CONNECT_TIMEOUT_S = 10.0


def _connect(spec: RemoteSpec) -> socket.socket:
    """A socket to the tracker after TVM's handshake, or one line saying it cannot be reached."""
    from tvm.rpc import base

    try:
        sock = socket.create_connection((spec.host, spec.port), timeout=min(spec.timeout_s, CONNECT_TIMEOUT_S))
    except OSError as exc:
        raise DeviceUnavailable(f"cannot reach the RPC tracker at {spec.tracker} ({exc.strerror or exc})",
                                "start one with `harmonizer-deploy tracker --port PORT` or fix --rpc") from None
    try:
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        magic = struct.unpack("<i", base.recvall(sock, 4))[0]
    except (OSError, RuntimeError) as exc:
        sock.close()
        raise DeviceUnavailable(f"{spec.tracker} did not answer as a TVM RPC tracker ({exc})",
                                "check --rpc: it names the tracker, not a device server") from None
    if magic != base.RPC_TRACKER_MAGIC:
        sock.close()
        raise DeviceUnavailable(f"{spec.tracker} is not a TVM RPC tracker", "check --rpc HOST:PORT")
    return sock


def tracker_summary(spec: RemoteSpec) -> dict:
    """The tracker's own summary: {"queue_info": {key: {free, pending}}, "server_info": [{key, addr}]}."""
    from tvm.rpc import base

    sock = _connect(spec)
    try:
        base.sendjson(sock, [base.TrackerCode.SUMMARY])
        code, summary = base.recvjson(sock)
    except (OSError, RuntimeError, ValueError) as exc:
        raise DeviceUnavailable(f"the RPC tracker at {spec.tracker} dropped the connection ({exc})",
                                "check that the tracker is running") from None
    finally:
        sock.close()
    if code != base.TrackerCode.SUCCESS:
        raise DeviceUnavailable(f"the RPC tracker at {spec.tracker} refused a summary", "check the tracker")
    return summary


def servers_under(summary: dict, key: str) -> list[str]:
    """`host:port` of every device server registered under `key`."""
    return sorted(f"{s['addr'][0]}:{s['addr'][1]}" for s in summary.get("server_info", [])
                  if s.get("key") == f"server:{key}" and s.get("addr"))


@dataclass
class RemoteSession:
    """An RPC session on one device the tracker assigned, and where that device is."""

    session: Any
    key: str
    address: str

    @property
    def name(self) -> str:
        return f"{self.key}@{self.address}"


def request_session(spec: RemoteSpec, session_timeout_s: float = 0) -> RemoteSession:
    """A session on a free device under `spec.key`, waiting at most `spec.timeout_s` for one to be free."""
    from tvm import rpc
    from tvm.rpc import base

    summary = tracker_summary(spec)
    registered = servers_under(summary, spec.key)
    if not registered:
        keys = sorted({s["key"].removeprefix("server:") for s in summary.get("server_info", [])})
        raise DeviceUnavailable(f"no device is registered under key {spec.key!r} at the tracker {spec.tracker}"
                                f" (keys there: {', '.join(keys) or 'none'})",
                                "start one: harmonizer-deploy device-server --tracker "
                                f"{spec.tracker} --key {spec.key}, or fix --rpc-key")
    sock = _connect(spec)
    try:
        sock.settimeout(spec.timeout_s)
        base.sendjson(sock, [base.TrackerCode.REQUEST, spec.key, "", 1])
        code, value = base.recvjson(sock)
    except TimeoutError:
        raise DeviceUnavailable(f"no free device under key {spec.key!r} within --rpc-timeout {spec.timeout_s:g} s "
                                f"({len(registered)} registered at {spec.tracker}, all busy)",
                                "wait for the running jobs, add device servers, or raise --rpc-timeout") from None
    except (OSError, RuntimeError, ValueError) as exc:
        raise DeviceUnavailable(f"the RPC tracker at {spec.tracker} dropped the connection ({exc})",
                                "check that the tracker is running") from None
    finally:
        sock.close()
    if code != base.TrackerCode.SUCCESS:
        raise DeviceUnavailable(f"the RPC tracker at {spec.tracker} refused a device for {spec.key!r}",
                                "check the tracker")
    host, port, match_key = value
    address = f"{host}:{port}"
    try:
        session = rpc.connect(host, port, match_key, session_timeout_s)
    except Exception as exc:  # TVM raises RPCError/RuntimeError/OSError for the same refusal
        raise DeviceUnavailable(f"the device {spec.key}@{address} the tracker assigned did not accept a session "
                                f"({str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else exc!r})",
                                "check that device server; retry, or restart it") from None
    return RemoteSession(session, spec.key, address)

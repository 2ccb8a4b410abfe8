"""Where the remote devices are: a TVM RPC tracker address and a device key, parsed once from the CLI.

Plain data (no TVM), so every layer that talks to remote devices (tune in compiler/, verify and bench in run/)
takes the same value.
"""

from __future__ import annotations

from dataclasses import dataclass

from harmonizer_deploy.core.errors import HarmonizerError

DEFAULT_TRACKER_PORT = 9190
DEFAULT_RPC_TIMEOUT_S = 60.0


def parse_address(text: str, what: str = "--rpc") -> tuple[str, int]:
    """`HOST:PORT` → (host, port); a bare host gets the tracker's default port."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = text.strip(), str(DEFAULT_TRACKER_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise HarmonizerError(f"{what} {text!r} is not HOST:PORT", f"pass e.g. {what} 127.0.0.1:9190")
    return host, int(port)


@dataclass(frozen=True)
class RemoteSpec:
    """A TVM RPC tracker and the key its devices registered under (`device-server --key`)."""

    host: str
    port: int
    key: str
    timeout_s: float = DEFAULT_RPC_TIMEOUT_S

    @classmethod
    def parse(cls, address: str | None, key: str | None, timeout_s: float | None = None) -> RemoteSpec | None:
        """From `--rpc HOST:PORT --rpc-key KEY --rpc-timeout S`; None when --rpc is not given."""
        if address is None:
            if key is not None:
                raise HarmonizerError("--rpc-key needs --rpc HOST:PORT (the tracker)", "pass --rpc HOST:PORT too")
            return None
        host, port = parse_address(address)
        if not key or any(c.isspace() for c in key):
            raise HarmonizerError("--rpc needs --rpc-key KEY: the key the devices registered under",
                                  "pass the key given to `harmonizer-deploy device-server --key`")
        timeout = DEFAULT_RPC_TIMEOUT_S if timeout_s is None else float(timeout_s)
        if not timeout > 0:
            raise HarmonizerError(f"--rpc-timeout must be > 0 seconds, got {timeout_s}", "pass e.g. --rpc-timeout 60")
        return cls(host, port, key, timeout)

    @property
    def tracker(self) -> str:
        return f"{self.host}:{self.port}"

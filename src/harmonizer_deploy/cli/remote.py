"""Commands for many machines: `tracker` (TVM's RPC tracker) and `device-server` (TVM's RPC server)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from harmonizer_deploy.cli.common import JsonOpt, cli_command, emit_json, out

remote_app = typer.Typer()

HostOpt = Annotated[str, typer.Option(help="Address to bind (default 127.0.0.1; TVM RPC has no authentication: "
                                           "bind another address only on a trusted network).")]

RpcOpt = Annotated[str | None, typer.Option("--rpc", help="HOST:PORT of a TVM RPC tracker: run on a remote device "
                                            "it assigns.")]
RpcKeyOpt = Annotated[str | None, typer.Option("--rpc-key", help="Key the remote devices registered under.")]
RpcTimeoutOpt = Annotated[float, typer.Option("--rpc-timeout", help="Seconds to wait for a free remote device.")]


@remote_app.command()
@cli_command
def tracker(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9190,
    host: HostOpt = "127.0.0.1",
    status: Annotated[str | None, typer.Option("--status", help="HOST:PORT of a running tracker: list its devices "
                                               "and exit.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start TVM's RPC tracker (device servers register with it; verify/bench/tune --rpc ask it for devices)."""
    from harmonizer_deploy.core.remote import RemoteSpec, parse_address
    from harmonizer_deploy.run import device_server

    if status is not None:
        address = RemoteSpec(*parse_address(status, "--status"), key="-")
        report = device_server.tracker_status(address)
        if as_json:
            emit_json(report)
            return
        out.print(f"tracker {report['tracker']}: {len(report['keys'])} key(s)", highlight=False)
        for entry in report["keys"]:
            servers = ", ".join(entry["servers"]) or "none"
            out.print(f"  {escape(entry['key'])}: {len(entry['servers'])} server(s) [{servers}], {entry['free']} "
                      f"free, {entry['pending']} waiting", highlight=False)
        return
    started = device_server.start_tracker(host, port)
    out.print(f"RPC tracker on {host}:{started.port} (Ctrl-C stops); devices join with: harmonizer-deploy "
              f"device-server --tracker {host}:{started.port} --key KEY", highlight=False)
    device_server.serve_tracker(started)


@remote_app.command("device-server")
@cli_command
def device_server_(
    tracker: Annotated[str, typer.Option("--tracker", help="HOST:PORT of the RPC tracker to join.")],
    key: Annotated[str, typer.Option("--key", help="Device key clients ask for, e.g. cpu-znver5, cuda-h100.")],
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(help="First port to try (the server takes the first free one up to "
                                           "--port-end).")] = 9090,
    port_end: Annotated[int | None, typer.Option(help="End of the port range, exclusive (default --port + 100).")]
    = None,
) -> None:
    """Serve this machine's devices to the tracker under KEY (TVM's RPC server; runs uploaded artifacts)."""
    from harmonizer_deploy.core.remote import RemoteSpec
    from harmonizer_deploy.run import device_server

    spec = RemoteSpec.parse(tracker, key)
    assert spec is not None
    started = device_server.start_device_server(spec, host, port, port_end or port + 100)
    out.print(f"device server {host}:{started.port} joined tracker {spec.tracker} under key {escape(key)} "
              "(Ctrl-C stops)", highlight=False)
    device_server.serve_device(started)

"""`tune --rpc`: MetaSchedule's RPCRunner measuring on every device server under a tracker key at once.

Candidates are built here (LocalBuilder) and measured remotely; records land in the same JSON database as a
local run. TVM's runner does not say which server measured what, so its session and evaluator hooks
(`f_create_session`, `f_run_evaluator`) are wrapped to append one JSON line per measurement to a log.
The hooks run in MetaSchedule's worker processes: they are module-level functions, configured by env vars.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harmonizer_deploy.compiler.tracker import request_session, servers_under, tracker_summary
from harmonizer_deploy.core.errors import DeviceUnavailable
from harmonizer_deploy.core.remote import RemoteSpec

LOG_ENV = "HARMONIZER_RPC_MEASURE_LOG"
TIMEOUT_ENV = "HARMONIZER_RPC_TIMEOUT"
MEASUREMENTS = "rpc-measurements.jsonl"
# Bounds, not expectations: a MetaSchedule worker process imports TVM before its first job, which took 49 s for
# a trivial kernel on a loaded 2-core machine (LocalBuilder's default 30 s timed every build out there).
BUILD_TIMEOUT_S = 300
SESSION_TIMEOUT_S = 300  # one candidate's session: upload + measurement; a slower one counts as failed

_current: dict[str, str] = {}  # per worker process: the device the open session is on


def create_logged_session(rpc_config: Any) -> Any:
    """MetaSchedule `f_create_session`: a session from the tracker, remembering which device it is on."""
    spec = RemoteSpec(rpc_config.tracker_host, int(rpc_config.tracker_port), rpc_config.tracker_key,
                      float(os.environ.get(TIMEOUT_ENV, "60")))
    remote = request_session(spec, rpc_config.session_timeout_sec)
    _current["device"] = remote.name
    return remote.session


def upload_logged_module(session: Any, local_path: str, remote_path: str) -> Any:
    """MetaSchedule `f_upload_module` (TVM's default), remembering which candidate this session measures."""
    from tvm.s_tir.meta_schedule.runner.rpc_runner import default_upload_module

    _current["candidate"] = Path(local_path).parent.name
    return default_upload_module(session, local_path, remote_path)


def run_logged_evaluator(session: Any, rt_mod: Any, device: Any, evaluator_config: Any,
                         repeated_args: list) -> list[float]:
    """MetaSchedule `f_run_evaluator` (TVM's default), then one log line: which server measured what."""
    from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common

    costs = run_evaluator_common(rt_mod, device, evaluator_config, repeated_args)
    path = os.environ.get(LOG_ENV)
    if path:
        line = json.dumps({"server": _current.get("device", "?"), "candidate": _current.get("candidate", "?"),
                           "costs_s": [float(c) for c in costs], "time": round(time.time(), 3)})
        with open(path, "a") as log:  # one short append per line: whole lines even with parallel workers
            log.write(line + "\n")
    return costs


def rpc_runner(spec: RemoteSpec, log_path: Path) -> tuple[Any, list[str]]:
    """MetaSchedule's RPCRunner with one worker per server registered under the key, and those servers."""
    from tvm.s_tir import meta_schedule as ms

    registered = servers_under(tracker_summary(spec), spec.key)
    if not registered:
        raise DeviceUnavailable(f"no device is registered under key {spec.key!r} at the tracker {spec.tracker}",
                                f"start some: harmonizer-deploy device-server --tracker {spec.tracker} "
                                f"--key {spec.key}")
    os.environ[LOG_ENV] = str(log_path)  # read by the hooks in MetaSchedule's worker processes
    os.environ[TIMEOUT_ENV] = str(spec.timeout_s)
    config = ms.runner.RPCConfig(tracker_host=spec.host, tracker_port=spec.port, tracker_key=spec.key,
                                 session_priority=1, session_timeout_sec=SESSION_TIMEOUT_S)
    runner = ms.runner.RPCRunner(rpc_config=config, max_workers=len(registered),
                                 f_create_session=create_logged_session, f_upload_module=upload_logged_module,
                                 f_run_evaluator=run_logged_evaluator)
    return runner, registered


def local_builder() -> Any:
    """MetaSchedule's LocalBuilder with a timeout that survives a busy build machine."""
    from tvm.s_tir import meta_schedule as ms

    return ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S)


def measurements_by_server(log_path: Path, since: float = 0.0) -> dict[str, int]:
    """How many candidates each server measured (from the log, lines after `since`)."""
    if not log_path.is_file():
        return {}
    counts: Counter[str] = Counter()
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("time", 0) >= since:
            counts[entry.get("server", "?")] += 1
    return dict(sorted(counts.items()))


def remote_kernel_timer(spec: RemoteSpec) -> Any:
    """A `keep_winning_records` timer that times a kernel on a device under the key, not on this machine:
    records tuned on the remote device are judged against the hand schedules on that same kind of device."""

    def seconds(mod: Any, target: Any) -> float:
        import tempfile

        import numpy as np
        import tvm

        func = mod["main"]
        rng = np.random.default_rng(0)
        library = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "kernel.so"
            library.export_library(str(path))
            remote = request_session(spec)
            remote.session.upload(str(path))
            module = remote.session.load_module(path.name)
        device = remote.session.cpu(0)
        args = [tvm.runtime.tensor(rng.random([int(d) for d in p.shape]).astype(str(p.dtype)), device)
                for p in func.params]
        return float(module.time_evaluator("main", device, number=20, repeat=5)(*args).median)

    return seconds

"""Remote devices over TVM's RPC tracker: a tracker and two cpu device servers on 127.0.0.1, all started
as subprocesses of the test, every wait bounded, every process group killed in `finally`."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harmonizer_deploy.cli import app
from harmonizer_deploy.core.errors import EXIT_NO_DEVICE, EXIT_USER_ERROR

pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado (the [remote] extra)")

runner = CliRunner()
KEY = "cpu-test"
START_TIMEOUT_S = 60
CLI = [sys.executable, "-c", "import sys; from harmonizer_deploy.cli import main; sys.argv[0] = 'harmonizer-deploy'; "
       "main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(*args: str, log: Path) -> subprocess.Popen:
    """A CLI command in its own process group (so its TVM worker processes die with it)."""
    handle = log.open("w")
    return subprocess.Popen([*CLI, *args], stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")})


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def status(address: str) -> dict:
    result = runner.invoke(app, ["tracker", "--status", address, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def servers(address: str, key: str = KEY) -> list[str]:
    return next((k["servers"] for k in status(address)["keys"] if k["key"] == key), [])


def wait_for(condition, what: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class Pool:
    """A tracker and device servers, started by the test and always stopped by it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.by_address: dict[str, subprocess.Popen] = {}
        self.tracker = self.spawn("tracker", "--port", str(self.port), log_name="tracker.log")
        wait_for(lambda: _answers(self.port), "the tracker")

    def spawn(self, *args: str, log_name: str) -> subprocess.Popen:
        proc = start(*args, log=self.tmp / log_name)
        self.procs.append(proc)
        return proc

    def add_server(self, key: str = KEY) -> subprocess.Popen:
        before = len(servers(self.address, key))
        port = free_port()
        proc = self.spawn("device-server", "--tracker", self.address, "--key", key, "--port", str(port),
                          "--port-end", str(port + 1), log_name=f"server-{len(self.procs)}.log")
        self.by_address[f"127.0.0.1:{port}"] = proc
        wait_for(lambda: len(servers(self.address, key)) > before or proc.poll() is not None, "a device server")
        assert proc.poll() is None, (self.tmp / f"server-{len(self.procs) - 1}.log").read_text()
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def pool(tmp_path):
    pool = Pool(tmp_path)
    try:
        yield pool
    finally:
        pool.close()


def one_line(result) -> str:
    return " ".join(result.output.split())


def test_verify_through_the_tracker_passes_and_names_the_remote_device(pool, built):
    pool.add_server()
    pool.add_server()
    registered = servers(pool.address)
    assert len(registered) == 2 and all(s.startswith("127.0.0.1:") for s in registered)
    result = runner.invoke(app, ["verify", str(built / "cpu"), "--target", "cpu", "--num-inputs", "2", "--time",
                                 "8", "--rpc", pool.address, "--rpc-key", KEY, "--rpc-timeout", "30", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and report["outputs"][0]["max_abs_err"] <= 1e-4
    remote = report["remote"]
    assert remote["key"] == KEY and remote["tracker"] == pool.address
    assert remote["device"] in {f"{KEY}@{s}" for s in registered}
    text = runner.invoke(app, ["verify", str(built / "cpu"), "--target", "cpu", "--num-inputs", "1", "--time", "8",
                               "--rpc", pool.address, "--rpc-key", KEY])
    assert text.exit_code == 0, text.output
    assert f"ran on remote device {KEY}@127.0.0.1:" in one_line(text) and "PASSED" in text.output


def test_unreachable_tracker_unknown_key_and_busy_devices_are_one_line(pool, built):
    args = ["verify", str(built / "cpu"), "--target", "cpu", "--num-inputs", "1", "--time", "8"]
    result = runner.invoke(app, [*args, "--rpc", f"127.0.0.1:{free_port()}", "--rpc-key", KEY])
    assert result.exit_code == EXIT_NO_DEVICE and "cannot reach the RPC tracker" in one_line(result)
    result = runner.invoke(app, [*args, "--rpc", pool.address, "--rpc-key", "nobody"])
    assert result.exit_code == EXIT_NO_DEVICE, result.output
    assert "no device is registered under key 'nobody'" in one_line(result) and "Traceback" not in result.output
    result = runner.invoke(app, [*args, "--rpc", pool.address])
    assert result.exit_code == EXIT_USER_ERROR and "--rpc needs --rpc-key" in one_line(result)
    result = runner.invoke(app, [*args, "--rpc", "nohost:", "--rpc-key", KEY])
    assert result.exit_code == EXIT_USER_ERROR and "is not HOST:PORT" in one_line(result)

    # the only device is held by another client: no free device within --rpc-timeout, and no hang
    pool.add_server()
    from harmonizer_deploy.compiler.tracker import request_session
    from harmonizer_deploy.core.remote import RemoteSpec

    held = request_session(RemoteSpec("127.0.0.1", pool.port, KEY, 10))
    try:
        t0 = time.monotonic()
        result = runner.invoke(app, [*args, "--rpc", pool.address, "--rpc-key", KEY, "--rpc-timeout", "2"])
        assert time.monotonic() - t0 < 30
        assert result.exit_code == EXIT_NO_DEVICE, result.output
        assert "no free device under key 'cpu-test' within --rpc-timeout 2 s" in one_line(result)
    finally:
        del held


@pytest.mark.slow  # two device servers started and stopped: ~50 s on 2 busy cores
def test_a_device_lost_mid_run_is_retried_once_on_another_then_reported(pool, built):
    from harmonizer_deploy.conversion.inputs import make_inputs
    from harmonizer_deploy.core.remote import RemoteSpec
    from harmonizer_deploy.run.rpc import RemoteDeviceLost, RemoteRunner

    pool.add_server()
    pool.add_server()
    inputs = make_inputs(0, 2, 1, 8)
    run = RemoteRunner(built / "cpu", RemoteSpec("127.0.0.1", pool.port, KEY, 20))
    first = run(inputs[:1])
    lost = run.device
    stop(pool.by_address[lost.split("@", 1)[1]])  # the device server goes away between two calls
    t0 = time.monotonic()
    second = run(inputs)
    assert time.monotonic() - t0 < 60
    assert run.device != lost and run.devices == [lost, run.device]
    assert len(second) == 2 and second[0].shape == first[0].shape
    assert run.events and f"remote device {lost} was lost mid-run" in run.events[0]

    # the second loss is reported, not retried again, and never hangs
    stop(pool.by_address[run.device.split("@", 1)[1]])
    t0 = time.monotonic()
    with pytest.raises(RemoteDeviceLost, match="was lost mid-run"):
        run(inputs)
    assert time.monotonic() - t0 < 60


def test_verify_reports_a_lost_device_in_one_line_when_no_other_is_left(pool, built, monkeypatch):
    """The only device stops while verify runs: exit 4 with one line, within the bounded timeout."""
    from harmonizer_deploy.run import rpc

    pool.add_server()
    (only,) = pool.by_address.values()
    real_run = rpc.RemoteModel.run

    def run_then_lose_the_device(self, x):
        stop(only)  # the server process group is killed while this call is about to go out
        return real_run(self, x)

    monkeypatch.setattr(rpc.RemoteModel, "run", run_then_lose_the_device)
    t0 = time.monotonic()
    result = runner.invoke(app, ["verify", str(built / "cpu"), "--target", "cpu", "--num-inputs", "1", "--time",
                                 "8", "--rpc", pool.address, "--rpc-key", KEY, "--rpc-timeout", "3"])
    assert time.monotonic() - t0 < 90
    assert result.exit_code == EXIT_NO_DEVICE, result.output
    # the loss itself is a warning line as it happens; the outcome is the one error line after it
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and "was lost mid-run" in errors[0] and "Traceback" not in result.output
    assert all(ln.startswith(("warning:", "error:")) for ln in lines), lines


def test_bench_rpc_gives_the_remote_tvm_row_next_to_the_local_rows(pool, built, tmp_path):
    pool.add_server()
    (address,) = servers(pool.address)
    result = runner.invoke(app, ["bench", "--backend", "onnxruntime", "--backend", "tvm-cpu", "--build-dir",
                                 str(built), "--batch", "1", "--time", "8", "--warmup", "1", "--repeats", "3",
                                 "--harmonize-repeats", "0", "--out-dir", str(tmp_path / "res"), "--rpc",
                                 pool.address, "--rpc-key", KEY, "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["backend"]: r for r in json.loads(result.stdout)["rows"]}
    assert set(rows) == {"onnxruntime", "tvm-cpu", "tvm-cpu@rpc"}
    remote = rows["tvm-cpu@rpc"]
    assert remote["where"] == f"remote {KEY}@{address}" and remote["repeats"] == 3
    assert 0 < remote["min_ms"] <= remote["p50_ms"] and "where" not in rows["tvm-cpu"]
    table = (tmp_path / "res" / "bench.md").read_text()
    assert f"tvm-cpu@rpc (remote {KEY}@{address}, 3 repeats)" in table


@pytest.mark.slow  # 16 MetaSchedule trials built here and measured on two device servers: minutes on 2 cores
@pytest.mark.skipif(importlib.util.find_spec("xgboost") is None, reason="needs the [tune] extra (xgboost)")
def test_tune_rpc_measures_on_both_servers_and_compile_applies_the_records(pool, built, tmp_path, monkeypatch):
    import harmonizer_deploy as hd
    from harmonizer_deploy.compiler.targets import targets_dir

    targets = tmp_path / "targets"  # records written by this test never land in the repository
    shutil.copytree(targets_dir(), targets, ignore=shutil.ignore_patterns("tuning"))
    monkeypatch.setenv("HARMONIZER_DEPLOY_TARGETS", str(targets))
    monkeypatch.chdir(tmp_path)  # build/tuning-logs/ goes here
    pool.add_server()
    pool.add_server()
    registered = servers(pool.address)
    from harmonizer_deploy.compiler.tuning import tune
    from harmonizer_deploy.core.remote import RemoteSpec

    # the library, not CliRunner: MetaSchedule's loggers keep the stream they were created with, which CliRunner
    # closes after the command
    tuned = tune(built / "model.onnx", "cpu", batch=1, time_steps=8, trials=16,
                 remote=RemoteSpec("127.0.0.1", pool.port, KEY, 60))
    assert tuned["trials"] == 16 and sorted(tuned["rpc"]["servers"]) == sorted(registered)
    measured = tuned["rpc"]["measurements_by_server"]
    assert set(measured) == {f"{KEY}@{s}" for s in registered}, measured  # both servers measured candidates
    log = [json.loads(line) for line in (tmp_path / tuned["rpc"]["log"]).read_text().splitlines()]
    assert all(entry["costs_s"] and min(entry["costs_s"]) > 0 for entry in log)
    records = Path(tuned["records"])
    assert (records / "database_tuning_record.json").is_file() and (records / "meta.json").is_file()
    compiled = hd.compile(built / "model.onnx", "cpu", tmp_path / "tuned", batch=1, time_steps=8)
    assert compiled.manifest["tuning"]["used"] is (tuned["records_kept"] > 0)
    if tuned["records_kept"]:
        assert compiled.manifest["tuning"]["records"] == str(records)
    assert hd.verify(tmp_path / "tuned", "cpu", num_inputs=1).passed


def test_a_bundle_run_py_serve_joins_the_tracker_and_a_cpu_bundle_verifies_through_it(pool, built, tmp_path):
    """A machine with only the deploy bundle (TVM runtime + apache-tvm-ffi, no compiler) serves the pool."""
    from harmonizer_deploy.compiler.bundle import make_bundle

    bundle = tmp_path / "bundle"
    make_bundle(built / "cpu", bundle)
    port = free_port()
    log = (tmp_path / "bundle-serve.log").open("w")
    proc = subprocess.Popen([sys.executable, str(bundle / "run.py"), "serve", "--tracker", pool.address, "--key",
                             "bundle-cpu", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    pool.procs.append(proc)
    wait_for(lambda: servers(pool.address, "bundle-cpu") or proc.poll() is not None, "run.py serve")
    assert proc.poll() is None, (tmp_path / "bundle-serve.log").read_text()
    assert servers(pool.address, "bundle-cpu") == [f"127.0.0.1:{port}"]
    for _ in range(2):  # the server takes a second session after the first ends
        result = runner.invoke(app, ["verify", str(built / "cpu"), "--target", "cpu", "--num-inputs", "2", "--time",
                                     "8", "--rpc", pool.address, "--rpc-key", "bundle-cpu", "--rpc-timeout", "30",
                                     "--json"])
        assert result.exit_code == 0, result.output + (tmp_path / "bundle-serve.log").read_text()
        report = json.loads(result.stdout)
        assert report["passed"] and report["remote"]["device"] == f"bundle-cpu@127.0.0.1:{port}"


def test_a_cuda_artifact_sent_to_a_cpu_only_server_stops_before_uploading(pool, built, tmp_path):
    """The remote device kind is checked first: one line, exit 4, nothing uploaded or run."""
    import shutil as sh

    from harmonizer_deploy.core.remote import RemoteSpec
    from harmonizer_deploy.run.rpc import RemoteModel

    fake = tmp_path / "cuda"
    sh.copytree(built / "cpu", fake)
    manifest = json.loads((fake / "manifest.json").read_text())
    manifest.update(target="cuda", device="cuda")
    (fake / "manifest.json").write_text(json.dumps(manifest))
    pool.add_server()
    with pytest.raises(Exception, match=r"remote device cpu-test@127\.0\.0\.1:\d+ has no cuda device") as info:
        RemoteModel(fake, RemoteSpec("127.0.0.1", pool.port, KEY, 20))
    assert info.value.exit_code == EXIT_NO_DEVICE


def test_tracker_and_device_server_refuse_in_one_line_and_stop_cleanly(tmp_path):
    result = runner.invoke(app, ["device-server", "--tracker", f"127.0.0.1:{free_port()}", "--key", KEY])
    assert result.exit_code == EXIT_NO_DEVICE and "cannot reach the RPC tracker" in one_line(result)
    result = runner.invoke(app, ["tracker", "--status", "127.0.0.1:x"])
    assert result.exit_code == EXIT_USER_ERROR and "is not HOST:PORT" in one_line(result)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        result = runner.invoke(app, ["tracker", "--port", str(busy.getsockname()[1])])
        assert result.exit_code == EXIT_USER_ERROR and "cannot listen on 127.0.0.1:" in one_line(result)
    # SIGTERM to the command stops TVM's tracker worker with it: the port is free again
    port = free_port()
    proc = start("tracker", "--port", str(port), log=tmp_path / "tracker.log")
    try:
        wait_for(lambda: _answers(port), "the tracker")
        assert status(f"127.0.0.1:{port}") == {"tracker": f"127.0.0.1:{port}", "keys": []}
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        wait_for(lambda: not _answers(port), "the tracker to stop", timeout=15)
    finally:
        stop(proc)

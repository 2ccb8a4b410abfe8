"""Headless Chromium as a subprocess: a real WebGPU adapter (SwiftShader on machines without a GPU), a fresh
profile per run, no network beyond 127.0.0.1, always killed at the end or on timeout."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import HarmonizerError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
CHROMIUM_FIX = "apt-get install -y chromium (Debian), or run scripts/install-web-deps.sh"
FLAGS = (
    "--headless=new", "--no-sandbox", "--enable-unsafe-webgpu",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--no-default-browser-check", "--disable-dev-shm-usage", "--mute-audio", "--window-size=1280,900",
)


def chromium_path() -> str:
    """The Chromium executable (`$HARMONIZER_CHROMIUM` first)."""
    env = os.environ.get("HARMONIZER_CHROMIUM")
    if env:
        return env
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise HarmonizerError("chromium is not installed (needed to run WebGPU/wasm artifacts)", CHROMIUM_FIX)


@contextlib.contextmanager
def chromium(url: str, extra_flags: tuple[str, ...] = ()) -> Iterator[subprocess.Popen]:
    """Run headless Chromium on `url` for the duration of the block; stderr goes to a temp log."""
    exe = chromium_path()
    with tempfile.TemporaryDirectory(prefix="hd-chromium-") as profile:
        log_path = Path(profile) / "chromium.log"
        with open(log_path, "wb") as log:
            cmd = [exe, *FLAGS, f"--user-data-dir={profile}/profile", *extra_flags, url]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                yield proc
            finally:
                _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """Terminate Chromium's whole process group (it forks GPU/renderer helpers), escalating to SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

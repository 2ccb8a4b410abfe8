"""Headless Chromium as a subprocess: a real WebGPU adapter (SwiftShader on machines without a GPU), a fresh
profile per run, no network beyond 127.0.0.1, always killed at the end or on timeout."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from harmonizer_deploy.core.errors import HarmonizerError

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
        found = shutil.which(env)
        if found is None:
            raise HarmonizerError(f"HARMONIZER_CHROMIUM={env} is not an executable", "unset it or fix the path")
        return found
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


class DevToolsPipe:
    """Chromium's DevTools protocol over `--remote-debugging-pipe` (fd 3: commands in, fd 4: replies out, each
    message JSON followed by a NUL byte). No network port is opened; used here only to take screenshots."""

    def __init__(self, to_browser: int, from_browser: int) -> None:
        self.to_browser, self.from_browser = to_browser, from_browser
        self.buffer = b""
        self.next_id = 0

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout_s: float = 30.0) -> dict:
        self.next_id += 1
        message: dict = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise HarmonizerError(f"DevTools {method} failed: {reply['error'].get('message')}",
                                              "rerun; report it if it persists")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_browser], [], [], left)[0]:
                raise HarmonizerError(f"DevTools {method} got no reply within {timeout_s:.0f} s",
                                      "rerun; report it if it persists")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise HarmonizerError(f"chromium closed the DevTools pipe during {method}", "rerun")
            self.buffer += chunk

    def screenshot(self, url_prefix: str, path: Path) -> Path:
        """Save a PNG of the page whose URL starts with `url_prefix` (atomically)."""
        pages = [t for t in self.call("Target.getTargets")["targetInfos"]
                 if t.get("type") == "page" and t.get("url", "").startswith(url_prefix)]
        if not pages:
            raise HarmonizerError(f"no open page at {url_prefix}", "rerun; report it if it persists")
        session = self.call("Target.attachToTarget", {"targetId": pages[0]["targetId"], "flatten": True})["sessionId"]
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)["data"]
        from harmonizer_deploy.core.artifacts import atomic_file

        with atomic_file(path) as tmp:
            tmp.write_bytes(base64.b64decode(data))
        return path


@contextlib.contextmanager
def chromium_with_devtools(url: str) -> Iterator[tuple[subprocess.Popen, DevToolsPipe]]:
    """Like `chromium`, plus a DevTools pipe (for screenshots)."""
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()

    def child_fds() -> None:  # in the child, before exec: the pipe ends on fds 3 and 4 as Chromium expects
        high_r, high_w = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)  # not 3/4
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    exe = chromium_path()
    try:
        with tempfile.TemporaryDirectory(prefix="hd-chromium-") as profile, \
                open(Path(profile) / "chromium.log", "wb") as log:
            cmd = [exe, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}/profile", url]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, pass_fds=(3, 4), preexec_fn=child_fds)
            os.close(to_r)
            os.close(from_w)
            to_r = from_w = -1
            try:
                yield proc, DevToolsPipe(to_w, from_r)
            finally:
                _stop(proc)
    finally:
        for fd in (to_r, to_w, from_r, from_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


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

"""A small HTTP server on 127.0.0.1 for the browser: static page assets, tvmjs, compiled artifacts, and (for
verify/bench) the job, its inputs and the POSTed outputs. Only ever binds the loopback interface."""

from __future__ import annotations

import json
import mimetypes
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

STATIC_DIR = Path(__file__).resolve().parent / "static"
HOST = "127.0.0.1"
MAX_POST_BYTES = 256 << 20
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")


@dataclass
class Job:
    """What the runner page does: run `inputs` through the artifact; the outputs/report arrive by POST."""

    artifact_url: str
    inputs: list[bytes]
    shapes: list[list[int]]
    warmup: int = 0
    repeats: int = 0
    outputs: dict[int, bytes] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    report: dict[str, Any] | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def description(self) -> dict[str, Any]:
        return {"artifact": self.artifact_url, "warmup": self.warmup, "repeats": self.repeats,
                "inputs": [{"url": f"/inputs/{i}.bin", "shape": s} for i, s in enumerate(self.shapes)]}


def _inside(root: Path, rel: str) -> Path | None:
    """`root/rel` if it stays inside root (no `..` escapes), else None."""
    try:
        path = (root / rel).resolve()
        path.relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    return path


class WebServer:
    """Serves `/static/*`, `/vendor/tvmjs.js`, `/artifacts/<name>/*` (from `artifacts`), `/` (index page), and
    the verify job endpoints when a job is set. Runs in a background thread; use as a context manager."""

    def __init__(self, tvmjs: Path, artifacts: dict[str, Path], job: Job | None = None, port: int = 0,
                 extra_files: dict[str, Path] | None = None) -> None:
        self.tvmjs = tvmjs
        self.artifacts = artifacts
        self.job = job
        self.extra_files = extra_files or {}
        self.posted: dict[str, Any] = {}
        self.posted_event = threading.Event()
        self.httpd = ThreadingHTTPServer((HOST, port), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.httpd.server_address[1]}"

    def __enter__(self) -> WebServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet: the CLI reports what matters
                return

            def _send(self, body: bytes, ctype: str, status: int = 200) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _file(self, path: Path | None) -> None:
                if path is None or not path.is_file():
                    self._send(b"not found", "text/plain", 404)
                    return
                ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                self._send(path.read_bytes(), ctype)

            def do_GET(self) -> None:
                path = unquote(urlparse(self.path).path)
                job = server.job
                if path in ("/", "/index.html"):
                    self._file(STATIC_DIR / "index.html")
                elif path.startswith("/static/"):
                    self._file(_inside(STATIC_DIR, path.removeprefix("/static/")))
                elif path == "/vendor/tvmjs.js":
                    self._file(server.tvmjs)
                elif path.startswith("/artifacts/"):
                    name, _, rest = path.removeprefix("/artifacts/").partition("/")
                    root = server.artifacts.get(name)
                    self._file(_inside(root, rest) if root and rest else None)
                elif path in server.extra_files:
                    self._file(server.extra_files[path])
                elif path == "/artifacts.json":
                    self._send(json.dumps(sorted(server.artifacts)).encode(), "application/json")
                elif job and path == "/job.json":
                    self._send(json.dumps(job.description()).encode(), "application/json")
                elif job and path.startswith("/inputs/") and path.endswith(".bin"):
                    i = path.removeprefix("/inputs/").removesuffix(".bin")
                    if i.isdigit() and int(i) < len(job.inputs):
                        self._send(job.inputs[int(i)], "application/octet-stream")
                    else:
                        self._send(b"not found", "text/plain", 404)
                else:
                    self._send(b"not found", "text/plain", 404)

            def do_POST(self) -> None:
                path = urlparse(self.path).path
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_POST_BYTES:
                    self._send(b"too large", "text/plain", 413)
                    return
                body = self.rfile.read(length)
                job = server.job
                if job and path.startswith("/output/") and path.removeprefix("/output/").isdigit():
                    job.outputs[int(path.removeprefix("/output/"))] = body
                elif job and path == "/log":
                    job.log.append(body.decode(errors="replace")[:2000])
                elif job and path == "/done":
                    job.report = _json_or_error(body)
                    job.done.set()
                elif path.startswith("/report/"):  # the page test posts its result here
                    server.posted[path.removeprefix("/report/")] = _json_or_error(body)
                    server.posted_event.set()
                else:
                    self._send(b"not found", "text/plain", 404)
                    return
                self._send(b"ok", "text/plain")

        return Handler


def _json_or_error(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
        return data if isinstance(data, dict) else {"ok": False, "error": "report is not a JSON object"}
    except json.JSONDecodeError as exc:
        return {"ok": False, "error": f"report is not JSON ({exc})"}


WEB_TARGETS = ("webgpu", "wasm")


def page_artifacts(build_dir: str | Path) -> dict[str, Path]:
    """The web artifacts under `build_dir` the page can use (`build/webgpu`, `build/wasm`), by target name."""
    from harmonizer_deploy.core.errors import HarmonizerError
    from harmonizer_deploy.core.manifest import read_manifest

    found = {}
    for name in WEB_TARGETS:
        path = Path(build_dir) / name
        if (path / "manifest.json").is_file() and "web_params" in read_manifest(path):
            found[name] = path
    if not found:
        raise HarmonizerError(f"no web artifact in {build_dir} (looked for {', '.join(WEB_TARGETS)})",
                              "run: harmonizer-deploy compile --target webgpu (and/or --target wasm)")
    return found


def serve(build_dir: str | Path = "build", port: int = 8000) -> WebServer:
    """A server for the harmonizer page on 127.0.0.1:`port` with the web artifacts of `build_dir` (not started)."""
    from harmonizer_deploy.core.errors import HarmonizerError, reason
    from harmonizer_deploy.web.jsdeps import tvmjs_bundle

    if not 0 <= port <= 65535:
        raise HarmonizerError(f"--port {port} is not a TCP port", "pass 1-65535, or 0 for any free port")
    artifacts = page_artifacts(build_dir)
    try:
        return WebServer(tvmjs_bundle(), artifacts, port=port)
    except OSError as exc:
        raise HarmonizerError(f"cannot listen on {HOST}:{port} ({exc.strerror or reason(exc)})",
                              "pick another port with --port, or 0 for any free port") from exc

"""A small HTTP server on 127.0.0.1 for the browser: static page assets, tvmjs, compiled artifacts, and (for
verify/bench) the job, its inputs and the POSTed outputs. Only ever binds the loopback interface.

Every request is hostile until checked: the Host header must name this loopback server (a DNS-rebinding page
on another origin reaches 127.0.0.1 with its own host name and gets 403), a POST body must declare a sane
Content-Length (checked before anything is read), paths are capped in length, each connection has a read
timeout, and at most MAX_CONNECTIONS are served at once (others get 503 and are closed at once), so slow
clients cannot pile up threads. A failing request is one status line, never a traceback on the console."""

from __future__ import annotations

import contextlib
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
MAX_PATH_CHARS = 2048  # artifact paths are short; an 8 KB segment is an attack or a bug
READ_TIMEOUT_S = 10.0  # per socket read: a client that sends nothing for this long is dropped
CONNECTION_DEADLINE_S = 300.0  # per connection in all: a client dribbling a byte every few seconds is dropped too
MAX_CONNECTIONS = 32  # connections served at once; the page itself opens a handful
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
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
    options: dict[str, Any] = field(default_factory=dict)  # page-specific settings (e.g. onnxruntime-web's EP)
    outputs: dict[int, bytes] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    report: dict[str, Any] | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def description(self) -> dict[str, Any]:
        return {"artifact": self.artifact_url, "warmup": self.warmup, "repeats": self.repeats, **self.options,
                "inputs": [{"url": f"/inputs/{i}.bin", "shape": s} for i, s in enumerate(self.shapes)]}


# module scripts and streaming wasm compilation need these exact types; mimetypes lacks .mjs on some systems
SCRIPT_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm"}


def _inside(root: Path, rel: str) -> Path | None:
    """`root/rel` if it stays inside root (no `..` escapes), else None."""
    try:
        path = (root / rel).resolve()
        path.relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    return path


def host_allowed(host: str | None, port: int) -> bool:
    """Is `host` (a Host header) this server: a loopback name with the served port (no port only for 80)?"""
    host = (host or "").strip().lower()
    if host.startswith("["):  # [::1] or [::1]:port
        name, bracket, rest = host.partition("]")
        name += bracket
        if rest and not rest.startswith(":"):
            return False
        given = rest[1:]
    else:
        name, _, given = host.partition(":")
    if name not in LOOPBACK_NAMES:
        return False
    return given == str(port) or (given == "" and port == 80)


class _LimitedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on concurrent connections and one quiet line per failed request."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken or malicious client is not the server's problem: no traceback (socketserver prints one)."""
        import sys

        kind = sys.exc_info()[0]
        if kind is not None and not issubclass(kind, OSError | ValueError):
            sys.stderr.write(f"serve: request from {client_address[0]} failed ({kind.__name__})\n")


class WebServer:
    """Serves `/static/*`, `/vendor/tvmjs.js`, `/vendor/Midi.js` (@tonejs/midi), `/artifacts/<name>/*` (from
    `artifacts`), `/` (index page), and the verify job endpoints when a job is set. Runs in a background
    thread; use as a context manager."""

    def __init__(self, tvmjs: Path, artifacts: dict[str, Path], job: Job | None = None, port: int = 0,
                 extra_files: dict[str, Path] | None = None, isolate: bool = True) -> None:
        self.tvmjs = tvmjs
        self.isolate = isolate  # COOP/COEP on every response; off only to test a page that is not isolated
        self.artifacts = artifacts
        self.job = job
        self.extra_files = extra_files or {}
        self.posted: dict[str, Any] = {}
        self.posted_event = threading.Event()
        self.httpd = _LimitedServer((HOST, port), self._handler())
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
            timeout = READ_TIMEOUT_S  # socket timeout for every read of this connection

            def log_message(self, *args: Any) -> None:  # quiet: the CLI reports what matters
                return

            def handle(self) -> None:
                """The request(s) of one connection, cut off at CONNECTION_DEADLINE_S (shutting the socket down
                wakes a blocked read), so READ_TIMEOUT_S per read is not a loophole for a slow drip."""
                import socket

                def cut() -> None:
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)

                timer = threading.Timer(CONNECTION_DEADLINE_S, cut)
                timer.daemon = True
                timer.start()
                try:
                    super().handle()
                finally:
                    timer.cancel()

            def _refuse(self, status: int, why: str) -> None:
                self.close_connection = True
                self._send(why.encode(), "text/plain", status)

            def _checked_path(self) -> str | None:
                """The request's path if the Host and the path are acceptable; else the refusal is sent."""
                hosts = self.headers.get_all("Host") or []
                if len(hosts) != 1 or not host_allowed(hosts[0], server.httpd.server_address[1]):
                    self._refuse(403, "forbidden host")
                    return None
                if len(self.path) > MAX_PATH_CHARS:
                    self._refuse(414, "path too long")
                    return None
                return urlparse(self.path).path

            def _send(self, body: bytes, ctype: str, status: int = 200) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                # cross-origin isolated: SharedArrayBuffer, hence wasm threads (onnxruntime-web's, TVM's)
                if server.isolate:
                    self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                    self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
                self.end_headers()
                self.wfile.write(body)

            def _file(self, path: Path | None) -> None:
                try:
                    body = path.read_bytes() if path is not None and path.is_file() else None
                except OSError:  # a name too long, a permission, a file vanishing: not found, not a traceback
                    body = None
                if body is None:
                    self._send(b"not found", "text/plain", 404)
                    return
                ctype = (SCRIPT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
                         or "application/octet-stream")
                self._send(body, ctype)

            def do_GET(self) -> None:
                raw = self._checked_path()
                if raw is None:
                    return
                path = unquote(raw)
                job = server.job
                if path in ("/", "/index.html"):
                    self._file(STATIC_DIR / "index.html")
                elif path.startswith("/static/"):
                    self._file(_inside(STATIC_DIR, path.removeprefix("/static/")))
                elif path == "/vendor/tvmjs.js":
                    self._file(server.tvmjs)
                elif path == "/vendor/Midi.js":
                    self._file(_tonejs_midi())
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
                path = self._checked_path()
                if path is None:
                    return
                if self.headers.get("Transfer-Encoding"):
                    self._refuse(501, "Transfer-Encoding is not supported; send Content-Length")
                    return
                declared = self.headers.get_all("Content-Length") or []
                if len(declared) != 1:
                    self._refuse(411 if not declared else 400, "one Content-Length header is required")
                    return
                text = declared[0].strip()
                if not text.isascii() or not text.isdigit():  # "-1", "abc", "+5", "1e9" never reach int()
                    self._refuse(400, "bad Content-Length")
                    return
                length = int(text)
                if length > MAX_POST_BYTES:
                    self._refuse(413, "too large")
                    return
                body = self.rfile.read(length)
                if len(body) != length:  # the client closed early: nothing half-received is used
                    self.close_connection = True
                    return
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


def _tonejs_midi() -> Path | None:
    """The page's MIDI library (@tonejs/midi's UMD bundle) from the npm cache; None (a 404) when not installed."""
    from harmonizer_deploy.core.errors import HarmonizerError
    from harmonizer_deploy.web.jsdeps import tonejs_midi_dir

    try:
        return tonejs_midi_dir(install=False) / "Midi.js"
    except HarmonizerError:
        return None


def _json_or_error(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
        return data if isinstance(data, dict) else {"ok": False, "error": "report is not a JSON object"}
    except json.JSONDecodeError as exc:
        return {"ok": False, "error": f"report is not JSON ({exc})"}


WEB_TARGETS = ("webgpu", "wasm-mt", "wasm")


def page_artifacts(build_dir: str | Path) -> dict[str, Path]:
    """The web artifacts under `build_dir` the page can use (`build/webgpu`, `build/wasm-mt`, `build/wasm`), by
    target name."""
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
    from harmonizer_deploy.web.jsdeps import tonejs_midi_dir, tvmjs_bundle

    if not 0 <= port <= 65535:
        raise HarmonizerError(f"--port {port} is not a TCP port", "pass 1-65535, or 0 for any free port")
    artifacts = page_artifacts(build_dir)
    tonejs_midi_dir()  # the page reads and writes MIDI with it: installed now, not missing at the first upload
    try:
        return WebServer(tvmjs_bundle(), artifacts, port=port)
    except OSError as exc:
        raise HarmonizerError(f"cannot listen on {HOST}:{port} ({exc.strerror or reason(exc)})",
                              "pick another port with --port, or 0 for any free port") from exc

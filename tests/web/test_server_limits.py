"""Issue 15 §5: the 127.0.0.1 server against hostile requests — Content-Length, long paths, slow clients,
too many connections, and DNS rebinding (Host header). Raw sockets on 127.0.0.1 only, each test a few seconds."""

from __future__ import annotations

import socket
import time

import pytest

from harmonizer_deploy.web import server as server_module
from hostile import tiny_site


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory):
    with tiny_site(tmp_path_factory.mktemp("site")) as web:
        yield web


@pytest.fixture
def site(shared_site):
    shared_site.job.log.clear()
    return shared_site


def _port(web) -> int:
    return web.httpd.server_address[1]


def _connect(web) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", _port(web)), timeout=5)
    return sock


def _status(sock: socket.socket) -> int:
    """The status code of the response on `sock` (0 if the server closed without one)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 else 0


def request(web, head: str, body: bytes = b"", host: str | None = "default") -> int:
    host = f"127.0.0.1:{_port(web)}" if host == "default" else host
    lines = [head] + ([f"Host: {host}"] if host is not None else [])
    with _connect(web) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return _status(sock)


def post_headers(web, length: str) -> socket.socket:
    sock = _connect(web)
    sock.sendall(f"POST /log HTTP/1.1\r\nHost: 127.0.0.1:{_port(web)}\r\nContent-Length: {length}\r\n\r\n".encode())
    return sock


@pytest.mark.parametrize(("length", "status"), [("-1", 400), ("abc", 400), ("+5", 400), (" 1e9", 400),
                                                 (str(10**12), 413)])
def test_bad_content_length_is_refused_before_any_body_is_read(site, capfd, length, status):
    with post_headers(site, length) as sock:  # no body is ever sent: the answer must not wait for one
        assert _status(sock) == status
    assert site.job.log == []
    assert "Traceback" not in capfd.readouterr().err


def test_post_needs_a_content_length(site):
    assert request(site, "POST /log HTTP/1.1") == 411
    assert request(site, "POST /log HTTP/1.1\r\nTransfer-Encoding: chunked", b"3\r\nabc\r\n0\r\n\r\n") == 501
    assert site.job.log == []


def test_a_good_post_still_works(site):
    assert request(site, "POST /log HTTP/1.1\r\nContent-Length: 5", b"hello") == 200
    assert site.job.log == ["hello"]


@pytest.mark.parametrize("prefix", ["/static/", "/artifacts/model/", "/"])
def test_an_8kb_path_segment_gets_a_status_not_a_traceback(site, capfd, prefix):
    status = request(site, f"GET {prefix}{'A' * 8192} HTTP/1.1")
    assert status in (400, 404, 414)
    assert "Traceback" not in capfd.readouterr().err
    assert request(site, "GET /artifacts/model/manifest.json HTTP/1.1") == 200  # still serving


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1:1", "localhost", "127.0.0.1.evil.example:{port}",
                                  "[::2]:{port}", "", None])
def test_foreign_host_header_is_forbidden(site, host):
    """DNS rebinding: a page on another origin reaches 127.0.0.1 with its own Host; only loopback names pass."""
    host = host.format(port=_port(site)) if host else host
    assert request(site, "GET /artifacts/model/manifest.json HTTP/1.1", host=host) == 403
    assert request(site, "POST /log HTTP/1.1\r\nContent-Length: 2", b"hi", host=host) == 403
    assert site.job.log == []


def test_a_second_host_header_is_forbidden(site):
    port = _port(site)
    assert request(site, f"GET /vendor/tvmjs.js HTTP/1.1\r\nHost: evil.example:{port}",
                   host=f"127.0.0.1:{port}") == 403


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "LOCALHOST", "[::1]"])
def test_loopback_host_names_with_the_served_port_pass(site, name):
    assert request(site, "GET /artifacts/model/manifest.json HTTP/1.1", host=f"{name}:{_port(site)}") == 200


def test_host_allowed_needs_the_port_unless_it_is_80():
    assert server_module.host_allowed("localhost", 80)
    assert not server_module.host_allowed("localhost", 8000)
    assert not server_module.host_allowed("[::1]x:8000", 8000)


def test_a_silent_client_is_dropped_after_the_read_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "READ_TIMEOUT_S", 0.5)
    (tmp_path / "tvmjs.js").write_text("// js")
    with server_module.WebServer(tmp_path / "tvmjs.js", {}) as web, _connect(web) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")  # and never finishes the request
        start = time.monotonic()
        assert sock.recv(4096) == b""  # closed by the server, long before the client's 5 s timeout
        assert time.monotonic() - start < 4


def test_a_dribbling_client_is_dropped_at_the_connection_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "CONNECTION_DEADLINE_S", 1.0)
    (tmp_path / "tvmjs.js").write_text("// js")
    with server_module.WebServer(tmp_path / "tvmjs.js", {}) as web, _connect(web) as sock:
        start = time.monotonic()
        for _ in range(40):  # one byte every 0.1 s: each read is well inside READ_TIMEOUT_S
            try:
                sock.sendall(b"X")
            except OSError:  # reset / broken pipe: the server has cut the connection
                break
            time.sleep(0.1)
        else:
            pytest.fail("the server never cut the dribbling connection")
        assert time.monotonic() - start < 3.5


def test_connections_beyond_the_cap_get_503_and_slots_come_back(tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 2)
    (tmp_path / "tvmjs.js").write_text("// js")
    with server_module.WebServer(tmp_path / "tvmjs.js", {}) as web:
        idle = [_connect(web) for _ in range(2)]
        time.sleep(0.3)  # both accepted and held by their threads
        with _connect(web) as third:
            assert _status(third) == 503
        for sock in idle:
            sock.close()
        deadline = time.monotonic() + 5
        while request(web, "GET /vendor/tvmjs.js HTTP/1.1") != 200:
            assert time.monotonic() < deadline, "slots were not released"
            time.sleep(0.1)

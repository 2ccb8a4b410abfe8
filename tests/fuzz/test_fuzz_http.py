"""Fuzzed HTTP requests to the 127.0.0.1 server (the one `serve` and the browser runners use).

Each request gets an HTTP status (or a closed connection for a request too broken to answer); never a file
from outside the served folders, never a POST accepted from a foreign Host or with a bad Content-Length, never a
traceback on the console, and the server keeps serving."""

from __future__ import annotations

import socket

import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from hostile import tiny_site

SECRET = b"SECRET-OUTSIDE-THE-ROOT"
ANSWERS = {0, 200, 400, 403, 404, 408, 411, 413, 414, 431, 501, 503, 505}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    (root / "secret.txt").write_bytes(SECRET)
    with tiny_site(root) as web:
        yield web


SEGMENTS = ["artifacts", "model", "static", "inputs", "0.bin", "manifest.json", "..", "%2e%2e", "%2F", "..%2f",
            "secret.txt", "%00", "job.json", "output", "1", "log", "done", "report", "x" * 300, "%", "~", ""]
hosts = st.sampled_from(["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "evil.example:{port}",
                         "127.0.0.1", "127.0.0.1:{port}.evil", "", None, "127.0.0.1:{port}\r\nHost: evil"])
lengths = st.one_of(st.none(), st.sampled_from(["-1", "abc", "0", "2", "99999999999", "1e3", " 5", "5 5", "0x10"]),
                    st.integers(0, 64).map(str))


@st.composite
def http_request(draw, port: int) -> tuple[bytes, bool]:
    """Raw request bytes, and whether it is a well-formed POST from this server's origin."""
    method = draw(st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "GET", "POST", "G\x00T"]))
    path = "/" + "/".join(draw(st.lists(st.sampled_from(SEGMENTS), max_size=5)))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/9.9", ""]))
    lines = [" ".join(x for x in (method, path, version) if x)]
    host = draw(hosts)
    if host is not None:
        lines.append(f"Host: {host.format(port=port)}")
    length = draw(lengths)
    if length is not None:
        lines.append(f"Content-Length: {length}")
    for _ in range(draw(st.integers(0, 2))):
        lines.append(draw(st.sampled_from(["Transfer-Encoding: chunked", "Content-Length: 3", "X: " + "y" * 70000,
                                           "Expect: 100-continue", "no colon here", "Connection: keep-alive"])))
    body = draw(st.binary(max_size=32))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body, method == "POST"


def exchange(web, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", web.httpd.server_address[1]), timeout=15) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server may answer and close before it has read everything
            pass
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


@fuzz(80)
@given(data=st.data())
def test_random_requests(site, capfd, data):
    port = site.httpd.server_address[1]
    raw, _ = data.draw(http_request(port))
    log_before = list(site.job.log)
    response = exchange(site, raw)
    status_line = response.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    assert status in ANSWERS, response[:200]
    assert SECRET not in response
    if status != 200:
        assert site.job.log == log_before, "a refused request still changed the job"
    assert "Traceback" not in capfd.readouterr().err
    assert exchange(site, f"GET /vendor/tvmjs.js HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()).endswith(
        b"// js")

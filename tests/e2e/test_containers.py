"""Containers, the parts checkable without a docker daemon: every Dockerfile builds on `ARG BASE_IMAGE`, extra CA
certificates only ever arrive as a BuildKit secret, the layer scanner of `make test-containers` finds a leaked
certificate, and the scripts refuse bad input before touching docker. The daemon part is `make test-containers`."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
sys.path.insert(0, str(REPO / "docker"))
import scan_layers  # noqa: E402  (docker/ is not a package: the scanner runs with any host python3)

NOT_A_DAEMON = {**os.environ, "DOCKER": "/bin/false"}


def instructions(dockerfile: Path) -> list[str]:
    """The instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_stage_starts_from_the_base_image_arg_or_an_earlier_stage(dockerfile):
    lines = instructions(dockerfile)
    assert re.fullmatch(r"ARG BASE_IMAGE=python:3\.11-slim-bookworm", lines[0]), "a public default, overridable"
    stages: set[str] = set()
    for line in lines:
        if line.startswith("FROM "):
            m = re.fullmatch(r"FROM (\S+)(?: AS (\S+))?", line)
            assert m and (m.group(1) == "${BASE_IMAGE}" or m.group(1) in stages), line
            stages.add(m.group(2) or "")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_ca_certificates_arrive_only_as_a_build_secret(dockerfile):
    lines = instructions(dockerfile)
    assert not [line for line in lines if line.startswith("ADD ")], "ADD fetches URLs and unpacks: COPY only"
    for line in lines:
        if line.startswith("COPY "):
            assert not re.search(r"\.(crt|pem|key)\b|ca[-_]?bundle|secret", line, re.I), line
        if line.startswith(("ENV ", "ARG ")):
            assert not re.search(r"CA_BUNDLE|PIP_CERT|SSL_CERT|NODE_EXTRA_CA|CAInfo", line), line
    downloading = [line for line in lines if line.startswith("RUN ")
                   and re.search(r"apt-get update|install\.sh|install-web-deps|pip |git clone", line)]
    assert downloading
    for line in downloading:
        assert "--mount=type=secret,id=ca_bundle,required=false" in line, line
        assert re.search(r"ca-env\.sh|GIT_SSL_CAINFO=/run/secrets/ca_bundle", line), line


def test_the_ca_env_script_uses_the_secret_only_where_it_is_mounted():
    text = (REPO / "docker" / "ca-env.sh").read_text()
    assert "if [ -s /run/secrets/ca_bundle ]" in text
    for var in ("PIP_CERT", "NODE_EXTRA_CA_CERTS", "npm_config_cafile", "APT_CONFIG"):
        assert f"export {var}=" in text, var
    assert 'CAInfo "/run/secrets/ca_bundle"' in (REPO / "docker" / "apt-ca.conf").read_text()
    env = subprocess.run(["bash", "-c", ". docker/ca-env.sh; echo PIP_CERT=${PIP_CERT:-unset}"], cwd=REPO,
                         capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]})
    assert env.stdout.strip() == "PIP_CERT=unset", "no secret mounted: nothing changes"


def fake_certificate(seed: int) -> tuple[bytes, bytes]:
    """(DER, PEM) of a certificate-shaped blob; the scanner matches bytes, it does not parse X.509."""
    der = bytes((seed * 7 + i * 13) % 256 for i in range(900))
    body = base64.b64encode(der)
    lines = b"\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return der, b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"


def saved_image(layers: list[dict[str, bytes]]) -> io.BytesIO:
    """A `docker save`-shaped archive: <n>/layer.tar per layer, plus a manifest."""
    def tar_of(files: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    outer = {f"{i:064x}/layer.tar": tar_of(files) for i, files in enumerate(layers)}
    outer["manifest.json"] = b"[]"
    return io.BytesIO(tar_of(outer))


def test_the_layer_scanner_finds_a_proxy_ca_in_any_layer_even_deleted_later():
    _, public_pem = fake_certificate(1)
    proxy_der, proxy_pem = fake_certificate(2)
    bundle = public_pem + proxy_pem
    clean = [{"etc/ssl/certs/ca-certificates.crt": public_pem, "opt/venv/bin/python": b"\x7fELF"}]
    assert scan_layers.scan(saved_image(clean), bundle, [public_pem]) == []
    # the proxy CA in a PEM file of one layer (a later layer deleting it does not help), and as DER elsewhere
    leaky = [*clean, {"usr/local/share/ca-certificates/proxy.crt": proxy_pem},
             {"usr/local/share/ca-certificates/.wh.proxy.crt": b""}, {"opt/venv/cert.der": b"xx" + proxy_der}]
    found = scan_layers.scan(saved_image(leaky), bundle, [public_pem])
    assert len(found) == 2 and "proxy.crt" in found[0] and "cert.der" in found[1], found
    # a public certificate of the bundle is no finding; without --public it would be one
    assert scan_layers.scan(saved_image(clean), bundle, []) != []


def test_the_layer_scanner_leaves_files_of_debian_packages_alone():
    """Chromium and NSS's libnssckbi.so carry public roots that an older Debian bundle still has: no finding
    there, but the same bytes anywhere a package did not put them are one."""
    _, old_root = fake_certificate(5)
    der, _ = fake_certificate(5)
    layers = [{"usr/lib/chromium/chromium": b"elf" + der, "var/lib/dpkg/info/chromium.list":
               b"/.\n/usr/lib/chromium\n/usr/lib/chromium/chromium\n"}, {"opt/venv/certifi/cacert.pem": old_root}]
    found = scan_layers.scan(saved_image(layers), old_root, [])
    assert len(found) == 1 and "opt/venv/certifi/cacert.pem" in found[0], found


def test_the_layer_scanner_finds_secret_files_and_certificates_in_history():
    _, pem = fake_certificate(3)
    found = scan_layers.scan(saved_image([{"run/secrets/ca_bundle": b""}]), None)
    assert found and "run/secrets/ca_bundle" in found[0]
    history = "RUN /bin/sh -c echo '" + pem.decode() + "' > /x"
    found = scan_layers.scan(saved_image([{}]), pem, [], history)
    assert any("docker history" in f for f in found), found
    assert scan_layers.scan(saved_image([{}]), pem, [], "RUN --mount=type=secret,id=ca_bundle make") == []


def test_the_layer_scanner_cli_exits_1_on_a_finding(tmp_path):
    _, pem = fake_certificate(4)
    (tmp_path / "bundle.pem").write_bytes(pem)
    archive = saved_image([{"app/leak.pem": pem}]).getvalue()
    proc = subprocess.run([sys.executable, str(REPO / "docker" / "scan_layers.py"), "--bundle",
                           str(tmp_path / "bundle.pem")], input=archive, capture_output=True, timeout=60)
    assert proc.returncode == 1 and b"app/leak.pem" in proc.stdout


def test_build_script_refuses_bad_input_before_docker():
    bad = subprocess.run([str(REPO / "docker" / "build.sh"), "nope"], capture_output=True, text=True,
                         timeout=30, env=NOT_A_DAEMON)
    assert bad.returncode == 2 and bad.stderr.startswith("error: no docker/nope.Dockerfile — valid targets:")
    assert "cpu" in bad.stderr
    for ca in ("/nonexistent.pem", str(REPO / "pyproject.toml")):
        proc = subprocess.run([str(REPO / "docker" / "build.sh"), "cpu"], capture_output=True, text=True,
                              timeout=30, env={**NOT_A_DAEMON, "CA_BUNDLE": ca})
        assert proc.returncode == 2 and proc.stderr.startswith(f"error: CA_BUNDLE={ca} "), proc.stderr
    nodaemon = subprocess.run([str(REPO / "docker" / "build.sh"), "cpu"], capture_output=True, text=True,
                              timeout=30, env=NOT_A_DAEMON)
    assert nodaemon.returncode == 2 and "no docker daemon answers" in nodaemon.stderr


def test_test_containers_checks_for_a_daemon_and_starts_nothing():
    proc = subprocess.run([str(REPO / "docker" / "test-containers.sh")], capture_output=True, text=True,
                          timeout=30, env=NOT_A_DAEMON)
    assert proc.returncode == 2 and "starts nothing" in proc.stderr and proc.stdout == ""


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_test_does_not_run_the_container_tests_and_image_passes_the_ca_bundle():
    make = ["make", "-n", "-C", str(REPO), "VENV=/nonexistent-venv", "-o", "/nonexistent-venv/.installed"]
    test = subprocess.run([*make, "test"], capture_output=True, text=True, timeout=60)
    assert test.returncode == 0 and "test-containers" not in test.stdout and "docker" not in test.stdout
    image = subprocess.run([*make, "image", "target=wasm", "CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt"],
                           capture_output=True, text=True, timeout=60)
    assert image.returncode == 0
    assert 'CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt"' in image.stdout
    assert "docker/build.sh wasm harmonizer-deploy:wasm" in image.stdout


def test_base_image_script_builds_from_the_debian_mirror_with_python_venv():
    text = (REPO / "scripts" / "base-image.sh").read_text()
    assert "mmdebstrap --variant=minbase" in text and "python3-venv" in text
    assert "harmonizer-deploy/base:bookworm" in text and "docker import" in text
    assert re.search(r"^set -euo pipefail$", text, re.M)


def test_a_cut_short_export_is_not_reported_as_a_leak():
    """`docker save` that runs out of disk gives the scanner an empty stream: exit 2 and a line saying so, not the
    exit 1 that means "a CA bundle is left in the image" (seen when /var/lib/docker filled up)."""
    scanner = Path(scan_layers.__file__)
    done = subprocess.run([sys.executable, str(scanner)], input=b"", capture_output=True, timeout=60)
    assert done.returncode == 2, done
    assert b"cannot read the image archive" in done.stderr and b"Traceback" not in done.stderr

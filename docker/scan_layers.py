"""Look for a leaked CA bundle or build secret in every layer of a `docker save` archive.

Usage: docker save IMAGE | python3 docker/scan_layers.py [--bundle CA_BUNDLE --public PEM...] [--history FILE]
Exit 0 when nothing is found, 1 with one line per finding. Stdlib only: it runs with any host python3.

What counts as leaked: any file under run/secrets/ in any layer; any file (PEM or DER) holding one of the
bundle's certificates that are not public (not in the --public bundles: the base image's own Debian
ca-certificates.crt), i.e. the proxy's own CA, except in files Debian packages installed (see scan); the same
in the `docker history --no-trunc` text, and any PEM certificate there. Layers are read one by one, so a file
added in one layer and deleted in a later one is found.
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
import tarfile
from collections.abc import Iterator
from typing import IO

PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.*?)-----END CERTIFICATE-----", re.S)
MAX_FILE = 1 << 30  # files are read whole; nothing in these images is bigger


def certificates(pem: bytes) -> set[bytes]:
    """The DER bytes of every certificate in a PEM text."""
    found = set()
    for body in PEM.findall(pem):
        try:
            found.add(base64.b64decode(b"".join(body.split()), validate=True))
        except ValueError:
            continue
    return found


def needles(der: bytes) -> list[bytes]:
    """Byte strings that betray one certificate: a slice of its DER and a full line of its PEM form."""
    lines = base64.encodebytes(der).replace(b"\n", b"")
    pem_line = lines[64 * 3: 64 * 4] if len(lines) >= 64 * 4 else lines[:64]
    return [der[len(der) // 2: len(der) // 2 + 48], pem_line]


def layer_files(archive: IO[bytes]) -> Iterator[tuple[str, str, bytes]]:
    """(layer name, path, content) of every regular file in every layer of a `docker save` tar stream."""
    with tarfile.open(fileobj=archive, mode="r|*") as outer:
        for member in outer:
            if not member.isfile() or not (member.name.endswith("layer.tar") or "/blobs/" in f"/{member.name}"):
                continue
            stream = outer.extractfile(member)
            try:
                inner = tarfile.open(fileobj=stream, mode="r|*")  # noqa: SIM115 (closed by the with below)
            except tarfile.TarError:
                continue  # a config or manifest blob, not a layer
            with inner:
                for item in inner:
                    if item.isfile() and item.size <= MAX_FILE:
                        data = inner.extractfile(item)
                        yield member.name, item.name.lstrip("./"), data.read() if data else b""
                    elif item.name.lstrip("./").startswith("run/secrets/") and not item.isdir():
                        yield member.name, item.name.lstrip("./"), b""


def scan(archive: IO[bytes], bundle: bytes | None, public: list[bytes] = (), history: str = "") -> list[str]:
    """Every finding, as a line; empty when the image is clean.

    Files that Debian packages installed (listed in var/lib/dpkg/info/*.list) are Debian's build, not this one's:
    certificates in them (NSS's built-in roots in libnssckbi.so, Chromium's root store) are public roots, which a
    bundle from an older Debian release still holds. Generated trust stores (ca-certificates.crt) and everything
    pip, npm or a Dockerfile wrote are not in those lists, so they are searched.
    """
    known: set[bytes] = set().union(*(certificates(p) for p in public)) if public else set()
    leaked = (certificates(bundle) if bundle else set()) - known
    marks = [n for der in leaked for n in needles(der)]
    findings, suspects, debian = [], [], set()
    for layer, path, data in layer_files(archive):
        if path.startswith("run/secrets/"):
            findings.append(f"{layer}: {path}: a build secret left in the layer")
        if path.startswith("var/lib/dpkg/info/") and path.endswith(".list"):
            debian.update(line.lstrip("/") for line in data.decode("utf-8", "replace").splitlines())
        if any(mark in data for mark in marks):
            suspects.append((layer, path))
    findings += [f"{layer}: {path}: holds a certificate of the CA bundle that is not public"
                 for layer, path in suspects if path not in debian]
    if any(mark.decode("ascii", "replace") in history for mark in marks):
        findings.append("docker history: holds a certificate of the CA bundle")
    if "BEGIN CERTIFICATE" in history:
        findings.append("docker history: holds a PEM certificate")
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="the CA bundle given to the build (CA_BUNDLE)")
    parser.add_argument("--public", action="append", default=[],
                        help="a PEM bundle whose certificates are public (the base image's ca-certificates.crt)")
    parser.add_argument("--history", help="a file with `docker history --no-trunc` output")
    args = parser.parse_args(argv)

    def read(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    bundle = read(args.bundle) if args.bundle else None
    history = read(args.history).decode("utf-8", "replace") if args.history else ""
    try:
        findings = scan(sys.stdin.buffer, bundle, [read(p) for p in args.public], history)
    except (tarfile.TarError, EOFError, OSError) as exc:
        # not a finding: the export was cut short (e.g. `docker save` ran out of disk) — say so, exit 2, not 1
        print(f"scan_layers: cannot read the image archive on stdin ({exc}) — check that `docker save` succeeded "
              "(free disk space for /var/lib/docker/tmp) and scan again", file=sys.stderr)
        return 2
    for line in findings:
        print(line)
    print(f"scan_layers: {len(findings)} finding(s)", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())

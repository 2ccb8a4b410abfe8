"""Atomic writes and hashing: a failed command never leaves a half-written artifact behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harmonizer_deploy.core.errors import HarmonizerError


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ensure_writable_dir(directory: Path) -> None:
    """Create `directory` (and parents) or fail with one clear line."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarmonizerError(
            f"cannot create output directory {directory}: {exc.strerror}",
            "choose a writable location with -o/--output",
        ) from exc
    if not os.access(directory, os.W_OK):
        raise HarmonizerError(
            f"output directory {directory} is not writable", "choose a writable location with -o/--output"
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds."""
    final = Path(path)
    ensure_writable_dir(final.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; the result should look like any new file
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary directory; it replaces `path` as a whole only if the block succeeds."""
    final = Path(path)
    ensure_writable_dir(final.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike[str], what: str, fix: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise HarmonizerError(f"{what} not found: {p}", fix)
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HarmonizerError(f"{what} {p} is not valid JSON ({exc})", fix) from exc

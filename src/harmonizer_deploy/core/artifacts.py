"""Atomic writes and hashing: a failed command never leaves a half-written artifact behind."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.version import __version__


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
    clean_stale_temps(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; the result should look like any new file
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


OWNER_MARKER = ".harmonizer-deploy.json"  # written into every directory this tool writes as a whole
_OWNER_TOOL = "harmonizer-deploy"
_BUNDLE_FILES = {"manifest.json", "params.npz", "model.onnx", "run.py", "reference.npz", "requirements.txt",
                 "bundle.json", "lib"}
_LEGACY_TMP_AGE_S = 600.0  # an empty `.NAME.xxxxxxxx.tmp` (no PID: older versions) this old is abandoned


def _json_dict(path: Path) -> dict | None:
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _entries(directory: Path) -> set[str]:
    with os.scandir(directory) as it:
        return {e.name for e in it}


def _legacy_owned(directory: Path, names: set[str]) -> bool:
    """An artifact or bundle written before the marker existed: recognised only when every entry is one that
    its own manifest (or bundle.json) accounts for, so a folder with anything else in it is never taken."""
    manifest = _json_dict(directory / "manifest.json")
    if manifest and isinstance(manifest.get("artifacts"), dict) and "cache_key" in manifest:
        allowed = {"manifest.json", *(k for k in manifest["artifacts"] if isinstance(k, str))}
        bundle = manifest.get("bundle")
        if isinstance(bundle, dict) and isinstance(bundle.get("dir"), str):
            allowed.add(bundle["dir"])
        return _only_owned_extras(directory, names - allowed)
    info = _json_dict(directory / "bundle.json")
    if info and "format_version" in info and isinstance(info.get("library"), str):
        return names <= _BUNDLE_FILES | {info["library"]}
    return False


def _only_owned_extras(directory: Path, extra: set[str]) -> bool:
    """Entries a directory's own record does not list are allowed only as this tool's own sub-directories
    (e.g. `bundle/`, written by `bundle` after `compile`)."""
    for name in extra:
        entry = directory / name
        if _is_own_helper(entry):
            continue
        if entry.is_symlink() or not entry.is_dir() or not owned_by_tool(entry):
            return False
    return True


_HELPER = re.compile(r"^\.(.+)\.(\d+)\.[A-Za-z0-9_]+\.(tmp|old|work)$")


def _is_own_helper(entry: Path) -> bool:
    """The empty lock file or a temp folder this tool keeps next to an output it wrote inside `directory`."""
    if entry.is_symlink():
        return False
    if entry.name.startswith(".") and entry.name.endswith(".lock"):
        return entry.is_file() and entry.stat().st_size == 0
    return entry.is_dir() and _HELPER.match(entry.name) is not None


def owned_by_tool(directory: Path) -> bool:
    """Whether `directory` is entirely something this tool wrote (so replacing it loses nothing of the user's):
    its marker lists every top-level entry, or an entry is itself such a directory (e.g. a bundle added later)."""
    try:
        names = _entries(directory)
    except OSError:
        return False
    marker = _json_dict(directory / OWNER_MARKER)
    if marker is None:
        return _legacy_owned(directory, names)
    listed = marker.get("entries")
    if marker.get("tool") != _OWNER_TOOL or not isinstance(listed, list):
        return False
    return _only_owned_extras(directory, names - {OWNER_MARKER} - {n for n in listed if isinstance(n, str)})


OUTPUT_FIX = "choose a new or empty directory with -o/--output"


def check_output_dir(path: str | os.PathLike[str], fix: str = OUTPUT_FIX) -> None:
    """Refuse, before any work, an output directory whose replacement would delete what this tool did not make.

    Allowed: a path that does not exist, an empty directory, or this tool's own artifact."""
    final = Path(path)
    if not Path(os.path.abspath(final)).name:
        raise HarmonizerError(f"output {final} is the file system root", fix)
    if final.is_symlink():
        raise HarmonizerError(f"output {final} is a symbolic link", fix)
    if not final.exists():
        return
    if not final.is_dir():
        raise HarmonizerError(f"output {final} exists and is not a directory", fix)
    try:
        empty = not _entries(final)
    except OSError as exc:
        raise HarmonizerError(f"cannot read output directory {final}: {exc.strerror}", fix) from exc
    if not empty and not owned_by_tool(final):
        raise HarmonizerError(f"output directory {final} is not empty and was not written by harmonizer-deploy "
                              "(replacing it would delete its contents)", fix)


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE): readers always find one of them.

    False where the kernel, libc or file system cannot (the caller falls back to two renames)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _lock_path(final: Path) -> Path:
    from harmonizer_deploy.core.paths import cache_root

    key = hashlib.sha256(str(final.parent.resolve() / final.name).encode()).hexdigest()[:32]
    locks = cache_root() / "locks"
    try:
        locks.mkdir(parents=True, exist_ok=True)
        return locks / f"{key}.lock"
    except OSError:
        return final.with_name(f".{final.name}.lock")


@contextlib.contextmanager
def output_lock(final: Path) -> Iterator[None]:
    """An exclusive lock (fcntl) per output path: one writer at a time swaps it in.

    The lock file lives in the tool's cache (`locks/<hash of the output's real path>.lock`), not next to the
    output: nothing is left beside what the user named. Where the cache cannot be written, `.NAME.lock` next to
    the output is the fallback."""
    lock = _lock_path(final)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666 & ~_umask())
    except OSError as exc:  # e.g. a symbolic link planted in its place (O_NOFOLLOW)
        raise HarmonizerError(f"cannot open the lock file {lock}: {exc.strerror}",
                              "remove it if nothing else is writing this output, then retry") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock; the lock file stays (deleting it would race with the next writer)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(final: Path) -> list[Path]:
    """Remove the temporary folders (and `atomic_file` temp files) of earlier runs for `final` whose process is
    gone (killed compiles), and empty folders older versions left; in-progress ones of live processes are kept.
    Returns what was removed."""
    own = re.compile(rf"^\.{re.escape(final.name)}\.(\d+)\.[A-Za-z0-9_]+\.(tmp|old|work)$")
    old_pid = re.compile(rf"^\.{re.escape(final.name)}\.old-(\d+)$")
    legacy = re.compile(rf"^\.{re.escape(final.name)}\.[A-Za-z0-9_]{{8}}\.tmp$")
    removed = []
    try:
        with os.scandir(final.parent) as it:
            candidates = [e for e in it if e.name.startswith(f".{final.name}.")]
    except OSError:
        return removed
    for entry in candidates:
        path = Path(entry.path)
        if not entry.is_dir(follow_symlinks=False):
            if entry.is_file(follow_symlinks=False) and (m := own.match(entry.name)) and m.group(2) == "tmp" \
                    and not _pid_alive(int(m.group(1))):
                path.unlink(missing_ok=True)  # a killed atomic_file's half-written file
            else:
                continue
        elif (m := own.match(entry.name) or old_pid.match(entry.name)) and not _pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)
        elif legacy.match(entry.name) and time.time() - entry.stat(follow_symlinks=False).st_mtime > \
                _LEGACY_TMP_AGE_S:
            with contextlib.suppress(OSError):
                path.rmdir()  # only when empty: a non-empty one might be another old version's work
        else:
            continue
        if not path.exists():
            removed.append(path)
    return removed


def _write_marker(directory: Path) -> None:
    names = sorted(_entries(directory) - {OWNER_MARKER})
    (directory / OWNER_MARKER).write_text(json.dumps({"tool": _OWNER_TOOL, "version": __version__,
                                                      "entries": names}, indent=1) + "\n")


def _fill_empty(tmp: Path, final: Path) -> None:
    """Move the new output's entries into the empty folder `final` (manifest and marker last: a reader that
    finds them finds everything), then drop `tmp`."""
    last = ("manifest.json", OWNER_MARKER)
    for name in sorted(_entries(tmp), key=lambda n: (n in last, last.index(n) if n in last else 0, n)):
        os.rename(tmp / name, final / name)
    tmp.rmdir()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], fix: str = OUTPUT_FIX) -> Iterator[Path]:
    """Yield a fresh temporary directory; it replaces `path` as a whole only if the block succeeds.

    `path` must be new, empty or this tool's own (see `check_output_dir`; checked again under the lock just before
    the swap). Writers of one path are serialised by `output_lock`; the swap is atomic where Linux allows, so
    readers never find the path missing, and the previous version is deleted after it. Temp files made inside
    the block go to a `scratch_dir` next to `path`."""
    check_output_dir(path, fix)
    final = Path(os.path.abspath(path))  # `-o .` has a name and a parent, like any other output
    ensure_writable_dir(final.parent)
    clean_stale_temps(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent))
    try:
        with scratch_dir(final):  # e.g. TVM's export_library: /tmp/tmpXXXX/lib0.o of a killed compile stayed
            yield tmp
        _write_marker(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        with output_lock(final):
            check_output_dir(final, fix)
            if final.is_dir() and not _entries(final):
                _fill_empty(tmp, final)  # keeps the folder itself (e.g. the shell's current directory)
            elif final.exists() and _exchange(tmp, final):
                shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous version
            elif final.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".old",
                                            dir=final.parent))
                os.replace(final, old)  # onto the empty `old`: unique per writer, even per thread
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_SCRATCH_LOCK = threading.Lock()
_SCRATCH: dict[str, Any] = {"users": 0}  # one redirect per process: tempfile.tempdir and $TMPDIR are global


@contextlib.contextmanager
def scratch_dir(near: str | os.PathLike[str]) -> Iterator[Path]:
    """Point `tempfile` (and child processes, via $TMPDIR) at a private folder next to `near` for the block, and
    delete it afterwards: libraries' temp files (TVM's lib0.o, TF autograph modules) never pile up in /tmp, and
    a killed run's folder is found by `clean_stale_temps` on the next run. Concurrent blocks (threads) share the
    first one's folder, deleted when the last leaves. Parent folders it had to create are removed again if the
    block left them empty (a failed command creates nothing)."""
    final = Path(os.path.abspath(near))
    created = [p for p in (final.parent, *final.parent.parents) if not p.exists()]  # deepest first
    ensure_writable_dir(final.parent)
    with _SCRATCH_LOCK:
        if _SCRATCH["users"] == 0:
            clean_stale_temps(final)
            work = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".work", dir=final.parent))
            _SCRATCH.update(work=work, saved=(tempfile.tempdir, os.environ.get("TMPDIR")))
            tempfile.tempdir, os.environ["TMPDIR"] = str(work), str(work)
        _SCRATCH["users"] += 1
        work = _SCRATCH["work"]
    try:
        yield work
    finally:
        with _SCRATCH_LOCK:
            _SCRATCH["users"] -= 1
            if _SCRATCH["users"] == 0:
                saved_dir, saved_env = _SCRATCH["saved"]
                tempfile.tempdir = saved_dir
                if saved_env is None:
                    os.environ.pop("TMPDIR", None)
                else:
                    os.environ["TMPDIR"] = saved_env
                shutil.rmtree(work, ignore_errors=True)
        for folder in created:
            try:
                folder.rmdir()  # only if empty: the output (or anything else) keeps it
            except OSError:
                break


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

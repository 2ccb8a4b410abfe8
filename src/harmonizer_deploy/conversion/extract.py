"""Unpack a model archive (.tar.gz / .tgz / .tar / .zip) safely: a downloaded archive is untrusted input.

Refuses absolute paths, `..` components, links (symbolic or hard) that point outside the destination, members
whose path goes through a link (`sub/link -> ..` then `sub/link/x`), symbolic links in zip archives (zip has no
safe extraction filter: they are never created), device files, and members or totals over the size limits —
before anything is written. Output appears atomically.
"""

from __future__ import annotations

import lzma
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harmonizer_deploy.core.artifacts import OWNER_MARKER, atomic_dir, check_output_dir
from harmonizer_deploy.core.errors import HarmonizerError, reason

MAX_MEMBER_BYTES = 2 * 1024**3
MAX_TOTAL_BYTES = 8 * 1024**3
MAX_MEMBERS = 100_000
EXTRACT_FIX = "extract into a new or empty directory"


@dataclass
class Member:
    name: str
    size: int
    kind: str  # file | dir | symlink | hardlink | other
    link_target: str = ""


def _refuse(archive: Path, member: str, why: str) -> HarmonizerError:
    return HarmonizerError(f"refusing to extract {archive}: member {member!r} {why}",
                           "the archive is unsafe or corrupt; get the model from a trusted source")


def _check_path(archive: Path, name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise _refuse(archive, name, "has an absolute path")
    if ".." in path.parts:
        raise _refuse(archive, name, "contains '..'")
    return path


def _inside(base: PurePosixPath, target: str) -> bool:
    """Does a link at `base` (member path) pointing to `target` stay inside the destination?"""
    if target.startswith("/"):
        return False
    depth = 0
    for part in (*base.parent.parts, *PurePosixPath(target).parts):
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in (".", ""):
            depth += 1
    return True


def _tar_members(archive: Path, tar: tarfile.TarFile) -> list[Member]:
    members = []
    for info in tar.getmembers():
        if info.isfile():
            kind = "file"
        elif info.isdir():
            kind = "dir"
        elif info.issym():
            kind = "symlink"
        elif info.islnk():
            kind = "hardlink"
        else:
            kind = "other"
        members.append(Member(info.name, info.size, kind, info.linkname))
    return members


def _zip_members(zf: zipfile.ZipFile) -> list[Member]:
    members = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            kind, target = "symlink", zf.read(info).decode(errors="replace")
        elif info.is_dir():
            kind, target = "dir", ""
        else:
            kind, target = "file", ""
        members.append(Member(info.filename, info.file_size, kind, target))
    return members


def check_members(archive: Path, members: list[Member]) -> None:
    """Raise on the first unsafe member; nothing has been written yet."""
    if len(members) > MAX_MEMBERS:
        raise HarmonizerError(f"refusing to extract {archive}: {len(members)} members (limit {MAX_MEMBERS})",
                              "the archive is unsafe or corrupt")
    total = 0
    links = {_check_path(archive, m.name).parts for m in members if m.kind in ("symlink", "hardlink")}
    latest: dict[str, str] = {}  # member name → kind of its latest entry so far
    dirs = {str(parent) for m in members for parent in PurePosixPath(m.name.replace("\\", "/")).parents}
    dirs |= {posixpath.normpath(m.name) for m in members if m.kind == "dir"}
    for m in members:
        path = _check_path(archive, m.name)
        if path.parts and path.parts[0] == OWNER_MARKER:
            raise _refuse(archive, m.name, "has the name of harmonizer-deploy's own marker file")
        if any(path.parts[:i] in links for i in range(1, len(path.parts))):
            raise _refuse(archive, m.name, "has a path that goes through a link in the archive")
        # a link named like a directory ("sub/.", "sub/", one holding other members) cannot be created; tarfile
        # then extracts the link's target instead, which is the link itself: a RecursionError, not an archive
        if m.kind in ("symlink", "hardlink") and (m.name.rsplit("/", 1)[-1] in (".", "") or str(path) in dirs):
            raise _refuse(archive, m.name, "is a link in place of a directory")
        if m.kind == "other":
            raise _refuse(archive, m.name, "is a device, fifo or other special file")
        if m.kind == "symlink" and not _inside(path, m.link_target):
            raise _refuse(archive, m.name, f"is a link pointing outside the destination ({m.link_target})")
        if m.kind == "hardlink":
            target = _check_path(archive, m.link_target)
            if not _inside(PurePosixPath("x"), str(target)):
                raise _refuse(archive, m.name, f"is a hard link outside the destination ({m.link_target})")
            # tarfile follows a hard link to a link recursively: a cycle is a RecursionError, not an archive
            if latest.get(posixpath.normpath(str(target))) != "file":
                raise _refuse(archive, m.name, f"is a hard link to {m.link_target!r}, which is not a regular file "
                                               "earlier in the archive")
        latest[posixpath.normpath(str(path))] = m.kind
        if m.size > MAX_MEMBER_BYTES:
            raise _refuse(archive, m.name, f"is {m.size} bytes (limit {MAX_MEMBER_BYTES})")
        total += m.size
    if total > MAX_TOTAL_BYTES:
        raise HarmonizerError(f"refusing to extract {archive}: {total} bytes in total (limit {MAX_TOTAL_BYTES})",
                              "the archive is unsafe or corrupt")


def _inside_dir(archive: Path, root: Path, name: str) -> Path:
    """Where member `name` goes under `root`, resolved on disk: a second line of defence after the checks."""
    target = root / _check_path(archive, name)
    real_root = root.resolve()
    if not target.resolve().is_relative_to(real_root):
        raise _refuse(archive, name, "resolves outside the destination")
    return target


def extract(archive: str | Path, destination: str | Path) -> list[str]:
    """Extract `archive` into `destination` (created; must not exist or be empty). Returns the member names."""
    archive, destination = Path(archive), Path(destination)
    if not archive.is_file():
        raise HarmonizerError(f"archive not found: {archive}", "pass a .tar.gz, .tgz, .tar or .zip file")
    if destination.exists() and not destination.is_dir():
        raise HarmonizerError(f"destination {destination} exists and is not a directory",
                              "extract into a new directory")
    if destination.resolve() in archive.resolve().parents:
        raise HarmonizerError(f"destination {destination} holds the archive itself", EXTRACT_FIX)
    check_output_dir(destination, EXTRACT_FIX)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = _zip_members(zf)
                check_members(archive, members)
                if link := next((m for m in members if m.kind == "symlink"), None):
                    raise _refuse(archive, link.name, "is a symbolic link (never created from a zip archive)")
                with atomic_dir(destination, EXTRACT_FIX) as tmp:
                    for m in members:
                        target = _inside_dir(archive, tmp, m.name)
                        if m.kind == "dir":
                            target.mkdir(parents=True, exist_ok=True)
                        else:
                            target.parent.mkdir(parents=True, exist_ok=True)
                            with zf.open(m.name) as src, open(target, "xb") as dst:
                                shutil.copyfileobj(src, dst)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                members = _tar_members(archive, tar)
                check_members(archive, members)
                with atomic_dir(destination, EXTRACT_FIX) as tmp:
                    tar.extractall(tmp, filter="data")  # second line of defence after our own checks
        else:
            raise HarmonizerError(f"{archive} is not a tar or zip archive", "pass a .tar.gz, .tgz, .tar or .zip file")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, NotImplementedError, KeyError, ValueError,
            zlib.error, lzma.LZMAError) as exc:  # a damaged archive: unknown zip version, missing link target, …
        raise HarmonizerError(f"cannot extract {archive}: {reason(exc)}", "the archive is corrupt; download it again") \
            from exc
    return [m.name for m in members]

"""The artifact manifest that `compile` writes and every other command reads: name, reading, integrity."""

from __future__ import annotations

import json
from pathlib import Path

from harmonizer_deploy.core.artifacts import sha256_file
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.params import PARAMS_FILE

MANIFEST = "manifest.json"


def read_manifest(artifact_dir: str | Path) -> dict:
    path = Path(artifact_dir) / MANIFEST
    if not path.is_file():
        raise HarmonizerError(
            f"no compiled artifact in {artifact_dir} (missing {MANIFEST})",
            "run `harmonizer-deploy compile --target <target>` first",
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HarmonizerError(f"{path} is not valid JSON ({exc})", "recompile the artifact") from exc
    if not isinstance(manifest, dict):
        raise HarmonizerError(f"{path} is not an artifact manifest (not a JSON object)", "recompile the artifact")
    return manifest


_HASHES: dict[tuple[str, int, int, int, int], str] = {}  # (real path, device, inode, mtime ns, size) → sha256


def cached_sha256(path: Path) -> str:
    """sha256 of `path`, computed once per process while the file's identity, mtime and size stay the same:
    every load checks integrity, and the sampler's many loads of one artifact must not re-hash 100 MB each time."""
    st = path.stat()
    key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def _plain_name(name: object) -> bool:
    """An artifact file name the manifest may list: a relative path that stays inside the artifact folder."""
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def integrity_problems(artifact_dir: str | Path, manifest: dict) -> list[str]:
    """Files whose content no longer matches the hash recorded at compile time (and a manifest that cannot
    vouch for the files a runner loads: the library or params missing from its list)."""
    artifacts = manifest.get("artifacts")
    if not isinstance(artifacts, dict):
        return [f"{MANIFEST} lists no artifact hashes"]
    problems = []
    for name in (manifest.get("library"), PARAMS_FILE):
        if name not in artifacts:
            problems.append(f"{name} has no recorded hash")
    for name, info in artifacts.items():
        if not _plain_name(name) or not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            problems.append(f"{name!r} has a malformed entry in {MANIFEST}")
            continue
        f = Path(artifact_dir) / name
        if f.is_symlink() or not f.is_file():
            problems.append(f"{name} missing")
        elif cached_sha256(f) != info["sha256"]:
            problems.append(f"{name} modified since compile")
    return problems


def check_integrity(artifact_dir: str | Path, manifest: dict) -> None:
    """Refuse, before anything is loaded (dlopen of a damaged library can die with SIGILL/SIGBUS), an artifact
    whose files differ from what compile recorded: one line naming the file."""
    if problems := integrity_problems(artifact_dir, manifest):
        raise HarmonizerError(f"artifact {artifact_dir} is damaged: {problems[0]}"
                              + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                              "recompile it (harmonizer-deploy compile --force)")


def verified_manifest(artifact_dir: str | Path) -> dict:
    """The manifest of an artifact whose files all match their recorded hashes (what every loader uses)."""
    manifest = read_manifest(artifact_dir)
    check_integrity(artifact_dir, manifest)
    return manifest

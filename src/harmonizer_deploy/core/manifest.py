"""The artifact manifest that `compile` writes and every other command reads: name, reading, integrity."""

from __future__ import annotations

import json
from pathlib import Path

from harmonizer_deploy.core.artifacts import sha256_file
from harmonizer_deploy.core.errors import HarmonizerError

MANIFEST = "manifest.json"


def read_manifest(artifact_dir: str | Path) -> dict:
    path = Path(artifact_dir) / MANIFEST
    if not path.is_file():
        raise HarmonizerError(
            f"no compiled artifact in {artifact_dir} (missing {MANIFEST})",
            "run `harmonizer-deploy compile --target <target>` first",
        )
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HarmonizerError(f"{path} is not valid JSON ({exc})", "recompile the artifact") from exc


def integrity_problems(artifact_dir: str | Path, manifest: dict) -> list[str]:
    """Files whose content no longer matches the hash recorded at compile time."""
    problems = []
    for name, info in manifest.get("artifacts", {}).items():
        f = Path(artifact_dir) / name
        if not f.is_file():
            problems.append(f"{name} missing")
        elif sha256_file(f) != info["sha256"]:
            problems.append(f"{name} modified since compile")
    return problems

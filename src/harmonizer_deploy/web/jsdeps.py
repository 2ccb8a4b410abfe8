"""TVM's JavaScript runtime (tvmjs) from npm, pinned, installed once into the cache."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harmonizer_deploy.core.artifacts import atomic_dir
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.paths import cache_root

TVMJS_PACKAGE = "@mlc-ai/web-runtime"
TVMJS_VERSION = "0.27.0-dev0"  # matches apache-tvm 0.27: the wasm ABI of the runtime objects and the JS must agree
NPM_FIX = f"install Node.js/npm, then run scripts/install-web-deps.sh (npm install {TVMJS_PACKAGE}@{TVMJS_VERSION})"


def tvmjs_bundle(install: bool = True) -> Path:
    """Path of the pinned tvmjs UMD bundle (`lib/index.js`, defines `globalThis.tvmjs`)."""
    prefix = cache_root() / "npm" / f"web-runtime-{TVMJS_VERSION}"
    bundle = prefix / "node_modules" / "@mlc-ai" / "web-runtime" / "lib" / "index.js"
    if bundle.is_file():
        return bundle
    if not install:
        raise HarmonizerError(f"{TVMJS_PACKAGE}@{TVMJS_VERSION} is not installed", NPM_FIX)
    npm = shutil.which("npm")
    if npm is None:
        raise HarmonizerError("npm is not installed (needed once to fetch TVM's JS runtime)", NPM_FIX)
    with atomic_dir(prefix, f"delete {prefix} (a broken cache folder) and retry") as tmp:
        (tmp / "package.json").write_text('{"name": "harmonizer-deploy-web-deps", "private": true}\n')
        proc = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--prefix", str(tmp),
                               f"{TVMJS_PACKAGE}@{TVMJS_VERSION}"], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise HarmonizerError(f"npm install {TVMJS_PACKAGE}@{TVMJS_VERSION} failed: "
                                  f"{proc.stderr.strip().splitlines()[-1][:200] if proc.stderr.strip() else ''}",
                                  NPM_FIX)
    if not bundle.is_file():
        raise HarmonizerError(f"{TVMJS_PACKAGE}@{TVMJS_VERSION} has no lib/index.js", NPM_FIX)
    return bundle

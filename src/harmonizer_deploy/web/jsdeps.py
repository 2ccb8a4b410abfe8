"""npm packages the browser side needs, pinned, each installed once into the cache: TVM's JavaScript runtime
(tvmjs), onnxruntime-web (the peer the bench measures in the same Chromium) and @tonejs/midi (the page's MIDI
reader and writer)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harmonizer_deploy.core.artifacts import atomic_dir
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.paths import cache_root

TVMJS_PACKAGE = "@mlc-ai/web-runtime"
TVMJS_VERSION = "0.27.0-dev0"  # matches apache-tvm 0.27: the wasm ABI of the runtime objects and the JS must agree
ORT_WEB_PACKAGE = "onnxruntime-web"
ORT_WEB_VERSION = "1.30.0"
TONEJS_MIDI_PACKAGE = "@tonejs/midi"
TONEJS_MIDI_VERSION = "2.0.28"
NPM_FIX = f"install Node.js/npm, then run scripts/install-web-deps.sh (npm install {TVMJS_PACKAGE}@{TVMJS_VERSION})"


def _npm_package(package: str, version: str, wanted: str, install: bool) -> Path:
    """`wanted` (a path inside the package) of `package@version`, npm-installed once into its own cache folder."""
    prefix = cache_root() / "npm" / f"{package.rsplit('/', 1)[-1]}-{version}"
    target = prefix / "node_modules" / package / wanted
    if target.exists():
        return target
    fix = f"install Node.js/npm, then run scripts/install-web-deps.sh (npm install {package}@{version})"
    if not install:
        raise HarmonizerError(f"{package}@{version} is not installed", fix)
    npm = shutil.which("npm")
    if npm is None:
        raise HarmonizerError(f"npm is not installed (needed once to fetch {package})", fix)
    with atomic_dir(prefix, f"delete {prefix} (a broken cache folder) and retry") as tmp:
        (tmp / "package.json").write_text('{"name": "harmonizer-deploy-web-deps", "private": true}\n')
        proc = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--prefix", str(tmp),
                               f"{package}@{version}"], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            last = proc.stderr.strip().splitlines()[-1][:200] if proc.stderr.strip() else f"exit {proc.returncode}"
            raise HarmonizerError(f"npm install {package}@{version} failed: {last}", fix)
    if not target.exists():
        raise HarmonizerError(f"{package}@{version} has no {wanted}", fix)
    return target


def tvmjs_bundle(install: bool = True) -> Path:
    """Path of the pinned tvmjs UMD bundle (`lib/index.js`, defines `globalThis.tvmjs`)."""
    return _npm_package(TVMJS_PACKAGE, TVMJS_VERSION, "lib/index.js", install)


def ort_web_dist(install: bool = True) -> Path:
    """The pinned onnxruntime-web `dist/` folder: `ort.all.min.js` (wasm + webgpu EPs) and its wasm binaries."""
    return _npm_package(ORT_WEB_PACKAGE, ORT_WEB_VERSION, "dist", install)


def tonejs_midi_dir(install: bool = True) -> Path:
    """The pinned @tonejs/midi package's `build/` folder: `Midi.js`, a UMD bundle defining `globalThis.Midi`."""
    return _npm_package(TONEJS_MIDI_PACKAGE, TONEJS_MIDI_VERSION, "build", install)

"""Whether the headless-Chromium tests can run here, in one place (four test files asked the same questions)."""

from __future__ import annotations

import shutil

from harmonizer_deploy.core.errors import HarmonizerError


def browser_missing(page: bool = True) -> str | None:
    """Why compiling for the web and running it in headless Chromium cannot happen here (None: it can). `page`:
    the harmonizer page also needs @tonejs/midi (a bare verify does not)."""
    from harmonizer_deploy.web.browser import chromium_path
    from harmonizer_deploy.web.jsdeps import tonejs_midi_dir, tvmjs_bundle

    if shutil.which("emcc") is None:
        return "emscripten (emcc) is not installed: run scripts/install-web-deps.sh"
    try:
        chromium_path()
        tvmjs_bundle(install=False)
        if page:
            tonejs_midi_dir(install=False)
    except HarmonizerError as exc:
        return f"{exc.problem}: run scripts/install-web-deps.sh"
    return None

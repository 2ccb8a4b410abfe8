"""Emscripten and TVM's web runtime: the three runtime objects `create_tvmjs_wasm` links, built once and cached.

The apache-tvm wheel ships the runtime sources (`tvm/web/emcc/*.cc`, `tvm/src/runtime`) and tvm-ffi's sources, but
not nine small support headers they include; `tvm_web_headers/` holds this project's own versions of those (see its
README). The sources are compiled from a staging tree of symlinks into the installed wheels plus those headers, so
relative `#include "../../support/x.h"` lines resolve without touching site-packages.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harmonizer_deploy.core.artifacts import atomic_dir
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.paths import cache_root

RUNTIME_SOURCES = ("wasm_runtime", "tvmjs_support", "webgpu_runtime")
HEADERS_DIR = Path(__file__).resolve().parent / "tvm_web_headers"
CFLAGS = ("-O1", "-std=c++17", "-Wno-ignored-attributes")  # -O3 adds minutes on 2 cores for no visible gain
# The threaded build (`wasm-mt`): every object with atomics and bulk memory (wasm-ld refuses shared memory
# otherwise), TVM's serial TVMBackendParallel* renamed away and our pool (hd_threads.c) linked in their place.
THREADS_CFLAGS = ("-pthread",)
THREAD_POOL_SOURCE = Path(__file__).resolve().parent / "hd_threads.c"
THREAD_POOL_OBJECT = "hd_threads.o"
# wasm_runtime.cc with its one-thread TVMBackendParallelLaunch/Barrier renamed: nothing else in that translation
# unit names them (TVM registers them as context symbols only in src/runtime/module.cc, which it does not include)
THREADED_RUNTIME_WRAPPER = """#define TVMBackendParallelLaunch HDSerialTVMBackendParallelLaunchUnused
#define TVMBackendParallelBarrier HDSerialTVMBackendParallelBarrierUnused
#include "web/emcc/wasm_runtime.cc"
"""
# What emscripten links into a STANDALONE_WASM module, in their atomics ("-mt") builds: emcc refuses
# STANDALONE_WASM with -pthread, so the threaded link names the libraries itself (-nodefaultlibs) and asks
# wasm-ld for shared, imported memory directly. standalonewasm, stubs and noexit have no -mt build; they use
# no atomics and no thread-locals, which is what wasm-ld checks.
THREADS_LIBS = ("-lstandalonewasm-memgrow", "-lstubs", "-lnoexit", "-lc-mt", "-ldlmalloc-mt", "-lcompiler_rt-mt",
                "-lc++-mt-noexcept", "-lc++abi-mt-noexcept", "-lsockets-mt")
WASM_PAGE = 65536
THREADS_MAX_MEMORY = 1 << 30  # a shared memory must declare its maximum; the page allocates this much address space
THREADS_INITIAL_MEMORY = 160 << 20  # create_tvmjs_wasm's TOTAL_MEMORY


def threads_manifest(default_threads: int) -> dict[str, int]:
    """What the page needs to start a threaded artifact: the shared memory to create (pages of 64 KiB) and how
    many threads the runners use unless told otherwise."""
    return {"default": int(default_threads), "memory_initial_pages": THREADS_INITIAL_MEMORY // WASM_PAGE,
            "memory_maximum_pages": THREADS_MAX_MEMORY // WASM_PAGE}


def threads_link_options() -> list[str]:
    """Link options that make `create_tvmjs_wasm`'s module a shared-memory one the page and its workers import."""
    return ["-nodefaultlibs", *THREADS_LIBS, "-Wl,--shared-memory", "-Wl,--import-memory",
            f"-sMAXIMUM_MEMORY={THREADS_MAX_MEMORY}"]  # emcc's own --max-memory comes last: set it through emcc
LINK_OPT = "-O1"  # overrides create_tvmjs_wasm's -O3: <1 s instead of ~30 s to link
EMSCRIPTEN_FIX = "apt-get install -y emscripten (Debian), or run scripts/install-web-deps.sh"


def emcc_env() -> dict[str, str]:
    """Environment for Debian's emscripten: its JS optimizer needs Debian's `acorn` (NODE_PATH), and EM_CACHE must
    stay unset because Debian ships a frozen, prebuilt cache."""
    env = dict(os.environ)
    env.pop("EM_CACHE", None)
    paths = [p for p in env.get("NODE_PATH", "").split(os.pathsep) if p]
    if "/usr/share/nodejs" not in paths:
        paths.append("/usr/share/nodejs")
    env["NODE_PATH"] = os.pathsep.join(paths)
    return env


@contextmanager
def emcc_environment() -> Iterator[None]:
    """Apply `emcc_env()` to this process for the duration (TVM's helper spawns emcc with os.environ)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(emcc_env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def emcc_path() -> str:
    path = shutil.which("emcc")
    if path is None:
        raise HarmonizerError("emcc (emscripten) is not installed", EMSCRIPTEN_FIX)
    return path


def emcc_version() -> str:
    out = subprocess.run([emcc_path(), "--version"], capture_output=True, text=True, env=emcc_env(), timeout=120)
    if out.returncode != 0:
        raise HarmonizerError(f"emcc --version failed: {out.stderr.strip()[:200]}", EMSCRIPTEN_FIX)
    return out.stdout.splitlines()[0].strip()


def _package_dir(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise HarmonizerError(f"python package {name} is not installed", "run scripts/install.sh")
    return Path(next(iter(spec.submodule_search_locations)))


def _headers_digest() -> str:
    digest = hashlib.sha256()
    for f in sorted(HEADERS_DIR.rglob("*.h")):
        digest.update(str(f.relative_to(HEADERS_DIR)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def runtime_cache_key(threads: bool = False) -> str:
    """Covers what the objects depend on: emscripten, TVM and tvm-ffi versions, flags and our headers (and, for
    the threaded build, its flags, wrapper and pool source)."""
    from harmonizer_deploy.compiler.versions import tvm_versions

    parts: tuple = (emcc_version(), sorted(tvm_versions().items()), CFLAGS, _headers_digest())
    if threads:
        parts += (THREADS_CFLAGS, THREADED_RUNTIME_WRAPPER)
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _mirror(src: Path, dst: Path) -> None:
    """Real directories, symlinked files: a tree the compiler sees as one source root."""
    for dirpath, _dirs, files in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            target = dst / rel / f
            if not target.exists():
                target.symlink_to(Path(dirpath) / f)


def staging_tree(dest: Path) -> Path:
    """TVM's source layout assembled from the installed wheels plus `tvm_web_headers/` (ours take precedence)."""
    tvm_dir, ffi_dir = _package_dir("tvm"), _package_dir("tvm_ffi")
    _mirror(HEADERS_DIR, dest)  # first, so our headers win over nothing (the wheel lacks them)
    _mirror(tvm_dir / "src", dest / "src")
    _mirror(tvm_dir / "include", dest / "include")
    _mirror(tvm_dir / "web" / "emcc", dest / "web" / "emcc")
    _mirror(ffi_dir / "include", dest / "3rdparty" / "tvm-ffi" / "include")
    _mirror(ffi_dir / "src", dest / "3rdparty" / "tvm-ffi" / "src")
    return dest


def _emcc_compile(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=emcc_env(), timeout=1800)
    if proc.returncode != 0:
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr[-300:])
        raise HarmonizerError(f"building TVM's web runtime ({what}) failed: {first.strip()[:300]}",
                              "check emcc (scripts/install-web-deps.sh) and the TVM pin")


def build_runtime_objects(out_dir: Path, log: list[str] | None = None, threads: bool = False) -> dict[str, float]:
    """Compile the three runtime sources with `emcc -c` into `out_dir/web/dist/wasm/<name>.bc` (the names
    `create_tvmjs_wasm` looks for; the content is a wasm object file). Returns seconds per object. `threads`:
    the atomics build, with TVM's serial parallel launch renamed away (`THREADED_RUNTIME_WRAPPER`)."""
    import tempfile

    emcc = emcc_path()
    flags = [*CFLAGS, *(THREADS_CFLAGS if threads else ())]
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hd-tvm-web-") as tmp:
        root = staging_tree(Path(tmp) / "tvm")
        includes = [f"-I{root}", f"-I{root / 'include'}", f"-I{root / '3rdparty' / 'tvm-ffi' / 'include'}"]
        dist = out_dir / "web" / "dist" / "wasm"
        dist.mkdir(parents=True, exist_ok=True)
        for name in RUNTIME_SOURCES:
            t0 = time.perf_counter()
            source = root / "web" / "emcc" / f"{name}.cc"
            if threads and name == "wasm_runtime":
                source = Path(tmp) / "hd_wasm_runtime_threads.cc"
                source.write_text(THREADED_RUNTIME_WRAPPER)
            _emcc_compile([emcc, *includes, *flags, "-c", "-o", str(dist / f"{name}.bc"), str(source)], f"{name}.cc")
            seconds[name] = time.perf_counter() - t0
            if log is not None:
                log.append(f"{name}.cc: {seconds[name]:.1f} s")
    return seconds


def thread_pool_object() -> Path:
    """`hd_threads.c` compiled with atomics, cached by its own content (and emcc's version)."""
    text = repr((emcc_version(), THREAD_POOL_SOURCE.read_bytes()))
    home = cache_root() / "tvm-web-runtime" / f"pool-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    if (home / THREAD_POOL_OBJECT).is_file():
        return home / THREAD_POOL_OBJECT
    with atomic_dir(home, f"delete {home} (a broken cache folder) and retry") as tmp:
        _emcc_compile([emcc_path(), "-O2", "-pthread", "-c", "-o", str(tmp / THREAD_POOL_OBJECT),
                       str(THREAD_POOL_SOURCE)], THREAD_POOL_SOURCE.name)
    return home / THREAD_POOL_OBJECT


def runtime_home(threads: bool = False) -> Path:
    """A directory usable as TVM_HOME for `create_tvmjs_wasm`: built on first use, then reused. The pool object
    of the threaded build is apart (`thread_pool_object`): editing it does not rebuild TVM's runtime."""
    home = cache_root() / "tvm-web-runtime" / (f"threads-{runtime_cache_key(True)}" if threads
                                                else runtime_cache_key())
    dist = home / "web" / "dist" / "wasm"
    if all((dist / f"{n}.bc").is_file() for n in RUNTIME_SOURCES):
        return home
    with atomic_dir(home, f"delete {home} (a broken cache folder) and retry") as tmp:
        build_runtime_objects(tmp, threads=threads)
    return home


@contextmanager
def tvm_home(home: Path) -> Iterator[None]:
    """`create_tvmjs_wasm` finds the runtime objects only through $TVM_HOME."""
    saved = os.environ.get("TVM_HOME")
    os.environ["TVM_HOME"] = str(home)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TVM_HOME", None)
        else:
            os.environ["TVM_HOME"] = saved

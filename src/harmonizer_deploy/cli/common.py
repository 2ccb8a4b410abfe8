"""What every command shares: the consoles, error handling (one line + exit code), JSON output, option parsers.

The library never sees CLI strings: the parsers here turn them into typed values first.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.util
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from enum import Enum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from harmonizer_deploy.core.errors import EXIT_INTERNAL, HarmonizerError
from harmonizer_deploy.core.extras import missing_extra_error

# Wide enough for the report tables when output goes to a file or CI log.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

# `-h` next to `--help` on the root app and every sub-group (Typer apps take it as context_settings=HELP).
HELP = {"help_option_names": ["-h", "--help"]}

LIBRARY_LOGGER = "harmonizer_deploy"


class ConsoleHandler(logging.Handler):
    """Library log records on stderr through the `err` console (looked up at each record, so a swapped
    sys.stderr, as in tests, gets them); warnings prefixed `warning:`."""

    def emit(self, record: logging.LogRecord) -> None:
        message = escape(record.getMessage())
        if record.levelno >= logging.WARNING:
            message = f"[yellow]warning:[/] {message}"
        err.print(message, highlight=False, soft_wrap=True)


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """`-v`: debug detail and TensorFlow's start-up lines; default: progress notes (e.g. building on first use) and
    warnings; `-q`: warnings and errors only. Everything goes to stderr so stdout stays clean for --json."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(ConsoleHandler())
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    # tf2onnx calls deprecated TensorFlow APIs; their "WARNING:tensorflow:... is deprecated" notes are not the
    # user's problem, so TensorFlow's own Python logger speaks only with -v (or for errors).
    logging.getLogger("tensorflow").setLevel(logging.NOTSET if verbose else logging.ERROR)
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, QuietTensorFlowImport)]
    elif "tensorflow" not in sys.modules and not any(isinstance(f, QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowImport())


@contextlib.contextmanager
def stderr_fd_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block: C++ start-up lines bypass Python's sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Hide TensorFlow's absl/oneDNN start-up lines (written by C++ while `tensorflow` is first imported, whatever
    TF_CPP_MIN_LOG_LEVEL says) unless -v: the first import of `tensorflow` runs with stderr silenced."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tensorflow" or self not in sys.meta_path:
            return None
        index = sys.meta_path.index(self)
        sys.meta_path.remove(self)  # the other finders (the real import machinery, test blockers) answer
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(index, self)  # a find_spec probe (extras.installed) is not the import
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, original = spec.loader, spec.loader.exec_module

        def exec_module(module: Any) -> None:
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            with stderr_fd_silenced():
                original(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
# Fixed choices, validated before the command runs (the usage error lists them); a test checks they match the
# library's constants.
CHECK_ERROR_STATS = ("max", "mean", "median")
CUSTOM_OP_STRATEGIES = ("auto", "none", "rewrite", "custom-op", "decompose")
ErrorStat = Enum("ErrorStat", {s: s for s in CHECK_ERROR_STATS}, type=str)
CustomOpStrategy = Enum("CustomOpStrategy", {s.replace("-", "_"): s for s in CUSTOM_OP_STRATEGIES}, type=str)


def deprecated(old: str, new: str, value: Any, default: Any) -> Any:
    """`value` of a hidden old option spelling, with a warning naming the new one (`default` when unused)."""
    if value is None or value is False:
        return default
    logging.getLogger(LIBRARY_LOGGER).warning(f"{old} is deprecated; use {new}")
    return value


NoBuildOpt = Annotated[bool, typer.Option(
    "--no-build", help="Fail instead of converting/compiling a missing model.onnx or artifact (for scripts).")]
TolOpt = Annotated[list[str] | None, typer.Option(
    help="Tolerance override: a number for every tensor, or NAME=number for one (repeatable).")]


def cli_command(fn):
    """Turn library errors into one line + exit code; never a bare traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HarmonizerError as exc:
            err.print(f"[bold red]error:[/] {escape(exc.one_line())}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except Exception as exc:
            missing = missing_extra_error(exc) if isinstance(exc, ImportError) else None
            if missing is not None:  # a module of an extra that is not installed: say which extra
                err.print(f"[bold red]error:[/] {escape(missing.one_line())}", highlight=False, soft_wrap=True)
                raise typer.Exit(missing.exit_code) from None
            if os.environ.get("HARMONIZER_DEBUG"):
                raise
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(first)} — rerun with "
                      "HARMONIZER_DEBUG=1 for the traceback and report it", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper


def _non_finite(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def finite_json(data: Any) -> tuple[Any, Any]:
    """`data` with every NaN/±Infinity float replaced by null, and a flag saying what was there: a bare `NaN` is
    not JSON, and strict parsers (browsers, jq, `json.loads(parse_constant=…)`) reject the whole document.

    A dict gains `KEY_non_finite` next to each such KEY: "NaN"/"Infinity"/"-Infinity" for a number, or
    {index: that} for a list's elements. Returns (clean data, flag of `data` itself or None)."""
    if isinstance(data, float) and not math.isfinite(data):
        return None, _non_finite(data)
    if isinstance(data, dict):
        clean: dict[Any, Any] = {}
        for key, value in data.items():
            clean[key], flag = finite_json(value)
            if flag is not None:
                clean[f"{key}_non_finite"] = flag
        return clean, None
    if isinstance(data, list | tuple):
        items, flags = [], {}
        for i, value in enumerate(data):
            item, flag = finite_json(value)
            items.append(item)
            if flag is not None:
                flags[str(i)] = flag
        return items, flags or None
    return data, None


def emit_json(data: Any) -> None:
    """Strict JSON on stdout (see `finite_json`): never a bare NaN or Infinity."""
    sys.stdout.write(json.dumps(finite_json(data)[0], indent=2, allow_nan=False) + "\n")


def parse_range(value: str | None) -> tuple[float, float] | None:
    """`--val-range LOW,HIGH` → (low, high)."""
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise HarmonizerError(f"--val-range {value!r} is not LOW,HIGH", "pass e.g. --val-range 0,1") from None
    return low, high


def parse_dims(items: list[str]) -> dict[str, int]:
    dims = {}
    for item in items:
        name, _, size = item.partition("=")
        if not name or not size.isdigit() or int(size) < 1:
            raise HarmonizerError(f"--fix-dim {item!r} is not NAME=SIZE", "e.g. --fix-dim batch=1 --fix-dim time=32")
        dims[name] = int(size)
    return dims


def parse_tolerance(values: list[str] | None, what: str) -> float | dict[str, float] | None:
    """CLI form → library form: ["1e-5"] → 1e-5; ["probs=1e-5", "2e-4"] → {"probs": 1e-5, "*": 2e-4}."""
    if not values:
        return None
    per: dict[str, float] = {}
    for value in values:
        name, sep, number = value.rpartition("=")
        key = name if sep else "*"
        try:
            per[key] = float(number)
        except ValueError:
            raise HarmonizerError(f"--{what} {value!r} is not a number or NAME=number",
                                  f"pass e.g. --{what} 1e-5 or --{what} probs=1e-5") from None
    return per["*"] if list(per) == ["*"] else per

"""Where a compiled CPU artifact spends its time, per Relax kernel (perf samples of a steady call loop).

    PYTHONPATH=src TVM_NUM_THREADS=2 python bench/profile_kernels.py build/cpu --dim batch=8 --dim time=32 \
        [--calls 30] [--json out.json]

Prints a markdown table: each kernel's share of the samples and how often `main` calls it, then the samples
outside the kernels (TVM runtime, Python, libc, kernel space: e.g. sched_yield while a thread waits at a
parallel loop's barrier). Needs Linux `perf`. See harmonizer_deploy/benchmark/kernel_profile.py.
"""

from __future__ import annotations

import argparse
import json
import sys

from harmonizer_deploy.benchmark.kernel_profile import markdown, profile
from harmonizer_deploy.core.errors import HarmonizerError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", help="a compiled cpu artifact folder (manifest.json + model.so)")
    parser.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                        help="value of a symbolic input dim (e.g. batch=8); repeat for each")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    try:
        dims = {}
        for item in args.dim:
            name, sep, value = item.partition("=")
            if not sep or not value.isdigit() or int(value) < 1:
                raise HarmonizerError(f"--dim {item!r} is not NAME=N", "e.g. --dim batch=8")
            dims[name] = int(value)
        result = profile(args.artifact, dims, calls=args.calls)
    except HarmonizerError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    print(markdown(result, args.top))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

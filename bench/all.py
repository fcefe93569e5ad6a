#!/usr/bin/env python3
"""Every part of issue #5, one after the other, each in a process of its
own: output_cost, accuracy, rates, signal_cost, overhead, slowdown,
outofprocess, longrun. With --write each writes its own section of bench/RESULTS.md (and
its plots beside it); --quick runs each as a smoke test (nothing written).

    python3 -m bench all [--quick] [--write] [--duration 600] [--only a,b]

A full run takes about an hour and a half on a 2-core machine (the long run
alone is --duration); run it on a quiet machine.
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

PARTS = ("output_cost", "accuracy", "rates", "signal_cost", "overhead", "slowdown", "outofprocess", "longrun")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--duration", type=float, help="seconds of the long run (default: its own, 600)")
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    args = ap.parse_args()
    if args.write and args.quick:
        sys.exit("bench: --write is for real runs, not --quick")
    failed = []
    for part in args.only.split(","):
        if part not in PARTS:
            sys.exit("bench: no part %r (there are: %s)" % (part, ", ".join(PARTS)))
        flags = (["--quick"] if args.quick else []) + (["--write"] if args.write else [])
        if part == "longrun" and args.duration and not args.quick:
            flags += ["--duration", str(args.duration)]
        # overhead imports spprof: the venv's Python has it, built from this tree.
        python = common.target_python() if part == "overhead" else sys.executable
        t0 = time.monotonic()
        print("\n==== %s %s (load %s)" % (part, " ".join(flags), common.load()), file=sys.stderr, flush=True)
        rc = subprocess.run([python, "-m", "bench", part, *flags], cwd=common.ROOT).returncode
        print("==== %s: exit %d after %.0f s" % (part, rc, time.monotonic() - t0), file=sys.stderr, flush=True)
        if rc:
            failed.append(part)
    if failed:
        sys.exit("bench: failed: " + ", ".join(failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Installs the Debian packages that spprof's tests and builds use.

    python3 tools/setup_deps.py           # install what is missing (root)
    python3 tools/setup_deps.py --check   # only say what is missing

Nothing here is needed to use spprof: the Python package has no run-time
dependencies. These are the tools the test suite drives (tmux for `top`, a
C compiler for test extensions, libunwind for native frames, go for
`go tool pprof`, xmllint and chromium for the SVG, clang for the fuzz targets) and the
benchmarks use (GNU time).
Idempotent: when everything is installed it only asks dpkg.
"""

import argparse
import os
import subprocess
import sys

PACKAGES = {
    "gcc": "builds the test extensions",
    "pkg-config": "finds libunwind for the build",
    "libunwind-dev": "native (C) frames, in-process and --native",
    "tmux": "drives `spprof top` in the tests",
    "libxml2-utils": "xmllint checks the SVG flame graphs",
    "chromium": "headless browser the SVG flame graph is driven in (with PyPI playwright)",
    "golang-go": "`go tool pprof` reads the pprof output in the tests",
    "clang": "libFuzzer targets",
    "libclang-rt-14-dev": "the libFuzzer and sanitizer runtimes clang links",
    "util-linux": "unshare/setpriv for the unprivileged-user tests",
    "time": "GNU time: the profilers' peak RSS in bench/runner.py",
}


def missing():
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Status}\n", *PACKAGES],
        capture_output=True, text=True,
    )
    ok = {line.split()[0] for line in out.stdout.splitlines() if line.endswith("install ok installed")}
    return [p for p in PACKAGES if p not in ok]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only report missing packages")
    args = ap.parse_args()
    need = missing()
    if not need:
        print("setup_deps: all %d test packages installed" % len(PACKAGES))
        return 0
    print("setup_deps: missing: %s" % ", ".join("%s (%s)" % (p, PACKAGES[p]) for p in need))
    if args.check:
        return 1
    if os.geteuid() != 0:
        print("setup_deps: run as root, or: sudo apt-get install -y %s" % " ".join(need), file=sys.stderr)
        return 1
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *need]):
        print("+ " + " ".join(cmd), flush=True)
        if subprocess.run(cmd, env=env).returncode != 0:
            print("setup_deps: %s failed" % " ".join(cmd[:2]), file=sys.stderr)
            return 1
    still = missing()
    if still:
        print("setup_deps: still missing after install: %s" % ", ".join(still), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

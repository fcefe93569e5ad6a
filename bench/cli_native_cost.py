#!/usr/bin/env python3
"""CPU time the spprof command spends per sample, with and without --native.

A target program (recursive Python calling C that calls back into Python,
about 30 Python and 60 native frames deep) runs on its own; `spprof record
--pid` attaches to it for a few seconds at a fixed rate, and the command's
own CPU time (user + system, from wait4, so the target's is not counted)
is divided by the samples it wrote. Each mode runs several times, in
alternation; the median is reported with min..max.

    python3 bench/cli_native_cost.py [--spprof PATH] [--python PATH] [--rate 200] [--duration 5] [--runs 3]
"""

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap

TARGET = """
import sys, time, zlib

def keyfn(x):
    s = 0
    for i in range(50):
        s += i
    return -x

def leaf():
    sorted(range(300), key=keyfn)
    zlib.compress(bytes(range(256)) * 400, 9)

def recurse(n):
    if n == 0:
        leaf()
    else:
        recurse(n - 1)

print("ready", flush=True)
while True:
    recurse(28)
"""


def one_run(spprof, pid, native, rate, duration, out):
    cmd = [spprof, "record", "--pid", str(pid), "-r", str(rate), "-d", str(duration), "-f", "collapsed",
           "-o", out] + (["--native"] if native else [])
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit("spprof failed: " + err)
    samples = int(re.search(r"\((\d+) samples", err).group(1))
    depth = 0
    with open(out) as f:
        lines = f.read().splitlines()
    top = max(lines, key=lambda l: int(l.rsplit(" ", 1)[1]))
    depth = top.count(";") + 1
    return (usage.ru_utime + usage.ru_stime) / samples, samples, depth


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--spprof", default=os.path.join(here, ".cache", "cli-build", "spprof"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "target.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent(TARGET))
        target = subprocess.Popen([args.python, path], stdout=subprocess.PIPE, text=True)
        try:
            assert target.stdout.readline().strip() == "ready"
            results = {False: [], True: []}
            for _ in range(args.runs):
                for native in (False, True):
                    results[native].append(one_run(args.spprof, target.pid, native, args.rate,
                                                   args.duration, os.path.join(d, "out.txt")))
        finally:
            target.kill()
            target.wait()
    ver = subprocess.run([args.python, "-c", "import platform; print(platform.python_version())"],
                         capture_output=True, text=True).stdout.strip()
    print("spprof record CPU per sample: target CPython %s, %s, %d Hz for %g s, %d runs each"
          % (ver, platform.processor() or platform.machine(), args.rate, args.duration, args.runs))
    print()
    print("| mode | CPU per sample (median, min..max) | samples per run | frames in the top stack |")
    print("|---|---|---|---|")
    for native in (False, True):
        r = results[native]
        per = sorted(x[0] * 1e6 for x in r)
        print("| %s | %.0f µs (%.0f..%.0f) | %d | %d |" % (
            "--native" if native else "Python only", statistics.median(per), per[0], per[-1],
            statistics.median(x[1] for x in r), statistics.median(x[2] for x in r)))


if __name__ == "__main__":
    main()

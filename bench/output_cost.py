#!/usr/bin/env python3
"""Output cost: time and peak memory to write 1,000,000 samples (10,000
distinct stacks, 30 frames deep, over 4 threads) in each format, and the
files' sizes, with spprof's real writers.

bench/c/write_cost.c is built with the system's C compiler against
src/core and src/formats (as tests/c/test_timeline.c is); it builds the
profile in the core model and writes it with spp_write_file, the call the
command and the extension make (temporary file, fsync, rename). Each format
runs in a process of its own, the formats alternating round by round; the
files go to --dir (default /dev/shm, so that the disk of a shared machine is
not what is timed). Reported: the write's wall and CPU time, the process's
peak RSS (model and writer together: what a user's process needs) and the
model's alone before writing, the file's size.

Targets: <= 1 s for collapsed and SVG, <= 2 s for speedscope, <= 100 MB RSS.

    python3 -m bench output_cost [--rounds 5] [--samples 1000000] [--quick] [--write]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
from bench.common import verdict  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FORMATS = ("collapsed", "flamegraph", "speedscope", "pprof", "chrometrace")
TIME_TARGET = {"collapsed": 1.0, "flamegraph": 1.0, "speedscope": 2.0}
RSS_TARGET_MB = 100


class Fmt:
    def __init__(self, name):
        self.name = name


def build_driver(out_dir):
    root = common.ROOT
    formats = sorted(os.path.join(root, "src", "formats", f) for f in os.listdir(os.path.join(root, "src", "formats"))
                     if f.endswith(".c"))
    # The flags of the release build (meson.build: buildtype release, -O3).
    return common.build_c("write_cost", out_dir,
                          [os.path.join(root, "src", "core", "profile.c"), *formats,
                           os.path.join(HERE, "c", "write_cost.c")],
                          ["-O3", "-fno-omit-frame-pointer"], ["-lm"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=1000000)
    ap.add_argument("--stacks", type=int, default=10000)
    ap.add_argument("--depth", type=int, default=30)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
                    help="where the files are written (default /dev/shm)")
    args = common.parse(ap, "1 round of 100,000 samples", rounds=1, samples=100000)
    build = tempfile.mkdtemp(prefix="spprof-bench-")
    out_dir = tempfile.mkdtemp(prefix="spprof-bench-", dir=args.dir)
    try:
        exe = build_driver(build)
        rep = common.Report("output_cost", "Output cost: writing %s samples" % format(args.samples, ","),
                            sys.argv[1:])
        rep.p("The profile: %s samples over %s distinct stacks %d frames deep, %d threads, in runs of 1-19 "
              "consecutive samples on one stack; built in spprof's model by `bench/c/write_cost.c` (compiled "
              "against src/core and src/formats, -O3) and written by `spp_write_file` to %s (temporary file, "
              "fsync, rename). Each format in its own process, %d rounds, the formats alternating; median "
              "(min-max). Peak RSS is the whole process's (model and writer); the model's alone is its peak "
              "before writing.\n" % (format(args.samples, ","), format(args.stacks, ","), args.depth,
                                     args.threads, args.dir, args.rounds))

        def one(fmt):
            path = os.path.join(out_dir, "profile." + fmt.name)
            r = subprocess.run([exe, fmt.name, path, str(args.samples), str(args.stacks), str(args.depth),
                                str(args.threads)], capture_output=True, text=True)
            if os.path.exists(path):
                os.unlink(path)
            if r.returncode:
                sys.exit("bench: write_cost %s failed: %s" % (fmt.name, r.stderr.strip()))
            return json.loads(r.stdout)

        res = common.alternate([Fmt(f) for f in FORMATS], args.rounds, one)
        first = res[FORMATS[0]][0]
        rep.p("Model: %s samples, %s distinct stacks with samples, %s trie nodes, %s frames, %.1f MB of tables.\n" % (
            format(first["samples"], ","), format(first["distinct"], ","), format(first["stacks"], ","),
            format(first["frames"], ","), first["model_bytes"] / 1e6))
        rep.p("| format | write, wall | write, CPU | peak RSS | model's peak RSS | file size | target |")
        rep.p("|---|---|---|---|---|---|---|")
        verdicts = []
        for f in FORMATS:
            rs = res[f]
            wall = [r["write_s"] for r in rs]
            peak = [r["peak_kb"] / 1024 for r in rs]
            target = []
            if f in TIME_TARGET:
                ok = common.med(wall) <= TIME_TARGET[f]
                target.append("≤ %.0f s: **%s**" % (TIME_TARGET[f], verdict(ok)))
                verdicts.append(ok)
            ok = common.med(peak) <= RSS_TARGET_MB
            target.append("≤ %d MB: **%s**" % (RSS_TARGET_MB, verdict(ok)))
            verdicts.append(ok)
            rep.p("| %s | %s s | %s s | %s MB | %s MB | %.1f MB | %s |" % (
                f, common.fmt_range(wall, fmt="%.2f"), common.fmt_range([r["write_cpu_s"] for r in rs], fmt="%.2f"),
                common.fmt_range(peak), common.fmt_range([r["model_peak_kb"] / 1024 for r in rs]),
                common.med([r["bytes"] for r in rs]) / 1e6, "; ".join(target)))
        rep.p("")
        rep.p("- every output-cost target: **%s**\n" % verdict(all(verdicts)))
        rep.end(args.write)
    finally:
        shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(out_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

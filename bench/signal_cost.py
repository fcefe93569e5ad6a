#!/usr/bin/env python3
"""What the kernel charges a thread for each way of interrupting it once per
millisecond of its CPU time, with no profiler at all: the floor under any
signal-based sampler on this machine, and why spprof's perf_event clock
signals with perf's sigtrap.

bench/c/signal_cost.c (built with the system's C compiler) runs the same
C loop (0.15 s of CPU) untouched and under each way, one run of each per
round, in an order that rotates round by round; each run's thread CPU time
is compared with the untouched run of its round. Reported: the median
ratio with its 95 % confidence interval (order statistics) and, from the
signals or timer expiries per CPU-second, the cost of one in µs.

    python3 -m bench signal_cost [--rounds 41] [--interval-ms 1] [--quick] [--write]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
from bench.common import Report, median_ci  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def build(out_dir):
    return common.build_c("signal_cost", out_dir, [os.path.join(HERE, "c", "signal_cost.c")], ["-O2"],
                          ["-lpthread", "-lrt"])


def calibrate(exe, seconds, interval_ns):
    """Iterations of the loop that take about `seconds` of thread CPU (the
    driver times one untouched loop when asked for 0 rounds)."""
    n = 1000000
    while True:
        r = subprocess.run([exe, str(n), "0", str(interval_ns)], capture_output=True, text=True, check=True)
        spent = float(r.stdout)
        if spent >= 0.02:
            return max(1, int(n * seconds / spent))
        n *= 4


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--chunk", type=float, default=0.15, help="seconds of CPU per run")
    ap.add_argument("--interval-ms", type=float, default=1.0)
    args = common.parse(ap, "5 rounds of 0.05 s", rounds=5, chunk=0.05)
    interval_ns = int(args.interval_ms * 1e6)
    tmp = tempfile.mkdtemp(prefix="spprof-bench-")
    try:
        exe = build(tmp)
        iterations = calibrate(exe, args.chunk, interval_ns)
        r = subprocess.run([exe, str(iterations), str(args.rounds), str(interval_ns)],
                           capture_output=True, text=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if r.returncode:
        sys.exit("bench: signal_cost failed: " + r.stderr.strip())
    rep = Report("signal_cost", "The kernel's cost of interrupting a thread, without a profiler",
                 sys.argv[1:])
    rep.p("A C loop, %.2f s of CPU per run, untouched and under each way of interrupting it every "
          "%g ms of its CPU time, %d rounds, the order rotating round by round (`bench/c/signal_cost.c`; "
          "the handler only counts).\n" % (args.chunk, args.interval_ms, args.rounds))
    rep.p("| way | signals/CPU-s | thread CPU overhead | per interrupt |")
    rep.p("|---|---|---|---|")
    for line in r.stdout.splitlines():
        name, rest = line.split("\t", 1)
        if rest == "unavailable":
            rep.p("| %s | refused by the kernel here (or one CPU, for the poller) | | |" % name)
            continue
        rate, ratios = rest.split("\t")
        ratios = [float(x) for x in ratios.split()]
        rate = float(rate)
        med = statistics.median(ratios)
        lo, hi = median_ci(ratios)
        # A perf_event timer without a signal still expires once per interval.
        per_s = 1e9 / interval_ns if "no signal" in name else rate
        # (per touched CPU-second: the run took med times the untouched one)
        cost = "%.1f µs" % ((med - 1) / (per_s * med) * 1e6) if per_s > 0 else "no signal came"
        rep.p("| %s | %.0f | %+.2f %% [%+.2f..%+.2f] | %s |" % (
            name, rate, (med - 1) * 100, (lo - 1) * 100, (hi - 1) * 100, cost))
    rep.p("\nMedian [95 %% confidence interval] of the per-round ratios to the untouched run. Per "
          "interrupt: the overhead divided by the signals per CPU-second (for the timer without a "
          "signal, its expiries, 1 per %g ms). The POSIX CPU-time timer only fires on the scheduler "
          "tick (%.0f Hz here), so it is cheap per second but cannot sample at 1 kHz.\n"
          % (args.interval_ms, common.kernel_hz()))
    rep.end(args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

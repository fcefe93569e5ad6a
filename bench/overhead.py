#!/usr/bin/env python3
"""In-process overhead of spprof on a CPU-bound pure-Python workload.

Method (see BENCHMARKING notes in the README): in one process, the same
~0.1 s chunk of work runs with the profiler off and on, alternately, flipping
which goes first every pair; each chunk's wall time, thread CPU time and
process CPU time (which includes spprof's drain thread) is compared with its
neighbour's, and the median ratio over all pairs is reported with min-max.
start()/stop() happen outside the timed region. Also reports the samples
really obtained per CPU-second.

    python3 -m bench overhead [--pairs 101] [--chunk 0.1] [--quick] [--write]

It imports spprof: `python3 -m bench all` runs it on the bench venv's
Python, where spprof from this tree is installed (bench/common.py).
"""

import argparse
import os
import statistics
import sys
import time

import spprof

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import Report, median_ci, parse, verdict  # noqa: E402
from bench import workloads  # noqa: E402

workload = workloads.chunk  # fib(18), n times


def calibrate(seconds):
    return workloads.calibrate(workload, seconds, time.thread_time)


def timed(iterations):
    w0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
    workload(iterations)
    return (time.perf_counter() - w0, time.thread_time() - c0, time.process_time() - p0)


class EmptyHandler:
    """The same clock and signal with a handler that records nothing: the
    cost of being interrupted at this rate on this machine, which no
    signal-based sampler can go below."""

    def __init__(self, interval_ms):
        from spprof import _spprof
        self.engine, self.interval_ms = _spprof, interval_ms

    def __enter__(self):
        self.engine.start(int(self.interval_ms * 1e6), 64 << 20, False, 0, True)
        self.engine.add_thread()

    def __exit__(self, *exc):
        self.engine.stop("", self.interval_ms)


def measure_floor(interval_ms, iterations, pairs):
    ratios = []
    for i in range(pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        res = {}
        for on in order:
            if on:
                with EmptyHandler(interval_ms):
                    res[on] = timed(iterations)
            else:
                res[on] = timed(iterations)
        ratios.append(res[True][1] / res[False][1])
    return ratios


def measure(interval_ms, iterations, pairs):
    ratios = {"wall": [], "thread_cpu": [], "process_cpu": []}
    rates = []
    for i in range(pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        res = {}
        for on in order:
            if on:
                spprof.start(interval_ms=interval_ms)
                res[on] = timed(iterations)
                prof = spprof.stop()
                rates.append(prof.sample_count / res[on][1])
            else:
                res[on] = timed(iterations)
        for k, idx in (("wall", 0), ("thread_cpu", 1), ("process_cpu", 2)):
            ratios[k].append(res[True][idx] / res[False][idx])
    return ratios, rates, prof.clock


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=101)
    ap.add_argument("--chunk", type=float, default=0.1, help="seconds of CPU per chunk")
    args = parse(ap, "3 pairs of 0.05 s", pairs=3, chunk=0.05)
    iterations = calibrate(args.chunk)
    workload(iterations)  # warm up
    rep = Report("overhead", "spprof in-process overhead, paired chunks", sys.argv[1:])
    rep.p("Workload: fib(18) loop, %.2f s CPU per chunk, %d alternating pairs per interval.\n" % (args.chunk, args.pairs))
    rep.p("| interval | clock | samples/CPU-s | wall overhead | thread CPU overhead | process CPU overhead | "
          "floor: same clock, empty handler (thread CPU) |")
    rep.p("|---|---|---|---|---|---|---|")

    def fmt(values):
        med = statistics.median(values)
        lo, hi = median_ci(values)
        return "%+.2f %% [%+.2f..%+.2f] (%+.1f..%+.1f)" % (
            (med - 1) * 100, (lo - 1) * 100, (hi - 1) * 100, (min(values) - 1) * 100,
            (max(values) - 1) * 100)

    over = {}
    for interval in (1, 10, 100):
        ratios, rates, clock = measure(interval, iterations, args.pairs)
        floor = measure_floor(interval, iterations, args.pairs)
        over[interval] = [(x - 1) * 100 for x in (statistics.median(ratios["thread_cpu"]),
                                                   *median_ci(ratios["thread_cpu"]))]
        rep.p("| %d ms | %s | %.0f | %s | %s | %s | %s |" % (
            interval, clock, statistics.median(rates), fmt(ratios["wall"]),
            fmt(ratios["thread_cpu"]), fmt(ratios["process_cpu"]), fmt(floor)))
    rep.p("\nMedian [its 95 % confidence interval, from the order statistics] (min..max) of per-pair "
          "ratios, profiler on vs off. Floor: the kernel's cost of the clock and signal delivery alone, "
          "measured the same way.\n")
    for interval, limit in ((1, 2.0), (10, 1.0)):
        med, lo, hi = over[interval]
        sure = ("the interval is below the target" if hi <= limit else
                "the interval is above the target" if lo > limit else
                "the interval includes the target: this run cannot tell")
        rep.p("- thread CPU overhead at %d ms %+.2f %% [%+.2f..%+.2f] (target ≤ %.0f %%; %s): **%s**" % (
            interval, med, lo, hi, limit, sure, verdict(med <= limit)))
    rep.p("")
    rep.end(args.write)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""In-process overhead of spprof on a CPU-bound pure-Python workload.

Method (see BENCHMARKING notes in the README): in one process, the same
~0.1 s chunk of work runs unprofiled, under each clock compared (the
default, perf_event where the kernel allows it, the same with the SIGPROF it sent
before spprof used sigtrap, and cpu_poll) and under each clock's floor (the same
clock and signal, with a handler that records nothing), one chunk of each
per round, in an order that rotates round by round, with an unprofiled
chunk before the first, between each two and after the last; each chunk's
wall time, thread CPU time and process CPU time (which includes spprof's
own threads) is compared with the mean of the unprofiled chunks beside it,
and the median ratio over the rounds is reported with its 95 % confidence
interval and min-max.
start()/stop() happen outside the timed region. Also reports the samples
really obtained per CPU-second.

    python3 -m bench overhead [--pairs 101] [--chunk 0.1] [--quick] [--write]

(--pairs: the rounds per interval.) It runs on the bench venv's Python,
where spprof from this tree is installed (bench/common.py), re-executing
itself there if started elsewhere.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
from bench.common import Report, median_ci, parse, verdict  # noqa: E402
from bench import workloads  # noqa: E402
from bench.runner import CLOCKS  # noqa: E402

# The clocks compared: each of CLOCKS, and the default one signalling as it
# did before spprof used perf_event's sigtrap (SIGPROF from O_ASYNC, which
# the kernel sends from an interrupt of its own), in the same rounds.
VARIANTS = {label: {"SPPROF_CLOCK": clock} for label, clock in CLOCKS.items()}
VARIANTS["default, SIGPROF"] = {"SPPROF_CLOCK": CLOCKS["default"], "SPPROF_PERF_SIGNAL": "SIGPROF"}

if os.path.realpath(sys.prefix) != os.path.realpath(common.VENV):
    # spprof built from this tree lives in the bench venv: run there.
    python = common.target_python()
    os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])

import spprof  # noqa: E402

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

    def __init__(self, interval_ms, clock):
        from spprof import _spprof
        self.engine, self.interval_ms = _spprof, interval_ms
        self.mechanism = spprof._CLOCKS[VARIANTS[clock]["SPPROF_CLOCK"]]
        self.clock = clock

    def __enter__(self):
        with variant_env(self.clock):
            self.engine.start(int(self.interval_ms * 1e6), 64 << 20, False, self.mechanism, True)
        self.engine.add_thread()

    def __exit__(self, *exc):
        self.engine.stop("", self.interval_ms)


class variant_env:
    """The environment of one of VARIANTS, around a start()."""

    def __init__(self, clock):
        self.env = VARIANTS[clock]

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def measure(interval_ms, iterations, rounds):
    """Each round runs one chunk per variant, in an order that rotates
    round by round, with an unprofiled chunk before the first, between each
    two and after the last; each variant's ratios are against the mean of
    the two unprofiled chunks beside it. (This machine's speed drifts: two
    chunks side by side differ about half as much as two chunks four apart,
    measured with bench/overhead.py's workload.) Variants: each clock, and
    each clock's floor."""
    variants = ["%s %s" % (kind, c) for c in VARIANTS for kind in ("on", "floor")]
    ratios = {v: {"wall": [], "thread_cpu": [], "process_cpu": []} for v in variants}
    rates = {c: [] for c in VARIANTS}
    names = {}
    for i in range(rounds):
        k = i % len(variants)
        before = timed(iterations)
        for v in variants[k:] + variants[:k]:
            kind, clock = v.split(" ", 1)
            if kind == "floor":
                with EmptyHandler(interval_ms, clock):
                    res = timed(iterations)
            else:
                with variant_env(clock):
                    spprof.start(interval_ms=interval_ms)
                res = timed(iterations)
                prof = spprof.stop()
                names[clock] = prof.clock + (" (SIGPROF from O_ASYNC)" if "SIGPROF" in clock else "")
                rates[clock].append(prof.sample_count / res[1])
            after = timed(iterations)
            for key, idx in (("wall", 0), ("thread_cpu", 1), ("process_cpu", 2)):
                ratios[v][key].append(res[idx] / ((before[idx] + after[idx]) / 2))
            before = after
    return ratios, rates, names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=101)
    ap.add_argument("--chunk", type=float, default=0.1, help="seconds of CPU per chunk")
    args = parse(ap, "3 pairs of 0.05 s", pairs=3, chunk=0.05)
    iterations = calibrate(args.chunk)
    workload(iterations)  # warm up
    rep = Report("overhead", "spprof in-process overhead, paired chunks", sys.argv[1:])
    rep.p("Workload: fib(18) loop, %.2f s CPU per chunk; per interval %d rounds, each running one chunk "
          "under each clock and one under each clock's floor, in an order that rotates round by round, "
          "with an unprofiled chunk before, between and after them.\n" % (args.chunk, args.pairs))
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
        ratios, rates, names = measure(interval, iterations, args.pairs)
        for clock in VARIANTS:
            on = ratios["on " + clock]
            over[clock, interval] = {k: [(x - 1) * 100 for x in (statistics.median(v), *median_ci(v))]
                                     for k, v in on.items()}
            rep.p("| %d ms | %s%s | %.0f | %s | %s | %s | %s |" % (
                interval, names[clock], " (default)" if clock == "default" else "",
                statistics.median(rates[clock]), fmt(on["wall"]), fmt(on["thread_cpu"]),
                fmt(on["process_cpu"]), fmt(ratios["floor " + clock]["thread_cpu"])))
    rep.p("\nMedian [its 95 % confidence interval, from the order statistics] (min..max) of per-chunk "
          "ratios, profiler on vs the mean of the unprofiled chunks just before and after. Floor: the kernel's cost of the clock and signal delivery alone, "
          "measured the same way. Thread CPU is the profiled thread's own; process CPU adds spprof's "
          "threads (the drain thread, and for cpu_poll and nonblocking the thread that looks at the "
          "clocks, which for nonblocking also reads the stacks), which run on another CPU when there is one. "
          "The nonblocking clock's floor is that thread's looks at the clocks, reading no stack.\n")
    for clock in ("default", "nonblocking"):
        for interval, limit in ((1, 2.0), (10, 1.0)):
            med, lo, hi = over[clock, interval]["thread_cpu"]
            wall = over[clock, interval]["wall"][0]
            proc = over[clock, interval]["process_cpu"][0]
            sure = ("the interval is below the target" if hi <= limit else
                    "the interval is above the target" if lo > limit else
                    "the interval includes the target: this run cannot tell")
            rep.p("- thread CPU overhead at %d ms with the %s clock (%s) %+.2f %% [%+.2f..%+.2f] "
                  "(target ≤ %.0f %%; %s; wall %+.2f %%, process CPU %+.2f %%): **%s**" % (
                      interval, clock, names[clock], med, lo, hi, limit, sure, wall, proc,
                      verdict(med <= limit)))
    for interval in (1, 10):
        rep.p("- the same rounds at %d ms, thread CPU: the default clock (%s) %+.2f %%, the same clock "
              "signalling with SIGPROF from O_ASYNC %+.2f %%, cpu_poll %+.2f %%" % (
                  interval, names["default"], over["default", interval]["thread_cpu"][0],
                  over["default, SIGPROF", interval]["thread_cpu"][0],
                  over["cpu_poll", interval]["thread_cpu"][0]))
    rep.p("")
    rep.end(args.write)


if __name__ == "__main__":
    sys.exit(main())

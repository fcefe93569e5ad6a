#!/usr/bin/env python3
"""Target programs for the out-of-process benchmarks: a fixed amount of work,
started on a signal from the harness, timed by the target itself.

    python3 bench/workloads.py NAME --calibrate SECONDS   # prints the amount of work that
                                                          # takes SECONDS of CPU
    python3 bench/workloads.py NAME AMOUNT                # prints "ready", waits for a
                                                          # line on stdin, works, prints
                                                          # "wall cpu" (seconds) and exits

The wait lets a profiler attach before the timed work starts, so the timing
covers only the work and every variant (no profiler, spprof, py-spy) times
the same thing. Names: "recursion" (pure-Python fib, one thread) and
"threads" (the same work split over 10 threads, which take turns on the GIL).
"""

import sys
import threading
import time

NTHREADS = 10


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def chunk(iterations):
    for _ in range(iterations):
        fib(18)


def recursion(amount):
    chunk(amount)


def threads(amount):
    per = max(1, amount // NTHREADS)
    ts = [threading.Thread(target=chunk, args=(per,), name="worker-%d" % i) for i in range(NTHREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


WORKLOADS = {"recursion": recursion, "threads": threads}


def calibrate(fn, seconds, clock=time.perf_counter):
    """The amount of work fn(amount) that takes about `seconds` of `clock`
    here, unprofiled."""
    n = 1
    while True:
        t0 = clock()
        fn(n)
        dt = clock() - t0
        if dt > 0.1:
            return max(1, int(n * seconds / dt))
        n *= 2


def main(argv):
    name = argv[1]
    if argv[2] == "--calibrate":
        # CPU time, not wall: on a busy machine the wall time of the same
        # work varies several-fold, its CPU time much less.
        print(calibrate(WORKLOADS[name], float(argv[3]), time.process_time))
        return 0
    amount = int(argv[2])
    fn = WORKLOADS[name]
    print("ready", flush=True)
    sys.stdin.readline()
    w0, c0 = time.perf_counter(), time.process_time()
    fn(amount)
    print("%.6f %.6f" % (time.perf_counter() - w0, time.process_time() - c0), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

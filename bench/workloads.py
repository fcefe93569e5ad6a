#!/usr/bin/env python3
"""Target programs for the benchmarks: a fixed amount of work, started on a
line from the harness, timed by the target itself.

    python3 bench/workloads.py NAME --calibrate SECONDS   # prints the amount of work that
                                                          # takes SECONDS of CPU
    python3 bench/workloads.py NAME AMOUNT                # prints "ready", waits for a
                                                          # line on stdin, works, prints
                                                          # one JSON line and exits

The wait lets an out-of-process profiler attach before the timed work
starts, so the timing covers only the work and every variant times the same
thing. The line read is "go" or, for an in-process profiler, "go TOOL ARG
OUT": the target starts that profiler itself just before the work and stops
it just after (outside the timed region), so every variant runs with the same
argv and environment (their length alone moves a recursive workload by
several per cent). TOOL is "spprof" (ARG: interval in ms; the profile is
saved to OUT, collapsed), "pyinstrument" (ARG: interval in ms) or "yappi"
(ARG ignored; CPU clock).

The JSON line has "wall", "cpu" and "thread_cpu" (seconds of the work:
perf_counter, process_time and the main thread's thread_time), "rss_kb" (peak, VmHWM), and when it applies
"samples" (an in-process profiler's own count), "split" (seconds of thread
CPU time spent in each function of the split workload, measured with
time.thread_time() around each call) and "attributed" (seconds the
in-process profiler gave each of those functions).

Names: "recursion" (pure-Python fib, one thread), "threads" (the same work
split over 10 threads, which take turns on the GIL), "threads50" (over 50
threads), "mixed" (json, re and sqlite3 from the standard library), "split"
(three functions with a fixed share of the CPU each, interleaved in short
calls) and "forever" (the mixed work in a loop until stdin closes, printing
its RSS every second; for the long runs). Every unit of work goes through a
function named `chunk`, so a profile's samples of the work are the stacks
through `chunk`.
"""

import json
import re
import sqlite3
import sys
import threading
import time


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def chunk(iterations, unit=fib, arg=18):
    for _ in range(iterations):
        unit(arg)


def recursion(amount):
    chunk(amount)


def spread(amount, nthreads):
    per = max(1, amount // nthreads)
    ts = [threading.Thread(target=chunk, args=(per,), name="worker-%d" % i) for i in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def threads(amount):
    spread(amount, 10)


def threads50(amount):
    spread(amount, 50)


WORDS = re.compile(r"[a-z]+_(\d+)")
RECORDS = [{"id": i, "name": "item_%d" % i, "tags": ["t%d" % (i % 7), "u%d" % (i % 11)], "price": i * 0.25}
           for i in range(200)]


def mixed_once(db):
    """One round of ordinary standard-library work: JSON both ways, a
    regular expression over the text, and sqlite3 inserts and a query."""
    text = json.dumps(RECORDS)
    back = json.loads(text)
    ids = [int(m.group(1)) for m in WORDS.finditer(text)]
    db.execute("DELETE FROM items")
    db.executemany("INSERT INTO items VALUES (?, ?, ?)", [(r["id"], r["name"], r["price"]) for r in back])
    total = db.execute("SELECT COUNT(*), SUM(price) FROM items WHERE name LIKE 'item_1%'").fetchone()
    return len(ids) + total[0]


def mixed(amount):
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE items (id INTEGER, name TEXT, price REAL)")
    chunk(amount, mixed_once, db)
    db.close()


# The split workload: three leaf functions, each a loop with no calls, run
# in short interleaved calls (about 1, 0.6 and 0.4 ms), so a sampler sees
# them alternate many times a second.
SPLIT_LOOPS = {"split_a": 10000, "split_b": 6000, "split_c": 4000}
split_cpu = {}


def split_a(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def split_b(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def split_c(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


SPLIT_FNS = ((split_a, SPLIT_LOOPS["split_a"]), (split_b, SPLIT_LOOPS["split_b"]),
             (split_c, SPLIT_LOOPS["split_c"]))


def split_once(acc):
    clock = time.thread_time
    for f, n in SPLIT_FNS:
        t0 = clock()
        f(n)
        acc[f.__name__] = acc.get(f.__name__, 0.0) + clock() - t0


def split(amount):
    chunk(amount, split_once, split_cpu)


def forever(amount):
    """Mixed work until a line on stdin, a line of RSS a second (long runs)."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE items (id INTEGER, name TEXT, price REAL)")
    t0 = next_report = time.monotonic()
    while not stop.is_set():
        chunk(max(1, amount), mixed_once, db)
        chunk(max(1, amount))
        now = time.monotonic()
        if now >= next_report:
            line = {"t": now - t0, "rss_kb": rss_kb()}
            prof = sys.modules.get("spprof")
            stats = prof.stats() if prof else None
            if stats:
                line["spprof_bytes"] = stats.memory_bytes
            print(json.dumps(line), flush=True)
            next_report += 1.0


WORKLOADS = {"recursion": recursion, "threads": threads, "threads50": threads50, "mixed": mixed,
             "split": split, "forever": forever}


def rss_kb(field="VmRSS"):
    """VmRSS, or VmHWM (the peak; getrusage's ru_maxrss would carry the
    harness's own peak over exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


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


class InProcess:
    """An in-process profiler, started and stopped around the work by the
    target itself (outside the timed region)."""

    def __init__(self, tool, arg, out):
        self.tool, self.arg, self.out = tool, float(arg), out

    def start(self):
        if self.tool == "spprof":
            import spprof
            self.mod = spprof
            spprof.start(interval_ms=int(self.arg))
        elif self.tool == "pyinstrument":
            import pyinstrument
            self.prof = pyinstrument.Profiler(interval=self.arg / 1000.0)
            self.prof.start()
        elif self.tool == "yappi":
            import yappi
            self.mod = yappi
            yappi.set_clock_type("cpu")
            yappi.start()
        else:
            raise SystemExit("workloads: no in-process tool %r" % self.tool)

    def stop(self, res):
        if self.tool == "spprof":
            prof = self.mod.stop()
            res["samples"] = prof.sample_count
            res["clock"] = prof.clock
            prof.save(self.out, format="collapsed")
        elif self.tool == "pyinstrument":
            self.prof.stop()
            session = self.prof.last_session
            res["samples"] = session.sample_count
            att = dict.fromkeys(SPLIT_LOOPS, 0.0)
            for stack, t in session.frame_records:
                names = {ident.split("\x00", 1)[0] for ident in stack}
                for k in att:
                    att[k] += t if k in names else 0.0
            res["attributed"] = att
        elif self.tool == "yappi":
            self.mod.stop()
            att = dict.fromkeys(SPLIT_LOOPS, 0.0)
            for st in self.mod.get_func_stats():
                if st.name in att:
                    att[st.name] += st.ttot
            res["attributed"] = att


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
    go = sys.stdin.readline().split()
    inproc = InProcess(*go[1:4]) if len(go) >= 4 else None
    if inproc:
        inproc.start()
    w0, c0, t0 = time.perf_counter(), time.process_time(), time.thread_time()
    fn(amount)
    res = {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0, "thread_cpu": time.thread_time() - t0}
    if inproc:
        inproc.stop(res)
    if split_cpu:
        res["split"] = split_cpu
    res["rss_kb"] = rss_kb("VmHWM")
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

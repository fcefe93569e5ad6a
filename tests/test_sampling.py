"""What the profiler reports is true: shares, rates, lines, threads."""

import json
import pytest

from conftest import last_json, run_unprivileged

# A workload with a known split: hot() and cold() each run until they have
# used their share of CPU time, measured independently with thread_time().
SPLIT = """
import json, sys, time
import spprof

def spin(n):
    x = 0
    for i in range(n):
        x += i * i
    return x

def hot(budget):
    end = time.thread_time() + budget
    while time.thread_time() < end:
        spin(20000)

def cold(budget):
    end = time.thread_time() + budget
    while time.thread_time() < end:
        spin(20000)

interval = float(sys.argv[1])
spprof.start(interval_ms=interval)
t_hot = t_cold = 0.0
w0 = time.perf_counter()
for _ in range(10):
    t0 = time.thread_time(); hot(0.15); t1 = time.thread_time(); cold(0.05)
    t2 = time.thread_time()
    t_hot += t1 - t0; t_cold += t2 - t1
wall_ms = (time.perf_counter() - w0) * 1e3
p = spprof.stop()
w = {"hot": 0, "cold": 0}
c = {"hot": 0, "cold": 0}
for s in p.samples:
    names = [f.function_name for f in s.frames]
    for k in w:
        if k in names:
            w[k] += s.weight_ns; c[k] += s.count
print(json.dumps({"t_hot": t_hot, "t_cold": t_cold, "w": w, "c": c,
                  "samples": p.sample_count, "clock": p.clock,
                  "sampled_ms": p.sampled_time_ms, "cpu_ms": (t_hot + t_cold) * 1e3,
                  "wall_ms": wall_ms}))
"""


def test_cpu_split_within_3_points(script):
    r = last_json(script(SPLIT, 1))
    truth = r["t_hot"] / (r["t_hot"] + r["t_cold"])
    by_weight = r["w"]["hot"] / (r["w"]["hot"] + r["w"]["cold"])
    by_count = r["c"]["hot"] / (r["c"]["hot"] + r["c"]["cold"])
    assert abs(by_weight - truth) < 0.03, r
    assert abs(by_count - truth) < 0.03, r
    assert r["samples"] >= 1500, r


@pytest.mark.parametrize("clock", ["default", "poll"])
def test_rate_at_1ms_matches_cpu_time(script, clock):
    """At interval_ms=1 the samples are as many as the CPU milliseconds, under
    the default clock (perf_event, for root) and under the polling clock;
    the weights add up to the CPU time."""
    r = last_json(script(SPLIT, 1, env={"SPPROF_CLOCK": clock} if clock != "default" else None))
    assert abs(r["sampled_ms"] - r["cpu_ms"]) / r["cpu_ms"] < 0.10, r
    want = "cpu_poll" if clock == "poll" else "perf_event"
    assert r["clock"] == want, (
        "sampled under %s, not %s: this machine refuses that clock to the test process, so "
        "the 1 kHz count check cannot run; weights still matched CPU time" % (r["clock"], want)
    )
    expected = r["cpu_ms"] / 1.0
    if clock == "poll":
        # Its looks come every millisecond of wall time: a looking thread
        # that waits for a CPU passes over some (88.7 % in one CI run on a
        # busy host, 67-80 % here with two busy processes on the two CPUs;
        # the weights carry the time). How near 1,000 a second it comes is
        # bench/rates.py's to measure; here, that it is not the 250 Hz tick.
        assert 0.5 * expected <= r["samples"] <= 1.1 * expected, r
    else:
        assert abs(r["samples"] - expected) / expected < 0.10, r


def test_unprivileged_default_clock_samples_at_the_asked_rate(tmp_path):
    """In a user namespace (no perf privileges: perf_event_paranoid 2
    allows user time only, 3 nothing) the default clock is the polling
    one, which samples a busy thread about 1,000 times per CPU-second at
    1 ms where a CPU-time timer fires on the 250 Hz tick; the weights and
    shares stay true. (Its looks come every millisecond of wall time: a
    looking thread that waits for a CPU passes over some, 20-33 % with two
    busy processes on this 2-CPU machine; at half the asked rate it is
    still twice the tick's.)"""
    r = run_unprivileged(tmp_path, SPLIT, 1)
    assert r["clock"] == "cpu_poll", r
    assert 0.5 * r["cpu_ms"] <= r["samples"] <= 1.1 * r["cpu_ms"], r
    assert abs(r["sampled_ms"] - r["cpu_ms"]) / r["cpu_ms"] < 0.10, r
    truth = r["t_hot"] / (r["t_hot"] + r["t_cold"])
    assert abs(r["w"]["hot"] / (r["w"]["hot"] + r["w"]["cold"]) - truth) < 0.03, r


def test_fallback_cpu_timer_weights_are_real_cpu_time(script):
    """The POSIX CPU timer fires on the 250 Hz tick whatever the interval;
    its samples must be weighted by the CPU time they stand for."""
    r = last_json(script(SPLIT, 1, env={"SPPROF_CLOCK": "cpu"}))
    assert r["clock"] == "cpu_timer"
    assert abs(r["sampled_ms"] - r["cpu_ms"]) / r["cpu_ms"] < 0.10, r
    truth = r["t_hot"] / (r["t_hot"] + r["t_cold"])
    by_weight = r["w"]["hot"] / (r["w"]["hot"] + r["w"]["cold"])
    assert abs(by_weight - truth) < 0.05, r


def test_fallback_wall_timer(script):
    r = last_json(script(SPLIT, 5, env={"SPPROF_CLOCK": "wall"}))
    assert r["clock"] == "wall_timer"
    assert r["samples"] > 100
    # A busy single thread: the wall time its samples stand for is the wall
    # time it ran (its CPU time too, on an idle machine).
    assert abs(r["sampled_ms"] - r["wall_ms"]) / r["wall_ms"] < 0.25, r


LINES = """
import json, time
import spprof

def loop():
    total = 0
    end = time.thread_time() + 0.3
    while time.thread_time() < end:
        for i in range(10000):
            total += i * 3 % 7          # HOT LINE
    return total

spprof.start(interval_ms=1)
loop()
p = spprof.stop()
src = open(__file__).read().splitlines()
hot = next(i + 1 for i, l in enumerate(src) if "# HOT LINE" in l)
lines = {}
for s in p.samples:
    leaf = s.frames[-1]
    if leaf.function_name == "loop":
        lines[leaf.lineno] = lines.get(leaf.lineno, 0) + s.count
print(json.dumps({"hot": hot, "lines": lines,
                  "def": next(i + 1 for i, l in enumerate(src) if l.startswith("def loop"))}))
"""


def test_hot_line_is_reported(script):
    r = last_json(script(LINES))
    lines = {int(k): v for k, v in r["lines"].items()}
    top = max(lines, key=lines.get)
    assert top in (r["hot"], r["hot"] - 1), r  # the loop header shares the work
    assert lines.get(r["hot"], 0) / sum(lines.values()) > 0.5, r
    assert r["def"] not in lines or lines[r["def"]] < sum(lines.values()) * 0.05, r


THREADS = """
import json, os, threading, time
import spprof

def work(seconds):
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        x += 1

early = threading.Thread(target=work, args=(0.4,), name="early-bird")
early.start()
spprof.start(interval_ms=1)
late = [threading.Thread(target=work, args=(0.2,), name="late-%d" % i) for i in range(3)]
for t in late:
    t.start()
work(0.2)
for t in late + [early]:
    t.join()
p = spprof.stop()
by = {}
for s in p.samples:
    by.setdefault(s.thread_name, set()).add(s.thread_id)
    assert s.frames[0].function_name in ("_bootstrap", "Thread._bootstrap", "<module>", "<no Python frame>"), s.frames
    assert not any(f.filename.startswith(os.path.dirname(spprof.__file__)) for f in s.frames), s.frames
ids = {t.name: t.native_id for t in late + [early]}
print(json.dumps({"names": {k: sorted(v) for k, v in by.items()}, "ids": ids}))
"""


def test_no_sample_lands_in_spprofs_own_code_while_stop_runs(script):
    """stop() names the profile from sys.argv before the engine stops; with a
    long sys.argv that takes milliseconds of CPU, sampled at 1 ms. No sample
    may show spprof's own frames (a CI run once caught _command_line)."""
    r = last_json(script("""
        import json, os, sys, time
        import spprof

        sys.argv = [sys.argv[0]] + ["arg%d" % i for i in range(300000)]
        spprof.start(interval_ms=1)
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
        t0 = time.thread_time()
        p = spprof.stop()
        took = time.thread_time() - t0
        own = os.path.dirname(spprof.__file__)
        bad = [[f.function_name for f in s.frames] for s in p.samples
               if any(f.filename.startswith(own) for f in s.frames)]
        print(json.dumps({"bad": bad[:5], "samples": p.sample_count, "stop_ms": took * 1000}))
    """))
    assert r["stop_ms"] > 5, r  # stop() ran long enough to be sampled several times
    assert r["bad"] == [], r


def test_all_threads_sampled_with_names(script):
    r = last_json(script(THREADS))
    names = r["names"]
    for name in ["early-bird", "late-0", "late-1", "late-2", "MainThread"]:
        assert name in names, names
    for name, tid in r["ids"].items():
        assert names[name] == [tid], (name, names)


def test_speedscope_thread_profiles(script, tmp_path):
    src = THREADS.replace("p = spprof.stop()", "p = spprof.stop(); p.save('t.json')")
    script(src)
    doc = json.loads((tmp_path / "t.json").read_text())
    names = [prof["name"] for prof in doc["profiles"]]
    assert any(n.startswith("late-1") for n in names), names
    assert any(n.startswith("MainThread") for n in names), names


def test_thread_profiler_inside_a_sampled_thread_keeps_it_sampled(script):
    r = last_json(script("""
        import json, threading, time
        import spprof

        def burn(s):
            end = time.thread_time() + s
            while time.thread_time() < end:
                pass

        def inside():
            burn(0.05)

        def after():
            burn(0.05)

        def worker():
            with spprof.ThreadProfiler():
                inside()
            after()

        spprof.start(interval_ms=1)
        t = threading.Thread(target=worker)
        t.start(); t.join()
        p = spprof.stop()
        c = {"inside": 0, "after": 0, "inside_ms": 0, "after_ms": 0}
        for s in p.samples:
            for k in ("inside", "after"):
                if any(f.function_name == k for f in s.frames):
                    c[k] += s.count
                    c[k + "_ms"] += s.weight_ns / 1e6
        c["clock"] = p.clock
        print(json.dumps(c))
    """))
    # (the sampled milliseconds and the clock are in the message for a
    # failure's diagnosis: fewer samples at full weight means lost signals)
    assert r["inside"] > 25 and r["after"] > 25, r


def test_deep_recursion_at_1ms_loses_nothing(script):
    r = last_json(script("""
        import json, sys, time
        import spprof

        sys.setrecursionlimit(20000)

        def down(n):
            if n == 0:
                end = time.thread_time() + 1.0
                while time.thread_time() < end:
                    pass
                return 0
            return down(n - 1) + 1

        spprof.start(interval_ms=1)
        down(5000)
        p = spprof.stop()
        depths = [len(s.frames) for s in p.samples]
        roots = {}
        for s in p.samples:
            roots[s.frames[0].function_name] = roots.get(s.frames[0].function_name, 0) + s.count
        print(json.dumps({"samples": p.sample_count, "dropped": p.dropped_count,
                          "sampled_ms": p.sampled_time_ms, "max_depth": max(depths),
                          "roots": roots}))
    """))
    assert r["dropped"] == 0, r
    assert r["samples"] >= 900, r
    assert abs(r["sampled_ms"] - 1000) < 100, r
    # 5000 deep: the innermost 256 frames kept under a <truncated> root
    # (only samples taken on the way down can still reach <module>)
    assert set(r["roots"]) <= {"<truncated>", "<module>"}, r
    assert r["roots"]["<truncated>"] >= 0.95 * r["samples"], r
    assert r["max_depth"] == 257, r


def test_threads_beyond_the_memory_limit_are_counted_as_dropped(script):
    r = last_json(script("""
        import json, threading, time
        import spprof

        def burn():
            end = time.thread_time() + 0.1
            while time.thread_time() < end:
                pass

        spprof.start(interval_ms=1, memory_limit_mb=1)
        ts = [threading.Thread(target=burn) for _ in range(40)]
        for t in ts: t.start()
        for t in ts: t.join()
        p = spprof.stop()
        print(json.dumps({"samples": p.sample_count, "dropped": p.dropped_count,
                          "threads": len({s.thread_id for s in p.samples})}))
    """))
    # 40 threads x 100 ms of CPU at 1 ms: every sample is either kept or
    # counted as dropped.
    assert r["threads"] < 40, r
    assert 3600 <= r["samples"] + r["dropped"] <= 4400, r


def test_thread_renamed_while_running(script):
    r = last_json(script("""
        import json, threading, time
        import spprof

        def burn():
            end = time.thread_time() + 0.05
            while time.thread_time() < end:
                pass
            threading.current_thread().name = "renamed"
            end = time.thread_time() + 0.05
            while time.thread_time() < end:
                pass

        spprof.start(interval_ms=1)
        t = threading.Thread(target=burn, name="original")
        t.start(); t.join()
        p = spprof.stop()
        print(json.dumps(sorted({s.thread_name for s in p.samples if s.thread_id == t.native_id})))
    """))
    assert r == ["renamed"], r


SYSCALL_SPLIT = """
import json, os, time
import spprof

fd = os.open("/dev/zero", os.O_RDONLY)

def in_kernel(budget):
    end = time.thread_time() + budget
    while time.thread_time() < end:
        os.read(fd, 65536)

def in_python(budget):
    end = time.thread_time() + budget
    x = 0
    while time.thread_time() < end:
        for i in range(2000):
            x += i

spprof.start(interval_ms=1)
for _ in range(10):
    in_kernel(0.05); in_python(0.05)
p = spprof.stop()
w = {"in_kernel": 0, "in_python": 0}
for s in p.samples:
    for k in w:
        if any(f.function_name == k for f in s.frames):
            w[k] += s.weight_ns
print(json.dumps({"clock": p.clock, "share": w["in_kernel"] / (w["in_kernel"] + w["in_python"])}))
"""


def test_unprivileged_clock_samples_system_call_time_truthfully(tmp_path):
    """Without perf privileges a user-time-only perf clock would under-sample
    code in system calls: the default clock is then the polling one, which
    takes the samples it defers with the CPU-time timer, which counts system
    time too."""
    import shutil
    import subprocess
    import sys

    if not shutil.which("unshare"):
        import pytest
        pytest.fail("needs unshare (Debian package util-linux)")
    (tmp_path / "t.py").write_text(SYSCALL_SPLIT)
    out = subprocess.run(["unshare", "--user", sys.executable, str(tmp_path / "t.py")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    with open("/proc/sys/kernel/perf_event_paranoid") as f:
        paranoid = int(f.read())
    assert r["clock"] == "cpu_poll", r
    assert 0.40 < r["share"] < 0.60, (paranoid, r)


# Profiles work(1.5) at 1 ms and prints the share of work's CPU time spent
# on each of its lines tagged "# TAG" (by the innermost frame), and the
# shares work measured itself, if it left them in MEASURED.
LINE_SHARES = """
import re
spprof.start(interval_ms=1)
work(1.5)
p = spprof.stop()
lines = {}
for s in p.samples:
    f = s.frames[-1]
    if f.function_name == "work":
        lines[f.lineno] = lines.get(f.lineno, 0) + s.weight_ns
tags = {}
for i, l in enumerate(open(__file__).read().splitlines()):
    m = re.search(r"# ([A-Z]+)$", l)
    if m:
        tags[m.group(1)] = i + 1
total = sum(lines.values())
# (how the polling clock judged its signals: evidence when a share is off)
from spprof import _spprof
print(json.dumps({"clock": p.clock, "shares": {t: lines.get(n, 0) / total for t, n in tags.items()},
                  "measured": globals().get("MEASURED", {}),
                  "judged": getattr(_spprof, "poll_counts", dict)()}))
"""


ONE_CPU = """
import os
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
"""


def expect_one_cpu_skew_on_old_kernels(request, cpus):
    """On one CPU the polling thread stops the thread it samples at random
    moments only if the kernel gives it a 0.1 ms slice (EEVDF, Linux
    6.12+); on older kernels it waits until the thread's slice is spent,
    and its samples are judged as those of a thread another task stopped
    (README, How it samples), which has not been tested on such a kernel.
    There the one-CPU runs may fail, and still run."""
    import platform

    from conftest import kernel_at_least

    if cpus in ("one", "one_busy") and not kernel_at_least(6, 12):
        request.applymarker(pytest.mark.xfail(
            reason="Linux %s gives no 0.1 ms slice (6.12+)" % platform.release(), strict=False))


CLOCK_NAMES = {"perf": "perf_event", "poll": "cpu_poll", "nonblocking": "nonblocking"}


def line_shares(script, source, *args, cpus="all", clocks=("perf", "poll"), runs=1):
    """source (defining work) profiled under each of clocks (SPPROF_CLOCK
    values): {clock: {tag: share}} and what each run measured itself,
    {clock + "_measured": ...}. With runs > 1 the clocks run in turn that
    many times and the shares are averaged (the poller's judgements are
    summed): a single run's share moves with the machine's state. With cpus="one" the target (and so the
    poller) runs on one CPU, as in a one-CPU container: the poller then
    takes the CPU of the thread it samples, whose signal comes where it was
    stopped. With cpus="busy" two busy processes per CPU run beside it, as
    on a loaded host: other tasks then take the target's CPU, and the
    poller's signals find it stopped where they did. cpus="one_busy" is
    both."""
    import os
    import subprocess
    import sys

    if cpus in ("one", "one_busy"):
        source = ONE_CPU + source
    spinners = []
    out = {}
    try:
        if cpus in ("busy", "one_busy"):
            # each spins until this process is gone, if it is killed
            spin = "import os\nwhile os.getppid() == %d:\n    for _ in range(100000): pass" % os.getpid()
            for _ in range(2 * len(os.sched_getaffinity(0))):
                spinners.append(subprocess.Popen([sys.executable, "-c", spin]))
        for _ in range(runs):
            for clock in clocks:
                r = last_json(script(source + LINE_SHARES, *args, env={"SPPROF_CLOCK": clock}))
                assert r["clock"] == CLOCK_NAMES[clock], r
                for key, part in ((clock, r["shares"]), (clock + "_measured", r["measured"])):
                    mean = out.setdefault(key, {})
                    for tag, v in part.items():
                        mean[tag] = mean.get(tag, 0) + v / runs
                if clock == "poll":
                    judged = out.setdefault("poll_judged", {})
                    for k, v in r["judged"].items():
                        judged[k] = judged.get(k, 0) + v
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    return out


SYSCALL_DENSE = """
import json, time
import spprof

def work(budget):
    end = time.thread_time() + budget  # a system call (the vDSO cannot answer it, and makes it)
    x = 0
    while time.thread_time() < end:  # CALL
        for i in range(100):
            x += i  # BODY
    return x
"""


@pytest.mark.parametrize("cpus", ["all", "one", "busy"])
def test_polling_clock_keeps_lines_true_in_code_dense_with_system_calls(script, cpus, request):
    """A loop that makes a system call every few microseconds: a signal
    sent from another thread is delivered at the next return to user mode,
    which here is nearly always that call's exit, sooner than the
    interrupt that carries the signal. Unless the polling clock hands such
    a sample to the thread's own clock (a random moment later), the call's
    line gets nearly every sample. The body's share must match
    perf_event's, whose samples come at exact moments of the thread's CPU
    time, and the call's must not pile up. (The call's own kernel time is
    sampled only by the handed-on samples, so its share can come out a
    little under perf_event's: 0.12 against 0.22 in one run of four.) On
    one CPU the poller takes the thread's CPU to send, and the thread takes
    the signal where it was stopped: that must be a random moment, not the
    calls where the scheduler finds its slice spent (there the call's line
    got 0.48-0.56, perf_event's 0.18, until the poller asked for a short
    slice; since, 0.21-0.25). With busy processes beside, another task
    takes the thread's CPU where the scheduler finds its slice spent, which
    for this loop is the clock read itself: the call's line got 0.36-0.40
    against perf_event's 0.23-0.26 until such samples were handed on at a
    clock read's exit (since, 0.25-0.28). Each clock runs twice, in turn,
    and the shares are averaged: in one CI run (3.9, one CPU) perf_event's
    call line got 0.08 and the polling clock's 0.19."""
    expect_one_cpu_skew_on_old_kernels(request, cpus)
    shares = line_shares(script, SYSCALL_DENSE, cpus=cpus, runs=2)
    assert shares["perf"]["BODY"] > 0.35, shares
    assert abs(shares["poll"]["BODY"] - shares["perf"]["BODY"]) < 0.10, shares
    assert shares["poll"]["CALL"] < shares["perf"]["CALL"] + 0.10, shares


BIG_READS = """
import json, os, sys, tempfile, time
import spprof

# 4 MiB from the page cache: a kernel copy of some 0.3 ms, which no signal
# cuts short (a read of /dev/zero stops at a pending signal), into the same
# buffer each time: a new 4 MiB object would add the allocator's work (under
# ASan, an mmap, a page fault per page and a munmap: 0.94 of the time).
tf = tempfile.NamedTemporaryFile(dir=sys.argv[1])
tf.write(os.urandom(4 << 20))
tf.flush()
fd = os.open(tf.name, os.O_RDONLY)
buf = bytearray(4 << 20)

MEASURED = {}

def work(budget):
    start = time.thread_time()
    end = start + budget
    n = 0
    read = 0.0
    t0 = start
    while t0 < end:
        os.preadv(fd, [buf], 0)  # READ
        t1 = time.thread_time()
        read += t1 - t0
        for i in range(5000):
            n += i
        t0 = time.thread_time()
    MEASURED["READ"] = read / (t0 - start)
"""


@pytest.mark.parametrize("cpus", ["all", "one"])
def test_polling_clock_keeps_time_in_long_system_calls_on_their_line(script, tmp_path, cpus,
                                                                     request):
    """Large reads from the page cache between short Python loops. A signal
    reaches a thread that is inside a system call only as the call
    returns: the polling clock must keep that sample at the call (it stood
    for the call's time), not hand it on as it does a signal that merely
    met a short call on its way, or the read's line would get a fraction
    of its share (a quarter to a third of perf_event's, measured when it
    did). Each run measures the reads' share of work's CPU time itself: it
    moves from run to run (0.30-0.46 here; with an earlier
    loop four times as long, 0.10-0.55). perf_event must come within 10
    points of it (it came within 4). The polling clock hands on a signal
    sent in a call's last stretch, so it errs low only: 0-6 points under
    on a quiet machine, 5-9 with both CPUs busy with other work; it must
    come within 10 under and 5 over. On one CPU the thread was stopped
    (not running) when the signal left, and takes it where it stopped: the
    sample is kept wherever that is (handed on as a call's, the reads got
    0.14-0.20 of 0.31-0.33; kept, 2.9 under to 2.3 over in six runs on a
    quiet machine, up to 5.0 over with the suite running beside, 5.3 and
    5.5 over in two CI runs: from run to run it moves more than the +5
    allowed on two CPUs, so on one it may come 8 over). (With busy processes
    beside, in trials, the reads came 9-13 points under before signals that
    found the thread stopped by one of them were kept, within 3 after; but
    a CI run had them 5.4 points over, so that case is not asserted.)
    Each clock runs twice, in turn, and the shares and measured shares are
    averaged: in one fresh-clone run (3.13, two CPUs) the reads took 0.62
    of the time and perf_event gave them 0.75."""
    expect_one_cpu_skew_on_old_kernels(request, cpus)
    shares = line_shares(script, BIG_READS, str(tmp_path), cpus=cpus, runs=2)
    for clock in ("perf", "poll"):
        truth = shares[clock + "_measured"]["READ"]
        assert truth > 0.15, shares  # the reads do take time
        low, high = (0.10, 0.10) if clock == "perf" else (0.10, 0.08 if cpus == "one" else 0.05)
        assert truth - low < shares[clock]["READ"] < truth + high, (clock, shares)


EXPIRIES = """
import json, os, sys, time
import spprof

with open(os.path.join(sys.argv[1], "data"), "wb") as f:
    f.write(os.urandom(4 << 20))
fd = os.open(os.path.join(sys.argv[1], "data"), os.O_RDONLY)
buf = bytearray(4 << 20)
spprof.start(interval_ms=3)
t0 = time.thread_time()
while time.thread_time() < t0 + 0.6:
    os.preadv(fd, [buf], 0)
    for i in range(20000):
        pass
cpu_ms = (time.thread_time() - t0) * 1e3
p = spprof.stop()
print(json.dumps({"clock": p.clock, "weights": [s.weight_ns for s in p.samples],
                  "sampled_ms": p.sampled_time_ms, "cpu_ms": cpu_ms}))
"""


def test_cpu_timer_weighs_a_sample_by_the_expiries_it_answers(script, tmp_path):
    """A timer signal that expires in a system call comes as the call
    returns: weighed by the CPU time since the previous sample, that wait
    would go to the call's line. A CPU timer's sample weighs the interval
    times the expiries it answers (1 + the timer's overruns: at 3 ms on a
    250 Hz kernel, 3 or 6 ms), and the weights still add up to the CPU
    time."""
    r = last_json(script(EXPIRIES, str(tmp_path), env={"SPPROF_CLOCK": "cpu"}))
    assert r["clock"] == "cpu_timer", r
    odd = [w for w in r["weights"] if w % 3000000]
    assert r["weights"] and not odd, r
    assert abs(r["sampled_ms"] - r["cpu_ms"]) < 0.10 * r["cpu_ms"], r


PARALLEL = """
import json, sys, threading, time
import spprof

# Four call chains with distinct names; every stack must be made only of
# caller/callee pairs that exist here.
def a_leaf(n):
    x = 0
    for i in range(n):
        x += i
    return x
def a_mid(n): return a_leaf(n)
def a_top(t):
    end = time.thread_time() + t
    while time.thread_time() < end: a_mid(500)
def b_leaf(n):
    return sum(i * i for i in range(n))
def b_mid(n): return b_leaf(n)
def b_top(t):
    end = time.thread_time() + t
    while time.thread_time() < end: b_mid(500)
def c_leaf(n):
    return sorted(range(n, 0, -1))[0]
def c_top(t):
    end = time.thread_time() + t
    while time.thread_time() < end: c_leaf(500)
def d_rec(n, t):
    if n:
        return d_rec(n - 1, t)
    end = time.thread_time() + t
    while time.thread_time() < end: a_leaf(200)
def d_top(t): d_rec(20, t)

spprof.start(interval_ms=1)
ts = [threading.Thread(target=f, args=(1.0,), name=f.__name__) for f in (a_top, b_top, c_top, d_top)]
t0 = time.time()
for t in ts: t.start()
for t in ts: t.join()
wall = time.time() - t0
p = spprof.stop()
stacks = [([f.function_name for f in s.frames], s.thread_name, s.count) for s in p.samples]
print(json.dumps({"stacks": stacks, "dropped": p.dropped_count, "wall": wall,
                  "samples": p.sample_count, "clock": p.clock}))
"""

EDGES = {
    ("a_top", "a_mid"), ("a_mid", "a_leaf"), ("b_top", "b_mid"), ("b_mid", "b_leaf"),
    ("b_leaf", "<genexpr>"), ("b_leaf", "b_leaf.<locals>.<genexpr>"), ("c_top", "c_leaf"),
    ("d_top", "d_rec"), ("d_rec", "d_rec"), ("d_rec", "a_leaf"),
}


def test_parallel_threads_no_impossible_stacks(script):
    """Four CPU-bound threads (truly parallel on a free-threaded build):
    all sampled, and every stack is a real chain of calls."""
    r = last_json(script(PARALLEL))
    seen = {}
    for names, thread, count in r["stacks"]:
        seen[thread] = seen.get(thread, 0) + count
        ours = [n for n in names if n[0] in "abcd" and n[1] == "_" or n.endswith("<genexpr>")]
        for caller, callee in zip(ours, ours[1:]):
            assert (caller, callee) in EDGES, (thread, names)
        if ours:
            assert ours[0] == thread, (thread, names)  # each thread runs its own chain
    for name in ("a_top", "b_top", "c_top", "d_top"):
        assert seen.get(name, 0) >= 700, (name, seen)  # 1 s of CPU at 1 ms each


GENERATORS = """
import json, time
import spprof

# sum() enters the generator's frame through a new call of the evaluation
# loop for every item: thousands of frames linked in and out per ms.
def g_mid():
    return sum(x for x in range(1000))

def g_top(t):
    end = time.thread_time() + t
    while time.thread_time() < end:
        g_mid()

spprof.start(interval_ms=1)
g_top(3.0)
p = spprof.stop()
stacks = [([f.function_name for f in s.frames], s.count) for s in p.samples]
print(json.dumps({"stacks": stacks, "dropped": p.dropped_count, "samples": p.sample_count}))
"""


def test_frames_caught_while_linked_in_keep_their_callers(script):
    """A sample that lands while the interpreter links a generator's frame
    in (3.11/3.12 publish the new eval loop before its frame) must still
    show the whole stack, not the generator alone; none is thrown away."""
    r = last_json(script(GENERATORS))
    for names, count in r["stacks"]:
        if any(n.endswith("<genexpr>") for n in names):
            assert names[:3] == ["<module>", "g_top", "g_mid"], names
    assert r["samples"] >= 2400, r  # 3 s of CPU at 1 ms
    assert r["dropped"] <= r["samples"] // 200, r

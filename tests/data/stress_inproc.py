"""Target programs of the in-process stress suite (tests/test_stress.py).

    python stress_inproc.py SCENARIO native|python

profiles one scenario with spprof at interval_ms=1 (native unwinding on or
off) and prints one JSON line: what the profile holds (samples, drops, the
lines and callers seen per function, stacks whose thread root is missing)
and what the scenario itself observed. The test asserts on it. Hot lines
are marked with a trailing "# MARKER" comment and found by reading this
file.
"""

import asyncio
import gc
import hashlib
import inspect
import json
import multiprocessing
import os
import queue
import re
import select
import signal
import socket
import sys
import threading
import time
import warnings
import zlib

import spprof

SRC = open(os.path.abspath(__file__)).read().splitlines()


def line(marker):
    return next(i + 1 for i, l in enumerate(SRC) if l.rstrip().endswith("# " + marker))


# What a thread's outermost frame may be: the main module, a threading
# thread's bootstrap, or one of spprof's markers for a stack with no Python
# frame yet (a thread starting) or deeper than recorded.
ROOTS = ("<module>", "_bootstrap", "Thread._bootstrap", "<no Python frame>", "<truncated>")


def burn(seconds):
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        for i in range(100):
            x += i  # BURN
    return x


def burn_until(event):
    while not event.is_set():
        burn(0.005)


def hash_until(event):
    data = os.urandom(1 << 16)
    while not event.is_set():
        hashlib.sha256(data).digest()
        time.sleep(0.0005)


def short(name):
    # 3.11+ qualified names: "Thread._bootstrap", "f.<locals>.g".
    return name.rsplit(".", 1)[-1] if not name.startswith("<") else name


def summary(p, cpu_ms, **extra):
    """The facts of a profile the tests check, as JSON-able values."""
    funcs, parents, bad_roots, names = {}, {}, [], {}
    for s in p.samples:
        py = [f for f in s.frames if not f.is_native]
        # With native unwinding, a thread outside any Python frame (starting
        # or ending) shows its C stack, from the thread's own start.
        if not py and s.frames and s.frames[0].is_native:
            pass
        elif not py or py[0].function_name not in ROOTS:
            bad_roots.append([f.function_name for f in s.frames][:8])
        names[str(s.thread_id)] = s.thread_name
        seen = set()
        # Innermost first: a recursive function counts once per stack, at
        # its innermost line.
        for k in range(len(py) - 1, -1, -1):
            name = short(py[k].function_name)
            if name in seen:
                continue
            seen.add(name)
            lines = funcs.setdefault(name, {})
            lines[str(py[k].lineno)] = lines.get(str(py[k].lineno), 0) + s.count
            parent = short(py[k - 1].function_name) if k else ""
            ps = parents.setdefault(name, {})
            ps[parent] = ps.get(parent, 0) + s.count
    out = {
        "samples": p.sample_count,
        "dropped": p.dropped_count,
        "count_sum": sum(s.count for s in p.samples),
        "sampled_ms": p.sampled_time_ms,
        "cpu_ms": cpu_ms,
        "clock": p.clock,
        "bad_roots": bad_roots[:20],
        "funcs": funcs,
        "parents": parents,
        "names": names,
        "max_depth": max([len([f for f in s.frames if not f.is_native]) for s in p.samples] or [0]),
        "native_frames": sum(s.count for s in p.samples if any(f.is_native for f in s.frames)),
    }
    out.update(extra)
    return out


def profiled(fn, *args, **kw):
    """Runs fn under spprof at 1 ms; returns (its result, summary)."""
    cpu0 = time.process_time()
    spprof.start(interval_ms=1)
    try:
        result = fn(*args)
        live = spprof.stats()
    finally:
        p = spprof.stop()
    cpu_ms = (time.process_time() - cpu0) * 1e3
    return result, summary(p, cpu_ms, live_collected=live.collected_samples,
                           live_dropped=live.dropped_samples, **kw)


# ---- 500 threads, some renamed while they run ----

def worker(i, rename, go):
    go.wait()
    burn(0.001)
    if rename:
        threading.current_thread().name = "renamed-%d" % i
    burn(0.001)  # WORKER


def threads_500():
    expected = {}
    for batch in range(10):
        # A batch burns once all of it has started: on free-threaded builds
        # each start waits for every running thread to pause (5 starts a
        # second against 50 spinning threads, profiled or not).
        go = threading.Event()
        ts = [threading.Thread(target=worker, args=(i, i % 5 == 0, go), name="w-%d" % i)
              for i in range(batch * 50, batch * 50 + 50)]
        for t in ts:
            t.start()
        go.set()
        for t in ts:
            t.join()
        for t in ts:
            # A thread id can be reused once its thread ended (pid_max may
            # be small): such ids are left out of the name check.
            expected[str(t.native_id)] = None if str(t.native_id) in expected else t.name
    return {"expected_names": expected}


# ---- os.fork() in the profiled process ----

def perf_fds():
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += "perf_event" in os.readlink("/proc/self/fd/" + fd)
        except OSError:
            pass
    return n


def posix_timers():
    with open("/proc/self/timers") as f:
        return f.read().count("ID:")


def child_work(seconds):
    burn(seconds)  # CHILD


def in_child():
    """What a forked child sees: no profiler running, no timer, no perf fd,
    no SIGPROF while it burns CPU; and it can profile itself."""
    got = []
    res = {"active": spprof.is_active(), "timers": posix_timers(), "perf_fds": perf_fds()}
    old = signal.signal(signal.SIGPROF, lambda *a: got.append(1))
    burn(0.1)
    res["sigprof_received"] = len(got)
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    spprof.start(interval_ms=1)
    child_work(0.1)
    p = spprof.stop()
    res["old_handler"] = repr(old)
    res["samples"] = p.sample_count
    res["child_work"] = sum(s.count for s in p.samples
                            if any(f.function_name == "child_work" for f in s.frames))
    return res


def forker():
    burn(0.02)
    results = []
    for _ in range(2):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                os.write(w, json.dumps(in_child()).encode())
            finally:
                os._exit(0)
        os.close(w)
        data = b""
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        results.append({"status": status, "child": json.loads(data.decode() or "null")})
        burn(0.02)
    return results


def fork_scenario():
    # A second thread runs (and is sampled) while the main thread forks.
    stop = threading.Event()
    t = threading.Thread(target=burn_until, args=(stop,), name="busy")
    t.start()
    try:
        results = forker()
    finally:
        stop.set()
        t.join()
    return {"forks": results}


# ---- multiprocessing, fork and spawn ----

def square_slowly(x):
    burn(0.01)
    return x * x, spprof.is_active(), posix_timers()


def pool_map(method):
    with multiprocessing.get_context(method).Pool(2) as pool:
        return pool.map(square_slowly, range(8))


def mp_scenario():
    out = {}
    for method in ("fork", "spawn"):
        res = pool_map(method)
        out[method] = {"squares": [r[0] for r in res], "active": any(r[1] for r in res),
                       "timers": sum(r[2] for r in res)}
    burn(0.05)
    return out


# ---- Python-level shapes: recursion, generators, coroutines, tasks,
# exceptions, exec/eval, gc, C callbacks ----

def recurse(n):
    if n == 0:
        return burn(0.25)  # BOTTOM
    return recurse(n - 1) + 1


def deep_recursion():
    sys.setrecursionlimit(30000)
    # 3.9/3.10 recurse on the C stack too: a roomy thread stack.
    threading.stack_size(256 << 20)
    t = threading.Thread(target=recurse, args=(10000,), name="deep")
    threading.stack_size(0)
    t.start()
    t.join()
    return {}


def gen_numbers(n):
    for i in range(n):
        yield i * i  # GEN


def use_generator(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        for _ in gen_numbers(2000):
            pass


async def co_leaf(n):
    x = 0
    for i in range(n):
        x += i  # CORO
    return x


async def co_mid(n):
    return await co_leaf(n)


def use_coroutines(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        c = co_mid(2000)
        try:
            c.send(None)
        except StopIteration:
            pass


async def task_work(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        x = 0
        for i in range(300):
            x += i  # TASK
        await asyncio.sleep(0)


def use_asyncio(seconds):
    async def main():
        await asyncio.gather(*[task_work(seconds) for _ in range(10)])

    asyncio.run(main())


def raise_deep(n):
    if n == 0:
        raise ValueError("deep")  # RAISE
    return raise_deep(n - 1)


def use_exceptions(seconds):
    end = time.thread_time() + seconds
    caught = 0
    while time.thread_time() < end:
        try:
            raise_deep(300)
        except ValueError:
            caught += 1
    return caught


def use_exec_eval(seconds):
    end = time.thread_time() + seconds
    i = 0
    while time.thread_time() < end:
        ns = {}
        exec("def churned_%d(n):\n    return sum([k for k in range(n)])\n" % (i % 50), ns)
        eval("f(3000)", {"f": ns["churned_%d" % (i % 50)]})
        i += 1


def make_cycles(n):
    for i in range(n):
        a = [i]
        a.append(a)
        ns = {}
        exec("def dying():\n    pass\n", ns)  # code objects die in the collections
        ns["self"] = ns


GC_SPLIT = {"cycles": 0.0, "gc": 0.0}  # CPU seconds at each line of use_gc


def use_gc(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        t0 = time.thread_time()
        make_cycles(200)
        t1 = time.thread_time()
        gc.collect()  # GC
        GC_SPLIT["cycles"] += t1 - t0
        GC_SPLIT["gc"] += time.thread_time() - t1


def sort_key(x):
    y = 0
    for i in range(20):
        y += i  # KEY
    return -x


def use_sorted(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sorted(range(2000), key=sort_key)


def repl(m):
    s = 0
    for i in range(20):
        s += i  # REPL
    return m.group(0).upper()


def use_re_sub(seconds):
    text = "alpha beta gamma delta " * 200
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        re.sub(r"[a-z]+", repl, text)


SHAPES = [use_generator, use_coroutines, use_asyncio, use_exceptions, use_exec_eval, use_gc,
          use_sorted, use_re_sub]


def shapes():
    for fn in SHAPES:
        # (repl gets about two thirds of use_re_sub's samples, its marked
        # line 0.3 of those, 36 in all once under ASan: a run as long as
        # the others left too few to check its line's share by)
        fn(0.3 if fn is use_re_sub else 0.12)
    # the share of use_gc's CPU time spent in gc.collect(), measured apart
    return {"gc_share": GC_SPLIT["gc"] / ((GC_SPLIT["gc"] + GC_SPLIT["cycles"]) or 1)}


# ---- GIL-released native work in several threads ----

def do_sha(data, seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        hashlib.sha256(data).digest()  # SHA


def do_zlib(data, seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        zlib.compress(data, 6)  # ZLIB


def do_sleep(seconds):
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(0.005)


def do_socket(seconds):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    a = socket.create_connection(srv.getsockname())
    b, _ = srv.accept()
    moved = 0
    end = time.time() + seconds
    while time.time() < end:
        a.sendall(b"x" * 65536)
        got = 0
        while got < 65536:
            got += len(b.recv(65536))  # RECV
        moved += got
    for s in (a, b, srv):
        s.close()
    return moved


def gil_released():
    data = os.urandom(4 << 20)
    ts = [threading.Thread(target=do_sha, args=(data, 0.15), name="sha"),
          threading.Thread(target=do_zlib, args=(data[: 1 << 20], 0.15), name="zlib"),
          threading.Thread(target=do_sleep, args=(0.3,), name="sleep"),
          threading.Thread(target=do_socket, args=(0.3,), name="socket")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return {}


# ---- system calls interrupted by the sampling signal ----

def blocking_calls(seconds):
    """Every blocking call here is interrupted by the sampling signal when
    the clock is the wall timer; none may raise InterruptedError or return
    before its timeout."""
    errors, early, counts = [], [], {}
    r, w = os.pipe()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    ev = threading.Event()
    q = queue.Queue()
    poller = select.poll()
    poller.register(r, select.POLLIN)

    def feed():
        # Data arrives 20 ms after each read starts waiting.
        for _ in range(int(seconds / 0.02)):
            time.sleep(0.02)
            os.write(w, b"x")
            cli.sendall(b"y")

    def timed(name, fn, at_least):
        t0 = time.monotonic()
        try:
            fn()
        except InterruptedError as exc:
            errors.append("%s: %r" % (name, exc))
        took = time.monotonic() - t0
        if took < at_least:
            early.append("%s returned after %.4f s" % (name, took))
        counts[name] = counts.get(name, 0) + 1

    def loop(name, fn, at_least=0.0):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            timed(name, fn, at_least)

    calls = [
        ("time.sleep", lambda: time.sleep(0.01), 0.01),
        ("select.select", lambda: select.select([], [], [], 0.01), 0.01),
        ("poll.poll", lambda: select.poll().poll(10), 0.01),
        ("Event.wait", lambda: ev.wait(0.01), 0.01),
        ("Queue.get", lambda: _queue_get(q), 0.01),
    ]
    readers = [
        ("os.read", lambda: os.read(r, 1)),
        ("socket.recv", lambda: conn.recv(1)),
    ]
    ts = [threading.Thread(target=loop, args=c, name=c[0]) for c in calls]
    ts += [threading.Thread(target=loop, args=c, name=c[0]) for c in readers]
    ts.append(threading.Thread(target=feed, name="feed"))
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for fd in (r, w):
        os.close(fd)
    for s in (cli, conn, srv):
        s.close()
    return {"errors": errors, "early": early, "counts": counts}


def _queue_get(q):
    try:
        q.get(timeout=0.01)
    except queue.Empty:
        pass


def eintr():
    return blocking_calls(0.4)


# ---- start/stop cycles, stop from another thread ----

def cycles(n):
    # A thread hashing (the GIL released) is sampled all along, so that
    # every stop() finds signals in flight, without making the main thread
    # wait for the GIL at each cycle.
    stop = threading.Event()
    bg = threading.Thread(target=hash_until, args=(stop,), name="background")
    bg.start()
    profiles = []
    errors = []
    try:
        for i in range(n):
            spprof.start(interval_ms=1)
            if i % 10 == 0:
                # Stopped by another thread than the one that started it.
                box = []
                t = threading.Thread(target=lambda: box.append(spprof.stop()))
                t.start()
                t.join()
                if len(box) != 1:
                    errors.append("cycle %d: stop in another thread failed" % i)
                    break
                p = box[0]
            else:
                p = spprof.stop()
            if p.sample_count != sum(s.count for s in p.samples):
                errors.append("cycle %d: counts do not add up" % i)
            if i % 1000 == 999:
                profiles.append(p.sample_count)
    finally:
        stop.set()
        bg.join()
    return {"errors": errors, "active": spprof.is_active(), "timers": posix_timers(),
            "perf_fds": perf_fds(), "cycles": n}


# ---- a program with its own SIGPROF handler or ITIMER_PROF ----

def start_refused():
    """The message start() refuses with, or "started"."""
    try:
        spprof.start(interval_ms=1)
    except RuntimeError as exc:
        return str(exc)
    spprof.stop()
    return "started"


def sigprof_scenario():
    out = {}
    # 1. Its own handler, installed before start: refused.
    signal.signal(signal.SIGPROF, lambda *a: None)
    out["handler"] = start_refused()
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    # 2. ITIMER_PROF armed (its signal ignored, so no handler to see): refused.
    signal.signal(signal.SIGPROF, signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_PROF, 10.0, 10.0)
    out["itimer"] = start_refused()
    signal.setitimer(signal.ITIMER_PROF, 0, 0)
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    # 3. A handler installed while profiling takes over the signal of
    # spprof's clock: sampling stops, the program keeps running, stop()
    # says so. The CPU timer signals with SIGPROF; the default clock
    # (perf_event) with SIGTRAP where the kernel allows it (Linux 6.15+).
    out["taken_over"] = {}
    for clock in ("cpu", "default"):
        os.environ["SPPROF_CLOCK"] = "" if clock == "default" else clock
        got = []
        spprof.start(interval_ms=1)
        burn(0.15)  # (the CPU timer fires on the 250 Hz tick)
        sig = signal.Signals(spprof._spprof.stats()["signal"])
        previous = signal.signal(sig, lambda *a: got.append(1))
        # A thread started now is armed with the handler the program's:
        # spprof must not take the signal back for it.
        t = threading.Thread(target=burn, args=(0.05,))
        t.start()
        burn(0.05)
        t.join()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            p = spprof.stop()
        signal.signal(sig, previous)
        out["taken_over"][clock] = {"samples": p.sample_count, "user_handler_calls": len(got),
                                    "clock": p.clock, "signal": sig.name,
                                    "warnings": [str(w.message) for w in caught]}
    # 3b. With the default clock on SIGTRAP, a SIGPROF handler installed
    # while profiling is the program's alone: sampling goes on, silently.
    os.environ["SPPROF_CLOCK"] = ""
    got = []
    spprof.start(interval_ms=1)
    burn(0.05)
    trap = spprof._spprof.stats()["signal"] == signal.SIGTRAP
    signal.signal(signal.SIGPROF, lambda *a: got.append(1))
    before = spprof.stats().collected_samples
    burn(0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = spprof.stop()
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    out["sigprof_beside_trap"] = {"trap": trap, "after_handler": p.sample_count - before,
                                  "user_handler_calls": len(got),
                                  "warnings": [str(w.message) for w in caught]}
    # 4. And afterwards spprof starts again normally.
    spprof.start(interval_ms=1)
    burn(0.05)
    out["after"] = spprof.stop().sample_count
    return out


# ---- interpreter exit while profiling ----

def exit_atexit(path):
    spprof.start(interval_ms=1, output_path=path)
    # A daemon thread is still burning when the interpreter exits.
    threading.Thread(target=burn, args=(30,), name="daemon", daemon=True).start()
    burn(0.1)  # EXITING
    # (no stop(): the interpreter exits while profiling)


def exit_in_profiler(path):
    with spprof.Profiler(interval_ms=1, output_path=path):
        burn(0.1)  # SYSEXIT
        sys.exit(3)


SCENARIOS = {
    "threads_500": threads_500,
    "fork": fork_scenario,
    "multiprocessing": mp_scenario,
    "recursion": deep_recursion,
    "shapes": shapes,
    "gil_released": gil_released,
    "eintr": eintr,
}


def main():
    scenario, mode = sys.argv[1], sys.argv[2]
    if mode == "native":
        spprof.set_native_unwinding(True)
    elif mode == "nonblocking":
        os.environ["SPPROF_CLOCK"] = "nonblocking"  # (a forked child's start() too)
    markers = {m: line(m) for m in ("BURN", "WORKER", "BOTTOM", "GEN", "CORO", "TASK", "RAISE",
                                   "GC", "KEY", "REPL", "SHA", "ZLIB", "RECV")}
    # Where each function's lines lie: every line sampled in it must.
    spans = {fn.__name__: [fn.__code__.co_firstlineno,
                           fn.__code__.co_firstlineno + len(inspect.getsource(fn).splitlines()) - 1]
             for fn in (burn, worker, recurse, gen_numbers, co_leaf, co_mid, task_work, raise_deep,
                        use_exceptions, use_exec_eval, make_cycles, use_gc, sort_key, repl,
                        do_sha, do_zlib, do_socket, child_work)}
    if scenario == "cycles":
        print(json.dumps(cycles(int(sys.argv[3]))))
    elif scenario == "sigprof":
        print(json.dumps(sigprof_scenario()))
    elif scenario == "exit_atexit":
        exit_atexit(sys.argv[3])
    elif scenario == "exit_in_profiler":
        exit_in_profiler(sys.argv[3])
    else:
        extra, out = profiled(SCENARIOS[scenario])
        out.update(extra)
        out["markers"] = markers
        out["spans"] = spans
        print(json.dumps(out))


if __name__ == "__main__":
    main()

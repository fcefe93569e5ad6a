"""The spprof command against real target programs of this interpreter's
version: record (launched and attached), dump, options, errors."""

import json
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import (DATA, TWO_PHASES, build_c, check_chrometrace, check_two_phases, go_pprof,
                      pprof_raw, wait_traced_by)


def spprof_exe():
    # tools/run_tests.py builds the command once and tests that one binary
    # against every interpreter's targets.
    exe = os.environ.get("SPPROF_CLI") or os.path.join(sysconfig.get_path("scripts"), "spprof")
    if not os.access(exe, os.X_OK):
        pytest.fail("the spprof command is not installed next to %s" % sys.executable)
    return exe


def run(args, timeout=120, **kw):
    return subprocess.run([spprof_exe(), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


BUSY = """
import sys, threading, time

def hot_leaf():
    x = 0
    for i in range(3000):
        x += i * i          # HOT
    return x

def cold_leaf():
    x = 0
    for i in range(1000):
        x += i              # COLD
    return x

def work(seconds):
    end = time.time() + seconds
    while time.time() < end:
        hot_leaf(); hot_leaf(); hot_leaf()
        cold_leaf()

def sleeper():
    while True:
        time.sleep(0.2)     # SLEEP

threading.Thread(target=sleeper, name="sleeper", daemon=True).start()
print("ready", flush=True)
work(float(sys.argv[1]))
"""


def line_of(src, marker):
    return next(i + 1 for i, l in enumerate(src.splitlines()) if marker in l)


@pytest.fixture
def busy(tmp_path):
    path = tmp_path / "busy.py"
    path.write_text(textwrap.dedent(BUSY))
    return path


def start_target(path, *args):
    proc = subprocess.Popen([sys.executable, str(path), *map(str, args)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def folded(path):
    counts = {}
    for line in path.read_text().splitlines():
        stack, n = line.rsplit(" ", 1)
        counts[stack] = counts.get(stack, 0) + int(n)
    return counts


def share(counts, name):
    total = sum(counts.values())
    return sum(n for s, n in counts.items() if (";" + s).rsplit(";", 1)[1].startswith(name + " ")) / total


def busy_hot_share():
    """hot_leaf's share of BUSY's two leaves' CPU time, measured with
    time.thread_time() in this interpreter (0.93 on 3.9-3.13, 0.955 on
    3.15, whose interpreter runs cold_leaf's loop relatively faster)."""
    src = textwrap.dedent(BUSY).split("def work")[0] + textwrap.dedent("""
        th = tc = 0.0
        end = time.time() + 1.0
        while time.time() < end:
            t0 = time.thread_time()
            for _ in range(20):
                hot_leaf(); hot_leaf(); hot_leaf()
            t1 = time.thread_time()
            for _ in range(20):
                cold_leaf()
            tc += time.thread_time() - t1; th += t1 - t0
        print(th / (th + tc))
        """)
    out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return float(out.stdout)


def test_record_launched_command_functions_lines_shares(busy, tmp_path):
    out = tmp_path / "p.txt"
    t0 = time.monotonic()
    r = run(["record", "-f", "collapsed", "-r", "200", "-o", out, "--", sys.executable, busy, "2"])
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "wrote %s" % out in r.stderr
    counts = folded(out)
    src = textwrap.dedent(BUSY)
    hot = "hot_leaf (busy.py:%d)" % line_of(src, "# HOT")
    stacks = "\n".join(counts)
    assert re.search(r"<module> \(busy\.py:\d+\);work \(busy\.py:\d+\);hot_leaf \(busy\.py:\d+\)", stacks)
    hot_share, cold_share = share(counts, "hot_leaf"), share(counts, "cold_leaf")
    # The split of the two leaves' samples, within 0.05 of their measured
    # CPU split: 4.5 standard deviations of a share near 0.95 at the 400
    # samples of 2 s at 200 Hz.
    truth = busy_hot_share()
    assert abs(hot_share / (hot_share + cold_share) - truth) < 0.05, (hot_share, cold_share, truth)
    assert sum(n for s, n in counts.items() if s.endswith(hot)) > 0.3 * sum(counts.values())
    # idle threads are left out by default (the sleeper runs only for the
    # instants it wakes up)
    assert sum(n for s, n in counts.items() if "sleeper" in s) < 0.05 * sum(counts.values())
    total = sum(counts.values())
    # 2 s of work at 200 Hz; never more than the rate over the whole run
    # (which a busy machine stretches: start-up, imports)
    assert 250 <= total <= 200 * elapsed * 1.05, (total, elapsed)


def test_record_attached_pid_with_duration(busy, tmp_path):
    proc = start_target(busy, 30)
    try:
        out = tmp_path / "p.json"
        t0 = time.time()
        r = run(["record", "--pid", proc.pid, "-d", "1.5", "-f", "speedscope", "-o", out])
        assert r.returncode == 0, r.stderr
        assert 1.4 < time.time() - t0 < 10
        assert proc.poll() is None, "the target must keep running after spprof detaches"
        doc = json.loads(out.read_text())
        import jsonschema

        with open(os.path.join(DATA, "speedscope-file-format-schema.json")) as f:
            jsonschema.validate(doc, json.load(f))
        frames = doc["shared"]["frames"]
        for prof in doc["profiles"]:
            assert len(prof["samples"]) == len(prof["weights"])
            for s in prof["samples"]:
                assert all(0 <= i < len(frames) for i in s)
                assert frames[s[0]]["name"] in ("<module>", "_bootstrap", "Thread._bootstrap", "<no Python frame>"), [frames[i]["name"] for i in s]
        names = {f["name"] for f in frames}
        assert {"work", "hot_leaf", "cold_leaf"} <= names
    finally:
        proc.kill()
        proc.wait()


def test_record_svg_and_idle_and_threads(busy, tmp_path):
    proc = start_target(busy, 30)
    try:
        out = tmp_path / "p.svg"
        r = run(["record", "--pid", proc.pid, "-d", "1", "-o", out, "--idle", "--threads"])
        assert r.returncode == 0, r.stderr
        root = ET.parse(str(out)).getroot()
        titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
        assert any(t.startswith("hot_leaf (busy.py:") for t in titles), titles[:20]
        assert any(t.startswith("sleeper (busy.py:") for t in titles)  # --idle keeps it
        assert any(t.startswith("thread ") for t in titles)  # --threads roots
    finally:
        proc.kill()
        proc.wait()


SLEEPER = """
import sys, threading, time

def sleeper():
    time.sleep(600)         # one long syscall

t = threading.Thread(target=sleeper, name="sleeper", daemon=True)
t.start()
time.sleep(0.1)             # (the GIL free: the sleeper goes to sleep)
print("ready", flush=True)
print(t.native_id, flush=True)
while True:
    sum(range(1000))
"""


def context_switches(pid, tid):
    with open("/proc/%d/task/%d/status" % (pid, tid)) as f:
        return sum(int(l.split()[1]) for l in f if l.split(":")[0].endswith("voluntary_ctxt_switches"))


def wait_asleep(pid, tid=None, timeout=30):
    """Waits until the thread (without tid: every thread of pid) sleeps and
    has not run for 0.1 s: on a loaded machine it may still be on its way
    to the syscall when the target says it is ready, and running then, it
    would rightly be sampled, or dumped as running."""
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        try:
            tids = [tid] if tid else [int(t) for t in os.listdir("/proc/%d/task" % pid)]
            before = [context_switches(pid, t) for t in tids]
            time.sleep(0.1)
            states = []
            for t in tids:
                with open("/proc/%d/task/%d/stat" % (pid, t)) as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            if states == ["S"] * len(tids) and [context_switches(pid, t) for t in tids] == before:
                return
        except FileNotFoundError:
            pass  # a thread ended meanwhile: look again
    pytest.fail("PID %d (thread %s) did not go to sleep in %d s" % (pid, tid or "any", timeout))


def test_idle_threads_are_not_woken_unless_idle_is_asked(tmp_path):
    """Without --idle an idle thread's stack is left out, so it is not
    paused: a thread asleep in one syscall stays asleep (no context switch),
    where with --idle every sample's pause wakes it into a ptrace stop."""
    path = tmp_path / "sleeper.py"
    path.write_text(textwrap.dedent(SLEEPER))
    proc = start_target(path)
    try:
        tid = int(proc.stdout.readline())
        wait_asleep(proc.pid, tid)
        out = tmp_path / "p.txt"
        before = context_switches(proc.pid, tid)
        r = run(["record", "--pid", proc.pid, "-r", "200", "-d", "1", "-f", "collapsed", "-o", out])
        assert r.returncode == 0, r.stderr
        woken = context_switches(proc.pid, tid) - before
        counts = folded(out)
        assert sum(counts.values()) >= 20, counts
        assert not any("sleeper (sleeper.py:" in s for s in counts), counts
        assert woken < 10, woken  # (attaching and detaching stop it once each)

        before = context_switches(proc.pid, tid)
        r = run(["record", "--pid", proc.pid, "-r", "200", "-d", "1", "-f", "collapsed", "-o", out, "--idle"])
        assert r.returncode == 0, r.stderr
        woken = context_switches(proc.pid, tid) - before
        slept = sum(n for s, n in folded(out).items() if "sleeper (sleeper.py:" in s)
        assert slept >= 20, folded(out)
        assert woken >= slept, (woken, slept)
    finally:
        proc.kill()
        proc.wait()


FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def test_gil_option_keeps_only_the_gil_holder(busy, tmp_path):
    proc = start_target(busy, 30)
    try:
        out = tmp_path / "p.txt"
        r = run(["record", "--pid", proc.pid, "-d", "1", "-f", "raw", "-o", out, "--idle", "--gil"])
        if FREE_THREADED:
            assert r.returncode == 2
            assert "--gil has no meaning" in r.stderr and "free-threaded" in r.stderr, r.stderr
            assert not out.exists()
            return
        assert r.returncode == 0, r.stderr
        counts = folded(out)
        # sleeping, it does not hold the GIL (only the instants it wakes up)
        assert sum(n for s, n in counts.items() if "sleeper" in s) < 0.05 * sum(counts.values())
        assert share(counts, "hot_leaf") > 0.3
    finally:
        proc.kill()
        proc.wait()


def test_function_and_nolineno(busy, tmp_path):
    proc = start_target(busy, 30)
    try:
        out = tmp_path / "p.txt"
        r = run(["record", "--pid", proc.pid, "-d", "0.5", "-f", "raw", "-o", out, "--function"])
        assert r.returncode == 0, r.stderr
        text = out.read_text()
        assert "hot_leaf (busy.py)" in text and "busy.py:" not in text
        r = run(["record", "--pid", proc.pid, "-d", "0.5", "-f", "raw", "-o", out, "--full-filenames"])
        assert str(busy) in out.read_text()
    finally:
        proc.kill()
        proc.wait()


def test_record_pprof_read_by_go_tool_pprof(busy, tmp_path):
    out = tmp_path / "p.pb.gz"
    r = run(["record", "-f", "pprof", "-r", "200", "-o", out, "--", sys.executable, busy, "2"])
    assert r.returncode == 0, r.stderr
    raw = pprof_raw(out)
    assert raw["sample_types"] == [("samples", "count"), ("wall", "nanoseconds")]
    assert raw["period_type"] == ("wall", "nanoseconds") and raw["period"] == 5000000
    src = textwrap.dedent(BUSY)
    hot, work = line_of(src, "# HOT"), line_of(src, "hot_leaf(); hot_leaf()")
    total = sum(s["values"][0] for s in raw["samples"])
    reported = int(re.search(r"wrote .* \((\d+) samples", r.stderr).group(1))
    assert total == reported and 100 <= total <= 500, (total, r.stderr)  # 2 s at 200 Hz
    on_hot = exact = 0
    for s in raw["samples"]:
        # (samples taken before the target has a thread state sit on a
        # pseudo-thread 0; pprof shows no numeric label of 0)
        assert s["labels"]["thread"] == "Thread 0" or int(s["labels"]["thread_id"]) > 0, s
        assert s["values"][1] > 0, s
        stack = [(l["where"], l["line"], l["start"]) for l in s["stack"]]
        if stack[-1][:2] == ("hot_leaf %s" % busy, hot):
            assert s["labels"]["thread"] == "MainThread", s
            on_hot += s["values"][0]
            if any(w.startswith("<unknown> ") for w, _, _ in stack):
                continue  # a code object the sampler could not read (rare)
            # root first: the module, work at its call line, hot_leaf with its def line
            # (3.9 starts a module at its first line of code, 2 here)
            assert stack[0][0] == "<module> %s" % busy and 1 <= stack[0][2] <= 2, stack
            assert stack[-2] == ("work %s" % busy, work, line_of(src, "def work")), stack
            assert stack[-1][2] == line_of(src, "def hot_leaf"), stack
            exact += s["values"][0]
    assert on_hot > 0.3 * total and exact > 0.9 * on_hot, (exact, on_hot, total)
    top = go_pprof(out, "-top")
    assert re.search(r"%\s+hot_leaf$", top, re.M), top
    traces = go_pprof(out, "-traces")
    assert re.search(r"hot_leaf\n\s+work\n\s+<module>\n", traces), traces[:3000]

    # By function: one location per function, without a line; the default
    # output name says what the file is.
    proc = start_target(busy, 30)
    try:
        r = run(["record", "--pid", proc.pid, "-d", "0.5", "-f", "pprof", "-F"], cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr
        raw = pprof_raw(tmp_path / ("spprof-%d.pb.gz" % proc.pid))
    finally:
        proc.kill()
        proc.wait()
    hot_locs = [l for l in raw["locations"].values() if l["where"] == "hot_leaf %s" % busy]
    assert len(hot_locs) == 1 and hot_locs[0]["line"] == 0, hot_locs
    assert hot_locs[0]["start"] == line_of(src, "def hot_leaf")


def test_nonblocking(busy, tmp_path):
    proc = start_target(busy, 30)
    try:
        out = tmp_path / "p.txt"
        r = run(["record", "--pid", proc.pid, "-d", "1", "-f", "raw", "-o", out, "--nonblocking"])
        assert r.returncode == 0, r.stderr
        assert share(folded(out), "hot_leaf") > 0.3
    finally:
        proc.kill()
        proc.wait()


SYSCALL_DENSE = """
import sys, time

def tick():
    return time.thread_time()  # TICK

def work(budget, in_callee):
    end = time.thread_time() + budget
    x = 0
    if in_callee:
        while tick() < end:
            for i in range(100):
                x += i
    else:
        while time.thread_time() < end:  # CALL
            for i in range(100):
                x += i
    return x

work(float(sys.argv[1]), sys.argv[2] == "callee")
"""


@pytest.mark.skipif(platform.machine() != "x86_64",
                    reason="where a paused thread stopped is read from x86-64's orig_rax")
@pytest.mark.parametrize("where", ["line", "callee"])
def test_paused_samples_are_not_drawn_to_system_call_exits(tmp_path, where):
    """A loop that makes a system call every few microseconds of work
    (time.thread_time(): 0.15-0.23 of its CPU time with perf_event
    in-process), on its own line or in a function of its own. A paused
    thread stops at its first return to user mode after it is asked to,
    microseconds later: nearly always that call's exit, which got 0.90-1.00
    of the samples on 3.9-3.15 before record placed a sample stopped at a
    system call's exit at the moment it read the running thread's innermost
    frame, just before the pause (now 0.15-0.28 for the line, 0.02-0.32
    for the function: README, "Where a paused sample stands")."""
    src = textwrap.dedent(SYSCALL_DENSE)
    path = tmp_path / "syscalls.py"
    path.write_text(src)
    out = tmp_path / "p.txt"
    r = run(["record", "-r", "1000", "-f", "collapsed", "-o", out, "--", sys.executable, path, 1.5,
             where])
    assert r.returncode == 0, r.stderr
    counts = {s: n for s, n in folded(out).items() if (";" + s).find(";work (") >= 0}
    total = sum(counts.values())
    assert total > 800, r.stderr
    if where == "line":
        leaf = "work (syscalls.py:%d)" % line_of(src, "# CALL")
        call = sum(n for s, n in counts.items() if s.endswith(";" + leaf)) / total
        assert 0.08 < call < 0.35, (call, counts)
    else:
        # (No lower bound: a function about as short as the read before the
        # pause is undercounted, README "Where a paused sample stands"; a
        # fresh-clone test run had 0.02 here on 3.9.)
        call = sum(n for s, n in counts.items() if s.rsplit(";", 1)[1].startswith("tick (")) / total
        assert call < 0.45, (call, counts)


DUMP_TARGET = """
import threading, time

def blocked_here(seconds):
    time.sleep(seconds)     # BLOCKED

def outer():
    blocked_here(60)

t = threading.Thread(target=outer, name="waiter", daemon=True)
t.start()
print("ready", flush=True)
outer()
"""


def test_dump_text_and_json(tmp_path):
    path = tmp_path / "dumpme.py"
    path.write_text(textwrap.dedent(DUMP_TARGET))
    proc = start_target(path)
    try:
        wait_asleep(proc.pid)
        r = run(["dump", "--pid", proc.pid])
        assert r.returncode == 0, r.stderr
        line = line_of(textwrap.dedent(DUMP_TARGET), "# BLOCKED")
        assert "Process %d:" % proc.pid in r.stdout
        assert "Python v%d.%d" % sys.version_info[:2] in r.stdout
        blocks = r.stdout.split("\nThread ")[1:]
        assert len(blocks) == 2, r.stdout
        for b in blocks:
            lines = b.strip().splitlines()
            assert "(idle" in lines[0], b
            # innermost last
            assert lines[-1].strip() == "blocked_here (dumpme.py:%d)" % line, b
            assert lines[-2].strip().startswith("outer (dumpme.py:"), b
        assert any('"MainThread"' in b.splitlines()[0] for b in blocks)
        r = run(["dump", "--pid", proc.pid, "--json"])
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["pid"] == proc.pid
        assert len(doc["threads"]) == 2
        for t in doc["threads"]:
            assert t["idle"] is True
            assert t["frames"][-1] == {"name": "blocked_here", "file": str(path), "line": line}
        r = run(["dump", "--pid", proc.pid, "--full-filenames"])
        assert r.returncode == 0, r.stderr
        assert "blocked_here (%s:%d)" % (path, line) in r.stdout, r.stdout
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


LOCALS = [  # (name, Python source of its value), in the order they are assigned
    ("f", "0.1"),
    ("e", "1e22"),
    ("tiny", "1e-05"),
    ("negz", "-0.0"),
    ("zero", "0"),
    ("s1", "\"it's \\u00e9\""),
    ("s2", "'both \\' and \" \\n\\t\\\\ \\U0001F600 \\x01'"),
    ("b", "b\"by\\x00tes'\\xff\""),
    ("yes", "True"),
    ("no", "False"),
    ("nothing", "None"),
    ("lst", "[1, 2]"),
    ("longs", "'x' * 1000"),
    ("huge", "10 ** 200"),
]

LOCALS_TARGET = """
import time

def outer():
    captured = "closed over"
    def blocked_with_locals(i, big, neg):
%s
        print("ready", flush=True)
        time.sleep(60)      # LOCALS
        unassigned = captured
        return unassigned
    blocked_with_locals(42, 2 ** 70, -12345678901234567890)

outer()
""" % "\n".join("        %s = %s" % kv for kv in LOCALS)

TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str", bytes: "bytes",
              type(None): "NoneType", list: "list"}


def expected_locals():
    """(name, repr regex, type) of blocked_with_locals's locals as dump shows
    them: arguments first, then locals in order, then the closure variable;
    the unassigned local left out; reprs cut to 128 bytes with '...'."""
    values = [("i", 42), ("big", 2 ** 70), ("neg", -12345678901234567890)]
    values += [(k, eval(v)) for k, v in LOCALS] + [("captured", "closed over")]
    out = []
    for name, v in values:
        if isinstance(v, list):
            rx = "<list at 0x[0-9a-f]+>"
        else:
            r = repr(v)
            rx = re.escape(r if len(r.encode()) <= 128 else r[:125] + "...")
        out.append((name, rx, TYPE_NAMES[type(v)]))
    return out


def test_dump_locals_text_and_json(tmp_path):
    src = textwrap.dedent(LOCALS_TARGET)
    path = tmp_path / "localsme.py"
    path.write_text(src)
    proc = start_target(path)
    want = expected_locals()
    assert want[-3][1] == re.escape("'" + "x" * 124 + "...")   # the bound itself
    try:
        wait_asleep(proc.pid)
        r = run(["dump", "--pid", proc.pid, "--locals"])
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        at = lines.index("    outer.<locals>.blocked_with_locals (localsme.py:%d)"
                         % line_of(src, "# LOCALS") if sys.version_info >= (3, 11) else
                         "    blocked_with_locals (localsme.py:%d)" % line_of(src, "# LOCALS"))
        shown = lines[at + 1:]
        assert len(shown) == len(want), r.stdout
        for line, (name, rx, _) in zip(shown, want):
            assert re.fullmatch("        %s = %s" % (name, rx), line), (line, rx)
        # outer's frame: its own local and the cell it shares, by content
        outer_at = next(k for k, l in enumerate(lines) if l.startswith("    outer (localsme.py:"))
        assert lines[outer_at + 1].startswith("        blocked_with_locals = <function at 0x")
        assert lines[outer_at + 2] == "        captured = 'closed over'"

        r = run(["dump", "--pid", proc.pid, "--locals", "--json"])
        assert r.returncode == 0, r.stderr
        frames = json.loads(r.stdout)["threads"][0]["frames"]
        got = frames[-1]["locals"]
        assert [l["name"] for l in got] == [w[0] for w in want]
        for l, (name, rx, typ) in zip(got, want):
            assert re.fullmatch(rx, l["repr"]) and l["type"] == typ, (l, rx, typ)
        assert [l["name"] for l in frames[-2]["locals"]] == ["blocked_with_locals", "captured"]
        # without --locals, frames carry none
        r = run(["dump", "--pid", proc.pid, "--json"])
        assert "locals" not in json.loads(r.stdout)["threads"][0]["frames"][-1]
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


# ---- errors a user will meet ----

def test_no_such_pid():
    r = run(["dump", "--pid", "999999999"])
    assert r.returncode != 0
    assert "--pid must be" in r.stderr or "no process" in r.stderr
    r = run(["record", "--pid", "4194000", "-d", "1"])
    assert r.returncode != 0 and "no process with PID 4194000" in r.stderr, r.stderr


def test_not_a_python_process():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        r = run(["dump", "--pid", proc.pid])
        assert r.returncode != 0
        assert "is not a Python program" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    finally:
        proc.kill()
        proc.wait()


def test_unsupported_python_version(tmp_path):
    old = sorted(p for p in (os.path.expanduser("~/.pyenv/versions/3.8.18/bin/python3.8"),
                             os.path.expanduser("~/.pyenv/versions/3.7.16/bin/python3.7"))
                 if os.path.exists(p))
    if not old:
        pytest.fail("needs a CPython older than 3.9 to check the refusal (pyenv install 3.8)")
    proc = subprocess.Popen([old[0], "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)
        r = run(["dump", "--pid", proc.pid])
        assert r.returncode != 0
        assert re.search(r"Python 3\.[78]\S* \(PID %d\) is not supported" % proc.pid, r.stderr), r.stderr
    finally:
        proc.kill()
        proc.wait()


def test_permission_denied_explains(busy):
    if not shutil.which("unshare"):
        pytest.fail("needs unshare (Debian package util-linux)")
    proc = start_target(busy, 30)
    try:
        # In a new user namespace spprof has no rights over the target.
        r = subprocess.run(["unshare", "--user", spprof_exe(), "dump", "--pid", str(proc.pid)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert "permission denied" in r.stderr, r.stderr
        assert "CAP_SYS_PTRACE" in r.stderr or "ptrace is disabled" in r.stderr, r.stderr
    finally:
        proc.kill()
        proc.wait()


def test_output_directory_missing(busy, tmp_path):
    out = tmp_path / "missing" / "p.svg"
    r = run(["record", "-o", out, "--", sys.executable, busy, "0.3"])
    assert r.returncode != 0
    assert str(tmp_path / "missing") in r.stderr and "does not exist" in r.stderr, r.stderr
    assert not out.parent.exists()


def test_target_exits_before_first_sample(tmp_path):
    r = run(["record", "-o", tmp_path / "p.svg", "--", "sh", "-c", "exit 3"])
    assert r.returncode != 0
    assert "exited (status 3) before spprof could take a sample" in r.stderr, r.stderr
    assert not (tmp_path / "p.svg").exists()
    r = run(["record", "-o", tmp_path / "p.svg", "--", "/nonexistent/program"])
    assert r.returncode != 0 and "cannot run /nonexistent/program" in r.stderr, r.stderr


def python_runtime_file():
    """The file that holds this interpreter's runtime: its libpython if it
    maps one, else its executable."""
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split(None, 5)[-1].strip()
            if os.path.basename(path).startswith("libpython"):
                return path
    return os.path.realpath(sys.executable)


def data_segment_moved(path):
    """Whether the writable PT_LOAD of an ELF file sits at another address
    than its file offset: then a mapping of the whole file from offset 0
    (ld.so's first step) shows the wrong bytes at its data's addresses."""
    import struct
    with open(path, "rb") as f:
        head = f.read(64)
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, p_flags, p_offset, p_vaddr = struct.unpack_from("<IIQQ", table, i * phentsize)
        if p_type == 1 and p_flags & 2:
            return p_vaddr != p_offset
    return False


def test_record_waits_while_the_loader_maps_python(tmp_path):
    """The dynamic loader maps libpython in steps: first the whole file from
    offset 0, then each segment at its own offset. Caught in the first state,
    the data at _PyRuntime's address is not the runtime (for 3.13+, no
    debug-offsets cookie); in the second the runtime is there but not
    started. record keeps waiting through both, as it does for any program
    not yet running Python; it used to stop at once with "Python 3.13 is not
    supported" (seen in CI on a 3.13 target). The copy is this interpreter's
    own runtime file: on 3.13+ the debug-offsets reading is what is tested,
    on older ones the table's (whose runtime never shows a thread here)."""
    fake = tmp_path / ("libpython%d.%d.so.1.0" % sys.version_info[:2])
    shutil.copy(python_runtime_file(), fake)
    helper = build_c(tmp_path, "loading_target", ["tests/c/loading_target.c"])
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    r = run(["record", "-o", tmp_path / "p.json", "--", helper, fake, "1"], env=env)
    assert r.stdout.split() == ["reserved", "mapped"], (r.stdout, r.stderr)
    assert r.returncode != 0
    assert "exited (status 0) before spprof could take a sample" in r.stderr, r.stderr
    assert "not supported" not in r.stderr, r.stderr
    assert not (tmp_path / "p.json").exists()

    # What spprof makes of each state, asked while the helper waits in it.
    read_as_313 = sys.version_info >= (3, 13)
    moved = data_segment_moved(fake)
    proc = subprocess.Popen([str(helper), str(fake), "30"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().split() == ["reserved"]
        d = run(["dump", "--pid", proc.pid])
        if read_as_313 and moved:
            assert d.returncode == 1 and d.stderr == (
                "spprof: PID %d is still loading %s (its Python runtime is not mapped yet)\n" % (
                    proc.pid, fake)), d.stderr
        elif read_as_313:
            # (a file whose data is at its own offset reads right already)
            assert d.returncode == 0 and "Python v%d.%d" % sys.version_info[:2] in d.stdout, d
        proc.send_signal(signal.SIGUSR1)  # (ends the helper's first wait)
        assert proc.stdout.readline().split() == ["mapped"]
        d = run(["dump", "--pid", proc.pid])
        if read_as_313:
            # its own runtime, mapped, not started: no thread to show
            assert d.returncode == 0 and "Python v%d.%d" % sys.version_info[:2] in d.stdout, d
    finally:
        proc.kill()
        proc.wait()


def test_record_of_a_program_that_exits_while_it_is_probed(tmp_path):
    """A launched program that exits while spprof reads its memory map or
    its runtime is reported as exited, with its status: not as a permission
    problem (a read of a process that just exited fails), and at once (spprof
    then waited 5 s for the reaped child to die, having sent SIGTERM to its
    PID, which another process could hold by then). The helper exits within
    0-3 ms, so the probes land before, during and after its exit."""
    fake = tmp_path / ("libpython%d.%d.so.1.0" % sys.version_info[:2])
    shutil.copy(python_runtime_file(), fake)
    helper = build_c(tmp_path, "loading_target", ["tests/c/loading_target.c"])
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    messages = set()
    t0 = time.monotonic()
    runs = 40
    for i in range(runs):
        r = run(["record", "-o", tmp_path / "p.json", "--", helper, fake, "0.00%d" % (i % 4)], env=env)
        assert r.returncode != 0
        messages.add(re.sub(r"PID \d+", "PID N", r.stderr.strip()))
    took = time.monotonic() - t0
    assert messages == {"spprof: the program exited (status 0) before spprof could take a sample"}, messages
    # (each run used to take 5 s; the bound is a hang check, not a speed target)
    assert took < runs * 1.0, took
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("args,message", [
    (["record", "--rate", "0", "--pid", "1"], "--rate must be a number from 1 to 100000, got '0'"),
    (["record", "--rate", "abc", "--pid", "1"], "--rate must be a number"),
    (["record", "--rate", "1e9", "--pid", "1"], "--rate must be a number from 1 to 100000, got '1e9'"),
    (["record", "--rate", "nan", "--pid", "1"], "--rate must be a number from 1 to 100000, got 'nan'"),
    (["record", "--duration", "-1", "--pid", "1"], "--duration must be a number from 0.001 to 1e+07, got '-1'"),
    (["record", "--duration", "1e12", "--pid", "1"], "--duration must be a number from 0.001 to 1e+07, got '1e12'"),
    (["record", "--pid", "99999999999"], "--pid must be a positive process id, got '99999999999'"),
    (["record", "--pid", "1", "--format"], "option '--format' requires an argument"),
    (["record", "--pid", "1", "--bogus"], "unrecognized option '--bogus'"),
    (["record", "--pid", "1", "--", "python3"], "give either --pid or a command, not both"),
    (["record", "--format", "png", "--pid", "1"], "unknown format 'png'"),
    (["record", "--pid", "0"], "--pid must be a positive process id"),
    (["record", "--pid", "x"], "--pid must be a positive process id"),
    (["record"], "nothing to profile"),
    (["dump"], "dump needs --pid"),
    (["dump", "-n", "--nonblocking", "--pid", "1"], "--native cannot be used with --nonblocking"),
    (["top", "--native", "--nonblocking", "--pid", "1"], "--native cannot be used with --nonblocking"),
    (["dump", "-i", "--pid", "1"], "dump does not take --idle"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["dump", "--rate", "5", "--pid", "1"], "dump does not take --rate"),
    (["dump", "-o", "x.svg", "--pid", "1"], "dump does not take --output"),
    (["top", "--locals", "--pid", "1"], "top does not take --locals"),
    (["top", "-d", "3", "--pid", "1"], "top does not take --duration"),
    (["record", "--json", "--pid", "1"], "record does not take --json"),
    (["top", "--delay", "0", "--pid", "1"], "--delay must be a number from 0.05 to 3600"),
])
def test_bad_arguments(args, message):
    r = run(args)
    assert r.returncode == 2
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_record_chrometrace_two_phases(tmp_path):
    target = tmp_path / "target.py"
    target.write_text(textwrap.dedent(TWO_PHASES))
    # No -o: the default name says what the file is.
    r = run(["record", "-f", "chrometrace", "-r", "200", "--", sys.executable, target, "cli"],
            cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    marks = json.loads(r.stdout.strip().splitlines()[-1])["marks"]
    out = list(tmp_path.glob("spprof-*.trace.json"))
    assert len(out) == 1, list(tmp_path.iterdir())
    events, names, other = check_chrometrace(json.loads(out[0].read_text()))
    assert other["timeline"] == "complete" and other["clock"] == "wall", other
    assert other["samples"] > 50

    a, b, w = check_two_phases(events, names, other, marks)
    assert out[0].name == "spprof-%d.trace.json" % a[0]["tid"]  # the main thread's id is the pid
    slack = 30.0
    # (the phases' wall times as the target measured them: a loaded machine
    # can stretch them)
    for name, evs, wall_ms in (("phase_a", a, (marks["a1"] - marks["a0"]) / 1e6),
                               ("phase_b", b, (marks["b1"] - marks["b0"]) / 1e6)):
        dur_ms = sum(e["dur"] for e in evs) / 1000
        ms = sum(e["args"]["sampled_ms"] for e in evs)
        assert ms > 0.25 * wall_ms, (name, ms)
        assert 0.9 * ms <= dur_ms <= min(2 * ms + 10, wall_ms * 1.5 + slack), (name, dur_ms, ms)


def test_python_dash_m_runs_the_same_command():
    r = subprocess.run([sys.executable, "-m", "spprof", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("spprof "), r.stderr


class TmuxTop:
    """`spprof top ARGS` running in a detached tmux session, read as text."""

    def __init__(self, *args, width=140, height=30):
        if not shutil.which("tmux"):
            pytest.fail("this test drives spprof top in tmux: apt-get install tmux")
        self.session = "spprof-top-%d-%d" % (os.getpid(), time.monotonic_ns())
        cmd = " ".join([spprof_exe(), "top", *map(str, args)])
        subprocess.check_call(["tmux", "new-session", "-d", "-s", self.session, "-x", str(width),
                               "-y", str(height), cmd])

    def screen(self):
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.session],
                              capture_output=True, text=True).stdout

    def wait_for(self, done, seconds=15):
        """The screen once done(screen) is true, or the last one after
        seconds."""
        deadline = time.time() + seconds
        while True:
            time.sleep(0.5)
            screen = self.screen()
            if done(screen) or time.time() > deadline:
                return screen

    def keys(self, keys):
        subprocess.check_call(["tmux", "send-keys", "-t", self.session, keys])

    def quit(self):
        """Presses q; fails the test unless spprof top exits."""
        self.keys("q")
        for _ in range(50):
            if subprocess.run(["tmux", "has-session", "-t", self.session],
                              capture_output=True).returncode:
                return
            time.sleep(0.1)
        pytest.fail("spprof top did not exit on q")

    def close(self):
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)


def top_rows(screen, part):
    """The table rows of a top screen that contain part, in screen order."""
    return [l for l in screen.splitlines() if re.match(r"\s*\d+\.\d%", l) and part in l]


def test_top_in_tmux_shows_hot_function_and_quits(busy):
    proc = start_target(busy, 60)
    top = TmuxTop("--pid", proc.pid, "--rate", "200", "--delay", "0.5")
    try:
        screen = top.wait_for(lambda s: "hot_leaf (busy.py)" in (top_rows(s, "(busy.py)") or [""])[0])
        rows = top_rows(screen, "(busy.py)")
        assert rows and "hot_leaf (busy.py)" in rows[0], screen  # sorted by own time: hot first
        assert "Python %d.%d" % sys.version_info[:2] in screen, screen
        own = float(rows[0].split("%")[0])
        assert own > 40, screen
        top.keys("2")
        screen = top.wait_for(lambda s: "Sort: total" in s)
        assert "Sort: total" in screen, screen
        top.quit()
        assert proc.poll() is None, "the target must keep running"
    finally:
        top.close()
        proc.kill()
        proc.wait()


def test_top_redraws_in_place(busy):
    """A frame is drawn over the last, never after clearing the screen (a
    terminal, or tmux's capture, would show it blank or half drawn between
    the two), each line cleared to its end and what the last frame left
    below it cleared after."""
    import pty
    proc = start_target(busy, 60)
    master, slave = pty.openpty()
    top = subprocess.Popen([spprof_exe(), "top", "--pid", str(proc.pid), "--rate", "200",
                            "--delay", "0.2"], stdin=slave, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    out = b""
    try:
        deadline = time.time() + 2.5
        while time.time() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    out += os.read(master, 1 << 16)
                except OSError:  # (EIO: top has ended and closed the terminal)
                    pytest.fail("spprof top ended: %r" % top.stderr.read())
        os.write(master, b"q")
        assert top.wait(timeout=10) == 0, top.stderr.read()
    finally:
        top.kill()
        top.wait()
        proc.kill()
        proc.wait()
        os.close(master)
    assert out.count(b"\033[2J") == 1, out[:400]  # (once, before the first frame)
    frames = out.split(b"\033[H")[1:-1]  # (the last may be cut short)
    assert len(frames) >= 5, out
    for body in frames:
        assert body.endswith(b"\033[J"), body
        lines = [l.rstrip(b"\r") for l in body.split(b"\n")]  # (the terminal adds a \r)
        assert len(lines) > 5 and all(l.endswith(b"\033[K") for l in lines[:-1]), lines
    assert b"hot_leaf (busy.py)" in frames[-1], frames[-1]


def test_launched_program_exit_status_is_spprofs(tmp_path):
    prog = tmp_path / "ex.py"
    prog.write_text("import time\nt = time.time()\nwhile time.time() - t < 0.5:\n    pass\n"
                    "raise SystemExit(3)\n")
    r = run(["record", "-o", tmp_path / "p.svg", "--", sys.executable, prog])
    assert r.returncode == 3, r.stderr
    assert (tmp_path / "p.svg").exists()


def test_remote_functions_reusing_an_address_keep_their_names(tmp_path):
    """Code objects that die and are replaced at the same address must not
    inherit the first one's name."""
    prog = tmp_path / "churn.py"
    prog.write_text(textwrap.dedent("""
        import time
        for i in range(40):
            ns = {}
            exec("def fn_%d():\\n    import time\\n    e = time.time() + 0.05\\n"
                 "    while time.time() < e: pass\\n" % i, ns)
            ns["fn_%d" % i]()
    """))
    out = tmp_path / "p.txt"
    r = run(["record", "-f", "raw", "-r", "200", "-o", out, "--", sys.executable, prog])
    assert r.returncode == 0, r.stderr
    names = set(re.findall(r"\bfn_\d+\b", out.read_text()))
    assert len(names) >= 38, sorted(names)


def test_interrupt_before_python_starts(tmp_path):
    proc = subprocess.Popen([spprof_exe(), "record", "-o", str(tmp_path / "p.svg"), "--", "sleep", "30"],
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:
        err = proc.communicate(timeout=15)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("spprof ignored Ctrl-C while waiting for Python to start")
    assert proc.returncode != 0
    assert "nothing written" in err, err
    assert not (tmp_path / "p.svg").exists()


def test_nonblocking_notices_a_zombie_target(busy, tmp_path):
    # The target's parent (this test) does not reap it at once: a zombie.
    proc = start_target(busy, 1.0)
    out = tmp_path / "p.txt"
    t0 = time.time()
    r = run(["record", "--pid", proc.pid, "--nonblocking", "-f", "raw", "-o", out], timeout=60)
    assert time.time() - t0 < 20, "did not stop when the target ended"
    assert r.returncode == 0, r.stderr
    assert share(folded(out), "hot_leaf") > 0.3
    proc.wait()


def test_paused_target_is_not_slowed_by_signals_and_threads(tmp_path):
    """While traced, each signal and each new thread stops the target until
    spprof lets it go: that must happen at once, not at the next sample."""
    prog = tmp_path / "events.py"
    prog.write_text(textwrap.dedent("""
        import os, signal, threading, time
        signal.signal(signal.SIGUSR1, lambda *a: None)
        slow = []  # (the events that took over 50 ms: what a failure shows)

        def timed(what, i, event):
            t = time.time()
            event()
            if time.time() - t > 0.05:
                slow.append("%s %d: %.3f s at %.3f" % (what, i, time.time() - t, t - t0))

        def new_thread():
            t = threading.Thread(target=lambda: None); t.start(); t.join()

        t0 = time.time()
        for i in range(50):
            timed("signal", i, lambda: os.kill(os.getpid(), signal.SIGUSR1))
        for i in range(50):
            timed("thread", i, new_thread)
        x = 0
        end = time.time() + 0.5
        while time.time() < end:
            x += 1
        print("took", time.time() - t0 - 0.5, flush=True)
        print("slow events:", slow, flush=True)
    """))
    r = run(["record", "-r", "2", "-o", tmp_path / "p.svg", "--idle", "--", sys.executable, prog])
    assert r.returncode == 0, r.stderr
    took = float(r.stdout.split("took")[1].split()[0])
    # 100 events at 2 Hz would take 50 s if each waited a sample
    assert took < 2.0, (r.stdout, r.stderr)


GENERATORS = """
import sys, time

def g_mid():
    return sum(x for x in range(1000))   # a new eval-loop call per item

def g_top(t):
    end = time.time() + t
    while time.time() < end:
        g_mid()

print("ready", flush=True)
g_top(float(sys.argv[1]))
"""


@pytest.mark.parametrize("mode", [[], ["--nonblocking"]])
def test_threads_paused_while_linking_a_frame_keep_their_callers(tmp_path, mode):
    """A thread stopped while its interpreter links a generator frame in is
    recorded with its whole stack (or not at all), never the generator
    alone."""
    path = tmp_path / "gen.py"
    path.write_text(textwrap.dedent(GENERATORS))
    out = tmp_path / "p.txt"
    r = run(["record", "-f", "raw", "-r", "1000", "-o", out, *mode, "--", sys.executable, path, "3"])
    assert r.returncode == 0, r.stderr
    counts = folded(out)
    total = sum(counts.values())
    assert total >= 600, counts  # enough to catch torn stacks (3,000 asked; the machine may be busy)
    whole = re.compile(r"<module> \(gen\.py:\d+\);g_top \(gen\.py:\d+\);g_mid \(gen\.py:\d+\);")
    torn = {s: n for s, n in counts.items() if "<genexpr> (gen.py" in s and not whole.match(s)}
    if mode:
        # Read while the thread runs, frames change under the reader. spprof
        # reads each stack from one snapshot of its pages and checks that
        # every frame below the innermost says it is running, counting the
        # rest as errors; in this worst case (a generator entered millions
        # of times a second) a few stacks in 10,000 get through torn.
        assert sum(torn.values()) <= 0.01 * total, (sum(torn.values()), total, list(torn)[:3])
    else:
        assert not torn


TWO_PATHS = """
import sys, time

def leaf_a(n):
    return n + 1

def leaf_b(n):
    return n - 1

def via_a():
    for i in range(3):
        leaf_a(i)

def via_b():
    for i in range(3):
        leaf_b(i)

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def top(t):
    end = time.time() + t
    while time.time() < end:
        for i in range(50):
            via_a()
            via_b()
        fib(12)

print("ready", flush=True)
top(float(sys.argv[1]))
"""


def test_nonblocking_keeps_its_samples_and_shows_only_stacks_the_program_had(tmp_path):
    """--nonblocking reads a thread while it runs. Here it calls a function
    every 50-100 ns, through two paths that alternate every microsecond or
    so (leaf_a only ever under via_a, leaf_b under via_b) and a recursion:
    every frame read one system call after the last is likely gone. spprof
    reads each stack from one snapshot of the pages it lies in and keeps
    what that shows; a stack read one frame at a time would show leaf_a
    under via_b (py-spy --nonblocking: 8-10 % of its stacks here), and a
    stack kept only if the thread's frame had not changed meanwhile would
    lose half the samples and most of those in fib (spprof before: 50 %
    errors on deep recursion)."""
    path = tmp_path / "paths.py"
    path.write_text(textwrap.dedent(TWO_PATHS))
    out = tmp_path / "p.txt"
    r = run(["record", "-f", "raw", "-r", "1000", "--nonblocking", "-o", out, "--", sys.executable, path, "3"])
    assert r.returncode == 0, r.stderr
    m = re.search(r"\((\d+) samples, (\d+) errors", r.stderr)
    samples, errors = int(m.group(1)), int(m.group(2))
    assert samples >= 1000, r.stderr  # 3,000 asked; a loaded machine takes fewer
    # Measured: 0.03-0.3 % errors on 3.11-3.15, 1.5-3.4 % on 3.9 and 3.10
    # (a try fails when a caller changes within the copy: session.c's
    # walk_thread).
    assert errors <= 0.08 * (samples + errors), r.stderr
    counts = folded(out)
    frames = {s: [f.split(" (")[0] for f in s.split(";")] for s in counts}
    callers = {"leaf_a": "via_a", "leaf_b": "via_b", "via_a": "top", "via_b": "top"}
    torn = {s: counts[s] for s, fs in frames.items()
            if any(callers.get(b, a) != a for a, b in zip(fs, fs[1:]))}
    # Measured 0.03-2.1 % on 3.11, 0.3-0.7 % on 3.12, 0.2-0.3 % on 3.13t,
    # none on 3.9, 3.10, 3.14, 3.15 (a caller that returned and was called
    # again within the copy); 0.8-3 % on 3.11 (6 % in a loaded CI run)
    # before the frames were copied twice and compared.
    assert sum(torn.values()) <= 0.03 * samples, (sum(torn.values()), samples, list(torn)[:3])
    in_fib = sum(n for s, n in counts.items() if frames[s][-1] == "fib")
    leaves = sum(n for s, n in counts.items() if frames[s][-1] in ("leaf_a", "leaf_b", "via_a", "via_b"))
    # Both kinds of work are sampled (their split differs by version: 3.14
    # spends 15 % in the paths, 3.11 30 %).
    assert in_fib >= 0.05 * samples and leaves >= 0.05 * samples, counts


GENERATOR_LOOP = """
import sys, time

def numbers(n):
    for i in range(n):
        yield i * i

def consume(budget):
    end = time.thread_time() + budget
    while time.thread_time() < end:
        for _ in numbers(2000):
            pass

consume(float(sys.argv[1]))
"""


def test_nonblocking_gives_a_generator_the_share_a_paused_read_does(tmp_path):
    """A generator resumed in a loop: its frame is linked to its caller's
    only while it runs, and each new generator is at another address.
    --nonblocking kept 0.14-0.42 of the samples in the generator where a
    paused read keeps 0.55-0.65 (3.9-3.13t, 3.15): a try caught in the
    generator was more often given up (a frame on a page the last stack
    did not have, or whose link changed between the two copies), and the
    next try found the caller. 3.12 showed 7-11 % of the samples with no
    Python frame (its eval loop's _PyCFrame read where one had just left).
    Measured since (session.c's walk_thread, single runs): 0.02-0.13 under
    the paused share on 3.9, 3.10 and 3.13t, 0.03 over on 3.15 (0.1-0.16
    under beside another test run); 3.11 is weak, 0.03-0.22 under on an
    idle machine, 0.21-0.34 beside another test run (ASan or not: its
    eval loop's _PyCFrame, on the C stack, moves at every resume), so it
    is held to 0.35 (the code before: 0.43-0.45 under); 0.06-0.11 over on
    3.12, 0.07-0.15 over on 3.14t and 0.21-0.28 over on 3.14.
    What is asserted is what was fixed: no share lost, no frame lost. The
    over-count on 3.14 is a known weakness (README, Nonblocking sampling),
    not a bound here. Each mode runs twice and the shares are averaged."""
    path = tmp_path / "gen.py"
    path.write_text(textwrap.dedent(GENERATOR_LOOP))
    shares, no_frame = {"paused": [], "--nonblocking": []}, {"paused": [], "--nonblocking": []}
    for _ in range(2):  # (in turn: the machine's speed drifts)
        for mode in ([], ["--nonblocking"]):
            out = tmp_path / "g.txt"
            r = run(["record", "-f", "raw", "-r", "500", *mode, "-o", out, "--", sys.executable, path, "2"])
            assert r.returncode == 0, r.stderr
            counts = folded(out)
            total = sum(counts.values())
            assert total >= 500, r.stderr
            key = mode[0] if mode else "paused"
            loop = share(counts, "numbers") + share(counts, "consume")
            shares[key].append(share(counts, "numbers") / loop)
            no_frame[key].append(sum(n for s, n in counts.items() if s.startswith("<no Python frame>")) / total)
    shares = {k: sum(v) / len(v) for k, v in shares.items()}
    no_frame = {k: max(v) for k, v in no_frame.items()}
    assert shares["paused"] > 0.45, shares
    under = 0.35 if sys.version_info[:2] == (3, 11) else 0.25
    assert shares["--nonblocking"] > shares["paused"] - under, shares
    assert no_frame["--nonblocking"] < 0.04, no_frame


def test_a_rate_the_machine_cannot_keep_up_does_not_stop_the_target(tmp_path):
    """Each pause costs the target kernel time to stop and resume, and at
    20 kHz spprof paused it back to back: the benchmark's 2 s of work had
    had 0.5 s of CPU after 53 s. spprof now lets the target run at least
    half as long as the last sample took before pausing it again: samples
    come late or are missed instead (counted; each sample weighted by the
    time it stands for).
    How many a second it still takes depends on the machine (bench/rates.py
    measures it); that the late samples' weights still add up to the time
    the work took does not."""
    workloads = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                             "workloads.py")
    amount = subprocess.check_output([sys.executable, workloads, "recursion", "--calibrate", "0.5"], text=True)
    target = subprocess.Popen([sys.executable, workloads, "recursion", amount.strip()], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    out = tmp_path / "p.json"
    prof = None
    try:
        assert target.stdout.readline().strip() == "ready"
        prof = subprocess.Popen([spprof_exe(), "record", "--pid", str(target.pid), "-r", "20000", "-f", "speedscope",
                                 "-o", str(out)], stderr=subprocess.PIPE, text=True)
        wait_traced_by(target.pid, prof)
        time.sleep(0.2)
        t0 = time.monotonic()
        target.stdin.write("go\n")
        target.stdin.flush()
        target.wait(timeout=120)
        took = time.monotonic() - t0
        work = json.loads(target.stdout.readline())
        err = prof.communicate(timeout=60)[1]
    finally:
        for p in (target, prof):
            if p and p.poll() is None:
                p.kill()
    assert prof.returncode == 0, err
    # Paused at most two thirds of the time, plus the cost of each stop:
    # 0.5 s of work took 1.1-1.6 s here (before: minutes).
    assert took < 15, (took, work, err)
    doc = json.loads(out.read_text())
    frames = doc["shared"]["frames"]
    chunk = {i for i, f in enumerate(frames) if f["name"] == "chunk"}
    assert len(doc["profiles"]) == 1 and doc["profiles"][0]["unit"] == "nanoseconds", doc["profiles"]
    prof_ = doc["profiles"][0]
    in_work = sum(w for s, w in zip(prof_["samples"], prof_["weights"]) if chunk & set(s)) / 1e9
    # Every sample while the work ran stands for the time since the one
    # before: together, the time the work took (seen within 0.2 % of it
    # here, at 2,000-11,000 samples, the other CPU idle or busy).
    assert 0.9 * work["wall"] - 0.05 <= in_work <= 1.1 * work["wall"] + 0.05, (in_work, work, err)


def test_a_stalled_recorder_skips_the_samples_it_missed_instead_of_bursting(tmp_path):
    """When spprof itself is held up for several periods (the machine ran
    something else), the deadlines that passed are skipped and counted as
    missed: catching up on them would take a burst of samples of one moment
    (the stack after the stall counted once per period it lasted). Stopped
    20 times for about 6 ms at 1 kHz, spprof takes one late sample after
    each stall, weighted by the stall's time; before, each stall was
    followed by a burst of about 6 late samples microseconds apart."""
    path = tmp_path / "spin.py"
    path.write_text("import sys, time\nprint('ready', flush=True)\nend = time.time() + 3\n"
                    "while time.time() < end:\n    pass\n")
    out = tmp_path / "p.json"
    prof = subprocess.Popen([spprof_exe(), "record", "--nonblocking", "-r", "1000", "-f", "speedscope", "-o",
                             str(out), "--", sys.executable, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert prof.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        for _ in range(20):
            os.kill(prof.pid, signal.SIGSTOP)
            time.sleep(0.006)
            os.kill(prof.pid, signal.SIGCONT)
            time.sleep(0.05)
        err = prof.communicate(timeout=60)[1]
    finally:
        if prof.poll() is None:
            prof.kill()
    assert prof.returncode == 0, err
    m = re.search(r"(\d+) samples, (\d+) errors, (\d+) late, (\d+) missed", err)
    assert m, err
    samples, late, missed = int(m.group(1)), int(m.group(3)), int(m.group(4))
    # One late sample a stall, and the machine's own: 0.2 % of the samples
    # on an idle machine (22-25 late in all), up to 1.2 % with another
    # test run on both CPUs (48-54). With the burst, each of the ~6 samples
    # after a stall was late: 120 and more.
    assert 15 <= late <= 20 + 0.02 * samples, err
    # Each stall of 6+ ms misses about 5 deadlines of the 0.75-1.25 ms steps.
    assert missed >= 60, err
    # Every sample stands for the time since the one before, the late ones
    # for their stall: the weights add up to the time recorded, and that
    # time is what was taken and missed at 1 kHz.
    doc = json.loads(out.read_text())
    recorded = sum(w for p_ in doc["profiles"] for w in p_["weights"]) / 1e9
    assert 2.5 <= recorded <= 3.5, (recorded, err)
    assert abs(samples + missed - 1000 * recorded) <= 0.03 * 1000 * recorded, (recorded, err)


def test_runtime_found_when_the_file_is_gone(tmp_path):
    """A Python whose executable or libpython was deleted (upgraded) while it
    runs has no file to read symbols from: the runtime is found by scanning
    its data and validated, and profiling works as usual."""
    import sysconfig as sc
    if sc.get_config_var("Py_ENABLE_SHARED"):
        # The runtime lives in libpython: run on a copy of it, then delete it.
        lib = os.path.join(sc.get_config_var("LIBDIR"), sc.get_config_var("INSTSONAME"))
        shutil.copy(lib, tmp_path / os.path.basename(lib))
        doomed = tmp_path / os.path.basename(lib)
        cmd = [sys.executable]
        env = dict(os.environ, LD_LIBRARY_PATH=str(tmp_path))
    else:
        # The runtime lives in the executable: run a copy of it.
        exe = os.path.realpath(sys.executable)
        doomed = tmp_path / os.path.basename(exe)
        shutil.copy(exe, doomed)
        cmd = [str(doomed)]
        env = dict(os.environ, PYTHONHOME=sys.base_prefix, PYTHONPATH=os.pathsep.join(sys.path))
    path = tmp_path / "busy.py"
    path.write_text(textwrap.dedent(BUSY))
    proc = subprocess.Popen(cmd + [str(path), "30"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        doomed.unlink()
        maps = open("/proc/%d/maps" % proc.pid).read()
        assert str(doomed) + " (deleted)" in maps
        d = run(["dump", "--pid", proc.pid])
        assert d.returncode == 0, d.stderr
        assert "found the runtime by scanning" in d.stderr, d.stderr
        assert re.search(r"<module> \(busy\.py:\d+\)", d.stdout), d.stdout
        out = tmp_path / "p.txt"
        r = run(["record", "--pid", proc.pid, "-d", "1", "-f", "raw", "-o", out])
        assert r.returncode == 0, r.stderr
        assert r.stderr.count("found the runtime by scanning") == 1, r.stderr
        counts = folded(out)
        assert share(counts, "hot_leaf") > 0.3, counts
        assert any(s.startswith("<module> (busy.py:") for s in counts), counts
    finally:
        proc.kill()
        proc.wait()


SHORT_LIVED_CODE = """
import time
def run(i):
    src = "def f_%d():\\n    x = 0\\n    for k in range(2000):\\n        x += k\\n    return x\\nf_%d()\\n" % (i, i)
    exec(compile(src, "<gen%d>" % i, "exec"), {})
end = time.time() + 2
i = 0
while time.time() < end:
    run(i)
    i += 1
"""


def test_short_lived_code_objects_are_named_while_paused(tmp_path):
    """Each sample catches a code object that lives for microseconds (a
    fresh compile()d string): it must be read while the target is paused,
    not after, when it may be freed (named <unknown>) or its memory reused
    by the next one (named wrongly)."""
    target = tmp_path / "target.py"
    target.write_text(SHORT_LIVED_CODE)
    out = tmp_path / "p.json"
    r = run(["record", "-r", "1000", "-f", "speedscope", "-o", out, "--", sys.executable, target])
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    frames = doc["shared"]["frames"]
    gen, bad = 0, []
    for prof in doc["profiles"]:
        for stack in prof["samples"]:
            for i in stack:
                f = frames[i]
                m = re.match(r"<gen(\d+)>$", f.get("file") or "")
                gen += bool(m)
                if f["name"] == "<unknown>" or (m and f["name"] not in ("<module>", "f_" + m.group(1))):
                    bad.append(f)
    assert gen >= 50, gen
    assert not bad, bad[:5]


THREAD_CHURN = """
import threading, time
def w():
    end = time.time() + 0.005
    while time.time() < end:
        pass
for i in range(150):
    t = threading.Thread(target=w)
    t.start()
    t.join()
"""


def test_thread_states_not_taken_up_are_not_threads(tmp_path):
    """While a thread is being started its thread state is listed before any
    OS thread runs it: it has no stack and no id, and is left out rather
    than shown as a thread "0" with no Python frame."""
    target = tmp_path / "target.py"
    target.write_text(THREAD_CHURN)
    out = tmp_path / "p.collapsed"
    r = run(["record", "-t", "-r", "500", "-f", "collapsed", "-o", out, "--", sys.executable, target])
    assert r.returncode == 0, r.stderr
    roots = {}
    for line in out.read_text().splitlines():
        root = line.split(";")[0]
        roots[root] = roots.get(root, 0) + int(line.rsplit(" ", 1)[1])
    assert not [r for r in roots if re.match(r"thread 0\b", r)], roots
    assert all(re.match(r"thread .* \([1-9]\d*\)$", r) for r in roots), [r for r in roots if not re.match(r"thread .* \([1-9]\d*\)$", r)]
    assert sum(1 for r in roots if "MainThread" not in r) >= 5, roots  # the workers were seen

"""Shared helpers: run target scripts in a fresh interpreter, read profiles."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "stress: the stress suite (tests/test_stress*.py): hostile programs, in and out of "
        "process; `pytest -m stress` runs it alone, `-m 'not stress'` leaves it out",
    )


# Python called back from C: libc's qsort through ctypes, with a comparison
# written in Python (for the native-frame tests of both front doors).
QSORT_CALLBACK = """
import ctypes, ctypes.util

libc = ctypes.CDLL(ctypes.util.find_library("c"))
CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))

def py_cmp(a, b):
    s = 0
    for i in range(300):
        s += i
    return a[0] - b[0]

def run_qsort(n=4000):
    arr = (ctypes.c_int * n)(*range(n, 0, -1))
    libc.qsort(arr, len(arr), ctypes.sizeof(ctypes.c_int), CMP(py_cmp))
"""


def kernel_at_least(major, minor):
    """Whether this machine's Linux is at least major.minor."""
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (major, minor)


def run_script(tmp_path, source, *args, timeout=300, env=None, check=True):
    """Runs source (dedented) as a script with this interpreter; returns the
    CompletedProcess. A crash (signal) or non-zero exit fails the test with
    the script's output."""
    script = tmp_path / "target.py"
    script.write_text(textwrap.dedent(source))
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=str(tmp_path),
    )
    if check and proc.returncode != 0:
        pytest.fail(
            "target exited with %d\n--- stdout\n%s\n--- stderr\n%s"
            % (proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:])
        )
    return proc


def run_unprivileged(tmp_path, source, *args):
    """Runs source as a script in a user namespace (no perf events, no
    privileges); its last line of output, parsed as JSON."""
    if not shutil.which("unshare"):
        pytest.fail("needs unshare (Debian package util-linux)")
    (tmp_path / "t.py").write_text(source)
    out = subprocess.run(["unshare", "--user", sys.executable, str(tmp_path / "t.py"), *map(str, args)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def last_json(proc):
    """The last line of stdout, parsed as JSON (targets report that way)."""
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    assert lines, "target printed nothing; stderr:\n" + proc.stderr
    return json.loads(lines[-1])


@pytest.fixture
def script(tmp_path):
    def run(source, *args, **kw):
        return run_script(tmp_path, source, *args, **kw)

    return run


# The two-phase target of the chrometrace tests: phase_a for 0.5 s, then
# phase_b for 0.3 s, while a named thread works during the first 0.3 s. With
# "api" it profiles itself and saves the trace; it prints the wall times of
# the phases (and, with "api", the time sampled in each function).
TWO_PHASES = """
import json, sys, threading, time

def spin_until(deadline):
    x = 0
    while time.time() < deadline:
        x += 1
    return x

def phase_a(seconds):
    spin_until(time.time() + seconds)

def phase_b(seconds):
    spin_until(time.time() + seconds)

def worker_job(seconds):
    marks["w0"] = time.time_ns()
    spin_until(time.time() + seconds)
    marks["w1"] = time.time_ns()

api = sys.argv[1] == "api"
if api:
    import spprof
    spprof.start(interval_ms=2, timeline=True)
marks = {}
t = threading.Thread(target=worker_job, args=(0.3,), name="worker-thread")
t.start()
marks["a0"] = time.time_ns()
phase_a(0.5)
marks["a1"] = marks["b0"] = time.time_ns()
phase_b(0.3)
marks["b1"] = time.time_ns()
t.join()
out = {"marks": marks}
if api:
    p = spprof.stop()
    p.save("p.trace.json")
    p.save("p.chrome", format="chrometrace")
    sampled = {}
    for s in p.samples:
        names = {f.function_name for f in s.frames}
        for n in ("phase_a", "phase_b", "worker_job"):
            if n in names:
                sampled[n] = sampled.get(n, 0) + s.weight_ns
    out["sampled_ns"] = sampled
print(json.dumps(out))
"""



def build_c(tmp_path, name, sources, libs=()):
    """Builds a C unit test from the repository's sources with the system's
    compiler, warnings as errors, under ASan/UBSan; returns its path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.fail("no C compiler: install the Debian package gcc")
    root = os.path.dirname(HERE)
    exe = tmp_path / name
    build = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-g",
                            "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                            *[os.path.join(root, s) for s in sources], "-o", str(exe), *libs],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return exe


def run_c(exe, *args):
    """Runs a C unit test built by build_c (leak checking on); it passes by
    exiting 0 with "ok" as its last line."""
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
    env.pop("LD_PRELOAD", None)
    r = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr

def check_chrometrace(doc):
    """Checks a Trace Event Format document as the viewers read it; returns
    (events, names, other): the X events per tid in file order, the thread
    names per tid, and otherData."""
    assert isinstance(doc, dict) and isinstance(doc["traceEvents"], list), type(doc)
    assert doc["displayTimeUnit"] == "ms"
    other = doc["otherData"]
    assert other["timeline"] in ("complete", "partial")
    assert isinstance(other["ts_zero_unix_ns"], int) and other["ts_zero_unix_ns"] > 1.6e18
    events, names, pids = {}, {}, set()
    for e in doc["traceEvents"]:
        assert isinstance(e["ph"], str) and isinstance(e["name"], str) and e["name"], e
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int), e
        pids.add(e["pid"])
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name"), e
            assert isinstance(e["args"]["name"], str) and e["args"]["name"], e
            if e["name"] == "thread_name":
                assert e["tid"] not in names, "two names for one thread"
                names[e["tid"]] = e["args"]["name"]
            continue
        assert e["ph"] == "X", e
        for k in ("ts", "dur"):
            assert isinstance(e[k], (int, float)) and e[k] >= 0, e
        assert isinstance(e["cat"], str)
        args = e["args"]
        assert isinstance(args["sampled_ms"], (int, float)) and args["sampled_ms"] >= 0, e
        if e["cat"] == "python":
            assert isinstance(args["file"], str) and args["file"], e
            assert isinstance(args["line"], int), e
        events.setdefault(e["tid"], []).append(e)
    assert len(pids) == 1, pids
    eps = 0.002  # microseconds: ts and dur are written to the nanosecond
    for tid, evs in events.items():
        assert tid in names, "no thread_name for tid %d" % tid
        # In time order, and nested: an event that begins inside another
        # ends inside it too (the stack of enclosing events is a call stack).
        assert [e["ts"] for e in evs] == sorted(e["ts"] for e in evs), tid
        stack = []
        for e in evs:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"] + eps:
                stack.pop()
            if stack:
                parent = stack[-1]
                assert parent["ts"] - eps <= e["ts"], (parent, e)
                assert e["ts"] + e["dur"] <= parent["ts"] + parent["dur"] + eps, (parent, e)
                assert e["args"]["sampled_ms"] <= parent["args"]["sampled_ms"] + 1e-3, (parent, e)
            stack.append(e)
    return events, names, other


def function_events(events, name):
    """The X events of one function and the tid they are on (one thread)."""
    found = {tid: [e for e in evs if e["name"] == name] for tid, evs in events.items()}
    tids = [tid for tid, evs in found.items() if evs]
    assert len(tids) == 1, (name, tids)
    return tids[0], found[tids[0]]


def check_two_phases(events, names, other, marks):
    """Checks the trace of TWO_PHASES against the times the target saw;
    returns the events of phase_a, phase_b and worker_job."""
    tid_a, a = function_events(events, "phase_a")
    tid_b, b = function_events(events, "phase_b")
    tid_w, w = function_events(events, "worker_job")
    assert tid_a == tid_b != tid_w
    assert names[tid_a] == "MainThread", names
    # phase_a ends before phase_b begins, on real clock times: the events
    # lie where the target saw its phases (ts 0 is otherData's unix time).
    zero = other["ts_zero_unix_ns"]
    unix_ms = lambda us: (zero + us * 1000) / 1e6
    slack = 50.0
    assert max(e["ts"] + e["dur"] for e in a) <= min(e["ts"] for e in b) + 0.002
    assert unix_ms(min(e["ts"] for e in a)) >= marks["a0"] / 1e6 - slack
    assert unix_ms(max(e["ts"] + e["dur"] for e in a)) <= marks["a1"] / 1e6 + slack
    assert unix_ms(min(e["ts"] for e in b)) >= marks["b0"] / 1e6 - slack
    assert unix_ms(max(e["ts"] + e["dur"] for e in b)) <= marks["b1"] / 1e6 + slack
    # The two threads line up: the worker's function lies within the time
    # the worker saw it run, on the same clock. (Not necessarily up to its
    # end: a thread kept waiting for the GIL is idle to the CLI.)
    assert unix_ms(min(e["ts"] + e["dur"] for e in w)) >= marks["w0"] / 1e6 - slack
    assert unix_ms(max(e["ts"] + e["dur"] for e in w)) <= marks["w1"] / 1e6 + slack
    return a, b, w
def go_pprof(path, *flags):
    """Runs `go tool pprof FLAGS path`; fails the test unless it exits 0.
    Returns its standard output."""
    go = shutil.which("go") or next(
        (g for g in ("/usr/lib/go/bin/go", "/usr/bin/go") if os.access(g, os.X_OK)), None
    )
    if not go:
        pytest.fail("reading pprof files needs `go tool pprof`: apt-get install golang-go")
    env = dict(os.environ, PPROF_TMPDIR=os.path.dirname(str(path)))
    r = subprocess.run([go, "tool", "pprof", *flags, str(path)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, "go tool pprof %s failed (%d):\n%s" % (" ".join(flags), r.returncode, r.stderr)
    return r.stdout


_RAW_SAMPLE = re.compile(r"^\s+(?P<values>\d+(?:\s+\d+)*): (?P<locs>(?:\d+ )*)$")
_RAW_LABEL = re.compile(r"^\s+(?P<key>\w+):\[(?P<value>.*)\]$")
_RAW_LOCATION = re.compile(r"^\s+(?P<id>\d+): 0x[0-9a-f]+ M=\d+ (?P<where>.*):(?P<line>\d+) s=(?P<start>\d+)(?:\((?P<system>.*)\))?$")


def pprof_raw(path):
    """Parses `go tool pprof -raw path`: {"sample_types": [(type, unit)...],
    "period_type", "period", "samples": [{"values", "stack" (root first, each
    a location dict), "labels"}], "locations": {id: {"where": "NAME FILE",
    "line", "start", "system"}}}."""
    out = go_pprof(path, "-raw")
    lines = out.splitlines()
    res = {"samples": [], "locations": {}, "sample_types": None}
    section = None
    pending = []
    for line in lines:
        if line.startswith("PeriodType: "):
            res["period_type"] = tuple(line.split()[1:])
        elif line.startswith("Period: "):
            res["period"] = int(line.split()[1])
        elif line in ("Samples:", "Locations", "Mappings"):
            section = line
        elif section == "Samples:" and res["sample_types"] is None:
            res["sample_types"] = [tuple(t.replace("[dflt]", "").split("/")) for t in line.split()]
        elif section == "Samples:":
            m = _RAW_SAMPLE.match(line)
            if m:
                pending.append({"values": [int(v) for v in m.group("values").split()],
                                "locs": [int(i) for i in m.group("locs").split()], "labels": {}})
                continue
            m = _RAW_LABEL.match(line)
            assert m and pending, "unexpected line in pprof -raw samples: %r" % line
            pending[-1]["labels"][m.group("key")] = m.group("value")
        elif section == "Locations":
            m = _RAW_LOCATION.match(line)
            assert m, "unexpected line in pprof -raw locations: %r" % line
            res["locations"][int(m.group("id"))] = {
                "where": m.group("where"), "line": int(m.group("line")),
                "start": int(m.group("start")), "system": m.group("system")}
    assert res["sample_types"] and pending, "no samples in pprof -raw output:\n" + out[:2000]
    for s in pending:
        s["stack"] = [res["locations"][i] for i in reversed(s.pop("locs"))]
        res["samples"].append(s)
    return res


def run_c_test(tmp_path, name):
    """Builds tests/c/NAME.c with the profile model and every writer (see
    build_c) and runs it (see run_c)."""
    root = os.path.dirname(HERE)
    formats = sorted(os.path.join("src", "formats", f) for f in os.listdir(os.path.join(root, "src", "formats"))
                     if f.endswith(".c"))  # every writer: writer.c names them all
    run_c(build_c(tmp_path, name, ["src/core/profile.c", *formats, "tests/c/%s.c" % name], ["-lm"]))


def wait_traced_by(pid, prof, timeout=30):
    """Waits until spprof (the process prof) has attached to pid with ptrace."""
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        assert prof.poll() is None, prof.communicate()[1]
        with open("/proc/%d/status" % pid) as f:
            if "TracerPid:\t%d\n" % prof.pid in f.read():
                return
        time.sleep(0.01)
    pytest.fail("spprof had not attached to PID %d after %d s" % (pid, timeout))

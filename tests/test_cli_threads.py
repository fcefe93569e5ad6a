"""Python thread names (threading.Thread.name) in the spprof command's
output: read from the target's threading._active, full length and
non-ASCII, next to the right OS thread, the newest name of a thread renamed
while profiled, and the OS name where a thread has no readable Python name."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from test_cli import folded, run, spprof_exe

LONG = "worker-alpha-long-name-1"   # longer than the 15 bytes of an OS name
GREEK = "δ-thread"
BEFORE, RENAMED, LATER = "before-rename", "renamed-thread-ñame", "renamed-later-ωmega"

TARGET = """
import _thread, json, sys, threading, time

stop = threading.Event()
nids = {}

def busy(key):
    nids[key] = threading.get_native_id()
    while not stop.is_set():
        sum(range(2000))

def start(key, name):
    t = threading.Thread(target=busy, args=(key,), name=name, daemon=True)
    t.start()
    return t

start("long", %(long)r)
start("greek", %(greek)r)
renamed = start("renamed", %(before)r)
bogus = start("bogus", "bogus")
# A thread without a Thread object, and one whose _name is not a str: both
# are shown by their OS names.
_thread.start_new_thread(busy, ("raw",))
while len(nids) < 5:
    time.sleep(0.01)
renamed.name = %(renamed)r
bogus._name = 12345
nids["main"] = threading.get_native_id()
print(json.dumps(nids), flush=True)
for line in sys.stdin:
    if line.strip() == "rename":
        renamed.name = %(later)r
        print("renamed", flush=True)
""" % {"long": LONG, "greek": GREEK, "before": BEFORE, "renamed": RENAMED, "later": LATER}


def start_target(tmp_path):
    path = tmp_path / "named.py"
    path.write_text(textwrap.dedent(TARGET))
    proc = subprocess.Popen([sys.executable, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, encoding="utf-8")
    nids = json.loads(proc.stdout.readline())
    return proc, nids


def os_name(pid, tid):
    with open("/proc/%d/task/%d/comm" % (pid, tid)) as f:
        return f.read().rstrip("\n")


def expected(proc, nids):
    """OS thread id -> the name spprof must show."""
    want = {nids["main"]: "MainThread", nids["long"]: LONG, nids["greek"]: GREEK,
            nids["renamed"]: RENAMED}
    for key in ("raw", "bogus"):
        want[nids[key]] = os_name(proc.pid, nids[key])
    assert want[nids["raw"]] not in (LONG, GREEK, RENAMED, "bogus", "12345")
    return want


def test_dump_shows_python_thread_names(tmp_path):
    proc, nids = start_target(tmp_path)
    try:
        want = expected(proc, nids)
        r = run(["dump", "--pid", proc.pid])
        assert r.returncode == 0, r.stderr
        heads = re.findall(r'^Thread (\d+) \([^)]*\): "(.*)"$', r.stdout, re.M)
        assert {int(tid): name for tid, name in heads} == want, r.stdout

        r = run(["dump", "--pid", proc.pid, "--json"])
        assert r.returncode == 0, r.stderr
        got = {t["tid"]: t["name"] for t in json.loads(r.stdout)["threads"]}
        assert got == want
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def _pointer_high_half_without_aslr():
    """The upper 32 bits of a thread's struct pthread address in a process
    run with ASLR off (setarch -R): 0x7fff on x86-64."""
    code = ("import ctypes; f = ctypes.CDLL(None).pthread_self; "
            "f.restype = ctypes.c_void_p; print(f() >> 32)")
    r = subprocess.run(["setarch", "-R", sys.executable, "-c", code], capture_output=True, text=True)
    return int(r.stdout) if r.returncode == 0 else None


def test_dump_tids_when_spprof_pid_is_a_pointer_half(tmp_path):
    """On 3.9 and 3.10 a thread's OS id is read from its struct pthread, at
    the offset where spprof's own struct holds spprof's tid. That struct
    begins with pointers to itself, whose upper halves (0x7f00-0x7fff on
    x86-64) are PIDs spprof can run as: with that PID the offset found was a
    pointer's upper half, and every thread of the target was shown with one
    tid that none of them has (a CI run on 3.10: {32739: 'MainThread'}).
    spprof is run here with ASLR off and its PID set to that upper half
    (root only: the next PID is chosen through ns_last_pid)."""
    if os.geteuid() != 0 or not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK):
        pytest.fail("choosing spprof's PID needs root (it writes /proc/sys/kernel/ns_last_pid)")
    if not shutil.which("setarch"):
        pytest.fail("needs setarch (Debian package util-linux)")
    want_pid = _pointer_high_half_without_aslr()
    with open("/proc/sys/kernel/pid_max") as f:
        if want_pid is None or not 300 < want_pid < int(f.read()):
            pytest.fail("the upper half of a pointer is no PID here (%r): a test for "
                        "x86-64 with pid_max above 32767" % want_pid)
    proc, nids = start_target(tmp_path)
    try:
        want = expected(proc, nids)
        # sh execs spprof with its own PID, if it got the one wanted.
        script = 'test $$ = %d || exit 99; exec setarch -R "$@"' % want_pid
        for _ in range(50):
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(want_pid - 1))
            r = subprocess.run(["sh", "-c", script, "sh", spprof_exe(), "dump", "--pid",
                                str(proc.pid), "--json"], capture_output=True, text=True, timeout=120)
            if r.returncode != 99:
                break
        else:
            pytest.fail("PID %d was never free in 50 tries" % want_pid)
        assert r.returncode == 0, r.stderr
        got = [(t["tid"], t["name"]) for t in json.loads(r.stdout)["threads"]]
        assert dict(got) == want and len(got) == len(want), got
    finally:
        proc.kill()
        proc.wait()


def test_record_threads_use_python_names(tmp_path):
    proc, nids = start_target(tmp_path)
    try:
        want = expected(proc, nids)
        out = tmp_path / "threads.collapsed"
        r = run(["record", "--pid", proc.pid, "-d", "1", "-t", "-i", "-f", "collapsed",
                 "-o", out])
        assert r.returncode == 0, r.stderr
        roots = {s.split(";", 1)[0] for s in folded(out)}
        assert roots == {"thread %s (%d)" % (name, tid) for tid, name in want.items()}, roots

        # Renamed while recording: the profile ends with the newest name.
        out = tmp_path / "threads.json"
        rec = subprocess.Popen(
            [spprof_exe(), "record",
             "--pid", str(proc.pid), "-d", "3", "-t", "-i", "-f", "speedscope", "-o", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        proc.stdin.write("rename\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "renamed"
        _, err = rec.communicate(timeout=120)
        assert rec.returncode == 0, err
        doc = json.loads(out.read_text(encoding="utf-8"))
        want[nids["renamed"]] = LATER
        names = {p["name"] for p in doc["profiles"]}
        assert names == {"%s (tid %d)" % (name, tid) for tid, name in want.items()}, names
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


HOSTILE = """
import json, threading, time
nids = {}
def wait(key):
    nids[key] = threading.get_native_id()
    time.sleep(600)
for key in ("a", "b"):
    threading.Thread(target=wait, args=(key,), name="py-name-%s-past-15-bytes" % key,
                     daemon=True).start()
while len(nids) < 2:
    time.sleep(0.01)
nids["main"] = threading.get_native_id()
# What spprof reads as threading._active is now a list: no name may come
# out of it, only the fallbacks.
threading._active = ["not", "a", "dict", 7]
print(json.dumps(nids), flush=True)
time.sleep(600)
"""


def test_unreadable_names_fall_back_to_os_names(tmp_path):
    path = tmp_path / "hostile.py"
    path.write_text(textwrap.dedent(HOSTILE))
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        nids = json.loads(proc.stdout.readline())
        want = {nids["main"]: "MainThread"}
        for key in ("a", "b"):
            want[nids[key]] = os_name(proc.pid, nids[key])
            # (3.14+ copies the Python name into the OS name, cut to 15 bytes)
            assert want[nids[key]] != "py-name-%s-past-15-bytes" % key
        r = run(["dump", "--pid", proc.pid, "--json"])
        assert r.returncode == 0, r.stderr
        assert {t["tid"]: t["name"] for t in json.loads(r.stdout)["threads"]} == want
    finally:
        proc.kill()
        proc.wait()


RENAME = """
import threading, time

def burn(s):
    end = time.thread_time() + s
    while time.thread_time() < end:
        pass

def early():
    burn(0.01)

def late():
    burn(0.3)

def worker():
    with open("/proc/self/task/%d/comm" % threading.get_native_id(), "w") as comm:
        comm.write("os-name")
    early()       # sampled before spprof has read the thread's Python name
    time.sleep(0.4)   # idle (not sampled) when it reads it
    late()

t = threading.Thread(target=worker, name="py-name")
t.start()
t.join()
"""


def test_thread_named_while_idle_keeps_its_python_name(tmp_path):
    """A thread first seen before its Python name was read is named by the
    OS; when the names are read while it is idle (so not in that sample),
    its later samples still get the Python name."""
    script = tmp_path / "rename.py"
    script.write_text(RENAME)
    out = tmp_path / "p.txt"
    r = run(["record", "-r", "1000", "--threads", "-f", "collapsed", "-o", out, "--", sys.executable, script])
    assert r.returncode == 0, r.stderr
    late = {s: n for s, n in folded(out).items() if s.split(";")[-1].startswith("late ")
            or ";late (" in s}
    assert late, folded(out)
    roots = {s.split(";")[0] for s in late}
    assert all(root.startswith("thread py-name (") for root in roots), roots

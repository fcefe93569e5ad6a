"""The stress suite, out-of-process: `spprof record` while its target is
killed, exits or execs in the middle of the recording, starts and ends
hundreds of threads a second, or is stopped with SIGSTOP. spprof writes what
it has, ends with the documented status, never resumes a stopped target,
and never hangs: every wait here is bounded.

(tests/test_cli.py has the neighbours: a launched program's exit status,
a zombie target with --nonblocking, signals and threads while paused.)"""

import os
import re
import select
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time

import pytest

from conftest import wait_traced_by
from test_cli import folded, share, spprof_exe

pytestmark = pytest.mark.stress

# Prints its pid, then runs hot_leaf for argv[1] seconds of wall time, then
# execs argv[2:] if given.
TARGET = """
import os, sys, time

def hot_leaf():
    x = 0
    for i in range(3000):
        x += i * i
    return x

def work(seconds):
    end = time.time() + seconds
    while time.time() < end:
        hot_leaf()

print(os.getpid(), flush=True)
work(float(sys.argv[1]))
if len(sys.argv) > 2:
    os.execv(sys.argv[2], sys.argv[2:])
"""

# Hundreds of threads a second: a thread starting and joining batches of
# short threads while the main thread works; prints the rate it reached.
CHURN = """
import sys, threading, time

def tiny():
    x = 0
    for i in range(200):
        x += i

def churn(seconds, out):
    n = 0
    end = time.time() + seconds
    while time.time() < end:
        ts = [threading.Thread(target=tiny) for _ in range(10)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        n += 10
    out.append(n / seconds)

def hot_leaf():
    x = 0
    for i in range(3000):
        x += i * i
    return x

# (GIL handoffs every 0.5 ms rather than 5: the churning thread gets its
# turn often enough to start its threads by the hundred.)
sys.setswitchinterval(0.0005)
seconds = float(sys.argv[1])
rate = []
c = threading.Thread(target=churn, args=(seconds, rate), name="churn")
c.start()
end = time.time() + seconds
while time.time() < end:
    hot_leaf()
c.join()
print("rate", rate[0], flush=True)
"""


def write(tmp_path, name, src):
    path = tmp_path / name
    path.write_text(textwrap.dedent(src))
    return path


def readline(stream, timeout=30):
    """A line from a pipe, or a test failure after timeout seconds."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        pytest.fail("no output within %d s" % timeout)
    return stream.readline()


def finish(proc, timeout=60):
    """Waits for spprof (bounded); returns (status, stderr, stdout)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail("spprof did not end within %d s (hung)\n%s" % (timeout, err))
    return proc.returncode, err, out


def stat(pid):
    """(state letter, user + system CPU ticks) from /proc/PID/stat, or
    (None, None) if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None, None
    return fields[0], int(fields[11]) + int(fields[12])


def state(pid):
    return stat(pid)[0]


def assert_stays_stopped(pid):
    """pid is stopped and does not run. (Detaching wakes a thread for a
    moment to re-enter its group stop, so it may read 'R' just after.)"""
    deadline = time.monotonic() + 5
    while state(pid) != "T" and time.monotonic() < deadline:
        time.sleep(0.01)
    st, cpu = stat(pid)
    assert st == "T", st
    time.sleep(0.5)
    assert stat(pid) == ("T", cpu), (stat(pid), cpu)


def wrote(err):
    """(samples, errors) from spprof's final line."""
    m = re.search(r"wrote .* \((\d+) samples, (\d+) errors", err)
    assert m, err
    return int(m.group(1)), int(m.group(2))


def record(args, **kw):
    return subprocess.Popen([spprof_exe(), "record", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.parametrize("how", ["launched", "attached"])
def test_target_killed_mid_recording(tmp_path, how):
    """SIGKILL: spprof writes what it had; launched, its status is the
    program's (128 + 9), attached, 0."""
    prog = write(tmp_path, "t.py", TARGET)
    out = tmp_path / "p.txt"
    target = None
    if how == "launched":
        proc = record(["-r", "200", "-f", "raw", "-o", out, "--", sys.executable, prog, 60])
        pid = int(readline(proc.stdout))
    else:
        target = subprocess.Popen([sys.executable, str(prog), "60"], stdout=subprocess.PIPE,
                                  text=True)
        pid = int(readline(target.stdout))
        proc = record(["--pid", pid, "-r", "200", "-f", "raw", "-o", out])
        wait_traced_by(pid, proc)
    try:
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        status, err, _ = finish(proc)
    finally:
        if target:
            target.kill()
            target.wait()
    assert status == (128 + signal.SIGKILL if how == "launched" else 0), (status, err)
    samples, errors = wrote(err)
    assert samples >= 20, err
    assert share(folded(out), "hot_leaf") > 0.3


def test_attached_target_exits_mid_recording(tmp_path):
    prog = write(tmp_path, "t.py", TARGET)
    out = tmp_path / "p.txt"
    target = subprocess.Popen([sys.executable, str(prog), "1"], stdout=subprocess.PIPE, text=True)
    pid = int(readline(target.stdout))
    t0 = time.monotonic()
    proc = record(["--pid", pid, "-d", 120, "-r", "200", "-f", "raw", "-o", out])
    status, err, _ = finish(proc)
    target.wait(timeout=30)
    assert status == 0, err
    assert time.monotonic() - t0 < 30, "the recording did not end with the target"
    assert share(folded(out), "hot_leaf") > 0.3


@pytest.mark.parametrize("mode", [[], ["--nonblocking"]])
@pytest.mark.parametrize("into", ["shell", "python"])
def test_target_execs_mid_recording(tmp_path, into, mode):
    """An exec replaces the program spprof was reading: the recording ends
    there with what it has, rather than sampling another program's memory
    as if it were the old one; the launched program's status is still
    spprof's."""
    prog = write(tmp_path, "t.py", TARGET)
    out = tmp_path / "p.txt"
    if into == "shell":
        then = ["/bin/sh", "-c", "sleep 1; exit 4"]
    else:
        then = [sys.executable, str(prog), "1"]
    proc = record(["-r", "200", "-f", "raw", "-o", out, *mode, "--", sys.executable, prog, 1,
                   *then])
    status, err, _ = finish(proc)
    assert status == (4 if into == "shell" else 0), err
    assert "ran another program (exec): the recording ends there" in err, err
    samples, errors = wrote(err)
    # (Sampling on after the exec read the old program's addresses in the
    # new one: every later sample was an error, or a stack made up. Without
    # ptrace the exec is noticed within 20 ms: a few samples at 200 Hz.)
    # (Before, about as many errors as samples.)
    assert samples >= 20 and errors < samples // 4, err
    assert share(folded(out), "hot_leaf") > 0.3


@pytest.mark.parametrize("mode", [[], ["--nonblocking"]])
def test_threads_appearing_and_ending_hundreds_per_second(tmp_path, mode):
    prog = write(tmp_path, "churn.py", CHURN)
    out = tmp_path / "p.txt"
    t0 = time.monotonic()
    proc = record(["-r", "500", "-f", "raw", "-o", out, *mode, "--", sys.executable, prog, 3])
    status, err, stdout = finish(proc, timeout=120)
    assert status == 0, err
    m = re.search(r"rate ([\d.]+)", stdout)
    assert m, (stdout, err)
    rate = float(m.group(1))
    # Untraced it starts 400-1,400 a second here on GIL builds. Paused with
    # ptrace, each new thread stops twice (clone event, first stop) until
    # spprof lets it go: on a machine at load 24 that held it to 30-400 a
    # second. The free-threaded 3.13t/3.14t started 5 a second here with no
    # profiler at all (thread creation against a thread spinning in Python),
    # so there only the churn itself is asked for.
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        assert rate > 0
    else:
        assert rate >= (100 if mode else 20), "the target started only %.0f threads a second" % rate
    samples, errors = wrote(err)
    # (3.15 counts a thread that has only the interpreter's base frame, a
    # thread starting or ending, as an error: a third of the stacks read in
    # this churn.)
    assert samples >= 100 and errors <= samples, err
    counts = folded(out)
    assert share(counts, "hot_leaf") > 0.2, counts
    assert time.monotonic() - t0 < 100


@pytest.mark.parametrize("how", ["attached", "launched"])
def test_stopped_target_stays_stopped_and_duration_ends_the_recording(tmp_path, how):
    """SIGSTOP during a recording: spprof neither hangs nor continues the
    target; --duration still ends the recording and the file is written;
    the target goes on when continued (launched: spprof then ends with its
    status)."""
    prog = write(tmp_path, "t.py", TARGET)
    out = tmp_path / "p.txt"
    target = None
    if how == "attached":
        target = subprocess.Popen([sys.executable, str(prog), "60"], stdout=subprocess.PIPE,
                                  text=True)
        pid = int(readline(target.stdout))
        proc = record(["--pid", pid, "-d", 2, "-r", "200", "-f", "raw", "-o", out])
    else:
        proc = record(["-d", 2, "-r", "200", "-f", "raw", "-o", out, "--", sys.executable, prog, 3])
        pid = int(readline(proc.stdout))
    try:
        time.sleep(0.5)
        os.kill(pid, signal.SIGSTOP)
        t_stop = time.monotonic()
        if how == "attached":
            status, err, _ = finish(proc, timeout=30)
            assert status == 0, err
        else:
            # spprof writes the file at the end of --duration, then waits
            # for its child as a shell would: the child is stopped.
            deadline = time.monotonic() + 30
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert out.exists(), "no profile written by the end of --duration"
            assert proc.poll() is None
        assert time.monotonic() - t_stop < 25
        # Still stopped, and stays so: spprof let it go in its stopped state.
        assert_stays_stopped(pid)
        assert share(folded(out), "hot_leaf") > 0.3
        os.kill(pid, signal.SIGCONT)
        if how == "launched":
            status, err, _ = finish(proc, timeout=60)
            assert status == 0, err
            assert "wrote" in err, err
        else:
            deadline = time.monotonic() + 10
            while state(pid) == "T" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert state(pid) in ("R", "S"), state(pid)
    finally:
        if target:
            target.kill()
            target.wait()
        elif proc.poll() is None:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
            proc.communicate(timeout=30)

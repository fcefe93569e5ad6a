"""`spprof record --subprocesses`: a multiprocessing pool's workers (forked
children before 3.14, a fork server's children from 3.14 on) are sampled,
each process's stacks under a `process PID: cmdline` root; non-Python
children are ignored; nothing of the tree stays stopped or traced."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from test_cli import folded, line_of, run, spprof_exe

POOL = """
import multiprocessing as mp, os, subprocess, sys, time

def burn_in_worker(seconds):
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x += 1
    return os.getpid()

if __name__ == "__main__":
    seconds = float(sys.argv[1])
    # A child that is not Python, and one that becomes Python by exec.
    sleeper = subprocess.Popen(["sleep", "2"])
    late = subprocess.Popen(["sh", "-c", 'sleep 0.5; exec "$0" "$1"', sys.executable,
                             sys.argv[2]])
    with mp.Pool(2) as pool:
        result = pool.map_async(burn_in_worker, [seconds, seconds])
        print("ready", os.getpid(), flush=True)
        pids = result.get()
    sleeper.wait()
    late.wait()
    print(mp.get_start_method(), os.getpid(), late.pid, *sorted(set(pids)), flush=True)
"""

AFTER_EXEC = """
import time

def burn_after_exec():
    end = time.process_time() + 1.0
    while time.process_time() < end:
        pass

burn_after_exec()
"""


@pytest.fixture
def pool(tmp_path):
    (tmp_path / "after_exec.py").write_text(textwrap.dedent(AFTER_EXEC))
    path = tmp_path / "pool.py"
    path.write_text(textwrap.dedent(POOL))
    return path


def by_process(counts):
    """{pid: {stack without its process root: count}} from folded stacks."""
    procs = {}
    for stack, n in counts.items():
        root, _, rest = stack.partition(";")
        assert root.startswith("process "), stack
        pid = int(root.split()[1].rstrip(":"))
        procs.setdefault(pid, {})[rest] = procs.setdefault(pid, {}).get(rest, 0) + n
    return procs


def samples_in(counts, function):
    return sum(n for s, n in counts.items() if ";" + function + " (" in ";" + s)


def test_pool_workers_are_sampled_under_process_roots(pool, tmp_path):
    out = tmp_path / "p.txt"
    r = run(["record", "-s", "-f", "collapsed", "-o", out, "--",
             sys.executable, pool, "2", tmp_path / "after_exec.py"], timeout=240)
    assert r.returncode == 0, r.stderr
    # Nothing said about `sleep` or `sh` (or anything else): only the result.
    assert [l for l in r.stderr.splitlines() if not l.startswith("spprof: wrote ")] == [], r.stderr
    method, parent, late, *workers = r.stdout.split("\n")[1].split()
    assert method == ("forkserver" if sys.version_info >= (3, 14) else "fork")
    parent, late, workers = int(parent), int(late), [int(w) for w in workers]
    assert len(workers) == 2, r.stdout

    counts = folded(out)
    procs = by_process(counts)
    # Every root names its process and its command line.
    for stack in counts:
        root = stack.split(";")[0]
        assert root.startswith("process %d: " % int(root.split()[1].rstrip(":")))
    assert parent in procs and str(pool) in next(s for s in counts if s.startswith(
        "process %d: " % parent)).split(";")[0]
    assert samples_in(procs[parent], "burn_in_worker") == 0
    for w in workers:
        assert samples_in(procs.get(w, {}), "burn_in_worker") >= 20, (w, sorted(procs))
    # The workers burn ~4 CPU-seconds of the run's few wall seconds.
    total = sum(counts.values())
    assert samples_in(counts, "burn_in_worker") / total > 0.5
    # `sh -c` is not Python and is passed over silently; once it execs
    # Python, the same PID is sampled.
    assert samples_in(procs.get(late, {}), "burn_after_exec") >= 10, sorted(procs)
    assert all(samples_in(p, "burn_after_exec") == 0 for pid, p in procs.items() if pid != late)


def test_without_subprocesses_only_the_target_is_sampled(pool, tmp_path):
    out = tmp_path / "p.txt"
    r = run(["record", "-f", "collapsed", "-o", out, "--",
             sys.executable, pool, "1", tmp_path / "after_exec.py"], timeout=240)
    assert r.returncode == 0, r.stderr
    counts = folded(out)
    assert counts
    assert not any(s.startswith("process ") for s in counts)
    assert samples_in(counts, "burn_in_worker") == 0
    assert samples_in(counts, "burn_after_exec") == 0
    assert any(";" + "<module> (pool.py:" in ";" + s for s in counts)


def test_threads_option_puts_the_thread_under_the_process(pool, tmp_path):
    out = tmp_path / "p.txt"
    r = run(["record", "-s", "-t", "-f", "collapsed", "-o", out, "--",
             sys.executable, pool, "1", tmp_path / "after_exec.py"], timeout=240)
    assert r.returncode == 0, r.stderr
    parent = int(r.stdout.split("\n")[1].split()[1])
    for stack in folded(out):
        frames = stack.split(";")
        assert frames[0].startswith("process "), stack
        assert frames[1].startswith("thread "), stack
    assert any(s.startswith("process %d: " % parent) and
               s.split(";")[1] == "thread MainThread (%d)" % parent for s in folded(out))


def tree(root):
    """root and its descendants now, from /proc parent links."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = [], [root]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += [c for c, pp in parents.items() if pp == p]
    return found


def assert_untraced(pids):
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                status = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
        except OSError:
            continue  # ended meanwhile
        assert status["TracerPid"].strip() == "0", (pid, status)
        assert status["State"].split()[0] not in ("t", "T"), (pid, status)


@pytest.mark.parametrize("how", ["pid-duration", "launched-ctrl-c"])
def test_no_process_of_the_tree_is_left_stopped_or_traced(pool, tmp_path, how):
    out = tmp_path / "p.txt"
    cmd = [sys.executable, str(pool), "6", str(tmp_path / "after_exec.py")]
    if how == "pid-duration":
        target = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = target.stdout.readline().split()
        assert line[0] == "ready"
        time.sleep(0.5)
        r = run(["record", "-s", "-d", "1.5", "-f", "collapsed", "-o", out,
                 "--pid", target.pid], timeout=120)
        assert r.returncode == 0, r.stderr
        pids = tree(target.pid)
    else:
        spprof = subprocess.Popen([spprof_exe(), "record", "-s", "-f", "collapsed", "-o", str(out),
                                   "--", *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        line = spprof.stdout.readline().split()
        assert line[0] == "ready"
        time.sleep(1.5)
        pids = tree(int(line[1]))
        spprof.send_signal(signal.SIGINT)
        # spprof writes the profile, then waits for its program as its
        # parent: the file appears while the tree still runs.
        for _ in range(200):
            if out.exists():
                break
            time.sleep(0.05)
        assert out.exists()
    # The pool's workers and the parent are still running, and none is
    # stopped or traced by spprof any more.
    assert len(pids) >= 3, pids
    assert_untraced(pids)
    procs = by_process(folded(out))
    assert len([p for p in procs if samples_in(procs[p], "burn_in_worker")]) == 2, sorted(procs)
    if how == "pid-duration":
        target.wait(timeout=120)
        assert target.returncode == 0
    else:
        rest, err = spprof.communicate(timeout=120)
        assert spprof.returncode == 0, err
        assert "wrote" in err


LINGER = """
import subprocess, sys, time

def parent_work():
    end = time.process_time() + 1.0
    while time.process_time() < end:
        pass

child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
parent_work()
"""


def test_the_programs_exit_ends_the_recording_while_children_linger(tmp_path):
    script = tmp_path / "linger.py"
    script.write_text(textwrap.dedent(LINGER))
    out = tmp_path / "p.txt"
    # --idle: the sleeping child is sampled too, which shows it was found.
    r = run(["record", "-s", "-i", "-f", "collapsed", "-o", out, "--", sys.executable, script],
            timeout=50)
    child = int(r.stdout.split()[0])
    try:
        assert r.returncode == 0, r.stderr
        os.kill(child, 0)  # still sleeping: the recording did not wait for it
        assert_untraced([child])
        procs = by_process(folded(out))
        assert child in procs, sorted(procs)
        assert samples_in(procs[child], "<module>") > 0
        assert any(samples_in(c, "parent_work") > 0 for p, c in procs.items() if p != child)
    finally:
        os.kill(child, signal.SIGKILL)


# A pool whose two workers each print their PID, then wait in a function
# only they run (sleeping for dump, burning CPU for top), while the parent
# waits for them; and a child that is not Python.
POOL_WAIT = """
import multiprocessing as mp, os, subprocess, sys, time

def only_in_worker(how):
    os.write(1, b"worker %d\\n" % os.getpid())  # one write: the two workers print at once
    end = time.time() + 60
    if how == "sleep":
        time.sleep(60)          # WORKER
    x = 0
    while time.time() < end:
        x += 1
    return os.getpid()

if __name__ == "__main__":
    sleeper = subprocess.Popen(["sleep", "60"])
    with mp.Pool(2) as pool:
        result = pool.map_async(only_in_worker, [sys.argv[1]] * 2, chunksize=1)
        # one write, as the workers' (print() may write its parts apart)
        os.write(1, b"parent %d %d\\n" % (os.getpid(), sleeper.pid))
        result.get()
"""


@pytest.fixture
def waiting_pool(tmp_path):
    """Starts POOL_WAIT with how ("sleep" or "burn"); returns (parent,
    sleep child, workers) once both workers are in only_in_worker."""
    path = tmp_path / "pool_wait.py"
    path.write_text(textwrap.dedent(POOL_WAIT))
    procs = []

    def start(how):
        proc = subprocess.Popen([sys.executable, str(path), how], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        lines = [proc.stdout.readline().split() for _ in range(3)]
        parent = next(l for l in lines if l[0] == "parent")
        workers = sorted(int(l[1]) for l in lines if l[0] == "worker")
        assert int(parent[1]) == proc.pid and len(workers) == 2, lines
        time.sleep(0.3)  # from print() to the sleep
        return proc.pid, int(parent[2]), workers

    yield start, path
    for proc in procs:
        family = tree(proc.pid)
        for pid in family[1:]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        proc.kill()
        proc.wait()


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid) as f:
        return f.read().rstrip("\0").replace("\0", " ")


def test_dump_subprocesses_shows_each_worker(waiting_pool):
    start, path = waiting_pool
    parent, sleeper, workers = start("sleep")
    line = line_of(path.read_text(), "# WORKER")
    r = run(["dump", "--subprocesses", "--pid", parent])
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr  # nothing said about `sleep`
    # One block per Python process, each headed like py-spy's, the target
    # first; the workers (and from 3.14 the fork server) after it.
    procs = {}
    for block in r.stdout.split("Process ")[1:]:
        head, version = block.splitlines()[:2]
        pid = int(head.split(":")[0])
        # (a fork server's children have its command line, not the script's)
        assert head == "%d: %s" % (pid, cmdline(pid)), head
        assert version.startswith("Python v%d.%d" % sys.version_info[:2]), version
        procs[pid] = block
    assert list(procs)[0] == parent and set(workers) <= set(procs), r.stdout
    assert cmdline(parent) == "%s %s sleep" % (sys.executable, path)
    assert sleeper not in procs
    for w in workers:
        threads = procs[w].split("\nThread ")[1:]
        main = next(t for t in threads if '"MainThread"' in t.splitlines()[0])
        assert main.rstrip().splitlines()[-1] == "    only_in_worker (pool_wait.py:%d)" % line, procs[w]
    assert "only_in_worker" not in procs[parent]
    assert "    <module> (pool_wait.py:" in procs[parent]

    r = run(["dump", "-s", "--json", "--pid", parent])
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert isinstance(doc, list) and doc[0]["pid"] == parent, doc
    by_pid = {p["pid"]: p for p in doc}
    for w in workers:
        assert by_pid[w]["python_version"].startswith("%d.%d" % sys.version_info[:2])
        main = next(t for t in by_pid[w]["threads"] if t["tid"] == w)
        assert main["frames"][-1] == {"name": "only_in_worker", "file": str(path), "line": line}
    # Without --subprocesses: the target alone, one object as before.
    r = run(["dump", "--json", "--pid", parent])
    doc = json.loads(r.stdout)
    assert isinstance(doc, dict) and doc["pid"] == parent
    assert_untraced(tree(parent))


def test_top_subprocesses_shows_what_only_a_child_runs(waiting_pool):
    from test_cli import TmuxTop, top_rows

    start, _ = waiting_pool
    parent, sleeper, workers = start("burn")
    top = TmuxTop("--pid", parent, "--subprocesses", "--rate", "100", "--delay", "0.5", width=160)
    try:
        def both(screen):
            return len(top_rows(screen, " only_in_worker (pool_wait.py)")) == 2
        screen = top.wait_for(both, seconds=20)
        # Each worker's function on its own row, under its own PID; the
        # parent's waiting under the parent's.
        rows = top_rows(screen, " only_in_worker (pool_wait.py)")
        assert sorted(int(r.split()[4]) for r in rows) == workers, screen
        for r in rows:
            assert float(r.split("%")[0]) > 20, screen
        # (The parent only waits: without --idle it has no rows.)
        assert not [r for r in top_rows(screen, "") if int(r.split()[4]) not in workers], screen
        assert re.search(r"Processes: [3-9]", screen), screen
        top.quit()
        assert_untraced(tree(parent))
    finally:
        top.close()

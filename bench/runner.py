"""One profiled run of a target from bench/workloads.py, the same way for
every tool: the benchmarks that compare tools on targets all go through
run_once().

A run starts the target (always the same interpreter, argv and environment,
but for the variables a variant sets),
attaches an out-of-process profiler with its PID and leaves it SETTLE
seconds, then says go (naming the in-process profiler, if any, which the
target starts itself); when the target has exited and the profiler has
written its file, it collects:

- the target's wall and CPU time for the work (timed by the target);
- the profiler's CPU time from go to its exit (wait4 rusage minus
  its threads' run times at go, to the ns: its start-up and attach left out, its writing of the
  output in) and its peak RSS (GNU time's %M: the peak of a child forked
  from this Python would be at least this Python's own);
- the samples in its output, all and those of the timed work (stacks through
  the workload's `chunk`), and per function asked for, the samples whose
  stack holds it;
- what the tool says of its own lag (spprof: samples more than half a
  period late; py-spy: "behind").
"""

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = os.path.join(HERE, "workloads.py")
STARVED_S = 30  # an out-of-process profiler still running its target after this is stopped
SETTLE = 1.0  # seconds between starting the profiler and go: attach, first samples
CLK_TCK = os.sysconf("SC_CLK_TCK")
TIME = "/usr/bin/time"


def need_time():
    if not os.path.exists(TIME):
        sys.exit("bench: %s is missing: install the Debian package 'time' (python3 tools/setup_deps.py)" % TIME)


def proc_cpu(pid):
    """The CPU time of pid so far, in seconds: its threads' run times in ns
    (/proc/PID/task/*/schedstat). /proc/PID/stat's utime + stime count
    whole clock ticks (10 ms here): subtracted from the exact total of
    wait4, they overstated the CPU after go by 10 ms on average, 50 µs a
    sample in a 200-sample run at 100 Hz. stat's figure also counts threads
    that have ended, so the larger of the two is taken."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = (int(fields[11]) + int(fields[12])) / CLK_TCK
    ns = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                ns += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return max(ticks, ns / 1e9)


def function_of(frame):
    """The function's name in one frame of any tool's folded stacks:
    "name (file:line)" (spprof, py-spy raw) or "file:name:line" (austin,
    Tachyon)."""
    if frame.endswith(")") and " (" in frame:
        return frame[:frame.rindex(" (")]
    parts = frame.rsplit(":", 2)
    return parts[1] if len(parts) == 3 else frame


def clocks_used(vs, results):
    """A report line naming the clock each in-process spprof variant ran
    under ("" when none ran): the default one is what the kernel allows the
    bench's user (perf_event for root), which the row names do not say."""
    parts = []
    for v in vs:
        if v.inproc and v.inproc[0] == "spprof":
            seen = sorted({r.get("clock") or "?" for r in results.get(v.name, [])})
            parts.append("%s: %s" % (v.name, ", ".join(seen)))
    return "- clocks of the in-process runs: " + "; ".join(parts) if parts else ""


def count_samples(path, per_line=False, watch=()):
    """(all samples, samples of the timed work, {function in watch: samples
    whose stack holds it}) of a folded-stacks file. per_line: every line is
    one sample whatever its number (austin writes one line per sample, the
    number being the time it stands for)."""
    total = work = 0
    funcs = collections.Counter()
    try:
        with open(path, errors="replace") as f:
            for line in f:
                head, _, n = line.rstrip("\n").rpartition(" ")
                if not head or not n.isdigit() or head.startswith("#"):
                    continue
                n = 1 if per_line else int(n)
                names = {function_of(fr) for fr in head.split(";")}
                total += n
                if "chunk" in names:
                    work += n
                    for w in watch:
                        funcs[w] += n if w in names else 0
    except OSError:
        pass
    return total, work, funcs


class Variant:
    """A way of running the target: no profiler, an out-of-process tool
    (`tool` at `rate` Hz with `flags`), or an in-process one (`inproc` =
    (tool, interval in ms)); `env`: variables set in the target's
    environment (SPPROF_CLOCK, say)."""

    def __init__(self, name, tool=None, rate=None, flags=(), inproc=None, python=None, env=None):
        self.name, self.tool, self.rate, self.flags = name, tool, rate, list(flags)
        self.inproc, self.python, self.env = inproc, python, dict(env or {})

    def command(self, exe, pid, out):
        if self.tool is None:
            return None
        r = str(self.rate)
        if self.tool == "spprof":
            cmd = [exe["spprof"], "record", "--pid", str(pid), "-r", r, "-f", "collapsed", "-o", out]
        elif self.tool == "py-spy":
            cmd = [exe["py-spy"], "record", "--pid", str(pid), "-r", r, "-f", "raw", "-o", out]
        elif self.tool == "austin":
            # -s: idle samples left out, as the others do by default.
            cmd = [exe["austin"], "-s", "-i", "%dus" % round(1e6 / self.rate), "-p", str(pid), "-o", out]
        elif self.tool == "tachyon":
            cmd = [exe["tachyon"], "-m", "profiling.sampling", "attach", "-r", r, "-a", "--collapsed",
                   "-o", out, str(pid)]
        else:
            raise ValueError(self.tool)
        return cmd + self.flags


# The clocks spprof in-process is compared under, by label: the default
# (SPPROF_CLOCK unset: perf_event where the kernel allows it, as for root,
# which the bench runs as), cpu_poll (what an unprivileged program gets
# where the kernel keeps perf_event from counting system time) and
# nonblocking (start(nonblocking=True): no signal, stacks read while the
# thread runs).
CLOCKS = {"default": "", "cpu_poll": "poll", "nonblocking": "nonblocking"}


def inproc_variants(name, interval_ms, rate=None):
    """spprof in-process at interval_ms under each of CLOCKS, the default one
    named `name`, the others `name` and the clock's label."""
    return [Variant(name if label == "default" else "%s %s" % (name, label), inproc=("spprof", interval_ms),
                    rate=rate, env={"SPPROF_CLOCK": clock}) for label, clock in CLOCKS.items()]


def tools(names):
    """{tool: command} for the tools named, installing peers on first use;
    "tachyon" maps to a CPython 3.15, or is left out when there is none."""
    exe = {}
    for n in names:
        if n == "spprof":
            exe[n] = common.spprof_cli()
        elif n == "tachyon":
            py = common.tachyon_python()
            if py:
                exe[n] = py
        else:
            exe[n] = common.peer_tool(n)
    return exe


def setup(args):
    """(tools, the targets' Python, settle time) for a part comparing every
    tool; a smoke test settles for less."""
    need_time()
    return tools(("spprof", "py-spy", "austin", "tachyon")), common.target_python(), 0.3 if args.quick else SETTLE


def calibrate(workload, seconds, python):
    return int(subprocess.check_output([python, WORKLOADS, workload, "--calibrate", str(seconds)]))


def amounts(workload, seconds, python, exe):
    """{interpreter: amount of work} for the targets' Python and, with
    Tachyon, the CPython 3.15 its targets run on."""
    out = {python: calibrate(workload, seconds, python)}
    if exe.get("tachyon"):
        out[exe["tachyon"]] = calibrate(workload, seconds, exe["tachyon"])
    return out


def run_once(variant, exe, workload, amount, python, watch=(), settle=SETTLE):
    """One run; see the module's docstring. Returns a dict."""
    py = variant.python or python
    target = subprocess.Popen([py, WORKLOADS, workload, str(amount)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, **variant.env))
    assert target.stdout.readline().strip() == "ready"
    tmp = tempfile.mkdtemp(prefix="spprof-bench-")
    out, err_path, rss_path = (os.path.join(tmp, n) for n in ("profile.txt", "stderr", "rss"))
    cmd = variant.command(exe, target.pid, out)
    prof = None
    if cmd:
        cmd = [TIME, "-f", "%M", "-o", rss_path] + cmd
        with open(err_path, "w") as err:
            prof = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        time.sleep(settle)
    cpu0 = 0.0
    if prof:
        try:
            with open("/proc/%d/task/%d/children" % (prof.pid, prof.pid)) as f:
                cpu0 = proc_cpu(int(f.read().split()[0]))
        except (OSError, IndexError, ValueError):
            cpu0 = 0.0  # it already exited: its error is reported below
    go = "go" if not variant.inproc else "go %s %s %s" % (variant.inproc[0], variant.inproc[1], out)
    target.stdin.write(go + "\n")
    target.stdin.flush()
    # A profiler pausing its target back to back can starve it (py-spy at 10
    # kHz, spprof at 20 kHz before it kept the target running between
    # pauses): after STARVED_S it is stopped with SIGINT, as a user would,
    # the target finishes, and the run counts with the wall time it took.
    starved = []
    guard = None
    if prof:
        def stop_profiler():
            try:
                with open("/proc/%d/task/%d/children" % (prof.pid, prof.pid)) as f:
                    os.kill(int(f.read().split()[0]), signal.SIGINT)
                starved.append(True)
            except (OSError, IndexError, ValueError):
                pass
        guard = threading.Timer(STARVED_S, stop_profiler)
        guard.start()
    line = target.stdout.readline()
    target.wait()
    if guard:
        guard.cancel()
    res = json.loads(line) if line.strip() else {"wall": float("nan"), "cpu": float("nan")}
    if variant.inproc:
        total, work, funcs = count_samples(out, watch=watch)
        res.update(work_samples=work if variant.inproc[0] == "spprof" else res.get("samples"),
                   funcs=funcs, late=None, behind=False)
    if prof:
        killer = threading.Timer(60, prof.kill)  # a profiler that does not notice the exit
        killer.start()
        _, status, ru = os.wait4(prof.pid, 0)
        killer.cancel()
        with open(err_path, errors="replace") as f:
            stderr = f.read()
        try:
            with open(rss_path) as f:
                rss_kb = int(f.read().split()[-1])
        except (OSError, ValueError, IndexError):
            rss_kb = 0
        total, work, funcs = count_samples(out, per_line=variant.tool == "austin", watch=watch)
        m = re.search(r"(\d+) late[,)]", stderr)
        mm = re.search(r"(\d+) missed\)", stderr)
        wall = res["wall"]
        # (wait4 of time: the profiler's CPU and time's own, which is nil)
        res.update(samples=total, work_samples=work, funcs=funcs, prof_cpu=ru.ru_utime + ru.ru_stime - cpu0,
                   rss_mb=rss_kb / 1024, obtained=work / (variant.rate * wall),
                   late=int(m.group(1)) / (variant.rate * wall) if m else None,
                   missed=int(mm.group(1)) / (variant.rate * wall) if mm else None, behind="behind" in stderr,
                   starved=bool(starved))
        if work == 0:
            print("  warning: %s wrote no samples of the work (exit status %d): %s" % (
                variant.name, status, stderr.strip()[-300:]), file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def lag(runs):
    """What a tool says of its own lag over some runs: spprof counts samples
    taken more than half a period late and the deadlines it skipped for
    being later still (median shares of the samples asked for);
    py-spy warns when it is more than a second behind (in how many runs).
    And in how many runs the harness had to stop a profiler that starved
    its target."""
    late = [r["late"] for r in runs if r.get("late") is not None]
    behind = sum(bool(r.get("behind")) for r in runs)
    starved = sum(bool(r.get("starved")) for r in runs)
    missed = [r["missed"] for r in runs if r.get("missed") is not None]
    said = ["late %.1f %%" % (100 * common.med(late))] if late else []
    said += ["missed %.1f %%" % (100 * common.med(missed))] if missed else []
    said += ["behind in %d/%d" % (behind, len(runs))] if behind else []
    said += ["target starved, profiler stopped after %d s in %d/%d" % (STARVED_S, starved, len(runs))] if starved else []
    return "; ".join(said)

"""What the benchmarks share: the machine's description, the tools they
compare against (installed from PyPI into their own venv, never by hand),
the spprof command built from this tree, and median/min-max formatting."""

import os
import platform
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".cache", "bench-venv")

# Pinned so that runs compare like with like; issue #5 adds austin-dist==3.7.0,
# pyinstrument and yappi here.
PEERS = {"py-spy": "py-spy==0.4.3"}


def peer_tool(name):
    """Path of a peer's command, installed into .cache/bench-venv on first use."""
    exe = os.path.join(VENV, "bin", name)
    if not os.path.exists(exe):
        if not os.path.exists(os.path.join(VENV, "bin", "python")):
            subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([os.path.join(VENV, "bin", "python"), "-m", "pip", "install", "-q", PEERS[name]])
    return exe


def spprof_cli(path=None):
    """The spprof command: the one given, $SPPROF_CLI, or built from this
    tree (release, -Dwerror=true) the way the test runner builds it."""
    path = path or os.environ.get("SPPROF_CLI")
    if path:
        return path
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from run_tests import build_cli
    built = build_cli()
    if not built:
        sys.exit("bench: could not build the spprof command with meson and ninja")
    return built


def kernel_hz():
    """CONFIG_HZ, measured: a CPU-time interval timer asked for 1 ms expires
    once per scheduler tick."""
    fired = [0]
    old = signal.signal(signal.SIGPROF, lambda *a: fired.__setitem__(0, fired[0] + 1))
    signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)
    t0 = time.process_time()
    while time.process_time() - t0 < 0.4:
        sum(range(1000))
    signal.setitimer(signal.ITIMER_PROF, 0, 0)
    signal.signal(signal.SIGPROF, old)
    return fired[0] / (time.process_time() - t0)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine():
    return "%s, %d cores, Linux %s, kernel tick %.0f Hz (measured), CPython %s" % (
        cpu_model(), os.cpu_count(), platform.release(), kernel_hz(), platform.python_version())


def load():
    return "%.2f %.2f %.2f" % os.getloadavg()


def git_commit():
    try:
        return subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def med(values):
    return statistics.median(values) if values else float("nan")


def fmt_range(values, scale=1.0, fmt="%.1f"):
    """median (min-max)"""
    if not values:
        return "-"
    f = lambda v: fmt % (v * scale)
    return "%s (%s-%s)" % (f(med(values)), f(min(values)), f(max(values)))

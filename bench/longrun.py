#!/usr/bin/env python3
"""Long runs: memory of spprof over a long run at 1 kHz, in-process and out
of process, sampled every second.

Two targets run the `forever` workload of bench/workloads.py (json, re,
sqlite3 and recursion in a loop, printing their RSS every second) side by
side for --duration seconds: one with spprof in-process at 1 ms (started by
the target itself; it also prints the profile model's size from
spprof.stats()), one unprofiled with `spprof record -r 1000 --pid` attached,
whose RSS is read from /proc every second. The unprofiled target is the
reference for the profiled one's RSS. At the end both profiles are written
(the in-process one by the target, collapsed).

    python3 -m bench longrun [--duration 600] [--quick] [--write]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common, runner  # noqa: E402


def rss_mb(pid, field="VmRSS"):
    try:
        with open("/proc/%d/status" % pid) as f:
            return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024
    except (OSError, StopIteration):
        return None


def reader(proc, into):
    """Collects the target's lines of JSON (its RSS every second)."""
    for line in proc.stdout:
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if "t" in d:
            into.append(d)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    ap.add_argument("--rate", type=int, default=1000)
    args = common.parse(ap, "10 s", duration=10.0)
    spprof = common.spprof_cli()
    python = common.target_python()
    tmp = tempfile.mkdtemp(prefix="spprof-bench-")
    rep = common.Report("longrun", "Long run: spprof's memory over %.0f s at %d Hz" % (args.duration, args.rate),
                        sys.argv[1:])
    rep.p("Two targets running `bench/workloads.py forever` (json, re, sqlite3 and recursion in a loop) side by "
          "side: one with spprof in-process at %.0f ms, one unprofiled with `spprof record -r %d --pid` "
          "attached. RSS read every second (the targets' own VmRSS, the command's from /proc); the in-process "
          "model's size from `spprof.stats().memory_bytes`.\n" % (1000 / args.rate, args.rate))
    inproc = subprocess.Popen([python, runner.WORKLOADS, "forever", "1"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    plain = subprocess.Popen([python, runner.WORKLOADS, "forever", "1"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    for t in (inproc, plain):
        assert t.stdout.readline().strip() == "ready"
    rec_out = os.path.join(tmp, "record.txt")
    rec = subprocess.Popen([spprof, "record", "--pid", str(plain.pid), "-r", str(args.rate), "-f", "collapsed",
                            "-o", rec_out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = {"inproc": [], "plain": []}
    threads = [threading.Thread(target=reader, args=(inproc, lines["inproc"]), daemon=True),
               threading.Thread(target=reader, args=(plain, lines["plain"]), daemon=True)]
    for t in threads:
        t.start()
    inproc.stdin.write("go spprof %d %s\n" % (max(1, round(1000 / args.rate)), os.path.join(tmp, "inproc.txt")))
    plain.stdin.write("go\n")
    for t in (inproc, plain):
        t.stdin.flush()
    rec_rss = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.duration:
        time.sleep(1.0)
        rec_rss.append((time.monotonic() - t0, rss_mb(rec.pid)))
    rec_hwm = rss_mb(rec.pid, "VmHWM")
    for t in (inproc, plain):
        t.stdin.write("stop\n")
        t.stdin.flush()
    inproc.wait()
    plain.wait()
    for t in threads:
        t.join(5)
    rec_err = rec.communicate(timeout=120)[1]
    shutil.rmtree(tmp, ignore_errors=True)

    ip, pl = lines["inproc"], lines["plain"]
    if not ip or not pl:
        sys.exit("bench: the targets printed no RSS (in-process: %d lines, unprofiled: %d)" % (len(ip), len(pl)))
    n = min(len(ip), len(pl), len(rec_rss))
    marks = sorted({int(n * k / 10) for k in range(1, 11)} - {0})
    rep.p("| time | target with spprof in-process | its profile model | unprofiled target | spprof record |")
    rep.p("|---|---|---|---|---|")
    for i in marks:
        a, b, (_, c) = ip[i - 1], pl[i - 1], rec_rss[i - 1]
        rep.p("| %.0f s | %.1f MB | %s | %.1f MB | %s |" % (
            a["t"], a["rss_kb"] / 1024, "%.2f MB" % (a["spprof_bytes"] / 1e6) if "spprof_bytes" in a else "-",
            b["rss_kb"] / 1024, "%.1f MB" % c if c is not None else "-"))
    rep.p("")

    def growth(values):
        vals = [v for v in values if v is not None]
        half = vals[len(vals) // 2:]
        return (half[-1] - half[0]) if len(half) > 1 else float("nan")
    extra = [a["rss_kb"] / 1024 - b["rss_kb"] / 1024 for a, b in zip(ip[:n], pl[:n])]
    rep.p("- in-process: the profiled target's RSS minus the unprofiled one's, at the end %.1f MB; it grew by "
          "%+.1f MB over the second half" % (extra[-1], growth(extra)))
    rep.p("- spprof record: RSS at the end %.1f MB, peak %s MB, grew by %+.1f MB over the second half; its last "
          "line: %s" % (rec_rss[n - 1][1] or float("nan"), "%.1f" % rec_hwm if rec_hwm else "?",
                        growth([r for _, r in rec_rss]), rec_err.strip().splitlines()[-1] if rec_err.strip() else "-"))
    rep.p("")
    rep.plot(args.write, "RSS over time", kind="lines",
             series=[{"label": "target with spprof in-process", "x": [a["t"] for a in ip[:n]],
                      "y": [a["rss_kb"] / 1024 for a in ip[:n]]},
                     {"label": "unprofiled target (spprof record attached)", "x": [b["t"] for b in pl[:n]],
                      "y": [b["rss_kb"] / 1024 for b in pl[:n]]},
                     {"label": "spprof record", "x": [t for t, _ in rec_rss[:n]],
                      "y": [r or 0 for _, r in rec_rss[:n]]}],
             title="RSS over a %.0f s run at %d Hz" % (args.duration, args.rate), xlabel="seconds", ylabel="MB")
    rep.end(args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

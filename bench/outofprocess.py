#!/usr/bin/env python3
"""Out-of-process profilers side by side: `spprof record` against
`py-spy record` (from PyPI), same targets, same rates, blocking and
--nonblocking.

Each run starts a target from bench/workloads.py (a fixed amount of work,
begun when the harness says go and timed by the target itself), attaches the
profiler with --pid, waits for it to settle, says go, and when the target has
exited and the profiler has written its file, collects:

- target slowdown: the target's wall and CPU time for the work, over those of
  the run without a profiler in the same round;
- profiler CPU per sample: the profiler's CPU time from go to its exit
  (wait4 rusage minus /proc/PID/stat at go; so its start-up and attach are
  left out, its writing of the output is in) over the samples in its output
  (collapsed / raw counts summed);
- rate fidelity: samples obtained over rate x the work's wall time (on the
  one-thread target, one sample per tick); the highest sustained rate is the
  highest step where that is >= 99 %, every lower step passing too; what each
  tool says of its own lag is shown beside it;
- peak RSS of the profiler (wait4 ru_maxrss).

Variants alternate run by run, rotating which goes first each round
(bench notes: this machine drifts by up to 30 % between runs).

    python3 bench/outofprocess.py [--rounds 5] [--work 2] [--rates 100,1000]
                                  [--sweep 100,200,...] [--write]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = os.path.join(HERE, "workloads.py")
SETTLE = 1.0  # seconds between starting the profiler and go: attach, first samples
CLK_TCK = os.sysconf("SC_CLK_TCK")
TIME = "/usr/bin/time"


def proc_cpu(pid):
    """utime + stime of every thread of pid, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def count_samples(path):
    """Sums the counts of a collapsed (spprof) or raw (py-spy) file: all of
    them, and those inside the timed work (a stack through `chunk`, which
    leaves out the waits before and the interpreter's exit after)."""
    total = work = 0
    try:
        with open(path) as f:
            for line in f:
                head, _, n = line.rstrip("\n").rpartition(" ")
                if head and n.isdigit():
                    total += int(n)
                    work += int(n) if re.search(r"(^|;)chunk \(", head) else 0
    except OSError:
        pass
    return total, work


class Variant:
    def __init__(self, tool, nonblocking):
        self.tool, self.nonblocking = tool, nonblocking
        self.name = "none" if tool is None else tool + (" --nonblocking" if nonblocking else "")

    def command(self, exe, pid, rate, out):
        if self.tool is None:
            return None
        fmt = "collapsed" if self.tool == "spprof" else "raw"
        cmd = [exe[self.tool], "record", "--pid", str(pid), "-r", str(rate), "-f", fmt, "-o", out]
        return cmd + (["--nonblocking"] if self.nonblocking else [])



def lag(runs):
    """What a tool says of its own lag over some runs: spprof counts samples
    taken more than half a period late (median share of those asked for);
    py-spy warns when it is more than a second behind (in how many runs)."""
    late = [r["late"] for r in runs if r["late"] is not None]
    if late:
        return "late %.1f %%" % (100 * common.med(late))
    behind = sum(r["behind"] for r in runs)
    return "behind in %d/%d" % (behind, len(runs)) if behind else ""


def run_once(variant, exe, workload, amount, rate):
    target = subprocess.Popen([sys.executable, WORKLOADS, workload, str(amount)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert target.stdout.readline().strip() == "ready"
    tmp = tempfile.mkdtemp(prefix="spprof-bench-")
    out, err_path, rss_path = (os.path.join(tmp, n) for n in ("profile.txt", "stderr", "rss"))
    cmd = variant.command(exe, target.pid, rate, out)
    prof = None
    if cmd:
        # GNU time forks the profiler from a small process: the peak RSS
        # that wait4 reports for a child forked from this Python would be
        # at least this Python's own.
        cmd = [TIME, "-f", "%M", "-o", rss_path] + cmd
        with open(err_path, "w") as err:
            prof = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    time.sleep(SETTLE)
    cpu0 = 0.0
    if prof:
        with open("/proc/%d/task/%d/children" % (prof.pid, prof.pid)) as f:
            cpu0 = proc_cpu(int(f.read().split()[0]))
    target.stdin.write("\n")
    target.stdin.flush()
    wall, cpu = map(float, target.stdout.readline().split())
    target.wait()
    res = {"wall": wall, "cpu": cpu}
    if prof:
        killer = threading.Timer(60, prof.kill)  # a profiler that does not notice the exit
        killer.start()
        _, status, ru = os.wait4(prof.pid, 0)
        killer.cancel()
        prof.returncode = status
        with open(err_path) as f:
            stderr = f.read()
        with open(rss_path) as f:
            rss_kb = int(f.read().split()[-1])
        samples, work = count_samples(out)
        expected = rate * wall
        m = re.search(r"(\d+) late\)", stderr)
        # (wait4 of time: the profiler's CPU and time's own, which is nil)
        res.update(samples=samples, work_samples=work, prof_cpu=ru.ru_utime + ru.ru_stime - cpu0,
                   rss_mb=rss_kb / 1024, obtained=work / expected,
                   late=int(m.group(1)) / expected if m else None, behind="behind" in stderr)
        if samples == 0:
            print("  warning: %s wrote no samples (exit status %d): %s" % (variant.name, status, stderr.strip()[-300:]),
                  file=sys.stderr)
    for name in os.listdir(tmp):
        os.unlink(os.path.join(tmp, name))
    os.rmdir(tmp)
    return res


def rounds(variants, rounds, fn):
    """fn(variant) for every variant, `rounds` times, rotating the order."""
    results = {v.name: [] for v in variants}
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            results[v.name].append(fn(v))
    return results


def side_by_side(variants, exe, workload, amount, rate, n):
    print("  %s at %d Hz, %d rounds ..." % (workload, rate, n), file=sys.stderr, flush=True)
    res = rounds(variants, n, lambda v: run_once(v, exe, workload, amount, rate))
    # Per round ratios against the unprofiled run of the same round.
    base = res["none"]
    rows = {}
    for v in variants[1:]:
        rs = res[v.name]
        rows[v.name] = {
            "wall": [r["wall"] / b["wall"] for r, b in zip(rs, base)],
            "cpu": [r["cpu"] / b["cpu"] for r, b in zip(rs, base)],
            "us_per_sample": [r["prof_cpu"] / r["work_samples"] * 1e6 for r in rs if r["work_samples"]],
            "obtained": [r["obtained"] for r in rs],
            "rss": [r["rss_mb"] for r in rs],
            "samples": [r["work_samples"] for r in rs],
            "lag": lag(rs),
        }
    return rows


def sweep(variants, exe, amount, rates, reps):
    """Highest step each variant sustains (median over reps of samples
    obtained >= 99 % of those asked for), stepping up until it fails."""
    highest = {v.name: None for v in variants}
    detail = {v.name: [] for v in variants}
    live = list(variants)
    for rate in rates:
        if not live:
            break
        print("  sweep at %d Hz: %s" % (rate, ", ".join(v.name for v in live)), file=sys.stderr, flush=True)
        res = rounds(live, reps, lambda v: run_once(v, exe, "recursion", amount, rate))
        for v in list(live):
            obtained = common.med([r["obtained"] for r in res[v.name]])
            ok = obtained >= 0.99
            detail[v.name].append((rate, obtained, lag(res[v.name]), ok))
            if ok:
                highest[v.name] = rate
            else:
                live.remove(v)
    return highest, detail


def verdict(ok):
    return "PASS" if ok else "FAIL"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per table (default 5)")
    ap.add_argument("--work", type=float, default=2.0, help="seconds of CPU of unprofiled work per run (default 2)")
    ap.add_argument("--rates", default="100,1000", help="rates of the side-by-side tables, Hz")
    ap.add_argument("--sweep", default="100,200,500,1000,2000,5000,10000,20000,50000",
                    help="rate steps for the highest sustained rate, Hz ('' to skip)")
    ap.add_argument("--sweep-reps", type=int, default=3, help="runs per variant and step (median)")
    ap.add_argument("--spprof", help="the spprof command (default: $SPPROF_CLI, else built from this tree)")
    ap.add_argument("--write", action="store_true", help="also write bench/RESULTS.md")
    args = ap.parse_args()

    if not os.path.exists(TIME):
        sys.exit("bench: %s is missing: install the Debian package 'time' (python3 tools/setup_deps.py)" % TIME)
    exe = {"spprof": common.spprof_cli(args.spprof), "py-spy": common.peer_tool("py-spy")}
    rss_floor = int(subprocess.run([TIME, "-f", "%M", "true"], capture_output=True, text=True).stderr.split()[-1])
    pyspy_version = subprocess.check_output([exe["py-spy"], "--version"], text=True).strip()
    variants = [Variant(None, False)] + [Variant(t, nb) for nb in (False, True) for t in ("spprof", "py-spy")]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = common.load()
    out = []
    p = out.append
    p("# Out-of-process: spprof record vs %s\n" % pyspy_version)
    p("Generated by `python3 bench/outofprocess.py %s` at %s, spprof commit %s." % (
        " ".join(sys.argv[1:]), started, common.git_commit()))
    p("Machine: %s. Load average (1/5/15 min) at the start: %s.\n" % (common.machine(), load_before))
    p("Each run: the target from `bench/workloads.py` (about %.1f s of CPU of work unprofiled) is attached to with "
      "`--pid`, left %.1f s to settle, then told to start; %d rounds per table, the variants alternating "
      "with the first one rotating every round. Figures are median (min-max) over the rounds. Ratios are "
      "against the unprofiled run of the same round. Profiler CPU counts from the go to the profiler's exit "
      "(writing its output included); samples are those of the timed work in its output (stacks through "
      "the workload's `chunk`, in spprof `-f collapsed` and py-spy `-f raw`; idle threads left out, both "
      "tools' default). Peak RSS is GNU time's %%M of the profiler, "
      "whose floor here (`time true`) is %.1f MB.\n" % (args.work, SETTLE, args.rounds, rss_floor / 1024))
    print("\n".join(out), flush=True)

    amounts = {w: int(subprocess.check_output([sys.executable, WORKLOADS, w, "--calibrate", str(args.work)]))
               for w in ("recursion", "threads")}
    cpu_ok = {}
    for rate in [int(r) for r in args.rates.split(",") if r]:
        for workload, label in (("recursion", "pure-Python recursion, 1 thread"),
                                ("threads", "the same work over 10 threads")):
            rows = side_by_side(variants, exe, workload, amounts[workload], rate, args.rounds)
            first = len(out)
            p("## %s, %d Hz\n" % (label, rate))
            p("| profiler | target wall | target CPU | profiler CPU per sample | samples obtained / asked | "
              "samples | lag it reports | profiler peak RSS |")
            p("|---|---|---|---|---|---|---|---|")
            for name, r in rows.items():
                p("| %s | %s× | %s× | %s µs | %s | %s | %s | %s MB |" % (
                    name, common.fmt_range(r["wall"], fmt="%.2f"), common.fmt_range(r["cpu"], fmt="%.2f"),
                    common.fmt_range(r["us_per_sample"], fmt="%.0f"),
                    common.fmt_range(r["obtained"], 100) + " %" if workload == "recursion" else "n/a (10 threads)",
                    "%.0f" % common.med(r["samples"]), r["lag"] or "-", common.fmt_range(r["rss"])))
            p("")
            for nb in ("", " --nonblocking"):
                s, y = common.med(rows["spprof" + nb]["us_per_sample"]), common.med(rows["py-spy" + nb]["us_per_sample"])
                cpu_ok[(workload, rate, nb)] = (s, y, s <= y / 2)
                p("- profiler CPU per sample, spprof%s %.0f µs vs py-spy%s %.0f µs (%.2f of it; target ≤ 0.5): **%s**" % (
                    nb, s, nb, y, s / y if y else float("nan"), verdict(s <= y / 2)))
            p("")
            print("\n".join(out[first:]), flush=True)

    rates = [int(r) for r in args.sweep.split(",") if r]
    if rates:
        highest, detail = sweep(variants[1:], exe, amounts["recursion"], rates, args.sweep_reps)
        first = len(out)
        p("## Highest sustained rate (pure-Python recursion, 1 thread)\n")
        p("Steps %s Hz, %d runs per variant and step; a step passes when the median of samples obtained "
          "is ≥ 99 %% of rate × the work's wall time. A variant stops at its first failing step. In brackets, "
          "what the tool says of its own lag: spprof counts samples taken more than half a period late "
          "(as a share of those asked for; a late sample is still taken, and weighted by the time it "
          "stands for), py-spy warns when it is more than a second behind.\n" % (
              ", ".join(map(str, rates)), args.sweep_reps))
        p("| profiler | " + " | ".join("%d Hz" % r for r in rates) + " | highest sustained |")
        p("|---|" + "---|" * len(rates) + "---|")
        for v in variants[1:]:
            cells = {rate: "%.1f %%%s%s" % (o * 100, " (%s)" % lag if lag else "", "" if ok else " ✗")
                     for rate, o, lag, ok in detail[v.name]}
            p("| %s | %s | %s |" % (v.name, " | ".join(cells.get(r, "") for r in rates),
                                    "%s Hz" % highest[v.name] if highest[v.name] else "below %d Hz" % rates[0]))
        p("")
        for nb in ("", " --nonblocking"):
            s, y = highest["spprof" + nb] or 0, highest["py-spy" + nb] or 0
            top = s == rates[-1]
            ok = s >= 2 * y
            p("- highest sustained rate, spprof%s %s Hz vs py-spy%s %s Hz (target ≥ 2×): **%s**%s" % (
                nb, s, nb, y, verdict(ok), " (spprof passed every step: the sweep's top bounds it)" if top else ""))
        p("")
        print("\n".join(out[first:]), flush=True)

    p("Load average (1/5/15 min) at the end: %s." % common.load())
    print(out[-1])
    if args.write:
        with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
            f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

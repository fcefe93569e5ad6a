#!/usr/bin/env python3
#!/usr/bin/env python3
"""Out-of-process profilers side by side: `spprof record` against
`py-spy record` (blocking and --nonblocking) and austin 3.7.0 (from PyPI),
same targets, same rates; and against CPython 3.15's Tachyon
(`profiling.sampling attach`, blocking and not) on a 3.15 target when one is
cached (tools/build_pythons.py).

Runs go through bench/runner.py (see there what is collected and how). From
them:

- profiler CPU per sample: its CPU from go to exit over the samples of the
  timed work in its output;
- rate fidelity: samples obtained over rate x the work's wall time (on the
  one-thread target, one sample per tick); the highest sustained rate is the
  highest step where that is >= 99 % less the counting noise of a random
  sampler (sweep_floor) and, for spprof, its late and missed samples are
  under 1 %, every lower step passing too; what each tool says of its own
  lag is shown beside it;
- peak RSS of the profiler, also on a 50-thread target (target: <= 20 MB);
- target slowdown against the unprofiled run of the same round.

Variants alternate run by run, rotating which goes first each round.

    python3 -m bench outofprocess [--rounds 5] [--work 2] [--rates 100,1000]
                                  [--sweep 100,200,...] [--quick] [--write]
"""


import argparse
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common, runner  # noqa: E402
from bench.common import verdict  # noqa: E402
from bench.runner import Variant, lag  # noqa: E402

def variants_at(rate, py315=False):
    """The out-of-process variants at one rate; with py315, those that
    profile a CPython 3.15 target (Tachyon's only)."""
    if py315:
        return [Variant("spprof", "spprof", rate), Variant("tachyon", "tachyon", rate),
                Variant("tachyon --blocking", "tachyon", rate, ["--blocking"])]
    return [Variant("spprof", "spprof", rate), Variant("py-spy", "py-spy", rate),
            Variant("spprof --nonblocking", "spprof", rate, ["--nonblocking"]),
            Variant("py-spy --nonblocking", "py-spy", rate, ["--nonblocking"]), Variant("austin", "austin", rate)]


def side_by_side(variants, exe, workload, amount, python, n, settle):
    print("  %s, %d rounds ..." % (workload, n), file=sys.stderr, flush=True)
    res = common.alternate(variants, n, lambda v: runner.run_once(v, exe, workload, amount, python, settle=settle))
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


# The standard deviation of the median of n normal samples, in units of
# theirs (1 and 2 samples: the mean's; 3: 0.670; beyond, the large-n value
# sqrt(pi / 2n), 0.56 at 5, a few % over the exact one).
MEDIAN_SD = {1: 1.0, 2: math.sqrt(0.5), 3: 0.670}


def median_sd(reps):
    return MEDIAN_SD.get(reps, math.sqrt(math.pi / (2 * reps)))


def sweep_floor(asked, reps):
    """The share of samples obtained that a sweep step asks of the median of
    reps runs, each asking for `asked`: 99 % less three times the noise of
    that median for a Poisson count (a run's relative noise 1/sqrt(asked)).
    Three, not two: a tool passes up to 8 steps before its limit, and at
    two a step failed by noise alone once in 44, the sweep once in 6."""
    return 0.99 - 3 * median_sd(reps) / math.sqrt(asked) if asked > 0 else 0.99


def sweep(tools, exe, amount, python, rates, reps, settle):
    """Highest step each variant sustains, stepping up until it fails: the
    median over reps of samples obtained is >= 99 % of those asked for, less
    three times the counting noise of that median for a sampler whose
    intervals are random (sweep_floor), and, for a tool that says how far
    behind it fell (spprof: the samples it took late and the deadlines it
    skipped), the median share late or missed is < 1 %. py-spy says nothing
    of it: for py-spy only the first condition can be asked. The noise:
    py-spy draws its intervals from an exponential distribution, so the
    samples it takes in a run that asks for N vary as a Poisson count, by
    sqrt(N): 7 % at 200 (100 Hz, 2 s), and the bare 99 % rule passed it at
    5 kHz in one run and failed it at 100 Hz in the next. spprof's
    intervals vary by a quarter of a period at most, its counts by far
    less; the same allowance is given to every tool, and what spprof says
    of its lag holds it to 1 %."""
    highest = {v.name: None for v in tools}
    detail = {v.name: [] for v in tools}
    live = [v.name for v in tools]
    for rate in rates:
        if not live:
            break
        print("  sweep at %d Hz: %s" % (rate, ", ".join(live)), file=sys.stderr, flush=True)
        vs = [v for v in variants_at(rate) if v.name in live]
        res = common.alternate(vs, reps, lambda v: runner.run_once(v, exe, "recursion", amount, python,
                                                                   settle=settle))
        for v in vs:
            obtained = common.med([r["obtained"] for r in res[v.name]])
            behind = [r["late"] + (r.get("missed") or 0) for r in res[v.name] if r.get("late") is not None]
            asked = common.med([rate * r["wall"] for r in res[v.name]])
            ok = obtained >= sweep_floor(asked, len(res[v.name])) and (not behind or common.med(behind) < 0.01)
            # What the rate cost the target: its wall time over its CPU time
            # (1.00 unprofiled: the work is one CPU-bound thread), which
            # grows as a blocking profiler keeps it paused.
            stretch = common.med([r["wall"] / r["cpu"] for r in res[v.name]])
            detail[v.name].append((rate, obtained, lag(res[v.name]), stretch, ok))
            if ok:
                highest[v.name] = rate
            else:
                live.remove(v.name)
    return highest, detail


def cost_table(rep, rows, tools):
    rep.p("| profiler | target wall | target CPU | profiler CPU per sample | samples obtained / asked | "
          "samples | lag it reports | profiler peak RSS |")
    rep.p("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        rep.p("| %s | %s× | %s× | %s µs | %s | %s | %s | %s MB |" % (
            name, common.fmt_range(r["wall"], fmt="%.2f"), common.fmt_range(r["cpu"], fmt="%.2f"),
            common.fmt_range(r["us_per_sample"], fmt="%.0f"),
            common.fmt_range(r["obtained"], 100) + " %" if tools else "n/a (several threads)",
            "%.0f" % common.med(r["samples"]), r["lag"] or "-", common.fmt_range(r["rss"])))
    rep.p("")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per table (default 5)")
    ap.add_argument("--work", type=float, default=2.0, help="seconds of CPU of unprofiled work per run (default 2)")
    ap.add_argument("--rates", default="100,1000", help="rates of the side-by-side tables, Hz")
    ap.add_argument("--sweep", default="100,200,500,1000,2000,5000,10000,20000,50000",
                    help="rate steps for the highest sustained rate, Hz ('' to skip)")
    ap.add_argument("--sweep-reps", type=int, default=3, help="runs per variant and step (median)")
    ap.add_argument("--rss-rate", type=int, default=1000, help="rate of the 50-thread RSS table, Hz")
    ap.add_argument("--spprof", help="the spprof command (default: $SPPROF_CLI, else built from this tree)")
    args = common.parse(ap, "1 round, 0.3 s of work, short sweep", rounds=1, work=0.3, rates="1000",
                        sweep="1000,5000", sweep_reps=1)
    if args.spprof:
        os.environ["SPPROF_CLI"] = args.spprof
    exe, python, settle = runner.setup(args)
    rss_floor = int(subprocess.run([runner.TIME, "-f", "%M", "true"], capture_output=True, text=True).stderr.split()[-1])
    pyspy_version = subprocess.check_output([exe["py-spy"], "--version"], text=True).strip()
    rep = common.Report("outofprocess", "Out-of-process: spprof record vs %s, austin 3.7.0%s" % (
        pyspy_version, " and Tachyon (CPython 3.15)" if "tachyon" in exe else ""), sys.argv[1:])
    rep.p("Each run: the target from `bench/workloads.py` (about %.1f s of CPU of work unprofiled) is attached to "
          "with its PID, left %.1f s to settle, then told to start; %d rounds per table, the variants alternating "
          "with the first one rotating every round. Figures are median (min-max) over the rounds. Ratios are "
          "against the unprofiled run of the same round. Profiler CPU counts from the go to the profiler's exit "
          "(writing its output included); samples are those of the timed work in its output (stacks through "
          "the workload's `chunk`, in spprof `-f collapsed`, py-spy `-f raw`, austin's and Tachyon's "
          "collapsed stacks; idle threads left out, the tools' default, austin with `-s`). Peak RSS is GNU "
          "time's %%M of the profiler, whose floor here (`time true`) is %.1f MB.\n" % (
              args.work, settle, args.rounds, rss_floor / 1024))

    amounts = {w: runner.calibrate(w, args.work, python) for w in ("recursion", "threads", "threads50")}
    none = Variant("none")
    cpu_ok = {}
    for rate in [int(r) for r in args.rates.split(",") if r]:
        for workload, label in (("recursion", "pure-Python recursion, 1 thread"),
                                ("threads", "the same work over 10 threads")):
            rows = side_by_side([none] + variants_at(rate), exe, workload, amounts[workload], python,
                                args.rounds, settle)
            rep.p("## %s, %d Hz\n" % (label, rate))
            cost_table(rep, rows, workload == "recursion")
            for nb in ("", " --nonblocking"):
                s, y = common.med(rows["spprof" + nb]["us_per_sample"]), common.med(rows["py-spy" + nb]["us_per_sample"])
                cpu_ok[(workload, rate, nb)] = s <= y / 2
                rep.p("- profiler CPU per sample, spprof%s %.0f µs vs py-spy%s %.0f µs (%.2f of it; target ≤ 0.5): "
                      "**%s**" % (nb, s, nb, y, s / y if y else float("nan"), verdict(s <= y / 2)))
            rep.p("")
        if "tachyon" in exe:
            py315 = exe["tachyon"]
            amount = runner.calibrate("recursion", args.work, py315)
            vs = [Variant("none", python=py315)] + [
                Variant(v.name, v.tool, v.rate, v.flags, python=py315) for v in variants_at(rate, py315=True)]
            rows = side_by_side(vs, exe, "recursion", amount, py315, args.rounds, settle)
            rep.p("## pure-Python recursion on CPython 3.15, 1 thread, %d Hz: spprof vs Tachyon\n" % rate)
            cost_table(rep, rows, True)

    # Peak RSS on a 50-thread target.
    rows = side_by_side([none] + variants_at(args.rss_rate), exe, "threads50", amounts["threads50"], python,
                        args.rounds, settle)
    rep.p("## the same work over 50 threads, %d Hz: profiler peak RSS\n" % args.rss_rate)
    cost_table(rep, rows, False)
    rss = common.med(rows["spprof"]["rss"])
    rep.p("- spprof record peak RSS on a 50-thread target %.1f MB (target ≤ 20 MB): **%s**\n" % (
        rss, verdict(rss <= 20)))

    rates = [int(r) for r in args.sweep.split(",") if r]
    if rates:
        highest, detail = sweep(variants_at(rates[0]), exe, amounts["recursion"], python, rates, args.sweep_reps,
                                settle)
        rep.p("## Highest sustained rate (pure-Python recursion, 1 thread)\n")
        rep.p("Steps %s Hz, %d runs per variant and step; a step passes when the median of samples obtained "
              "is ≥ 99 %% of rate × the work's wall time (N asked) less three times the noise of a median of "
              "the runs' counts for a sampler whose intervals are random, 3 × %.2f/√N (py-spy's intervals are "
              "exponential: its count in a run varies by √N, 7 %% at 200 asked, 1 %% at 10,000; the same "
              "allowance for every tool: %.1f %% at 200 asked, %.1f %% at 10,000) and, for a tool that counts "
              "its lag, the median share of samples late or skipped is under 1 %%. A variant stops at its "
              "first failing step. In brackets, what the tool says of its own lag: spprof counts samples "
              "taken more than half a period late (a late sample is still taken, and weighted by the time it "
              "stands for) and the deadlines it skipped for being later still (missed; py-spy takes those at "
              "once, back to back), as shares of the samples asked for; py-spy warns when it is more than a "
              "second behind; and the target's wall time over its CPU time (its own, for the work; 1.00× "
              "unprofiled), which grows as a blocking profiler keeps the target paused.\n" % (
                  ", ".join(map(str, rates)), args.sweep_reps, median_sd(args.sweep_reps),
                  100 * sweep_floor(200, args.sweep_reps), 100 * sweep_floor(10000, args.sweep_reps)))
        rep.p("| profiler | " + " | ".join("%d Hz" % r for r in rates) + " | highest sustained |")
        rep.p("|---|" + "---|" * len(rates) + "---|")
        for name in highest:
            cells = {rate: "%.1f %% (%s%s×)%s" % (o * 100, lg + ", " if lg else "", "%.2f" % st, "" if ok else " ✗")
                     for rate, o, lg, st, ok in detail[name]}
            rep.p("| %s | %s | %s |" % (name, " | ".join(cells.get(r, "") for r in rates),
                                        "%s Hz" % highest[name] if highest[name] else "below %d Hz" % rates[0]))
        rep.p("")
        for nb in ("", " --nonblocking"):
            s, y = highest["spprof" + nb] or 0, highest["py-spy" + nb] or 0
            top = s == rates[-1]
            rep.p("- highest sustained rate, spprof%s %s Hz vs py-spy%s %s Hz (target ≥ 2×): **%s**%s" % (
                nb, s, nb, y, verdict(s >= 2 * y and s > 0),
                " (spprof passed every step: the sweep's top bounds it)" if top else ""))
        rep.p("")
    rep.end(args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

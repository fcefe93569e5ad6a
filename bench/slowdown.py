#!/usr/bin/env python3
"""Target slowdown, wall and CPU, under every profiler, on three workloads:
pure-Python recursion, a mixed standard-library workload (json, re,
sqlite3) and 10 threads (bench/workloads.py).

Variants: no profiler (a run before every 3 others, each profiled run
compared with the ones beside it); spprof in-process at 1, 10 and 100 ms;
spprof record and py-spy record at 100 Hz and 1 kHz, each blocking and
--nonblocking; austin 3.7.0 at the same rates; pyinstrument
(1 ms); yappi (CPU clock); and on a CPython 3.15 target, when one is cached, Tachyon
(`profiling.sampling attach`) at 100 Hz and 1 kHz beside spprof record and
no profiler on the same interpreter. In-process profilers are started by
the target itself (bench/workloads.py), so every variant runs with the same
argv and environment. Every run goes through bench/runner.py; variants
alternate run by run with the first one rotating every round; a ratio is
against the unprofiled runs just before and after it, interpolated to its
place between them; median (min-max) over rounds.

Whole-process timings on this kind of machine vary by ±15 % from run to
run, so this table ranks the tools; the in-process targets (≤ 2 % at 1 ms,
≤ 1 % at 10 ms) are judged here on the median wall and CPU ratios of the
recursion workload, for the default clock and the nonblocking one (whose
CPU includes its polling thread's, paid on the other CPU), and measured
more finely by `python3 -m bench overhead` (paired chunks in one process).

    python3 -m bench slowdown [--rounds 5] [--work 2] [--quick] [--write]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common, runner  # noqa: E402
from bench.common import verdict  # noqa: E402
from bench.runner import Variant  # noqa: E402

WORKLOADS = (("recursion", "pure-Python recursion, 1 thread"), ("mixed", "json, re and sqlite3, 1 thread"),
             ("threads", "pure-Python recursion over 10 threads"))


def with_baselines(name, vs, every, python=None):
    """vs with an unprofiled run before every `every` of them ("name",
    "name #2", ...): each profiled run is compared with the unprofiled runs
    nearest it in time, this machine drifting by up to 30 % between runs
    a minute apart."""
    out = []
    for i, v in enumerate(vs):
        if i % every == 0:
            out.append(Variant(name if i == 0 else "%s #%d" % (name, i // every + 1), python=python))
        out.append(v)
    return out


def variants(python315=None):
    vs = [Variant("spprof in-process %d ms" % ms, inproc=("spprof", ms)) for ms in (1, 10, 100)]
    vs += [Variant("spprof in-process %d ms nonblocking" % ms, inproc=("spprof", ms),
                   env={"SPPROF_CLOCK": "nonblocking"}) for ms in (1, 10)]
    for rate in (100, 1000):
        vs += [Variant("spprof record %d Hz" % rate, "spprof", rate),
               Variant("spprof record --nonblocking %d Hz" % rate, "spprof", rate, ["--nonblocking"]),
               Variant("py-spy %d Hz" % rate, "py-spy", rate),
               Variant("py-spy --nonblocking %d Hz" % rate, "py-spy", rate, ["--nonblocking"]),
               Variant("austin %d Hz" % rate, "austin", rate)]
    vs += [Variant("pyinstrument 1 ms", inproc=("pyinstrument", 1)), Variant("yappi (CPU clock)", inproc=("yappi", 0))]
    vs = with_baselines("none", vs, 3)
    if python315:
        vs += with_baselines("none, CPython 3.15", [
            Variant("%s %d Hz, CPython 3.15" % (label, rate), tool, rate, python=python315)
            for rate in (100, 1000) for label, tool in (("spprof record", "spprof"), ("Tachyon", "tachyon"))],
            2, python=python315)
    return vs


def is_baseline(v):
    return v.tool is None and v.inproc is None


def baseline_ratios(vs, res, i, key):
    """Variant vs[i]'s `key` (wall, cpu) in each round over the unprofiled
    runs (on its interpreter) just before and just after it, interpolated
    to its place between them (a drift steady over the minute they span
    cancels out); the nearer one alone at the first or last run.
    common.alternate runs vs[(r + k) % n] k-th in round r."""
    n, v = len(vs), vs[i]
    when = lambda j, r: r * n + (j - r) % n
    bases = sorted((when(j, r), run[key]) for j, b in enumerate(vs) if is_baseline(b) and b.python == v.python
                   for r, run in enumerate(res[b.name]))
    out = []
    for r, run in enumerate(res[v.name]):
        t = when(i, r)
        before = [b for b in bases if b[0] < t]
        after = [b for b in bases if b[0] > t]
        if before and after:
            (tb, b), (ta, a) = before[-1], after[0]
            base = b + (a - b) * (t - tb) / (ta - tb)
        else:
            base = (before[-1] if before else after[0])[1]
        out.append(run[key] / base)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", type=float, default=2.0, help="seconds of CPU of unprofiled work per run")
    ap.add_argument("--workloads", default=",".join(w for w, _ in WORKLOADS))
    args = common.parse(ap, "1 round, 0.3 s of work, recursion only", rounds=1, work=0.3, workloads="recursion")
    exe, python, settle = runner.setup(args)
    vs = variants(exe.get("tachyon"))
    rep = common.Report("slowdown", "Target slowdown under each profiler", sys.argv[1:])
    rep.p("Each run: a target from `bench/workloads.py` (about %.1f s of CPU of work unprofiled, on CPython %s "
          "from the bench venv); out-of-process profilers attach %.1f s before the work starts, in-process ones "
          "are started by the target just before it. %d rounds of %d runs, the variants alternating with the "
          "first one rotating every round, an unprofiled run before every 3 of them (every 2 on CPython 3.15); "
          "a run's ratio is against the unprofiled runs just before and after it (on its own interpreter), "
          "interpolated to its place between them; median (min-max) over rounds. Target CPU is the whole "
          "process's (spprof's drain thread included). Samples: of the timed work, in the tool's output "
          "(pyinstrument: its own count; yappi traces every call).\n" % (
              args.work, common.python_version(python), settle, args.rounds, len(vs)))
    plot_groups, plot_series = [], {}
    inproc = {}
    for workload, label in WORKLOADS:
        if workload not in args.workloads.split(","):
            continue
        amounts = runner.amounts(workload, args.work, python, exe)
        print("  %s, %d rounds of %d variants ..." % (workload, args.rounds, len(vs)), file=sys.stderr, flush=True)
        res = common.alternate(vs, args.rounds, lambda v: runner.run_once(
            v, exe, workload, amounts[v.python or python], python, settle=settle))
        rep.p("## %s\n" % label)
        rep.p("| profiler | target wall | target CPU | samples of the work |")
        rep.p("|---|---|---|---|")
        plot_groups.append(workload)
        for i, v in enumerate(vs):
            if is_baseline(v):
                continue
            wall, cpu = baseline_ratios(vs, res, i, "wall"), baseline_ratios(vs, res, i, "cpu")
            samples = [r.get("work_samples") for r in res[v.name] if r.get("work_samples") is not None]
            rep.p("| %s | %s× | %s× | %s |" % (v.name, common.fmt_range(wall, fmt="%.2f"),
                                               common.fmt_range(cpu, fmt="%.2f"),
                                               "%.0f" % common.med(samples) if samples else "-"))
            plot_series.setdefault(v.name, []).append(common.med(cpu))
            if v.inproc and v.inproc[0] == "spprof" and workload == "recursion":
                inproc[v.inproc[1], v.env.get("SPPROF_CLOCK", "")] = (wall, cpu)
        rep.p("")
    for clock, label in (("", "the default clock"), ("nonblocking", "nonblocking")):
        for ms, limit in ((1, 2.0), (10, 1.0)):
            if (ms, clock) in inproc:
                judged = []
                for what, ratios in zip(("wall", "CPU"), inproc[ms, clock]):
                    over = (common.med(ratios) - 1) * 100
                    spans = (min(ratios) - 1) * 100 <= limit < (max(ratios) - 1) * 100
                    judged.append("target %s %+.1f %% **%s** (ratio %s%s)" % (
                        what, over, verdict(over <= limit), common.fmt_range(ratios, fmt="%.2f"),
                        "; the rounds span the target: these rounds cannot tell" if spans else ""))
                rep.p("- spprof in-process at %d ms, %s, on the recursion workload (target ≤ %.0f %%): %s; "
                      "target CPU includes spprof's own threads (see `python3 -m bench overhead` for the paired "
                      "measurement of the profiled thread alone)" % (ms, label, limit, "; ".join(judged)))
    rep.p("")
    if plot_groups:
        rep.plot(args.write, "target CPU slowdown", kind="bars", groups=plot_groups,
                 series=[{"label": k, "y": v} for k, v in plot_series.items()],
                 title="Target CPU slowdown (median over rounds)", ylabel="target CPU / unprofiled (log)",
                 hline=1, logy=True)
    rep.end(args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

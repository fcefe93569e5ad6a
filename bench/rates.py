#!/usr/bin/env python3
"""Rate fidelity: samples obtained against samples asked for at 100 Hz,
1 kHz, 5 kHz and 10 kHz, in-process and out-of-process, on the one-thread
pure-Python recursion (bench/workloads.py), through bench/runner.py.

Out-of-process tools (spprof record, py-spy, both blocking and
--nonblocking, austin 3.7.0, and Tachyon on a CPython 3.15 target when one
is cached) are asked for a wall-clock rate: asked = rate x the work's wall
time. spprof in-process samples CPU time: asked = rate x the target's CPU
time; its API takes an interval of 1 to 1000 ms, so 5 and 10 kHz are not
offered. Samples are those of the timed work (stacks through `chunk`). The
highest rate with >= 99 % obtained is compared with py-spy's (target: >= 2x).

    python3 -m bench rates [--rounds 3] [--work 2] [--asked 1000] [--quick] [--write]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common, runner  # noqa: E402
from bench.common import verdict  # noqa: E402
from bench.runner import Variant, lag  # noqa: E402

RATES = (100, 1000, 5000, 10000)


def variants_at(rate, py315):
    vs = [Variant("spprof record", "spprof", rate), Variant("spprof record --nonblocking", "spprof", rate, ["--nonblocking"]),
          Variant("py-spy", "py-spy", rate), Variant("py-spy --nonblocking", "py-spy", rate, ["--nonblocking"]),
          Variant("austin", "austin", rate)]
    if rate <= 1000 and 1000 % rate == 0:
        vs += runner.inproc_variants("spprof in-process", 1000 // rate, rate=rate)
    if py315:
        vs.append(Variant("Tachyon (CPython 3.15)", "tachyon", rate, python=py315))
    return vs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=float, default=2.0, help="seconds of CPU of unprofiled work per run")
    ap.add_argument("--rates", default=",".join(map(str, RATES)))
    # At 100 Hz, 2 s of work asks for 200 samples, and intervals jittered
    # by up to a quarter of a period either way (spprof's, against
    # aliasing) alone spread a count of n by 0.144/sqrt(n): 1.0 % at 200
    # (one standard deviation), as much as the 1 % a verdict tells apart.
    # Lower rates get longer work instead (0.46 % at 1,000).
    ap.add_argument("--asked", type=int, default=1000,
                    help="fewest samples asked for per run: the work is lengthened at low rates")
    args = common.parse(ap, "1 round, 0.3 s of work, 1 kHz and 10 kHz", rounds=1, work=0.3, rates="1000,10000",
                        asked=0)
    exe, python, settle = runner.setup(args)
    py315 = exe.get("tachyon")
    rates = [int(r) for r in args.rates.split(",") if r]
    amounts = runner.amounts("recursion", args.work, python, exe)
    rep = common.Report("rates", "Rate fidelity: samples obtained / asked", sys.argv[1:])

    def work_at(rate):
        return max(args.work, args.asked / rate)

    longer = ", ".join("%.0f s at %d Hz" % (work_at(r), r) for r in rates if work_at(r) > args.work)
    rep.p("The one-thread pure-Python recursion (about %.1f s of CPU of work%s, so that a run asks for at least "
          "%d samples), %d runs per tool and rate, the "
          "tools alternating; median (min-max) of samples of the work obtained over those asked for (rate × "
          "the work's wall time out of process; rate × its thread's CPU time in-process, "
          "where spprof samples CPU time). In brackets what the tool says of its own lag.\n" % (
              args.work, "; " + longer if longer else "", args.asked, args.rounds))
    cells, highest, series, inproc_res = {}, {}, {}, {}
    for rate in rates:
        vs = variants_at(rate, py315)
        scale = work_at(rate) / args.work
        print("  %d Hz: %d tools, %d rounds, %.1f s of work ..." % (rate, len(vs), args.rounds, work_at(rate)),
              file=sys.stderr, flush=True)
        res = common.alternate(vs, args.rounds, lambda v: runner.run_once(
            v, exe, "recursion", round(amounts[v.python or python] * scale), python, settle=settle))
        for v in vs:
            rs = res[v.name]
            if v.inproc:
                inproc_res.setdefault(v.name, []).extend(rs)
                # The main thread's CPU: the process's includes spprof's drain thread.
                obtained = [r["work_samples"] / (rate * r["thread_cpu"]) for r in rs]
            else:
                obtained = [r["obtained"] for r in rs]
            lg = lag(rs)
            cells.setdefault(v.name, {})[rate] = common.fmt_range(obtained, 100) + " %" + (" (%s)" % lg if lg else "")
            series.setdefault(v.name, []).append((rate, common.med(obtained) * 100))
            if common.med(obtained) >= 0.99 and highest.get(v.name, 0) == rate_below(rates, rate):
                highest[v.name] = rate
    rep.p("| tool | " + " | ".join("%d Hz" % r for r in rates) + " | highest rate with ≥ 99 % |")
    rep.p("|---|" + "---|" * len(rates) + "---|")
    for name, row in cells.items():
        rep.p("| %s | %s | %s |" % (name, " | ".join(row.get(r, "not offered") for r in rates),
                                    "%d Hz" % highest[name] if highest.get(name) else "below %d Hz" % rates[0]))
    rep.p("")
    rep.p(runner.clocks_used([v for v in variants_at(1000, None) if v.inproc], inproc_res))
    for nb in ("", " --nonblocking"):
        s, y = highest.get("spprof record" + nb, 0), highest.get("py-spy" + nb, 0)
        rep.p("- highest rate with ≥ 99 %% obtained, spprof record%s %s Hz vs py-spy%s %s Hz (target ≥ 2×): "
              "**%s**%s" % (nb, s, nb, y, verdict(s >= 2 * y and s > 0),
                            " (both at the top step: the steps bound it)" if s == y == rates[-1] else ""))
    for name in [v.name for v in runner.inproc_variants("spprof in-process", 1)]:
        if 1000 in rates and name in series:
            got = dict(series[name]).get(1000, 0)
            rep.p("- %s at 1 ms really takes 1,000 samples per CPU-second: %.1f %% (≥ 99 %%): **%s**" % (
                name, got, verdict(got >= 99)))
    rep.p("")
    rep.plot(args.write, "rate fidelity", kind="lines", logx=True,
             series=[{"label": k, "x": [x for x, _ in v], "y": [y for _, y in v], "marker": "o"}
                     for k, v in series.items()],
             title="Samples obtained / asked (median)", xlabel="rate asked for, Hz", ylabel="%")
    rep.end(args.write)
    return 0


def rate_below(rates, rate):
    """The step before rate (0 for the first): a tool's highest sustained
    rate counts only while every lower step passed too."""
    i = rates.index(rate)
    return rates[i - 1] if i else 0


if __name__ == "__main__":
    sys.exit(main())

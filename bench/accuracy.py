#!/usr/bin/env python3
"""Accuracy: the share of CPU each tool attributes to three functions whose
split is known, against the split measured inside the target with
time.thread_time() around every call.

The "split" workload of bench/workloads.py calls split_a, split_b and
split_c in turn (loops with no calls of about 1, 0.6 and 0.4 ms), one
thread, many times a second. A sampler's share of a function is its samples
whose stack holds it over the samples holding any of the three; pyinstrument
and yappi give times, shared the same way. The error of a run is the largest
of the three absolute differences, in percentage points. Target: <= 2 pp at
>= 1,000 samples. Counting alone moves a share by sqrt(p(1-p)/n): about 1 pp
at 2,000 samples, as much as the bias the target is there to find, so the
work is long enough for 8,000-12,000 at 1 kHz (0.5 pp).

    python3 -m bench accuracy [--rounds 3] [--work 10] [--quick] [--write]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common, runner  # noqa: E402
from bench.common import verdict  # noqa: E402
from bench.runner import Variant  # noqa: E402

FUNCS = ("split_a", "split_b", "split_c")
RATE = 1000


def variants(py315):
    vs = runner.inproc_variants("spprof in-process 1 ms", 1)
    vs += [Variant("spprof record 1 kHz", "spprof", RATE),
          Variant("spprof record --nonblocking 1 kHz", "spprof", RATE, ["--nonblocking"]),
          Variant("py-spy 1 kHz", "py-spy", RATE), Variant("py-spy --nonblocking 1 kHz", "py-spy", RATE, ["--nonblocking"]),
          Variant("austin 1 kHz", "austin", RATE), Variant("pyinstrument 1 ms", inproc=("pyinstrument", 1)),
          Variant("yappi (CPU clock)", inproc=("yappi", 0))]
    if py315:
        vs.append(Variant("Tachyon 1 kHz (CPython 3.15)", "tachyon", RATE, python=py315))
    return vs


def shares(values):
    total = sum(values.get(f, 0) for f in FUNCS)
    return {f: (values.get(f, 0) / total if total else float("nan")) for f in FUNCS}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=float, default=10.0, help="seconds of CPU of unprofiled work per run")
    args = common.parse(ap, "1 round, 0.3 s of work", rounds=1, work=0.3)
    exe, python, settle = runner.setup(args)
    vs = variants(exe.get("tachyon"))
    amounts = runner.amounts("split", args.work, python, exe)
    rep = common.Report("accuracy", "Accuracy: attributed shares against a known CPU split", sys.argv[1:])
    rep.p("The `split` workload (about %.1f s of CPU; one thread calling split_a, split_b and split_c in turn, "
          "loops of about 1, 0.6 and 0.4 ms), %d runs per tool, the tools alternating. Reference: each "
          "function's thread CPU time measured in the target around every call. A tool's share: samples "
          "whose stack holds the function over samples holding any of the three (times for pyinstrument "
          "and yappi). Error: the largest absolute difference of the three, percentage points; median "
          "(min-max) over runs.\n" % (args.work, args.rounds))
    print("  %d tools, %d rounds ..." % (len(vs), args.rounds), file=sys.stderr, flush=True)
    res = common.alternate(vs, args.rounds, lambda v: runner.run_once(
        v, exe, "split", amounts[v.python or python], python, watch=FUNCS, settle=settle))
    rep.p("| tool | samples in the three | shares a / b / c | reference a / b / c | error | target ≤ 2 pp |")
    rep.p("|---|---|---|---|---|---|")
    for v in vs:
        rows = []
        for r in res[v.name]:
            ref = shares(r.get("split", {}))
            got = shares(r["attributed"] if "attributed" in r else r.get("funcs", {}))
            n = sum(r.get("funcs", {}).get(f, 0) for f in FUNCS) if "attributed" not in r else r.get("samples")
            err = max(abs(got[f] - ref[f]) for f in FUNCS) * 100
            rows.append((n, got, ref, err))
        errs = [e for _, _, _, e in rows if e == e]
        ns = [n for n, _, _, _ in rows if n is not None]
        n = common.med(ns) if ns else None

        def fmt3(k):
            return " / ".join("%.1f" % (common.med([row[k][f] for row in rows]) * 100) for f in FUNCS)
        if v.inproc and v.inproc[0] == "yappi":
            judged = "n/a (traces every call)"
        elif n is None or n < 1000:
            judged = "n/a (< 1,000 samples)"
        else:
            judged = "**%s**" % verdict(common.med(errs) <= 2)
        rep.p("| %s | %s | %s %% | %s %% | %s pp | %s |" % (
            v.name, "%.0f" % n if n is not None else "-", fmt3(1), fmt3(2), common.fmt_range(errs, fmt="%.1f"),
            judged))
    rep.p("")
    rep.p(runner.clocks_used(vs, res))
    rep.p("")
    rep.end(args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

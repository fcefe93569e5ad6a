"""The benchmark harness runs: `python3 -m bench output_cost --quick` builds
its C driver against src/core and src/formats, writes a profile in every
format with the real writers and prints its table (the figures themselves
are for bench/RESULTS.md, never asserted)."""

import os
import re
import subprocess
import sys

from conftest import HERE

ROOT = os.path.dirname(HERE)
FORMATS = ("collapsed", "flamegraph", "speedscope", "pprof", "chrometrace")


def test_output_cost_quick_prints_its_table():
    r = subprocess.run([sys.executable, "-m", "bench", "output_cost", "--quick"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # The model is the one asked for: 100,000 samples over 10,000 stacks,
    # nearly all of which got samples (each stack gets a run first).
    m = re.search(r"Model: ([\d,]+) samples, ([\d,]+) distinct stacks with samples", r.stdout)
    assert m, r.stdout
    assert int(m.group(1).replace(",", "")) == 100000
    assert 9000 <= int(m.group(2).replace(",", "")) <= 10000
    rows = {}
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0] in FORMATS:
            rows[cells[0]] = cells
    assert sorted(rows) == sorted(FORMATS), r.stdout
    for name, cells in rows.items():
        size = float(cells[5].split()[0])
        peak = float(cells[3].split()[0])
        # A file was written (more than a byte per sample, but pprof's
        # stacks are ids) and the peak RSS was read from this process.
        assert size > (0.5 if name == "pprof" else 1.0), cells
        assert 1 < peak < 1000, cells
        assert re.search(r"\*\*(PASS|FAIL)\*\*", cells[6]), cells
    assert re.search(r"^- every output-cost target: \*\*(PASS|FAIL)\*\*$", r.stdout, re.M)


def test_signal_cost_quick_prints_its_table():
    """`python3 -m bench signal_cost --quick` builds its C driver and
    interrupts a C loop each way: a perf_event task-clock expires 1,000
    times per CPU-second at 1 ms, with or without a signal."""
    r = subprocess.run([sys.executable, "-m", "bench", "signal_cost", "--quick"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {}
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("way", "---"):
            rows[cells[0]] = cells
    assert len(rows) == 5, r.stdout
    for name, cells in rows.items():
        if "refused" in cells[1]:
            # perf_event where perf_event_paranoid or an old kernel refuses
            # it, the poller on one CPU; never the CPU-time timer
            assert name.startswith(("perf_event", "another thread")), cells
            continue
        rate = float(cells[1])
        assert re.match(r"[+-]\d+\.\d\d % \[[+-]\d+\.\d\d\.\.[+-]\d+\.\d\d\]$", cells[2]), cells
        assert re.match(r"-?\d+\.\d µs$", cells[3]), cells
        if name.startswith("perf_event") and "no signal" in name:
            assert rate == 0, cells
        elif name.startswith("perf_event"):
            assert 900 <= rate <= 1100, cells

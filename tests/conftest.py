"""Shared helpers: run target scripts in a fresh interpreter, read profiles."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")


def run_script(tmp_path, source, *args, timeout=300, env=None, check=True):
    """Runs source (dedented) as a script with this interpreter; returns the
    CompletedProcess. A crash (signal) or non-zero exit fails the test with
    the script's output."""
    script = tmp_path / "target.py"
    script.write_text(textwrap.dedent(source))
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=str(tmp_path),
    )
    if check and proc.returncode != 0:
        pytest.fail(
            "target exited with %d\n--- stdout\n%s\n--- stderr\n%s"
            % (proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:])
        )
    return proc


def last_json(proc):
    """The last line of stdout, parsed as JSON (targets report that way)."""
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    assert lines, "target printed nothing; stderr:\n" + proc.stderr
    return json.loads(lines[-1])


@pytest.fixture
def script(tmp_path):
    def run(source, *args, **kw):
        return run_script(tmp_path, source, *args, **kw)

    return run


def go_pprof(path, *flags):
    """Runs `go tool pprof FLAGS path`; fails the test unless it exits 0.
    Returns its standard output."""
    go = shutil.which("go") or next(
        (g for g in ("/usr/lib/go/bin/go", "/usr/bin/go") if os.access(g, os.X_OK)), None
    )
    if not go:
        pytest.fail("reading pprof files needs `go tool pprof`: apt-get install golang-go")
    env = dict(os.environ, PPROF_TMPDIR=os.path.dirname(str(path)))
    r = subprocess.run([go, "tool", "pprof", *flags, str(path)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, "go tool pprof %s failed (%d):\n%s" % (" ".join(flags), r.returncode, r.stderr)
    return r.stdout


_RAW_SAMPLE = re.compile(r"^\s+(?P<values>\d+(?:\s+\d+)*): (?P<locs>(?:\d+ )*)$")
_RAW_LABEL = re.compile(r"^\s+(?P<key>\w+):\[(?P<value>.*)\]$")
_RAW_LOCATION = re.compile(r"^\s+(?P<id>\d+): 0x[0-9a-f]+ M=\d+ (?P<where>.*):(?P<line>\d+) s=(?P<start>\d+)(?:\((?P<system>.*)\))?$")


def pprof_raw(path):
    """Parses `go tool pprof -raw path`: {"sample_types": [(type, unit)...],
    "period_type", "period", "samples": [{"values", "stack" (root first, each
    a location dict), "labels"}], "locations": {id: {"where": "NAME FILE",
    "line", "start", "system"}}}."""
    out = go_pprof(path, "-raw")
    lines = out.splitlines()
    res = {"samples": [], "locations": {}, "sample_types": None}
    section = None
    pending = []
    for line in lines:
        if line.startswith("PeriodType: "):
            res["period_type"] = tuple(line.split()[1:])
        elif line.startswith("Period: "):
            res["period"] = int(line.split()[1])
        elif line in ("Samples:", "Locations", "Mappings"):
            section = line
        elif section == "Samples:" and res["sample_types"] is None:
            res["sample_types"] = [tuple(t.replace("[dflt]", "").split("/")) for t in line.split()]
        elif section == "Samples:":
            m = _RAW_SAMPLE.match(line)
            if m:
                pending.append({"values": [int(v) for v in m.group("values").split()],
                                "locs": [int(i) for i in m.group("locs").split()], "labels": {}})
                continue
            m = _RAW_LABEL.match(line)
            assert m and pending, "unexpected line in pprof -raw samples: %r" % line
            pending[-1]["labels"][m.group("key")] = m.group("value")
        elif section == "Locations":
            m = _RAW_LOCATION.match(line)
            assert m, "unexpected line in pprof -raw locations: %r" % line
            res["locations"][int(m.group("id"))] = {
                "where": m.group("where"), "line": int(m.group("line")),
                "start": int(m.group("start")), "system": m.group("system")}
    assert res["sample_types"] and pending, "no samples in pprof -raw output:\n" + out[:2000]
    for s in pending:
        s["stack"] = [res["locations"][i] for i in reversed(s.pop("locs"))]
        res["samples"].append(s)
    return res

"""Output files: speedscope against its published schema, folded stacks,
the SVG flame graph as XML, the Chrome trace's timelines (and, in C, the
bound on the timeline behind it)."""

import json
import os
import re
import xml.etree.ElementTree as ET

import pytest

from conftest import (DATA, TWO_PHASES, check_chrometrace, check_two_phases, go_pprof, last_json,
                      pprof_raw, run_c_test)

PROGRAM = """
import threading, time
import spprof

def leaf(seconds):
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        x += 1

def middle(seconds):
    leaf(seconds)

def weird_name_caller():
    # names with the characters each format must escape
    ns = {}
    exec("def odd(s):\\n    leaf(s)\\n", {"leaf": leaf}, ns)
    f = ns["odd"]
    f.__code__ = f.__code__.replace(co_name="a;b<c>&\\"d\\" \\u00e9", co_qualname="a;b<c>&\\"d\\" \\u00e9") if hasattr(f.__code__, "co_qualname") else f.__code__.replace(co_name="a;b<c>&\\"d\\" \\u00e9")
    f(0.05)

t = threading.Thread(target=middle, args=(0.1,), name="worker")
spprof.start(interval_ms=1)
t.start()
middle(0.2)
weird_name_caller()
t.join()
p = spprof.stop()
p.save("p.json")
p.save("p.collapsed", format="collapsed")
p.save("p.svg", format="flamegraph")
p.save("p2.svg")
p.save("p3.txt")
p.save("p.pb.gz")
p.save("p.pprof", format="pprof")
import json
print(json.dumps({"samples": p.sample_count, "clock": p.clock, "sampled_ms": p.sampled_time_ms,
                  "dropped": p.dropped_count,
                  "threads": sorted((s.thread_name, s.count) for s in p.samples)}))
"""


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    from conftest import run_script

    tmp = tmp_path_factory.mktemp("formats")
    proc = run_script(tmp, PROGRAM)
    (tmp / "info.json").write_text(proc.stdout.strip().splitlines()[-1])
    return tmp


def test_speedscope_valid_against_schema(outputs):
    import jsonschema

    with open(os.path.join(DATA, "speedscope-file-format-schema.json")) as f:
        schema = json.load(f)
    doc = json.loads((outputs / "p.json").read_text())
    jsonschema.validate(doc, schema)


def test_speedscope_invariants(outputs):
    doc = json.loads((outputs / "p.json").read_text())
    frames = doc["shared"]["frames"]
    assert doc["profiles"], "no profiles"
    for prof in doc["profiles"]:
        assert prof["type"] == "sampled"
        assert prof["unit"] == "nanoseconds"
        assert len(prof["samples"]) == len(prof["weights"])
        # the weights fit in the span, which starts at the thread's first sample
        assert 0 <= prof["startValue"] and sum(prof["weights"]) <= prof["endValue"] - prof["startValue"]
        for stack in prof["samples"]:
            assert stack, "empty stack"
            assert all(0 <= i < len(frames) for i in stack)
            names = [frames[i]["name"] for i in stack]
            # root first: the outermost frame is the module or the thread's
            # bootstrap; the innermost is where time was spent
            assert names[0] in ("<module>", "_bootstrap", "Thread._bootstrap", "<no Python frame>"), names
    main = next(p for p in doc["profiles"] if p["name"].startswith("MainThread"))
    leafs = {frames[s[-1]]["name"] for s in main["samples"]}
    assert "leaf" in leafs
    worker = next(p for p in doc["profiles"] if p["name"].startswith("worker"))
    names = [[frames[i]["name"] for i in s] for s in worker["samples"]]
    assert any(n[-2:] == ["middle", "leaf"] for n in names), names
    leaf = next(f for f in frames if f["name"] == "leaf")
    assert leaf["file"].endswith("target.py") and leaf["line"] > 0


def test_speedscope_escapes_names(outputs):
    doc = json.loads((outputs / "p.json").read_text())
    names = {f["name"] for f in doc["shared"]["frames"]}
    assert 'a;b<c>&"d" \u00e9' in names


LINE = re.compile(r"^(?P<stack>[^\n]+) (?P<count>\d+)$")


def test_collapsed_lines(outputs):
    text = (outputs / "p.collapsed").read_text()
    total = 0
    for line in text.splitlines():
        m = LINE.match(line)
        assert m, line
        frames = m.group("stack").split(";")
        assert all(frames), line
        assert re.match(r"^(<module>|_bootstrap|Thread\._bootstrap) \(|^<no Python frame>$", frames[0]), line
        total += int(m.group("count"))
    info = json.loads((outputs / "info.json").read_text())
    assert total == info["samples"], info
    # 0.35 s of CPU at 1 ms
    assert abs(info["sampled_ms"] - 350) < 35, info
    assert info["samples"] >= 300, info
    assert any(re.search(r";middle \(target\.py:\d+\);leaf \(target\.py:\d+\) \d+$", l) for l in text.splitlines())
    # ';' inside a name must not split the frame
    odd = [l for l in text.splitlines() if "b<c>" in l]
    assert odd and all('a:b<c>&"d" \u00e9 (' in l for l in odd), odd
    assert (outputs / "p3.txt").read_text() == text


def test_collapsed_counts_match_sample_count(tmp_path):
    import spprof

    spprof.start(interval_ms=1)
    end = __import__("time").thread_time() + 0.1
    while __import__("time").thread_time() < end:
        pass
    p = spprof.stop()
    text = p.to_collapsed()
    assert sum(int(l.rsplit(" ", 1)[1]) for l in text.splitlines()) == p.sample_count


def test_flamegraph_svg_well_formed(outputs):
    svg = outputs / "p.svg"
    assert svg.read_bytes() == (outputs / "p2.svg").read_bytes()  # suffix picks the format
    root = ET.parse(str(svg)).getroot()
    assert root.tag.endswith("svg")
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(t and t.startswith("leaf (target.py:") for t in titles), titles[:10]
    assert any(t and t.startswith('a;b<c>&"d" \u00e9') for t in titles)
    ids = {e.get("id") for e in root.iter() if e.get("id")}
    assert {"details", "unzoom", "search", "matched"} <= ids
    scripts = list(root.iter("{http://www.w3.org/2000/svg}script"))
    assert scripts and not any(s.get("href") or s.get("{http://www.w3.org/1999/xlink}href") for s in scripts)


def test_chrometrace_two_phases_threads_and_times(tmp_path):
    from conftest import run_script

    info = last_json(run_script(tmp_path, TWO_PHASES, "api"))
    marks, sampled = info["marks"], info["sampled_ns"]
    text = (tmp_path / "p.trace.json").read_text()
    assert (tmp_path / "p.chrome").read_text() == text  # the suffix chose the format
    events, names, other = check_chrometrace(json.loads(text))
    assert other["timeline"] == "complete" and other["timeline_left_out_samples"] == 0, other
    assert other["clock"] == "cpu" and other["samples"] > 0

    a, b, w = check_two_phases(events, names, other, marks)
    assert names[w[0]["tid"]] == "worker-thread", names
    slack = 30.0
    # A function's events last about as long as the time sampled in it: at
    # least that (a sample's interval is inside the events), and at most
    # twice (the timeline bridges only gaps shorter than a sample's time).
    for name, evs in (("phase_a", a), ("phase_b", b), ("worker_job", w)):
        dur_ms = sum(e["dur"] for e in evs) / 1000
        ms = sampled[name] / 1e6
        assert ms > 10, (name, ms)  # (a loaded machine gives the threads little CPU)
        # every sample of the function is in one of its events (the
        # writer rounds each to the microsecond)
        assert abs(sum(e["args"]["sampled_ms"] for e in evs) - ms) <= 0.001 * (len(evs) + 1), name
        assert 0.9 * ms <= dur_ms <= 2 * ms + 5, (name, dur_ms, ms)
    wall_a = (marks["a1"] - marks["a0"]) / 1e6
    assert sum(e["dur"] for e in a) / 1000 <= wall_a + slack
    # The call path: spin_until's events lie within phase_a's.
    spins = [e for e in events[a[0]["tid"]] if e["name"] == "spin_until"]
    assert any(p["ts"] <= s["ts"] and s["ts"] + s["dur"] <= p["ts"] + p["dur"] for p in a for s in spins)
    assert a[0]["args"]["file"].endswith("target.py")


def test_chrometrace_render_and_suffixes(tmp_path):
    import spprof
    from spprof._profile import _format_for

    assert _format_for("x.trace.json", None) == "chrometrace"
    assert _format_for("x.trace", None) == "chrometrace"
    assert _format_for("x.json", None) == "speedscope"
    assert _format_for("x.json", "chrome") == "chrometrace"

    def spin():
        end = __import__("time").thread_time() + 0.05
        while __import__("time").thread_time() < end:
            pass

    # An output path that asks for a trace keeps the timeline.
    out = tmp_path / "auto.trace.json"
    spprof.start(interval_ms=1, output_path=out)
    spin()
    p = spprof.stop()
    events, names, other = check_chrometrace(json.loads(out.read_text()))
    assert other["samples"] == p.sample_count and other["timeline"] == "complete"
    assert sum(len(v) for v in events.values()) > 0
    assert check_chrometrace(p.to_chrometrace())[2]["samples"] == p.sample_count

    # Without a timeline the trace is refused, saying how to get one, and
    # nothing is written.
    spprof.start(interval_ms=1)
    spin()
    p = spprof.stop()
    for call in (lambda: p.save(tmp_path / "no.trace.json"), p.to_chrometrace,
                 lambda: p.save(tmp_path / "no.json", format="chrometrace")):
        with pytest.raises(ValueError, match="timeline=True"):
            call()
    assert not (tmp_path / "no.trace.json").exists() and not (tmp_path / "no.json").exists()
    p.save(tmp_path / "ok.json")  # the other formats are unaffected


def test_timeline_bound_in_c(tmp_path):
    """The C unit test of the timeline's memory bound, built with the
    system's compiler under ASan/UBSan."""
    run_c_test(tmp_path, "test_timeline")


def _speedscope_stacks(doc):
    """{(thread profile name, (("NAME FILE", line), ... root first)): weight} and
    the map from "NAME FILE" to (name, file)."""
    frames = doc["shared"]["frames"]
    where = {}
    for f in frames:
        where["%s %s" % (f["name"], f.get("file", ""))] = (f["name"], f.get("file", ""))
    stacks = {}
    for prof in doc["profiles"]:
        for stack, w in zip(prof["samples"], prof["weights"]):
            key = (prof["name"], tuple(("%s %s" % (frames[i]["name"], frames[i].get("file", "")),
                                        frames[i].get("line", 0)) for i in stack))
            stacks[key] = stacks.get(key, 0) + w
    return stacks, where


def _pprof_stacks(raw, value):
    """The same shape from a parsed `pprof -raw`, thread named as speedscope
    names it; value 0 is the sample count, 1 the nanoseconds."""
    stacks = {}
    for s in raw["samples"]:
        name, tid = s["labels"]["thread"], s["labels"]["thread_id"]
        thread = name if name == "Thread " + tid else "%s (tid %s)" % (name, tid)
        key = (thread, tuple((loc["where"], loc["line"]) for loc in s["stack"]))
        stacks[key] = stacks.get(key, 0) + s["values"][value]
    return stacks


def test_pprof_read_by_go_tool_pprof_matches_speedscope_and_collapsed(outputs):
    info = json.loads((outputs / "info.json").read_text())
    raw = pprof_raw(outputs / "p.pb.gz")
    clock = "wall" if "wall" in info["clock"] else "cpu"
    assert raw["sample_types"] == [("samples", "count"), (clock, "nanoseconds")]
    assert raw["period_type"] == (clock, "nanoseconds") and raw["period"] == 1000000
    # Stacks, files, lines, root-first order and weights are the speedscope
    # file's, thread by thread.
    ss, where = _speedscope_stacks(json.loads((outputs / "p.json").read_text()))
    assert _pprof_stacks(raw, 1) == ss
    # Counts are the folded stacks' (which name files by their short name).
    counts = {}
    for (thread, stack), n in _pprof_stacks(raw, 0).items():
        labels = []
        for w, line in stack:
            name, file = where[w]
            label = name.replace(";", ":")
            if file:
                label += " (%s%s)" % (os.path.basename(file) if file.startswith("/") else file,
                                      ":%d" % line if line else "")
            labels.append(label)
        counts[";".join(labels)] = counts.get(";".join(labels), 0) + n
    folded = {}
    for line in (outputs / "p.collapsed").read_text().splitlines():
        stack, n = line.rsplit(" ", 1)
        folded[stack] = folded.get(stack, 0) + int(n)
    assert counts == folded
    assert sum(s["values"][0] for s in raw["samples"]) == info["samples"]
    # Functions keep their names ("<module>" is not demangled into
    # "<unknown>"), their files and their first lines.
    locs = raw["locations"].values()
    module = [l for l in locs if l["where"].startswith("<module> ") and l["where"].endswith("target.py")]
    # (3.9 starts a module at its first line of code)
    assert module and all(1 <= l["start"] <= 2 for l in module), module
    leaf = [l for l in locs if l["where"].startswith("leaf ") and l["where"].endswith("target.py")]
    src = PROGRAM.splitlines()
    assert leaf and all(src[l["start"] - 1].startswith("def leaf(") for l in leaf), leaf
    # Every line of leaf lies in it, and its time is in its loop: a sample
    # may land on the lines before the loop (line 6's first thread_time()
    # call, when a loaded host stalls the CPU there), not outside leaf.
    body = range(leaf[0]["start"], leaf[0]["start"] + 5)
    assert all(l["line"] in body for l in leaf), leaf
    in_leaf = {}
    for s in raw["samples"]:
        for loc in s["stack"]:
            if loc["where"].startswith("leaf ") and loc["where"].endswith("target.py"):
                in_leaf[loc["line"]] = in_leaf.get(loc["line"], 0) + s["values"][0]
                break
    looping = sum(n for line, n in in_leaf.items() if src[line - 1].strip().startswith(("while", "x += 1")))
    assert looping >= 0.95 * sum(in_leaf.values()) and looping > 0, in_leaf
    assert not any("<unknown>" in l["where"] for l in locs)
    # Every sample carries its thread's name and id.
    threads = {(s["labels"]["thread"], s["labels"]["thread_id"]) for s in raw["samples"]}
    assert {t for t, _ in threads} >= {"MainThread", "worker"}, threads
    assert all(tid.isdigit() and int(tid) > 0 for _, tid in threads), threads
    # The suffix picks the format; the name does too.
    assert (outputs / "p.pprof").read_bytes() == (outputs / "p.pb.gz").read_bytes()


def test_pprof_top_and_traces(outputs):
    top = go_pprof(outputs / "p.pb.gz", "-top")
    # leaf spends the time itself; middle only calls it
    rows = {l.split()[-1]: l.split() for l in top.splitlines() if re.match(r"^\s*[\d.]+(?:[mun]?s)?\s+[\d.]+%", l)}
    assert "leaf" in rows and "middle" in rows, top
    assert float(rows["leaf"][1].rstrip("%")) > 80, top
    assert float(rows["middle"][1].rstrip("%")) < 10 < float(rows["middle"][4].rstrip("%")), top
    traces = go_pprof(outputs / "p.pb.gz", "-traces")
    blocks = traces.split("-----------+-------------------------------------------------------")
    worker = [b for b in blocks if re.search(r"thread:\s+worker\n", b)]
    assert worker, traces[:3000]
    # leaf first, then its callers up to the thread's bootstrap
    assert any(re.search(r"leaf\n\s+middle\n\s+Thread\.run\n|leaf\n\s+middle\n\s+run\n", b) for b in worker), worker


def test_pprof_is_gzip_of_a_profile_larger_than_one_stored_block(tmp_path):
    """Names long enough that the protobuf spans several 64 KiB deflate
    blocks: Python's gzip and go tool pprof both read it whole."""
    from conftest import run_script

    run_script(tmp_path, """
        import time, spprof

        def spin():
            end = time.thread_time() + 0.005
            while time.thread_time() < end:
                pass

        fns = []
        for i in range(100):
            name = "f%02d_" % i + "x" * 1000
            ns = {}
            exec("def g():\\n    spin()\\n", {"spin": spin}, ns)
            code = ns["g"].__code__.replace(co_name=name)
            if hasattr(code, "co_qualname"):
                code = code.replace(co_qualname=name)
            ns["g"].__code__ = code
            fns.append(ns["g"])
        spprof.start(interval_ms=1)
        for f in fns:
            f()
        p = spprof.stop()
        p.save("big.pb.gz")
        open("big.raw", "wb").write(p.to_pprof())
        """)
    import gzip

    data = (tmp_path / "big.pb.gz").read_bytes()
    assert data == (tmp_path / "big.raw").read_bytes()
    proto = gzip.decompress(data)  # checks the CRC-32 and the length
    assert len(proto) > 65535, len(proto)
    raw = pprof_raw(tmp_path / "big.pb.gz")
    names = {l["where"].split(" ")[0] for l in raw["locations"].values()}
    long = {n for n in names if n.endswith("x" * 1000)}
    assert len(long) >= 90, sorted(n[:4] for n in long)


LATER_THREAD = """
    import json, sys, threading, time
    import spprof

    def burn(seconds):
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    def spin_wall(seconds):
        end = time.time() + seconds
        while time.time() < end:
            pass

    spprof.start(interval_ms=1)
    t0 = time.time()
    burn(0.3)
    t = threading.Thread(target=burn, args=(0.3,), name="later")
    started = time.time()
    t.start()
    t.join()
    spprof.stop().save("p.json")
    print(json.dumps({"offset": started - t0}))
"""


def test_speedscope_threads_line_up_in_time(tmp_path):
    """Every thread's profile counts from the same zero: a thread started
    0.3 s of work later begins that much later (startValue), and spans at
    least what its samples weigh."""
    from conftest import run_script

    proc = run_script(tmp_path, LATER_THREAD)
    offset = json.loads(proc.stdout.strip().splitlines()[-1])["offset"]
    doc = json.loads((tmp_path / "p.json").read_text())
    profs = {p["name"].split(" (")[0]: p for p in doc["profiles"]}
    main, later = profs["MainThread"], profs["later"]
    gap = (later["startValue"] - main["startValue"]) / 1e9
    assert abs(gap - offset) < 0.1, (gap, offset)
    for p in (main, later):
        assert sum(p["weights"]) <= p["endValue"] - p["startValue"]
    # the later thread ends after the main thread's first work
    assert later["endValue"] > main["startValue"] + 0.25e9

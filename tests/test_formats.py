"""Output files: speedscope against its published schema, folded stacks,
the SVG flame graph as XML."""

import json
import os
import re
import xml.etree.ElementTree as ET

import pytest

from conftest import DATA

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
        assert sum(prof["weights"]) == prof["endValue"]
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

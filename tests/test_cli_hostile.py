"""Names that come from the target are untrusted strings: a script in a
directory whose name holds markup, quotes, separators, a control character,
a newline and bytes that are not UTF-8, a function whose name holds the
same, and a thread whose OS name does. Every format spprof record writes
must stay well-formed (strict UTF-8 JSON, XML, one collapsed stack a line,
a pprof file go tool pprof reads) and show the names."""

import json
import os
import re
import sys
import xml.etree.ElementTree as ET

import pytest

from conftest import go_pprof
from test_cli import run

ODD = 'o<d>&"d\x01\n;x\u00e9'
THREAD = 'th<&"\x01;'
# Python thread names are shown with control characters as '?'; an OS name
# (3.14+ copies the Python name into it, cut to 15 bytes) as it is.
THREAD_SHOWN = (THREAD, THREAD.replace("\x01", "?"))
DIR = b'we<i>&"rd\x01 d;ir\n\xff\xfe'

TARGET = """
import threading, time

def burn(s):
    end = time.time() + s
    while time.time() < end:
        pass

ns = {}
exec("def odd(s):\\n    burn(s)\\n", {"burn": burn}, ns)
f = ns["odd"]
name = %r
f.__code__ = f.__code__.replace(co_name=name, **({"co_qualname": name} if hasattr(f.__code__, "co_qualname") else {}))

go = threading.Event()

def worker():
    go.wait()   # idle, so not sampled (nor named) until renamed
    f(1.2)

# The same name for Python and the OS, whichever a version's spprof shows.
t = threading.Thread(target=worker, name=%r)
t.start()
with open("/proc/self/task/%%d/comm" %% t.native_id, "wb") as comm:
    comm.write(%r)
go.set()
f(1.2)
t.join()
""" % (ODD, THREAD, THREAD.encode())


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    d = os.path.join(os.fsencode(str(base)), DIR)
    os.makedirs(d)
    script = os.path.join(d, b"t.py")
    with open(script, "w") as f:
        f.write(TARGET)
    outs = {}
    for fmt in ("speedscope", "collapsed", "flamegraph", "chrometrace", "pprof"):
        out = base / ("out." + fmt)
        r = run(["record", "-t", "-r", "200", "-f", fmt, "-o", out, "--", sys.executable, os.fsdecode(script)])
        assert r.returncode == 0, r.stderr
        outs[fmt] = out
    return outs, os.fsdecode(script)


def strict_json(path):
    return json.loads(path.read_bytes().decode("utf-8"))  # strict: no invalid UTF-8 passes


def test_speedscope(hostile):
    outs, script = hostile
    doc = strict_json(outs["speedscope"])
    frames = doc["shared"]["frames"]
    odd = [f for f in frames if f["name"] == ODD]
    assert odd and odd[0]["file"] == "<string>", [f["name"] for f in frames]
    burn = [f for f in frames if f["name"] == "burn"]
    # the directory's bytes that are not UTF-8 are replaced, the rest kept
    assert burn and 'we<i>&"rd\x01 d;ir\n' in burn[0]["file"] and "\ufffd" in burn[0]["file"], burn
    assert any(p["name"].startswith(THREAD_SHOWN) for p in doc["profiles"]), [p["name"] for p in doc["profiles"]]


def test_chrometrace(hostile):
    outs, _ = hostile
    doc = strict_json(outs["chrometrace"])
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    assert any(e.get("name") == ODD and e.get("ph") == "X" for e in events)
    names = [e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"]
    assert set(THREAD_SHOWN) & set(names), names


def test_collapsed(hostile):
    outs, _ = hostile
    text = outs["collapsed"].read_bytes().decode("utf-8")
    lines = text.splitlines()
    assert lines and all(re.match(r"^[^\n]+ \d+$", l) for l in lines), lines
    # A newline would split the stack, a ';' the frame: shown as ' ' and ':'.
    odd = ODD.replace("\n", " ").replace(";", ":")
    hits = [l for l in lines if ";%s (<string>:2);burn (t.py:" % odd in l]
    assert len(hits) >= 2, lines  # both threads


def test_flamegraph(hostile):
    outs, _ = hostile
    root = ET.fromstring(outs["flamegraph"].read_bytes())
    text = " ".join(t for t in root.itertext())
    # XML cannot hold U+0001 even escaped: it is left out, the rest kept
    assert 'o<d>&"d' in text and "burn" in text


def test_pprof(hostile):
    outs, _ = hostile
    top = go_pprof(outs["pprof"], "-top", "-nodecount=50")
    assert 'o<d>&"d' in top and "burn" in top, top

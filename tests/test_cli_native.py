"""spprof record --native: the C frames of the target merged with its Python
frames, in call order, without the interpreter's own calling glue."""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import time

import pytest

from conftest import DATA, QSORT_CALLBACK
from test_cli import TmuxTop, folded, line_of, run, top_rows

TARGET = QSORT_CALLBACK + """
import sys, time
import nativeburn

def py_callback():
    s = 0
    for i in range(2000):
        s += i
    return s

def call_into_c():
    nativeburn.call_back(py_callback, 600)

def burn_in_c():
    nativeburn.spin(60000000)

end = time.time() + float(sys.argv[1])
while time.time() < end:
    run_qsort(400)
    call_into_c()
    burn_in_c()
"""

# Frames of the collapsed format: "name (file:line)" for Python, "name (file)"
# for native code, "<marker>" for spprof's own.
FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")
GLUE = ("_PyEval_", "PyEval_", "PyObject_Call", "_PyObject_Call", "PyObject_Vectorcall",
        "_PyObject_Vectorcall", "_PyFunction_Vectorcall", "cfunction_call", "function_code_fastcall")


# Native frames name their module: a shared object, the python executable,
# or nothing for an address in no file ("0x7f...").
MODULE = re.compile(r"\.so(\.[\d.]+)?$|^python\d")


def frames(stack):
    out = []
    for f in stack.split(";"):
        m = FRAME.match(f)
        if not m:
            kind = "native" if re.match(r"0x[0-9a-f]+$", f) else "marker"
            out.append((f, "", kind))
        elif not m["line"] and MODULE.search(m["file"]):
            out.append((m["name"], m["file"], "native"))
        else:
            out.append((m["name"], m["file"], "python"))
    return out


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """The target script next to the test extension, built for this
    interpreter."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.fail("needs a C compiler (Debian package gcc) to build the test extension")
    d = tmp_path_factory.mktemp("native")
    ext = d / ("nativeburn" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.check_call([cc, "-O2", "-g", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"],
                           os.path.join(DATA, "nativeburn.c"), "-o", str(ext)])
    path = d / "target.py"
    path.write_text(textwrap.dedent(TARGET))
    return path


def record(target, tmp_path, *opts):
    out = tmp_path / "p.txt"
    r = run(["record", *opts, "-f", "collapsed", "-r", "200", "-o", out, "--", sys.executable,
             target, "4"], cwd=str(target.parent))
    assert r.returncode == 0, r.stderr
    return folded(out)


def between(fs, outer, inner):
    """The frames between the innermost frame named outer above the
    innermost frame named inner, or None."""
    names = [f[0] for f in fs]
    if inner not in names:
        return None
    j = len(names) - 1 - names[::-1].index(inner)
    above = names[:j]
    if outer not in above:
        return None
    i = len(above) - 1 - above[::-1].index(outer)
    return fs[i + 1:j]


def test_native_frames_in_call_order(target, tmp_path):
    if not spprof_has_native():
        pytest.fail("this spprof was built without libunwind-ptrace (Debian package libunwind-dev)")
    counts = record(target, tmp_path, "--native")
    total = sum(counts.values())

    # Python -> C -> Python: the C function between its Python caller and
    # the Python function it calls back, nothing but native code between,
    # and none of it the interpreter's calling machinery.
    cb = [(between(frames(s), "call_into_c", "py_callback"), n) for s, n in counts.items()]
    cb = [(b, n) for b, n in cb if b is not None]
    assert sum(n for _, n in cb) > 0.05 * total, "py_callback never sampled under call_into_c"
    for b, _ in cb:
        assert [f[0] for f in b] == ["nativeburn_call_back"], b
    # No stack has the callback without the C function that called it.
    for s, n in counts.items():
        names = [f[0] for f in frames(s)]
        if "py_callback" in names:
            assert "nativeburn_call_back" in names[:names.index("py_callback")], s

    # The same through a C library: libc's qsort calling a ctypes callback.
    qs = [(between(frames(s), "run_qsort", "py_cmp"), n) for s, n in counts.items()]
    qs = [(b, n) for b, n in qs if b is not None]
    assert sum(n for _, n in qs) > 0.05 * total, "py_cmp never sampled under run_qsort"
    for b, _ in qs:
        assert all(f[2] == "native" for f in b), b
        assert any("qsort" in f[0] and f[1].startswith("libc.so") for f in b), b
        assert not any(f[0].startswith(GLUE) for f in b), b
        # qsort is called after the ctypes machinery and before the callback
        # machinery.
        names = [f[0] for f in b]
        q = next(i for i, f in enumerate(b) if "qsort" in f[0])
        assert "_ctypes_callproc" in names[:q] and "closure_fcn" in names[q + 1:], names

    # C burning CPU on its own: the leaf, right under the C function Python
    # called, right under that Python function.
    burn = {s: n for s, n in counts.items() if s.rsplit(";", 1)[-1].startswith("nativeburn_spin_cpu ")}
    assert sum(burn.values()) > 0.1 * total, sorted(counts.items(), key=lambda kv: -kv[1])[:5]
    for s in burn:
        fs = frames(s)
        assert [f[0] for f in fs[-3:]] == ["burn_in_c", "nativeburn_spin", "nativeburn_spin_cpu"], s
        assert fs[-1][1].startswith("nativeburn") and fs[-3][2] == "python", fs
        assert [f[0] for f in fs if f[2] == "python"] == ["<module>", "burn_in_c"], s


def test_without_native_no_native_frames(target, tmp_path):
    counts = record(target, tmp_path)
    kinds = {f[2] for s in counts for f in frames(s)}
    assert "native" not in kinds, [s for s in counts if "native" in {f[2] for f in frames(s)}][:3]
    # the time spent in C is still there, on the Python function that called it
    burn = sum(n for s, n in counts.items() if re.search(r";burn_in_c \(target\.py:\d+\)$", s))
    assert burn > 0.1 * sum(counts.values())


def test_native_refused_with_nonblocking(target, tmp_path):
    r = run(["record", "--native", "--nonblocking", "-o", tmp_path / "p.txt", "--", sys.executable,
             target, "1"])
    assert r.returncode == 2
    assert "--native cannot be used with --nonblocking" in r.stderr
    assert "paused" in r.stderr
    assert not (tmp_path / "p.txt").exists()
    r = run(["record", "-n", "--nonblocking", "--pid", str(os.getpid())])
    assert r.returncode == 2 and "--nonblocking" in r.stderr


def spprof_has_native():
    """Whether the command under test was built with libunwind-ptrace."""
    r = run(["record", "--native", "--pid", "999999999"])
    return "built without" not in r.stderr


# A target blocked inside C called from Python, in two threads: the main
# thread in the test extension's call_back, whose Python callback sleeps;
# another in libc's qsort (through ctypes), whose comparison sleeps.
BLOCKED = QSORT_CALLBACK + """
import os, sys, threading, time
import nativeburn

def py_cmp(a, b):               # (replaces the one above: this one blocks)
    os.write(1, b"qsort-ready\\n")  # one write: the other thread prints meanwhile
    time.sleep(60)              # CMP
    return a[0] - b[0]

def py_callback():
    here = "in callback"
    os.write(1, b"ready\\n")
    time.sleep(60)              # CALLBACK

def call_into_c(n):
    nativeburn.call_back(py_callback, n)

threading.Thread(target=run_qsort, args=(4,), name="sorter", daemon=True).start()
call_into_c(1)
"""


@pytest.fixture
def blocked(target):
    """The BLOCKED target running, both threads in place."""
    path = target.parent / "blocked.py"
    path.write_text(textwrap.dedent(BLOCKED))
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=str(target.parent))
    assert sorted(proc.stdout.readline().strip() for _ in range(2)) == ["qsort-ready", "ready"]
    time.sleep(0.2)  # from print() to the sleep
    yield proc, path
    proc.kill()
    proc.wait()


def untraced(pid):
    with open("/proc/%d/status" % pid) as f:
        status = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
    return status["TracerPid"].strip() == "0" and status["State"].split()[0] not in "tT"


def test_dump_native_shows_python_c_python_in_order(blocked):
    if not spprof_has_native():
        pytest.fail("this spprof was built without libunwind-ptrace (Debian package libunwind-dev)")
    proc, path = blocked
    src = path.read_text()
    cb_line, cmp_line = line_of(src, "# CALLBACK"), line_of(src, "# CMP")

    r = run(["dump", "--native", "--locals", "--pid", proc.pid])
    assert r.returncode == 0, r.stderr
    # (The other thread is named as the OS names it: not "sorter".)
    blocks = {b.split('"')[1] == "MainThread": b.splitlines()[1:] for b in r.stdout.split("\nThread ")[1:]}
    assert len(r.stdout.split("\nThread ")) == 3 and set(blocks) == {True, False}, r.stdout
    blocks = {"MainThread": blocks[True], "sorter": blocks[False]}
    # Main thread, outermost first: Python -> C -> Python, locals under
    # their own Python frames (none under the C frame), then the C frames
    # of time.sleep innermost.
    main = blocks["MainThread"]
    at = main.index("    call_into_c (blocked.py:%d)" % line_of(src, "nativeburn.call_back("))
    assert main[at + 1] == "        n = 1", main
    assert re.fullmatch(r"    nativeburn_call_back \(nativeburn\.[^ ]*\.so\)", main[at + 2]), main
    assert main[at + 3] == "    py_callback (blocked.py:%d)" % cb_line, main
    assert main[at + 4] == "        here = 'in callback'", main
    assert main[at + 5:] and all(re.fullmatch(r"    \S+( \([^():]+\))?", l) for l in main[at + 5:]), main
    # The sorter: ctypes, then qsort in libc, then the callback machinery,
    # then the Python comparison with its arguments.
    sorter = blocks["sorter"]
    at = next(i for i, l in enumerate(sorter) if l.startswith("    run_qsort (blocked.py:"))
    end = sorter.index("    py_cmp (blocked.py:%d)" % cmp_line)
    native = [l.strip() for l in sorter[at + 1:end] if not l.startswith("        ")]
    names = [l.split(" ")[0] for l in native]
    q = next(i for i, n in enumerate(names) if "qsort" in n)
    assert "(libc.so" in native[q], native
    assert "_ctypes_callproc" in names[:q] and "closure_fcn" in names[q + 1:], names
    assert not any(n.startswith(GLUE) for n in names), names
    assert all(re.fullmatch(r"\S+ \([^():]+\)|0x[0-9a-f]+", l) for l in native), native
    assert re.fullmatch(r"        a = <LP_c_int at 0x[0-9a-f]+>", sorter[end + 1]), sorter

    # The same stacks in JSON, each frame with its kind.
    r = run(["dump", "--native", "--json", "--pid", proc.pid])
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["pid"] == proc.pid
    threads = {"MainThread" if t["name"] == "MainThread" else "sorter": t["frames"] for t in doc["threads"]}
    assert len(threads) == len(doc["threads"]) == 2, doc
    fs = threads["MainThread"]
    assert all(f["kind"] in ("python", "native") for f in fs)
    i = next(k for k, f in enumerate(fs) if f["name"] == "call_into_c")
    assert fs[i]["kind"] == "python" and fs[i]["file"] == str(path)
    assert fs[i + 1]["kind"] == "native" and fs[i + 1]["name"] == "nativeburn_call_back"
    assert fs[i + 1]["file"].startswith("nativeburn.") and fs[i + 1]["line"] == 0
    assert fs[i + 2] == {"kind": "python", "name": "py_callback", "file": str(path), "line": cb_line}
    assert fs[i + 3:] and all(f["kind"] == "native" for f in fs[i + 3:]), fs
    fs = threads["sorter"]
    i = next(k for k, f in enumerate(fs) if f["name"] == "run_qsort")
    j = next(k for k, f in enumerate(fs) if f["name"] == "py_cmp")
    assert fs[j]["kind"] == "python" and fs[j]["line"] == cmp_line
    assert i < j and all(f["kind"] == "native" for f in fs[i + 1:j]), fs
    assert any("qsort" in f["name"] and f["file"].startswith("libc.so") for f in fs[i + 1:j]), fs

    # Without --native: the Python frames alone, no kind (the old shape).
    r = run(["dump", "--json", "--pid", proc.pid])
    fs = next(t["frames"] for t in json.loads(r.stdout)["threads"] if t["name"] == "MainThread")
    assert [f["name"] for f in fs][-2:] == ["call_into_c", "py_callback"], fs
    assert "kind" not in fs[-1]
    assert proc.poll() is None and untraced(proc.pid)


# C burning CPU under a Python caller, and some Python of its own.
BURN = """
import nativeburn

def burn_in_c():
    nativeburn.spin(60000000)

def py_work():
    s = 0
    for i in range(20000):
        s += i
    return s

print("ready", flush=True)
while True:
    burn_in_c()
    py_work()
"""


def test_top_native_shows_the_hot_c_function(target):
    if not spprof_has_native():
        pytest.fail("this spprof was built without libunwind-ptrace (Debian package libunwind-dev)")
    path = target.parent / "burn.py"
    path.write_text(textwrap.dedent(BURN))
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=str(target.parent))
    assert proc.stdout.readline().strip() == "ready"
    top = TmuxTop("--pid", proc.pid, "--native", "--rate", "200", "--delay", "0.5", width=160)
    try:
        def settled(screen):
            # (the whole table: the C function first, and its callers drawn)
            rows = top_rows(screen, "(")
            return (rows and rows[0].split()[-2] == "nativeburn_spin_cpu"
                    and any(r.split()[-2] == "burn_in_c" for r in rows))
        screen = top.wait_for(settled)
        rows = top_rows(screen, "(")
        # Sorted by own time: the C function that burns is first, with
        # its module; the Python function that called it owns almost
        # nothing itself but has it all in total.
        assert rows and re.search(r"  nativeburn_spin_cpu \(nativeburn\.\S*\.so\)\s*$", rows[0]), screen
        assert float(rows[0].split("%")[0]) > 40, screen
        caller = [r for r in rows if re.search(r"  burn_in_c \(burn\.py\)\s*$", r)]
        assert caller, screen
        own, total = (float(x) for x in caller[0].split("%")[:2])
        assert own < 5 and total > 40, caller
        assert [r for r in rows if re.search(r"  nativeburn_spin \(nativeburn\.", r)], screen
        top.quit()
        assert proc.poll() is None and untraced(proc.pid)
    finally:
        top.close()
        proc.kill()
        proc.wait()

"""spprof record --native: the C frames of the target merged with its Python
frames, in call order, without the interpreter's own calling glue."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

from conftest import DATA, QSORT_CALLBACK
from test_cli import folded, run

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

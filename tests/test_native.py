"""Native (C) frames appear between the Python frames that surround them."""

import pytest

from conftest import QSORT_CALLBACK, last_json

import spprof

NATIVE = """
import json, sqlite3
import spprof

spprof.set_native_unwinding(True)

def slow_square(x):
    s = 0
    for i in range(3000):
        s += i
    return x * x

def run_sql():
    con = sqlite3.connect(":memory:")
    con.create_function("slow_square", 1, slow_square)
    con.execute("create table t(x)")
    con.executemany("insert into t values (?)", [(i,) for i in range(3000)])
    return con.execute("select sum(slow_square(x)) from t").fetchone()
""" + QSORT_CALLBACK + """
spprof.start(interval_ms=1)
run_sql()
run_qsort()
p = spprof.stop()
stacks = []
for s in p.samples:
    stacks.append([[f.function_name, f.filename, f.is_native] for f in s.frames] + [s.count])
print(json.dumps(stacks))
"""


def _between(stack, outer, inner):
    names = [f[0] for f in stack]
    if outer not in names or inner not in names:
        return None
    i, j = names.index(outer), names.index(inner)
    return stack[i + 1 : j] if i < j else None


def test_native_frames_between_python_frames(script):
    if not spprof.native_unwinding_available():
        pytest.fail("native unwinding needs libunwind: apt-get install libunwind8")
    stacks = last_json(script(NATIVE))
    sql = [_between(s[:-1], "run_sql", "slow_square") for s in stacks]
    sql = [b for b in sql if b is not None]
    assert sql, "slow_square never sampled under run_sql"
    for between in sql:
        assert between and all(f[2] for f in between), between  # only C frames in between
        assert any(f[1].startswith("libsqlite3") for f in between), between
    sort = [_between(s[:-1], "run_qsort", "py_cmp") for s in stacks]
    sort = [b for b in sort if b is not None]
    assert sort, "py_cmp never sampled under run_qsort"
    for between in sort:
        assert all(f[2] for f in between), between
        assert any(f[1].startswith("libc.so") and "qsort" in f[0] for f in between), between
    # Python frames keep their order: the module calls run_sql, which (through
    # C) calls slow_square.
    for s in stacks:
        py = [f[0] for f in s[:-1] if not f[2]]
        if "slow_square" in py:
            assert py[:3] == ["<module>", "run_sql", "slow_square"], py


def test_without_native_unwinding_no_c_frames(script):
    src = NATIVE.replace("spprof.set_native_unwinding(True)", "")
    stacks = last_json(script(src))
    assert stacks and not any(f[2] for s in stacks for f in s[:-1])


def test_interpreter_builtins_that_call_back_are_kept(script):
    """sorted() is C inside the interpreter: between the Python caller and the
    Python key function it calls back, it must appear (by its real name),
    while the interpreter's call machinery is left out."""
    if not spprof.native_unwinding_available():
        pytest.fail("native unwinding needs libunwind: apt-get install libunwind8")
    stacks = last_json(script("""
        import json
        import spprof

        spprof.set_native_unwinding(True)

        def keyfn(x):
            s = 0
            for i in range(300):
                s += i
            return -x

        def run():
            return sorted(range(20000), key=keyfn)

        spprof.start(interval_ms=1)
        run()
        p = spprof.stop()
        print(json.dumps([[[f.function_name, f.filename, f.is_native] for f in s.frames] + [s.count]
                          for s in p.samples]))
    """))
    between = [_between(s[:-1], "run", "keyfn") for s in stacks]
    between = [b for b in between if b is not None]
    assert between, "keyfn never sampled under run"
    for b in between:
        names = [f[0] for f in b]
        assert names and names[0] == "builtin_sorted", names
        assert all(f[2] for f in b), b
        assert not any(n.startswith(("_PyEval_", "PyObject_Vectorcall", "_PyObject_Call")) for n in names), names

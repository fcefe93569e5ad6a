"""Shared helpers: run target scripts in a fresh interpreter, read profiles."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")


# Python called back from C: libc's qsort through ctypes, with a comparison
# written in Python (for the native-frame tests of both front doors).
QSORT_CALLBACK = """
import ctypes, ctypes.util

libc = ctypes.CDLL(ctypes.util.find_library("c"))
CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))

def py_cmp(a, b):
    s = 0
    for i in range(300):
        s += i
    return a[0] - b[0]

def run_qsort(n=4000):
    arr = (ctypes.c_int * n)(*range(n, 0, -1))
    libc.qsort(arr, len(arr), ctypes.sizeof(ctypes.c_int), CMP(py_cmp))
"""


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

"""spprof's knowledge of CPython's layout agrees with CPython itself."""

import dis
import glob
import importlib
import os
import subprocess
import sys
import types

import pytest

import spprof
from spprof import _spprof

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _code_objects(code):
    yield code
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _code_objects(c)


def _expected_lines(code):
    """(byte offset, line) pairs as CPython computes them."""
    if hasattr(code, "co_lines"):
        for start, end, line in code.co_lines():
            if line is None:
                continue
            for off in range(start, end, 2):
                yield off, line
    else:  # 3.9
        starts = list(dis.findlinestarts(code))
        for k, (off, line) in enumerate(starts):
            end = starts[k + 1][0] if k + 1 < len(starts) else len(code.co_code)
            for o in range(off, end, 2):
                yield o, line


@pytest.mark.parametrize("module", ["json.decoder", "re._parser" if sys.version_info >= (3, 11) else "sre_parse",
                                    "ast", "argparse", "asyncio.base_events", "dataclasses"])
def test_line_tables_match_cpython(module):
    mod = importlib.import_module(module)
    with open(mod.__file__) as f:
        top = compile(f.read(), mod.__file__, "exec")
    checked = 0
    for code in _code_objects(top):
        name, filename, _ = _spprof.addr2line(code, 0)
        assert filename == mod.__file__
        expected_name = getattr(code, "co_qualname", code.co_name)
        assert name == expected_name
        for off, line in _expected_lines(code):
            got = _spprof.addr2line(code, off)[2]
            assert got == line, (code, off, line, got)
            checked += 1
    assert checked > 1000


def test_unicode_names_read_exactly():
    for name in ["plain", "caf\u00e9", "\u03bb_\u03c6", "\U0001f600x", "a" * 300]:
        code = compile("def %s(): pass" % ("f_" + str(abs(hash(name)))), "<t>", "exec").co_consts[0]
        code = code.replace(co_name=name, **({"co_qualname": name} if hasattr(code, "co_qualname") else {}))
        assert _spprof.addr2line(code, 0)[0] == name


def test_layout_reports_running_version():
    layout = _spprof.layout()
    assert layout["version"] >> 16 == (sys.version_info[0] << 8) | sys.version_info[1]
    assert layout["frame_model"] == (0 if sys.version_info < (3, 11) else 1)


def test_committed_offsets_match_installed_headers():
    """The compiled-in table for 3.9-3.12 is what those versions' headers say
    (rerunning the generator on every such interpreter installed)."""
    pythons = []
    for v in ("3.9", "3.10", "3.11", "3.12"):
        found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/%s.*/bin/python%s" % (v, v))))
        found = [p for p in found if not p.split("/versions/")[1].split("/")[0].endswith("t")]
        if found:
            pythons.append(found[-1])
    if not pythons:
        pytest.fail("no CPython 3.9-3.12 with headers found under ~/.pyenv to check the table against")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_offsets.py"), "--check", *pythons],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_debug_offsets_of_a_newer_version_are_tried_and_bad_ones_refused():
    """3.13+: a version newer than any spprof knows is read with the newest
    known layout (with a warning); offsets that fail validation are refused."""
    if sys.version_info < (3, 13):
        # Before 3.13 there are no debug offsets: garbage must be refused.
        with pytest.raises(ValueError, match="not debug offsets"):
            _spprof.parse_debug_offsets(b"\0" * 2048)
        return
    import ctypes

    runtime = ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime")
    blob = bytearray(ctypes.string_at(ctypes.addressof(runtime), 2048))
    same = _spprof.parse_debug_offsets(bytes(blob))
    assert same["guessed"] is False
    assert same["version"] >> 16 == (3 << 8) | sys.version_info[1]
    future = bytearray(blob)
    future[8:16] = (0x03630000).to_bytes(8, "little")  # "3.99"
    if _spprof.layout()["newest_known_layout"] == same["version"] & 0xFFFF0000:
        # This is the newest layout spprof knows: a 3.99 laid out like it is
        # read with it, and says so.
        guess = _spprof.parse_debug_offsets(bytes(future))
        assert guess["guessed"] is True and guess["version"] == 0x03630000
    else:
        # Read with the newest layout, this older struct does not validate:
        # refused rather than misread.
        with pytest.raises(ValueError, match="failed validation"):
            _spprof.parse_debug_offsets(bytes(future))
    broken = bytearray(blob)
    broken[40:48] = (1 << 40).to_bytes(8, "little")  # runtime_state.interpreters_head: absurd
    with pytest.raises(ValueError, match="failed validation"):
        _spprof.parse_debug_offsets(bytes(broken))
    with pytest.raises(ValueError, match="not debug offsets"):
        _spprof.parse_debug_offsets(b"xdebugpz" + bytes(blob[8:]))


def _cut(r):
    """What dump --locals shows for a repr: whole up to 128 bytes, else cut
    after a character ending within 125 bytes, with '...'."""
    return r if len(r.encode()) <= 128 else None


def _check_repr(obj, typ):
    got, got_type = _spprof.value_repr(obj)
    want = repr(obj)
    assert got_type == typ, (obj, got_type)
    if _cut(want) is not None:
        assert got == want, (want, got)
    else:
        # cut: a prefix of Python's repr, within the bound, ending in '...'
        assert got.endswith("...") and want.startswith(got[:-3]), (want, got)
        assert 125 - 10 < len(got[:-3].encode()) <= 125, got


def test_value_reprs_match_python():
    """The value reader behind `dump --locals` reproduces repr() of ints,
    floats, str and bytes (read from memory with this version's layout)."""
    import random
    rnd = random.Random(1234)
    for v in (0, 1, -1, 2 ** 30 - 1, 2 ** 30, 2 ** 64, -(2 ** 64) - 1, 10 ** 200, -(10 ** 127),
              10 ** 124):
        _check_repr(v, "int")
    # past 256 digits (7,680 bits), no decimal conversion: its size instead
    big = 7 ** 5000
    assert _spprof.value_repr(big) == ("<int of about %d bits at 0x%x>"
                                       % (-(-big.bit_length() // 30) * 30, id(big)), "int")
    for _ in range(2000):
        _check_repr(rnd.getrandbits(rnd.randrange(1, 600)) * rnd.choice((1, -1)), "int")
    for v in (0.0, -0.0, 0.1, 1e16, 1e15, 123456789012345678.0, 1e22, 1e-4, 1e-5, 5e-324,
              1.7976931348623157e308, float("inf"), float("-inf"), float("nan"), 2.5, -1.5e-7):
        _check_repr(v, "float")
    import struct
    for _ in range(5000):
        v = struct.unpack("d", struct.pack("Q", rnd.getrandbits(64)))[0]
        _check_repr(v, "float")
        _check_repr(rnd.uniform(-1e6, 1e6), "float")
    # code points whose printability the reader knows without a Unicode
    # database: ASCII, Latin-1, Greek, CJK, emoji, and the quotes
    pools = [range(0, 0x100), range(0x3b1, 0x3ca), range(0x4e00, 0x4f00), range(0x1f600, 0x1f650),
             [0x27, 0x22, 0x5c, 0x2028, 0xfeff, 0xd800]]
    for _ in range(3000):
        n = rnd.choice((0, 1, 5, 40, 130, 300))
        s = "".join(chr(rnd.choice(rnd.choice(pools))) for _ in range(n))
        _check_repr(s, "str")
        _check_repr(bytes(rnd.randrange(256) for _ in range(n)), "bytes")
    _check_repr("'" * 3 + '"', "str")
    _check_repr(b"'", "bytes")
    for v, want in ((True, "True"), (False, "False"), (None, "None")):
        assert _spprof.value_repr(v)[0] == want
    lst = [1, 2]
    assert _spprof.value_repr(lst) == ("<list at 0x%x>" % id(lst), "list")

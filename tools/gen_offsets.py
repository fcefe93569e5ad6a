#!/usr/bin/env python3
"""Generates src/pyabi/offsets_table.c from the headers of installed CPythons.

For each interpreter given (default: the pyenv 3.9-3.12 ones found), compiles a
probe against its (internal) headers that prints the offsets spprof needs, and
writes one table row per minor version. The rows are committed, so neither the
extension nor the CLI needs Python headers of other versions to build; the
test suite reruns this with --check to prove the committed table matches the
headers on the machine.

3.13 and later need no row: their layout comes from the interpreter's own
_Py_DebugOffsets at run time.

Usage: python tools/gen_offsets.py [--check] [PYTHON ...]
"""
import glob
import os
import subprocess
import sys
import sysconfig
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = os.path.join(HERE, "..", "src", "pyabi", "offsets_table.c")

PROBE = r"""
#define Py_BUILD_CORE 1
#include <Python.h>
#include <frameobject.h>
#include <stddef.h>
#include <stdio.h>
#if PY_VERSION_HEX >= 0x030b0000
#include <internal/pycore_frame.h>
#endif
#include <internal/pycore_runtime.h>
#include <internal/pycore_interp.h>
#include <internal/pycore_pystate.h>

#define F(name, expr) printf("    .%s = %ld,\n", #name, (long)(expr))
int main(void)
{
    printf("{\n");
    printf("    .version = 0x%08lx,\n", (long)(PY_VERSION_HEX & 0xffff0000));
#if PY_VERSION_HEX >= 0x030b0000
    F(frame_model, 1);
#else
    F(frame_model, 0);
#endif
#if PY_VERSION_HEX >= 0x030b0000
    F(line_model, 2);
#elif PY_VERSION_HEX >= 0x030a0000
    F(line_model, 1);
#else
    F(line_model, 0);
#endif
    F(free_threaded, 0);
    F(runtime_interpreters_head, offsetof(_PyRuntimeState, interpreters.head));
#if PY_VERSION_HEX >= 0x030b0000
    F(interp_threads_head, offsetof(PyInterpreterState, threads.head));
#else
    F(interp_threads_head, offsetof(PyInterpreterState, tstate_head));
#endif
    F(interp_next, offsetof(PyInterpreterState, next));
    F(tstate_next, offsetof(PyThreadState, next));
    F(tstate_interp, offsetof(PyThreadState, interp));
    F(tstate_thread_id, offsetof(PyThreadState, thread_id));
#if PY_VERSION_HEX >= 0x030b0000
    F(tstate_native_thread_id, offsetof(PyThreadState, native_thread_id));
#else
    F(tstate_native_thread_id, -1);
#endif
#if PY_VERSION_HEX >= 0x030b0000
    F(tstate_frame, offsetof(PyThreadState, cframe));
    F(cframe_current_frame, offsetof(_PyCFrame, current_frame));
    F(frame_previous, offsetof(_PyInterpreterFrame, previous));
    F(frame_code, offsetof(_PyInterpreterFrame, f_code));
    F(frame_instr, offsetof(_PyInterpreterFrame, prev_instr));
    F(frame_owner, offsetof(_PyInterpreterFrame, owner));
#if PY_VERSION_HEX >= 0x030c0000
    F(owner_cstack, FRAME_OWNED_BY_CSTACK);
    F(frame_is_entry, -1);
#else
    F(owner_cstack, -1);
    F(frame_is_entry, offsetof(_PyInterpreterFrame, is_entry));
#endif
    F(frame_size, sizeof(_PyInterpreterFrame));
    F(code_qualname, offsetof(PyCodeObject, co_qualname));
    F(code_adaptive, offsetof(PyCodeObject, co_code_adaptive));
#else
    F(tstate_frame, offsetof(PyThreadState, frame));
    F(cframe_current_frame, -1);
    F(frame_previous, offsetof(PyFrameObject, f_back));
    F(frame_code, offsetof(PyFrameObject, f_code));
    F(frame_instr, offsetof(PyFrameObject, f_lasti));
    F(frame_owner, -1);
    F(owner_cstack, -1);
    F(frame_is_entry, -1);
    F(frame_size, sizeof(PyFrameObject));
    F(code_qualname, -1);
    F(code_adaptive, -1);
#endif
#if PY_VERSION_HEX >= 0x030c0000
    F(gil_in_interp, 1);
    F(gil_locked, offsetof(PyInterpreterState, _gil.locked));
    F(gil_holder, offsetof(PyInterpreterState, _gil.last_holder));
#else
    F(gil_in_interp, 0);
    F(gil_locked, offsetof(_PyRuntimeState, ceval.gil.locked));
    F(gil_holder, offsetof(_PyRuntimeState, ceval.gil.last_holder));
#endif
    F(code_filename, offsetof(PyCodeObject, co_filename));
    F(code_name, offsetof(PyCodeObject, co_name));
    F(code_firstlineno, offsetof(PyCodeObject, co_firstlineno));
#if PY_VERSION_HEX >= 0x030a0000
    F(code_linetable, offsetof(PyCodeObject, co_linetable));
#else
    F(code_linetable, offsetof(PyCodeObject, co_lnotab));
#endif
    F(code_size, sizeof(PyCodeObject));
    F(object_type, offsetof(PyObject, ob_type));
    F(unicode_state, offsetof(PyASCIIObject, state));
    F(unicode_length, offsetof(PyASCIIObject, length));
    F(unicode_ascii_size, sizeof(PyASCIIObject));
    F(unicode_compact_size, sizeof(PyCompactUnicodeObject));
    F(bytes_size, offsetof(PyVarObject, ob_size));
    F(bytes_sval, offsetof(PyBytesObject, ob_sval));
    printf("},\n");
    return 0;
}
"""


def find_pythons():
    root = os.path.expanduser("~/.pyenv/versions")
    found = {}
    for path in sorted(glob.glob(os.path.join(root, "3.*", "bin", "python3"))):
        ver = os.path.basename(os.path.dirname(os.path.dirname(path)))
        minor = tuple(int(x) for x in ver.split(".")[:2])
        if (3, 9) <= minor <= (3, 12) and "t" not in ver:
            found[minor] = path
    return [found[k] for k in sorted(found)]


def probe(python):
    include = subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"], text=True
    ).strip()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(src, "w") as f:
            f.write(PROBE)
        subprocess.check_call(["cc", "-I", include, src, "-o", exe])
        return subprocess.check_output([exe], text=True)


def render(rows):
    return (
        "/* offsets_table.c - CPython layouts for 3.9-3.12, generated by\n"
        " * tools/gen_offsets.py from each version's headers. Do not edit. */\n"
        '#include "offsets.h"\n\n'
        "const spp_pyoffsets spp_pyoffsets_table[] = {\n"
        + "".join(rows)
        + "};\n\nconst unsigned spp_pyoffsets_table_len =\n"
        "    sizeof(spp_pyoffsets_table) / sizeof(spp_pyoffsets_table[0]);\n"
    )


def main(argv):
    check = "--check" in argv
    pythons = [a for a in argv if a != "--check"] or find_pythons()
    if not pythons:
        sys.exit("gen_offsets: no CPython 3.9-3.12 with headers found")
    text = render([probe(p) for p in pythons])
    if check:
        with open(TABLE) as f:
            current = f.read()
        for row in text.split("{\n")[1:]:
            if row.split("},")[0] not in current:
                sys.exit("gen_offsets: the committed table differs from the headers:\n" + row)
        print("gen_offsets: table matches %d interpreter(s)" % len(pythons))
        return
    with open(TABLE, "w") as f:
        f.write(text)
    print("gen_offsets: wrote %s (%d rows)" % (TABLE, len(pythons)))


if __name__ == "__main__":
    main(sys.argv[1:])

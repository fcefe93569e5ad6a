#!/usr/bin/env python3
"""Generates src/pyabi/offsets_table.c from the headers of installed CPythons.

For each interpreter given (default: the pyenv 3.9-3.12 ones found), compiles a
probe against its (internal) headers that prints the offsets spprof needs, and
writes one table row per minor version. The rows are committed, so neither the
extension nor the CLI needs Python headers of other versions to build; the
test suite reruns this with --check to prove the committed table matches the
headers on the machine.

For 3.13 and later the layout itself comes from the interpreter's own
_Py_DebugOffsets at run time; what is generated is where each field sits in
that struct (it changes between versions) and the facts it does not carry.

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
#if PY_VERSION_HEX < 0x030b0000
#include <longintrepr.h>
#endif
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#if PY_VERSION_HEX >= 0x030b0000
#include <internal/pycore_frame.h>
#endif
#include <internal/pycore_runtime.h>
#include <internal/pycore_interp.h>
#include <internal/pycore_pystate.h>
#if PY_VERSION_HEX >= 0x030b0000
#include <internal/pycore_dict.h>
#include <internal/pycore_moduleobject.h>
#include <internal/pycore_object.h>
#else
/* Not installed before 3.11: the keys object of Objects/dict-common.h and
 * the module object of Objects/moduleobject.c, as 3.9 and 3.10 define them. */
typedef struct {
    Py_hash_t me_hash;
    PyObject *me_key;
    PyObject *me_value;
} PyDictKeyEntry;
struct probe_keys {
    Py_ssize_t dk_refcnt;
    Py_ssize_t dk_size;
    void *dk_lookup;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
    char dk_indices[];
};
typedef struct {
    PyObject_HEAD
    PyObject *md_dict;
} PyModuleObject;
#endif
/* attrs.c reads an entry's key and value as its last two pointers. */
_Static_assert(offsetof(PyDictKeyEntry, me_key) + 16 == sizeof(PyDictKeyEntry), "entry");
_Static_assert(offsetof(PyDictKeyEntry, me_value) + 8 == sizeof(PyDictKeyEntry), "entry");

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
    F(cframe_previous, offsetof(_PyCFrame, previous));
    F(frame_previous, offsetof(_PyInterpreterFrame, previous));
    F(frame_code, offsetof(_PyInterpreterFrame, f_code));
    F(frame_instr, offsetof(_PyInterpreterFrame, prev_instr));
    F(frame_owner, offsetof(_PyInterpreterFrame, owner));
#if PY_VERSION_HEX >= 0x030c0000
    F(owner_skip, FRAME_OWNED_BY_CSTACK);
    F(frame_is_entry, -1);
#else
    F(owner_skip, -1);
    F(frame_is_entry, offsetof(_PyInterpreterFrame, is_entry));
#endif
    F(frame_size, sizeof(_PyInterpreterFrame));
    F(code_qualname, offsetof(PyCodeObject, co_qualname));
    F(code_adaptive, offsetof(PyCodeObject, co_code_adaptive));
#else
    F(tstate_frame, offsetof(PyThreadState, frame));
    F(cframe_current_frame, -1);
    F(cframe_previous, -1);
    F(frame_previous, offsetof(PyFrameObject, f_back));
    F(frame_code, offsetof(PyFrameObject, f_code));
    F(frame_instr, offsetof(PyFrameObject, f_lasti));
    F(frame_owner, -1);
    F(owner_skip, -1);
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
    F(frame_tlbc_index, -1);
    F(code_tlbc, -1);
#if PY_VERSION_HEX >= 0x030b0000
    F(frame_state, offsetof(PyGenObject, gi_frame_state) - offsetof(PyGenObject, gi_iframe));
    F(state_executing, FRAME_EXECUTING);
    F(owner_generator, FRAME_OWNED_BY_GENERATOR);
#elif PY_VERSION_HEX >= 0x030a0000
    F(frame_state, offsetof(PyFrameObject, f_state));
    F(state_executing, FRAME_EXECUTING);
    F(owner_generator, -1);
#else
    F(frame_state, offsetof(PyFrameObject, f_executing));
    F(state_executing, 1);
    F(owner_generator, -1);
#endif
#if PY_VERSION_HEX >= 0x030b0000
    F(frame_localsplus, offsetof(_PyInterpreterFrame, localsplus));
    F(code_varnames, offsetof(PyCodeObject, co_localsplusnames));
    F(code_kinds, offsetof(PyCodeObject, co_localspluskinds));
    F(code_cellvars, -1);
    F(code_freevars, -1);
#else
    F(frame_localsplus, offsetof(PyFrameObject, f_localsplus));
    F(code_varnames, offsetof(PyCodeObject, co_varnames));
    F(code_kinds, -1);
    F(code_cellvars, offsetof(PyCodeObject, co_cellvars));
    F(code_freevars, offsetof(PyCodeObject, co_freevars));
#endif
    F(locals_tag_bits, 0);
    F(tuple_item, offsetof(PyTupleObject, ob_item));
#if PY_VERSION_HEX >= 0x030c0000
    F(long_tag, offsetof(PyLongObject, long_value.lv_tag));
    F(long_digits, offsetof(PyLongObject, long_value.ob_digit));
#else
    F(long_tag, -1);
    F(long_digits, offsetof(PyLongObject, ob_digit));
#endif
    F(long_shift, PyLong_SHIFT);
    F(long_digit_size, sizeof(digit));
    F(float_value, offsetof(PyFloatObject, ob_fval));
    F(type_name, offsetof(PyTypeObject, tp_name));
    F(cell_ref, offsetof(PyCellObject, ob_ref));
    {
        PyASCIIObject a;
        memset(&a, 0, sizeof(a));
        a.state.kind = 1;
        unsigned int bits;
        memcpy(&bits, &a.state, sizeof(bits));
        F(unicode_kind_shift, __builtin_ctz(bits));
    }
    F(interp_modules, offsetof(PyInterpreterState, MODULES));
    F(module_dict, offsetof(PyModuleObject, md_dict));
    F(dict_keys, offsetof(PyDictObject, ma_keys));
    F(dict_values, offsetof(PyDictObject, ma_values));
#if PY_VERSION_HEX >= 0x030b0000
    F(keys_size, -1);
    F(keys_log2_size, offsetof(PyDictKeysObject, dk_log2_size));
    F(keys_log2_index_bytes, offsetof(PyDictKeysObject, dk_log2_index_bytes));
    F(keys_kind, offsetof(PyDictKeysObject, dk_kind));
    F(keys_nentries, offsetof(PyDictKeysObject, dk_nentries));
    F(keys_indices, offsetof(PyDictKeysObject, dk_indices));
    F(unicode_entry_size, sizeof(PyDictUnicodeEntry));
    F(values_items, offsetof(PyDictValues, values));
    F(flag_managed_dict, Py_TPFLAGS_MANAGED_DICT);
    _Static_assert(DICT_KEYS_GENERAL == 0, "general keys");
    _Static_assert(offsetof(PyDictUnicodeEntry, me_key) + 16 == sizeof(PyDictUnicodeEntry), "entry");
#else
    F(keys_size, offsetof(struct probe_keys, dk_size));
    F(keys_log2_size, -1);
    F(keys_log2_index_bytes, -1);
    F(keys_kind, -1);
    F(keys_nentries, offsetof(struct probe_keys, dk_nentries));
    F(keys_indices, offsetof(struct probe_keys, dk_indices));
    F(unicode_entry_size, -1);
    F(values_items, 0); /* ma_values is the PyObject ** array itself */
    F(flag_managed_dict, 0);
#endif
    F(entry_size, sizeof(PyDictKeyEntry));
    F(values_capacity, -1);
    F(values_valid, -1);
    F(type_flags, offsetof(PyTypeObject, tp_flags));
    F(type_dictoffset, offsetof(PyTypeObject, tp_dictoffset));
    F(type_basicsize, offsetof(PyTypeObject, tp_basicsize));
    F(type_cached_keys, offsetof(PyHeapTypeObject, ht_cached_keys));
    F(flag_inline_values, 0);
    {
        /* Where the pre-header pointers sit, asked of the headers' own
         * accessors on a fake object of a type with a managed dict. */
        static PyTypeObject type;
        static PyObject *mem[8];
        PyObject *obj = (PyObject *)&mem[4];
        type.tp_flags = 0;
#if PY_VERSION_HEX >= 0x030c0000
        type.tp_flags = Py_TPFLAGS_MANAGED_DICT;
        Py_SET_TYPE(obj, &type);
        F(attr_model, 2);
        F(managed_dict, (char *)_PyObject_DictOrValuesPointer(obj) - (char *)obj);
        F(managed_values, 0);
#elif PY_VERSION_HEX >= 0x030b0000
        type.tp_flags = Py_TPFLAGS_MANAGED_DICT;
        Py_SET_TYPE(obj, &type);
        F(attr_model, 1);
        F(managed_dict, (char *)_PyObject_ManagedDictPointer(obj) - (char *)obj);
        F(managed_values, (char *)_PyObject_ValuesPointer(obj) - (char *)obj);
#else
        (void)obj;
        F(attr_model, 0);
        F(managed_dict, 0);
        F(managed_values, 0);
#endif
    }
    printf("},\n");
    return 0;
}
"""


# For 3.13 and later: where each field spprof reads sits inside the
# interpreter's _Py_DebugOffsets (whose layout changes between versions), and
# the few facts the debug offsets do not carry.
DEBUG_PROBE = r"""
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <internal/pycore_runtime.h>
#if PY_VERSION_HEX >= 0x030e0000
#include <internal/pycore_debug_offsets.h>
#include <internal/pycore_interpframe_structs.h>
#include <internal/pycore_stackref.h>
#endif
#include <internal/pycore_frame.h>
#include <internal/pycore_dict.h>
#include <internal/pycore_moduleobject.h>
#include <internal/pycore_object.h>
_Static_assert(DICT_KEYS_GENERAL == 0, "general keys");
_Static_assert(offsetof(PyDictKeyEntry, me_key) + 16 == sizeof(PyDictKeyEntry), "entry");
_Static_assert(offsetof(PyDictUnicodeEntry, me_key) + 16 == sizeof(PyDictUnicodeEntry), "entry");
#define D(name, member) printf("    .%s = %ld,\n", #name, (long)offsetof(_Py_DebugOffsets, member))
#define V(name, expr) printf("    .%s = %ld,\n", #name, (long)(expr))
int main(void)
{
    printf("{\n");
    printf("    .version = 0x%08lx,\n", (long)(PY_VERSION_HEX & 0xffff0000));
#ifdef Py_GIL_DISABLED
    V(free_threaded, 1);
#else
    V(free_threaded, 0);
#endif
    D(runtime_interpreters_head, runtime_state.interpreters_head);
    D(interp_size, interpreter_state.size);
    D(interp_next, interpreter_state.next);
    D(interp_threads_head, interpreter_state.threads_head);
    D(interp_gil_locked, interpreter_state.gil_runtime_state_locked);
    D(interp_gil_holder, interpreter_state.gil_runtime_state_holder);
    D(tstate_size, thread_state.size);
    D(tstate_next, thread_state.next);
    D(tstate_interp, thread_state.interp);
    D(tstate_frame, thread_state.current_frame);
    D(tstate_thread_id, thread_state.thread_id);
    D(tstate_native_thread_id, thread_state.native_thread_id);
    D(frame_size, interpreter_frame.size);
    D(frame_previous, interpreter_frame.previous);
    D(frame_code, interpreter_frame.executable);
    D(frame_instr, interpreter_frame.instr_ptr);
    D(frame_owner, interpreter_frame.owner);
#if PY_VERSION_HEX >= 0x030e0000
    D(frame_tlbc_index, interpreter_frame.tlbc_index);
    D(code_tlbc, code_object.co_tlbc);
    V(owner_skip, FRAME_OWNED_BY_INTERPRETER);
    V(code_tagged, 1);
#else
    V(frame_tlbc_index, -1);
    V(code_tlbc, -1);
    V(owner_skip, FRAME_OWNED_BY_CSTACK);
    V(code_tagged, 0);
#endif
    V(frame_state, offsetof(PyGenObject, gi_frame_state) - offsetof(PyGenObject, gi_iframe));
    V(state_executing, FRAME_EXECUTING);
    V(owner_generator, FRAME_OWNED_BY_GENERATOR);
    D(code_size, code_object.size);
    D(code_filename, code_object.filename);
    D(code_name, code_object.name);
    D(code_qualname, code_object.qualname);
    D(code_linetable, code_object.linetable);
    D(code_firstlineno, code_object.firstlineno);
    D(code_adaptive, code_object.co_code_adaptive);
    D(object_type, pyobject.ob_type);
    D(bytes_size, bytes_object.ob_size);
    D(bytes_sval, bytes_object.ob_sval);
    D(unicode_state, unicode_object.state);
    D(unicode_length, unicode_object.length);
    D(unicode_ascii_size, unicode_object.asciiobject_size);
    V(unicode_compact_extra, sizeof(PyCompactUnicodeObject) - sizeof(PyASCIIObject));
    {
        /* The bit where a str's kind starts within its state word. */
        PyASCIIObject a;
        memset(&a, 0, sizeof(a));
        a.state.kind = 1;
        unsigned int bits;
        memcpy(&bits, &a.state, sizeof(bits));
        V(unicode_kind_shift, __builtin_ctz(bits));
    }
    D(frame_localsplus, interpreter_frame.localsplus);
    D(code_varnames, code_object.localsplusnames);
    D(code_kinds, code_object.localspluskinds);
    D(tuple_item, tuple_object.ob_item);
    D(long_tag, long_object.lv_tag);
    D(long_digits, long_object.ob_digit);
    D(float_value, float_object.ob_fval);
    D(type_name, type_object.tp_name);
    /* What the debug offsets do not carry: the digit format of ints, where
     * a cell keeps its value, and the tag bits of 3.14+'s _PyStackRef
     * locals (which depend on the build flavour). */
    V(long_shift, PyLong_SHIFT);
    V(long_digit_size, sizeof(digit));
    V(cell_ref, offsetof(PyCellObject, ob_ref));
#if PY_VERSION_HEX >= 0x030e0000
    V(locals_tag_bits, Py_TAG_BITS);
#else
    V(locals_tag_bits, 0);
#endif
    D(interp_modules, interpreter_state.imports_modules);
    D(type_flags, type_object.tp_flags);
    D(dict_size, dict_object.size);
    D(dict_keys, dict_object.ma_keys);
    D(dict_values, dict_object.ma_values);
    /* What they do not say about dicts, modules and instance attributes. */
    V(module_dict, offsetof(PyModuleObject, md_dict));
    V(keys_log2_size, offsetof(PyDictKeysObject, dk_log2_size));
    V(keys_log2_index_bytes, offsetof(PyDictKeysObject, dk_log2_index_bytes));
    V(keys_kind, offsetof(PyDictKeysObject, dk_kind));
    V(keys_nentries, offsetof(PyDictKeysObject, dk_nentries));
    V(keys_indices, offsetof(PyDictKeysObject, dk_indices));
    V(entry_size, sizeof(PyDictKeyEntry));
    V(unicode_entry_size, sizeof(PyDictUnicodeEntry));
    V(values_items, offsetof(PyDictValues, values));
    V(values_capacity, offsetof(PyDictValues, capacity));
    V(values_valid, offsetof(PyDictValues, valid));
    V(type_dictoffset, offsetof(PyTypeObject, tp_dictoffset));
    V(type_basicsize, offsetof(PyTypeObject, tp_basicsize));
    V(type_cached_keys, offsetof(PyHeapTypeObject, ht_cached_keys));
    V(managed_dict, MANAGED_DICT_OFFSET);
    V(flag_managed_dict, Py_TPFLAGS_MANAGED_DICT);
    V(flag_inline_values, Py_TPFLAGS_INLINE_VALUES);
    V(debug_size, sizeof(_Py_DebugOffsets));
    printf("},\n");
    return 0;
}
"""


def describe(python):
    """(major, minor, free-threaded) of an interpreter."""
    out = subprocess.check_output(
        [python, "-c", "import sys, sysconfig; print(*sys.version_info[:2], "
         "int(bool(sysconfig.get_config_var('Py_GIL_DISABLED'))))"], text=True)
    major, minor, ft = (int(x) for x in out.split())
    return major, minor, ft


def find_pythons():
    """Every CPython 3.9+ with headers: pyenv's and the project's built ones."""
    roots = [os.path.expanduser("~/.pyenv/versions/3.*/bin/python3"),
             os.path.join(os.environ.get("SPPROF_PYTHONS") or os.path.expanduser("~/.cache/spprof/pythons"),
                          "*", "bin", "python3")]
    found = {}
    for pattern in roots:
        for path in sorted(glob.glob(pattern)):
            try:
                key = describe(path)
            except (OSError, subprocess.CalledProcessError):
                continue
            if key[:2] >= (3, 9):
                found[key] = path
    return [found[k] for k in sorted(found)]


def probe(python, source):
    major, minor, _ = describe(python)
    modules = "imports.modules" if (major, minor) >= (3, 12) else "modules"
    source = "#define MODULES %s\n" % modules + source
    include = subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"], text=True
    ).strip()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(src, "w") as f:
            f.write(source)
        subprocess.check_call(["cc", "-I", include, src, "-o", exe])
        return subprocess.check_output([exe], text=True)


def render(rows, debug_rows):
    return (
        "/* offsets_table.c - CPython layouts, generated by tools/gen_offsets.py\n"
        " * from each version's headers. Do not edit.\n"
        " *\n"
        " * spp_pyoffsets_table: the whole layout of 3.9-3.12.\n"
        " * spp_debug_layouts: for 3.13 and later, where each field sits inside the\n"
        " * interpreter's own _Py_DebugOffsets, plus what those do not say. */\n"
        '#include "offsets.h"\n\n'
        "const spp_pyoffsets spp_pyoffsets_table[] = {\n"
        + "".join(rows)
        + "};\n\nconst unsigned spp_pyoffsets_table_len =\n"
        "    sizeof(spp_pyoffsets_table) / sizeof(spp_pyoffsets_table[0]);\n\n"
        "const spp_debug_layout spp_debug_layouts[] = {\n"
        + "".join(debug_rows)
        + "};\n\nconst unsigned spp_debug_layouts_len =\n"
        "    sizeof(spp_debug_layouts) / sizeof(spp_debug_layouts[0]);\n"
    )


def main(argv):
    check = "--check" in argv
    pythons = [a for a in argv if a != "--check"] or find_pythons()
    if not pythons:
        sys.exit("gen_offsets: no CPython 3.9+ with headers found")
    described = [(describe(p), p) for p in pythons]
    table = [probe(p, PROBE) for k, p in described if k[:2] <= (3, 12) and not k[2]]
    debug = [probe(p, DEBUG_PROBE) for k, p in described if k[:2] >= (3, 13)]
    text = render(table, debug)
    if check:
        with open(TABLE) as f:
            current = f.read()
        for row in text.split("{\n")[1:]:
            if row.split("},")[0] not in current:
                sys.exit("gen_offsets: the committed table differs from the headers:\n" + row)
        print("gen_offsets: tables match %d interpreter(s)" % len(pythons))
        return
    with open(TABLE, "w") as f:
        f.write(text)
    print("gen_offsets: wrote %s (%d rows)" % (TABLE, len(pythons)))


if __name__ == "__main__":
    main(sys.argv[1:])

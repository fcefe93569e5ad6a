/* offsets.h - everything spprof knows about a CPython version's memory
 * layout, in one table row. Nothing else in the code asks which version it
 * is reading: it reads these offsets.
 *
 * Rows for 3.9-3.12 are compiled in (offsets_table.c, generated from the
 * headers); 3.13 and later are read from the interpreter's _Py_DebugOffsets.
 * All functions are pure and async-signal-safe.
 */
#ifndef SPP_OFFSETS_H
#define SPP_OFFSETS_H

#include <stddef.h>
#include <stdint.h>

enum spp_frame_model {
    SPP_FRAMES_OBJECT = 0,  /* 3.9-3.10: PyFrameObject chain, f_lasti int */
    SPP_FRAMES_INTERP = 1,  /* 3.11+: _PyInterpreterFrame chain, instruction pointer */
};

/* Where an object keeps its instance attributes (attrs.c). */
enum spp_attr_model {
    SPP_ATTRS_DICTOFFSET = 0, /* 3.9-3.10: a dict at tp_dictoffset */
    SPP_ATTRS_VALUES = 1,     /* 3.11: values and dict pointers before the object */
    SPP_ATTRS_TAGGED = 2,     /* 3.12: one pointer before it: values - 1 (odd) or a dict */
    SPP_ATTRS_INLINE = 3,     /* 3.13+: values after tp_basicsize, or the managed dict */
};

enum spp_line_model {
    SPP_LINES_LNOTAB = 0,     /* 3.9 co_lnotab, byte offsets */
    SPP_LINES_LINETABLE = 1,  /* 3.10 co_linetable, byte offsets */
    SPP_LINES_LOCATIONS = 2,  /* 3.11+ location table, code units */
};

/* Offsets are in bytes; -1 means the field does not exist in that version. */
typedef struct spp_pyoffsets {
    uint32_t version;        /* PY_VERSION_HEX of major.minor (0x030b0000) */
    int8_t frame_model;      /* enum spp_frame_model */
    int8_t line_model;       /* enum spp_line_model */
    int8_t free_threaded;
    int8_t code_tagged;      /* frame code is a tagged _PyStackRef (mask low bits) */
    int32_t runtime_interpreters_head;
    int32_t interp_threads_head;
    int32_t interp_next;
    int32_t tstate_next;
    int32_t tstate_interp;
    int32_t tstate_thread_id;
    int32_t tstate_native_thread_id;
    int32_t tstate_frame;          /* the current frame, or the cframe pointer */
    int32_t cframe_current_frame;  /* -1 unless frames hang off a _PyCFrame */
    int32_t cframe_previous;       /* the _PyCFrame of the calling evaluation loop */
    int32_t frame_previous;
    int32_t frame_code;
    int32_t frame_instr;           /* f_lasti (int), prev_instr or instr_ptr */
    int32_t frame_owner;           /* char */
    int32_t owner_skip;            /* frames with an owner >= this are interpreter shims */
    int32_t frame_is_entry;        /* 3.11: bool marking the first frame of an eval call */
    int32_t frame_size;
    int8_t gil_in_interp;          /* GIL state lives in the interpreter, not the runtime */
    int32_t gil_locked;            /* int: the GIL is held */
    int32_t gil_holder;            /* pointer: PyThreadState that last held it */
    int32_t code_qualname;
    int32_t code_adaptive;         /* start of the bytecode inside the code object */
    int32_t code_filename;
    int32_t code_name;
    int32_t code_firstlineno;
    int32_t code_linetable;
    int32_t code_size;
    int32_t object_type;
    int32_t unicode_state;
    int32_t unicode_length;
    int32_t unicode_ascii_size;
    int32_t unicode_compact_size;
    int32_t bytes_size;
    int32_t bytes_sval;
    int32_t frame_tlbc_index;      /* int32: which thread-local bytecode copy runs (3.14t) */
    int32_t code_tlbc;             /* pointer to the _PyCodeArray of copies (3.14t) */
    int32_t unicode_kind_shift;    /* bit where a str's kind starts in its state */
    /* Whether a frame is running: a byte at frame + frame_state (3.9
     * f_executing, 3.10 f_state) or, from 3.11, in the generator that owns
     * a frame of owner owner_generator (gi_frame_state, before the frame:
     * frame_state is negative); running when it equals state_executing. */
    int32_t frame_state;
    int32_t state_executing;
    int32_t owner_generator;       /* -1 before 3.11 */
    /* Locals (values.c). 3.11+: one localsplus array named by
     * co_localsplusnames, each slot's kind in co_localspluskinds; 3.9/3.10:
     * f_localsplus holds co_varnames, then co_cellvars, then co_freevars. */
    int32_t frame_localsplus;
    int32_t code_varnames;         /* co_localsplusnames, or co_varnames */
    int32_t code_kinds;            /* co_localspluskinds (bytes), -1 before 3.11 */
    int32_t code_cellvars;         /* 3.9/3.10 only */
    int32_t code_freevars;         /* 3.9/3.10 only */
    int32_t locals_tag_bits;       /* low bits of a 3.14+ _PyStackRef that are not the pointer */
    int32_t tuple_item;
    int32_t long_tag;              /* lv_tag (3.12+); before, the sign and size are ob_size */
    int32_t long_digits;
    int32_t long_shift;            /* bits per digit */
    int32_t long_digit_size;       /* bytes per digit */
    int32_t float_value;
    int32_t type_name;             /* tp_name, a char * */
    int32_t cell_ref;
    /* Thread names (attrs.c): the Thread objects in threading._active and
     * their _name. dk_* are PyDictKeysObject fields, values_* those of a
     * split dict's values (PyDictValues). */
    int32_t attr_model;            /* enum spp_attr_model */
    int32_t interp_modules;        /* sys.modules: interp->modules, or imports.modules */
    int32_t module_dict;           /* md_dict */
    int32_t dict_keys;             /* ma_keys */
    int32_t dict_values;           /* ma_values */
    int32_t keys_size;             /* Py_ssize_t dk_size (3.9/3.10), -1 after */
    int32_t keys_log2_size;        /* uint8 dk_log2_size (3.11+), -1 before */
    int32_t keys_log2_index_bytes; /* uint8 (3.11+): entries follow 1 << this bytes of index */
    int32_t keys_kind;             /* uint8 dk_kind (3.11+); 0 is general (hash, key, value) */
    int32_t keys_nentries;
    int32_t keys_indices;
    int32_t entry_size;            /* hash, key, value */
    int32_t unicode_entry_size;    /* key, value (3.11+ unicode and split keys), -1 before */
    int32_t values_items;          /* where values[] starts in a PyDictValues */
    int32_t values_capacity;       /* uint8 (3.13+), -1 before */
    int32_t values_valid;          /* uint8 (3.13+): the inline values are in use */
    int32_t type_flags;            /* tp_flags (unsigned long) */
    int32_t type_dictoffset;
    int32_t type_basicsize;
    int32_t type_cached_keys;      /* ht_cached_keys: the keys of managed values */
    int32_t managed_dict;          /* the dict pointer, from the object (negative); 0 none */
    int32_t managed_values;        /* 3.11: the values pointer (negative); 0 none */
    int32_t flag_managed_dict;     /* Py_TPFLAGS_MANAGED_DICT, 0 before 3.11 */
    int32_t flag_inline_values;    /* Py_TPFLAGS_INLINE_VALUES, 0 before 3.13 */
} spp_pyoffsets;

/* For 3.13 and later: byte positions, inside _Py_DebugOffsets, of the
 * fields spprof reads, for one minor version (and build flavour). */
typedef struct spp_debug_layout {
    uint32_t version;
    int32_t free_threaded;
    int32_t runtime_interpreters_head, interp_size, interp_next, interp_threads_head,
        interp_gil_locked, interp_gil_holder;
    int32_t tstate_size, tstate_next, tstate_interp, tstate_frame, tstate_thread_id,
        tstate_native_thread_id;
    int32_t frame_size, frame_previous, frame_code, frame_instr, frame_owner, frame_tlbc_index,
        code_tlbc;
    int32_t owner_skip, code_tagged;
    int32_t frame_state, state_executing, owner_generator;
    int32_t code_size, code_filename, code_name, code_qualname, code_linetable,
        code_firstlineno, code_adaptive;
    int32_t object_type, bytes_size, bytes_sval;
    int32_t unicode_state, unicode_length, unicode_ascii_size, unicode_compact_extra,
        unicode_kind_shift;
    int32_t frame_localsplus, code_varnames, code_kinds, tuple_item, long_tag, long_digits,
        float_value, type_name;
    int32_t long_shift, long_digit_size, cell_ref, locals_tag_bits;
    /* Thread names: positions in _Py_DebugOffsets, then facts it lacks. */
    int32_t interp_modules, type_flags, dict_size, dict_keys, dict_values;
    int32_t module_dict, keys_log2_size, keys_log2_index_bytes, keys_kind, keys_nentries,
        keys_indices, entry_size, unicode_entry_size, values_items, values_capacity,
        values_valid, type_dictoffset, type_basicsize, type_cached_keys, managed_dict,
        flag_managed_dict, flag_inline_values;
    int32_t debug_size;
} spp_debug_layout;

extern const spp_debug_layout spp_debug_layouts[];
extern const unsigned spp_debug_layouts_len;

extern const spp_pyoffsets spp_pyoffsets_table[];
extern const unsigned spp_pyoffsets_table_len;

/* The compiled-in row for a version (major.minor of hexversion), or NULL. */
const spp_pyoffsets *spp_pyoffsets_for_version(uint32_t hexversion);

/* Fills *out from the bytes of a _Py_DebugOffsets (3.13+) as found at the
 * start of _PyRuntime, using the layout of the same minor version, or of
 * the newest known one for a newer version (then *guessed is set). Returns
 * 0, or SPP_EINVAL when the cookie, version or any offset fails validation
 * (the caller reports which version it saw). */
int spp_pyoffsets_from_debug(spp_pyoffsets *out, const void *data, size_t len, int *guessed);

/* The largest offset that spp_pyoffsets_from_debug may read. */
#define SPP_DEBUG_OFFSETS_MAX 2048

#endif

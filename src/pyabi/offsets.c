/* offsets.c - picks a compiled-in layout row, or builds one from a running
 * interpreter's _Py_DebugOffsets (3.13+). */
#include "offsets.h"

#include <string.h>

#include "../core/profile.h"

const spp_pyoffsets *spp_pyoffsets_for_version(uint32_t hexversion)
{
    uint32_t want = hexversion & 0xffff0000u;
    for (unsigned i = 0; i < spp_pyoffsets_table_len; i++)
        if (spp_pyoffsets_table[i].version == want)
            return &spp_pyoffsets_table[i];
    return NULL;
}

/* The 3.13 _Py_DebugOffsets is a cookie, then uint64 fields grouped by
 * struct, each group starting with the struct's size. These are the indexes
 * (in uint64 units after the 8-byte cookie) of the fields spprof uses. */
enum {
    D13_VERSION = 0,
    D13_FREE_THREADED = 1,
    D13_RUNTIME = 2,          /* size, finalizing, interpreters_head */
    D13_INTERP = 5,           /* size, id, next, threads_head, ... (13) */
    D13_TSTATE = 18,          /* size, prev, next, interp, current_frame, thread_id, native_thread_id, datastack_chunk, status */
    D13_FRAME = 27,           /* size, previous, executable, instr_ptr, localsplus, owner */
    D13_CODE = 33,            /* size, filename, name, qualname, linetable, firstlineno, argcount, localsplusnames, localspluskinds, co_code_adaptive */
    D13_PYOBJECT = 43,        /* size, ob_type */
    D13_TYPE = 45,            /* size, tp_name, tp_repr, tp_flags */
    D13_TUPLE = 49,           /* size, ob_item, ob_size */
    D13_LIST = 52,
    D13_DICT = 55,
    D13_FLOAT = 58,           /* size, ob_fval */
    D13_LONG = 60,            /* size, lv_tag, ob_digit */
    D13_BYTES = 63,           /* size, ob_size, ob_sval */
    D13_UNICODE = 66,         /* size, state, length, asciiobject_size */
    D13_END = 72,             /* after gc (size, collecting) */
};

static uint64_t field(const unsigned char *d, unsigned idx)
{
    uint64_t v;
    memcpy(&v, d + 8 + (size_t)idx * 8, sizeof(v));
    return v;
}

/* An offset inside a struct of the given size, as an int32, or -1 when it
 * does not fit (which fails validation). */
static int32_t within(uint64_t off, uint64_t size, uint64_t width)
{
    if (size == 0 || size > (1u << 20) || off > size || width > size - off)
        return -1;
    return (int32_t)off;
}

int spp_pyoffsets_from_debug(spp_pyoffsets *out, const void *data, size_t len)
{
    const unsigned char *d = data;
    if (len < 8 + (size_t)D13_END * 8 || memcmp(d, "xdebugpy", 8) != 0)
        return SPP_EINVAL;
    uint64_t version = field(d, D13_VERSION);
    if ((version >> 24) != 3 || ((version >> 16) & 0xff) < 13)
        return SPP_EINVAL;
    /* 3.14 reorganised the struct; until its layout is added here, only the
     * 3.13 layout is read. */
    if (((version >> 16) & 0xff) != 13)
        return SPP_ENOSYS;

    memset(out, 0, sizeof(*out));
    out->version = (uint32_t)(version & 0xffff0000u);
    out->frame_model = SPP_FRAMES_INTERP;
    out->line_model = SPP_LINES_LOCATIONS;
    out->free_threaded = field(d, D13_FREE_THREADED) != 0;
    out->code_tagged = 0;

    uint64_t rt = field(d, D13_RUNTIME), in = field(d, D13_INTERP);
    uint64_t ts = field(d, D13_TSTATE), fr = field(d, D13_FRAME);
    uint64_t co = field(d, D13_CODE), ob = field(d, D13_PYOBJECT);
    uint64_t by = field(d, D13_BYTES), un = field(d, D13_UNICODE);

    out->runtime_interpreters_head = within(field(d, D13_RUNTIME + 2), rt, 8);
    out->interp_next = within(field(d, D13_INTERP + 2), in, 8);
    out->interp_threads_head = within(field(d, D13_INTERP + 3), in, 8);
    out->gil_in_interp = 1;
    out->gil_locked = within(field(d, D13_INTERP + 11), in, 4);
    out->gil_holder = within(field(d, D13_INTERP + 12), in, 8);
    out->tstate_next = within(field(d, D13_TSTATE + 2), ts, 8);
    out->tstate_interp = within(field(d, D13_TSTATE + 3), ts, 8);
    out->tstate_frame = within(field(d, D13_TSTATE + 4), ts, 8);
    out->tstate_thread_id = within(field(d, D13_TSTATE + 5), ts, 8);
    out->tstate_native_thread_id = within(field(d, D13_TSTATE + 6), ts, 8);
    out->cframe_current_frame = -1;
    out->frame_size = (int32_t)fr;
    out->frame_previous = within(field(d, D13_FRAME + 1), fr, 8);
    out->frame_code = within(field(d, D13_FRAME + 2), fr, 8);
    out->frame_instr = within(field(d, D13_FRAME + 3), fr, 8);
    out->frame_owner = within(field(d, D13_FRAME + 5), fr, 1);
    out->owner_cstack = 3; /* FRAME_OWNED_BY_CSTACK in 3.13 */
    out->frame_is_entry = -1;
    out->code_size = (int32_t)co;
    out->code_filename = within(field(d, D13_CODE + 1), co, 8);
    out->code_name = within(field(d, D13_CODE + 2), co, 8);
    out->code_qualname = within(field(d, D13_CODE + 3), co, 8);
    out->code_linetable = within(field(d, D13_CODE + 4), co, 8);
    out->code_firstlineno = within(field(d, D13_CODE + 5), co, 4);
    out->code_adaptive = within(field(d, D13_CODE + 9), co, 0);
    out->object_type = within(field(d, D13_PYOBJECT + 1), ob, 8);
    out->bytes_size = within(field(d, D13_BYTES + 1), by, 8);
    out->bytes_sval = within(field(d, D13_BYTES + 2), by + 1, 1);
    out->unicode_state = within(field(d, D13_UNICODE + 1), un, 4);
    out->unicode_length = within(field(d, D13_UNICODE + 2), un, 8);
    out->unicode_ascii_size = (int32_t)field(d, D13_UNICODE + 3);
    /* PyCompactUnicodeObject adds utf8_length and utf8 to PyASCIIObject. */
    out->unicode_compact_size = out->unicode_ascii_size + 16;

    const int32_t *need[] = {
        &out->runtime_interpreters_head, &out->interp_next, &out->interp_threads_head,
        &out->gil_locked, &out->gil_holder,
        &out->tstate_next, &out->tstate_interp, &out->tstate_frame, &out->tstate_thread_id,
        &out->tstate_native_thread_id, &out->frame_previous, &out->frame_code,
        &out->frame_instr, &out->frame_owner, &out->code_filename, &out->code_name,
        &out->code_qualname, &out->code_linetable, &out->code_firstlineno,
        &out->code_adaptive, &out->object_type, &out->bytes_size, &out->bytes_sval,
        &out->unicode_state, &out->unicode_length,
    };
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
        if (*need[i] < 0)
            return SPP_EINVAL;
    if (out->unicode_ascii_size < 24 || out->unicode_ascii_size > 256 || fr > 4096 || co > 4096)
        return SPP_EINVAL;
    return SPP_OK;
}

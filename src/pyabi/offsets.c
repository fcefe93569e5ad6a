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

static uint64_t field_at(const unsigned char *d, int32_t pos)
{
    uint64_t v;
    memcpy(&v, d + pos, sizeof(v));
    return v;
}

/* An offset read from the target, checked against the size of the struct
 * it is in (width bytes must fit), as an int32; -1 fails validation. */
static int32_t within(uint64_t off, uint64_t size, uint64_t width)
{
    if (size == 0 || size > (1u << 20) || off > size || width > size - off)
        return -1;
    return (int32_t)off;
}

/* The layout for a version: the same minor and flavour, else the newest
 * known one not newer than it (a later version is read as that one). */
static const spp_debug_layout *layout_for(uint32_t version, int free_threaded, int *guessed)
{
    const spp_debug_layout *best = NULL;
    for (unsigned i = 0; i < spp_debug_layouts_len; i++) {
        const spp_debug_layout *l = &spp_debug_layouts[i];
        if (l->free_threaded != free_threaded || l->version > version)
            continue;
        if (!best || l->version > best->version)
            best = l;
    }
    *guessed = best && best->version != (version & 0xffff0000u);
    return best;
}

int spp_pyoffsets_from_debug(spp_pyoffsets *out, const void *data, size_t len, int *guessed)
{
    const unsigned char *d = data;
    *guessed = 0;
    if (len < 24 || memcmp(d, "xdebugpy", 8) != 0)
        return SPP_EINVAL;
    uint64_t version = field_at(d, 8);
    if ((version >> 24) != 3 || ((version >> 16) & 0xff) < 13)
        return SPP_EINVAL;
    int ft = field_at(d, 16) != 0;
    const spp_debug_layout *l = layout_for((uint32_t)version, ft, guessed);
    if (!l)
        return SPP_ENOSYS;
    if ((size_t)l->debug_size > len)
        return SPP_EINVAL;

    memset(out, 0, sizeof(*out));
    out->version = (uint32_t)(version & 0xffff0000u);
    out->frame_model = SPP_FRAMES_INTERP;
    out->line_model = SPP_LINES_LOCATIONS;
    out->free_threaded = (int8_t)ft;
    out->code_tagged = (int8_t)l->code_tagged;
    out->owner_skip = l->owner_skip;
    out->frame_is_entry = -1;
    out->cframe_current_frame = -1;
    out->cframe_previous = -1;
    out->gil_in_interp = 1;
    out->unicode_kind_shift = l->unicode_kind_shift;
    out->frame_state = l->frame_state;
    out->state_executing = l->state_executing;
    out->owner_generator = l->owner_generator;

    uint64_t in = field_at(d, l->interp_size), ts = field_at(d, l->tstate_size);
    uint64_t fr = field_at(d, l->frame_size), co = field_at(d, l->code_size);
    /* _PyRuntimeState and the small object structs have no size field we
     * read; bound their offsets generously. */
    const uint64_t big = 1u << 20, small = 4096;
    out->runtime_interpreters_head = within(field_at(d, l->runtime_interpreters_head), big, 8);
    out->interp_next = within(field_at(d, l->interp_next), in, 8);
    out->interp_threads_head = within(field_at(d, l->interp_threads_head), in, 8);
    out->gil_locked = within(field_at(d, l->interp_gil_locked), in, 4);
    out->gil_holder = within(field_at(d, l->interp_gil_holder), in, 8);
    out->tstate_next = within(field_at(d, l->tstate_next), ts, 8);
    out->tstate_interp = within(field_at(d, l->tstate_interp), ts, 8);
    out->tstate_frame = within(field_at(d, l->tstate_frame), ts, 8);
    out->tstate_thread_id = within(field_at(d, l->tstate_thread_id), ts, 8);
    out->tstate_native_thread_id = within(field_at(d, l->tstate_native_thread_id), ts, 8);
    out->frame_size = (int32_t)(fr < small ? fr : 0);
    out->frame_previous = within(field_at(d, l->frame_previous), fr, 8);
    out->frame_code = within(field_at(d, l->frame_code), fr, 8);
    out->frame_instr = within(field_at(d, l->frame_instr), fr, 8);
    out->frame_owner = within(field_at(d, l->frame_owner), fr, 1);
    out->frame_tlbc_index = -1;
    out->code_tlbc = -1;
    if (ft && l->frame_tlbc_index >= 0 && l->code_tlbc >= 0) {
        out->frame_tlbc_index = within(field_at(d, l->frame_tlbc_index), fr, 4);
        out->code_tlbc = within(field_at(d, l->code_tlbc), co, 8);
    }
    out->code_size = (int32_t)(co < small ? co : 0);
    out->code_filename = within(field_at(d, l->code_filename), co, 8);
    out->code_name = within(field_at(d, l->code_name), co, 8);
    out->code_qualname = within(field_at(d, l->code_qualname), co, 8);
    out->code_linetable = within(field_at(d, l->code_linetable), co, 8);
    out->code_firstlineno = within(field_at(d, l->code_firstlineno), co, 4);
    out->code_adaptive = within(field_at(d, l->code_adaptive), co, 0);
    out->object_type = within(field_at(d, l->object_type), small, 8);
    out->bytes_size = within(field_at(d, l->bytes_size), small, 8);
    out->bytes_sval = within(field_at(d, l->bytes_sval), small, 1);
    out->unicode_state = within(field_at(d, l->unicode_state), small, 4);
    out->unicode_length = within(field_at(d, l->unicode_length), small, 8);
    out->unicode_ascii_size = (int32_t)field_at(d, l->unicode_ascii_size);
    out->unicode_compact_size = out->unicode_ascii_size + l->unicode_compact_extra;
    /* Only dump --locals reads these: one that fails validation (-1) makes
     * values.c refuse locals, not the whole target. */
    out->frame_localsplus = within(field_at(d, l->frame_localsplus), fr, 8);
    out->code_varnames = within(field_at(d, l->code_varnames), co, 8);
    out->code_kinds = within(field_at(d, l->code_kinds), co, 8);
    out->code_cellvars = -1;
    out->code_freevars = -1;
    out->tuple_item = within(field_at(d, l->tuple_item), small, 8);
    out->long_tag = within(field_at(d, l->long_tag), small, 8);
    out->long_digits = within(field_at(d, l->long_digits), small, 4);
    out->float_value = within(field_at(d, l->float_value), small, 8);
    out->type_name = within(field_at(d, l->type_name), small, 8);
    out->long_shift = l->long_shift;
    out->long_digit_size = l->long_digit_size;
    out->cell_ref = l->cell_ref;
    out->locals_tag_bits = l->locals_tag_bits;
    /* Only thread names read these: one that fails validation leaves the
     * threads named by the OS. */
    uint64_t dsz = field_at(d, l->dict_size);
    out->attr_model = SPP_ATTRS_INLINE;
    out->interp_modules = within(field_at(d, l->interp_modules), in, 8);
    out->type_flags = within(field_at(d, l->type_flags), small, 8);
    out->dict_keys = within(field_at(d, l->dict_keys), dsz, 8);
    out->dict_values = within(field_at(d, l->dict_values), dsz, 8);
    out->module_dict = l->module_dict;
    out->keys_size = -1;
    out->keys_log2_size = l->keys_log2_size;
    out->keys_log2_index_bytes = l->keys_log2_index_bytes;
    out->keys_kind = l->keys_kind;
    out->keys_nentries = l->keys_nentries;
    out->keys_indices = l->keys_indices;
    out->entry_size = l->entry_size;
    out->unicode_entry_size = l->unicode_entry_size;
    out->values_items = l->values_items;
    out->values_capacity = l->values_capacity;
    out->values_valid = l->values_valid;
    out->type_dictoffset = l->type_dictoffset;
    out->type_basicsize = l->type_basicsize;
    out->type_cached_keys = l->type_cached_keys;
    out->managed_dict = l->managed_dict;
    out->managed_values = 0;
    out->flag_managed_dict = l->flag_managed_dict;
    out->flag_inline_values = l->flag_inline_values;

    const int32_t *need[] = {
        &out->runtime_interpreters_head, &out->interp_next, &out->interp_threads_head,
        &out->gil_locked, &out->gil_holder, &out->tstate_next, &out->tstate_interp,
        &out->tstate_frame, &out->tstate_thread_id, &out->tstate_native_thread_id,
        &out->frame_previous, &out->frame_code, &out->frame_instr, &out->frame_owner,
        &out->code_filename, &out->code_name, &out->code_qualname, &out->code_linetable,
        &out->code_firstlineno, &out->code_adaptive, &out->object_type, &out->bytes_size,
        &out->bytes_sval, &out->unicode_state, &out->unicode_length,
    };
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
        if (*need[i] < 0)
            return SPP_EINVAL;
    if (out->unicode_ascii_size < 24 || out->unicode_ascii_size > 256 || !out->frame_size ||
        !out->code_size)
        return SPP_EINVAL;
    if (ft && l->frame_tlbc_index >= 0 && (out->frame_tlbc_index < 0 || out->code_tlbc < 0))
        return SPP_EINVAL;
    return SPP_OK;
}

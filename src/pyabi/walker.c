/* walker.c - the frame walker, code-object reader and line-table decoders
 * shared by the in-process sampler and the out-of-process tool. */
#include "walker.h"

#include <stdlib.h>
#include <string.h>

#include "../core/profile.h"

#define MAX_STR_CHARS 4096          /* longer names are truncated */
#define MAX_LINETABLE (1u << 20)    /* bytes; larger tables are implausible */

/* spp_walk's own flag: walking from a caller's frame (below), which must
 * be running too. */
#define WALK_FROM_CALLER 0x100

static int read_ptr(const spp_reader *r, uint64_t addr, uint64_t *out)
{
    return spp_read(r, addr, out, sizeof(*out));
}

int spp_thread_frame_at(const spp_pyoffsets *o, const spp_reader *r, uint64_t tstate, uint64_t *at)
{
    *at = tstate + (uint64_t)o->tstate_frame;
    if (o->cframe_current_frame < 0)
        return SPP_OK;
    uint64_t cframe;
    if (read_ptr(r, *at, &cframe) < 0)
        return SPP_EINVAL;
    *at = cframe ? cframe + (uint64_t)o->cframe_current_frame : 0;
    return SPP_OK;
}

int spp_thread_frame(const spp_pyoffsets *o, const spp_reader *r, uint64_t tstate, uint64_t *frame,
                     uint64_t *below)
{
    uint64_t at, prev_cframe = 0;
    *below = SPP_ANY_FRAME;
    *frame = 0;
    if (spp_thread_frame_at(o, r, tstate, &at) < 0)
        return SPP_EINVAL;
    if (!at)
        return SPP_OK;
    if (o->cframe_current_frame >= 0 && o->cframe_previous >= 0) {
        /* 3.11/3.12: the eval loop that calls this one is blocked in the
         * call, so its current frame is what the first frame of this one
         * must return to. (This loop links itself in before filling its
         * own _PyCFrame; reading both exposes that window.) */
        uint64_t cframe = at - (uint64_t)o->cframe_current_frame;
        if (read_ptr(r, cframe + (uint64_t)o->cframe_previous, &prev_cframe) == 0 && prev_cframe &&
            read_ptr(r, prev_cframe + (uint64_t)o->cframe_current_frame, below) < 0)
            *below = SPP_ANY_FRAME;
    }
    return read_ptr(r, at, frame) < 0 ? SPP_EINVAL : SPP_OK;
}

/* Free-threaded 3.14+ runs each thread on its own copy of the bytecode
 * (entry tlbc_index of the code's co_tlbc array); the line tables speak of
 * co_code_adaptive. Moves instr from the copy to the same place in
 * co_code_adaptive (unchanged if anything looks wrong). */
static uint64_t tlbc_to_adaptive(const spp_pyoffsets *o, const spp_reader *r, uint64_t frame,
                                 uint64_t code, uint64_t instr)
{
    int32_t idx;
    uint64_t array, base;
    int64_t size;
    if (spp_read(r, frame + (uint64_t)o->frame_tlbc_index, &idx, sizeof(idx)) < 0 || idx <= 0 ||
        read_ptr(r, code + (uint64_t)o->code_tlbc, &array) < 0 || !array ||
        spp_read(r, array, &size, sizeof(size)) < 0 || idx >= size ||
        read_ptr(r, array + 8 + (uint64_t)idx * 8, &base) < 0 || !base || instr < base)
        return instr;
    return code + (uint64_t)o->code_adaptive + (instr - base);
}

/* Whether the frame says it is running (see spp_pyoffsets.frame_state):
 * 1 yes, 0 no, -1 unknown (no state for this frame, or unreadable). */
static int frame_running(const spp_pyoffsets *o, const spp_reader *r, uint64_t frame, int8_t owner)
{
    if (o->frame_model != SPP_FRAMES_OBJECT && owner != o->owner_generator)
        return -1;
    int8_t state;
    if (spp_read(r, frame + (uint64_t)(int64_t)o->frame_state, &state, 1) < 0)
        return -1;
    return state == o->state_executing;
}

int spp_walk(const spp_pyoffsets *o, const spp_reader *r, uint64_t frame, uint64_t below,
             int flags, uint64_t code_type, spp_rawframe *out, uint8_t *entries, uint64_t *addrs,
             int cap, int *truncated)
{
    int n = 0;
    int boundary_seen = 0; /* passed the first frame where an eval-loop call began */
    int last_was_shim = 0;
    *truncated = 0;
    /* The chain is bounded by cap stored frames plus as many skipped shim
     * frames again; a cycle in torn memory ends there too. */
    for (int steps = 0; frame; steps++) {
        if (n >= cap || steps >= 2 * cap + 16) {
            *truncated = 1;
            return n;
        }
        uint64_t code, instr = 0, prev;
        if (read_ptr(r, frame + (uint64_t)o->frame_code, &code) < 0 ||
            read_ptr(r, frame + (uint64_t)o->frame_previous, &prev) < 0) {
            *truncated = 1;
            return n;
        }
        if (o->code_tagged)
            code &= ~(uint64_t)7;
        int skip = 0, boundary = 0;
        int8_t owner = -1;
        if (o->frame_owner >= 0) {
            if (spp_read(r, frame + (uint64_t)o->frame_owner, &owner, 1) < 0) {
                *truncated = 1;
                return n;
            }
            if (o->owner_skip >= 0 && owner >= o->owner_skip) {
                /* A shim frame: the frame below it (already stored) was the
                 * first one run by this call of the evaluation loop. */
                if (entries && n > 0)
                    entries[n - 1] = 1;
                skip = boundary = 1;
            }
        }
        last_was_shim = skip;
        /* A thread read while it runs can have unlinked a frame (a generator
         * that yielded) between our reading its current frame and reading
         * that frame's link: a frame in the chain that is not running. The
         * innermost frame is not running while it is being entered or left
         * (a frame object's flag is set after it becomes the thread's
         * frame, and cleared before it stops being it; a generator yielding
         * says so before it unlinks itself), and is its stack then, as long
         * as it still links to a caller. */
        if ((flags & SPP_WALK_RUNNING) && frame_running(o, r, frame, owner) == 0 &&
            (steps > 0 || !prev || (flags & WALK_FROM_CALLER)))
            return SPP_ETORN;
        if (o->frame_is_entry >= 0) {
            uint8_t entry = 0;
            spp_read(r, frame + (uint64_t)o->frame_is_entry, &entry, 1);
            boundary = entry != 0;
        }
        if (boundary && !boundary_seen) {
            boundary_seen = 1;
            if (below != SPP_ANY_FRAME && prev != below)
                goto torn;
        }
        if (!skip && code_type) {
            uint64_t type;
            if (!code || read_ptr(r, code + (uint64_t)o->object_type, &type) < 0 ||
                type != code_type) {
                /* Not a code object. In a thread that runs, a frame it
                 * left: 3.14 clears a frame's code as it pops it, and a
                 * leaf read at the pointer's moment linked to a caller
                 * read after both returned (skipped, it showed the leaf
                 * under its caller's caller in 2-6 % of its samples on
                 * 3.14, 3.14t and 3.15; 3.14 clears it only once the
                 * thread's frame is another). A stopped thread's is
                 * skipped. (The interpreter's own frames with None for
                 * code, 3.13+, are marked by their owner: skipped above.) */
                if (flags & SPP_WALK_RUNNING)
                    return SPP_ETORN;
                skip = 1;
            }
        }
        if (!skip) {
            if (o->frame_model == SPP_FRAMES_OBJECT) {
                int32_t lasti;
                if (spp_read(r, frame + (uint64_t)o->frame_instr, &lasti, sizeof(lasti)) == 0)
                    instr = (uint64_t)(int64_t)lasti;
            } else {
                read_ptr(r, frame + (uint64_t)o->frame_instr, &instr);
                if (o->frame_tlbc_index >= 0)
                    instr = tlbc_to_adaptive(o, r, frame, code, instr);
            }
            out[n].code = code;
            out[n].instr = instr;
            if (entries)
                entries[n] = o->frame_model == SPP_FRAMES_OBJECT || boundary;
            if (addrs)
                addrs[n] = frame;
            n++;
        }
        if (prev == frame)
            return n;
        frame = prev;
    }
    /* A whole chain: where eval loops link in shim frames (3.12+), every
     * chain starts (outermost) with one; one that does not was read while
     * an eval loop was linking a frame in or out. */
    if (below != SPP_ANY_FRAME && !boundary_seen)
        goto torn;
    if (o->owner_skip >= 0 && n > 0 && !last_was_shim)
        return SPP_ETORN;
    return n;
torn:
    /* The innermost eval-loop call was caught linking itself in: the
     * thread is still in C code called from the calling loop's frame, so
     * that frame's chain is its stack. */
    return spp_walk(o, r, below, SPP_ANY_FRAME, flags | WALK_FROM_CALLER, code_type, out, entries,
                    addrs, cap, truncated);
}

static void put_utf8(char *buf, size_t *len, size_t cap, uint32_t cp, int *full)
{
    char tmp[4];
    size_t n;
    if (cp < 0x80) {
        tmp[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        tmp[0] = (char)(0xc0 | (cp >> 6));
        tmp[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        if (cp >= 0xd800 && cp <= 0xdfff)
            cp = 0xfffd; /* lone surrogates are not UTF-8 */
        tmp[0] = (char)(0xe0 | (cp >> 12));
        tmp[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        tmp[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        if (cp > 0x10ffff)
            cp = 0xfffd;
        if (cp == 0xfffd)
            return put_utf8(buf, len, cap, cp, full);
        tmp[0] = (char)(0xf0 | (cp >> 18));
        tmp[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        tmp[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        tmp[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    if (*len + n >= cap) {
        *full = 1;
        return;
    }
    memcpy(buf + *len, tmp, n);
    *len += n;
}

int spp_read_str_chars(const spp_pyoffsets *o, const spp_reader *r, uint64_t str, uint32_t *out,
                       size_t cap, int64_t *length)
{
    uint32_t state;
    if (!str || spp_read(r, str + (uint64_t)o->unicode_state, &state, sizeof(state)) < 0 ||
        spp_read(r, str + (uint64_t)o->unicode_length, length, sizeof(*length)) < 0)
        return SPP_EINVAL;
    /* state: interned (2 bits, or a byte on free-threaded 3.14+), kind:3,
     * compact:1, ascii:1. */
    unsigned shift = (unsigned)o->unicode_kind_shift;
    unsigned kind = (state >> shift) & 7, compact = (state >> (shift + 3)) & 1;
    unsigned ascii = (state >> (shift + 4)) & 1;
    if (!compact || *length < 0 || (kind != 1 && kind != 2 && kind != 4))
        return SPP_EINVAL;
    size_t n = (uint64_t)*length < cap ? (size_t)*length : cap;
    if (n > MAX_STR_CHARS)
        n = MAX_STR_CHARS;
    uint64_t data = str + (uint64_t)(ascii ? o->unicode_ascii_size : o->unicode_compact_size);
    /* Read in pieces into the tail of out (a char is at most 4 bytes),
     * then widen in place from the front. */
    unsigned char *raw = (unsigned char *)out + n * (4 - kind);
    if (n && spp_read(r, data, raw, n * kind) < 0)
        return SPP_EINVAL;
    for (size_t i = 0; i < n && kind != 4; i++) { /* kind 4 was read in place */
        if (kind == 1) {
            out[i] = raw[i];
        } else {
            uint16_t v;
            memcpy(&v, raw + i * 2, 2);
            out[i] = v;
        }
    }
    return (int)n;
}

int spp_read_str(const spp_pyoffsets *o, const spp_reader *r, uint64_t str, char *buf, size_t cap)
{
    if (cap == 0)
        return SPP_EINVAL;
    buf[0] = '\0';
    /* A character takes at least one byte of buf. */
    uint32_t stackbuf[1024];
    size_t want = cap - 1 < MAX_STR_CHARS ? cap - 1 : MAX_STR_CHARS;
    uint32_t *cps = want <= 1024 ? stackbuf : malloc(want * sizeof(uint32_t));
    if (!cps)
        return SPP_ENOMEM;
    int64_t length;
    int n = spp_read_str_chars(o, r, str, cps, want, &length);
    size_t len = 0;
    int full = 0;
    for (int i = 0; i < n && !full; i++)
        put_utf8(buf, &len, cap, cps[i], &full);
    buf[len] = '\0';
    if (cps != stackbuf)
        free(cps);
    return n < 0 ? n : (int)len;
}

static char *read_str_dup(const spp_pyoffsets *o, const spp_reader *r, uint64_t addr)
{
    char buf[1024];
    int n = spp_read_str(o, r, addr, buf, sizeof(buf));
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s)
        memcpy(s, buf, (size_t)n + 1);
    return s;
}

void spp_code_clear(spp_code *c)
{
    free(c->name);
    free(c->file);
    free(c->lines);
    memset(c, 0, sizeof(*c));
}

int spp_code_read(const spp_pyoffsets *o, const spp_reader *r, uint64_t code, spp_code *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t name, file, table;
    int32_t first;
    int64_t tlen;
    int32_t name_off = o->code_qualname >= 0 ? o->code_qualname : o->code_name;
    if (read_ptr(r, code + (uint64_t)name_off, &name) < 0 ||
        read_ptr(r, code + (uint64_t)o->code_filename, &file) < 0 ||
        read_ptr(r, code + (uint64_t)o->code_linetable, &table) < 0 ||
        spp_read(r, code + (uint64_t)o->code_firstlineno, &first, sizeof(first)) < 0)
        return SPP_EINVAL;
    out->name = read_str_dup(o, r, name);
    out->file = read_str_dup(o, r, file);
    out->firstlineno = first;
    if (!out->name || !out->file)
        goto fail;
    if (table && spp_read(r, table + (uint64_t)o->bytes_size, &tlen, sizeof(tlen)) == 0 &&
        tlen > 0 && (uint64_t)tlen <= MAX_LINETABLE) {
        out->lines = malloc((size_t)tlen);
        if (!out->lines || spp_read(r, table + (uint64_t)o->bytes_sval, out->lines, (size_t)tlen) < 0) {
            free(out->lines);
            out->lines = NULL;
        } else {
            out->nlines = (uint32_t)tlen;
        }
    }
    if (o->code_adaptive >= 0)
        out->bytecode = code + (uint64_t)o->code_adaptive;
    return SPP_OK;
fail:
    spp_code_clear(out);
    return SPP_EINVAL;
}

/* 3.9 co_lnotab: (bytecode delta, signed line delta) byte pairs. */
static int addr2line_lnotab(const spp_code *c, int64_t addr)
{
    int line = c->firstlineno;
    int64_t a = 0;
    for (uint32_t i = 0; i + 1 < c->nlines; i += 2) {
        a += c->lines[i];
        if (a > addr)
            break;
        line += (signed char)c->lines[i + 1];
    }
    return line;
}

/* 3.10 co_linetable: (bytecode length, signed line delta or -128 for "no
 * line") byte pairs describing consecutive ranges. */
static int addr2line_linetable(const spp_code *c, int64_t addr)
{
    int line = c->firstlineno, last_known = c->firstlineno;
    int64_t end = 0;
    for (uint32_t i = 0; i + 1 < c->nlines; i += 2) {
        int64_t start = end;
        end += c->lines[i];
        signed char delta = (signed char)c->lines[i + 1];
        int has_line = delta != -128;
        if (has_line)
            line += delta;
        if (start <= addr && addr < end)
            return has_line ? line : last_known;
        if (has_line)
            last_known = line;
    }
    return last_known;
}

static uint32_t varint(const spp_code *c, uint32_t *i)
{
    uint32_t val = 0, shift = 0;
    while (*i < c->nlines && shift < 32) {
        unsigned b = c->lines[(*i)++];
        val |= (b & 63u) << shift;
        shift += 6;
        if (!(b & 64))
            break;
    }
    return val;
}

static int32_t svarint(const spp_code *c, uint32_t *i)
{
    uint32_t v = varint(c, i);
    return (v & 1) ? -(int32_t)(v >> 1) : (int32_t)(v >> 1);
}

/* 3.11+ location table: entries of (code, length in code units) with the
 * line delta encoded by code: 15 no location, 14 long form, 13 no columns,
 * 10-12 one-line forms (delta 0-2), 0-9 short forms (same line). */
static int addr2line_locations(const spp_code *c, int64_t addr)
{
    int64_t unit = addr / 2, end = 0;
    int line = c->firstlineno, last_known = c->firstlineno;
    uint32_t i = 0;
    while (i < c->nlines) {
        unsigned first = c->lines[i++];
        if (!(first & 128))
            break; /* not at an entry: corrupt table */
        unsigned code = (first >> 3) & 15;
        int64_t start = end;
        end += (first & 7) + 1;
        int has_line = 1;
        if (code == 15) {
            has_line = 0;
        } else if (code == 14) {
            line += svarint(c, &i);
            varint(c, &i); /* end line delta */
            varint(c, &i); /* column */
            varint(c, &i); /* end column */
        } else if (code == 13) {
            line += svarint(c, &i);
        } else if (code >= 10) {
            line += (int)code - 10;
            i += 2;
        } else {
            i += 1;
        }
        if (start <= unit && unit < end)
            return has_line ? line : last_known;
        if (has_line)
            last_known = line;
    }
    return last_known;
}

int spp_code_addr2line(const spp_pyoffsets *o, const spp_code *c, int64_t addr)
{
    if (addr < 0 || !c->lines)
        return c->firstlineno;
    switch (o->line_model) {
    case SPP_LINES_LNOTAB:
        return addr2line_lnotab(c, addr);
    case SPP_LINES_LINETABLE:
        return addr2line_linetable(c, addr);
    default:
        return addr2line_locations(c, addr);
    }
}

int spp_code_line(const spp_pyoffsets *o, const spp_code *c, uint64_t instr)
{
    int64_t addr;
    if (o->frame_model == SPP_FRAMES_OBJECT) {
        int64_t lasti = (int64_t)instr;
        /* 3.9 counts bytes, 3.10 counts two-byte code units. */
        addr = o->line_model == SPP_LINES_LNOTAB ? lasti : lasti * 2;
    } else {
        if (!c->bytecode)
            return c->firstlineno;
        addr = (int64_t)(instr - c->bytecode);
    }
    return spp_code_addr2line(o, c, addr);
}

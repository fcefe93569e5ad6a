/* pprof.c - pprof's profile.proto (github.com/google/pprof, proto/profile.proto),
 * encoded here as protobuf by hand and wrapped in gzip.
 *
 * One pprof sample per stack-trie node that was sampled, with two values:
 * samples/count and cpu (or wall)/nanoseconds, and the labels "thread"
 * (name) and "thread_id". Functions are (name, file, first line), locations
 * (function, executing line); ids are 1-based as pprof requires. The
 * protobuf is built in memory (nested messages are length-prefixed), then
 * written out as gzip (gzip.c). Not thread-safe, not async-signal-safe.
 */
#include "formats.h"
#include "gzip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PPROF_MAX_DEPTH 4096
#define THREAD_NAME_MAX 32 /* "Thread " and a 64-bit id */

/* profile.proto field numbers. */
enum {
    PROFILE_SAMPLE_TYPE = 1, PROFILE_SAMPLE = 2, PROFILE_MAPPING = 3, PROFILE_LOCATION = 4,
    PROFILE_FUNCTION = 5, PROFILE_STRING_TABLE = 6, PROFILE_TIME_NANOS = 9, PROFILE_DURATION_NANOS = 10,
    PROFILE_PERIOD_TYPE = 11, PROFILE_PERIOD = 12, PROFILE_COMMENT = 13,
    PROFILE_DEFAULT_SAMPLE_TYPE = 14,
    VALUE_TYPE_TYPE = 1, VALUE_TYPE_UNIT = 2,
    SAMPLE_LOCATION_ID = 1, SAMPLE_VALUE = 2, SAMPLE_LABEL = 3,
    LABEL_KEY = 1, LABEL_STR = 2, LABEL_NUM = 3,
    MAPPING_ID = 1, MAPPING_FILENAME = 5, MAPPING_HAS_FUNCTIONS = 7, MAPPING_HAS_FILENAMES = 8,
    MAPPING_HAS_LINE_NUMBERS = 9,
    LOCATION_ID = 1, LOCATION_MAPPING_ID = 2, LOCATION_LINE = 4,
    LINE_FUNCTION_ID = 1, LINE_LINE = 2,
    FUNCTION_ID = 1, FUNCTION_NAME = 2, FUNCTION_FILENAME = 4, FUNCTION_START_LINE = 5,
};

/* Protobuf wire types used. */
enum { WIRE_VARINT = 0, WIRE_LEN = 2 };

/* Messages are built in in-memory spp_outs (errors stick there): a nested
 * message must be complete before its length, which precedes it, is known. */

static void pb_varint(spp_out *w, uint64_t v)
{
    unsigned char tmp[10];
    size_t n = 0;
    do {
        tmp[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    spp_out_write(w, (const char *)tmp, n);
}

/* A varint field; zero is proto3's default and is left out. Negative int64
 * values would be ten-byte varints, but none of ours is negative. */
static void pb_uint(spp_out *w, unsigned field, uint64_t v)
{
    if (!v)
        return;
    pb_varint(w, (uint64_t)field << 3 | WIRE_VARINT);
    pb_varint(w, v);
}

static void pb_bytes(spp_out *w, unsigned field, const char *s, size_t n)
{
    pb_varint(w, (uint64_t)field << 3 | WIRE_LEN);
    pb_varint(w, n);
    spp_out_write(w, s, n);
}

/* Appends the message built in sub as field of w, and empties sub. */
static void pb_msg(spp_out *w, unsigned field, spp_out *sub)
{
    if (sub->err && !w->err)
        w->err = sub->err;
    pb_bytes(w, field, sub->mem, sub->len);
    sub->len = 0;
}

/* The writer's tables: pprof's string table (indices into it, 0 = ""),
 * its functions and locations, and where each profile frame went. */
typedef struct pp_str {
    const char *s; /* borrowed from the profile or a literal */
    size_t n;
} pp_str;

typedef struct pp_fn {
    uint32_t name, file; /* pprof string indices */
    int32_t first_line;
} pp_fn;

typedef struct pp_loc {
    uint32_t fn;         /* 1-based function id */
    int32_t line;
} pp_loc;

typedef struct pprof_w {
    const spp_profile *p;
    pp_str *strs;
    uint32_t nstrs, capstrs;
    uint32_t *str_of;    /* profile string id -> pprof index + 1 (0: not yet) */
    uint32_t nstr_of;
    pp_fn *fns;
    uint32_t nfns;
    pp_loc *locs;
    uint32_t nlocs;
    uint32_t *hash;      /* open addressing: 1-based ids; functions and locations share it */
    uint32_t hmask;
    uint32_t *loc_of;    /* frame id -> 1-based location id */
    uint32_t *thread_label; /* thread index -> pprof index of its "thread" label */
    char *thread_names;  /* owned: "Thread TID" for threads without a name */
} pprof_w;

static uint32_t add_str(pprof_w *w, const char *s, size_t n)
{
    if (w->nstrs == w->capstrs) {
        uint32_t ncap = w->capstrs ? w->capstrs * 2 : 64;
        pp_str *ns = realloc(w->strs, ncap * sizeof(*ns));
        if (!ns)
            return SPP_NONE;
        w->strs = ns;
        w->capstrs = ncap;
    }
    w->strs[w->nstrs] = (pp_str){s, n};
    return w->nstrs++;
}

/* The pprof index of a profile string, added on first use. */
static uint32_t map_str(pprof_w *w, uint32_t id)
{
    size_t n;
    const char *s = spp_profile_string(w->p, id, &n);
    if (!n || id >= w->nstr_of)
        return 0;
    if (!w->str_of[id]) {
        uint32_t i = add_str(w, s, n);
        if (i == SPP_NONE)
            return SPP_NONE;
        w->str_of[id] = i + 1;
    }
    return w->str_of[id] - 1;
}

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

/* Finds or adds a function (is_loc 0) or a location (is_loc 1) in the shared
 * hash; returns its 1-based id. Each frame adds at most one of each and the
 * table has twice that many slots, so the probe always ends at a free one. */
static uint32_t intern(pprof_w *w, int is_loc, uint32_t a, uint32_t b, int32_t c)
{
    uint64_t key = ((uint64_t)a << 32 | b) ^ mix((uint64_t)(uint32_t)c << 1 | (unsigned)is_loc);
    for (uint32_t i = (uint32_t)mix(key) & w->hmask;; i = (i + 1) & w->hmask) {
        uint32_t e = w->hash[i];
        if (!e) {
            if (is_loc) {
                w->locs[w->nlocs] = (pp_loc){a, c};
                e = ++w->nlocs;
            } else {
                w->fns[w->nfns] = (pp_fn){a, b, c};
                e = ++w->nfns;
            }
            w->hash[i] = e << 1 | (unsigned)is_loc;
            return e;
        }
        if ((e & 1u) != (unsigned)is_loc)
            continue;
        e >>= 1;
        if (is_loc && w->locs[e - 1].fn == a && w->locs[e - 1].line == c)
            return e;
        if (!is_loc && w->fns[e - 1].name == a && w->fns[e - 1].file == b &&
            w->fns[e - 1].first_line == c)
            return e;
    }
}

/* Fills the string, function and location tables from the profile's frames. */
static int build_tables(pprof_w *w, const spp_write_opts *opts)
{
    const spp_profile *p = w->p;
    uint32_t nframes = spp_profile_nframes(p), nthreads = spp_profile_nthreads(p);
    uint32_t maxstr = 0;
    for (uint32_t i = 0; i < nframes; i++) {
        const spp_frame *f = spp_profile_frame_at(p, i);
        if (f->name != SPP_NONE && f->name >= maxstr)
            maxstr = f->name + 1;
        if (f->file != SPP_NONE && f->file >= maxstr)
            maxstr = f->file + 1;
    }
    for (uint32_t i = 0; i < nthreads; i++) {
        const spp_thread *t = spp_profile_thread_at(p, i);
        if (t->name != SPP_NONE && t->name >= maxstr)
            maxstr = t->name + 1;
    }
    if (nframes > (1u << 28)) /* keeps the table size below 2^31 slots */
        return SPP_ENOMEM;
    uint32_t hsize = 16;
    while (hsize < 4 * (uint64_t)nframes)
        hsize *= 2;
    w->nstr_of = maxstr;
    w->str_of = calloc(maxstr ? maxstr : 1, sizeof(uint32_t));
    w->hash = calloc(hsize, sizeof(uint32_t));
    w->hmask = hsize - 1;
    w->fns = malloc((nframes ? nframes : 1) * sizeof(pp_fn));
    w->locs = malloc((nframes ? nframes : 1) * sizeof(pp_loc));
    w->loc_of = malloc((nframes ? nframes : 1) * sizeof(uint32_t));
    if (!w->str_of || !w->hash || !w->fns || !w->locs || !w->loc_of)
        return SPP_ENOMEM;
    /* Every sample gets a "thread" label; threads without a name are named
     * as the other formats name them. */
    w->thread_label = malloc((nthreads ? nthreads : 1) * sizeof(uint32_t));
    w->thread_names = malloc((nthreads ? nthreads : 1) * THREAD_NAME_MAX);
    if (!w->thread_label || !w->thread_names)
        return SPP_ENOMEM;
    for (uint32_t i = 0; i < nthreads; i++) {
        const spp_thread *t = spp_profile_thread_at(p, i);
        uint32_t idx = t->name != SPP_NONE ? map_str(w, t->name) : 0;
        if (!idx) {
            char *name = w->thread_names + (size_t)i * THREAD_NAME_MAX;
            int n = snprintf(name, THREAD_NAME_MAX, "Thread %llu", (unsigned long long)t->tid);
            idx = add_str(w, name, (size_t)n);
        }
        if (idx == SPP_NONE)
            return SPP_ENOMEM;
        w->thread_label[i] = idx;
    }
    for (uint32_t i = 0; i < nframes; i++) {
        const spp_frame *f = spp_profile_frame_at(p, i);
        uint32_t name = map_str(w, f->name), file = map_str(w, f->file);
        if (name == SPP_NONE || file == SPP_NONE)
            return SPP_ENOMEM;
        uint32_t fn = intern(w, 0, name, file, f->first_line > 0 ? f->first_line : 0);
        int32_t line = opts->lines && f->line > 0 ? f->line : 0;
        w->loc_of[i] = intern(w, 1, fn, 0, line);
    }
    return SPP_OK;
}

static void write_value_type(spp_out *out, unsigned field, spp_out *sub, uint32_t type, uint32_t unit)
{
    pb_uint(sub, VALUE_TYPE_TYPE, type);
    pb_uint(sub, VALUE_TYPE_UNIT, unit);
    pb_msg(out, field, sub);
}

/* The samples: one per sampled trie node, locations leaf first. */
static void write_samples(pprof_w *w, spp_out *out, spp_out *sub, spp_out *packed, uint32_t *frames,
                          uint32_t key_thread, uint32_t key_tid)
{
    const spp_profile *p = w->p;
    uint32_t nstacks = spp_profile_nstacks(p);
    for (uint32_t s = 0; s < nstacks; s++) {
        const spp_stack *st = spp_profile_stack_at(p, s);
        if (!st->self_count)
            continue;
        uint32_t depth = spp_profile_unwind(p, s, frames, PPROF_MAX_DEPTH);
        for (uint32_t d = depth; d-- > 0;)
            pb_varint(packed, w->loc_of[frames[d]]);
        pb_msg(sub, SAMPLE_LOCATION_ID, packed);
        pb_varint(packed, st->self_count);
        pb_varint(packed, st->self_weight);
        pb_msg(sub, SAMPLE_VALUE, packed);
        const spp_thread *t = spp_profile_thread_at(p, st->thread);
        pb_uint(packed, LABEL_KEY, key_thread);
        pb_uint(packed, LABEL_STR, w->thread_label[st->thread]);
        pb_msg(sub, SAMPLE_LABEL, packed);
        /* pprof reads a numeric label of 0 as absent: the CLI's tid-0
         * pseudo-thread (samples taken before the target had a thread
         * state) is told by its "thread" label alone. */
        pb_uint(packed, LABEL_KEY, key_tid);
        pb_uint(packed, LABEL_NUM, t->tid);
        pb_msg(sub, SAMPLE_LABEL, packed);
        pb_msg(out, PROFILE_SAMPLE, sub);
    }
}

static void write_tables(pprof_w *w, spp_out *out, spp_out *sub, spp_out *line, uint32_t s_file)
{
    /* One mapping that says the locations are symbolized already, so pprof
     * neither looks for a binary to symbolize them nor complains that it
     * has none. */
    pb_uint(sub, MAPPING_ID, 1);
    pb_uint(sub, MAPPING_FILENAME, s_file);
    pb_uint(sub, MAPPING_HAS_FUNCTIONS, 1);
    pb_uint(sub, MAPPING_HAS_FILENAMES, 1);
    pb_uint(sub, MAPPING_HAS_LINE_NUMBERS, 1);
    pb_msg(out, PROFILE_MAPPING, sub);
    for (uint32_t i = 0; i < w->nlocs; i++) {
        pb_uint(sub, LOCATION_ID, i + 1);
        pb_uint(sub, LOCATION_MAPPING_ID, 1);
        pb_uint(line, LINE_FUNCTION_ID, w->locs[i].fn);
        pb_uint(line, LINE_LINE, (uint64_t)w->locs[i].line);
        pb_msg(sub, LOCATION_LINE, line);
        pb_msg(out, PROFILE_LOCATION, sub);
    }
    /* system_name is left out on purpose: pprof demangles a name equal to
     * its system name, which turns "<module>" into "<unknown>". */
    for (uint32_t i = 0; i < w->nfns; i++) {
        pb_uint(sub, FUNCTION_ID, i + 1);
        pb_uint(sub, FUNCTION_NAME, w->fns[i].name);
        pb_uint(sub, FUNCTION_FILENAME, w->fns[i].file);
        pb_uint(sub, FUNCTION_START_LINE, (uint64_t)w->fns[i].first_line);
        pb_msg(out, PROFILE_FUNCTION, sub);
    }
    /* protobuf strings are UTF-8: names from the target may not be. */
    for (uint32_t i = 0; i < w->nstrs; i++) {
        spp_out_text(sub, w->strs[i].s, w->strs[i].n, NULL);
        pb_msg(out, PROFILE_STRING_TABLE, sub);
    }
}

int spp_write_pprof(const spp_profile *p, spp_out *o, const spp_write_opts *opts)
{
    pprof_w w = {.p = p};
    spp_out out, sub, inner;
    spp_out_open_mem(&out);
    spp_out_open_mem(&sub);
    spp_out_open_mem(&inner);
    uint32_t *frames = malloc(PPROF_MAX_DEPTH * sizeof(uint32_t));
    int rc = SPP_ENOMEM;
    if (!frames)
        goto out;
    const spp_meta *m = spp_profile_meta(p);
    const char *clock = m->clock && strcmp(m->clock, "wall") == 0 ? "wall" : "cpu";
    /* The fixed strings first; index 0 must be "". */
    uint32_t s_empty = add_str(&w, "", 0);
    uint32_t s_samples = add_str(&w, "samples", 7), s_count = add_str(&w, "count", 5);
    uint32_t s_clock = add_str(&w, clock, strlen(clock));
    uint32_t s_ns = add_str(&w, "nanoseconds", 11);
    uint32_t s_thread = add_str(&w, "thread", 6), s_tid = add_str(&w, "thread_id", 9);
    uint32_t s_python = add_str(&w, "python", 6);
    uint32_t s_title = m->title ? add_str(&w, m->title, strlen(m->title)) : 0;
    uint32_t s_mech = m->mechanism ? add_str(&w, m->mechanism, strlen(m->mechanism)) : 0;
    if (s_empty != 0 || s_samples == SPP_NONE || s_count == SPP_NONE || s_clock == SPP_NONE ||
        s_ns == SPP_NONE || s_thread == SPP_NONE || s_tid == SPP_NONE || s_python == SPP_NONE || s_title == SPP_NONE ||
        s_mech == SPP_NONE)
        goto out;
    if ((rc = build_tables(&w, opts)) < 0)
        goto out;

    write_value_type(&out, PROFILE_SAMPLE_TYPE, &sub, s_samples, s_count);
    write_value_type(&out, PROFILE_SAMPLE_TYPE, &sub, s_clock, s_ns);
    write_samples(&w, &out, &sub, &inner, frames, s_thread, s_tid);
    write_tables(&w, &out, &sub, &inner, s_python);
    pb_uint(&out, PROFILE_TIME_NANOS, m->start_ns);
    pb_uint(&out, PROFILE_DURATION_NANOS, m->end_ns > m->start_ns ? m->end_ns - m->start_ns : 0);
    write_value_type(&out, PROFILE_PERIOD_TYPE, &sub, s_clock, s_ns);
    pb_uint(&out, PROFILE_PERIOD, m->interval_ms > 0 ? (uint64_t)(m->interval_ms * 1e6 + 0.5) : 0);
    if (s_title || s_mech) {
        /* Packed repeated int64: the comments pprof prints with -comments. */
        if (s_title)
            pb_varint(&inner, s_title);
        if (s_mech)
            pb_varint(&inner, s_mech);
        pb_msg(&out, PROFILE_COMMENT, &inner);
    }
    pb_uint(&out, PROFILE_DEFAULT_SAMPLE_TYPE, s_clock);
    if (out.err || sub.err || inner.err) {
        rc = SPP_ENOMEM;
        goto out;
    }
    spp_gzip_write(o, (const unsigned char *)out.mem, out.len);
    rc = SPP_OK;
out:
    free(frames);
    spp_out_abort(&out);
    spp_out_abort(&sub);
    spp_out_abort(&inner);
    free(w.strs);
    free(w.str_of);
    free(w.fns);
    free(w.locs);
    free(w.hash);
    free(w.loc_of);
    free(w.thread_label);
    free(w.thread_names);
    return rc;
}

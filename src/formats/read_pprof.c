/* read_pprof.c - reading pprof's profile.proto (uncompressed; read.c undoes
 * the gzip) with a protobuf wire-format reader of our own.
 *
 * Only what a flame graph needs is read: the sample types, samples (their
 * location ids and values), locations (their lines: function and line,
 * innermost inlined first), functions (name, file, first line) and the
 * string table. Labels, mappings and the rest are skipped. Every length is
 * checked against what remains, every index against its table. */
#include "read.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

typedef struct pb {
    const unsigned char *p, *end;
} pb;

static int pb_varint(pb *b, uint64_t *v)
{
    uint64_t r = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (b->p >= b->end)
            return -1;
        unsigned char c = *b->p++;
        r |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1; /* more than ten bytes */
}

/* The next field: its number, wire type, and for LEN fields the bytes in
 * *sub, for varints the value in *v. Fixed-width fields are skipped over
 * (v left 0). Returns 1 for a field, 0 at the end, -1 when malformed. */
static int pb_field(pb *b, uint32_t *field, int *wire, uint64_t *v, pb *sub)
{
    if (b->p >= b->end)
        return 0;
    uint64_t tag, len;
    if (pb_varint(b, &tag) < 0 || tag >> 3 == 0 || tag >> 3 > UINT32_MAX)
        return -1;
    *field = (uint32_t)(tag >> 3);
    *wire = (int)(tag & 7);
    *v = 0;
    sub->p = sub->end = b->p;
    switch (*wire) {
    case WIRE_VARINT:
        return pb_varint(b, v) < 0 ? -1 : 1;
    case WIRE_I64:
    case WIRE_I32: {
        size_t n = *wire == WIRE_I64 ? 8 : 4;
        if ((size_t)(b->end - b->p) < n)
            return -1;
        b->p += n;
        return 1;
    }
    case WIRE_LEN:
        if (pb_varint(b, &len) < 0 || len > (uint64_t)(b->end - b->p))
            return -1;
        sub->p = b->p;
        sub->end = b->p + len;
        b->p += len;
        return 1;
    default:
        return -1; /* groups (3, 4) are not in profile.proto */
    }
}

/* A repeated integer field, packed (one LEN) or not (one varint): calls
 * add for each value. */
static int pb_repeated(int wire, uint64_t v, pb *sub, int (*add)(void *, uint64_t), void *ctx)
{
    if (wire == WIRE_VARINT)
        return add(ctx, v);
    if (wire != WIRE_LEN)
        return -1;
    while (sub->p < sub->end) {
        uint64_t x;
        if (pb_varint(sub, &x) < 0 || add(ctx, x) < 0)
            return -1;
    }
    return 0;
}

typedef struct pp_str { const char *s; size_t n; } pp_str;
typedef struct pp_fn { uint64_t id, name, file, start; } pp_fn;
typedef struct pp_line { uint64_t fn; int64_t line; } pp_line;
typedef struct pp_loc { uint64_t id, address; uint32_t first, n; } pp_loc; /* lines[first..first+n) */

typedef struct u64s { uint64_t *v; size_t n, cap; int nomem; } u64s;

typedef struct reader {
    spp_profile *p;
    pp_str *strs; size_t nstrs;
    pp_fn *fns; size_t nfns;
    pp_loc *locs; size_t nlocs;
    pp_line *lines; size_t nlines;
    uint32_t *loc_frames;        /* lines' frame ids, in lines order */
    uint64_t types[64][2];       /* sample types: (type, unit) string indices */
    size_t ntypes;
    u64s ids, vals;              /* scratch for one sample */
    char *err; size_t errlen;
} reader;

static int push_u64(void *ctx, uint64_t x)
{
    u64s *a = ctx;
    if (a->n == a->cap) {
        size_t ncap = a->cap ? a->cap * 2 : 64;
        uint64_t *nv = realloc(a->v, ncap * sizeof(uint64_t));
        if (!nv) {
            a->nomem = 1;
            return -1;
        }
        a->v = nv;
        a->cap = ncap;
    }
    a->v[a->n++] = x;
    return 0;
}

static int bad(reader *r, const char *what)
{
    return spp_read_fail(r->err, r->errlen, "pprof: %s", what);
}

/* First pass: counts the tables so that they are allocated once. */
static int count_tables(reader *r, pb b, size_t *nstr, size_t *nfn, size_t *nloc, size_t *nline)
{
    uint32_t field;
    int wire, more;
    uint64_t v;
    pb sub;
    while ((more = pb_field(&b, &field, &wire, &v, &sub)) > 0) {
        if (field == 6 && wire == WIRE_LEN)
            (*nstr)++;
        else if (field == 5 && wire == WIRE_LEN)
            (*nfn)++;
        else if (field == 4 && wire == WIRE_LEN) {
            (*nloc)++;
            pb l = sub, ls;
            int m;
            while ((m = pb_field(&l, &field, &wire, &v, &ls)) > 0)
                if (field == 4 && wire == WIRE_LEN)
                    (*nline)++;
            if (m < 0)
                return bad(r, "a malformed location");
        }
    }
    return more < 0 ? bad(r, "not a profile.proto message (malformed protobuf)") : SPP_OK;
}

static int read_function(reader *r, pb b)
{
    pp_fn *f = &r->fns[r->nfns++];
    memset(f, 0, sizeof(*f));
    uint32_t field;
    int wire, more;
    uint64_t v;
    pb sub;
    while ((more = pb_field(&b, &field, &wire, &v, &sub)) > 0) {
        if (wire != WIRE_VARINT)
            continue;
        if (field == 1) f->id = v;
        else if (field == 2) f->name = v;
        else if (field == 4) f->file = v;
        else if (field == 5) f->start = v;
    }
    return more < 0 ? bad(r, "a malformed function") : SPP_OK;
}

static int read_location(reader *r, pb b)
{
    pp_loc *l = &r->locs[r->nlocs++];
    memset(l, 0, sizeof(*l));
    l->first = (uint32_t)r->nlines;
    uint32_t field;
    int wire, more;
    uint64_t v;
    pb sub;
    while ((more = pb_field(&b, &field, &wire, &v, &sub)) > 0) {
        if (field == 1 && wire == WIRE_VARINT)
            l->id = v;
        else if (field == 3 && wire == WIRE_VARINT)
            l->address = v;
        else if (field == 4 && wire == WIRE_LEN) {
            pp_line *ln = &r->lines[r->nlines++];
            memset(ln, 0, sizeof(*ln));
            pb lb = sub, x;
            uint32_t f2;
            int w2, m;
            uint64_t v2;
            while ((m = pb_field(&lb, &f2, &w2, &v2, &x)) > 0) {
                if (f2 == 1 && w2 == WIRE_VARINT)
                    ln->fn = v2;
                else if (f2 == 2 && w2 == WIRE_VARINT)
                    ln->line = (int64_t)v2;
            }
            if (m < 0)
                return bad(r, "a malformed line");
            l->n++;
        }
    }
    return more < 0 ? bad(r, "a malformed location") : SPP_OK;
}

static int cmp_fn(const void *a, const void *b)
{
    const pp_fn *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int cmp_loc(const void *a, const void *b)
{
    const pp_loc *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static const pp_fn *find_fn(const reader *r, uint64_t id)
{
    pp_fn key = {.id = id};
    return bsearch(&key, r->fns, r->nfns, sizeof(pp_fn), cmp_fn);
}

static const pp_loc *find_loc(const reader *r, uint64_t id)
{
    pp_loc key = {.id = id};
    return bsearch(&key, r->locs, r->nlocs, sizeof(pp_loc), cmp_loc);
}

static const pp_str *string_at(const reader *r, uint64_t i)
{
    static const pp_str empty = {"", 0};
    return i < r->nstrs ? &r->strs[i] : i == 0 ? &empty : NULL;
}

/* Gives every line of every location its frame. */
static int make_frames(reader *r)
{
    for (size_t i = 0; i < r->nlocs; i++) {
        const pp_loc *l = &r->locs[i];
        for (uint32_t k = 0; k < l->n; k++) {
            const pp_line *ln = &r->lines[l->first + k];
            const pp_fn *f = find_fn(r, ln->fn);
            if (!f)
                return bad(r, "a location's line names a function that is not there");
            const pp_str *name = string_at(r, f->name), *file = string_at(r, f->file);
            if (!name || !file)
                return bad(r, "a string index out of range");
            int line = ln->line > 0 && ln->line < 1000000000 ? (int)ln->line : 0;
            r->loc_frames[l->first + k] = spp_read_frame(r->p, name->s, name->n, file->s, file->n, line);
            if (r->loc_frames[l->first + k] == SPP_NONE)
                return SPP_ENOMEM;
        }
    }
    return SPP_OK;
}

/* The value read as the sample count: the first of unit "count" (spprof's
 * "samples/count"); else the first value, read as a weight. */
static void pick_value(const reader *r, size_t *vi, int *is_count)
{
    *vi = 0;
    *is_count = 0;
    for (size_t i = 0; i < r->ntypes; i++) {
        const pp_str *unit = string_at(r, r->types[i][1]);
        if (unit && unit->n == 5 && memcmp(unit->s, "count", 5) == 0) {
            *vi = i;
            *is_count = 1;
            return;
        }
    }
}

static int read_sample(reader *r, pb b, uint32_t root, size_t vi, int is_count, uint32_t *frames)
{
    r->ids.n = r->vals.n = 0;
    uint32_t field;
    int wire, more;
    uint64_t v;
    pb sub;
    while ((more = pb_field(&b, &field, &wire, &v, &sub)) > 0) {
        if (field == 1 && pb_repeated(wire, v, &sub, push_u64, &r->ids) < 0)
            return r->ids.nomem ? SPP_ENOMEM : bad(r, "a malformed sample");
        if (field == 2 && pb_repeated(wire, v, &sub, push_u64, &r->vals) < 0)
            return r->vals.nomem ? SPP_ENOMEM : bad(r, "a malformed sample");
    }
    if (more < 0)
        return bad(r, "a malformed sample");
    if (vi >= r->vals.n)
        return SPP_OK; /* no such value: nothing to count */
    int64_t value = (int64_t)r->vals.v[vi];
    if (value <= 0)
        return SPP_OK; /* negative values come from pprof's own diffs */
    /* Locations come leaf first and a location's lines innermost first:
     * both are reversed to go root first. */
    uint32_t depth = 0;
    for (size_t i = r->ids.n; i-- > 0;) {
        const pp_loc *l = find_loc(r, r->ids.v[i]);
        if (!l)
            return bad(r, "a sample names a location that is not there");
        for (uint32_t k = l->n; k-- > 0;) {
            if (depth == SPP_READ_MAX_DEPTH)
                return spp_read_fail(r->err, r->errlen, "pprof: a stack deeper than %d frames",
                                     SPP_READ_MAX_DEPTH);
            frames[depth++] = r->loc_frames[l->first + k];
        }
        if (!l->n) {
            /* Not symbolized: the address stands for the function. */
            char name[32];
            int n = snprintf(name, sizeof(name), "0x%llx", (unsigned long long)l->address);
            if (depth == SPP_READ_MAX_DEPTH)
                return spp_read_fail(r->err, r->errlen, "pprof: a stack deeper than %d frames",
                                     SPP_READ_MAX_DEPTH);
            if ((frames[depth++] = spp_read_frame(r->p, name, (size_t)n, NULL, 0, 0)) == SPP_NONE)
                return SPP_ENOMEM;
        }
    }
    uint32_t node = root;
    for (uint32_t d = 0; d < depth; d++)
        if ((node = spp_profile_push(r->p, node, frames[d])) == SPP_NONE)
            return SPP_ENOMEM;
    if (is_count)
        spp_profile_add_many(r->p, node, (uint64_t)value, 0);
    else
        spp_profile_add_many(r->p, node, 0, (uint64_t)value);
    return SPP_OK;
}

static int read_profile(reader *r, pb top)
{
    size_t nstr = 0, nfn = 0, nloc = 0, nline = 0;
    int rc = count_tables(r, top, &nstr, &nfn, &nloc, &nline);
    if (rc < 0)
        return rc;
    r->strs = malloc((nstr ? nstr : 1) * sizeof(pp_str));
    r->fns = malloc((nfn ? nfn : 1) * sizeof(pp_fn));
    r->locs = malloc((nloc ? nloc : 1) * sizeof(pp_loc));
    r->lines = malloc((nline ? nline : 1) * sizeof(pp_line));
    r->loc_frames = malloc((nline ? nline : 1) * sizeof(uint32_t));
    uint32_t *frames = malloc(SPP_READ_MAX_DEPTH * sizeof(uint32_t));
    if (!r->strs || !r->fns || !r->locs || !r->lines || !r->loc_frames || !frames) {
        free(frames);
        return SPP_ENOMEM;
    }
    uint32_t field;
    int wire, more;
    uint64_t v;
    pb sub, b = top;
    size_t nsamples = 0;
    while ((more = pb_field(&b, &field, &wire, &v, &sub)) > 0) {
        if (wire != WIRE_LEN)
            continue;
        if (field == 6) {
            r->strs[r->nstrs].s = (const char *)sub.p;
            r->strs[r->nstrs++].n = (size_t)(sub.end - sub.p);
        } else if (field == 5) {
            rc = read_function(r, sub);
        } else if (field == 4) {
            rc = read_location(r, sub);
        } else if (field == 2) {
            nsamples++;
        } else if (field == 1 && r->ntypes < 64) {
            pb vt = sub, x;
            uint32_t f2;
            int w2;
            uint64_t v2;
            r->types[r->ntypes][0] = r->types[r->ntypes][1] = 0;
            while (pb_field(&vt, &f2, &w2, &v2, &x) > 0)
                if ((f2 == 1 || f2 == 2) && w2 == WIRE_VARINT)
                    r->types[r->ntypes][f2 - 1] = v2;
            r->ntypes++;
        }
        if (rc < 0)
            break;
    }
    if (rc == SPP_OK && (!r->nstrs || r->strs[0].n != 0))
        rc = bad(r, "no string table (or its first string is not empty): not a profile.proto");
    if (rc == SPP_OK && !nsamples)
        rc = bad(r, "no samples");
    if (rc == SPP_OK) {
        qsort(r->fns, r->nfns, sizeof(pp_fn), cmp_fn);
        qsort(r->locs, r->nlocs, sizeof(pp_loc), cmp_loc);
        rc = make_frames(r);
    }
    uint32_t t = rc == SPP_OK ? spp_profile_thread(r->p, 0, NULL) : SPP_NONE;
    if (rc == SPP_OK && t == SPP_NONE)
        rc = SPP_ENOMEM;
    if (rc == SPP_OK) {
        uint32_t root = spp_profile_thread_at(r->p, t)->root;
        size_t vi;
        int is_count;
        pick_value(r, &vi, &is_count);
        b = top;
        while (rc == SPP_OK && pb_field(&b, &field, &wire, &v, &sub) > 0)
            if (field == 2 && wire == WIRE_LEN)
                rc = read_sample(r, sub, root, vi, is_count, frames);
    }
    free(frames);
    return rc;
}

int spp_read_pprof(const unsigned char *data, size_t len, spp_profile *p, char *err, size_t errlen)
{
    reader r;
    memset(&r, 0, sizeof(r));
    r.p = p;
    r.err = err;
    r.errlen = errlen;
    pb top = {data, data + len};
    int rc = read_profile(&r, top);
    free(r.strs);
    free(r.fns);
    free(r.locs);
    free(r.lines);
    free(r.loc_frames);
    free(r.ids.v);
    free(r.vals.v);
    return rc;
}

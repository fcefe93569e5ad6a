/* diff.c - two profiles merged into one stack trie with both profiles'
 * measures on every node, written as folded stacks with two counts or as a
 * flame graph coloured by the change in share (drawn by flamegraph.c). */
#include "diff.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIFF_MAX_DEPTH 4096
#define DIFF_GREY 0xdddddd
#define DIFF_MIN_SCALE 5.0   /* pp: a change this big or more is fully saturated */
#define SKIP (SPP_NONE - 1)  /* a frame left out of the merged stacks */

struct spp_diff {
    spp_profile *m;          /* owned: the merged stacks, one thread, root 0 */
    uint64_t *self[2];       /* owned, per merged stack: own measure in BEFORE, AFTER */
    uint64_t *incl[2];       /* owned: the same with everything below */
    uint32_t cap;
    uint64_t total[2];
    int counts[2];           /* measure is samples (else nanoseconds) */
    double scale;            /* pp of change drawn fully saturated */
    spp_diff_opts opts;
    char *buf;               /* owned scratch for canonical names */
    size_t buflen;
};

void spp_diff_opts_default(spp_diff_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->threshold = 0.5;
}

/* Copies s as the text formats show it: the folded format's separators
 * replaced (as the collapsed writer does) and other control bytes dropped
 * (as the SVG does), so that a name read from JSON matches the same name
 * read from folded stacks or an SVG. Returns the length through *n. */
static int canon(spp_diff *d, const char *s, size_t *np, size_t at)
{
    size_t n = *np, k = 0;
    if (at + n + 1 > d->buflen) {
        size_t nl = (at + n + 1) * 2;
        char *nb = realloc(d->buf, nl);
        if (!nb)
            return SPP_ENOMEM;
        d->buf = nb;
        d->buflen = nl;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ';')
            c = ':';
        else if (c == '\n' || c == '\r')
            c = ' ';
        else if ((c < 0x20 && c != '\t') || c == 0x7f)
            continue;
        d->buf[at + k++] = (char)c;
    }
    d->buf[at + k] = '\0';
    *np = k;
    return SPP_OK;
}

/* The merged frame for frame id of p: name, shortened file, line if asked. */
static uint32_t merged_frame(spp_diff *d, const spp_profile *p, uint32_t id)
{
    const spp_frame *f = spp_profile_frame_at(p, id);
    if (f->kind == SPP_FRAME_THREAD)
        return SKIP;
    size_t nlen, flen;
    const char *name = spp_profile_string(p, f->name, &nlen);
    const char *file = spp_profile_string(p, f->file, &flen);
    const char *shown = spp_short_file(file, 0);
    flen -= (size_t)(shown - file);
    /* "process PID: command" (record --subprocesses): PIDs differ between
     * runs, the command is what identifies the process. */
    if (!flen && nlen > 8 && memcmp(name, "process ", 8) == 0) {
        size_t i = 8;
        while (i < nlen && name[i] >= '0' && name[i] <= '9')
            i++;
        if (i > 8 && i + 1 < nlen && name[i] == ':' && name[i + 1] == ' ') {
            size_t plen = 8;
            name += i + 2;
            nlen -= i + 2;
            if (canon(d, "process ", &plen, 0) < 0 || canon(d, name, &nlen, 8) < 0)
                return SPP_NONE;
            nlen += 8;
            goto named;
        }
    }
    if (canon(d, name, &nlen, 0) < 0)
        return SPP_NONE;
named:
    if (canon(d, shown, &flen, nlen + 1) < 0)
        return SPP_NONE;
    spp_frame m = {spp_profile_intern(d->m, d->buf, nlen), spp_profile_intern(d->m, d->buf + nlen + 1, flen),
                   d->opts.lines && f->line > 0 ? f->line : 0, 0, flen ? SPP_FRAME_PYTHON : SPP_FRAME_OTHER};
    if (m.name == SPP_NONE || m.file == SPP_NONE)
        return SPP_NONE;
    return spp_profile_frame(d->m, &m);
}

static int reserve(spp_diff *d)
{
    uint32_t need = spp_profile_nstacks(d->m);
    if (need <= d->cap)
        return SPP_OK;
    uint32_t ncap = d->cap ? d->cap : 1024;
    while (ncap < need)
        ncap *= 2;
    for (int w = 0; w < 2; w++) {
        uint64_t *n = realloc(d->self[w], (size_t)ncap * sizeof(uint64_t));
        if (!n)
            return SPP_ENOMEM;
        memset(n + d->cap, 0, (size_t)(ncap - d->cap) * sizeof(uint64_t));
        d->self[w] = n;
    }
    d->cap = ncap;
    return SPP_OK;
}

/* Adds profile p's stacks as side w (0 BEFORE, 1 AFTER). */
static int merge(spp_diff *d, const spp_profile *p, int w)
{
    uint32_t nframes = spp_profile_nframes(p), nstacks = spp_profile_nstacks(p);
    uint32_t *fmap = malloc((nframes ? nframes : 1) * sizeof(uint32_t));
    uint32_t *smap = malloc((nstacks ? nstacks : 1) * sizeof(uint32_t));
    int rc = SPP_ENOMEM;
    if (!fmap || !smap)
        goto out;
    for (uint32_t i = 0; i < nframes; i++)
        if ((fmap[i] = merged_frame(d, p, i)) == SPP_NONE)
            goto out;
    d->counts[w] = spp_profile_samples(p) > 0;
    /* A trie node comes after its parent, so one pass in id order finds
     * every parent mapped. */
    for (uint32_t s = 0; s < nstacks; s++) {
        const spp_stack *st = spp_profile_stack_at(p, s);
        if (st->parent == SPP_NONE || st->parent >= s)
            smap[s] = 0;
        else if (fmap[st->frame] == SKIP)
            smap[s] = smap[st->parent];
        else if ((smap[s] = spp_profile_push(d->m, smap[st->parent], fmap[st->frame])) == SPP_NONE)
            goto out;
        if (reserve(d) < 0)
            goto out;
        uint64_t v = d->counts[w] ? st->self_count : st->self_weight;
        uint64_t *cell = &d->self[w][smap[s]];
        *cell = *cell > UINT64_MAX - v ? UINT64_MAX : *cell + v;
        d->total[w] = d->total[w] > UINT64_MAX - v ? UINT64_MAX : d->total[w] + v;
    }
    rc = SPP_OK;
out:
    free(fmap);
    free(smap);
    return rc;
}

static double share(const spp_diff *d, int w, uint32_t s)
{
    return s < d->cap && d->total[w] ? 100.0 * (double)d->incl[w][s] / (double)d->total[w] : 0;
}

static double delta(const spp_diff *d, uint32_t s) { return share(d, 1, s) - share(d, 0, s); }

int spp_diff_new(const spp_profile *before, const spp_profile *after, const spp_diff_opts *opts,
                 spp_diff **out)
{
    *out = NULL;
    spp_diff *d = calloc(1, sizeof(*d));
    if (!d)
        return SPP_ENOMEM;
    if (opts)
        d->opts = *opts;
    else
        spp_diff_opts_default(&d->opts);
    int rc = SPP_ENOMEM;
    d->m = spp_profile_new(0);
    if (!d->m || spp_profile_thread(d->m, 0, NULL) == SPP_NONE)
        goto fail;
    if ((rc = merge(d, before, 0)) < 0 || (rc = merge(d, after, 1)) < 0)
        goto fail;
    rc = SPP_EINVAL;
    if (!d->total[0] || !d->total[1])
        goto fail;
    rc = SPP_ENOMEM;
    uint32_t n = spp_profile_nstacks(d->m);
    for (int w = 0; w < 2; w++) {
        if (!(d->incl[w] = malloc((size_t)d->cap * sizeof(uint64_t))))
            goto fail;
        memcpy(d->incl[w], d->self[w], (size_t)d->cap * sizeof(uint64_t));
        for (uint32_t s = n; s-- > 1;) {
            uint64_t *pi = &d->incl[w][spp_profile_stack_at(d->m, s)->parent];
            *pi = *pi > UINT64_MAX - d->incl[w][s] ? UINT64_MAX : *pi + d->incl[w][s];
        }
    }
    /* The widths: what the flame graph draws. */
    int wide = d->opts.negate ? 0 : 1;
    d->scale = DIFF_MIN_SCALE;
    for (uint32_t s = 0; s < n; s++) {
        if (d->self[wide][s])
            spp_profile_add_many(d->m, s, d->self[wide][s], 0);
        if (d->incl[wide][s] && fabs(delta(d, s)) > d->scale)
            d->scale = fabs(delta(d, s));
    }
    *out = d;
    return SPP_OK;
fail:
    spp_diff_free(d);
    return rc;
}

void spp_diff_free(spp_diff *d)
{
    if (!d)
        return;
    spp_profile_free(d->m);
    for (int w = 0; w < 2; w++) {
        free(d->self[w]);
        free(d->incl[w]);
    }
    free(d->buf);
    free(d);
}

uint64_t spp_diff_total(const spp_diff *d, int after, int *counts)
{
    if (counts)
        *counts = d->counts[after ? 1 : 0];
    return d->total[after ? 1 : 0];
}

/* ---- folded stacks with two counts ---- */

typedef struct diff_line {
    const char *text;  /* the stack's text, once the buffer is complete */
    size_t off, len;   /* where it is in the buffer */
    uint32_t stack;
} diff_line;

static int cmp_line(const void *a, const void *b)
{
    const diff_line *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->text, y->text, n);
    if (c)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

int spp_diff_write_collapsed(const spp_diff *d, spp_out *o)
{
    const spp_profile *m = d->m;
    uint32_t n = spp_profile_nstacks(m), nl = 0;
    spp_write_opts wo;
    spp_write_opts_default(&wo);
    wo.lines = d->opts.lines;
    wo.full_filenames = 1; /* shortened when merged already */
    uint32_t *frames = malloc(DIFF_MAX_DEPTH * sizeof(uint32_t));
    diff_line *lines = malloc((n ? n : 1) * sizeof(diff_line));
    spp_out text;
    spp_out_open_mem(&text);
    int rc = SPP_ENOMEM;
    if (!frames || !lines)
        goto out;
    for (uint32_t s = 0; s < n; s++) {
        if (!d->self[0][s] && !d->self[1][s])
            continue;
        lines[nl].off = text.len;
        lines[nl].stack = s;
        uint32_t depth = spp_profile_unwind(m, s, frames, DIFF_MAX_DEPTH);
        for (uint32_t k = 0; k < depth; k++) {
            if (k)
                spp_out_puts(&text, ";");
            spp_write_label(&text, m, spp_profile_frame_at(m, frames[k]), &wo, NULL);
        }
        if (!depth)
            spp_out_puts(&text, "<no frames>");
        lines[nl].len = text.len - lines[nl].off;
        nl++;
    }
    if (text.err)
        goto out;
    for (uint32_t i = 0; i < nl; i++)
        lines[i].text = text.mem + lines[i].off;
    qsort(lines, nl, sizeof(diff_line), cmp_line);
    for (uint32_t i = 0; i < nl; i++) {
        uint32_t s = lines[i].stack;
        long double scaled = (long double)d->self[0][s] * (long double)d->total[1] / (long double)d->total[0];
        /* Rounded, and held below 2^64: a weight near UINT64_MAX rounds
         * up to 2^64, which no unsigned long long holds (found by fuzz_read). */
        long double rounded = scaled + 0.5L;
        unsigned long long before = rounded >= 0x1p64L ? ULLONG_MAX : (unsigned long long)rounded;
        spp_out_write(o, lines[i].text, lines[i].len);
        spp_out_printf(o, " %llu %llu\n", before, (unsigned long long)d->self[1][s]);
    }
    rc = SPP_OK;
out:
    free(frames);
    free(lines);
    spp_out_abort(&text);
    return rc;
}

/* ---- the flame graph ---- */

static uint32_t diff_color(void *ctx, uint32_t s)
{
    const spp_diff *d = ctx;
    double dd = delta(d, s), mag = fabs(dd);
    if (mag < d->opts.threshold || s >= d->cap)
        return DIFF_GREY;
    double f = mag / d->scale;
    if (f > 1)
        f = 1;
    /* From a pale tint at the threshold to a strong colour at the scale;
     * never so dark that the black label cannot be read. */
    uint32_t c = (uint32_t)(225 - 150 * f + 0.5);
    return dd > 0 ? 0xff0000u | c << 8 | c : c << 16 | c << 8 | 0xffu;
}

static void diff_details(void *ctx, uint32_t s, char *buf, size_t n)
{
    const spp_diff *d = ctx;
    snprintf(buf, n, "before %.2f%%, after %.2f%%, %+.2f pp", share(d, 0, s), share(d, 1, s), delta(d, s));
}

static void describe_total(const spp_diff *d, int w, char *buf, size_t n)
{
    if (d->counts[w])
        snprintf(buf, n, "%llu samples", (unsigned long long)d->total[w]);
    else
        snprintf(buf, n, "%.3f s sampled", (double)d->total[w] / 1e9);
}

int spp_diff_write_flamegraph(const spp_diff *d, spp_out *o, const char *title)
{
    /* What the widths leave out: stacks of the other profile that are not
     * drawn (no width), as a share of it. */
    int wide = d->opts.negate ? 0 : 1, other = 1 - wide;
    uint64_t hidden = 0;
    for (uint32_t s = 0; s < spp_profile_nstacks(d->m); s++)
        if (!d->incl[wide][s])
            hidden += d->self[other][s];
    char totals[2][48], subtitle[400];
    describe_total(d, 0, totals[0], sizeof(totals[0]));
    describe_total(d, 1, totals[1], sizeof(totals[1]));
    snprintf(subtitle, sizeof(subtitle),
             "Widths: %s (%s; %s: %s). Red grew, blue shrank in share, grey within %g pp. "
             "Only in %s: %.2f%% of it%s",
             wide ? "after" : "before", totals[wide], wide ? "before" : "after", totals[other],
             d->opts.threshold, wide ? "before" : "after",
             100.0 * (double)hidden / (double)d->total[other],
             hidden && wide ? " (--negate draws it)" : "");
    spp_meta meta;
    memset(&meta, 0, sizeof(meta));
    meta.title = title;
    if (spp_profile_set_meta(d->m, &meta) < 0)
        return SPP_ENOMEM;
    spp_write_opts wo;
    spp_write_opts_default(&wo);
    wo.lines = d->opts.lines;
    wo.full_filenames = 1;
    spp_fg_style style = {(void *)d, diff_color, diff_details, subtitle, 1};
    return spp_write_flamegraph_styled(d->m, o, &wo, &style);
}

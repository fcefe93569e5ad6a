/* chrometrace.c - the Trace Event Format (chrome://tracing, Perfetto): one
 * track per thread, the sampled stacks over time as nested complete ("X")
 * events built from the profile's timeline. */
#include "formats.h"

#include <stdlib.h>
#include <string.h>

#define CHROME_MAX_DEPTH 4096

/* A frame's event once it has ended. */
typedef struct trace_event {
    uint64_t start_ns, end_ns;
    uint64_t weight_ns; /* what the samples within it stand for */
    uint32_t frame;   /* the frame seen when the event began (its line) */
    uint32_t depth;   /* 0 = outermost */
} trace_event;

typedef struct open_frame {
    uint64_t start_ns;
    uint64_t weight_ns;
    uint32_t frame;
} open_frame;

typedef struct tracer {
    const spp_profile *p;
    spp_out *o;
    uint64_t base_ns;   /* ts 0 */
    uint64_t pid;
    trace_event *ev;    /* owned: the events of the thread being written */
    size_t nev, capev;
    open_frame *open;   /* owned, CHROME_MAX_DEPTH entries */
    uint32_t nopen;
    uint32_t *frames;   /* owned, CHROME_MAX_DEPTH entries */
    int first;          /* no event written yet */
} tracer;

/* One function goes on while only its line changes: an event stands for a
 * call, not for a line. */
static int same_function(const spp_profile *p, uint32_t a, uint32_t b)
{
    if (a == b)
        return 1;
    const spp_frame *fa = spp_profile_frame_at(p, a), *fb = spp_profile_frame_at(p, b);
    return fa->name == fb->name && fa->file == fb->file && fa->kind == fb->kind &&
           fa->first_line == fb->first_line && (fa->kind == SPP_FRAME_PYTHON || fa->line == fb->line);
}

static int cmp_event(const void *a, const void *b)
{
    const trace_event *x = a, *y = b;
    if (x->start_ns != y->start_ns)
        return x->start_ns < y->start_ns ? -1 : 1;
    return x->depth < y->depth ? -1 : x->depth > y->depth;
}

/* Ends the open frames from depth keep on, at end_ns. */
static int close_frames(tracer *t, uint32_t keep, uint64_t end_ns)
{
    while (t->nopen > keep) {
        if (t->nev == t->capev) {
            size_t ncap = t->capev ? t->capev * 2 : 1024;
            trace_event *n = realloc(t->ev, ncap * sizeof(*n));
            if (!n)
                return SPP_ENOMEM;
            t->ev = n;
            t->capev = ncap;
        }
        t->nopen--;
        trace_event *e = &t->ev[t->nev++];
        e->start_ns = t->open[t->nopen].start_ns;
        e->end_ns = end_ns;
        e->weight_ns = t->open[t->nopen].weight_ns;
        e->frame = t->open[t->nopen].frame;
        e->depth = t->nopen;
    }
    return SPP_OK;
}

static void write_us(spp_out *o, uint64_t ns)
{
    spp_out_printf(o, "%llu.%03u", (unsigned long long)(ns / 1000), (unsigned)(ns % 1000));
}

static void write_event(tracer *t, uint64_t tid, const trace_event *e)
{
    const spp_profile *p = t->p;
    const spp_frame *f = spp_profile_frame_at(p, e->frame);
    static const char *const cats[] = {"python", "native", "thread", "other"};
    size_t n;
    const char *name = spp_profile_string(p, f->name, &n);
    spp_out_puts(t->o, t->first ? "\n" : ",\n");
    t->first = 0;
    spp_out_printf(t->o, "{\"ph\":\"X\",\"pid\":%llu,\"tid\":%llu,\"ts\":", (unsigned long long)t->pid,
                   (unsigned long long)tid);
    write_us(t->o, e->start_ns - t->base_ns);
    spp_out_puts(t->o, ",\"dur\":");
    write_us(t->o, e->end_ns - e->start_ns);
    spp_out_printf(t->o, ",\"cat\":\"%s\",\"name\":\"", cats[f->kind < 4 ? f->kind : 3]);
    spp_out_json(t->o, name, n);
    /* sampled_ms: the CPU (or wall) time the samples within the event stand
     * for; less than dur where the thread did not run all along. */
    spp_out_printf(t->o, "\",\"args\":{\"sampled_ms\":%.3f", (double)e->weight_ns / 1e6);
    if (f->kind == SPP_FRAME_PYTHON || f->kind == SPP_FRAME_NATIVE) {
        const char *file = spp_profile_string(p, f->file, &n);
        spp_out_puts(t->o, ",\"file\":\"");
        spp_out_json(t->o, file, n);
        spp_out_printf(t->o, "\",\"line\":%d", f->line);
    }
    spp_out_puts(t->o, "}}");
}

/* Turns one thread's runs (indices in time order) into events and writes
 * them, parents before children, in time order. */
static int write_thread(tracer *t, const spp_thread *th, const uint32_t *runs, uint32_t nruns)
{
    const spp_profile *p = t->p;
    uint64_t prev_end = 0;
    t->nev = 0;
    t->nopen = 0;
    for (uint32_t i = 0; i < nruns; i++) {
        const spp_run *r = spp_profile_run_at(p, runs[i]);
        /* A run of no length (a second stack at the very instant of the
         * thread's previous sample: the CLI can see two thread states for
         * one thread while it starts) would be an event of no length with
         * time sampled in it; it is left out of the picture. */
        if (r->end_ns <= r->start_ns)
            continue;
        uint32_t depth = spp_profile_unwind(p, r->stack, t->frames, CHROME_MAX_DEPTH);
        uint32_t keep = 0;
        /* After a gap (the thread was not running) every frame ends, as the
         * timeline says nothing of what the thread did meanwhile. */
        if (r->start_ns <= prev_end)
            while (keep < t->nopen && keep < depth && same_function(p, t->open[keep].frame, t->frames[keep]))
                keep++;
        if (close_frames(t, keep, prev_end) < 0)
            return SPP_ENOMEM;
        for (uint32_t d = keep; d < depth; d++) {
            t->open[d].frame = t->frames[d];
            t->open[d].start_ns = r->start_ns;
            t->open[d].weight_ns = 0;
        }
        t->nopen = depth;
        for (uint32_t d = 0; d < depth; d++)
            t->open[d].weight_ns += r->weight_ns;
        prev_end = r->end_ns;
    }
    if (close_frames(t, 0, prev_end) < 0)
        return SPP_ENOMEM;
    qsort(t->ev, t->nev, sizeof(*t->ev), cmp_event);
    for (size_t i = 0; i < t->nev; i++)
        write_event(t, th->tid, &t->ev[i]);
    return SPP_OK;
}

static void write_meta_event(tracer *t, const char *what, uint64_t tid, const char *s, size_t n,
                             uint64_t number)
{
    spp_out_puts(t->o, t->first ? "\n" : ",\n");
    t->first = 0;
    spp_out_printf(t->o, "{\"ph\":\"M\",\"pid\":%llu,\"tid\":%llu,\"name\":\"%s\",\"args\":{\"name\":\"",
                   (unsigned long long)t->pid, (unsigned long long)tid, what);
    if (s)
        spp_out_json(t->o, s, n);
    else
        spp_out_printf(t->o, "Thread %llu", (unsigned long long)number);
    spp_out_puts(t->o, "\"}}");
}

static void write_other_data(tracer *t)
{
    const spp_profile *p = t->p;
    const spp_meta *m = spp_profile_meta(p);
    spp_out *o = t->o;
    uint64_t left_weight, left = spp_profile_timeline_left_out(p, &left_weight);
    spp_out_puts(o, "\n],\"displayTimeUnit\":\"ms\",\"otherData\":{\"exporter\":\"spprof\",\"title\":\"");
    if (m->title)
        spp_out_json(o, m->title, strlen(m->title));
    spp_out_puts(o, "\",\"clock\":\"");
    if (m->clock)
        spp_out_json(o, m->clock, strlen(m->clock));
    spp_out_puts(o, "\",\"mechanism\":\"");
    if (m->mechanism)
        spp_out_json(o, m->mechanism, strlen(m->mechanism));
    spp_out_printf(o, "\",\"interval_ms\":%g,\"ts_zero_unix_ns\":%llu,\"samples\":%llu,"
                      "\"dropped_samples\":%llu,\"timeline\":\"%s\",\"timeline_left_out_samples\":%llu,"
                      "\"timeline_left_out_ms\":%.3f}}\n",
                   m->interval_ms, (unsigned long long)t->base_ns,
                   (unsigned long long)spp_profile_samples(p), (unsigned long long)spp_profile_dropped(p),
                   left ? "partial" : "complete", (unsigned long long)left, (double)left_weight / 1e6);
}

int spp_write_chrometrace(const spp_profile *p, spp_out *o, const spp_write_opts *opts)
{
    (void)opts; /* events carry name, file and line apart: nothing to choose */
    const spp_meta *m = spp_profile_meta(p);
    uint32_t nthreads = spp_profile_nthreads(p), nruns = spp_profile_nruns(p);
    int rc = SPP_ENOMEM;
    tracer t;
    memset(&t, 0, sizeof(t));
    t.p = p;
    t.o = o;
    t.first = 1;
    t.pid = m->pid ? m->pid : 1;
    uint32_t *start = calloc((size_t)nthreads + 1, sizeof(uint32_t));
    uint32_t *order = malloc(((size_t)nruns + 1) * sizeof(uint32_t));
    t.open = malloc(CHROME_MAX_DEPTH * sizeof(open_frame));
    t.frames = malloc(CHROME_MAX_DEPTH * sizeof(uint32_t));
    if (!start || !order || !t.open || !t.frames)
        goto out;

    /* The runs of all threads lie interleaved in one array; a counting sort
     * by thread keeps each thread's own (time) order. */
    t.base_ns = m->start_ns;
    for (uint32_t i = 0; i < nruns; i++) {
        const spp_run *r = spp_profile_run_at(p, i);
        start[spp_profile_stack_at(p, r->stack)->thread + 1]++;
        if (!t.base_ns || r->start_ns < t.base_ns)
            t.base_ns = r->start_ns;
    }
    for (uint32_t i = 0; i < nthreads; i++)
        start[i + 1] += start[i];
    for (uint32_t i = 0; i < nruns; i++) {
        uint32_t th = spp_profile_stack_at(p, spp_profile_run_at(p, i)->stack)->thread;
        order[start[th]++] = i;
    }
    /* start[th] is now the end of thread th's slice, its beginning that of th - 1. */

    spp_out_puts(o, "{\"traceEvents\":[");
    write_meta_event(&t, "process_name", 0, m->title ? m->title : "spprof",
                     strlen(m->title ? m->title : "spprof"), 0);
    for (uint32_t i = 0; i < nthreads; i++) {
        const spp_thread *th = spp_profile_thread_at(p, i);
        if (!th->samples)
            continue;
        size_t n = 0;
        const char *name = th->name != SPP_NONE ? spp_profile_string(p, th->name, &n) : NULL;
        write_meta_event(&t, "thread_name", th->tid, name, n, th->tid);
    }
    for (uint32_t i = 0; i < nthreads; i++) {
        uint32_t begin = i ? start[i - 1] : 0;
        if (write_thread(&t, spp_profile_thread_at(p, i), order + begin, start[i] - begin) < 0)
            goto out;
    }
    write_other_data(&t);
    rc = SPP_OK;
out:
    free(start);
    free(order);
    free(t.open);
    free(t.frames);
    free(t.ev);
    return rc;
}

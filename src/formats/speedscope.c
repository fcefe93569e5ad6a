/* speedscope.c - speedscope's file format: one sampled profile per thread,
 * shared frame table, stacks root-first, weights in nanoseconds. */
#include "formats.h"

#include <stdlib.h>
#include <string.h>

#define SPEEDSCOPE_MAX_DEPTH 4096

static void write_thread_name(spp_out *o, const spp_profile *p, const spp_thread *t)
{
    size_t n;
    spp_out_puts(o, "\"");
    if (t->name != SPP_NONE) {
        const char *s = spp_profile_string(p, t->name, &n);
        spp_out_json(o, s, n);
        spp_out_printf(o, " (tid %llu)\"", (unsigned long long)t->tid);
    } else {
        spp_out_printf(o, "Thread %llu\"", (unsigned long long)t->tid);
    }
}

int spp_write_speedscope(const spp_profile *p, spp_out *o, const spp_write_opts *opts)
{
    uint32_t *frames = malloc(SPEEDSCOPE_MAX_DEPTH * sizeof(uint32_t));
    if (!frames)
        return SPP_ENOMEM;
    const spp_meta *m = spp_profile_meta(p);
    size_t n;

    spp_out_puts(o, "{\"$schema\":\"https://www.speedscope.app/file-format-schema.json\",");
    spp_out_puts(o, "\"exporter\":\"spprof\",\"name\":\"");
    if (m->title)
        spp_out_json(o, m->title, strlen(m->title));
    else
        spp_out_puts(o, "spprof profile");
    spp_out_puts(o, "\",\"activeProfileIndex\":0,\"shared\":{\"frames\":[");
    uint32_t nframes = spp_profile_nframes(p);
    for (uint32_t i = 0; i < nframes; i++) {
        const spp_frame *f = spp_profile_frame_at(p, i);
        const char *name = spp_profile_string(p, f->name, &n);
        spp_out_puts(o, i ? ",{\"name\":\"" : "{\"name\":\"");
        spp_out_json(o, name, n);
        spp_out_puts(o, "\"");
        if (f->kind == SPP_FRAME_PYTHON || f->kind == SPP_FRAME_NATIVE) {
            size_t flen;
            const char *file = spp_profile_string(p, f->file, &flen);
            /* The file is shown beside the name, not in it: keep it whole. */
            spp_out_puts(o, ",\"file\":\"");
            spp_out_json(o, file, flen);
            spp_out_puts(o, "\"");
            if (opts->lines && f->line > 0)
                spp_out_printf(o, ",\"line\":%d", f->line);
        }
        spp_out_puts(o, "}");
    }
    spp_out_puts(o, "]},\"profiles\":[");

    uint32_t nthreads = spp_profile_nthreads(p), nstacks = spp_profile_nstacks(p);
    /* Every profile's times count from one zero, the start of the recording
     * (or the first sample, when the start is not known), so that threads,
     * and the processes of --subprocesses, line up; nanoseconds since the
     * epoch would not fit a JavaScript number exactly. */
    uint64_t zero = m->start_ns;
    for (uint32_t ti = 0; ti < nthreads; ti++) {
        const spp_thread *t = spp_profile_thread_at(p, ti);
        if (t->samples && t->first_ns && (!zero || t->first_ns < zero))
            zero = t->first_ns;
    }
    int first_profile = 1;
    for (uint32_t ti = 0; ti < nthreads; ti++) {
        const spp_thread *t = spp_profile_thread_at(p, ti);
        if (!t->samples)
            continue;
        spp_out_puts(o, first_profile ? "{" : ",{");
        first_profile = 0;
        spp_out_puts(o, "\"type\":\"sampled\",\"name\":");
        write_thread_name(o, p, t);
        /* A thread's profile spans its first to its last sample, or more
         * if its samples weigh more (the first one stands for time before
         * it, and CPU time may run on several cores at once). */
        uint64_t start = t->first_ns > zero ? t->first_ns - zero : 0;
        uint64_t span = t->last_ns > t->first_ns ? t->last_ns - t->first_ns : 0;
        spp_out_printf(o, ",\"unit\":\"nanoseconds\",\"startValue\":%llu,\"endValue\":%llu,\"samples\":[",
                       (unsigned long long)start,
                       (unsigned long long)(start + (t->weight > span ? t->weight : span)));
        int first = 1;
        for (uint32_t s = 0; s < nstacks; s++) {
            const spp_stack *st = spp_profile_stack_at(p, s);
            if (st->thread != ti || !st->self_count)
                continue;
            uint32_t depth = spp_profile_unwind(p, s, frames, SPEEDSCOPE_MAX_DEPTH);
            spp_out_puts(o, first ? "[" : ",[");
            first = 0;
            for (uint32_t d = 0; d < depth; d++)
                spp_out_printf(o, d ? ",%u" : "%u", frames[d]);
            spp_out_puts(o, "]");
        }
        spp_out_puts(o, "],\"weights\":[");
        first = 1;
        for (uint32_t s = 0; s < nstacks; s++) {
            const spp_stack *st = spp_profile_stack_at(p, s);
            if (st->thread != ti || !st->self_count)
                continue;
            spp_out_printf(o, first ? "%llu" : ",%llu", (unsigned long long)st->self_weight);
            first = 0;
        }
        spp_out_puts(o, "]}");
    }
    spp_out_puts(o, "]}\n");
    free(frames);
    return SPP_OK;
}

/* collapsed.c - FlameGraph's folded stacks: "root;...;leaf count" lines. */
#include "formats.h"

#include <stdlib.h>

#define COLLAPSED_MAX_DEPTH 4096

/* Frame names must not contain the separators of the format: ';' would split
 * a frame in two and a newline would end the line. */
static const char *folded_ascii(unsigned c, char *buf)
{
    (void)buf;
    return c == ';' ? ":" : c == '\n' || c == '\r' ? " " : NULL;
}

static void escape_folded(spp_out *o, const char *s, size_t n)
{
    spp_out_text(o, s, n, folded_ascii);
}

int spp_write_collapsed(const spp_profile *p, spp_out *o, const spp_write_opts *opts)
{
    uint32_t *frames = malloc(COLLAPSED_MAX_DEPTH * sizeof(uint32_t));
    if (!frames)
        return SPP_ENOMEM;
    uint32_t nstacks = spp_profile_nstacks(p);
    for (uint32_t s = 0; s < nstacks; s++) {
        const spp_stack *st = spp_profile_stack_at(p, s);
        if (!st->self_count)
            continue;
        int sep = 0;
        if (opts->thread_roots) {
            const spp_thread *t = spp_profile_thread_at(p, st->thread);
            size_t n;
            spp_out_puts(o, "thread ");
            if (t->name != SPP_NONE) {
                const char *name = spp_profile_string(p, t->name, &n);
                escape_folded(o, name, n);
                spp_out_printf(o, " (%llu)", (unsigned long long)t->tid);
            } else {
                spp_out_printf(o, "%llu", (unsigned long long)t->tid);
            }
            sep = 1;
        }
        uint32_t depth = spp_profile_unwind(p, s, frames, COLLAPSED_MAX_DEPTH);
        for (uint32_t d = 0; d < depth; d++) {
            if (sep)
                spp_out_puts(o, ";");
            spp_write_label(o, p, spp_profile_frame_at(p, frames[d]), opts, escape_folded);
            sep = 1;
        }
        if (!sep)
            spp_out_puts(o, "<no frames>");
        spp_out_printf(o, " %llu\n", (unsigned long long)st->self_count);
    }
    free(frames);
    return SPP_OK;
}

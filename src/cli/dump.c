/* dump.c - `spprof dump`: every thread's stack, now, as text or JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../formats/out.h"
#include "../pyabi/attrs.h"
#include "cli.h"

#define MAX_THREADS 256
#define MAX_LOCALS (1 << 16) /* per dump; frames past it show only a count */

/* The locals of every frame of one snapshot, read while the target is
 * paused so that they match the stacks. */
typedef struct dump_locals {
    spp_local *all;                       /* owned, MAX_LOCALS */
    size_t len;
    spp_local tmp[SPP_LOCALS_MAX];
    uint32_t start[MAX_THREADS][SPP_CLI_MAX_DEPTH];
    int count[MAX_THREADS][SPP_CLI_MAX_DEPTH];   /* < 0: not readable */
    int more[MAX_THREADS][SPP_CLI_MAX_DEPTH];    /* bound ones not shown */
} dump_locals;

/* spp_session_visitor: called again on each retry, so it starts over. */
static void read_locals(void *ctx, const spp_target *t, const spp_reader *r,
                        const spp_sampled_thread *threads, int n)
{
    dump_locals *d = ctx;
    d->len = 0;
    for (int i = 0; i < n && i < MAX_THREADS; i++)
        for (int f = 0; f < threads[i].nframes; f++) {
            int more = 0;
            int got = spp_frame_locals(&t->off, r, &t->types, threads[i].addrs[f],
                                       threads[i].frames[f].code, d->tmp, SPP_LOCALS_MAX, &more);
            if (got > 0 && d->len + (size_t)got > MAX_LOCALS) {
                more += got;
                got = 0;
            }
            d->start[i][f] = (uint32_t)d->len;
            d->count[i][f] = got;
            d->more[i][f] = more;
            if (got > 0) {
                memcpy(d->all + d->len, d->tmp, sizeof(spp_local) * (size_t)got);
                d->len += (size_t)got;
            }
        }
}

static void json_str(const char *s)
{
    spp_out o;
    spp_out_open_mem(&o);
    spp_out_json(&o, s, strlen(s));
    size_t n;
    char *buf = spp_out_take(&o, &n);
    printf("\"%s\"", buf ? buf : "");
    free(buf);
}

/* Under a frame: "name = repr" per local, arguments first. */
static void print_locals_text(const dump_locals *d, int i, int f)
{
    if (d->count[i][f] < 0) {
        printf("        (locals not readable)\n");
        return;
    }
    for (int k = 0; k < d->count[i][f]; k++) {
        const spp_local *l = &d->all[d->start[i][f] + (uint32_t)k];
        printf("        %s = %s\n", l->name, l->value.repr);
    }
    if (d->more[i][f])
        printf("        (%d more)\n", d->more[i][f]);
}

/* ,"locals":[{"name","repr","type"}...] (null when not readable), and
 * "locals_more" when some were left out. */
static void print_locals_json(const dump_locals *d, int i, int f)
{
    if (d->count[i][f] < 0) {
        printf(",\"locals\":null");
        return;
    }
    printf(",\"locals\":[");
    for (int k = 0; k < d->count[i][f]; k++) {
        const spp_local *l = &d->all[d->start[i][f] + (uint32_t)k];
        printf("%s{\"name\":", k ? "," : "");
        json_str(l->name);
        printf(",\"repr\":");
        json_str(l->value.repr);
        printf(",\"type\":");
        json_str(l->value.type);
        printf("}");
    }
    printf("]");
    if (d->more[i][f])
        printf(",\"locals_more\":%d", d->more[i][f]);
}

int spp_cmd_dump(const spp_cli_opts *o)
{
    int rc = 1;
    spp_session *s = spp_session_attach(o->pid, o->nonblocking);
    if (!s)
        return 1;
    /* A copy: the version and module are printed after the session (and
     * its target) is closed, so that the target runs again at once. */
    const spp_target target = *spp_session_target(s), *t = &target;
    spp_profile *p;
    spp_resolver *res;
    spp_sampled_thread *threads = malloc(sizeof(spp_sampled_thread) * MAX_THREADS);
    dump_locals *dl = NULL;
    if (o->locals) {
        dl = malloc(sizeof(*dl));
        if (dl && !(dl->all = malloc(sizeof(spp_local) * MAX_LOCALS))) {
            free(dl);
            dl = NULL;
        }
    }
    /* Names are kept to SPP_THREAD_NAME_MAX bytes, read before the session
     * (which holds them) is closed. */
    static char names[MAX_THREADS][SPP_THREAD_NAME_MAX];
    int oom = !threads || (o->locals && !dl) || spp_session_want_names(s) < 0;
    if (oom || spp_session_model(s, 1, &p, &res) < 0) {
        if (oom)
            spp_cli_error("out of memory");
        free(threads);
        if (dl)
            free(dl->all);
        free(dl);
        spp_session_close(s);
        return 1;
    }
    int errors = 0;
    spp_session_visitor visit = dl ? read_locals : NULL;
    int n = spp_session_sample_visit(s, threads, MAX_THREADS, &errors, visit, dl);
    /* A thread caught mid-call (its frames half linked) is left out of a
     * snapshot: try again a few times so that the dump shows every thread. */
    for (int again = 0; n >= 0 && errors > 0 && again < 20; again++) {
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
        n = spp_session_sample_visit(s, threads, MAX_THREADS, &errors, visit, dl);
    }
    /* Resolve while the reader's cached pages still hold this snapshot. */
    static uint32_t ids[MAX_THREADS][SPP_CLI_MAX_DEPTH];
    for (int i = 0; i < n; i++)
        for (int f = 0; f < threads[i].nframes; f++)
            ids[i][f] = spp_resolver_frame(res, &threads[i].frames[f]);
    for (int i = 0; i < n; i++)
        spp_session_thread_label(s, &threads[i].th, names[i], sizeof(names[i]));
    spp_session_close(s);
    if (n < 0) {
        spp_cli_error("PID %d exited", (int)o->pid);
        goto out;
    }
    char version[32], cmd[1024];
    spp_version_string(t->version, version, sizeof(version));
    spp_process_cmdline(o->pid, cmd, sizeof(cmd));
    if (o->json) {
        printf("{\"pid\":%d,\"python_version\":\"%s\",\"command\":", (int)o->pid, version);
        json_str(cmd);
        printf(",\"threads\":[");
    } else {
        printf("Process %d: %s\nPython v%s (%s)\n", (int)o->pid, cmd, version, t->module);
    }
    for (int i = 0; i < n; i++) {
        const spp_sampled_thread *st = &threads[i];
        const char *name = names[i];
        if (o->json) {
            printf("%s{\"tid\":%d,\"thread_id\":%llu,\"name\":", i ? "," : "", (int)st->th.tid,
                   (unsigned long long)st->th.thread_id);
            json_str(name);
            printf(",\"gil\":%s,\"idle\":%s,\"frames\":[", st->th.holds_gil ? "true" : "false",
                   st->idle ? "true" : "false");
        } else {
            printf("\nThread %d (%s%s): \"%s\"\n", (int)st->th.tid, st->idle ? "idle" : "active",
                   st->th.holds_gil ? ", gil" : "", name);
        }
        /* Outermost first, innermost last. */
        for (int f = st->nframes; f-- > 0;) {
            const spp_frame *fr = spp_profile_frame_at(p, ids[i][f]);
            const char *fname = fr ? spp_profile_string(p, fr->name, NULL) : "<unknown>";
            const char *file = fr ? spp_profile_string(p, fr->file, NULL) : "";
            int line = fr ? fr->line : 0;
            if (o->json) {
                printf("%s{\"name\":", f == st->nframes - 1 ? "" : ",");
                json_str(fname);
                printf(",\"file\":");
                json_str(file);
                printf(",\"line\":%d", line);
                if (dl)
                    print_locals_json(dl, i, f);
                printf("}");
            } else {
                printf("    %s (%s:%d)\n", fname, spp_short_file(file, o->full_filenames), line);
                if (dl)
                    print_locals_text(dl, i, f);
            }
        }
        if (o->json)
            printf("]}");
    }
    if (o->json)
        printf("]}\n");
    rc = 0;
out:
    spp_resolver_free(res);
    spp_profile_free(p);
    free(threads);
    if (dl)
        free(dl->all);
    free(dl);
    return rc;
}

/* dump.c - `spprof dump`: every thread's stack, now, as text or JSON; with
 * --native its C frames merged in, with --subprocesses the same for each
 * Python descendant of the target, one process after the other. */
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

/* Under a frame: "name = repr" per local, arguments first. */
static void print_locals_text(spp_out *out, const dump_locals *d, int i, int f)
{
    if (d->count[i][f] < 0) {
        spp_out_printf(out, "        (locals not readable)\n");
        return;
    }
    for (int k = 0; k < d->count[i][f]; k++) {
        const spp_local *l = &d->all[d->start[i][f] + (uint32_t)k];
        spp_out_printf(out, "        %s = %s\n", l->name, l->value.repr);
    }
    if (d->more[i][f])
        spp_out_printf(out, "        (%d more)\n", d->more[i][f]);
}

static void json_str(spp_out *out, const char *s)
{
    spp_out_puts(out, "\"");
    spp_out_json(out, s, strlen(s));
    spp_out_puts(out, "\"");
}

/* ,"locals":[{"name","repr","type"}...] (null when not readable), and
 * "locals_more" when some were left out. */
static void print_locals_json(spp_out *out, const dump_locals *d, int i, int f)
{
    if (d->count[i][f] < 0) {
        spp_out_puts(out, ",\"locals\":null");
        return;
    }
    spp_out_puts(out, ",\"locals\":[");
    for (int k = 0; k < d->count[i][f]; k++) {
        const spp_local *l = &d->all[d->start[i][f] + (uint32_t)k];
        spp_out_puts(out, k ? ",{\"name\":" : "{\"name\":");
        json_str(out, l->name);
        spp_out_puts(out, ",\"repr\":");
        json_str(out, l->value.repr);
        spp_out_puts(out, ",\"type\":");
        json_str(out, l->value.type);
        spp_out_puts(out, "}");
    }
    spp_out_puts(out, "]");
    if (d->more[i][f])
        spp_out_printf(out, ",\"locals_more\":%d", d->more[i][f]);
}

typedef struct dumper {
    const spp_cli_opts *o;
    spp_profile *profile;           /* borrowed: the processes' resolvers add to it */
    spp_sampled_thread *threads;    /* owned, MAX_THREADS */
    dump_locals *locals;            /* owned; NULL without --locals */
    spp_out out;                    /* everything printed, written out once all are let go */
    int shown;                      /* processes printed so far */
} dumper;

/* One frame of a thread's merged stack: py is the index of its Python frame
 * in the snapshot (for its locals), or -1 for a native one. */
static void print_frame(dumper *d, int i, uint32_t id, int py, int first)
{
    const spp_cli_opts *o = d->o;
    spp_out *out = &d->out;
    const spp_frame *fr = spp_profile_frame_at(d->profile, id);
    const char *name = fr ? spp_profile_string(d->profile, fr->name, NULL) : "<unknown>";
    const char *file = fr ? spp_profile_string(d->profile, fr->file, NULL) : "";
    int line = fr ? fr->line : 0;
    if (o->json) {
        spp_out_puts(out, first ? "{" : ",{");
        /* The kind only with --native: without it every frame is Python,
         * and the objects stay as they were before --native existed. */
        if (o->native)
            spp_out_printf(out, "\"kind\":\"%s\",", py < 0 ? "native" : "python");
        spp_out_puts(out, "\"name\":");
        json_str(out, name);
        spp_out_puts(out, ",\"file\":");
        json_str(out, file);
        spp_out_printf(out, ",\"line\":%d", line);
        if (d->locals && py >= 0)
            print_locals_json(out, d->locals, i, py);
        spp_out_puts(out, "}");
    } else if (py < 0) {
        /* A native frame: its module (none for an address in no file). */
        spp_out_printf(out, file[0] ? "    %s (%s)\n" : "    %s\n", name, file);
    } else {
        spp_out_printf(out, "    %s (%s:%d)\n", name, spp_short_file(file, o->full_filenames), line);
        if (d->locals)
            print_locals_text(out, d->locals, i, py);
    }
}

/* Thread i of process pr's snapshot: a heading, then its stack outermost
 * first. Resolved now, while the reader's cached pages still hold the
 * snapshot. */
static void print_thread(dumper *d, spp_proc *pr, int i)
{
    const spp_sampled_thread *st = &d->threads[i];
    spp_out *out = &d->out;
    char name[SPP_THREAD_NAME_MAX];
    spp_session_thread_label(pr->session, &st->th, name, sizeof(name));
    if (d->o->json) {
        spp_out_printf(out, "%s{\"tid\":%d,\"thread_id\":%llu,\"name\":", i ? "," : "",
                       (int)st->th.tid, (unsigned long long)st->th.thread_id);
        json_str(out, name);
        spp_out_printf(out, ",\"gil\":%s,\"idle\":%s,\"frames\":[",
                       st->th.holds_gil ? "true" : "false", st->idle ? "true" : "false");
    } else {
        spp_out_printf(out, "\nThread %d (%s%s): \"%s\"\n", (int)st->th.tid,
                       st->idle ? "idle" : "active", st->th.holds_gil ? ", gil" : "", name);
    }
    static uint32_t ids[SPP_CLI_MAX_MERGED];
    static int py[SPP_CLI_MAX_MERGED];
    uint32_t n = spp_session_frames(pr->session, pr->resolver, st, ids, SPP_CLI_MAX_MERGED);
    /* The merge keeps every Python frame, in order, and adds native ones
     * between them: counting the frames that are not native gives each
     * Python frame's index in the snapshot (for its locals). */
    int next = 0;
    for (uint32_t k = 0; k < n; k++) {
        const spp_frame *fr = spp_profile_frame_at(d->profile, ids[k]);
        py[k] = fr && fr->kind == SPP_FRAME_NATIVE ? -1 : next < st->nframes ? next++ : -1;
    }
    for (uint32_t k = n; k-- > 0;) /* outermost first, innermost last */
        print_frame(d, i, ids[k], py[k], k == n - 1);
    if (d->o->json)
        spp_out_puts(out, "]}");
}

/* Takes a snapshot of process pr and prints it. Returns < 0 when the
 * process is gone. */
static int dump_process(dumper *d, spp_proc *pr)
{
    const spp_cli_opts *o = d->o;
    spp_out *out = &d->out;
    int errors = 0;
    spp_session_visitor visit = d->locals ? read_locals : NULL;
    int n = spp_session_sample_visit(pr->session, d->threads, MAX_THREADS, &errors, visit, d->locals);
    /* A thread caught mid-call (its frames half linked) is left out of a
     * snapshot: try again a few times so that the dump shows every thread. */
    for (int again = 0; n >= 0 && errors > 0 && again < 20; again++) {
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
        n = spp_session_sample_visit(pr->session, d->threads, MAX_THREADS, &errors, visit, d->locals);
    }
    if (n < 0)
        return n;
    const spp_target *t = spp_session_target(pr->session);
    char version[32], cmd[1024];
    spp_version_string(t->version, version, sizeof(version));
    spp_process_cmdline(pr->pid, cmd, sizeof(cmd));
    if (o->json) {
        spp_out_printf(out, "%s{\"pid\":%d,\"python_version\":\"%s\",\"command\":",
                       d->shown ? "," : "", (int)pr->pid, version);
        json_str(out, cmd);
        spp_out_puts(out, ",\"threads\":[");
    } else {
        spp_out_printf(out, "%sProcess %d: %s\nPython v%s (%s)\n", d->shown ? "\n" : "",
                       (int)pr->pid, cmd, version, t->module);
    }
    for (int i = 0; i < n; i++)
        print_thread(d, pr, i);
    if (o->json)
        spp_out_puts(out, "]}");
    d->shown++;
    return 0;
}

int spp_cmd_dump(const spp_cli_opts *o)
{
    spp_session *s = spp_session_attach(o->pid, o->nonblocking, o->native);
    if (!s)
        return 1;
    /* Every thread is shown, idle or not: each is paused while its stack
     * is read (and, with --native, unwound). */
    spp_cli_opts po = *o;
    po.idle = 1;
    po.at_pause = 1;
    int rc = 1;
    dumper d;
    memset(&d, 0, sizeof(d));
    d.o = o;
    spp_out_open_mem(&d.out);
    d.profile = spp_profile_new(0);
    d.threads = malloc(sizeof(spp_sampled_thread) * MAX_THREADS);
    if (o->locals) {
        d.locals = malloc(sizeof(*d.locals));
        if (d.locals && !(d.locals->all = malloc(sizeof(spp_local) * MAX_LOCALS))) {
            free(d.locals);
            d.locals = NULL;
        }
    }
    spp_procs *ps = NULL;
    if (d.profile && d.threads && (d.locals || !o->locals))
        ps = spp_procs_new(s, o->pid, d.profile, 1, &po);
    if (!ps) {
        spp_cli_error("out of memory");
        spp_session_close(s);
        goto out;
    }
    /* The descendants running Python now (one still starting its runtime
     * is passed over, as are those that do not run Python). */
    if (o->subprocesses)
        spp_procs_discover(ps);
    if (o->json && o->subprocesses)
        spp_out_puts(&d.out, "[");
    int gone = 0;
    for (int k = 0; k < spp_procs_count(ps) && !gone; k++)
        gone = dump_process(&d, spp_procs_at(ps, k)) < 0 && k == 0; /* a child that ended is left out */
    if (o->json)
        spp_out_puts(&d.out, o->subprocesses ? "]\n" : "\n");
    /* Every process runs again, untraced, before anything is printed. */
    spp_procs_free(ps);
    if (gone) {
        spp_cli_error("PID %d exited", (int)o->pid);
        goto out;
    }
    size_t len;
    char *text = spp_out_take(&d.out, &len);
    if (!text) {
        spp_cli_error("out of memory");
        goto out;
    }
    fwrite(text, 1, len, stdout);
    free(text);
    rc = fflush(stdout) == 0 ? 0 : 1;
out:
    spp_out_abort(&d.out);
    spp_profile_free(d.profile);
    free(d.threads);
    if (d.locals)
        free(d.locals->all);
    free(d.locals);
    return rc;
}

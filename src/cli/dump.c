/* dump.c - `spprof dump`: every thread's stack, now, as text or JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../formats/out.h"
#include "cli.h"

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

int spp_cmd_dump(const spp_cli_opts *o)
{
    spp_session *s = spp_session_attach(o->pid, o->nonblocking);
    if (!s)
        return 1;
    /* A copy: the version and module are printed after the session (and
     * its target) is closed, so that the target runs again at once. */
    const spp_target target = *spp_session_target(s), *t = &target;
    spp_profile *p;
    spp_resolver *res;
    spp_sampled_thread *threads = malloc(sizeof(spp_sampled_thread) * 256);
    if (!threads || spp_session_model(s, 1, &p, &res) < 0) {
        free(threads);
        spp_session_close(s);
        return 1;
    }
    int errors = 0;
    int n = spp_session_sample(s, threads, 256, &errors);
    /* A thread caught mid-call (its frames half linked) is left out of a
     * snapshot: try again a few times so that the dump shows every thread. */
    for (int again = 0; n >= 0 && errors > 0 && again < 20; again++) {
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
        n = spp_session_sample(s, threads, 256, &errors);
    }
    /* Resolve while the reader's cached pages still hold this snapshot. */
    static uint32_t ids[256][SPP_CLI_MAX_DEPTH];
    for (int i = 0; i < n; i++)
        for (int f = 0; f < threads[i].nframes; f++)
            ids[i][f] = spp_resolver_frame(res, &threads[i].frames[f]);
    spp_session_close(s);
    if (n < 0) {
        spp_cli_error("PID %d exited", (int)o->pid);
        return 1;
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
        char name[64];
        if (st->th.tid == o->pid)
            snprintf(name, sizeof(name), "MainThread");
        else
            spp_thread_comm(o->pid, st->th.tid, name, sizeof(name));
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
                printf(",\"line\":%d}", line);
            } else {
                printf("    %s (%s:%d)\n", fname, spp_short_file(file, o->full_filenames), line);
            }
        }
        if (o->json)
            printf("]}");
    }
    if (o->json)
        printf("]}\n");
    spp_resolver_free(res);
    spp_profile_free(p);
    free(threads);
    return 0;
}

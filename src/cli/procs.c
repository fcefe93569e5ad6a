/* procs.c - the processes `spprof record` samples: the target, and with
 * --subprocesses its descendants that run Python, found by reading parent
 * links in /proc while recording. Each has its own session (pause, reader)
 * and resolver; all add to one profile. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define PROCS_MAX 256        /* processes sampled at once */
#define SKIPPED_MAX 1024     /* descendants remembered as not (sampleable) Python */
#define PID_SCAN_MAX 65536   /* /proc entries read per scan */


/* A descendant that is not sampled, and what it ran then: it is looked at
 * again only once it runs something else (it exec'd into Python). */
typedef struct skipped {
    pid_t pid;
    spp_image img;
    int seen;     /* still a descendant at the last scan */
} skipped;

struct spp_procs {
    spp_proc procs[PROCS_MAX];
    spp_image imgs[PROCS_MAX];            /* what each ran when its session opened */
    spp_session *sessions[PROCS_MAX]; /* the same sessions, for waiting on all */
    int n;
    skipped skip[SKIPPED_MAX];
    int nskip;
    spp_profile *profile;             /* borrowed */
    const spp_cli_opts *o;            /* borrowed: idle, native for each session */
    int lines, nonblocking, roots;
};

/* The frame "process PID: cmdline" that roots the process's stacks. */
static uint32_t process_frame(spp_profile *p, pid_t pid)
{
    char cmd[512], label[600];
    spp_process_cmdline(pid, cmd, sizeof(cmd));
    snprintf(label, sizeof(label), "process %d: %s", (int)pid, cmd[0] ? cmd : "?");
    spp_frame f = {spp_profile_intern_cstr(p, label), spp_profile_intern_cstr(p, ""), 0, 0,
                   SPP_FRAME_OTHER};
    return f.name == SPP_NONE || f.file == SPP_NONE ? SPP_NONE : spp_profile_frame(p, &f);
}

static int add_proc(spp_procs *ps, pid_t pid, spp_session *s)
{
    if (ps->n == PROCS_MAX)
        return SPP_ENOMEM;
    spp_proc *pr = &ps->procs[ps->n];
    memset(pr, 0, sizeof(*pr));
    pr->pid = pid;
    pr->session = s;
    spp_session_pause_idle(s, ps->o->idle);
    spp_session_sample_moments(s, !ps->o->at_pause);
    if (spp_session_want_names(s) < 0 || (ps->o->native && spp_session_native(s, ps->o->idle) < 0))
        return SPP_ENOMEM;
    pr->resolver = spp_session_resolver(s, ps->profile, ps->lines);
    pr->root = ps->roots ? process_frame(ps->profile, pid) : SPP_NONE;
    if (!pr->resolver || (ps->roots && pr->root == SPP_NONE)) {
        spp_resolver_free(pr->resolver);
        return SPP_ENOMEM;
    }
    ps->sessions[ps->n++] = s;
    return 0;
}

spp_procs *spp_procs_new(spp_session *first, pid_t pid, spp_profile *p, int lines,
                         const spp_cli_opts *o)
{
    spp_procs *ps = calloc(1, sizeof(*ps));
    if (!ps)
        return NULL;
    ps->o = o;
    ps->profile = p;
    ps->lines = lines;
    ps->nonblocking = o->nonblocking;
    ps->roots = o->subprocesses;
    if (add_proc(ps, pid, first) < 0) {
        free(ps);
        return NULL;
    }
    return ps;
}

int spp_procs_count(const spp_procs *ps) { return ps->n; }
spp_proc *spp_procs_at(spp_procs *ps, int i) { return &ps->procs[i]; }

void spp_procs_drop(spp_procs *ps, int i)
{
    spp_resolver_free(ps->procs[i].resolver);
    spp_session_close(ps->procs[i].session);
    ps->n--;
    ps->procs[i] = ps->procs[ps->n];
    ps->sessions[i] = ps->sessions[ps->n];
    ps->imgs[i] = ps->imgs[ps->n];
}

void spp_procs_free(spp_procs *ps)
{
    if (!ps)
        return;
    while (ps->n > 0)
        spp_procs_drop(ps, ps->n - 1);
    free(ps);
}

void spp_procs_wait(spp_procs *ps, uint64_t until)
{
    spp_session_wait_all(ps->sessions, ps->n, until);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* spp_procs_sample's visitor of one session: the caller's, while the
 * process is still paused (see spp_session_visitor). */
typedef struct paused_visit {
    spp_procs_visitor visit;
    void *ctx;
    spp_proc *pr;
    const int *errors;
} paused_visit;

static void visit_paused(void *ctx, const spp_target *t, const spp_reader *r,
                         const spp_sampled_thread *threads, int n)
{
    (void)t;
    (void)r;
    paused_visit *v = ctx;
    v->visit(v->ctx, v->pr, threads, n, *v->errors, mono_ns());
}

int spp_procs_sample(spp_procs *ps, spp_sampled_thread *threads, int cap, spp_procs_visitor visit,
                     void *ctx)
{
    for (int k = 0; k < ps->n;) {
        int errors = 0;
        paused_visit v = {visit, ctx, &ps->procs[k], &errors};
        int n = spp_session_sample_visit(v.pr->session, threads, cap, &errors, visit_paused, &v);
        if (n < 0) {
            if (k == 0)
                return -1;
            spp_procs_drop(ps, k); /* a subprocess ended */
            continue;
        }
        k++;
    }
    return 0;
}

static int index_of(const spp_procs *ps, pid_t pid)
{
    for (int i = 0; i < ps->n; i++)
        if (ps->procs[i].pid == pid)
            return i;
    return -1;
}

static skipped *find_skipped(spp_procs *ps, pid_t pid)
{
    for (int i = 0; i < ps->nskip; i++)
        if (ps->skip[i].pid == pid)
            return &ps->skip[i];
    return NULL;
}

/* Opens a session on a descendant that runs Python, or remembers that it
 * does not (yet): one still starting its runtime is tried again at the next
 * scan, any other is left alone until it runs another executable. */
static void consider(spp_procs *ps, pid_t pid, const spp_image *img)
{
    skipped *sk = find_skipped(ps, pid);
    if (sk) {
        sk->seen = 1;
        if (spp_image_same(&sk->img, img))
            return;
    }
    int why;
    char err[512];
    spp_session *s = spp_session_try_python(pid, ps->nonblocking, &why, err, sizeof(err));
    if (s) {
        if (sk)
            *sk = ps->skip[--ps->nskip];
        if (add_proc(ps, pid, s) < 0) {
            spp_session_close(s);
        } else {
            ps->imgs[ps->n - 1] = *img;
            ps->procs[ps->n - 1].last = mono_ns(); /* its first sample's weight starts now */
        }
        return;
    }
    if (why == SPP_TARGET_NOT_READY || why == SPP_TARGET_NO_PROCESS)
        return;
    if (!sk && ps->nskip < SKIPPED_MAX)
        sk = &ps->skip[ps->nskip++];
    if (!sk)
        return;
    if (why != SPP_TARGET_NOT_PYTHON)
        fprintf(stderr, "spprof: warning: subprocess not sampled: %s\n", err);
    *sk = (skipped){pid, *img, 1};
}

void spp_procs_discover(spp_procs *ps)
{
    /* One pass over /proc collects (pid, parent) pairs; descendants are
     * then found level by level from the first process, so a fork server's
     * children (grandchildren of the target) are found too. A process whose
     * parent died is reparented away and no longer found, but one already
     * sampled stays until it exits. */
    DIR *d = opendir("/proc");
    if (!d)
        return;
    pid_t *pids = malloc(PID_SCAN_MAX * sizeof(pid_t) * 2);
    unsigned long long *stacks = malloc(PID_SCAN_MAX * sizeof(*stacks));
    if (!pids || !stacks) {
        free(pids);
        free(stacks);
        closedir(d);
        return;
    }
    pid_t *parents = pids + PID_SCAN_MAX;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < PID_SCAN_MAX) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid > 0 && spp_proc_stat(pid, &parents[n], &stacks[n]) == 0 && parents[n] > 0)
            pids[n++] = pid;
    }
    closedir(d);
    for (int i = 0; i < ps->nskip; i++)
        ps->skip[i].seen = 0;
    /* The family, first process first; pids[] entries are moved in front
     * as they join it, so each pass looks only at those not yet in. */
    int in = 0;
    pid_t family[PROCS_MAX + SKIPPED_MAX];
    unsigned long long fstack[PROCS_MAX + SKIPPED_MAX];
    int nfam = 0;
    family[nfam++] = ps->procs[0].pid;
    for (int f = 0; f < nfam; f++) {
        for (int i = in; i < n; i++) {
            if (parents[i] != family[f])
                continue;
            if (nfam < (int)(sizeof(family) / sizeof(family[0]))) {
                fstack[nfam] = stacks[i];
                family[nfam++] = pids[i];
            }
            pid_t tp = pids[i], tpar = parents[i];
            unsigned long long tst = stacks[i];
            pids[i] = pids[in];
            parents[i] = parents[in];
            stacks[i] = stacks[in];
            pids[in] = tp;
            parents[in] = tpar;
            stacks[in++] = tst;
        }
    }
    free(pids);
    free(stacks);
    for (int f = 1; f < nfam; f++) {
        spp_image img;
        if (spp_proc_image(family[f], fstack[f], &img) < 0)
            continue;
        int k = index_of(ps, family[f]);
        if (k > 0 && !spp_image_same(&ps->imgs[k], &img))
            spp_procs_drop(ps, k); /* it exec'd: what the session knew is stale */
        else if (k > 0)
            continue;
        consider(ps, family[f], &img);
    }
    /* Forget skipped processes that are no longer descendants (exited). */
    for (int i = 0; i < ps->nskip;)
        if (!ps->skip[i].seen)
            ps->skip[i] = ps->skip[--ps->nskip];
        else
            i++;
}

/* record.c - `spprof record`: sample a program at a steady, jittered rate
 * until it exits, the duration ends or the user presses Ctrl-C, then write
 * the profile atomically. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static uint64_t now_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift: jitter needs no quality, only independence from the target. */
static uint64_t rnd(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* The timeline of a chrometrace recording costs 32 bytes per run of samples
 * (at 100 Hz, at most 11.5 MB per busy thread and hour); past this it stops
 * and the file says it is partial. */
#define RECORD_TIMELINE_MAX ((size_t)256 << 20)

typedef struct recorder {
    const spp_cli_opts *o;
    spp_profile *profile;
    uint64_t samples, errors, late;
    uint64_t start, start_real;  /* CLOCK_MONOTONIC and CLOCK_REALTIME ns at the start */
} recorder;

/* The stack a sample of st in process pr starts from: the thread's root in
 * the model, then with --subprocesses the frame naming the process and
 * (with --threads) one naming the thread, so that the process is above the
 * thread as the writers' own thread roots could not be. */
static uint32_t sample_root(recorder *rc, const spp_proc *pr, const spp_sampled_thread *st)
{
    spp_profile *p = rc->profile;
    uint64_t key = st->th.tid ? (uint64_t)st->th.tid : st->th.thread_id;
    uint32_t before = spp_profile_nthreads(p);
    uint32_t t = spp_profile_thread(p, key, NULL);
    if (t == SPP_NONE)
        return SPP_NONE;
    char name[64];
    name[0] = '\0';
    int named = spp_profile_thread_at(p, t)->name != SPP_NONE;
    if (spp_profile_nthreads(p) != before || (pr->root != SPP_NONE && rc->o->threads)) {
        if (named) {
            size_t len;
            const char *s = spp_profile_string(p, spp_profile_thread_at(p, t)->name, &len);
            snprintf(name, sizeof(name), "%.*s", (int)len, s);
        } else if (st->th.tid == pr->pid) {
            snprintf(name, sizeof(name), "MainThread");
        } else {
            spp_thread_comm(pr->pid, st->th.tid, name, sizeof(name));
        }
        if (name[0] && !named)
            spp_profile_thread(p, key, name);
    }
    uint32_t stack = spp_profile_thread_at(p, t)->root;
    if (pr->root == SPP_NONE)
        return stack;
    stack = spp_profile_push(p, stack, pr->root);
    if (stack != SPP_NONE && rc->o->threads) {
        char label[128];
        if (name[0])
            snprintf(label, sizeof(label), "thread %s (%llu)", name, (unsigned long long)key);
        else
            snprintf(label, sizeof(label), "thread %llu", (unsigned long long)key);
        spp_frame f = {spp_profile_intern_cstr(p, label), spp_profile_intern_cstr(p, ""), 0, 0,
                       SPP_FRAME_THREAD};
        uint32_t fid = f.name == SPP_NONE || f.file == SPP_NONE ? SPP_NONE : spp_profile_frame(p, &f);
        stack = fid == SPP_NONE ? SPP_NONE : spp_profile_push(p, stack, fid);
    }
    return stack;
}

static void add_sample(recorder *rc, const spp_proc *pr, const spp_sampled_thread *st,
                       uint64_t weight, uint64_t when)
{
    spp_profile *p = rc->profile;
    spp_resolver *res = pr->resolver;
    uint32_t stack = sample_root(rc, pr, st);
    if (stack != SPP_NONE && st->truncated)
        stack = spp_profile_push(p, stack, spp_resolver_marker(res, SPP_MARK_TRUNCATED));
    if (st->nframes == 0 && stack != SPP_NONE)
        stack = spp_profile_push(p, stack, spp_resolver_marker(res, SPP_MARK_NO_PYTHON));
    uint32_t frames[SPP_CLI_MAX_MERGED];
    uint32_t n = st->nframes ? spp_session_frames(pr->session, res, st, frames, SPP_CLI_MAX_MERGED)
                             : 0;
    for (uint32_t i = n; i-- > 0 && stack != SPP_NONE;)
        stack = frames[i] == SPP_NONE ? SPP_NONE : spp_profile_push(p, stack, frames[i]);
    if (stack == SPP_NONE) {
        spp_profile_drop(p, 1);
        return;
    }
    spp_profile_add(p, stack, weight, when);
    rc->samples++;
}

/* spp_procs_visitor: one process's snapshot into the profile, each sample
 * weighted by the time since the process's previous snapshot. */
static void add_snapshot(void *ctx, spp_proc *pr, const spp_sampled_thread *threads, int n,
                         int errors, uint64_t when)
{
    recorder *rc = ctx;
    const spp_cli_opts *o = rc->o;
    rc->errors += (uint64_t)errors;
    uint64_t weight = when - pr->last;
    pr->last = when;
    for (int i = 0; i < n; i++) {
        if (o->gil && !threads[i].th.holds_gil)
            continue;
        if (!o->idle && threads[i].idle)
            continue;
        add_sample(rc, pr, &threads[i], weight, when - rc->start + rc->start_real);
    }
}

static void progress(const recorder *rc, double elapsed, int final)
{
    fprintf(stderr, "\r\033[Kspprof: %llu samples, %llu errors, %llu late, %.1f s%s",
            (unsigned long long)rc->samples, (unsigned long long)rc->errors,
            (unsigned long long)rc->late, elapsed, final ? "\n" : "");
}

static const char *default_output(const char *format, pid_t pid, char *buf, size_t n)
{
    const char *ext = strcmp(format, "speedscope") == 0    ? "json"
                      : strcmp(format, "flamegraph") == 0  ? "svg"
                      : strcmp(format, "chrometrace") == 0 ? "trace.json"
                      : strcmp(format, "pprof") == 0       ? "pb.gz"
                                                           : "txt";
    snprintf(buf, n, "spprof-%d.%s", (int)pid, ext);
    return buf;
}

/* Waits for the launched child to end. A thread of it that is still in a
 * ptrace stop (spprof detaches every thread it can when it closes, but one
 * created at that instant may remain) is let go rather than waited on. */
static int wait_child(pid_t pid)
{
    for (;;) {
        int status;
        pid_t w = waitpid(-1, &status, __WALL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == pid && (WIFEXITED(status) || WIFSIGNALED(status)))
            return status;
        if (WIFSTOPPED(status)) {
            int sig = (status >> 16) == 0 ? WSTOPSIG(status) : 0;
            ptrace(PTRACE_DETACH, w, 0, (void *)(long)sig);
        }
    }
}

/* Ends a launched child that spprof will not profile: SIGTERM, then
 * SIGKILL if it has not gone within five seconds. */
static void end_child(pid_t pid)
{
    kill(pid, SIGTERM);
    for (int i = 0; i < 50; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        struct timespec nap = {0, 100000000};
        nanosleep(&nap, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Fails early, before anything is profiled, when the output cannot be
 * written. */
static int check_output_dir(const char *output)
{
    char dir[4096];
    const char *slash = strrchr(output, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == output)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - output), output);
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        spp_cli_error("cannot write %s: the directory %s does not exist", output, dir);
        return -1;
    }
    if (access(dir, W_OK | X_OK) < 0) {
        spp_cli_error("cannot write %s: the directory %s is not writable (%s)", output, dir,
                      strerror(errno));
        return -1;
    }
    return 0;
}

int spp_cmd_record(const spp_cli_opts *o)
{
    spp_writer_fn writer = spp_writer_lookup(o->format);
    if (!writer) {
        spp_cli_error("unknown format '%s' (choose flamegraph, speedscope, collapsed, raw, pprof or chrometrace)", o->format);
        return 2;
    }
    if (o->output && check_output_dir(o->output) < 0)
        return 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    pid_t pid = o->pid;
    int launched = 0;
    if (!pid) {
        pid = spp_launch(o->argv);
        if (pid < 0)
            return 1;
        launched = 1;
    }
    spp_session *s = spp_wait_for_python(pid, o->nonblocking, launched, &stop_requested, o->duration);
    if (!s) {
        if (launched)
            end_child(pid);
        return 1;
    }
    if (o->native && !spp_session_native_ok(s)) {
        spp_session_close(s);
        if (launched)
            end_child(pid);
        return 1;
    }
    if (o->gil && spp_session_target(s)->off.free_threaded) {
        char v[32];
        spp_version_string(spp_session_target(s)->version, v, sizeof(v));
        spp_cli_error("--gil has no meaning for PID %d: its Python (%s, free-threaded) has no GIL",
                      (int)pid, v);
        spp_session_close(s);
        if (launched)
            end_child(pid);
        return 2;
    }
    char outbuf[64];
    const char *output = o->output ? o->output : default_output(o->format, pid, outbuf, sizeof(outbuf));

    recorder rc;
    memset(&rc, 0, sizeof(rc));
    rc.o = o;
    int lines = !o->nolineno && !o->function;
    spp_procs *ps = NULL;
    spp_sampled_thread *threads = malloc(sizeof(spp_sampled_thread) * 256);
    rc.profile = spp_profile_new(0);
    if (threads && rc.profile)
        ps = spp_procs_new(s, pid, rc.profile, lines, o);
    if (!ps) {
        spp_cli_error("out of memory");
        free(threads);
        spp_profile_free(rc.profile);
        spp_session_close(s);
        if (launched)
            end_child(pid);
        return 1;
    }
    /* Only this format reads the timeline; the others keep memory bound by
     * distinct stacks however long the recording. */
    if (strcmp(o->format, "chrometrace") == 0)
        spp_profile_keep_timeline(rc.profile, RECORD_TIMELINE_MAX);

    int tty = isatty(2);
    uint64_t period = (uint64_t)(1e9 / o->rate);
    uint64_t start_real = now_ns(CLOCK_REALTIME), start = now_ns(CLOCK_MONOTONIC);
    rc.start = start;
    rc.start_real = start_real;
    uint64_t deadline = start, last_progress = 0, last_discovery = 0;
    uint64_t seed = start ^ (uint64_t)pid ^ 0x9e3779b97f4a7c15ull;
    spp_procs_at(ps, 0)->last = start;
    int exit_status = -1;
    while (!stop_requested) {
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        if (o->duration > 0 && now - start >= (uint64_t)(o->duration * 1e9))
            break;
        if (o->subprocesses && now - last_discovery >= SPP_PROCS_DISCOVERY_NS) {
            spp_procs_discover(ps);
            last_discovery = now;
            continue;
        }
        if (now < deadline) {
            uint64_t until = deadline;
            if (o->subprocesses && last_discovery + SPP_PROCS_DISCOVERY_NS < until)
                until = last_discovery + SPP_PROCS_DISCOVERY_NS;
            spp_procs_wait(ps, until);
            continue;
        }
        /* A sample more than half a period behind its time is late: the
         * profiler could not keep up with the asked rate. */
        if (now - deadline > period / 2)
            rc.late++;
        if (spp_procs_sample(ps, threads, 256, add_snapshot, &rc) < 0)
            break; /* the target is gone */
        uint64_t when = now_ns(CLOCK_MONOTONIC);
        /* Next deadline: one period on average, jittered by up to a quarter
         * either way so that periodic work in the target is not aliased. */
        uint64_t jitter = period / 2 ? rnd(&seed) % (period / 2) : 0;
        deadline += period - period / 4 + jitter;
        if (deadline + 10 * period < when)
            deadline = when; /* far behind (target paused?): don't burst */
        if (launched && o->nonblocking) {
            /* (When pausing, the session reaps the child as a tracee.) */
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                exit_status = status;
                break;
            }
        }
        if (tty && when - last_progress > 250000000ull) {
            progress(&rc, (double)(when - start) / 1e9, 0);
            last_progress = when;
        }
    }
    uint64_t end = now_ns(CLOCK_MONOTONIC);
    if (exit_status < 0)
        exit_status = spp_session_exit_status(spp_procs_at(ps, 0)->session);
    spp_procs_free(ps);
    if (tty)
        progress(&rc, (double)(end - start) / 1e9, 1);

    char title[1024];
    spp_process_cmdline(pid, title, sizeof(title));
    if (!title[0] && o->argv) {
        size_t used = 0;
        for (char **a = o->argv; *a && used < sizeof(title) - 2; a++)
            used += (size_t)snprintf(title + used, sizeof(title) - used, "%s%s", used ? " " : "", *a);
    }
    spp_meta meta = {title, "wall", o->nonblocking ? "ptrace-free reads" : "ptrace pause",
                     1000.0 / o->rate, start_real, start_real + (end - start), (uint64_t)pid};
    spp_profile_set_meta(rc.profile, &meta);

    spp_write_opts wo;
    spp_write_opts_default(&wo);
    wo.lines = lines;
    wo.full_filenames = o->full_filenames;
    wo.thread_roots = o->threads && !o->subprocesses; /* else already in the stacks */
    int rcode = 0;
    if (rc.samples == 0) {
        spp_cli_error("no samples were taken (the program ended or stayed idle%s); nothing written",
                      o->idle ? "" : "; --idle includes idle threads");
        rcode = 1;
    } else {
        int w = spp_write_file(rc.profile, output, o->format, &wo);
        if (w < 0) {
            spp_cli_error("cannot write %s: %s", output, strerror(-w));
            rcode = 1;
        } else {
            fprintf(stderr, "spprof: wrote %s (%llu samples, %llu errors, %llu late)\n", output,
                    (unsigned long long)rc.samples, (unsigned long long)rc.errors,
                    (unsigned long long)rc.late);
        }
    }
    if (launched && exit_status < 0) {
        /* Stopped early (Ctrl-C, --duration): the program keeps running as
         * it would without spprof; wait for it as its parent (letting go of
         * any thread still stopped for spprof). */
        exit_status = wait_child(pid);
    }
    spp_profile_free(rc.profile);
    free(threads);
    /* The launched program's own result is the command's result, once the
     * profile is written. */
    if (launched && rcode == 0 && exit_status >= 0) {
        if (WIFEXITED(exit_status))
            rcode = WEXITSTATUS(exit_status);
        else if (WIFSIGNALED(exit_status))
            rcode = 128 + WTERMSIG(exit_status);
    }
    return rcode;
}

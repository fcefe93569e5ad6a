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

typedef struct recorder {
    const spp_cli_opts *o;
    spp_profile *profile;
    spp_resolver *resolver;
    uint64_t samples, errors, late;
} recorder;

static uint32_t thread_root(recorder *rc, pid_t pid, const spp_sampled_thread *st)
{
    spp_profile *p = rc->profile;
    uint64_t key = st->th.tid ? (uint64_t)st->th.tid : st->th.thread_id;
    uint32_t before = spp_profile_nthreads(p);
    uint32_t t = spp_profile_thread(p, key, NULL);
    if (t != SPP_NONE && spp_profile_nthreads(p) != before) {
        char name[64];
        if (st->th.tid == pid)
            snprintf(name, sizeof(name), "MainThread");
        else
            spp_thread_comm(pid, st->th.tid, name, sizeof(name));
        if (name[0])
            spp_profile_thread(p, key, name);
    }
    return t == SPP_NONE ? SPP_NONE : spp_profile_thread_at(p, t)->root;
}

static void add_sample(recorder *rc, pid_t pid, const spp_sampled_thread *st, uint64_t weight,
                       uint64_t when)
{
    spp_profile *p = rc->profile;
    uint32_t stack = thread_root(rc, pid, st);
    if (stack != SPP_NONE && st->truncated)
        stack = spp_profile_push(p, stack, spp_resolver_marker(rc->resolver, SPP_MARK_TRUNCATED));
    if (st->nframes == 0 && stack != SPP_NONE)
        stack = spp_profile_push(p, stack, spp_resolver_marker(rc->resolver, SPP_MARK_NO_PYTHON));
    for (int i = st->nframes; i-- > 0 && stack != SPP_NONE;) {
        uint32_t f = spp_resolver_frame(rc->resolver, &st->frames[i]);
        stack = f == SPP_NONE ? SPP_NONE : spp_profile_push(p, stack, f);
    }
    if (stack == SPP_NONE) {
        spp_profile_drop(p, 1);
        return;
    }
    spp_profile_add(p, stack, weight, when);
    rc->samples++;
}

static void progress(const recorder *rc, double elapsed, int final)
{
    fprintf(stderr, "\r\033[Kspprof: %llu samples, %llu errors, %llu late, %.1f s%s",
            (unsigned long long)rc->samples, (unsigned long long)rc->errors,
            (unsigned long long)rc->late, elapsed, final ? "\n" : "");
}

static const char *default_output(const char *format, pid_t pid, char *buf, size_t n)
{
    const char *ext = strcmp(format, "speedscope") == 0   ? "json"
                      : strcmp(format, "flamegraph") == 0 ? "svg"
                      : strcmp(format, "pprof") == 0      ? "pb.gz"
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
        spp_cli_error("unknown format '%s' (choose flamegraph, speedscope, collapsed, raw, pprof)", o->format);
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
    spp_sampled_thread *threads = malloc(sizeof(spp_sampled_thread) * 256);
    if (!threads || spp_session_model(s, !o->nolineno && !o->function, &rc.profile, &rc.resolver) < 0) {
        free(threads);
        spp_session_close(s);
        return 1;
    }

    int tty = isatty(2);
    uint64_t period = (uint64_t)(1e9 / o->rate);
    uint64_t start_real = now_ns(CLOCK_REALTIME), start = now_ns(CLOCK_MONOTONIC);
    uint64_t deadline = start, last = start, last_progress = 0;
    uint64_t seed = start ^ (uint64_t)pid ^ 0x9e3779b97f4a7c15ull;
    int exit_status = -1;
    while (!stop_requested) {
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        if (o->duration > 0 && now - start >= (uint64_t)(o->duration * 1e9))
            break;
        if (now < deadline) {
            spp_session_wait(s, deadline);
            continue;
        }
        /* A sample more than half a period behind its time is late: the
         * profiler could not keep up with the asked rate. */
        if (now - deadline > period / 2)
            rc.late++;
        int errors = 0;
        int n = spp_session_sample(s, threads, 256, &errors);
        uint64_t when = now_ns(CLOCK_MONOTONIC);
        if (n < 0)
            break; /* the target is gone */
        rc.errors += (uint64_t)errors;
        uint64_t weight = when - last;
        last = when;
        for (int i = 0; i < n; i++) {
            if (o->gil && !threads[i].th.holds_gil)
                continue;
            if (!o->idle && threads[i].idle)
                continue;
            add_sample(&rc, pid, &threads[i], weight, when - start + start_real);
        }
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
        exit_status = spp_session_exit_status(s);
    spp_session_close(s);
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
                     1000.0 / o->rate, start_real, start_real + (end - start)};
    spp_profile_set_meta(rc.profile, &meta);

    spp_write_opts wo;
    spp_write_opts_default(&wo);
    wo.lines = !o->nolineno && !o->function;
    wo.full_filenames = o->full_filenames;
    wo.thread_roots = o->threads;
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
            fprintf(stderr, "spprof: wrote %s (%llu samples, %llu errors)\n", output,
                    (unsigned long long)rc.samples, (unsigned long long)rc.errors);
        }
    }
    if (launched && exit_status < 0) {
        /* Stopped early (Ctrl-C, --duration): the program keeps running as
         * it would without spprof; wait for it as its parent (letting go of
         * any thread still stopped for spprof). */
        exit_status = wait_child(pid);
    }
    spp_resolver_free(rc.resolver);
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

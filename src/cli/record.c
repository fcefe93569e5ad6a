/* record.c - `spprof record`: sample a program at a steady, jittered rate
 * until it exits, the duration ends or the user presses Ctrl-C, then write
 * the profile atomically. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../pyabi/attrs.h"
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
    uint64_t samples, errors, late, missed;
    uint64_t start, start_real;  /* CLOCK_MONOTONIC and CLOCK_REALTIME ns at the start */
    unsigned *named;             /* per profile thread: 1 + its session's names_gen when named */
    uint32_t named_cap;
} recorder;

/* Whether profile thread t was named under its session's current thread
 * names (gen); marks it so. A thread absent from the snapshot in which
 * the names changed (idle, or not running Python then) is named again the
 * next time it is sampled. */
static int named_under(recorder *rc, uint32_t t, unsigned gen)
{
    if (t >= rc->named_cap) {
        uint32_t cap = rc->named_cap ? rc->named_cap : 64;
        while (cap <= t)
            cap *= 2;
        unsigned *grown = realloc(rc->named, cap * sizeof(*grown));
        if (!grown)
            return 0; /* (named again each time: slower, still right) */
        memset(grown + rc->named_cap, 0, (cap - rc->named_cap) * sizeof(*grown));
        rc->named = grown;
        rc->named_cap = cap;
    }
    int was = rc->named[t] == gen + 1;
    rc->named[t] = gen + 1;
    return was;
}

/* The stack a sample of st in process pr starts from: the thread's root in
 * the model, then with --subprocesses the frame naming the process and
 * (with --threads) one naming the thread, so that the process is above the
 * thread as the writers' own thread roots could not be. */
static uint32_t sample_root(recorder *rc, const spp_proc *pr, const spp_sampled_thread *st)
{
    spp_profile *p = rc->profile;
    uint64_t key = st->th.tid ? (uint64_t)st->th.tid : st->th.thread_id;
    uint32_t t = spp_profile_thread(p, key, NULL);
    if (t == SPP_NONE)
        return SPP_NONE;
    char name[SPP_THREAD_NAME_MAX];
    name[0] = '\0';
    /* A thread is named when first seen (never named under any names),
     * and again after the session read changed names: the profile keeps
     * each thread's newest name. */
    if (!named_under(rc, t, spp_session_names_gen(pr->session))) {
        spp_session_thread_label(pr->session, &st->th, name, sizeof(name));
        if (name[0])
            spp_profile_thread(p, key, name);
    } else if (pr->root != SPP_NONE && rc->o->threads &&
               spp_profile_thread_at(p, t)->name != SPP_NONE) {
        size_t len;
        const char *s = spp_profile_string(p, spp_profile_thread_at(p, t)->name, &len);
        snprintf(name, sizeof(name), "%.*s", (int)len, s);
    }
    uint32_t stack = spp_profile_thread_at(p, t)->root;
    if (pr->root == SPP_NONE)
        return stack;
    stack = spp_profile_push(p, stack, pr->root);
    if (stack != SPP_NONE && rc->o->threads) {
        char label[SPP_THREAD_NAME_MAX + 32];
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
 * weighted by the time since the process's previous snapshot. It runs
 * while the process is still paused: a code object seen for the first time
 * is read now, since once the target runs again a short-lived one (a
 * module's code after its import, an exec'd string) may be freed, or its
 * memory reused. */
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
    fprintf(stderr, "\r\033[Kspprof: %llu samples, %llu errors, %llu late, %llu missed, %.1f s%s",
            (unsigned long long)rc->samples, (unsigned long long)rc->errors,
            (unsigned long long)rc->late, (unsigned long long)rc->missed, elapsed, final ? "\n" : "");
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

/* Reaps the launched child if it has ended: 1 if it is gone (reaped now or
 * before), 0 if it still runs. */
static int child_gone(pid_t pid)
{
    pid_t w = waitpid(pid, NULL, WNOHANG);
    return w == pid || (w < 0 && errno == ECHILD);
}

/* Ends a launched child that spprof will not profile: SIGTERM, then
 * SIGKILL if it has not gone within five seconds. One already reaped (it
 * exited while spprof waited for its interpreter) is not signalled: its PID
 * may be another process's by now. */
static void end_child(pid_t pid)
{
    if (child_gone(pid))
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 50; i++) {
        if (child_gone(pid))
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

/* The application name uploads go under: --app-name, else the script or
 * command being profiled. */
static void upload_app(const spp_cli_opts *o, pid_t pid, char *buf, size_t n)
{
    if (o->upload.app_name) {
        snprintf(buf, n, "%s", o->upload.app_name);
        return;
    }
    if (o->argv) {
        int argc = 0;
        while (o->argv[argc])
            argc++;
        spp_upload_default_app(o->argv, argc, buf, n);
        return;
    }
    char path[64], raw[4096];
    char *args[64];
    int argc = 0;
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    ssize_t len = spp_proc_read(path, raw, sizeof(raw));
    for (ssize_t i = 0; i < len && argc < 64; i += (ssize_t)strlen(raw + i) + 1)
        args[argc++] = raw + i;
    spp_upload_default_app(args, argc, buf, n);
}

/* Queues the samples taken since the mark (all of them without one) as
 * the profile of [from, until] (CLOCK_REALTIME ns). An empty window is not
 * sent. */
static void upload_window(recorder *rc, spp_uploader *up, spp_mark *mark, uint64_t from,
                          uint64_t until)
{
    spp_profile *w = rc->profile;
    uint64_t n = spp_profile_samples(w);
    if (mark) {
        w = spp_profile_take_window(rc->profile, mark, &n);
        if (!w) {
            spp_cli_error("out of memory: a window of samples was not uploaded");
            return;
        }
    }
    spp_meta m = *spp_profile_meta(w);
    m.start_ns = from;
    m.end_ns = until;
    if (n && spp_profile_set_meta(w, &m) == 0)
        spp_uploader_send(up, w, from, until);
    if (mark)
        spp_profile_free(w);
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
    /* With --upload the profile goes to the server, and to a file only when
     * -o names one. */
    const char *output = o->output ? o->output
                         : o->upload.url ? NULL
                                         : default_output(o->format, pid, outbuf, sizeof(outbuf));

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
        free(rc.named);
        spp_session_close(s);
        if (launched)
            end_child(pid);
        return 1;
    }
    /* Only this format reads the timeline; the others keep memory bound by
     * distinct stacks however long the recording. */
    if (strcmp(o->format, "chrometrace") == 0)
        spp_profile_keep_timeline(rc.profile, RECORD_TIMELINE_MAX);

    /* The meta now, while the process is there to name it: windows
     * uploaded during the recording carry it. */
    char title[1024];
    spp_process_cmdline(pid, title, sizeof(title));
    if (!title[0] && o->argv) {
        size_t used = 0;
        for (char **a = o->argv; *a && used < sizeof(title) - 2; a++)
            used += (size_t)snprintf(title + used, sizeof(title) - used, "%s%s", used ? " " : "", *a);
    }
    spp_write_opts wo;
    spp_write_opts_default(&wo);
    wo.lines = lines;
    wo.full_filenames = o->full_filenames;
    wo.thread_roots = o->threads && !o->subprocesses; /* else already in the stacks */

    spp_uploader *up = NULL;
    spp_mark *mark = NULL;
    if (o->upload.url) {
        char app[160], err[512];
        upload_app(o, pid, app, sizeof(app));
        up = spp_uploader_start(&o->upload, app, o->rate, "wall", &wo, err, sizeof(err));
        if (up && o->upload.every > 0 && !(mark = spp_mark_new()))
            snprintf(err, sizeof(err), "out of memory");
        if (!up || (o->upload.every > 0 && !mark)) {
            spp_cli_error("--upload %s", err);
            if (up)
                spp_uploader_finish(up);
            spp_procs_free(ps);
            free(threads);
            spp_profile_free(rc.profile);
            free(rc.named);
            if (launched)
                end_child(pid);
            return 1;
        }
    }

    int tty = isatty(2);
    uint64_t period = (uint64_t)(1e9 / o->rate);
    /* Sleeps end when asked, not up to 50 us later (the default slack, a
     * tenth of a period at 2 kHz). */
    prctl(PR_SET_TIMERSLACK, 1ul, 0ul, 0ul, 0ul);
    uint64_t start_real = now_ns(CLOCK_REALTIME), start = now_ns(CLOCK_MONOTONIC);
    spp_meta meta = {title, "wall", o->nonblocking ? "ptrace-free reads" : "ptrace pause",
                     1000.0 / o->rate, start_real, start_real, (uint64_t)pid};
    spp_profile_set_meta(rc.profile, &meta);
    uint64_t every = (uint64_t)(o->upload.every * 1e9);
    uint64_t window_end = start + every, window_from = start_real;
    rc.start = start;
    rc.start_real = start_real;
    uint64_t deadline = start, last_progress = 0, last_discovery = 0;
    /* Paused threads do no work: the next pause starts no sooner than half
     * as long as the last sample took after it ended, so that a rate the
     * machine cannot keep up costs late and missed samples, not a target paused back to
     * back (at 20 kHz here, 2 s of work had had 0.5 s of CPU after 53 s: each
     * stop and resume costs the target kernel time too). */
    uint64_t not_before = 0;
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
        if (mark && now >= window_end) {
            /* The window ends now: its samples go to the server while
             * recording goes on, and the next window starts where it ends. */
            uint64_t until = start_real + (now - start);
            upload_window(&rc, up, mark, window_from, until);
            window_from = until;
            window_end += every;
            if (window_end <= now)
                window_end = now + every; /* far behind: don't send a burst */
            continue;
        }
        if (now < deadline || now < not_before) {
            uint64_t until = deadline > not_before ? deadline : not_before;
            if (mark && window_end < until)
                until = window_end;
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
        if (!o->nonblocking)
            not_before = when + (when - now) / 2;
        /* Next deadline: one period on average, jittered by up to a quarter
         * either way so that periodic work in the target is not aliased. */
        uint64_t jitter = period / 2 ? rnd(&seed) % (period / 2) : 0;
        deadline += period - period / 4 + jitter;
        if (when > deadline + period / 2) {
            /* More than half a period behind (this machine ran something
             * else, or a sample takes longer than a period): every deadline
             * passed is skipped and counted as missed, and the schedule
             * goes on from the first one ahead. Taken, they would be a
             * burst of late samples of one moment, the stack after the
             * stall counted as often as the stall had periods (a VM here
             * stops spprof for 0.1-7 ms a few times a second). This
             * sample's weight stands for the stall's time all the same.
             * Behind by half a period or less, the next deadline is kept:
             * its sample comes at once, on time by the rule above. */
            uint64_t k = (when - deadline) / period + 1;
            rc.missed += k;
            deadline += k * period;
        }
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
    int execd = spp_session_execd(spp_procs_at(ps, 0)->session);
    spp_procs_free(ps);
    if (tty)
        progress(&rc, (double)(end - start) / 1e9, 1);

    if (execd)
        fprintf(stderr, "spprof: PID %d ran another program (exec): the recording ends there\n",
                (int)pid);
    meta.end_ns = start_real + (end - start);
    spp_profile_set_meta(rc.profile, &meta);

    int rcode = 0;
    uint64_t upload_failed = 0;
    if (up) {
        /* The last, partial window (or, without --every, the whole
         * recording), then every upload still queued. */
        if (rc.samples)
            upload_window(&rc, up, mark, mark ? window_from : start_real, meta.end_ns);
        upload_failed = spp_uploader_finish(up);
        spp_mark_free(mark);
    }
    if (rc.samples == 0) {
        spp_cli_error("no samples were taken (the program ended or stayed idle%s); nothing %s",
                      o->idle ? "" : "; --idle includes idle threads", up ? "uploaded" : "written");
        rcode = 1;
    } else if (output) {
        int w = spp_write_file(rc.profile, output, o->format, &wo);
        if (w < 0) {
            spp_cli_error("cannot write %s: %s", output, strerror(-w));
            rcode = 1;
        } else {
            fprintf(stderr, "spprof: wrote %s (%llu samples, %llu errors, %llu late, %llu missed)\n",
                    output, (unsigned long long)rc.samples, (unsigned long long)rc.errors,
                    (unsigned long long)rc.late, (unsigned long long)rc.missed);
        }
    } else {
        fprintf(stderr, "spprof: %llu samples, %llu errors, %llu late, %llu missed\n",
                (unsigned long long)rc.samples, (unsigned long long)rc.errors,
                (unsigned long long)rc.late, (unsigned long long)rc.missed);
    }
    if (launched && exit_status < 0) {
        /* Stopped early (Ctrl-C, --duration): the program keeps running as
         * it would without spprof; wait for it as its parent (letting go of
         * any thread still stopped for spprof). */
        exit_status = wait_child(pid);
    }
    spp_profile_free(rc.profile);
    free(rc.named);
    free(threads);
    /* The launched program's own result is the command's result, once the
     * profile is written. */
    if (launched && rcode == 0 && exit_status >= 0) {
        if (WIFEXITED(exit_status))
            rcode = WEXITSTATUS(exit_status);
        else if (WIFSIGNALED(exit_status))
            rcode = 128 + WTERMSIG(exit_status);
    }
    /* A failed upload is spprof's failure, whatever the program's result
     * (the file, if any, is written all the same). */
    if (upload_failed)
        rcode = 1;
    return rcode;
}

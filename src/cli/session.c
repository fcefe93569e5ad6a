/* session.c - a target being sampled: pausing its threads with ptrace
 * around each snapshot (or not, with --nonblocking), idle detection from
 * /proc, and the snapshot itself through the shared frame walker. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../pyabi/walker.h"
#include "cli.h"

#define PAUSE_TIMEOUT_NS 100000000ull /* give up waiting for a thread to stop */

enum tstate { T_RUNNING, T_STOPPED, T_LISTENING, T_GONE };

typedef struct traced {
    pid_t tid;
    int state;
    int pending_sig;   /* signal to deliver when resumed */
    int stat_fd;       /* /proc/PID/task/TID/stat, kept open */
    int listed;        /* seen in the last /proc/PID/task listing */
} traced;

struct spp_session {
    pid_t pid;
    int nonblocking;
    int exited;        /* the process is gone */
    spp_target target;
    spp_remote remote;
    spp_reader reader;
    traced *tids;      /* owned, SPP_CLI_MAX_THREADS */
    int ntids;
    int sampling;      /* threads should stay stopped when they stop */
    int closing;       /* detaching: every thread is to be stopped, then let go */
    int exit_status;   /* wait status of the process, when it exited while traced */
};

void spp_cli_error(const char *fmt, ...)
{
    va_list ap;
    fputs("spprof: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

ssize_t spp_proc_read(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, buf, n - 1);
    close(fd);
    if (got <= 0)
        return -1;
    buf[got] = '\0';
    return got;
}

void spp_thread_comm(pid_t pid, pid_t tid, char *buf, size_t n)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", (int)pid, (int)tid);
    buf[0] = '\0';
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    if (fgets(buf, (int)n, f))
        buf[strcspn(buf, "\n")] = '\0';
    fclose(f);
}

void spp_process_cmdline(pid_t pid, char *buf, size_t n)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    buf[0] = '\0';
    ssize_t got = spp_proc_read(path, buf, n);
    if (got <= 0)
        return;
    if (buf[got - 1] == '\0')
        got--;
    for (ssize_t i = 0; i < got; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    buf[got] = '\0';
}

static traced *find(spp_session *s, pid_t tid)
{
    for (int i = 0; i < s->ntids; i++)
        if (s->tids[i].tid == tid && s->tids[i].state != T_GONE)
            return &s->tids[i];
    return NULL;
}

static traced *add(spp_session *s, pid_t tid, int state)
{
    traced *t = find(s, tid);
    if (t)
        return t;
    for (int i = 0; i < s->ntids; i++)
        if (s->tids[i].state == T_GONE) {
            t = &s->tids[i];
            break;
        }
    if (!t) {
        if (s->ntids == SPP_CLI_MAX_THREADS)
            return NULL;
        t = &s->tids[s->ntids++];
    }
    t->tid = tid;
    t->state = state;
    t->pending_sig = 0;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)s->pid, (int)tid);
    t->stat_fd = open(path, O_RDONLY | O_CLOEXEC);
    return t;
}

static void forget(traced *t)
{
    if (t->stat_fd >= 0)
        close(t->stat_fd);
    t->stat_fd = -1;
    t->state = T_GONE;
}

static int is_stop_signal(int sig)
{
    return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

/* Handles one ptrace event. While sampling, a thread that stops stays
 * stopped; otherwise it is resumed at once with any signal it was given. */
static void handle_event(spp_session *s, pid_t tid, int status)
{
    traced *t = find(s, tid);
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
        if (t)
            forget(t);
        if (tid == s->pid) {
            s->exited = 1;
            s->exit_status = status;
        }
        return;
    }
    if (!WIFSTOPPED(status))
        return;
    if (!t)
        t = add(s, tid, T_RUNNING); /* a new thread's first stop may beat the clone event */
    if (!t) {
        ptrace(PTRACE_CONT, tid, 0, 0);
        return;
    }
    int sig = WSTOPSIG(status), event = status >> 16;
    if (event == PTRACE_EVENT_CLONE) {
        unsigned long child = 0;
        if (ptrace(PTRACE_GETEVENTMSG, tid, 0, &child) == 0)
            add(s, (pid_t)child, T_RUNNING);
        sig = 0;
    } else if (event == PTRACE_EVENT_STOP) {
        if (is_stop_signal(sig) && !s->closing) {
            /* The process was stopped (SIGSTOP, Ctrl-Z): keep it stopped. */
            t->state = T_LISTENING;
            ptrace(PTRACE_LISTEN, tid, 0, 0);
            return;
        }
        sig = 0; /* our interrupt, or a new thread's first stop */
    } else if (event == 0) {
        t->pending_sig = sig; /* a signal for the target: deliver it on resume */
    } else {
        sig = 0; /* other events (exit) carry no signal */
    }
    if (s->sampling || s->closing) {
        /* Every stop while pausing (the cloning thread's too) counts as the
         * thread being paused; while closing, every thread is to be
         * detached from a stop. */
        t->state = T_STOPPED;
        return;
    }
    int deliver = t->pending_sig;
    t->pending_sig = 0;
    t->state = T_RUNNING;
    if (ptrace(PTRACE_CONT, tid, 0, (void *)(long)deliver) < 0 && errno == ESRCH)
        forget(t);
}

/* Handles the ptrace events waiting for this session's own threads, in
 * one pass over them (a thread started meanwhile gets its turn too);
 * returns how many. Never waitpid(-1): with --subprocesses several
 * sessions trace several processes from this one spprof, and each event is
 * for its own session to handle. A new thread is waited for once its clone
 * event has named it. */
static int pass_events(spp_session *s)
{
    int handled = 0;
    for (int i = 0; i < s->ntids; i++) {
        pid_t tid = s->tids[i].tid;
        int status;
        if (s->tids[i].state != T_GONE && waitpid(tid, &status, WNOHANG | __WALL) == tid) {
            handle_event(s, tid, status);
            handled++;
        }
    }
    return handled;
}

/* Processes every ptrace event that is waiting. */
static void pump(spp_session *s)
{
    while (pass_events(s) > 0) {
    }
}

/* Handles the waiting ptrace events, or naps nap_ns if there are none. */
static void next_event(spp_session *s, long nap_ns)
{
    if (pass_events(s) == 0) {
        struct timespec nap = {0, nap_ns};
        nanosleep(&nap, NULL);
    }
}

/* A thread already traced by spprof that the session does not know: one
 * started by a thread that ended before its clone event was seen. Its
 * events are waited for only once it is known. */
static int traced_by_us(pid_t pid, pid_t tid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)pid, (int)tid);
    if (spp_proc_read(path, buf, sizeof(buf)) < 0)
        return 0;
    const char *p = strstr(buf, "\nTracerPid:");
    return p && atoi(p + 11) == (int)getpid();
}

static void scan_tasks(spp_session *s)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)s->pid);
    DIR *d = opendir(path);
    if (!d) {
        s->exited = 1;
        return;
    }
    /* Threads gone from the listing are forgotten (without ptrace there is
     * no exit event to say so). */
    for (int i = 0; i < s->ntids; i++)
        s->tids[i].listed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        pid_t tid = (pid_t)atoi(e->d_name);
        traced *known = tid > 0 ? find(s, tid) : NULL;
        if (known)
            known->listed = 1;
        if (tid <= 0 || known)
            continue;
        if (s->nonblocking) {
            traced *t = add(s, tid, T_RUNNING);
            if (t)
                t->listed = 1;
            continue;
        }
        if (ptrace(PTRACE_SEIZE, tid, 0, (void *)(long)PTRACE_O_TRACECLONE) == 0 ||
            (errno == EPERM && traced_by_us(s->pid, tid))) {
            traced *t = add(s, tid, T_RUNNING);
            if (t)
                t->listed = 1;
        }
        /* (A thread that could not be seized is simply not paused.) */
    }
    closedir(d);
    if (s->nonblocking)
        for (int i = 0; i < s->ntids; i++)
            if (s->tids[i].state != T_GONE && !s->tids[i].listed)
                forget(&s->tids[i]);
}

static void pause_all(spp_session *s)
{
    s->sampling = 1;
    pump(s);
    for (int i = 0; i < s->ntids; i++)
        if (s->tids[i].state == T_RUNNING &&
            ptrace(PTRACE_INTERRUPT, s->tids[i].tid, 0, 0) < 0 && errno == ESRCH)
            forget(&s->tids[i]);
    uint64_t until = mono_ns() + PAUSE_TIMEOUT_NS;
    for (;;) {
        int running = 0;
        for (int i = 0; i < s->ntids; i++)
            running += s->tids[i].state == T_RUNNING;
        if (!running || s->exited || mono_ns() > until)
            break;
        next_event(s, 20000);
    }
}

static void resume_all(spp_session *s)
{
    s->sampling = 0;
    for (int i = 0; i < s->ntids; i++) {
        traced *t = &s->tids[i];
        if (t->state != T_STOPPED)
            continue;
        int deliver = t->pending_sig;
        t->pending_sig = 0;
        t->state = T_RUNNING;
        if (ptrace(PTRACE_CONT, t->tid, 0, (void *)(long)deliver) < 0 && errno == ESRCH)
            forget(t);
    }
}

spp_session *spp_session_open(pid_t pid, int nonblocking, int *why, char *err, size_t errlen)
{
    spp_session *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        *why = SPP_TARGET_PERMISSION;
        return NULL;
    }
    *why = spp_target_open(&s->target, pid, err, errlen);
    if (*why != SPP_TARGET_OK) {
        free(s);
        return NULL;
    }
    if (s->target.layout_guessed) {
        char v[32];
        spp_version_string(s->target.version, v, sizeof(v));
        fprintf(stderr, "spprof: warning: Python %s is newer than this spprof knows; reading it "
                        "with the newest layout it knows (the target's debug offsets validated)\n", v);
    }
    s->pid = pid;
    s->nonblocking = nonblocking;
    s->tids = calloc(SPP_CLI_MAX_THREADS, sizeof(traced));
    if (!s->tids || spp_remote_init(&s->remote, pid) < 0) {
        snprintf(err, errlen, "out of memory");
        spp_remote_free(&s->remote);
        free(s->tids);
        free(s);
        return NULL;
    }
    s->reader = spp_remote_reader(&s->remote);
    if (!nonblocking) {
        if (ptrace(PTRACE_SEIZE, pid, 0, (void *)(long)PTRACE_O_TRACECLONE) < 0) {
            int e = errno;
            *why = e == ESRCH ? SPP_TARGET_NO_PROCESS : SPP_TARGET_PERMISSION;
            if (e == EPERM)
                snprintf(err, errlen,
                         "cannot pause PID %d to sample it: ptrace is not permitted (%s). "
                         "Run as the same user with kernel.yama.ptrace_scope=0, or as root "
                         "(CAP_SYS_PTRACE), or use --nonblocking",
                         (int)pid, strerror(e));
            else
                snprintf(err, errlen, "cannot attach to PID %d: %s", (int)pid, strerror(e));
            spp_session_close(s);
            return NULL;
        }
        add(s, pid, T_RUNNING);
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        pthread_sigmask(SIG_BLOCK, &chld, NULL); /* for spp_session_wait */
    }
    scan_tasks(s);
    return s;
}

void spp_session_close(spp_session *s)
{
    if (!s)
        return;
    if (!s->nonblocking && !s->exited) {
        /* PTRACE_DETACH needs each thread in a ptrace stop: stop them all
         * (a thread kept in group-stop by PTRACE_LISTEN too, which ptrace
         * requests do not reach until it is interrupted), let each go with
         * the signal it was given, and keep handling events (new threads)
         * until none is traced any more. A thread that will not stop within
         * a second is released when spprof exits. */
        s->closing = 1;
        pump(s);
        for (int i = 0; i < s->ntids; i++)
            if ((s->tids[i].state == T_RUNNING || s->tids[i].state == T_LISTENING) &&
                ptrace(PTRACE_INTERRUPT, s->tids[i].tid, 0, 0) < 0 && errno == ESRCH)
                forget(&s->tids[i]);
        uint64_t until = mono_ns() + 1000000000ull;
        for (;;) {
            int traced_left = 0;
            for (int i = 0; i < s->ntids; i++) {
                traced *t = &s->tids[i];
                if (t->state == T_STOPPED) {
                    ptrace(PTRACE_DETACH, t->tid, 0, (void *)(long)t->pending_sig);
                    forget(t);
                } else if (t->state != T_GONE) {
                    traced_left++;
                }
            }
            if (!traced_left || s->exited || mono_ns() > until)
                break;
            next_event(s, 100000);
        }
    }
    for (int i = 0; i < s->ntids; i++)
        if (s->tids[i].state != T_GONE)
            forget(&s->tids[i]);
    spp_remote_free(&s->remote);
    free(s->tids);
    free(s);
}

int spp_session_exit_status(const spp_session *s) { return s->exited ? s->exit_status : -1; }

void spp_session_wait(spp_session *s, uint64_t until) { spp_session_wait_all(&s, 1, until); }

void spp_session_wait_all(spp_session *const *ss, int n, uint64_t until)
{
    int traced = 0;
    for (int i = 0; i < n; i++)
        traced |= !ss[i]->nonblocking;
    if (!traced) {
        struct timespec ts = {(time_t)(until / 1000000000ull), (long)(until % 1000000000ull)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        return;
    }
    /* While traced, every signal a target gets and every thread it starts
     * stops it until spprof lets it go: wake on SIGCHLD (blocked since the
     * session opened) and handle those at once rather than at the next
     * sample. Another signal (Ctrl-C) ends the wait too, and so does the
     * exit of the first process. */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    for (;;) {
        for (int i = 0; i < n; i++)
            if (!ss[i]->nonblocking)
                pump(ss[i]);
        uint64_t now = mono_ns();
        if (now >= until || ss[0]->exited)
            return;
        struct timespec ts = {(time_t)((until - now) / 1000000000ull),
                              (long)((until - now) % 1000000000ull)};
        if (sigtimedwait(&chld, NULL, &ts) < 0 && errno == EINTR)
            return;
    }
}

spp_session *spp_session_attach(pid_t pid, int nonblocking)
{
    int why;
    char err[512];
    spp_session *s = spp_session_open(pid, nonblocking, &why, err, sizeof(err));
    if (!s)
        spp_cli_error("%s", err);
    return s;
}

spp_resolver *spp_session_resolver(spp_session *s, spp_profile *p, int lines)
{
    spp_resolver *res = spp_resolver_new(&s->target.off, &s->reader, p, lines);
    if (res)
        spp_resolver_validate(res, 1); /* the target's code objects come and go */
    return res;
}

int spp_session_model(spp_session *s, int lines, spp_profile **p, spp_resolver **res)
{
    *p = spp_profile_new(0);
    *res = *p ? spp_session_resolver(s, *p, lines) : NULL;
    if (*res)
        return 0;
    spp_profile_free(*p);
    *p = NULL;
    spp_cli_error("out of memory");
    return -1;
}

const spp_target *spp_session_target(const spp_session *s) { return &s->target; }
spp_remote *spp_session_remote(spp_session *s) { return &s->remote; }

int spp_session_alive(const spp_session *s)
{
    if (s->exited)
        return 0;
    /* kill(pid, 0) succeeds on a zombie: look at its state instead. */
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)s->pid);
    if (spp_proc_read(path, buf, sizeof(buf)) < 0)
        return 0;
    const char *p = strrchr(buf, ')');
    return !(p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'));
}

/* 'R' in /proc/PID/task/TID/stat: running or runnable. Read before the
 * thread is paused (a paused thread reads as stopped). */
static int thread_idle(traced *t)
{
    char buf[512];
    if (t->stat_fd < 0)
        return 0;
    ssize_t n = pread(t->stat_fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] != 'R';
}

/* Walks one thread's frames into st. A running thread (--nonblocking) can
 * change its frames while they are read: the walk counts only if the
 * thread's current frame, and what that frame links to, are the same
 * afterwards (read again, uncached: a generator re-entered in between has
 * the same frame but was unlinked meanwhile); otherwise it is tried again,
 * and given up (SPP_ETORN) after a few tries. This narrows the race, it
 * cannot close it: a frame linked and unlinked faster than two reads apart
 * can look the same both times. */
static int walk_thread(spp_session *s, spp_pythread *th, spp_sampled_thread *st)
{
    const spp_pyoffsets *o = &s->target.off;
    for (int attempt = 0;; attempt++) {
        if (!th->frame)
            return 0;
        uint64_t link = 0, link_after = 0;
        /* read through the page cache: the walk sees this same value */
        spp_read(&s->reader, th->frame + (uint64_t)o->frame_previous, &link, sizeof(link));
        int n = spp_walk(o, &s->reader, th->frame, th->below, s->target.code_type, st->frames,
                         NULL, SPP_CLI_MAX_DEPTH, &st->truncated);
        if (!s->nonblocking)
            return n;
        uint64_t frame, below;
        spp_remote_next(&s->remote);
        if (spp_thread_frame(o, &s->reader, th->tstate, &frame, &below) < 0)
            return SPP_ETORN;
        spp_read(&s->reader, frame + (uint64_t)o->frame_previous, &link_after, sizeof(link_after));
        if (frame == th->frame && below == th->below && link == link_after)
            return n;
        if (attempt == 3)
            return SPP_ETORN;
        th->frame = frame;
        th->below = below;
    }
}

int spp_session_sample(spp_session *s, spp_sampled_thread *out, int cap, int *errors)
{
    *errors = 0;
    if (!s->nonblocking)
        pump(s);
    if (s->exited)
        return SPP_EINVAL;
    scan_tasks(s);
    int idle_of[SPP_CLI_MAX_THREADS];
    for (int i = 0; i < s->ntids; i++)
        idle_of[i] = s->tids[i].state == T_LISTENING ? 1 : thread_idle(&s->tids[i]);
    if (!s->nonblocking)
        pause_all(s);
    spp_remote_next(&s->remote);
    spp_pythread threads[256];
    int n = spp_target_threads(&s->target, &s->reader, threads, cap < 256 ? cap : 256);
    int stored = 0;
    for (int i = 0; i < n; i++) {
        spp_sampled_thread *st = &out[stored];
        st->th = threads[i];
        st->idle = 0;
        for (int k = 0; k < s->ntids; k++)
            if (s->tids[k].tid == threads[i].tid)
                st->idle = idle_of[k];
        st->nframes = walk_thread(s, &threads[i], st);
        if (st->nframes < 0) {
            /* Caught linking a frame in or out (--nonblocking, or paused
             * at that instruction): not a stack it ever had. */
            (*errors)++;
            continue;
        }
        if (threads[i].frame && st->nframes == 0)
            (*errors)++;
        stored++;
    }
    if (!s->nonblocking)
        resume_all(s);
    if (n < 0) {
        if (!spp_session_alive(s))
            return SPP_EINVAL;
        (*errors)++;
        return 0;
    }
    return stored;
}

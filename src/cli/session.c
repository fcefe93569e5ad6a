/* session.c - a target being sampled: pausing its threads with ptrace
 * around each snapshot (or not, with --nonblocking), idle detection from
 * /proc, and the snapshot itself through the shared frame walker, with each
 * paused thread's native stack unwound and merged in for --native. */
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
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../proc/symbols.h"
#include "../proc/unwind.h"
#include "../pyabi/attrs.h"
#include "../pyabi/merge.h"
#include "../pyabi/walker.h"
#include "cli.h"

#define PAUSE_TIMEOUT_NS 100000000ull /* give up waiting for a thread to stop */
#define SCAN_INTERVAL_NS 20000000ull  /* list /proc/PID/task at most this often */
/* Python thread names are read again this often (a thread renamed while
 * sampled ends with its newest name), and sooner when a thread was asked
 * for and not found (it was new), but not more often than NAMES_RETRY_NS. */
#define NAMES_REFRESH_NS 1000000000ull
#define NAMES_RETRY_NS 100000000ull
#define NAMES_MAX 256
/* New threads are traced as they start; an exec is reported, because what
 * the session knows of the process (its runtime, its layout) dies with it. */
#define SEIZE_OPTIONS (PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC)

/* --nonblocking: the pages each thread's stack was last read from. */
#define STACK_PAGES_THREADS 64
#define SNAPSHOT_TRIES 10
/* The tries after the first that keep only a stack whose innermost frame
 * is the one the first try found (walk_thread). */
#define WANT_TRIES 4
/* A page no walk of the thread read in this many looks is no longer
 * copied (order_pages). */
#define PAGES_KEPT_LOOKS 16
typedef struct spp_stack_pages {
    uint64_t tstate;
    uint64_t used;     /* stack_pages_clock when last used */
    uint64_t root;     /* the outermost code of its last stack kept, 0: none */
    uint32_t looks;    /* the looks at the thread so far */
    int n;
    int head, nframes; /* pages[0, head): the thread state's; then its frames' */
    uint64_t at_page;  /* the page of the pointer to its current frame */
    uint64_t pages[SPP_SNAP_PAGES];
    uint32_t seen[SPP_SNAP_PAGES]; /* the look at which a walk last read each */
} spp_stack_pages;

enum tstate { T_RUNNING, T_STOPPED, T_LISTENING, T_GONE };

/* Where a paused thread stopped is known (stopped_in_syscall). */
#if defined(__x86_64__)
#define MOMENTS_KNOWN 1
#else
#define MOMENTS_KNOWN 0
#endif

/* read_moment: tries at reading a running thread's innermost frame, and the
 * most of a frame it reads. */
#define MOMENT_TRIES 3
#define MOMENT_HEADER 256

/* A running thread's innermost frame, read at one moment (read_moment). */
typedef struct moment {
    int read;          /* the rest is set */
    uint64_t addr;     /* the frame's */
    uint64_t caller;   /* its link to its caller's frame */
    spp_rawframe frame;
} moment;

typedef struct traced {
    pid_t tid;
    int state;
    int pending_sig;   /* signal to deliver when resumed */
    int stat_fd;       /* /proc/PID/task/TID/stat, kept open */
    int listed;        /* seen in the last /proc/PID/task listing */
    int idle;          /* found idle at this sample (set before pausing) */
    int spared;        /* found idle and left running during this pause */
    uint64_t tstate;   /* its Python thread state at the last sample, 0 if none */
    moment moment;     /* read while it ran, just before this pause */
} traced;

struct spp_session {
    pid_t pid;
    int nonblocking;
    int exited;        /* the process is gone */
    int execd;         /* the process ran another program (execve): the session is stale */
    spp_image image;   /* what it ran when opened (--nonblocking notices an exec by it) */
    int have_image;
    spp_target target;
    spp_remote remote;
    spp_reader reader;
    traced *tids;      /* owned, SPP_CLI_MAX_THREADS */
    int ntids;
    int sampling;      /* threads should stay stopped when they stop */
    int closing;       /* detaching: every thread is to be stopped, then let go */
    int exit_status;   /* wait status of the process, when it exited while traced */
    spp_unwinder *unwinder;  /* owned; native stacks are unwound when set */
    int unwind_idle;         /* idle threads too */
    spp_symbols *symbols;    /* owned; names native frames in the model's profile */
    uint64_t next_scan; /* CLOCK_MONOTONIC ns of the next /proc/PID/task listing */
    int pause_idle;    /* idle threads are paused too (spp_session_pause_idle) */
    int moments;       /* samples are taken at the moment read before the pause
                        * (spp_session_sample_moments) */
    /* Python thread names (spp_session_want_names): the table last read and
     * the one being read (swapped when it differs). */
    spp_thread_name *names, *names_next;  /* owned, NAMES_MAX each; NULL when not wanted */
    int nnames;
    int names_missing;  /* a name was asked for and not there */
    uint64_t names_at;  /* CLOCK_MONOTONIC ns of the last read, 0 for never */
    unsigned names_gen; /* counts reads that changed the table */
    spp_stack_pages *stack_pages; /* owned, STACK_PAGES_THREADS (--nonblocking) */
    uint64_t stack_pages_clock;   /* to find the least recently used */
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

/* Names from the target go to terminals and files: its control bytes
 * (a terminal escape in a thread name, a newline in an argument) as '?'. */
static void no_controls(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < ' ' || *s == 0x7f)
            *s = '?';
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
    no_controls(buf);
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
    no_controls(buf);
}

/* ("pid (comm) S ppid ..."; comm may hold spaces and parentheses, hence
 * the last ')'.) */
int spp_proc_stat(pid_t pid, pid_t *parent, unsigned long long *stack)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (spp_proc_read(path, buf, sizeof(buf)) < 0)
        return -1;
    const char *p = strrchr(buf, ')');
    int ppid;
    /* state ppid, then 22 fields to startstack (field 28) */
    if (!p || sscanf(p + 1, " %*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d "
                            "%*d %*d %*d %*d %*u %*u %*d %*u %*u %*u %llu",
                     &ppid, stack) != 2)
        return -1;
    *parent = (pid_t)ppid;
    return 0;
}

int spp_proc_image(pid_t pid, unsigned long long stack, spp_image *img)
{
    struct stat exe;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
    if (stat(path, &exe) < 0)
        return -1; /* gone, or a kernel thread */
    *img = (spp_image){exe.st_dev, exe.st_ino, stack};
    return 0;
}

int spp_image_same(const spp_image *a, const spp_image *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->stack == b->stack;
}

/* What pid runs now; -1 if it is gone. */
static int current_image(pid_t pid, spp_image *img)
{
    pid_t parent;
    unsigned long long stack;
    return spp_proc_stat(pid, &parent, &stack) < 0 ? -1 : spp_proc_image(pid, stack, img);
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
    t->spared = 0;
    t->pending_sig = 0;
    t->idle = 0;
    t->tstate = 0;
    t->moment.read = 0;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)s->pid, (int)tid);
    t->stat_fd = open(path, O_RDONLY | O_CLOEXEC);
    return t;
}

static void forget(spp_session *s, traced *t)
{
    spp_unwinder_forget(s->unwinder, t->tid);
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
            forget(s, t);
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
        if (event == PTRACE_EVENT_EXEC)
            s->execd = 1;
        sig = 0; /* other events (exec, exit) carry no signal */
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
        forget(s, t);
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

/* Sleeps until a ptrace event is waiting (SIGCHLD, blocked since the
 * session opened, is pending) or `until` (CLOCK_MONOTONIC) passes; -1 if
 * another signal (Ctrl-C) ended the wait. Waking on the event itself rather
 * than polling matters on a busy machine: every nap is a wake-up the
 * scheduler may serve a time slice late. */
static int await_event(uint64_t until)
{
    uint64_t now = mono_ns();
    if (now >= until)
        return 0;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    struct timespec ts = {(time_t)((until - now) / 1000000000ull), (long)((until - now) % 1000000000ull)};
    return sigtimedwait(&chld, NULL, &ts) < 0 && errno == EINTR ? -1 : 0;
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
    /* Without ptrace no event says the process exec'd: look at what it
     * runs (its stack starts anew at each exec). */
    spp_image now;
    if (s->nonblocking && s->have_image && current_image(s->pid, &now) == 0 &&
        !spp_image_same(&now, &s->image))
        s->execd = 1;
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
        if (ptrace(PTRACE_SEIZE, tid, 0, (void *)(long)SEIZE_OPTIONS) == 0 ||
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
                forget(s, &s->tids[i]);
}

/* Pauses every thread, or every thread not found idle. */
static void pause_all(spp_session *s, int spare_idle)
{
    s->sampling = 1;
    pump(s);
    for (int i = 0; i < s->ntids; i++) {
        s->tids[i].spared = spare_idle && s->tids[i].idle;
        if (s->tids[i].state == T_RUNNING && !s->tids[i].spared &&
            ptrace(PTRACE_INTERRUPT, s->tids[i].tid, 0, 0) < 0 && errno == ESRCH)
            forget(s, &s->tids[i]);
    }
    uint64_t until = mono_ns() + PAUSE_TIMEOUT_NS;
    for (;;) {
        int running = 0;
        for (int i = 0; i < s->ntids; i++)
            running += s->tids[i].state == T_RUNNING && !s->tids[i].spared;
        if (!running || s->exited || mono_ns() > until)
            break;
        await_event(until);
        pump(s);
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
            forget(s, t);
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
    /* Said once per target, though callers may open a session twice. */
    static pid_t noted;
    int say = noted != pid;
    noted = pid;
    if (say && s->target.layout_guessed) {
        char v[32];
        spp_version_string(s->target.version, v, sizeof(v));
        fprintf(stderr, "spprof: warning: Python %s is newer than this spprof knows; reading it "
                        "with the newest layout it knows (the target's debug offsets validated)\n", v);
    }
    if (say && s->target.runtime_scanned)
        fprintf(stderr, "spprof: note: %s does not name _PyRuntime (stripped?); found the runtime "
                        "by scanning its data%s\n",
                s->target.module, s->target.code_type ? "" : ", and no code type yet");
    s->pid = pid;
    s->nonblocking = nonblocking;
    s->have_image = current_image(pid, &s->image) == 0;
    s->pause_idle = 1;
    s->tids = calloc(SPP_CLI_MAX_THREADS, sizeof(traced));
    if (nonblocking)
        s->stack_pages = calloc(STACK_PAGES_THREADS, sizeof(spp_stack_pages));
    if (!s->tids || (nonblocking && !s->stack_pages) || spp_remote_init(&s->remote, pid) < 0) {
        snprintf(err, errlen, "out of memory");
        spp_remote_free(&s->remote);
        free(s->stack_pages);
        free(s->tids);
        free(s);
        return NULL;
    }
    s->reader = spp_remote_reader(&s->remote);
    spp_remote_prefetch(&s->remote, 1);
    if (!nonblocking) {
        if (ptrace(PTRACE_SEIZE, pid, 0, (void *)(long)SEIZE_OPTIONS) < 0) {
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
                forget(s, &s->tids[i]);
        uint64_t until = mono_ns() + 1000000000ull;
        for (;;) {
            int traced_left = 0;
            for (int i = 0; i < s->ntids; i++) {
                traced *t = &s->tids[i];
                if (t->state == T_STOPPED) {
                    ptrace(PTRACE_DETACH, t->tid, 0, (void *)(long)t->pending_sig);
                    forget(s, t);
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
            forget(s, &s->tids[i]);
    spp_unwinder_free(s->unwinder);
    spp_symbols_free(s->symbols);
    free(s->names);
    free(s->names_next);
    spp_remote_free(&s->remote);
    free(s->stack_pages);
    free(s->tids);
    free(s);
}

int spp_session_exit_status(const spp_session *s) { return s->exited ? s->exit_status : -1; }

int spp_session_execd(const spp_session *s) { return s->execd; }

void spp_session_pause_idle(spp_session *s, int pause_idle) { s->pause_idle = pause_idle; }

void spp_session_sample_moments(spp_session *s, int on) { s->moments = on; }

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
    for (;;) {
        for (int i = 0; i < n; i++)
            if (!ss[i]->nonblocking)
                pump(ss[i]);
        if (mono_ns() >= until || ss[0]->exited || ss[0]->execd || await_event(until) < 0)
            return;
    }
}

spp_session *spp_session_attach(pid_t pid, int nonblocking, int native)
{
    int why;
    char err[512];
    spp_session *s = spp_session_open(pid, nonblocking, &why, err, sizeof(err));
    if (!s) {
        spp_cli_error("%s", err);
    } else if (native && !spp_session_native_ok(s)) {
        spp_session_close(s);
        s = NULL;
    }
    return s;
}

int spp_session_native_ok(const spp_session *s)
{
    if (s->target.eval_start)
        return 1;
    /* Without the evaluation loop's address range the native stack cannot
     * be merged with the Python frames. */
    spp_cli_error("--native: the interpreter loop (_PyEval_EvalFrameDefault) is not named in %s "
                  "(stripped, or deleted since PID %d started)",
                  s->target.module, (int)s->pid);
    return 0;
}

int spp_session_native(spp_session *s, int idle)
{
    if (s->nonblocking || !s->target.eval_start)
        return SPP_EINVAL; /* (no eval-loop range: nothing to merge at) */
    s->unwind_idle = idle;
    return s->unwinder ? SPP_OK : spp_unwinder_new(s->pid, &s->remote, &s->unwinder);
}

/* With --native, the symbols that name native frames intern into p, the
 * profile this resolver fills. */
spp_resolver *spp_session_resolver(spp_session *s, spp_profile *p, int lines)
{
    spp_resolver *res = spp_resolver_new(&s->target.off, &s->reader, p, lines);
    if (!res)
        return NULL;
    spp_symbols_free(s->symbols);
    s->symbols = NULL;
    if (s->unwinder) {
        s->symbols = spp_symbols_for_process(p, s->pid, s->target.module_base);
        if (!s->symbols) {
            spp_resolver_free(res);
            return NULL;
        }
    }
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

/* The pages a thread's stack was read from at the last sample, by thread
 * state: the next snapshot of that thread starts from them. */
static spp_stack_pages *pages_of(spp_session *s, uint64_t tstate)
{
    spp_stack_pages *oldest = &s->stack_pages[0];
    for (int i = 0; i < STACK_PAGES_THREADS; i++) {
        if (s->stack_pages[i].tstate == tstate)
            return &s->stack_pages[i];
        if (s->stack_pages[i].used < oldest->used)
            oldest = &s->stack_pages[i];
    }
    oldest->tstate = tstate;
    oldest->n = oldest->head = oldest->nframes = 0;
    oldest->root = 0;
    return oldest;
}

/* The pages of the frame at addr that hold the fields the walk reads
 * (most lie in its first 128 bytes: a page it spills into by more goes
 * with the rest). */
static void frame_pages(uint64_t addr, uint64_t pages[2])
{
    pages[0] = addr & ~(uint64_t)4095;
    pages[1] = (addr + 127) & ~(uint64_t)4095;
}

static int by_address(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* A page and the look at which a walk last read it (by_address sorts
 * these too: the page comes first). */
typedef struct page_seen {
    uint64_t page;
    uint32_t seen;
    int keep; /* a page of the thread state or of a frame */
} page_seen;

/* Orders the pages logged (the first nread read by the walk, then the
 * pages known before) for the next snapshot of the thread: first those
 * that say where its stack is (the thread state: read first by the walk),
 * then the pages of its frames in address order, then the rest (code
 * objects, which a running thread does not change). Frame pages are those
 * of this walk's frames and those that were before, so that the next
 * snapshot copies them twice (snapshot_stack). A page of the thread state
 * or of a frame stays known while a walk read it in the last
 * PAGES_KEPT_LOOKS looks (code objects' only while the last walk read
 * them: a walk may read them live, stack_in_snapshot): the frames of a loop
 * that makes a generator, or calls one of a few functions, lie on a few
 * pages, not all of them in every stack. (Known were the last walk's
 * pages alone: a try whose leaf was on a page the walk before had not read
 * was read again, later, where the thread more often was in the frame the
 * last walk found. The generator of test_cli's loop got 0.15-0.45 of the
 * samples, paused 0.61.) */
static void order_pages(spp_stack_pages *k, const spp_remote *remote, int head, int nread,
                        const uint64_t *addrs, int nframes)
{
    uint64_t frames[2 * SPP_CLI_MAX_DEPTH + SPP_SNAP_PAGES], log[SPP_SNAP_PAGES];
    page_seen old[SPP_SNAP_PAGES], ent[SPP_SNAP_PAGES];
    int nf = 0, nlog = spp_remote_logged(remote, log), nent = 0;
    for (int i = k->head; i < k->head + k->nframes; i++)
        frames[nf++] = k->pages[i];
    for (int i = 0; i < nframes && i < SPP_CLI_MAX_DEPTH; i++, nf += 2)
        frame_pages(addrs[i], frames + nf);
    qsort(frames, (size_t)nf, sizeof(*frames), by_address);
    for (int i = 0; i < k->n; i++)
        old[i] = (page_seen){k->pages[i], k->seen[i], i < k->head + k->nframes};
    qsort(old, (size_t)k->n, sizeof(*old), by_address);
    for (int i = 0; i < nlog; i++) {
        page_seen e = {log[i], k->looks, 1};
        const page_seen *was = i < nread ? NULL
                                         : bsearch(&e, old, (size_t)k->n, sizeof(*old), by_address);
        if (was && (!was->keep || k->looks - was->seen >= PAGES_KEPT_LOOKS))
            continue;
        e.seen = was ? was->seen : e.seen;
        ent[nent++] = e;
    }
    if (head > nent)
        head = nent;
    int n = 0;
    for (int i = 0; i < head; i++, n++) {
        k->pages[n] = ent[i].page;
        k->seen[n] = ent[i].seen;
    }
    qsort(ent + head, (size_t)(nent - head), sizeof(*ent), by_address);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = head; i < nent; i++) {
            int is_frame =
                bsearch(&ent[i].page, frames, (size_t)nf, sizeof(*frames), by_address) != NULL;
            if (is_frame == !pass) {
                k->pages[n] = ent[i].page;
                k->seen[n++] = ent[i].seen;
            }
        }
        if (pass == 0)
            k->nframes = n - head;
    }
    k->head = head;
    k->n = n;
}

/* The snapshot of a thread's known pages: the thread state's but the one
 * that points to its current frame, its frames' pages, that one, its
 * frames' again, then the rest (see walk_thread). Where the snapshot
 * cannot hold every frame page twice, those at the highest addresses are
 * (in one chunk of the 3.11+ frame stack, the innermost frames'). */
static int frame_pages_twice(const spp_stack_pages *k)
{
    /* (code objects may be read after: they make room for frames first) */
    int twice = SPP_SNAP_PAGES - k->head - k->nframes;
    return twice < k->nframes ? twice : k->nframes;
}

static void snapshot_stack(spp_remote *remote, const spp_stack_pages *k)
{
    uint64_t list[SPP_SNAP_PAGES];
    int n = 0, at = 0, twice = frame_pages_twice(k);
    for (int i = 0; i < k->head; i++)
        if (k->pages[i] != k->at_page)
            list[n++] = k->pages[i];
        else
            at = 1;
    for (int i = k->head + k->nframes - twice; i < k->head + k->nframes; i++)
        list[n++] = k->pages[i];
    if (at)
        list[n++] = k->at_page;
    for (int i = k->head; i < k->n && n < SPP_SNAP_PAGES; i++)
        list[n++] = k->pages[i];
    spp_remote_snapshot(remote, list, n);
}

/* Whether the frames at addrs (innermost first) were linked as the walk
 * found them when the pointer to the current frame was copied: each one's
 * caller, and each one's code but the innermost's, read the same in both
 * copies of their pages (the innermost's caller may have been none in the
 * earlier: was_unlinked). A frame on a page copied once is taken as it is
 * only where the snapshot had no room for every frame page twice, or
 * where the page is one of the thread state's (k: the snapshot's pages). */
static int field_steady(const spp_stack_pages *k, const spp_remote *remote, uint64_t addr,
                        size_t n)
{
    int steady = spp_remote_snapshot_steady(remote, addr, n);
    if (steady != SPP_SNAP_ONCE)
        return steady != 0;
    if (frame_pages_twice(k) < k->nframes)
        return 1;
    for (int i = 0; i < k->head; i++)
        if (k->pages[i] == (addr & ~(uint64_t)4095))
            return 1;
    return 0;
}

/* Whether the frame at addr had no caller in the earlier copy: a
 * generator's frame is linked to its caller only while it runs, and may
 * have been resumed between the copies. (Any other change of the innermost
 * frame's link is not taken: on 3.9 and 3.10 a frame object reused for a
 * call of the same function by another caller would show it under that
 * caller.) */
static int was_unlinked(const spp_pyoffsets *o, const spp_remote *remote, uint64_t addr)
{
    uint64_t prev;
    return spp_remote_snapshot_earlier(remote, addr + (uint64_t)o->frame_previous, &prev, 8) == 0 &&
           prev == 0;
}

static int frames_steady(const spp_pyoffsets *o, const spp_stack_pages *k,
                         const spp_remote *remote, const uint64_t *addrs, int n)
{
    for (int i = 0; i < n; i++)
        if ((!field_steady(k, remote, addrs[i] + (uint64_t)o->frame_previous, 8) &&
             (i > 0 || !was_unlinked(o, remote, addrs[0]))) ||
            (i > 0 && !field_steady(k, remote, addrs[i] + (uint64_t)o->frame_code, 8)))
            return 0;
    /* A new innermost frame: its caller must still be at the same
     * instruction (the call), or it may have returned and been called
     * again (its slot then holds an older call's frame). */
    if (n > 1 && spp_remote_snapshot_steady(remote, addrs[0] + (uint64_t)o->frame_code, 8) == 0 &&
        !field_steady(k, remote, addrs[1] + (uint64_t)o->frame_instr,
                      o->frame_model == SPP_FRAMES_OBJECT ? 4 : 8))
        return 0;
    return 1;
}

/* Whether what says where the stack is and what links it were read from
 * the snapshot: the pages read for the thread state (the first head
 * logged) and each frame's fields (frame_pages).
 * The rest, code objects, which do not change while a frame runs them,
 * may have been read since. (Requiring them too kept a stack with code
 * not in the last stack's pages only if the next try found it again: the
 * stack it had most often was kept more often still.) */
static int stack_in_snapshot(const spp_remote *remote, int head, const uint64_t *addrs, int n)
{
    uint64_t log[SPP_SNAP_PAGES];
    int nlog = spp_remote_logged(remote, log);
    for (int i = 0; i < head && i < nlog; i++)
        if (!spp_remote_snapshot_holds(remote, log[i]))
            return 0;
    for (int i = 0; i < n; i++) {
        uint64_t pages[2];
        frame_pages(addrs[i], pages);
        if (!spp_remote_snapshot_holds(remote, pages[0]) ||
            !spp_remote_snapshot_holds(remote, pages[1]))
            return 0;
    }
    return 1;
}

/* Walks one thread's frames into st.
 *
 * A running thread (--nonblocking) changes its frames while they are read,
 * so its stack is read from a snapshot: every page the walk needs (the
 * thread state, the frames, the code objects), read together in one
 * system call (spp_remote_snapshot), and the walk counts only if it found
 * the thread state and its frames in that snapshot (stack_in_snapshot);
 * otherwise the pages it did read make the next snapshot. What a clean
 * walk shows is the thread's stack as those pages held it, not the frames
 * one system call apart each (a frame read after its caller's call
 * returned and its place was taken by another call would be shown under a
 * caller it never had).
 *
 * The copy is not one moment either: a page the target is writing takes
 * a microsecond or more to copy. The pointer to the current frame read
 * from one page and the frames from another copied later still showed a
 * leaf under a caller that had replaced its own in 0.8-3 % of test_cli's
 * two-paths samples on 3.11 (6 % in a loaded CI run). So the frames'
 * pages are copied twice, just before and just after the page holding
 * that pointer (snapshot_stack); the walk reads the later copy, and counts
 * only if each frame's caller, and each caller's code, read the same in
 * both (frames_steady): then the callers were the thread's when the
 * pointer was read, unless one returned and was called again within the
 * copy (between its two copies, or within the later one, between its
 * frame's copy and its callee's).
 * The innermost frame may be another call by the same caller at the same
 * instruction (a loop calling a function): rejecting that left short calls
 * out (a loop calling three one-line functions, 25 % of its samples in
 * them when paused: 10-13 % rejected, 9-18 % kept this way, py-spy
 * --nonblocking 24 %). Its own link to its caller may have been none in the
 * earlier copy: a generator's is set only while it runs (the walk follows
 * the later copy's, to callers that must be steady). Measured on the
 * two-paths samples: 0.03-2.1 % torn on 3.11, 0.4-0.7 % on 3.12, 0.2-0.3 %
 * on 3.13t, none on 3.9, 3.10, 3.14 and 3.15. Other fields (a frame's
 * line) are the later copy's. A clean walk is kept when its outermost code
 * is the thread's last stack's, or the previous snapshot's (on 3.10 a
 * generator's frame copied as it yielded, no caller, and its state as it
 * ran again, was kept alone in 73 of 2990 samples of test_cli's generator
 * loop in a CI run); no frame at all, when an earlier clean try of this
 * sample found none too (on 3.12 a _PyCFrame copied after its eval loop had left showed
 * no frame in 7-11 % of the generator loop's samples).
 *
 * A sample stands for the moment of its first try: when that try is not
 * kept, the next WANT_TRIES keep only a stack whose innermost frame is the
 * one the first found, then any. (Any from the first, a try given up in a
 * frame the last stack did not have, or caught changing, was followed by
 * one that more often found the frame the thread spends longest in: a
 * generator resumed in a loop got 0.14-0.42 of the samples where a paused
 * read gives 0.55-0.65; 0.13 under to 0.15 over since, but up to
 * 0.34 under on 3.11 on a loaded machine and 0.25-0.28 over on 3.14, where
 * the first tries alone find it in 0.77 of them.)
 * Given up (SPP_ETORN) after SNAPSHOT_TRIES snapshots, or when the walk
 * finds the frames inconsistent in all of them (the two-paths samples:
 * 0.1-2.8 % of them on 3.11-3.15, 1.3-2.6 % on 3.9 and 3.10). */
static int walk_thread(spp_session *s, spp_pythread *th, spp_sampled_thread *st)
{
    const spp_pyoffsets *o = &s->target.off;
    st->truncated = 0;
    if (!s->nonblocking)
        return th->frame ? spp_walk(o, &s->reader, th->frame, th->below, 0, s->target.code_type,
                                    st->frames, st->entries, st->addrs, SPP_CLI_MAX_DEPTH,
                                    &st->truncated)
                         : 0;
    spp_stack_pages *known = pages_of(s, th->tstate);
    known->used = ++s->stack_pages_clock;
    known->looks++;
    int n = SPP_ETORN;
    uint64_t other_root = 0; /* the previous clean walk's, not kept */
    uint64_t want = 0;
    int no_frame = 0; /* a clean try found no frame */
    for (int attempt = 0; attempt < SNAPSHOT_TRIES; attempt++) {
        int snapped = known->n > 0;
        uint64_t at_page = known->at_page;
        if (snapped)
            snapshot_stack(&s->remote, known);
        spp_remote_log_begin(&s->remote);
        uint64_t frame = 0, below;
        int found = spp_thread_frame(o, &s->reader, th->tstate, &frame, &below);
        uint64_t at = 0;
        if (found >= 0 && spp_thread_frame_at(o, &s->reader, th->tstate, &at) < 0)
            at = 0;
        int head = spp_remote_nlogged(&s->remote);
        if (found < 0) {
            n = SPP_ETORN;
        } else if (!frame) {
            n = 0;
        } else {
            n = spp_walk(o, &s->reader, frame, below, SPP_WALK_RUNNING, s->target.code_type,
                         st->frames, st->entries, st->addrs, SPP_CLI_MAX_DEPTH, &st->truncated);
        }
        /* (a pointer that moved, to another eval loop's _PyCFrame on
         * 3.11 and 3.12, was not copied between the frames' copies) */
        int clean = snapped && (at & ~(uint64_t)4095) == at_page &&
                    stack_in_snapshot(&s->remote, head, st->addrs, n > 0 ? n : 0);
        int steady = clean && n > 0 ? frames_steady(o, known, &s->remote, st->addrs, n) : 1;
        /* The next snapshot holds the pages of this one too (order_pages
         * drops those not read for a while): a walk cut short by a frame
         * caught being left read fewer pages than the stack needs (frame
         * objects, 3.9 and 3.10, are anywhere on the heap), and a stack
         * kept may not have the frames of the next. */
        int nread = spp_remote_nlogged(&s->remote);
        spp_remote_log_pages(&s->remote, known->pages, known->n);
        order_pages(known, &s->remote, head, nread, st->addrs, n > 0 ? n : 0);
        known->at_page = at & ~(uint64_t)4095;
        spp_remote_snapshot_end(&s->remote);
        /* (the look's moment is the first try's: see WANT_TRIES) */
        if (attempt == 0)
            want = found >= 0 ? frame : 0;
        int wanted = !want || frame == want || attempt > WANT_TRIES;
        if (clean && steady && n >= 0 && wanted) {
            uint64_t root = n > 0 ? st->frames[n - 1].code : 0;
            if (n ? !known->root || root == known->root || root == other_root
                  : !known->root || no_frame) {
                known->root = n ? root : known->root;
                return n;
            }
            if (n)
                other_root = root;
            else
                no_frame = 1;
        }
        st->truncated = 0;
    }
    return SPP_ETORN;
}

/* A reader that serves [base, base + len) from a copy, the rest from
 * another reader. */
typedef struct window {
    uint64_t base;
    size_t len;
    const unsigned char *data;
    const spp_reader *rest;
} window;

static int window_read(void *ctx, uint64_t addr, void *buf, size_t n)
{
    const window *w = ctx;
    if (addr >= w->base && n <= w->len && addr - w->base <= w->len - n) {
        memcpy(buf, w->data + (addr - w->base), n);
        return SPP_OK;
    }
    return spp_read(w->rest, addr, buf, n);
}

/* The bytes of a frame that spp_walk reads of it (its own fields). */
static size_t frame_header(const spp_pyoffsets *o)
{
    const int64_t fields[] = {o->frame_code, o->frame_previous, o->frame_instr, o->frame_owner,
                              o->frame_is_entry, o->frame_state, o->frame_tlbc_index};
    int64_t end = 0;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if (fields[i] >= 0 && fields[i] + 8 > end)
            end = fields[i] + 8;
    return end < MOMENT_HEADER ? (size_t)end : MOMENT_HEADER;
}

/* Reads where a thread that runs is, just before the threads are paused:
 * the moment its sample stands for.
 *
 * A pause does not stop a thread when it is asked to: the interrupt that
 * carries the request reaches the thread's CPU microseconds later (10-20 us
 * on this VM), and the thread stops at its first return to user mode after
 * the request, which in code that makes a system call every few
 * microseconds is nearly always such a call's exit. Paused stacks then put
 * that call far over its share (a loop calling time.thread_time() every
 * 2-3 us of work: its line had 0.94-1.00 of the samples on 3.9-3.15,
 * against 0.18-0.23 with perf_event in-process; every 20 us, 3.11: 0.16
 * against 0.03).
 * py-spy's pauses show the same.
 *
 * What is read is the thread's innermost frame, found through its
 * current-frame pointer (read first), then in one system call that copies
 * that pointer, the frame's fields and the pointer again, a few hundred
 * bytes within about a microsecond here: a read during which the pointer
 * changed (a call or a return), or the evaluation loop did (3.11/3.12), is
 * made again, at most MOMENT_TRIES times for those two causes together,
 * and as many for a pointer that had changed since it was first read.
 * The innermost frame alone, because that is what moves fast and what the
 * pause displaces; its callers are suspended in their calls, and the
 * paused stack has them (at_moment). Read in separate system calls, a
 * frame's fields and the pointer to it are copied microseconds apart, and
 * a call or return between the copies shows a frame at its call instead
 * of in the callee (the call's line got 0.17-0.27 of the samples where it
 * has 0.01-0.02, in the loop above with its call in a function).
 * Only a thread that stopped at a system call's exit is given its moment
 * (stopped_in_syscall): one that an interrupt stopped in user mode was
 * stopped at a moment of its own, and its paused stack is exact. */
static int raw_read(void *ctx, uint64_t addr, void *buf, size_t n)
{
    return spp_remote_read_raw(*(const pid_t *)ctx, addr, buf, n) < 0 ? SPP_EINVAL : SPP_OK;
}

static void read_moment(spp_session *s, uint64_t tstate, moment *m)
{
    const spp_pyoffsets *o = &s->target.off;
    spp_reader raw = {raw_read, &s->pid};
    uint64_t at, frame;
    m->read = 0;
    /* (Read directly, not from the cached pages, which are the last
     * sample's; those serve the walk's reads of code objects, which do not
     * change.) */
    if (spp_thread_frame_at(o, &raw, tstate, &at) < 0 || !at || spp_read(&raw, at, &frame, 8) < 0)
        return;
    /* 3.11/3.12 keep the pointer in the innermost evaluation loop's
     * _PyCFrame, on the C stack: the thread state's link to that is read
     * around the rest, so that a loop that returned meanwhile (Python
     * called from C) is not read from its dead stack slot. */
    int linked = o->cframe_current_frame >= 0;
    uint64_t link = tstate + (uint64_t)o->tstate_frame;
    uint64_t cframe = at - (uint64_t)o->cframe_current_frame; /* (used when linked) */
    size_t len = frame_header(o);
    for (int tries = 0, stale = 0; tries < MOMENT_TRIES && stale < MOMENT_TRIES && frame;) {
        uint64_t c1 = 0, c2 = 0, p1 = 0, p2 = 0;
        unsigned char hdr[MOMENT_HEADER];
        struct iovec local[5], remote[5];
        int n = 0;
#define MOMENT_PART(into, size, from)                                                              \
    (local[n] = (struct iovec){(into), (size)},                                                    \
     remote[n++] = (struct iovec){(void *)(uintptr_t)(from), (size)})
        if (linked)
            MOMENT_PART(&c1, 8, link);
        MOMENT_PART(&p1, 8, at);
        MOMENT_PART(hdr, len, frame);
        MOMENT_PART(&p2, 8, at);
        if (linked)
            MOMENT_PART(&c2, 8, link);
#undef MOMENT_PART
        if (process_vm_readv(s->pid, local, (unsigned long)n, remote, (unsigned long)n, 0) !=
            (ssize_t)(len + 16 + (linked ? 16 : 0)))
            return;
        if (linked && (c1 != cframe || c2 != cframe)) {
            /* another evaluation loop: again from its pointer */
            if (!c2 || spp_read(&raw, c2 + (uint64_t)o->cframe_current_frame, &frame, 8) < 0)
                return;
            cframe = c2;
            at = c2 + (uint64_t)o->cframe_current_frame;
            tries++;
            continue;
        }
        if (p1 != p2 || p1 != frame) {
            tries += p1 != p2;
            stale += p1 == p2;
            frame = p2; /* it called or returned meanwhile: again from there */
            continue;
        }
        window w = {frame, len, hdr, &s->reader};
        spp_reader in_window = {window_read, &w};
        uint64_t addr = 0;
        int truncated;
        /* (An innermost shim frame, which the walk skips, leads it to its
         * caller, read at another time: no moment; a frame that is not
         * Python code makes the walk torn.) */
        if (spp_walk(o, &in_window, frame, SPP_ANY_FRAME, SPP_WALK_RUNNING, s->target.code_type,
                     &m->frame, NULL, &addr, 1, &truncated) == 1 &&
            addr == frame &&
            spp_read(&in_window, frame + (uint64_t)o->frame_previous, &m->caller, 8) == 0) {
            m->addr = frame;
            m->read = 1;
        }
        return;
    }
}

/* Whether a paused thread stopped on its way out of a system call (rather
 * than where an interrupt found it in user mode): x86-64 says so in
 * orig_rax, the call's number, -1 for other entries into the kernel. */
static int stopped_in_syscall(pid_t tid)
{
#if MOMENTS_KNOWN
    struct user_regs_struct regs;
    return ptrace(PTRACE_GETREGS, tid, 0, &regs) == 0 && (long long)regs.orig_rax >= 0;
#else
    (void)tid;
    return 0;
#endif
}

/* Places a paused stack at its moment (read_moment): when the frame that
 * was innermost then is in the paused stack (the same frame, running the
 * same code, under the same caller), the stack is that frame at the
 * moment's instruction and its callers as paused; the frames inside it
 * were called after the moment.
 * Otherwise (that frame returned before the pause) the paused stack is
 * kept. */
static void at_moment(spp_session *s, const moment *m, spp_sampled_thread *st)
{
    uint64_t caller;
    if (!m->read)
        return;
    for (int k = 0; k < st->nframes; k++)
        if (st->addrs[k] == m->addr && st->frames[k].code == m->frame.code) {
            /* (Another call of the same function, at the same address under
             * another caller, is not the same frame.) */
            uint64_t link = m->addr + (uint64_t)s->target.off.frame_previous;
            if (spp_read(&s->reader, link, &caller, 8) < 0 || caller != m->caller)
                return;
            if (k > 0 && st->frames[k].instr == m->frame.instr)
                return; /* in the same call then, most likely: see read_moment */
            int keep = st->nframes - k;
            memmove(st->frames, st->frames + k, (size_t)keep * sizeof(*st->frames));
            memmove(st->entries, st->entries + k, (size_t)keep);
            memmove(st->addrs, st->addrs + k, (size_t)keep * sizeof(*st->addrs));
            st->frames[0] = m->frame;
            st->nframes = keep;
            return;
        }
}

int spp_session_want_names(spp_session *s)
{
    if (s->names)
        return SPP_OK;
    s->names = malloc(sizeof(spp_thread_name) * NAMES_MAX);
    s->names_next = malloc(sizeof(spp_thread_name) * NAMES_MAX);
    if (!s->names || !s->names_next) {
        free(s->names);
        free(s->names_next);
        s->names = s->names_next = NULL;
        return SPP_ENOMEM;
    }
    return SPP_OK;
}

/* Reads the Python thread names when due, while the target is paused (its
 * dicts are then not being resized under the reader). A read that fails
 * keeps the previous names. */
static void read_names(spp_session *s, uint64_t now)
{
    if (s->names_at && now - s->names_at < (s->names_missing ? NAMES_RETRY_NS : NAMES_REFRESH_NS))
        return;
    s->names_at = now;
    s->names_missing = 0;
    const spp_target *t = &s->target;
    int n = spp_thread_names(&t->off, &s->reader, &t->types, t->runtime, s->names_next, NAMES_MAX);
    if (n < 0)
        return;
    int same = n == s->nnames;
    for (int i = 0; same && i < n; i++)
        same = s->names[i].ident == s->names_next[i].ident &&
               strcmp(s->names[i].name, s->names_next[i].name) == 0;
    if (same)
        return;
    spp_thread_name *old = s->names;
    s->names = s->names_next;
    s->names_next = old;
    s->nnames = n;
    s->names_gen++;
}

const char *spp_session_thread_name(spp_session *s, uint64_t ident)
{
    for (int i = 0; i < s->nnames; i++)
        if (s->names[i].ident == ident)
            return s->names[i].name;
    s->names_missing = 1;
    return NULL;
}

unsigned spp_session_names_gen(const spp_session *s) { return s->names_gen; }

void spp_session_thread_label(spp_session *s, const spp_pythread *th, char *buf, size_t n)
{
    const char *name = s->names ? spp_session_thread_name(s, th->thread_id) : NULL;
    if (name)
        snprintf(buf, n, "%s", name);
    else if (th->tid == s->pid)
        snprintf(buf, n, "MainThread");
    else
        spp_thread_comm(s->pid, th->tid, buf, n);
}

int spp_session_sample_visit(spp_session *s, spp_sampled_thread *out, int cap, int *errors,
                             spp_session_visitor visit, void *ctx)
{
    *errors = 0;
    if (!s->nonblocking)
        pump(s);
    if (s->exited || s->execd)
        return SPP_EINVAL;
    /* Listing the threads costs five syscalls, a third of a sample's. New
     * threads are found meanwhile by their clone event when paused with
     * ptrace, and through the interpreter's own thread list in any case (a
     * thread not listed yet is taken as running); only the idle state of a
     * new thread, and forgetting an ended one without ptrace, wait for the
     * next listing. */
    uint64_t now = mono_ns();
    if (now >= s->next_scan) {
        scan_tasks(s);
        s->next_scan = now + SCAN_INTERVAL_NS;
        if (s->execd)
            return SPP_EINVAL; /* (noticed by the listing): another program's memory now */
    }
    for (int i = 0; i < s->ntids; i++)
        s->tids[i].idle = s->tids[i].state == T_LISTENING ? 1 : thread_idle(&s->tids[i]);
    /* (pause_all keeps the tids[] slots where they are.) */
    int moments = MOMENTS_KNOWN && !s->nonblocking && s->moments && !s->unwinder;
    if (moments)
        for (int i = 0; i < s->ntids; i++) {
            traced *t = &s->tids[i];
            t->moment.read = 0;
            if (t->state == T_RUNNING && !t->idle && t->tstate)
                read_moment(s, t->tstate, &t->moment);
        }
    if (!s->nonblocking) {
        pause_all(s, !s->pause_idle);
        if (s->execd) {
            /* It exec'd while being paused: its memory is another program's. */
            resume_all(s);
            return SPP_EINVAL;
        }
    }
    spp_remote_next(&s->remote);
    spp_pythread threads[256];
    int n = spp_target_threads(&s->target, &s->reader, threads, cap < 256 ? cap : 256);
    int stored = 0;
    for (int i = 0; i < n; i++) {
        /* A thread state no OS thread runs Python in (yet: being created,
         * or no longer; 3.14+ gives it a base frame from the start): no
         * stack, and nothing to name it by. */
        if (!threads[i].tid && !threads[i].frame)
            continue;
        spp_sampled_thread *st = &out[stored];
        st->th = threads[i];
        st->idle = 0;
        st->nnative = 0;
        traced *t = NULL;
        for (int k = 0; k < s->ntids; k++)
            if (s->tids[k].tid == threads[i].tid && s->tids[k].state != T_GONE) {
                t = &s->tids[k];
                st->idle = s->tids[k].idle;
            }
        st->nframes = walk_thread(s, &threads[i], st);
        if (t) {
            if (moments && t->moment.read && t->tstate == threads[i].tstate &&
                t->state == T_STOPPED && stopped_in_syscall(t->tid))
                at_moment(s, &t->moment, st);
            t->tstate = threads[i].tstate;
        }
        if (!threads[i].tid && st->nframes <= 0)
            continue;
        if (st->nframes < 0) {
            /* Caught linking a frame in or out (--nonblocking, or paused
             * at that instruction): not a stack it ever had. */
            (*errors)++;
            continue;
        }
        /* Only a thread in a ptrace stop can be unwound. One that did not
         * stop in time (a loaded machine), or whose stack cannot be read,
         * is left out and counted, rather than shown without its C
         * frames. */
        if (s->unwinder && (!st->idle || s->unwind_idle)) {
            int nn = t && t->state == T_STOPPED
                         ? spp_unwind(s->unwinder, t->tid, st->native, SPP_CLI_MAX_NATIVE)
                         : SPP_EINVAL;
            st->nnative = nn > 0 ? nn : 0;
            if (nn <= 0) {
                (*errors)++;
                continue;
            }
        }
        /* No Python frame: an error only if the first could not be read
         * (3.14+ threads always have a base frame, Python or not). */
        if (st->nframes == 0 && st->truncated)
            (*errors)++;
        stored++;
    }
    if (s->names && n >= 0)
        read_names(s, now);
    /* The thread list could not be read: an error, unless the target
     * turns out to be gone. Counted before the visit, which reports it. */
    if (n < 0)
        (*errors)++;
    if (visit)
        visit(ctx, &s->target, &s->reader, out, stored);
    if (!s->nonblocking)
        resume_all(s);
    if (n < 0)
        return spp_session_alive(s) ? 0 : SPP_EINVAL;
    return stored;
}

typedef struct merge_ctx {
    spp_resolver *res;
    spp_symbols *symbols;
} merge_ctx;

static int python_frame(void *ctx, const spp_rawframe *raw, uint32_t *frame)
{
    *frame = spp_resolver_frame(((merge_ctx *)ctx)->res, raw);
    return 0;
}

static const spp_native_sym *native_frame(void *ctx, uint64_t ip, int leaf)
{
    return spp_symbols_frame(((merge_ctx *)ctx)->symbols, ip, leaf);
}

uint32_t spp_session_frames(spp_session *s, spp_resolver *res, const spp_sampled_thread *st,
                            uint32_t *out, uint32_t cap)
{
    merge_ctx ctx = {res, s->symbols};
    spp_merge_ops ops = {python_frame, native_frame, &ctx, s->target.eval_start, s->target.eval_end};
    spp_merge_in in = {st->frames, st->entries, (uint32_t)st->nframes, st->native,
                       s->symbols ? (uint32_t)st->nnative : 0};
    return spp_merge(&ops, &in, out, cap);
}

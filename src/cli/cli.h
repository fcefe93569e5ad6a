/* cli.h - what the spprof command's files share: options, the sampling
 * session over a target process, and messages. */
#ifndef SPP_CLI_H
#define SPP_CLI_H

#include <signal.h>
#include <stdint.h>
#include <sys/types.h>

#include "../core/profile.h"
#include "../formats/formats.h"
#include "../proc/remote.h"
#include "../proc/target.h"
#include "../pyabi/resolve.h"
#include "upload.h"

#define SPP_CLI_MAX_THREADS 4096
#define SPP_CLI_MAX_DEPTH 512
#define SPP_CLI_MAX_NATIVE 512   /* native frames unwound per thread */

typedef struct spp_cli_opts {
    pid_t pid;              /* attach to this PID, 0 to launch argv */
    char **argv;            /* command to launch (NULL-terminated), borrowed */
    const char *output;
    const char *format;
    double rate;            /* samples per second */
    double duration;        /* seconds, 0 = until the target exits or Ctrl-C */
    int idle, gil, threads, function, nolineno, full_filenames;
    int subprocesses, native, nonblocking;
    int json, locals;       /* dump */
    int at_pause;           /* dump: stacks where the threads are paused (spp_session_sample_moments) */
    int delay_ms;           /* top: refresh period */
    spp_upload_opts upload; /* record --upload (url NULL: none) */
    int diff_lines, negate; /* diff: match frames by line; widths from BEFORE */
    double threshold;       /* diff: pp of change shown as none (< 0: the default) */
} spp_cli_opts;

/* Prints "spprof: <message>" to stderr. */
void spp_cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A target being sampled: the process, its layout, a reader, and the
 * per-thread state (pause, idle detection). */
typedef struct spp_session spp_session;

/* Opens pid for sampling (pausing it while reading unless nonblocking).
 * Returns NULL on failure with *why set to the spp_target_error and the
 * reason written into err. */
spp_session *spp_session_open(pid_t pid, int nonblocking, int *why, char *err, size_t errlen);
void spp_session_close(spp_session *s);
/* spp_session_open for the commands that attach (dump, top): prints the
 * reason on failure, which is also that --native (native set) cannot
 * merge stacks in this process (spp_session_native_ok). */
spp_session *spp_session_attach(pid_t pid, int nonblocking, int native);
/* A new profile, and a resolver that reads the target's code objects
 * through the session (valid while the session is open). Prints and
 * returns -1 when out of memory. */
int spp_session_model(spp_session *s, int lines, spp_profile **p, spp_resolver **res);
/* A resolver for the session's code objects that adds frames to p (which
 * several sessions may share); NULL when out of memory. */
spp_resolver *spp_session_resolver(spp_session *s, spp_profile *p, int lines);
const spp_target *spp_session_target(const spp_session *s);
/* From the next snapshot on, also unwinds the native (C) stack of each
 * thread (of each running thread only, unless idle), to be merged by
 * spp_session_frames; call before spp_session_model. Returns 0,
 * SPP_ENOSYS (built without libunwind-ptrace), SPP_EINVAL (the session
 * does not pause the target, and a running thread cannot be unwound) or
 * SPP_ENOMEM. */
int spp_session_native(spp_session *s, int idle);
/* For --native: whether s's native stacks can be merged with its Python
 * frames (the evaluation loop's address range is known); prints why not. */
int spp_session_native_ok(const spp_session *s);
spp_remote *spp_session_remote(spp_session *s);

/* One thread's stack as sampled. */
typedef struct spp_sampled_thread {
    spp_pythread th;
    int idle;
    int nframes;
    int truncated;
    int nnative;                              /* 0 without spp_session_native */
    spp_rawframe frames[SPP_CLI_MAX_DEPTH];   /* innermost first */
    uint8_t entries[SPP_CLI_MAX_DEPTH];       /* spp_walk's eval-loop entries */
    uint64_t native[SPP_CLI_MAX_NATIVE];      /* instruction pointers, innermost first */
    uint64_t addrs[SPP_CLI_MAX_DEPTH];        /* where each frame is, in the target */
} spp_sampled_thread;

/* The frames of a sampled thread's stack as profile frames (of the
 * session's model), innermost first: its Python frames, with its native
 * frames merged in when the session unwinds them. Call from the visitor
 * of spp_session_sample_visit, while the target is paused.
 * Returns how many were stored (at most cap; SPP_CLI_MAX_MERGED fits). */
#define SPP_CLI_MAX_MERGED (SPP_CLI_MAX_DEPTH + SPP_CLI_MAX_NATIVE)
uint32_t spp_session_frames(spp_session *s, spp_resolver *res, const spp_sampled_thread *st,
                            uint32_t *out, uint32_t cap);

/* Whether threads found idle are paused too (the default). Off when their
 * stacks will be left out anyway (record/top without --idle): a thread
 * asleep in a syscall is then neither interrupted nor woken, so it stays
 * asleep (and idle) rather than runnable until the scheduler lets it back
 * into its sleep, and costs no ptrace calls. Its stack is still read, not
 * consistently if it wakes meanwhile, and marked idle. */
void spp_session_pause_idle(spp_session *s, int pause_idle);
/* Whether a paused sample of a thread that stopped on its way out of a
 * system call is placed at the moment it was read just before the pause
 * rather than where the pause stopped it (see read_moment in session.c).
 * On for record and top; off for dump, which shows where each thread is
 * paused. No effect with --nonblocking, with native stacks (unwound where
 * the thread stopped), or off x86-64. */
void spp_session_sample_moments(spp_session *s, int on);
/* Called by spp_session_sample_visit with the threads just sampled, while
 * the target is still paused (unless nonblocking): the place to read more
 * of its memory consistently with the stacks, through r, and to name their
 * frames (spp_session_frames): once the target runs again, a code object
 * seen for the first time may be freed and its memory reused. */
typedef void (*spp_session_visitor)(void *ctx, const spp_target *t, const spp_reader *r,
                                    const spp_sampled_thread *threads, int n);
/* Takes one snapshot of every thread (pausing the target around it unless
 * nonblocking) and hands it to visit. Returns the number of threads, or < 0
 * when the target is gone (SPP_EINVAL) or unreadable. *errors counts
 * threads whose stack could not be read consistently. */
int spp_session_sample_visit(spp_session *s, spp_sampled_thread *out, int cap, int *errors,
                             spp_session_visitor visit, void *ctx);

/* From the next snapshot on, also reads the Python names of the threads
 * (threading.Thread.name, from threading._active) while the target is
 * paused: at once, then every second, and soon after a name was asked for
 * and missing. Returns 0 or SPP_ENOMEM. */
int spp_session_want_names(spp_session *s);
/* The Python name of the thread whose threading.get_ident() is ident, as
 * last read, or NULL (then names are read again soon). Valid until the next
 * snapshot. */
const char *spp_session_thread_name(spp_session *s, uint64_t ident);
/* Changes when a read of the names found them changed. */
unsigned spp_session_names_gen(const spp_session *s);
/* A thread's name for output: its Python name, else "MainThread" for the
 * process's main thread, else its OS name (/proc/PID/task/TID/comm). */
void spp_session_thread_label(spp_session *s, const spp_pythread *th, char *buf, size_t n);

/* Sleeps until CLOCK_MONOTONIC reaches until (ns), handling the target's
 * ptrace events meanwhile; returns early on another signal. */
void spp_session_wait(spp_session *s, uint64_t until);
/* The same over n sessions (ss[0] the one whose exit ends the wait). */
void spp_session_wait_all(spp_session *const *ss, int n, uint64_t until);
/* The process is still there (and not a zombie). */
int spp_session_alive(const spp_session *s);
/* The wait status of the process if it exited while traced, else -1. */
int spp_session_exit_status(const spp_session *s);
/* The process ran another program (execve): the session no longer samples
 * it (spp_session_sample fails as if it had gone). Reported by ptrace when
 * pausing; with --nonblocking, noticed at the next /proc/PID/task listing
 * (within 20 ms), by the start of its stack. */
int spp_session_execd(const spp_session *s);

/* What a process runs: its executable, and where its stack started (new
 * at each exec, so a python that execs python changes too, and a vfork()ed
 * child, which borrows its parent's memory until it execs, changes when it
 * does). */
typedef struct spp_image {
    dev_t dev;
    ino_t ino;
    unsigned long long stack;
} spp_image;
/* Reads the parent and the start of the stack of pid from /proc/PID/stat.
 * Returns -1 if it is gone. */
int spp_proc_stat(pid_t pid, pid_t *parent, unsigned long long *stack);
/* What pid runs, given the start of its stack; -1 if it is gone. */
int spp_proc_image(pid_t pid, unsigned long long stack, spp_image *img);
int spp_image_same(const spp_image *a, const spp_image *b);

/* Reads a /proc file into buf (at most n - 1 bytes, NUL-terminated);
 * returns the length, or -1 if it is gone or empty. */
ssize_t spp_proc_read(const char *path, char *buf, size_t n);
/* The thread's name as the OS knows it (/proc/PID/task/TID/comm). */
void spp_thread_comm(pid_t pid, pid_t tid, char *buf, size_t n);
/* The target's command line, spaces between arguments. */
void spp_process_cmdline(pid_t pid, char *buf, size_t n);

/* The processes record samples: the target first, then (--subprocesses)
 * its descendants that run Python, each with its own session and resolver,
 * all adding to one profile. */
typedef struct spp_proc {
    pid_t pid;
    spp_session *session;   /* owned by the set */
    spp_resolver *resolver; /* owned by the set */
    uint32_t root;          /* frame "process PID: cmdline" over its stacks, or SPP_NONE */
    uint64_t last;          /* CLOCK_MONOTONIC ns of its last sample (for weights) */
} spp_proc;
typedef struct spp_procs spp_procs;

/* A set of one process, pid, whose session it takes over (on failure,
 * NULL, the session stays the caller's). From o: with --subprocesses a
 * process frame is pushed over each stack; every session (the first too)
 * is set up for o's --idle and --native. NULL when out of memory (or when
 * native unwinding cannot be set up). */
spp_procs *spp_procs_new(spp_session *first, pid_t pid, spp_profile *p, int lines,
                         const spp_cli_opts *o);
/* Closes every session (detaching every traced thread). NULL is a no-op. */
void spp_procs_free(spp_procs *ps);
int spp_procs_count(const spp_procs *ps);
spp_proc *spp_procs_at(spp_procs *ps, int i);
/* Closes process i (not the first); the last one takes its index. */
void spp_procs_drop(spp_procs *ps, int i);
/* Reads /proc for descendants of the first process: adds those that run
 * Python (their last set to now), drops those that exec'd. Silent about
 * non-Python ones. */
void spp_procs_discover(spp_procs *ps);
/* How often --subprocesses looks for new descendants: a pass over /proc
 * costs about a millisecond on a desktop's few hundred processes. */
#define SPP_PROCS_DISCOVERY_NS 100000000ull
/* spp_session_wait over every process in the set. */
void spp_procs_wait(spp_procs *ps, uint64_t until);
/* Called by spp_procs_sample with one process's snapshot: n threads,
 * errors of them unreadable, taken at when (CLOCK_MONOTONIC ns), while the
 * process is still paused (unless nonblocking): the place to name frames
 * (spp_session_frames) and read more of its memory. */
typedef void (*spp_procs_visitor)(void *ctx, spp_proc *pr, const spp_sampled_thread *threads,
                                  int n, int errors, uint64_t when);
/* Samples every process of the set once, into threads (cap of them), and
 * visits each snapshot. Subprocesses that have ended are dropped; returns
 * -1 when the first process (the target) is gone, else 0. */
int spp_procs_sample(spp_procs *ps, spp_sampled_thread *threads, int cap, spp_procs_visitor visit,
                     void *ctx);

int spp_cmd_record(const spp_cli_opts *o);
int spp_cmd_dump(const spp_cli_opts *o);
int spp_cmd_top(const spp_cli_opts *o);
/* argv holds BEFORE and AFTER; format is "flamegraph" or "collapsed". */
int spp_cmd_diff(const spp_cli_opts *o);

/* Launches argv as a child; returns its pid or -1 (message printed). */
pid_t spp_launch(char **argv);
/* Opens pid if it runs an initialised Python; otherwise NULL with *why
 * (SPP_TARGET_NOT_READY while its runtime is not up yet) and the reason in
 * err. Prints nothing. */
spp_session *spp_session_try_python(pid_t pid, int nonblocking, int *why, char *err, size_t n);
/* Waits until pid runs an initialised Python (or exits, or *stop is set,
 * or give_up seconds pass when > 0). Returns the session, or NULL (message
 * printed). */
spp_session *spp_wait_for_python(pid_t pid, int nonblocking, int launched,
                                 volatile sig_atomic_t *stop, double give_up);

#endif

/* sampler.h - the in-process sampler: a clock per thread, a signal handler
 * that records raw stacks into per-thread rings, and a drain thread that
 * resolves them into an spp_profile while profiling runs.
 *
 * The sampler is a process-wide singleton (a signal handler is). Control
 * functions are thread-safe with respect to each other and to the drain
 * thread; none may be called from a signal handler.
 */
#ifndef SPP_SAMPLER_H
#define SPP_SAMPLER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../core/profile.h"
#include "../pyabi/offsets.h"

enum spp_mechanism {
    SPP_MECH_AUTO = 0,
    SPP_MECH_PERF = 1,    /* perf_event task-clock, CPU time at any rate */
    SPP_MECH_CPUTIMER = 2,/* timer_create on the thread's CPU clock (tick-bound) */
    SPP_MECH_WALL = 3,    /* timer_create on CLOCK_MONOTONIC */
    SPP_MECH_PERF_USER = 4, /* perf_event task-clock counting user time only */
    SPP_MECH_POLL = 5,    /* a spprof thread polls CPU clocks and signals */
    SPP_MECH_NONBLOCK = 6,/* a spprof thread polls CPU clocks and reads the stacks
                           * itself, the threads running on: no signal */
};

const char *spp_mechanism_name(int mech);

typedef struct spp_sampler_config {
    uint64_t interval_ns;
    size_t memory_limit;         /* bytes for rings and profile together */
    int mechanism;               /* enum spp_mechanism; AUTO tries in order */
    int native;                  /* record native stacks too */
    int empty;                   /* benchmarks: take signals, record nothing */
    int timeline;                /* keep the samples in time order too */
    const spp_pyoffsets *offsets;/* borrowed, must outlive the sampler */
    uint64_t code_type;          /* address of PyCode_Type */
    int tss_key;                 /* pthread key holding each thread's PyThreadState, or -1 */
    int64_t tls_offset;          /* else: where, from the thread pointer, CPython's
                                    thread-local PyThreadState pointer sits (3.15+) */
    uint64_t eval_start, eval_end;  /* _PyEval_EvalFrameDefault's code range */
    uint64_t interp;             /* the PyInterpreterState whose threads are sampled
                                  * (SPP_MECH_NONBLOCK finds their states there) */
} spp_sampler_config;

typedef struct spp_sampler_stats {
    int active;
    int mechanism;
    uint64_t samples;      /* recorded into the profile */
    uint64_t dropped;      /* lost: ring full, memory limit, unreadable */
    uint64_t weight_ns;    /* CPU (or wall) time the samples stand for */
    uint64_t start_ns;     /* CLOCK_REALTIME at start */
    uint64_t elapsed_ns;
    uint32_t threads;      /* threads with a clock armed now */
    size_t memory;         /* bytes held by rings and the profile */
    uint64_t own_ns;       /* spprof's own time: in the handler and the drain thread */
    int signal;            /* what the clocks signal with: SIGTRAP if any does, else
                            * SIGPROF if any does, else 0 */
} spp_sampler_stats;

/* Installs the handler, starts the drain thread. Returns 0, SPP_EINVAL
 * (already running: errno EALREADY; SIGPROF is the program's own, through
 * another handler: errno EBUSY, or an armed ITIMER_PROF timer: errno
 * EEXIST), SPP_ENOMEM, or SPP_ENOSYS when no clock can be armed. */
int spp_sampler_start(const spp_sampler_config *cfg);

/* While sampling, the signal (SIGPROF or SIGTRAP) of spprof's clocks whose
 * handler is no longer spprof's (the program installed its own since
 * start): sampling stopped then. 0 if none. */
int spp_sampler_handler_replaced(void);
/* Whether a session samples now (lock-free). */
int spp_sampler_active(void);

/* SPP_EGONE: the thread ended before its clock could be armed. */
#define SPP_EGONE (-16)
/* SPP_EXISTS: the thread was already sampled (a success). */
#define SPP_EXISTS 1

/* Arms a clock for a thread (any thread may call this for any thread),
 * ident its pthread_t (Python's threading.get_ident()), 0 if unknown.
 * Returns 0, SPP_EXISTS, SPP_EGONE, SPP_ENOMEM (all thread slots used;
 * counted as a drop), or SPP_ENOSYS when no mechanism works for it. A
 * thread beyond the ring memory budget gets a clock but no ring: its
 * samples are counted as dropped.
 * Idempotent. */
int spp_sampler_add_thread(pid_t tid, uint64_t ident);
/* Disarms the calling thread's clock and keeps its samples. */
int spp_sampler_remove_thread(pid_t tid);

/* Stops sampling, drains everything, and hands the profile over (the caller
 * owns it). NULL if not running. */
spp_profile *spp_sampler_stop(const spp_meta *meta);

/* Resolves everything recorded so far, then forgets what was cached about
 * the code object at address code (0: none). Called before a code object is
 * freed, so that samples referring to it are resolved while it is alive and
 * a new object at the same address is never mistaken for it. */
void spp_sampler_code_dying(uint64_t code);

/* Leaves frames of this code object out of every stack (the profiler's own
 * Python glue). The caller keeps the code object alive. */
int spp_sampler_hide_code(uint64_t code);
/* The clock in use: "perf_event" (user + system CPU time), "perf_event_user"
 * (triggered by user time only, weighted by all CPU time), "cpu_timer",
 * "wall_timer", or "none" before the first thread is armed. */
const char *spp_sampler_clock_name(void);
void spp_sampler_get_stats(spp_sampler_stats *st);

/* How the polling clock's signals were judged since start() (a test's
 * evidence when a line share comes out wrong): counts by SPP_POLL_*.
 * "Kept" includes a sample that could not be handed on (no clock of the
 * thread's own could be armed), "handed on" one dropped because another
 * was already on its way; the handed-on samples taken include those the
 * poller handed on itself (for a thread asleep or waiting). */
enum {
    SPP_POLL_BY_POLLER_EXIT,  /* stopped by the poller, kept at a call's exit */
    SPP_POLL_BY_POLLER,       /* stopped by the poller, kept elsewhere */
    SPP_POLL_STOPPED_VDSO,    /* stopped otherwise, handed on from a vDSO call's exit */
    SPP_POLL_STOPPED_EXIT,    /* stopped otherwise, kept at another call's exit */
    SPP_POLL_STOPPED,         /* stopped otherwise, kept elsewhere */
    SPP_POLL_RUNNING,         /* running, came by its interrupt: kept */
    SPP_POLL_RUNNING_HANDED,  /* running, came at a call's exit: handed on */
    SPP_POLL_RUNNING_KEPT,    /* running, came at a long call's exit: kept */
    SPP_POLL_DEFERRED_VDSO,   /* a handed-on sample, taken at a vDSO call's exit */
    SPP_POLL_DEFERRED_EXIT,   /* a handed-on sample, taken at another call's exit */
    SPP_POLL_DEFERRED,        /* a handed-on sample, taken elsewhere */
    SPP_POLL_NCOUNTS
};
void spp_sampler_poll_counts(uint64_t counts[SPP_POLL_NCOUNTS]);

/* Native unwinding through libunwind, loaded at run time. */
int spp_native_available(void);

/* Forgets all state in a forked child (called from pthread_atfork). */
void spp_sampler_atfork_child(void);

#endif

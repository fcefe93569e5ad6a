/* internal.h - state shared by the sampler's control code (sampler.c,
 * clock.c) and its signal handler (handler.c). Not for other modules. */
#ifndef SPP_INPROC_INTERNAL_H
#define SPP_INPROC_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include "../pyabi/reader.h"
#include "ring.h"
#include "sampler.h"

#define SPP_MAX_THREADS 1024     /* threads sampled at once */
#define SPP_MAX_PY_FRAMES 256    /* deeper stacks keep their innermost frames */
#define SPP_MAX_NATIVE 128
#define SPP_MAX_FD 65536
#define SPP_SIGNAL SIGPROF
/* The signal of a perf_event clock opened with sigtrap: the kernel sends it
 * from task work on the thread's way back to user mode (Linux 6.11+), not
 * from an irq_work interrupt of its own as it sends an O_ASYNC signal,
 * which roughly halves a sample's cost in a VM, where each interrupt is a
 * VM exit. Used from Linux 6.15 only (see sampler.c's trap_usable).
 * si_perf_data, an unsigned long, holds SPP_TRAP_COOKIE | slot index. */
#define SPP_TRAP_SIGNAL SIGTRAP
#define SPP_TRAP_COOKIE 0x53500000ul
/* In a timer signal's value, beside the slot index: the sample deferred
 * from a poller's signal that came at a system call's exit. */
#define SPP_DEFERRED_SAMPLE (1 << 30)
/* The least a poller's signal is taken to need to reach a running thread
 * (see handler.c's signal_flight_ns). */
#define SPP_POLL_MIN_FLIGHT_NS 10000ull
/* poll_sent_cpu while the poller has not yet stored it. */
#define SPP_SENT_UNKNOWN UINT64_MAX
/* The low bits of poll_sent_cpu (a CPU time in ns, which loses them) say
 * where the thread was when the signal left (see clock.c's poll_thread):
 * STOPPED, not on a CPU from the poller's look until after the send, so it
 * takes the signal where it was stopped as soon as it runs again, with no
 * flight; BY_POLLER besides, the poller stopped it, taking a CPU the two
 * share as its timer fired: at a random moment. */
#define SPP_SENT_STOPPED 1ull
#define SPP_SENT_BY_POLLER 2ull
#define SPP_SENT_FLAGS (SPP_SENT_STOPPED | SPP_SENT_BY_POLLER)

/* The largest record the handler writes. */
#define SPP_REC_MAX                                                                 \
    ((uint32_t)(sizeof(spp_rec) + SPP_MAX_PY_FRAMES * sizeof(spp_rawframe) +        \
                SPP_MAX_NATIVE * sizeof(uint64_t) + SPP_MAX_PY_FRAMES))

enum slot_state {
    SLOT_FREE = 0,
    SLOT_ARMING,   /* being set up by a control thread */
    SLOT_ACTIVE,   /* clock armed; the handler records */
    SLOT_EXITED,   /* clock disarmed; waiting for the last drain */
};

/* SPP_MECH_NONBLOCK: the poller's memory of a thread it reads while the
 * thread runs (handler.c, walk_running). Only the poller touches it. */
#define SPP_NB_FRAMES 32
#define SPP_NB_HOLDERS 8
typedef struct spp_nb_memory {
    pid_t tid;                     /* the thread it is of (slots are reused) */
    uint64_t tstate;               /* its PyThreadState, once found */
    uint64_t holders[SPP_NB_HOLDERS]; /* 3.11/3.12: _PyCFrames it was found linked to */
    uint32_t nholders, next_holder;
    uint64_t frames[SPP_NB_FRAMES]; /* frames it was found in, the latest first */
    uint32_t nframes;
    uint64_t root;                 /* outermost code of its last stack kept */
    int root_truncated;
    uint32_t rng;
} spp_nb_memory;

typedef struct spp_slot {
    _Atomic int state;
    pid_t tid;
    uint64_t ident;            /* the thread's pthread_t (its Python thread_id), 0 if unknown */
    int mech;
    int fd;                    /* perf_event fd, -1 if none (SPP_MECH_POLL: deferred samples') */
    int trap;                  /* fd signals with SPP_TRAP_SIGNAL, not SPP_SIGNAL */
    timer_t timer;             /* POSIX timer; the deferred-sample timer of SPP_MECH_POLL */
    int has_timer;
    _Atomic int deferred;      /* SPP_MECH_POLL: a sample waits for fd or timer */
    uint32_t rng;              /* SPP_MECH_POLL: the handler's random state */
    _Atomic uint64_t poll_sent_cpu; /* SPP_MECH_POLL: the thread's CPU time at the poller's last signal */
    _Atomic int signal_out;    /* SPP_MECH_POLL: that signal is not handled yet */
    uint64_t armed_cpu;        /* weight_clock when the clock was armed */
    clockid_t weight_clock;    /* what a sample's weight measures */
    uint64_t last_clock;       /* weight_clock at the previous sample */
    _Atomic uint64_t dropped;  /* ring full or unreadable stack */
    spp_ring ring;
    spp_nb_memory nb;          /* SPP_MECH_NONBLOCK */
} spp_slot;

typedef struct spp_sampler {
    _Atomic int active;        /* the handler records only while set */
    spp_sampler_config cfg;
    int mech;                  /* the mechanism that worked for the first thread */
    spp_slot slots[SPP_MAX_THREADS];
    _Atomic int16_t fd_slot[SPP_MAX_FD];  /* perf fd -> slot index + 1 */
    uint32_t ring_bytes;
    uint64_t mono_to_real;     /* add to CLOCK_MONOTONIC to get CLOCK_REALTIME */
    uint64_t start_real, start_mono;
    pid_t pid;                 /* getpid() at start: the sender of the poller's signals */
    int use_trap;              /* perf_event clocks may signal with SPP_TRAP_SIGNAL */
    _Atomic int uses_signal;   /* some clock of this session sends SPP_SIGNAL */
    _Atomic int uses_trap;     /* some clock of this session sends SPP_TRAP_SIGNAL */
    struct sigaction old_trap; /* what held SPP_TRAP_SIGNAL before: its other
                                * signals (breakpoints, kill) go there */
    _Atomic int in_handler;       /* handlers running now; stop waits for zero */
    _Atomic int poller_reading;   /* the poller reads a running thread's stack now */
    _Atomic uint64_t handler_ns;  /* time spent recording samples in the handler */

    pthread_mutex_t lock;      /* guards slots' setup/teardown, profile, drain */
    pthread_t drain_thread;
    int drain_running;
    _Atomic int resolving;     /* records may still be resolved (start .. last drain of stop) */
    int drain_stop;
    int kick_fd;               /* eventfd: a handler asks for an early drain */
    _Atomic int kicked;        /* a kick is pending (one write per drain) */
    spp_profile *profile;      /* owned while running */
} spp_sampler;

extern spp_sampler spp_g;

/* handler.c */
void spp_handler(int sig, siginfo_t *si, void *uc);
int spp_native_init(void);
/* Installs the SIGSEGV/SIGBUS handler that lets spp_handler survive a
 * faulting read (chaining every other fault). Idempotent. */
void spp_fault_guard_install(void);
/* Whether that handler still holds both signals (the program may have
 * installed its own since: faulthandler.enable(), say). */
int spp_fault_guard_held(void);
/* Finds the vDSO's text for spp_handler. Idempotent; call before arming. */
void spp_find_vdso(void);
/* A random number below n (xorshift32; async-signal-safe). */
uint64_t spp_random_below(uint32_t *state, uint64_t n);
/* spp_sampler_poll_counts()'s counts. */
extern _Atomic uint64_t spp_poll_counts[SPP_POLL_NCOUNTS];

/* SPP_MECH_POLL: hands the thread's next sample to its own clock (a
 * perf_event task-clock, else its CPU-time timer), which signals it once
 * after after_ns of its CPU time; 0 if neither can be armed. Async-signal-
 * safe: the handler defers a sample whose signal came at a system call's
 * exit, the poller one due while the thread sleeps. */
int spp_defer_sample(spp_slot *s, uint64_t after_ns);
/* A random delay for a deferred sample: 10 us (perf's least) to half an
 * interval of CPU time, so that the moment has nothing to do with where
 * the thread's system calls or wake-ups are. */
uint64_t spp_defer_delay(uint32_t *rng);

/* Writes one sample of the thread whose state is tstate into the slot's
 * ring: its Python stack (walked with spp_walk's walk_flags, under the
 * fault guard) and, given the interrupted context uc and native stacks
 * asked for, its native one. 0, or < 0 when dropped (counted). The ring's
 * one writer: the slot's thread in its handler, or the poller for a
 * SPP_MECH_NONBLOCK slot. Async-signal-safe. */
int spp_record_sample(spp_slot *s, uint64_t tstate, uint64_t weight, int walk_flags, void *uc);
/* The thread state of the thread whose thread_id (pthread_self()) is
 * ident, in the interpreter at interp; 0 if none. Reads the live list
 * under the fault guard. */
uint64_t spp_find_tstate(uint64_t interp, uint64_t ident);
/* spp_local_reader under the fault guard: a fault reads as SPP_EINVAL
 * (where spprof's fault handler is installed). Not for signal handlers. */
extern const spp_reader spp_guarded_local_reader;

/* sampler.c: the signals spp_handler takes (SPP_SIGNAL, SPP_TRAP_SIGNAL),
 * to block. */
void spp_sampling_signals(sigset_t *set);
/* Installs spp_handler for SPP_TRAP_SIGNAL unless it holds it, for good (a
 * trap may still be on its way after stop); 0 if it holds it. Called under
 * spp_g.lock before a clock opened with sigtrap is enabled. */
int spp_install_trap_handler(void);
/* Creates one of spprof's own threads (drain, poller), which
 * must never run the handler: its signals stay blocked in it. Returns
 * pthread_create's error. */
int spp_create_thread(pthread_t *thread, void *(*main)(void *));

/* clock.c: arms and disarms one slot's clock. Called under spp_g.lock. */
int spp_clock_arm(spp_slot *s, int slot_index, int mech);
void spp_clock_disarm(spp_slot *s);
/* The thread's CPU clock (user + system), or CLOCK_MONOTONIC for the
 * wall-clock timer: whose advance since the previous sample is a sample's
 * weight where the clock does not count its expiries (handler.c's
 * slot_weight). */
clockid_t spp_clock_weight_clock(const spp_slot *s);
/* Ends the polling clock's session, if any, and waits for its thread to
 * end: after this it sends no more signals. Called under spp_g.lock. */
void spp_poller_stop(void);
/* The poller's lock: held while it looks, and while a POLL slot's clock
 * is disarmed (the poller arms it too). Taken after spp_g.lock. */
void spp_poller_lock(void);
void spp_poller_unlock(void);
/* The poller's CPU time in this session so far. */
uint64_t spp_poller_cpu_ns(void);
/* Forgets the poller in a forked child (it did not follow the fork). */
void spp_poller_atfork_child(void);

#endif

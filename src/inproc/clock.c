/* clock.c - one sampling clock per thread: a spprof thread that polls the
 * threads' CPU clocks, a perf_event task-clock, a CPU-time POSIX timer, or a
 * wall-clock timer. All of them deliver SPP_SIGNAL to the one thread they
 * measure, but a perf_event clock, which delivers SPP_TRAP_SIGNAL where the
 * kernel can. */
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../pyabi/walker.h"
#include "internal.h"

const char *spp_mechanism_name(int mech)
{
    switch (mech) {
    case SPP_MECH_PERF:
        return "perf_event";
    case SPP_MECH_CPUTIMER:
        return "cpu_timer";
    case SPP_MECH_WALL:
        return "wall_timer";
    case SPP_MECH_PERF_USER:
        return "perf_event_user";
    case SPP_MECH_POLL:
        return "cpu_poll";
    case SPP_MECH_NONBLOCK:
        return "nonblocking";
    default:
        return "none";
    }
}

/* Opens a task-clock perf_event for the slot's thread that signals it,
 * disabled: with SPP_TRAP_SIGNAL when trap is set and the kernel knows
 * sigtrap, else with SPP_SIGNAL (O_ASYNC). */
static int open_perf(spp_slot *s, int idx, int user_only, int trap)
{
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.size = sizeof(attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.sample_period = spp_g.cfg.interval_ns;
    attr.disabled = 1;
    attr.wakeup_events = 1;
    attr.exclude_hv = 1;
    /* Counting kernel time too needs privilege (perf_event_paranoid < 2 or
     * CAP_PERFMON). A clock that advances in user mode only would sample
     * code that spends its time in system calls too rarely, so it is a
     * later fallback (SPP_MECH_PERF_USER) than the tick-bound CPU timer. */
    attr.exclude_kernel = user_only;
#ifdef PERF_ATTR_SIZE_VER7
    if (trap) {
        attr.sigtrap = 1;
        attr.remove_on_exec = 1; /* (sigtrap requires it) */
        attr.sig_data = SPP_TRAP_COOKIE | (unsigned long)idx;
    }
#else
    trap = 0; /* built with headers from before Linux 5.13 */
#endif
    int fd = (int)syscall(SYS_perf_event_open, &attr, s->tid, -1, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0 && trap && (errno == EINVAL || errno == E2BIG))
        return open_perf(s, idx, user_only, 0); /* a kernel before 5.13 */
    if (fd < 0)
        return -errno;
    if (trap && spp_install_trap_handler() < 0) {
        close(fd); /* (still disabled: it never signalled) */
        return open_perf(s, idx, user_only, 0);
    }
    struct f_owner_ex owner = {F_OWNER_TID, s->tid};
    if (fd >= SPP_MAX_FD ||
        (!trap && (fcntl(fd, F_SETOWN_EX, &owner) < 0 || fcntl(fd, F_SETSIG, SPP_SIGNAL) < 0 ||
                   fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC) < 0))) {
        int e = fd >= SPP_MAX_FD ? EMFILE : errno;
        close(fd);
        return -e;
    }
    s->fd = fd;
    s->trap = trap;
    atomic_store_explicit(&spp_g.fd_slot[fd], (int16_t)(idx + 1), memory_order_release);
    return 0;
}

static void close_perf(spp_slot *s)
{
    if (s->fd < 0)
        return;
    ioctl(s->fd, PERF_EVENT_IOC_DISABLE, 0);
    if (s->fd < SPP_MAX_FD)
        atomic_store(&spp_g.fd_slot[s->fd], 0);
    close(s->fd);
    s->fd = -1;
}

static int arm_perf(spp_slot *s, int idx, int user_only)
{
    int err = open_perf(s, idx, user_only, spp_g.use_trap);
    if (err < 0)
        return err;
    if (ioctl(s->fd, PERF_EVENT_IOC_ENABLE, 0) < 0) {
        err = -errno;
        close_perf(s);
        return err;
    }
    return 0;
}

/* The CPU-time clock of any thread of this process, by tid: Linux encodes
 * it as (~tid << 3) | CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED, which is what
 * pthread_getcpuclockid returns. */
static clockid_t thread_cpu_clock(pid_t tid)
{
    return (clockid_t)((~(unsigned)tid << 3) | 4 | 2);
}

/* A POSIX timer on clock that signals the slot's thread with value. */
static int create_timer(spp_slot *s, int value, clockid_t clock)
{
    struct sigevent sev;
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SPP_SIGNAL;
    sev.sigev_value.sival_int = value;
    sev._sigev_un._tid = s->tid;
    if (timer_create(clock, &sev, &s->timer) < 0)
        return -errno;
    s->has_timer = 1;
    return 0;
}

static int arm_timer(spp_slot *s, int idx, clockid_t clock)
{
    int err = create_timer(s, idx, clock);
    if (err < 0)
        return err;
    struct itimerspec its;
    its.it_interval.tv_sec = (time_t)(spp_g.cfg.interval_ns / 1000000000ull);
    its.it_interval.tv_nsec = (long)(spp_g.cfg.interval_ns % 1000000000ull);
    its.it_value = its.it_interval;
    if (timer_settime(s->timer, 0, &its, NULL) < 0) {
        int e = errno;
        timer_delete(s->timer);
        s->has_timer = 0;
        return -e;
    }
    return 0;
}

/* ---- the polling clock (SPP_MECH_POLL) ----
 *
 * One spprof thread wakes every interval, reads each sampled thread's CPU
 * clock, and signals (rt_tgsigqueueinfo, the slot's index in si_value) a
 * thread that has run for about an interval since its last signal and is
 * running now. The sampled thread pays for the signal and nothing else: no
 * timer of its own interrupts it. A perf_event or POSIX CPU timer costs the
 * thread a timer interrupt and the reprogramming of its CPU's timer at every
 * expiry, which on a virtual machine is several times a signal's cost
 * (bench/overhead.py measures both).
 *
 * A sample a signal from here cannot take truthfully (see poll_thread and
 * the handler's at_syscall_exit) is handed to the thread's own clock, once.
 * Each sample is weighted by the thread's CPU time since its previous one,
 * measured by the handler, so a late or missed sample moves time to the
 * next and loses none of it. */

typedef struct {
    pid_t tid;          /* the thread this state is for; 0: none */
    uint64_t due;       /* the thread's CPU time at which a signal is due */
    uint64_t last_cpu;  /* its CPU time at the previous look */
    uint64_t last_look; /* the time of the previous look (CLOCK_MONOTONIC) */
    uint64_t last_own;  /* the poller's own CPU time then */
    uint64_t sent_cpu;  /* its CPU time when it was last signalled (or deferred) */
    uint64_t deferred_for; /* the CPU time after which its own clock fires */
    uint32_t rng;       /* the poller's random state for delays */
    int read_once;      /* the nonblocking clock has taken (or dropped) a sample of it */
    uint64_t read_cpu;  /* nonblocking: its CPU time at the look that will read it, */
    uint64_t read_now;  /* at the look's second read of it (the same: not running), */
    uint64_t read_at;   /* and when its stack may be read (CLOCK_MONOTONIC) */
} poll_state;

#define POLL_TICK_SLACK_NS 20000000ull /* five ticks of a 250 Hz kernel */

/* One round of looks: when it began, and the poller's CPU time at the end
 * of the round before. */
typedef struct {
    uint64_t mono;
    uint64_t own_cpu;
    int late;           /* the poller woke well after its timer fired */
} poll_round;

/* How much of the time between two looks a thread may have spent off a
 * CPU and still count as having run through it: the wake-ups of spprof's
 * drain thread and of the program's other threads. */
#define POLL_RAN_THROUGH_SLACK_NS 100000ull

/* How late the poller may wake and still have stopped the thread it shares
 * a CPU with as its timer fired (it wakes 20-50 us after it, most times,
 * on this VM). */
#define POLL_LATE_NS 100000ull

/* One poller thread per profiling session. Its looks run with mu held:
 * once spp_poller_stop() has taken mu, it sends no more signals. */
static struct {
    pthread_t thread;
    int running;        /* a poller thread exists (joinable) */
    int active;         /* the session wants looks; cleared to stop it */
    int started;        /* the thread has begun (start() waits for it) */
    uint64_t interval;
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* on CLOCK_MONOTONIC */
    int cv_ready;
    int short_slice;    /* the poller has the shortest slice (prefer_short_slice) */
    _Atomic uint64_t cpu_ns;  /* the thread's CPU time, after each look */
    poll_state st[SPP_MAX_THREADS];
    int to_read[SPP_MAX_THREADS]; /* a round's nonblocking reads, by slot */
} P = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t ts_ns(const struct timespec *ts)
{
    return (uint64_t)ts->tv_sec * 1000000000ull + (uint64_t)ts->tv_nsec;
}

static void deadline_after(struct timespec *ts, uint64_t at)
{
    ts->tv_sec = (time_t)(at / 1000000000ull);
    ts->tv_nsec = (long)(at % 1000000000ull);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts_ns(&ts);
}

/* A thread's CPU time; < 0 if it has ended. */
static int thread_cpu_ns(pid_t tid, uint64_t *ns)
{
    struct timespec ts;
    if (clock_gettime(thread_cpu_clock(tid), &ts) < 0)
        return -1;
    *ns = ts_ns(&ts);
    return 0;
}

/* Whether the thread is running or runnable now (state R in its stat
 * line); when that cannot be read, it is taken as running. *cpu is set to
 * the CPU it runs or waits on (field 39), or -1. The file is opened for
 * each question: a descriptor kept per thread would double what spprof
 * takes of the program's RLIMIT_NOFILE. */
static int poll_running(pid_t tid, int *cpu)
{
    *cpu = -1;
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 1;
    /* "TID (COMM) S ...": COMM may hold ')' and spaces, so the state is
     * after the last ')'; COMM is at most 16 bytes, and the 37 fields
     * from the state to the CPU at most 21 bytes each. */
    char buf[1024];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 1;
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return 1;
    int running = p[2] == 'R';
    const char *f = p + 2; /* field 3 */
    for (int field = 3; field < 39 && f; field++) {
        f = strchr(f, ' ');
        if (f)
            f++;
    }
    if (f && *f >= '0' && *f <= '9') {
        int c = 0;
        for (; *f >= '0' && *f <= '9' && c < 1000000; f++)
            c = c * 10 + (*f - '0');
        *cpu = c;
    }
    return running;
}

/* A sample was asked for at CPU time cpu. The next is due an interval
 * later; after a long wait (a thread that was not running when due), an
 * interval from now, with no burst to catch up: the weights carry the
 * time. */
static void poll_sent(poll_state *ps, uint64_t cpu, uint64_t interval)
{
    ps->sent_cpu = cpu;
    ps->due = cpu >= ps->due + interval ? cpu + interval : ps->due + interval;
}

/* Hands the thread's next sample to its own clock, after_ns of its CPU
 * time from now. */
static void poll_defer(spp_slot *s, poll_state *ps, uint64_t cpu, uint64_t interval, uint64_t after_ns)
{
    if (!spp_defer_sample(s, after_ns))
        return;
    poll_sent(ps, cpu, interval);
    ps->deferred_for = after_ns;
}

/* The start of a look at a thread: its poller state (anew for a new
 * thread in the slot) and its CPU time now; < 0 if it has ended. */
static int look_begin(spp_slot *s, poll_state *ps, uint64_t interval, uint64_t *cpu)
{
    if (ps->tid != s->tid) {
        memset(ps, 0, sizeof(*ps));
        ps->tid = s->tid;
        ps->rng = (uint32_t)s->tid * 2654435761u | 1;
    }
    if (thread_cpu_ns(s->tid, cpu) < 0)
        return -1;
    if (!ps->due) {
        /* First look: due an interval of CPU time after the clock was
         * armed, so that a short-lived thread is sampled too. */
        ps->due = s->armed_cpu + interval;
        ps->last_cpu = s->armed_cpu;
    }
    return 0;
}

/* Whether the thread had a CPU all the time since the previous look but
 * for the poller's own turns: then it ran until this round woke the
 * poller, as a thread the poller stops by waking does. Notes this look's
 * times for the next. */
static int look_ran_through(poll_state *ps, uint64_t cpu, const poll_round *round)
{
    int through = ps->last_look &&
                  cpu - ps->last_cpu + (round->own_cpu - ps->last_own) + POLL_RAN_THROUGH_SLACK_NS >=
                      round->mono - ps->last_look;
    ps->last_cpu = cpu;
    ps->last_look = round->mono;
    ps->last_own = round->own_cpu;
    return through;
}

/* Whether this round's waking of the poller stopped the thread, at the
 * random moment the poller's timer fired: the thread waits on the
 * poller's CPU, had a CPU all the time since the previous look
 * (look_ran_through), and the poller has the shortest slice
 * (prefer_short_slice) and woke on time. */
static int stopped_by_poller(int ran_through, int thread_on, int poller_on, const poll_round *round)
{
    return P.short_slice && ran_through && thread_on >= 0 && thread_on == poller_on && !round->late;
}

/* One look at one thread:
 *  - running, with a sample due (within half an interval: the looks and a
 *    busy thread's CPU time advance in step, and a look a little early
 *    must not skip a whole interval): a signal from here;
 *  - not run since the previous look (asleep, or waiting for a CPU): its
 *    own clock will sample it when its CPU time reaches the due point, as
 *    a perf_event clock would, so that a thread that runs in bursts between
 *    looks is sampled as often as a busy one;
 *  - ran, but is asleep now, with a sample due: its own clock samples its
 *    next turn, a random time into it (a signal would cut its sleep short:
 *    select, poll and nanosleep return EINTR to a handled signal).
 * While its own clock has a sample in hand the thread is left alone, looked
 * at only to notice a signal lost (merged with one already pending). */
static void poll_thread(int idx, spp_slot *s, poll_state *ps, const poll_round *round,
                        uint64_t interval, pid_t pid, uid_t uid)
{
    pid_t tid = s->tid;
    uint64_t cpu;
    if (look_begin(s, ps, interval, &cpu) < 0)
        return; /* ended: the drain thread reaps its slot */
    int advanced = cpu != ps->last_cpu;
    int ran_through = look_ran_through(ps, cpu, round);
    if (atomic_load_explicit(&s->deferred, memory_order_acquire)) {
        /* Its clock fires within after_ns of CPU time (a tick later for
         * the CPU-time timer). */
        uint64_t slack = s->fd >= 0 ? interval : POLL_TICK_SLACK_NS;
        if (cpu < ps->sent_cpu + ps->deferred_for + slack)
            return;
        atomic_store_explicit(&s->deferred, 0, memory_order_release);
    }
    if (atomic_load_explicit(&s->signal_out, memory_order_acquire)) {
        /* The last signal is still on its way (a thread in a long system
         * call gets it when the call returns): another would merge with
         * it and mislead the handler about when it was sent. Given up if
         * the thread ran long without taking it (it blocks SIGPROF). */
        if (cpu < ps->sent_cpu + 2 * interval + POLL_TICK_SLACK_NS)
            return;
        atomic_store_explicit(&s->signal_out, 0, memory_order_release);
    }
    if (!advanced) {
        poll_defer(s, ps, cpu, interval,
                   ps->due > cpu + 10000 ? ps->due - cpu : spp_defer_delay(&ps->rng));
        return;
    }
    if (cpu + interval / 2 < ps->due)
        return;
    int thread_on;
    if (!poll_running(tid, &thread_on)) {
        poll_defer(s, ps, cpu, interval, spp_defer_delay(&ps->rng));
        return;
    }
    int poller_on = sched_getcpu();
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    si.si_signo = SPP_SIGNAL;
    si.si_code = SI_QUEUE;
    si.si_pid = pid;
    si.si_uid = uid;
    si.si_value.sival_int = idx;
    /* The handler measures how long the thread ran between the signal's
     * leaving and its coming from the thread's CPU time read just after
     * the send (not before: this thread may be preempted between the two,
     * and that time would count as the signal's). Until that is stored it
     * reads SPP_SENT_UNKNOWN, taken as a signal that came at once. A
     * thread whose CPU time has not moved since the look was not on a CPU
     * meanwhile (a running thread's clock moves every nanosecond), or its
     * clock stood still (a virtual CPU the host took back, whose time is
     * taken out afterwards): SPP_SENT_STOPPED, it takes the signal where
     * it was stopped. SPP_SENT_BY_POLLER besides when this thread stopped
     * it, at the random moment its timer fired, taking the CPU the two
     * share: it has the shortest slice, woke on time, the thread waits on
     * this CPU and had a CPU nearly all the time since the previous look
     * (within POLL_RAN_THROUGH_SLACK_NS). Otherwise another
     * task took the thread's CPU, or this one did when the scheduler found
     * the thread's slice spent, which a thread that reads its own CPU clock
     * finds itself, at that read's exit (the handler hands such samples
     * on). Measured on two CPUs with four busy processes beside, the
     * syscall-dense loop of test_sampling: its calling line got 0.36-0.40
     * of the samples while all were kept (perf_event: 0.23-0.26), 0.25-0.28
     * since. On one CPU beside a compiler's jobs, 0.30-0.45 while a late
     * poller counted as the one that stopped the thread (perf_event:
     * 0.21-0.28), 0.24-0.27 since. */
    atomic_store_explicit(&s->poll_sent_cpu, SPP_SENT_UNKNOWN, memory_order_relaxed);
    atomic_store_explicit(&s->signal_out, 1, memory_order_release);
    if (syscall(SYS_rt_tgsigqueueinfo, pid, tid, SPP_SIGNAL, &si) < 0) {
        atomic_store_explicit(&s->signal_out, 0, memory_order_release);
        return;
    }
    uint64_t after;
    if (thread_cpu_ns(tid, &after) == 0) {
        uint64_t where = 0;
        if (after == cpu) {
            where = SPP_SENT_STOPPED;
            if (stopped_by_poller(ran_through, thread_on, poller_on, round))
                where |= SPP_SENT_BY_POLLER;
        }
        atomic_store_explicit(&s->poll_sent_cpu, (after & ~SPP_SENT_FLAGS) | where,
                              memory_order_relaxed);
    }
    poll_sent(ps, cpu, interval);
}

/* How far past its due point a thread that waits for a CPU at every look
 * may run before it is read where it waits (look_nonblocking), in
 * intervals of its CPU time. */
#define NB_OVERDUE_INTERVALS 4

/* How long after the poller last read a thread's CPU clock its stack is
 * read. Reading a running thread's clock takes its CPU's run queue lock
 * and updates the thread's times there; a thread that reads its own clock
 * meanwhile (time.thread_time()) waits in that call for the lines the
 * poller took, and a stack read at once finds it there far more often
 * than its share. Measured (2026-12-05, an Intel VM with Linux 6.18, two
 * busy processes per CPU beside, test_sampling's syscall-dense loop,
 * 3.13): the calling line got 0.40-0.55 of the samples read at once
 * (perf_event: 0.10-0.12), 0.33-0.42 read 1-2 us later, 0.20-0.25 at
 * 3 us, 0.14-0.15 at 5 us and at 50 us, 0.13-0.14 at 10 us. (Reading the
 * thread's stat line between the two had been pause enough on an earlier
 * machine.) A thread off its CPU has its clock read without that lock. */
#define NB_SETTLE_NS 10000ull

/* How long after it could first be read (its look, plus NB_SETTLE_NS) a
 * thread's stack may be read without looking again whether it runs (the
 * reads of the round's other threads come between). */
#define NB_STALE_NS 100000ull

/* SPP_MECH_NONBLOCK: one look at one thread. A sample is due an interval
 * of the thread's CPU time after the previous one (within half an
 * interval, as for poll_thread); the poller then reads the stack of the
 * thread, which runs on: nothing interrupts it. It reads a thread whose
 * CPU clock moved during the look, which was on a CPU, NB_SETTLE_NS
 * later (read_nonblocking; checked again if other reads held it past
 * NB_STALE_NS). One that ran but
 * sleeps now, or waits for a CPU, is left until a look finds it running,
 * and that sample weighs all the CPU time since the previous one: neither
 * stack is where that time went. A sleeping thread's is in its sleep; a
 * waiting thread's is where the scheduler took its CPU, which is seldom a
 * random moment: it finds a slice spent at a tick, or in a system call
 * that reads the thread's CPU clock or wakes another task, and the thread
 * stops at that call's exit (README, Nonblocking sampling, has the
 * figures). A waiting thread is read all the same
 *  - when this round's waking stopped it (stopped_by_poller);
 *  - for its first sample, so that a short-lived thread that never runs
 *    while the poller looks is in the profile;
 *  - once it has run NB_OVERDUE_INTERVALS past its due point without a
 *    look finding it running: a thread that shares one CPU with other
 *    work, or a kernel without the short slice, leaves no other moments.
 * A stack that changes while it is read is read again (handler.c's
 * walk_running); when no read holds, the next look tries again, carrying
 * this one's time. The time a thread runs after its last sample is lost
 * if it ends before a look reads it. */
static int look_nonblocking(spp_slot *s, poll_state *ps, const poll_round *round, uint64_t interval)
{
    uint64_t cpu, now;
    if (look_begin(s, ps, interval, &cpu) < 0)
        return 0;
    int advanced = cpu != ps->last_cpu, thread_on;
    int ran_through = look_ran_through(ps, cpu, round);
    if (cpu + interval / 2 < ps->due || !advanced)
        return 0;
    /* (The stack is read at least NB_SETTLE_NS after this clock read, at
     * once when the clock did not move.) */
    if (thread_cpu_ns(s->tid, &now) < 0 || !poll_running(s->tid, &thread_on))
        return 0;
    if (now == cpu && ps->read_once && cpu < ps->due + NB_OVERDUE_INTERVALS * interval &&
        !stopped_by_poller(ran_through, thread_on, sched_getcpu(), round))
        return 0;
    ps->read_cpu = cpu;
    ps->read_now = now;
    ps->read_at = now == cpu ? 0 : mono_ns() + NB_SETTLE_NS; /* (after the stat line too) */
    return 1;
}

static void settle(uint64_t until)
{
    while (mono_ns() < until)
        ;
}

/* The read that look_nonblocking decided on, once the thread has settled
 * (NB_SETTLE_NS: the poller reads all the round's clocks first, then the
 * stacks, so that it waits only when it samples few threads). */
static void read_nonblocking(spp_slot *s, poll_state *ps, uint64_t interval)
{
    uint64_t cpu = ps->read_cpu, now;
    if (ps->read_at && mono_ns() > ps->read_at + NB_STALE_NS) {
        /* Looked at a while ago: read only a thread that has run since. */
        if (thread_cpu_ns(s->tid, &now) < 0 || now == ps->read_now)
            return; /* (its time goes to the next look's sample) */
        ps->read_at = mono_ns() + NB_SETTLE_NS;
    }
    uint64_t weight = cpu > s->last_clock ? cpu - s->last_clock : 0;
    if (spp_g.cfg.empty) {
        /* measuring the poller's looks alone */
    } else if (!spp_fault_guard_held()) {
        /* The program took SIGSEGV or SIGBUS for a handler of its own
         * since start(): a read of memory the thread frees meanwhile would
         * reach it, and end the program. Nothing is read (the signal
         * clocks' handler reads only what the stopped thread keeps alive). */
        atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
    } else {
        /* (A full fence, here and in spp_sampler_code_dying: either it
         * sees this read going on, or this read sees its code
         * unreachable.) */
        settle(ps->read_at);
        atomic_store(&spp_g.poller_reading, 1);
        atomic_thread_fence(memory_order_seq_cst);
        /* (The thread state found before is used, and checked after the
         * stack is read: a read of it just before would hold up the
         * thread's next write to it, at its next call, and the stack read
         * next would find it there: the calls' lines of a function got
         * twice their share, 3.12.) */
        uint64_t tstate = s->nb.tid == s->tid && s->nb.tstate
                              ? s->nb.tstate
                              : spp_find_tstate(spp_g.cfg.interp, s->ident);
        int rc = tstate ? spp_record_sample(s, tstate, weight, SPP_WALK_RUNNING, NULL) : SPP_EINVAL;
        atomic_store(&spp_g.poller_reading, 0);
        if (rc == SPP_ETORN)
            return; /* no read agreed: the next look tries again, its
                     * sample weighing this time too */
        /* (A thread with no Python state, yet or any more: nothing to
         * sample, as for the signal clocks' handler; not a drop.) */
    }
    poll_sent(ps, cpu, interval);
    s->last_clock = cpu;
    ps->read_once = 1;
}

/* Asks the scheduler for its shortest time slice, 0.1 ms, and says whether
 * the poller has it. Under EEVDF (Linux 6.12+) a task whose slice is
 * shorter than the running task's takes the CPU as it wakes; otherwise it
 * waits until the running task's slice runs out (6.6-6.11 always wait;
 * older kernels ignore the request). When the poller shares a CPU with the
 * thread it samples (a one-CPU container, or a scheduler that packs tasks
 * on few CPUs), it then stops that thread at the random moment its timer
 * fires, not where the thread's slice is found spent, which is mostly
 * inside the thread's own system calls (those that read a CPU clock update
 * it). Measured on one CPU: the calling line of test_sampling's
 * syscall-dense loop got 0.48-0.56 of its samples without this, 0.21-0.25
 * with it (perf_event: 0.18). Only a poller of the default policy asks:
 * the request would change another policy, or need privilege to. At its
 * own nice value, SCHED_OTHER's needs none. */
static int prefer_short_slice(void)
{
    struct {
        uint32_t size, policy;
        uint64_t flags;
        int32_t nice;
        uint32_t priority;
        uint64_t runtime, deadline, period;
    } attr; /* struct sched_attr, its first version */
    if (sched_getscheduler(0) != SCHED_OTHER)
        return 0;
    memset(&attr, 0, sizeof(attr));
    attr.size = sizeof(attr);
    attr.policy = SCHED_OTHER;
    attr.nice = getpriority(PRIO_PROCESS, 0);
    attr.runtime = 100000; /* the slice, in ns */
#if defined(SYS_sched_setattr) && defined(SYS_sched_getattr)
    if (syscall(SYS_sched_setattr, 0, &attr, 0) < 0)
        return 0;
    memset(&attr, 0, sizeof(attr));
    return syscall(SYS_sched_getattr, 0, &attr, sizeof(attr), 0) == 0 &&
           attr.policy == SCHED_OTHER && attr.runtime == 100000;
#else
    return 0;
#endif
}

static void *poll_main(void *arg)
{
    (void)arg;
    /* Wake on time: the default slack would add 50 us to every look. */
    prctl(PR_SET_TIMERSLACK, 1000ul, 0, 0, 0);
    P.short_slice = prefer_short_slice();
    pid_t pid = getpid();
    uid_t uid = getuid();
    struct timespec cpu;
    uint64_t cpu0 = clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu) == 0 ? ts_ns(&cpu) : 0;
    pthread_mutex_lock(&P.mu);
    P.started = 1;
    pthread_cond_broadcast(&P.cv);
    uint64_t interval = P.interval;
    uint64_t grid = mono_ns(), next = grid;
    struct timespec deadline;
    /* (The poller's own CPU time is read only after a round: reading it
     * brings it up to date, and on a CPU shared with the sampled thread a
     * poller found past its short slice would hand that CPU back before
     * it signalled, to wait until the thread's slice was spent. In a trial
     * that read it at a round's start, the reads of test_sampling's
     * BIG_READS pinned to one CPU got 0.18-0.24 of the samples, against
     * 0.38-0.50 without that read and a measured share of 0.40-0.47, and
     * the clock read after the loop got 0.24-0.35.) */
    poll_round round;
    uint32_t rng = ((uint32_t)pid * 2654435761u ^ 0x9e3779b9u) | 1;
    while (P.active) {
        /* Each look is jittered by up to a quarter of an interval either
         * way around a fixed grid (so the looks stay in step with a busy
         * thread's CPU time): looks at a fixed period would stop a thread
         * on one CPU with them at the same points of a loop whose period
         * is a fraction of theirs (the reads of test_sampling's BIG_READS
         * pinned to one CPU came 2-8 points over their measured share
         * without it, 1-4 with it, in trials). */
        grid += interval;
        next = grid - interval / 4 + spp_random_below(&rng, interval / 2 + 1);
        deadline_after(&deadline, next);
        while (P.active && pthread_cond_timedwait(&P.cv, &P.mu, &deadline) != ETIMEDOUT)
            ;
        if (!P.active)
            break;
        round.mono = mono_ns();
        round.own_cpu = atomic_load_explicit(&P.cpu_ns, memory_order_relaxed);
        round.late = round.mono > next + POLL_LATE_NS;
        int nread = 0;
        for (int i = 0; i < SPP_MAX_THREADS; i++) {
            spp_slot *s = &spp_g.slots[i];
            int state = atomic_load_explicit(&s->state, memory_order_acquire);
            if (state == SLOT_ACTIVE && s->mech == SPP_MECH_POLL)
                poll_thread(i, s, &P.st[i], &round, interval, pid, uid);
            else if (state == SLOT_ACTIVE && s->mech == SPP_MECH_NONBLOCK) {
                if (look_nonblocking(s, &P.st[i], &round, interval))
                    P.to_read[nread++] = i;
            } else
                P.st[i].tid = 0;
        }
        for (int k = 0; k < nread; k++) {
            spp_slot *s = &spp_g.slots[P.to_read[k]];
            /* (A slot is freed only once the clock is disarmed, under mu:
             * the thread looked at is still the slot's, unless it stopped
             * being sampled during the round.) */
            if (atomic_load_explicit(&s->state, memory_order_acquire) == SLOT_ACTIVE &&
                s->mech == SPP_MECH_NONBLOCK && s->tid == P.st[P.to_read[k]].tid)
                read_nonblocking(s, &P.st[P.to_read[k]], interval);
        }
        if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu) == 0)
            atomic_store_explicit(&P.cpu_ns, ts_ns(&cpu) - cpu0, memory_order_relaxed);
        uint64_t now = mono_ns();
        if (now > grid + interval)
            grid = now; /* fell behind (a stall): no burst of looks */
    }
    pthread_mutex_unlock(&P.mu);
    return NULL;
}

/* Starts this session's poller thread, and waits until it runs: a new
 * thread can otherwise wait up to a scheduler tick for a CPU (measured),
 * and a short profile would miss its first samples. */
static int poller_start(void)
{
    int err = 0;
    pthread_mutex_lock(&P.mu);
    if (P.running)
        goto out;
    if (!P.cv_ready) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        err = pthread_cond_init(&P.cv, &ca);
        pthread_condattr_destroy(&ca);
        if (err)
            goto out;
        P.cv_ready = 1;
    }
    memset(P.st, 0, sizeof(P.st));
    P.interval = spp_g.cfg.interval_ns;
    atomic_store(&P.cpu_ns, 0);
    P.active = 1;
    P.started = 0;
    err = spp_create_thread(&P.thread, poll_main);
    if (err) {
        P.active = 0;
        goto out;
    }
    P.running = 1;
    while (!P.started)
        pthread_cond_wait(&P.cv, &P.mu);
out:
    pthread_mutex_unlock(&P.mu);
    return -err;
}

void spp_poller_stop(void)
{
    pthread_mutex_lock(&P.mu);
    int running = P.running;
    P.active = 0;
    P.running = 0;
    if (running)
        pthread_cond_broadcast(&P.cv);
    pthread_mutex_unlock(&P.mu);
    if (running)
        pthread_join(P.thread, NULL);
}

void spp_poller_lock(void)
{
    pthread_mutex_lock(&P.mu);
}

void spp_poller_unlock(void)
{
    pthread_mutex_unlock(&P.mu);
}

uint64_t spp_poller_cpu_ns(void)
{
    return atomic_load_explicit(&P.cpu_ns, memory_order_relaxed);
}

void spp_poller_atfork_child(void)
{
    /* The poller thread did not follow the fork. */
    memset(&P, 0, sizeof(P));
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    P.mu = fresh;
}

clockid_t spp_clock_weight_clock(const spp_slot *s)
{
    return s->mech == SPP_MECH_WALL ? CLOCK_MONOTONIC : thread_cpu_clock(s->tid);
}

static int arm_mech(spp_slot *s, int idx, int mech);

int spp_clock_arm(spp_slot *s, int idx, int mech)
{
    s->fd = -1;
    s->trap = 0;
    s->has_timer = 0;
    s->mech = mech;
    struct timespec ts;
    if (clock_gettime(spp_clock_weight_clock(s), &ts) < 0)
        return -errno; /* the thread is gone */
    s->last_clock = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    s->armed_cpu = s->last_clock;
    s->weight_clock = spp_clock_weight_clock(s);
    int err = arm_mech(s, idx, mech);
    if (err == 0 && mech != SPP_MECH_NONBLOCK)
        atomic_store(s->trap ? &spp_g.uses_trap : &spp_g.uses_signal, 1);
    return err;
}

static int arm_mech(spp_slot *s, int idx, int mech)
{
    switch (mech) {
    case SPP_MECH_PERF:
    case SPP_MECH_PERF_USER:
        return arm_perf(s, idx, mech == SPP_MECH_PERF_USER);
    case SPP_MECH_CPUTIMER:
        return arm_timer(s, idx, thread_cpu_clock(s->tid));
    case SPP_MECH_WALL:
        return arm_timer(s, idx, CLOCK_MONOTONIC);
    case SPP_MECH_POLL: {
        /* The thread's own clock, for the samples the poller's signal
         * cannot take (see spp_defer_sample), left unarmed: a perf_event
         * task-clock, which can expire at any moment of the thread's CPU
         * time; else (perf_event refused, or allowed for user time only,
         * which would move the samples of system calls elsewhere) the
         * thread's CPU-time timer, which expires on a scheduler tick; if
         * the kernel refuses both, a sample is taken where it lands. */
        atomic_store(&s->deferred, 0);
        atomic_store(&s->signal_out, 0);
        atomic_store(&s->poll_sent_cpu, 0);
        s->rng = (uint32_t)s->tid * 2654435761u | 1;
        if (open_perf(s, idx, 0, 0) < 0 &&
            create_timer(s, idx | SPP_DEFERRED_SAMPLE, thread_cpu_clock(s->tid)) < 0)
            s->has_timer = 0;
        int err = poller_start();
        if (err < 0)
            spp_clock_disarm(s);
        return err;
    }
    case SPP_MECH_NONBLOCK:
        /* No clock of its own: the poller reads its stack. */
        return s->ident ? poller_start() : -ESRCH; /* (no state to find it by) */
    default:
        return -EINVAL;
    }
}

void spp_clock_disarm(spp_slot *s)
{
    /* A POLL slot's clock is armed by the poller too, and a NONBLOCK
     * slot's ring written by it: under its lock, which its rounds hold. */
    int poll = s->mech == SPP_MECH_POLL || s->mech == SPP_MECH_NONBLOCK;
    if (poll)
        spp_poller_lock();
    close_perf(s);
    if (s->has_timer) {
        timer_delete(s->timer);
        s->has_timer = 0;
    }
    if (poll)
        spp_poller_unlock();
}

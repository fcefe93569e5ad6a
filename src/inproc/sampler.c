/* sampler.c - starts and stops the in-process sampler, keeps the thread
 * slots, and runs the drain thread that turns raw records into the profile. */
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "../proc/symbols.h"
#include "../pyabi/merge.h"
#include "../pyabi/resolve.h"
#include "../pyabi/walker.h"
#include "internal.h"

spp_sampler spp_g = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .kick_fd = -1,
};

/* Ring sizes tried per thread, largest first, within a quarter of the
 * memory limit: 256 KiB holds 48 of the largest records (SPP_REC_MAX: 256
 * Python and 128 native frames), 16 KiB holds 3. */
static const uint32_t ring_sizes[] = {256u << 10, 64u << 10, 16u << 10};

/* The drain thread's period: up to 16 sampling intervals, within 10-100 ms
 * (each of its wake-ups costs a CPU tens of microseconds on a virtual
 * machine: every 10 ms, 0.7 % of a CPU whatever the rate). No more
 * intervals than half the smallest ring holds of the largest records, so
 * that the period alone would drain it in time; a handler kicks the
 * drain sooner at half full. Called with the lock held. */
static int drain_period_ms(void)
{
    uint32_t smallest = ring_sizes[0];
    for (int i = 0; i < SPP_MAX_THREADS; i++) {
        int st = atomic_load(&spp_g.slots[i].state);
        uint32_t cap = (uint32_t)spp_g.slots[i].ring.cap;
        if ((st == SLOT_ACTIVE || st == SLOT_ARMING) && cap && cap < smallest)
            smallest = cap;
    }
    uint64_t intervals = smallest / 2 / SPP_REC_MAX;
    uint64_t ms = spp_g.cfg.interval_ns * (intervals < 16 ? intervals : 16) / 1000000ull;
    return ms < 10 ? 10 : ms > 100 ? 100 : (int)ms;
}
#define MAX_MERGED (SPP_MAX_PY_FRAMES + SPP_MAX_NATIVE + 1)

static struct {
    spp_resolver *resolver;  /* Python frames, with the local reader */
    spp_symbols *symbols;    /* native frames */
    uint64_t dropped;        /* records that could not be stored */
    uint32_t ring_total;     /* bytes of rings allocated */
    uint32_t ring_budget;
    int16_t slot_thread_valid[SPP_MAX_THREADS];
    uint32_t slot_thread[SPP_MAX_THREADS];  /* profile thread index per slot */
} R;

static uint64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- resolving raw records ---- */

/* Code objects of the profiler's own Python glue (thread hooks), left out
 * of stacks: they run for microseconds, only because spprof is there. */
#define MAX_HIDDEN 32
static uint64_t hidden_code[MAX_HIDDEN];
static int nhidden;

int spp_sampler_hide_code(uint64_t code)
{
    pthread_mutex_lock(&spp_g.lock);
    int ok = nhidden < MAX_HIDDEN;
    if (ok)
        hidden_code[nhidden++] = code;
    pthread_mutex_unlock(&spp_g.lock);
    return ok ? SPP_OK : SPP_ENOMEM;
}

static int is_hidden(uint64_t code)
{
    for (int i = 0; i < nhidden; i++)
        if (hidden_code[i] == code)
            return 1;
    return 0;
}

static int python_frame(void *ctx, const spp_rawframe *raw, uint32_t *frame)
{
    (void)ctx;
    if (is_hidden(raw->code))
        return 1;
    *frame = spp_resolver_frame(R.resolver, raw);
    return 0;
}

static const spp_native_sym *native_frame(void *ctx, uint64_t ip, int leaf)
{
    (void)ctx;
    return spp_symbols_frame(R.symbols, ip, leaf);
}

/* Finds a native address's module with the dynamic linker. */
static int locate_module(void *ctx, uint64_t addr, const char **path, uint64_t *base)
{
    (void)ctx;
    Dl_info info;
    memset(&info, 0, sizeof(info));
    if (!dladdr((void *)(uintptr_t)addr, &info) || !info.dli_fbase || !info.dli_fname)
        return -1;
    *path = info.dli_fname;
    *base = (uint64_t)(uintptr_t)info.dli_fbase;
    return 0;
}

/* Builds the frames of a record, innermost first (native frames merged in
 * where the record has them). */
static uint32_t record_frames(const spp_rec *rec, uint32_t *out)
{
    const spp_rawframe *py = (const spp_rawframe *)(rec + 1);
    const uint64_t *native = (const uint64_t *)(py + rec->npy);
    spp_merge_ops ops = {python_frame, native_frame, NULL, spp_g.cfg.eval_start, spp_g.cfg.eval_end};
    spp_merge_in in = {py, (const uint8_t *)(native + rec->nnative), rec->npy, native, rec->nnative};
    return spp_merge(&ops, &in, out, MAX_MERGED);
}

static void resolve(int slot, const spp_rec *rec)
{
    spp_profile *p = spp_g.profile;
    if (!R.slot_thread_valid[slot]) {
        uint32_t t = spp_profile_thread(p, (uint64_t)spp_g.slots[slot].tid, NULL);
        if (t == SPP_NONE) {
            R.dropped++;
            return;
        }
        R.slot_thread[slot] = t;
        R.slot_thread_valid[slot] = 1;
    }
    uint32_t frames[MAX_MERGED];
    uint32_t n = record_frames(rec, frames);
    if (n == 0) {
        /* CPU time of the thread outside any Python frame (starting up,
         * shutting down): kept, so that shares stay true, and named. */
        frames[0] = spp_resolver_marker(R.resolver, SPP_MARK_NO_PYTHON);
        n = 1;
    }
    uint32_t stack = spp_profile_thread_at(p, R.slot_thread[slot])->root;
    if (rec->flags & SPP_REC_TRUNCATED)
        stack = spp_profile_push(p, stack, spp_resolver_marker(R.resolver, SPP_MARK_TRUNCATED));
    for (uint32_t i = n; i-- > 0 && stack != SPP_NONE;)
        stack = frames[i] == SPP_NONE ? SPP_NONE : spp_profile_push(p, stack, frames[i]);
    if (stack == SPP_NONE) {
        R.dropped++;
        return;
    }
    spp_profile_add(p, stack, rec->weight_ns, rec->time_ns + spp_g.mono_to_real);
}

static void drain_slot(int i)
{
    spp_slot *s = &spp_g.slots[i];
    spp_ring *r = &s->ring;
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    while (head < tail) {
        const spp_rec *rec = (const spp_rec *)(r->buf + (head & (r->cap - 1)));
        if (rec->size < sizeof(spp_rec) || rec->size > r->cap)
            break; /* cannot happen unless memory is corrupt; stop reading */
        if (!(rec->flags & SPP_REC_WRAP))
            resolve(i, rec);
        head += rec->size;
    }
    atomic_store_explicit(&r->head, head, memory_order_release);
}

static void release_slot(int i)
{
    spp_slot *s = &spp_g.slots[i];
    R.dropped += atomic_exchange(&s->dropped, 0);
    free(s->ring.buf);
    R.ring_total -= (uint32_t)s->ring.cap;
    memset(&s->ring, 0, sizeof(s->ring));
    R.slot_thread_valid[i] = 0;
    s->tid = 0;
    atomic_store(&s->state, SLOT_FREE);
}

/* Resolves every record in every ring; frees slots of exited threads.
 * Called with the lock held. */
static void drain_all(void)
{
    for (int i = 0; i < SPP_MAX_THREADS; i++) {
        int st = atomic_load(&spp_g.slots[i].state);
        if (st != SLOT_ACTIVE && st != SLOT_EXITED)
            continue;
        drain_slot(i);
        if (st == SLOT_EXITED)
            release_slot(i);
    }
}

/* Threads that ended without unregistering (started before spprof was
 * imported) are noticed here; a dead thread receives no more signals. */
static void reap_exited_threads(void)
{
    pid_t pid = getpid();
    for (int i = 0; i < SPP_MAX_THREADS; i++) {
        spp_slot *s = &spp_g.slots[i];
        if (atomic_load(&s->state) != SLOT_ACTIVE)
            continue;
        if (syscall(SYS_tgkill, pid, s->tid, 0) < 0 && errno == ESRCH) {
            atomic_store(&s->state, SLOT_EXITED);
            spp_clock_disarm(s);
        }
    }
}

/* Drains every drain_period_ms(), or sooner when a handler finds its ring
 * half full and kicks the eventfd. */
static void *drain_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&spp_g.lock);
        int stop = spp_g.drain_stop;
        drain_all();
        reap_exited_threads();
        int period_ms = drain_period_ms();
        pthread_mutex_unlock(&spp_g.lock);
        if (stop)
            return NULL;
        struct pollfd pfd = {spp_g.kick_fd, POLLIN, 0};
        if (poll(&pfd, 1, period_ms) > 0) {
            uint64_t n;
            ssize_t got = read(spp_g.kick_fd, &n, sizeof(n));
            (void)got;
        }
        atomic_store(&spp_g.kicked, 0);
    }
}

/* ---- control ---- */

/* Who holds a signal: spprof's handler, nobody (the default action, or
 * ignored), or another handler. cur, if given, gets the action. */
enum holder { HELD_BY_SPPROF, HELD_BY_NOBODY, HELD_BY_OTHER };

static enum holder held_by(int sig, struct sigaction *cur)
{
    struct sigaction a;
    if (!cur)
        cur = &a;
    if (sigaction(sig, NULL, cur) < 0) {
        memset(cur, 0, sizeof(*cur)); /* (SIG_DFL) */
        return HELD_BY_NOBODY;
    }
    if (cur->sa_flags & SA_SIGINFO)
        return cur->sa_sigaction == spp_handler ? HELD_BY_SPPROF : HELD_BY_OTHER;
    return cur->sa_handler == SIG_DFL || cur->sa_handler == SIG_IGN ? HELD_BY_NOBODY : HELD_BY_OTHER;
}

static int other_handler_installed(void)
{
    return held_by(SPP_SIGNAL, NULL) == HELD_BY_OTHER;
}

/* spp_handler's action: one sampling signal at a time per thread. */
static void handler_action(struct sigaction *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sa_sigaction = spp_handler;
    sa->sa_flags = SA_SIGINFO | SA_RESTART;
    spp_sampling_signals(&sa->sa_mask);
}

void spp_sampling_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SPP_SIGNAL);
    sigaddset(set, SPP_TRAP_SIGNAL);
}

/* Whether a debugger traces this process: gdb stops it at every SIGTRAP,
 * where it passes SIGPROF on silently. */
static int traced(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        return 1; /* cannot tell: the signal nobody stops at */
    char line[256];
    int pid = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "TracerPid: %d", &pid) == 1)
            break;
    fclose(f);
    return pid != 0;
}

/* Whether the kernel is at least major.minor. */
static int kernel_at_least(int major, int minor)
{
    struct utsname u;
    int ma = 0, mi = 0;
    if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
        return 0;
    return ma > major || (ma == major && mi >= minor);
}

/* Whether perf_event clocks may signal with SPP_TRAP_SIGNAL (see
 * internal.h). Only from Linux 6.15: before 5.19 a trap that finds SIGTRAP
 * blocked (as glibc blocks every signal while it creates a thread) kills
 * the process; before 6.11 the trap costs what O_ASYNC does; from 6.11 to
 * 6.14 (but for later stable fixes) closing the event waits for a trap
 * still pending on a thread asleep in a system call. Not when asked not to
 * (SPPROF_PERF_SIGNAL=SIGPROF), not under a debugger, and not where the
 * program handles SIGTRAP itself (it stays theirs). */
static int trap_usable(void)
{
    const char *env = getenv("SPPROF_PERF_SIGNAL");
    if ((env && strcmp(env, "SIGPROF") == 0) || !kernel_at_least(6, 15) || traced())
        return 0;
    return held_by(SPP_TRAP_SIGNAL, NULL) != HELD_BY_OTHER;
}

int spp_install_trap_handler(void)
{
    /* Looked at each time: the program may have set the signal back to
     * its default (Python's signal module does not know spprof's handler)
     * since spprof installed it. */
    struct sigaction cur, sa;
    switch (held_by(SPP_TRAP_SIGNAL, &cur)) {
    case HELD_BY_SPPROF:
        return 0;
    case HELD_BY_OTHER:
        return -1; /* a handler the program installed since start() stays its own */
    case HELD_BY_NOBODY:
        break;
    }
    /* What held the signal, stored before spp_handler can chain to it. */
    spp_g.old_trap = cur;
    handler_action(&sa);
    return sigaction(SPP_TRAP_SIGNAL, &sa, NULL) < 0 ? -1 : 0;
}

/* A program that arms ITIMER_PROF (setitimer) counts on SIGPROF at its own
 * rate into its own handler: once spprof's handler is installed those
 * signals would be swallowed, so spprof refuses, as it does for a handler. */
static int prof_itimer_armed(void)
{
    struct itimerval it;
    if (getitimer(ITIMER_PROF, &it) < 0)
        return 0;
    return it.it_value.tv_sec != 0 || it.it_value.tv_usec != 0;
}

int spp_sampler_active(void)
{
    return atomic_load(&spp_g.active);
}

int spp_sampler_handler_replaced(void)
{
    pthread_mutex_lock(&spp_g.lock);
    int replaced = 0;
    if (atomic_load(&spp_g.active)) {
        if (atomic_load(&spp_g.uses_signal) && other_handler_installed())
            replaced = SPP_SIGNAL;
        else if (atomic_load(&spp_g.uses_trap) && held_by(SPP_TRAP_SIGNAL, NULL) == HELD_BY_OTHER)
            replaced = SPP_TRAP_SIGNAL;
        else if (spp_g.mech == SPP_MECH_NONBLOCK && !spp_fault_guard_held())
            replaced = SIGSEGV; /* the nonblocking clock reads nothing since */
    }
    pthread_mutex_unlock(&spp_g.lock);
    return replaced;
}

static void free_resolution_state(void)
{
    spp_resolver_free(R.resolver);
    spp_symbols_free(R.symbols);
    R.resolver = NULL;
    R.symbols = NULL;
}

static int init_resolution_state(void)
{
    R.resolver = spp_resolver_new(spp_g.cfg.offsets,
                                  spp_g.cfg.mechanism == SPP_MECH_NONBLOCK ? &spp_guarded_local_reader
                                                                           : &spp_local_reader,
                                  spp_g.profile, 1);
    /* The module running the evaluation loop holds the interpreter's
     * calling glue. */
    const char *path;
    uint64_t interp_base = 0;
    if (!spp_g.cfg.eval_start || locate_module(NULL, spp_g.cfg.eval_start, &path, &interp_base) < 0)
        interp_base = 0;
    R.symbols = spp_symbols_new(spp_g.profile, 0, locate_module, NULL, interp_base);
    return R.resolver && R.symbols ? SPP_OK : SPP_ENOMEM;
}

int spp_sampler_start(const spp_sampler_config *cfg)
{
    int rc = SPP_OK;
    pthread_mutex_lock(&spp_g.lock);
    if (atomic_load(&spp_g.active) || spp_g.drain_running) {
        rc = SPP_EINVAL;
        errno = EALREADY;
        goto out;
    }
    /* The nonblocking clock sends no signal: the program's SIGPROF stays
     * its own. */
    int signals = cfg->mechanism != SPP_MECH_NONBLOCK;
    if (signals && other_handler_installed()) {
        rc = SPP_EINVAL;
        errno = EBUSY;
        goto out;
    }
    if (signals && prof_itimer_armed()) {
        rc = SPP_EINVAL;
        errno = EEXIST;
        goto out;
    }
    if (cfg->interval_ns < 100000 || cfg->interval_ns > 10000000000ull) {
        rc = SPP_EINVAL; /* (the Python API allows 1 ms to 1 s) */
        errno = EINVAL;
        goto out;
    }
    if (cfg->native && spp_native_init() < 0) {
        rc = SPP_ENOSYS;
        goto out;
    }
    spp_g.cfg = *cfg;
    spp_g.mech = cfg->mechanism;
    R.dropped = 0;
    R.ring_total = 0;
    memset(R.slot_thread_valid, 0, sizeof(R.slot_thread_valid));
    /* A quarter of the budget for rings, the rest for the profile. */
    R.ring_budget = (uint32_t)(cfg->memory_limit / 4 < UINT32_MAX ? cfg->memory_limit / 4 : UINT32_MAX);
    spp_g.profile = spp_profile_new(cfg->memory_limit - R.ring_budget);
    /* The timeline, when asked for, gets a quarter of the profile's share
     * (its runs are 32 bytes; 18.75 MiB of the default 100 MiB). */
    if (!spp_g.profile ||
        (cfg->timeline &&
         spp_profile_keep_timeline(spp_g.profile, (cfg->memory_limit - R.ring_budget) / 4) < 0) ||
        init_resolution_state() < 0) {
        rc = SPP_ENOMEM;
        goto fail;
    }
    spp_fault_guard_install();
    spp_find_vdso();
    for (int i = 0; i < SPP_POLL_NCOUNTS; i++)
        atomic_store(&spp_poll_counts[i], 0);
    struct sigaction sa;
    handler_action(&sa);
    if (signals && sigaction(SPP_SIGNAL, &sa, NULL) < 0) {
        rc = SPP_EINVAL;
        goto fail;
    }
    atomic_store(&spp_g.uses_signal, 0);
    atomic_store(&spp_g.uses_trap, 0);
    spp_g.use_trap = trap_usable();
    spp_g.pid = getpid();
    spp_g.start_real = now_ns(CLOCK_REALTIME);
    spp_g.start_mono = now_ns(CLOCK_MONOTONIC);
    spp_g.mono_to_real = spp_g.start_real - spp_g.start_mono;
    atomic_store(&spp_g.handler_ns, 0);
    spp_g.drain_stop = 0;
    atomic_store(&spp_g.kicked, 0);
    spp_g.kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (spp_g.kick_fd < 0) {
        rc = SPP_ENOMEM;
        goto fail;
    }
    int err = spp_create_thread(&spp_g.drain_thread, drain_main);
    if (err) {
        close(spp_g.kick_fd);
        spp_g.kick_fd = -1;
        rc = SPP_ENOMEM;
        goto fail;
    }
    spp_g.drain_running = 1;
    atomic_store(&spp_g.resolving, 1);
    atomic_store(&spp_g.active, 1);
    goto out;
fail:
    free_resolution_state();
    spp_profile_free(spp_g.profile);
    spp_g.profile = NULL;
out:
    pthread_mutex_unlock(&spp_g.lock);
    return rc;
}

static int find_slot(pid_t tid)
{
    for (int i = 0; i < SPP_MAX_THREADS; i++)
        if (atomic_load(&spp_g.slots[i].state) == SLOT_ACTIVE && spp_g.slots[i].tid == tid)
            return i;
    return -1;
}

int spp_sampler_add_thread(pid_t tid, uint64_t ident)
{
    int rc = SPP_OK;
    pthread_mutex_lock(&spp_g.lock);
    if (!atomic_load(&spp_g.active)) {
        rc = SPP_EINVAL;
        goto out;
    }
    if (find_slot(tid) >= 0) {
        rc = SPP_EXISTS; /* already sampled (a thread that ended is reaped within a drain period, 100 ms at most) */
        goto out;
    }
    int idx = -1;
    for (int i = 0; i < SPP_MAX_THREADS && idx < 0; i++)
        if (atomic_load(&spp_g.slots[i].state) == SLOT_FREE)
            idx = i;
    if (idx < 0) {
        R.dropped++;
        rc = SPP_ENOMEM;
        goto out;
    }
    spp_slot *s = &spp_g.slots[idx];
    memset(&s->ring, 0, sizeof(s->ring));
    for (size_t i = 0; i < sizeof(ring_sizes) / sizeof(ring_sizes[0]) && !s->ring.buf; i++) {
        if (R.ring_total + ring_sizes[i] > R.ring_budget)
            continue;
        s->ring.buf = malloc(ring_sizes[i]);
        s->ring.cap = s->ring.buf ? ring_sizes[i] : 0;
    }
    /* With no room for a ring the thread still gets a clock: each of its
     * samples is then counted as dropped, so the loss shows. */
    atomic_store(&s->dropped, 0);
    R.ring_total += (uint32_t)s->ring.cap;
    s->tid = tid;
    s->ident = ident;
    atomic_store(&s->state, SLOT_ARMING);
    /* The first thread picks the mechanism, trying them from the truest to
     * the least; later threads use the same one so that all weights mean
     * the same thing (falling back only if it fails for them). */
    static const int order[] = {SPP_MECH_PERF, SPP_MECH_POLL, SPP_MECH_CPUTIMER, SPP_MECH_PERF_USER,
                                SPP_MECH_WALL};
    int tries[6], ntries = 0;
    if (spp_g.mech)
        tries[ntries++] = spp_g.mech;
    if (spp_g.cfg.mechanism) {
        tries[ntries++] = spp_g.cfg.mechanism;
        if (spp_g.cfg.mechanism == SPP_MECH_PERF)
            tries[ntries++] = SPP_MECH_PERF_USER;
    } else {
        for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
            if (order[i] != spp_g.mech)
                tries[ntries++] = order[i];
    }
    int err = -1;
    for (int i = 0; i < ntries && err < 0; i++)
        if ((err = spp_clock_arm(s, idx, tries[i])) == 0 && !spp_g.mech)
            spp_g.mech = tries[i];
    if (err < 0) {
        /* A thread that ended since it was listed has no clock to arm. */
        rc = (err == -EINVAL || err == -ESRCH) && syscall(SYS_tgkill, getpid(), tid, 0) < 0
                 ? SPP_EGONE
                 : SPP_ENOSYS;
        errno = -err;
        atomic_store(&s->state, SLOT_EXITED);
        release_slot(idx);
        goto out;
    }
    atomic_store_explicit(&s->state, SLOT_ACTIVE, memory_order_release);
out:
    pthread_mutex_unlock(&spp_g.lock);
    return rc;
}

int spp_create_thread(pthread_t *thread, void *(*main)(void *))
{
    /* Block the signal while creating it: the new thread inherits the mask. */
    sigset_t block, old;
    spp_sampling_signals(&block);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int err = pthread_create(thread, NULL, main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return err;
}

static void wait_for_handlers(void)
{
    struct timespec pause = {0, 100000};
    while (atomic_load(&spp_g.in_handler) > 0)
        nanosleep(&pause, NULL);
}

int spp_sampler_remove_thread(pid_t tid)
{
    /* The caller is usually the thread itself: keep the handler off it while
     * its slot changes. */
    sigset_t block, old;
    spp_sampling_signals(&block);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    pthread_mutex_lock(&spp_g.lock);
    int idx = find_slot(tid);
    if (idx >= 0) {
        atomic_store(&spp_g.slots[idx].state, SLOT_EXITED);
        wait_for_handlers(); /* (one in another thread may be arming this slot's clock) */
        spp_clock_disarm(&spp_g.slots[idx]);
    }
    pthread_mutex_unlock(&spp_g.lock);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return idx >= 0 ? SPP_OK : SPP_EINVAL;
}

spp_profile *spp_sampler_stop(const spp_meta *meta)
{
    pthread_mutex_lock(&spp_g.lock);
    if (!spp_g.drain_running) {
        pthread_mutex_unlock(&spp_g.lock);
        return NULL;
    }
    for (int i = 0; i < SPP_MAX_THREADS; i++)
        if (atomic_load(&spp_g.slots[i].state) == SLOT_ACTIVE)
            atomic_store(&spp_g.slots[i].state, SLOT_EXITED);
    spp_poller_stop();
    atomic_store(&spp_g.active, 0);
    /* A handler that started before the slots were closed may still be
     * writing into a ring, or arming its slot's clock (cpu_poll): the
     * clocks are closed, and the rings freed, only after it is done. Our
     * handler stays installed: a signal still pending would otherwise
     * kill the process with SIGPROF's default action. */
    wait_for_handlers();
    for (int i = 0; i < SPP_MAX_THREADS; i++)
        if (atomic_load(&spp_g.slots[i].state) == SLOT_EXITED)
            spp_clock_disarm(&spp_g.slots[i]);
    spp_g.drain_stop = 1;
    pthread_mutex_unlock(&spp_g.lock);
    uint64_t one = 1;
    ssize_t w = write(spp_g.kick_fd, &one, sizeof(one));
    (void)w;
    pthread_join(spp_g.drain_thread, NULL);
    pthread_mutex_lock(&spp_g.lock);
    close(spp_g.kick_fd);
    spp_g.kick_fd = -1;
    spp_g.drain_running = 0;
    drain_all();
    spp_profile *p = spp_g.profile;
    spp_g.profile = NULL;
    atomic_store(&spp_g.resolving, 0); /* under the lock, after the last drain */
    spp_profile_drop(p, R.dropped);
    if (meta) {
        spp_meta m = *meta;
        m.mechanism = spp_sampler_clock_name();
        m.pid = (uint64_t)getpid();
        spp_profile_set_meta(p, &m);
    }
    free_resolution_state();
    pthread_mutex_unlock(&spp_g.lock);
    return p;
}

void spp_sampler_code_dying(uint64_t code)
{
    if (!atomic_load(&spp_g.resolving))
        return;
    pthread_mutex_lock(&spp_g.lock);
    /* The poller may hold that code's address from a stack it is reading
     * now (SPP_MECH_NONBLOCK): that sample goes into its ring before the
     * drain. (A read that starts after this look finds only frames alive
     * since, none of which holds the dying code.) Not the poller's lock,
     * which its whole round holds: a thread waiting for it would look
     * asleep to the poller, and code that frees code objects often would
     * be sampled less. */
    atomic_thread_fence(memory_order_seq_cst);
    while (atomic_load(&spp_g.poller_reading))
        sched_yield();
    if (spp_g.profile) {
        drain_all();
        spp_resolver_forget(R.resolver, code);
    }
    pthread_mutex_unlock(&spp_g.lock);
}

const char *spp_sampler_clock_name(void)
{
    return spp_mechanism_name(spp_g.mech);
}


void spp_sampler_poll_counts(uint64_t counts[SPP_POLL_NCOUNTS])
{
    for (int i = 0; i < SPP_POLL_NCOUNTS; i++)
        counts[i] = atomic_load(&spp_poll_counts[i]);
}

void spp_sampler_get_stats(spp_sampler_stats *st)
{
    memset(st, 0, sizeof(*st));
    pthread_mutex_lock(&spp_g.lock);
    st->active = atomic_load(&spp_g.active);
    st->mechanism = spp_g.mech;
    if (spp_g.profile) {
        drain_all(); /* (the samples of the last drain period count too) */
        uint64_t ring_drops = 0;
        for (int i = 0; i < SPP_MAX_THREADS; i++) {
            int s = atomic_load(&spp_g.slots[i].state);
            if (s == SLOT_ACTIVE)
                st->threads++;
            if (s == SLOT_ACTIVE || s == SLOT_EXITED)
                ring_drops += atomic_load(&spp_g.slots[i].dropped);
        }
        st->samples = spp_profile_samples(spp_g.profile);
        st->weight_ns = spp_profile_weight(spp_g.profile);
        st->dropped = R.dropped + ring_drops;
        st->memory = spp_profile_memory(spp_g.profile) + R.ring_total;
        st->start_ns = spp_g.start_real;
        st->own_ns = atomic_load(&spp_g.handler_ns);
        st->signal = atomic_load(&spp_g.uses_trap)     ? SPP_TRAP_SIGNAL
                     : atomic_load(&spp_g.uses_signal) ? SPP_SIGNAL
                                                       : 0;
        clockid_t drain_clock;
        struct timespec ts;
        if (spp_g.drain_running && pthread_getcpuclockid(spp_g.drain_thread, &drain_clock) == 0 &&
            clock_gettime(drain_clock, &ts) == 0)
            st->own_ns += (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        st->own_ns += spp_poller_cpu_ns();
        st->elapsed_ns = now_ns(CLOCK_MONOTONIC) - spp_g.start_mono;
    }
    pthread_mutex_unlock(&spp_g.lock);
}

void spp_sampler_atfork_child(void)
{
    /* Only the forking thread exists in the child; the parent's clocks do
     * not follow it (timers are not inherited; perf fds are closed here).
     * The parent's profile stays with the parent; the child starts clean. */
    atomic_store(&spp_g.active, 0);
    for (int i = 0; i < SPP_MAX_FD; i++)
        if (atomic_load(&spp_g.fd_slot[i])) {
            close(i);
            atomic_store(&spp_g.fd_slot[i], 0);
        }
    memset(spp_g.slots, 0, sizeof(spp_g.slots));
    spp_poller_atfork_child();
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    spp_g.lock = fresh;
    if (spp_g.kick_fd >= 0)
        close(spp_g.kick_fd);
    spp_g.kick_fd = -1;
    spp_g.drain_running = 0;
    spp_g.profile = NULL; /* the parent's copy; not freed in the child */
    R.resolver = NULL; /* the parent's; not freed in the child */
    R.symbols = NULL;
    atomic_store(&spp_g.in_handler, 0);
    atomic_store(&spp_g.poller_reading, 0); /* (the poller did not follow) */
}

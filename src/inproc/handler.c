/* handler.c - the signal handler: the only code that runs in signal context.
 *
 * Everything here is async-signal-safe: no allocation, no locks, no stdio,
 * no Python C-API; errno is saved and restored; every loop is capped. The
 * handler copies raw frame references of the interrupted thread into that
 * thread's ring; the drain thread makes sense of them later.
 */
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <setjmp.h>
#include <linux/perf_event.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "../pyabi/walker.h"
#include "internal.h"

/* libunwind's local unwinder, loaded at run time so that the package needs
 * no library at build or install time. The cursor is opaque to us; its real
 * size (UNW_TDEP_CURSOR_LEN words) is 127 on x86_64, so 256 is ample. */
typedef struct {
    uint64_t opaque[256];
} unw_cursor_buf;
#define UNW_REG_IP_X86_64 16
#define UNW_INIT_SIGNAL_FRAME_FLAG 1

static int (*unw_init_local2_fn)(void *cursor, void *ucontext, int flag);
static int (*unw_step_fn)(void *cursor);
static int (*unw_get_reg_fn)(void *cursor, int reg, uint64_t *val);
static _Atomic int unw_ready;

static int native_stack(void *uc, uint64_t *ips, int cap)
{
    unw_cursor_buf cursor;
    int n = 0;
    if (unw_init_local2_fn(&cursor, uc, UNW_INIT_SIGNAL_FRAME_FLAG) < 0)
        return 0;
    while (n < cap) {
        uint64_t ip;
        if (unw_get_reg_fn(&cursor, UNW_REG_IP_X86_64, &ip) < 0 || ip == 0)
            break;
        ips[n++] = ip;
        if (unw_step_fn(&cursor) <= 0)
            break;
    }
    return n;
}

static void warm_up_unwinder(void)
{
    /* libunwind initialises itself lazily on first use; do that here, outside
     * any signal handler, by unwinding the current thread once. */
    ucontext_t uc;
    getcontext(&uc);
    uint64_t ips[8];
    native_stack(&uc, ips, 8);
}

int spp_native_init(void)
{
    if (atomic_load(&unw_ready))
        return SPP_OK;
#if defined(__x86_64__)
    static const char *const libs[] = {"libunwind-x86_64.so.8", "libunwind.so.8",
                                       "libunwind-x86_64.so", "libunwind.so"};
    for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
        void *h = dlopen(libs[i], RTLD_NOW | RTLD_LOCAL);
        if (!h)
            continue;
        unw_init_local2_fn = (int (*)(void *, void *, int))dlsym(h, "_ULx86_64_init_local2");
        unw_step_fn = (int (*)(void *))dlsym(h, "_ULx86_64_step");
        unw_get_reg_fn = (int (*)(void *, int, uint64_t *))dlsym(h, "_ULx86_64_get_reg");
        if (unw_init_local2_fn && unw_step_fn && unw_get_reg_fn) {
            warm_up_unwinder();
            atomic_store(&unw_ready, 1);
            return SPP_OK;
        }
        dlclose(h);
    }
#endif
    return SPP_ENOSYS;
}

int spp_native_available(void) { return spp_native_init() == SPP_OK; }

/* Reading a frame chain can fault: CPython 3.11/3.12 link a _PyCFrame into
 * the thread state a few instructions before they set its current_frame, so
 * a signal there finds a stack garbage pointer; a torn chain can hold
 * anything. While the handler walks, a fault jumps back to it instead of
 * killing the program; any other fault goes to the handler that was there
 * before (or the default action). */
static __thread sigjmp_buf *volatile probe __attribute__((tls_model("initial-exec")));
static struct sigaction old_segv, old_bus;
static _Atomic int guard_installed;

/* Hands a signal that is not spprof's to what held it before (old). The
 * default action is taken again: a fault's comes when returning re-runs
 * the faulting instruction (which cannot be ignored either: the kernel
 * would force it), another signal's (a trap) when it is raised again and
 * unblocked on return. */
static void chain_signal(int sig, const struct sigaction *old, siginfo_t *si, void *uc, int fault)
{
    if (old->sa_flags & SA_SIGINFO) {
        if (old->sa_sigaction) {
            old->sa_sigaction(sig, si, uc);
            return;
        }
    } else if (old->sa_handler == SIG_IGN && !fault) {
        return;
    } else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
        return;
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    if (!fault)
        raise(sig);
}

/* After a fault caught by a guarded read: the fault handler ran with its
 * signal blocked and siglongjmp (which does not restore the mask) kept it
 * so, and a second fault in the same handler would end the process. */
static void unblock_fault_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGSEGV);
    sigaddset(&set, SIGBUS);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

static void fault_handler(int sig, siginfo_t *si, void *uc)
{
    sigjmp_buf *jb = probe;
    if (jb) {
        probe = NULL;
        siglongjmp(*jb, 1);
    }
    /* The program's own fault (or a kill: si_code <= 0), for the handler
     * before spprof's, run under the mask it asked for (its sa_mask, and
     * its own signal unblocked only with SA_NODEFER: faulthandler raises
     * the signal again for the handler it restores, which runs at once).
     * No sample may interrupt it: one that came while ASan symbolized its
     * report under a 1 ms clock ended the process with a second SIGSEGV,
     * report unfinished, in every run (that handler may also have put
     * another in spprof's place, which a sample's faulting read would reach
     * instead of the guard). Returning restores the mask; a handler that
     * jumps out instead leaves its thread unsampled. */
    const struct sigaction *old = sig == SIGSEGV ? &old_segv : &old_bus;
    sigset_t block;
    if ((old->sa_flags & SA_SIGINFO) || (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN))
        block = old->sa_mask;
    else
        sigemptyset(&block);
    sigaddset(&block, SPP_SIGNAL);
    if (atomic_load_explicit(&spp_g.uses_trap, memory_order_relaxed))
        sigaddset(&block, SPP_TRAP_SIGNAL); /* (else a breakpoint's trap stays deliverable) */
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    if (old->sa_flags & SA_NODEFER) {
        sigset_t own;
        sigemptyset(&own);
        sigaddset(&own, sig);
        pthread_sigmask(SIG_UNBLOCK, &own, NULL);
    }
    chain_signal(sig, old, si, uc, si->si_code > 0);
}

/* Whether spprof's fault handler holds sig now. */
static int guard_holds(int sig)
{
    struct sigaction cur;
    return sigaction(sig, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
           cur.sa_sigaction == fault_handler;
}

void spp_fault_guard_install(void)
{
    if (guard_holds(SIGSEGV))
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
    atomic_store(&guard_installed, 1);
}

int spp_fault_guard_held(void) { return guard_holds(SIGSEGV) && guard_holds(SIGBUS); }

/* Walks the thread's Python frames; < 0 if a read faulted or the chain was
 * caught half-linked (SPP_ETORN). */
static __attribute__((noinline)) int walk_guarded(const spp_pyoffsets *o, uint64_t tstate,
                                                  int flags, spp_rawframe *py, uint8_t *entries,
                                                  int *truncated)
{
    sigjmp_buf jb;
    if (sigsetjmp(jb, 0)) {
        unblock_fault_signals();
        return -1;
    }
    probe = &jb;
    uint64_t frame = 0, below;
    int n = 0;
    if (spp_thread_frame(o, &spp_local_reader, tstate, &frame, &below) == 0)
        n = spp_walk(o, &spp_local_reader, frame, below, flags, spp_g.cfg.code_type, py, entries, NULL,
                     SPP_MAX_PY_FRAMES, truncated);
    probe = NULL;
    return n;
}

/* SPP_MECH_NONBLOCK: reading the stack of a thread that runs on while it
 * is read.
 *
 * Where a thread is must be read at one moment, and quickly: the thread
 * changes frames every few tens of nanoseconds in some code, and a read of
 * memory it writes costs a transfer of that cache line from its CPU, 40 ns
 * or 200+ ns on this VM depending on where its two vCPUs run (measured by
 * bouncing a line between them: 75-125 ns or 400-470 ns a round trip,
 * changing from one minute to the next). Reads made one after another
 * (the pointer to the current frame, then that frame's fields, then the
 * pointer again to check it) span several transfers, and the thread's
 * writes to the lines read wait on them: what they return is not a random
 * moment. Read that way, with slow transfers, the line of a function's
 * loop got 0.02-0.17 of its samples against perf_event's 0.28-0.38 (3.12),
 * and a generator resumed in a loop 0.14-0.40 of them, or none, against
 * 0.70.
 *
 * So the poller remembers the frames it found a thread in lately
 * (spp_nb_memory: in a loop, the few addresses its frames take again and
 * again), and reads the thread's current-frame pointer and the fields of
 * every remembered frame in one burst of independent loads, which the CPU
 * issues together: one moment. If the pointer is one of those frames, the
 * stack is walked from it with the fields of remembered frames as the
 * burst read them: the leaf's code, position and link to its caller (which
 * a generator holds only while it runs), and its callers' (a caller read
 * later may have moved on, and a shim frame on the C stack is overwritten
 * once its evaluation loop returns); the frames not remembered yet are
 * read as the walk comes to them, and the innermost ones remembered for
 * the next bursts (remember_chain). If the pointer is not a
 * remembered frame, it is remembered and the thread read again at once,
 * until it is found in that frame (walk_running; for up to WANT_TRIES
 * tries). In code that runs long
 * enough to be sampled, nearly all frames are known (in the loops measured
 * with the GIL, the first try held at 97-99 % of the looks). */

enum {
    RUNNING_TRIES = 32,
    WANT_TRIES = 8, /* walk_running: tries for the frame a look found */
    SNAP_FIELDS = 7,
    LEARNED = -100, /* walk_running_once: read again at once, with the new frame */
};

/* The fields of a frame that spp_walk reads, and what one burst read. */
typedef struct snapshot {
    int nfields;
    int32_t field[SNAP_FIELDS];
    int64_t lo, hi;                          /* the fields' extent from a frame's address */
    uint32_t nframes, last;                  /* frames read; the one served last */
    uint64_t frames[SPP_NB_FRAMES];          /* (the remembered ones, as of the burst) */
    uint64_t words[SPP_NB_FRAMES][SNAP_FIELDS]; /* 8 bytes at frame + field */
} snapshot;

static snapshot snap; /* (the poller's: one thread uses it) */

static void snapshot_plan(const spp_pyoffsets *o)
{
    const int32_t fields[SNAP_FIELDS] = {o->frame_code,     o->frame_previous, o->frame_instr,
                                         o->frame_owner,    o->frame_is_entry, o->frame_state,
                                         o->frame_tlbc_index};
    snap.nfields = 0;
    snap.lo = snap.hi = 0;
    for (int i = 0; i < SNAP_FIELDS; i++)
        if (fields[i] >= 0 || i == 5) { /* (frame_state is negative from 3.11) */
            snap.field[snap.nfields++] = fields[i];
            snap.lo = fields[i] < snap.lo ? fields[i] : snap.lo;
            snap.hi = fields[i] + 8 > snap.hi ? fields[i] + 8 : snap.hi;
        }
}

/* The burst: the current-frame pointer (3.11/3.12: in each remembered
 * _PyCFrame, into ptrs, with the _PyCFrame of the loop that called it into
 * outer, and which one the thread state links to, at link; elsewhere: at
 * at, into ptrs[0]), then every field of the frames given (the remembered
 * ones, latest first, or the one just learned). Plain loads with no
 * dependence between them, so that they are in flight together; they
 * still complete one after another, over a transfer or more, so that the
 * later ones find the thread a little further on (see remember_frame on
 * why the latest frames come first). The addresses are plausible
 * (spp_user_range()); a fault is caught by the caller's guard. */
static SPP_UNCHECKED uint64_t snapshot_load(const spp_pyoffsets *o, uint64_t at, uint64_t link,
                                            const spp_nb_memory *m, uint64_t *ptrs,
                                            uint64_t *outer, const uint64_t *frames,
                                            uint32_t nframes)
{
    uint64_t linked = 0;
    if (link) {
        linked = *(const volatile uint64_t *)(uintptr_t)link;
        for (uint32_t h = 0; h < m->nholders; h++) {
            ptrs[h] = *(const volatile uint64_t *)(uintptr_t)(m->holders[h] +
                                                              (uint64_t)o->cframe_current_frame);
            outer[h] = o->cframe_previous < 0 ? 0
                                               : *(const volatile uint64_t *)(uintptr_t)(
                                                     m->holders[h] + (uint64_t)o->cframe_previous);
        }
    } else {
        ptrs[0] = *(const volatile uint64_t *)(uintptr_t)at;
    }
    snap.nframes = 0;
    for (uint32_t k = 0; k < nframes; k++) {
        for (int f = 0; f < snap.nfields; f++)
            snap.words[k][f] =
                *(const volatile uint64_t *)(uintptr_t)(frames[k] + (uint64_t)(int64_t)snap.field[f]);
        snap.frames[k] = frames[k];
    }
    snap.nframes = nframes;
    return linked;
}

/* A reader that gives the fields of the remembered frames as the burst
 * read them, and reads everything else now. */
static int snapshot_read(void *ctx, uint64_t addr, void *buf, size_t n)
{
    (void)ctx;
    for (uint32_t i = 0; i < snap.nframes; i++) {
        uint32_t k = (snap.last + i) % snap.nframes; /* (reads come frame by frame) */
        if (addr - snap.frames[k] + 0x10000 > 0x20000)
            continue; /* (not near this frame) */
        for (int f = 0; f < snap.nfields; f++) {
            uint64_t base = snap.frames[k] + (uint64_t)(int64_t)snap.field[f];
            if (addr >= base && n <= 8 && addr - base <= 8 - n) {
                memcpy(buf, (const char *)&snap.words[k][f] + (addr - base), n);
                snap.last = k;
                return SPP_OK;
            }
        }
    }
    return spp_read(&spp_local_reader, addr, buf, n);
}

/* Remembers a frame, first of the remembered (the one used least lately
 * is forgotten when they are SPP_NB_FRAMES); 0 if its address cannot be
 * one. The burst reads the remembered frames in this order, right after
 * the pointer: the leaf's fields read soon after it, its line is the line
 * at the pointer's moment, not a little later. With frames kept in the
 * order found and 64 of them, a burst read 23-35 frames on 3.14t (a new
 * generator's frame each time), and the line came late: a function's
 * return line took its loop's share (3.12, sort_key called by sorted():
 * 0.05-0.22 of its samples against perf_event's 0.02-0.06; the stress
 * test's check of the loop's line failed in CI); 0.04-0.12 since. (Read
 * before the pointer, the frames' lines are right but the pointer comes
 * late: 3.11's generator lost up to 0.29 of its loop's share to its
 * caller.) */
static int remember_frame(spp_nb_memory *m, uint64_t frame)
{
    uint32_t k = 0;
    while (k < m->nframes && m->frames[k] != frame)
        k++;
    if (k == m->nframes) {
        if (!spp_user_range(frame, (uint64_t)-snap.lo, (uint64_t)snap.hi))
            return 0;
        if (m->nframes < SPP_NB_FRAMES)
            m->nframes++;
        k = m->nframes - 1;
    }
    memmove(&m->frames[1], &m->frames[0], k * sizeof(m->frames[0]));
    m->frames[0] = frame;
    return 1;
}

static void remember_holder(const spp_pyoffsets *o, spp_nb_memory *m, uint64_t holder)
{
    int32_t end = o->cframe_current_frame > o->cframe_previous ? o->cframe_current_frame
                                                               : o->cframe_previous;
    if (!spp_user_range(holder, 0, (uint64_t)end + 8))
        return;
    if (m->nholders < SPP_NB_HOLDERS)
        m->holders[m->nholders++] = holder;
    else
        m->holders[m->next_holder++ % SPP_NB_HOLDERS] = holder;
}

/* The frames of a stack read (spp_walk's addresses), up to the innermost
 * NB_CHAIN, and the interpreter's shim frames between them, remembered
 * first, the leaf first: the next bursts read them too, so that a stack's
 * callers are read at its moment (a caller read later may have moved on,
 * and a shim frame on the C stack is overwritten once its evaluation loop
 * returns). */
enum { NB_CHAIN = 12 };
/* (A chain and its shims leave room for the other leaves of a loop.) */
_Static_assert(2 * NB_CHAIN < SPP_NB_FRAMES, "a chain fills the remembered frames");
static uint64_t running_addrs[SPP_MAX_PY_FRAMES];

static void remember_chain(const spp_pyoffsets *o, spp_nb_memory *m, const spp_reader *r, int n)
{
    uint64_t add[2 * NB_CHAIN];
    int nadd = 0;
    for (int i = 0; i < n && i < NB_CHAIN; i++) {
        add[nadd++] = running_addrs[i];
        uint64_t prev;
        if (i + 1 < n && spp_read(r, running_addrs[i] + (uint64_t)o->frame_previous, &prev, 8) == 0 &&
            prev && prev != running_addrs[i + 1])
            add[nadd++] = prev;
    }
    for (int i = nadd - 1; i >= 0; i--) /* (the leaf ends first) */
        remember_frame(m, add[i]);
}

/* One try. Returns the number of frames, 0 if the thread has no Python
 * frame, LEARNED if its frame (or _PyCFrame) was not one this burst read
 * and is remembered now, SPP_ETORN if the chain read was not a stack or
 * its frame is not the one at want (when not 0), < 0 if a read faulted.
 * The thread's frame goes to *found when it is a remembered one (0
 * otherwise). */
static __attribute__((noinline)) int walk_running_once(const spp_pyoffsets *o, uint64_t tstate,
                                                       spp_nb_memory *m, uint64_t *learned,
                                                       uint64_t want, uint64_t *found, int flags,
                                                       spp_rawframe *py, uint8_t *entries,
                                                       int *truncated)
{
    *found = 0;
    sigjmp_buf jb;
    if (sigsetjmp(jb, 0)) {
        unblock_fault_signals();
        m->nframes = m->nholders = m->next_holder = 0; /* one of them is
                                                        * unmapped now */
        *learned = 0;
        return -1;
    }
    probe = &jb;
    int n = SPP_ETORN;
    uint64_t link = 0, at = 0, frame = 0, below = SPP_ANY_FRAME;
    uint32_t holder = 0;
    uint64_t ptrs[SPP_NB_HOLDERS], outer[SPP_NB_HOLDERS];
    if (o->cframe_current_frame >= 0)
        link = tstate + (uint64_t)o->tstate_frame; /* 3.11/3.12: the
                                                     * innermost evaluation
                                                     * loop's _PyCFrame */
    else
        at = tstate + (uint64_t)o->tstate_frame;
    if (!spp_user_range(link | at, 0, 8))
        goto out;
    /* (Right after a frame is learned, the burst reads it alone: the whole
     * memory, mostly cold lines, takes longer than a short call lasts.) */
    uint64_t linked = *learned ? snapshot_load(o, at, link, m, ptrs, outer, learned, 1)
                               : snapshot_load(o, at, link, m, ptrs, outer, m->frames, m->nframes);
    *learned = 0;
    if (link) {
        uint32_t h = 0;
        while (h < m->nholders && m->holders[h] != linked)
            h++;
        if (!linked) {
            n = 0; /* no evaluation loop runs: no frame */
            goto out;
        }
        if (h == m->nholders) {
            remember_holder(o, m, linked);
            n = LEARNED;
            goto out;
        }
        holder = h;
        frame = ptrs[h];
    } else {
        frame = ptrs[0];
    }
    if (!frame) {
        n = 0;
        goto out;
    }
    if (want && frame != want)
        goto out; /* (nor remembered: it would push out the loop's frames) */
    uint32_t k = 0;
    while (k < snap.nframes && snap.frames[k] != frame)
        k++;
    if (k == snap.nframes) {
        if (remember_frame(m, frame)) {
            *found = *learned = frame;
            n = LEARNED;
        }
        goto out;
    }
    *found = frame;
    if (link && o->cframe_previous >= 0 && outer[holder]) {
        /* The frame the first frame run by the innermost loop returns to
         * (spp_thread_frame's below), at the same moment where the loop
         * that called it is a remembered one. */
        uint32_t h = 0;
        while (h < m->nholders && m->holders[h] != outer[holder])
            h++;
        if (h < m->nholders)
            below = ptrs[h];
        else if (spp_read(&spp_local_reader, outer[holder] + (uint64_t)o->cframe_current_frame,
                          &below, 8) < 0)
            below = SPP_ANY_FRAME;
        else
            remember_holder(o, m, outer[holder]);
    }
    spp_reader at_moment = {snapshot_read, NULL};
    n = spp_walk(o, &at_moment, frame, below, flags, spp_g.cfg.code_type, py, entries,
                 running_addrs, SPP_MAX_PY_FRAMES, truncated);
    if (n > 0 && *truncated && n < SPP_MAX_PY_FRAMES)
        n = SPP_ETORN; /* a chain that ran into unreadable memory, not a
                        * deep one: read while it changed */
    if (n > 0)
        remember_chain(o, m, &at_moment, n);
out:
    probe = NULL;
    return n;
}

/* Walks the stack of a running thread (the poller's, SPP_MECH_NONBLOCK):
 * tries walk_running_once until a stack holds, up to RUNNING_TRIES times,
 * at once after it learned a frame, else a random 0.3-1.8 us apart (a try
 * right after a failed one finds the thread where that one's reads held it
 * up, not at a moment of its own: in an earlier form of these reads, 3.12's
 * generator loop kept 62-114 samples in 120 looks without the pause,
 * 118-120 with it). A chain led astray into memory freed meanwhile shows
 * as one that ends elsewhere than the thread's outermost frame: a stack is
 * kept if it ends at the same outermost code as the thread's previous
 * stack, or as the next try's (and both are truncated, or neither).
 *
 * A look stands for the frame the thread was in at its moment: when a
 * try finds the thread's frame but cannot keep its stack (a frame not
 * remembered yet, or one whose fields, read a little after the pointer,
 * show it already left), the tries after it keep only a stack whose frame
 * is that one, for WANT_TRIES tries; then whatever stack holds (a frame
 * that never comes back: a generator's that finished, a function's that
 * returned; 3.9's deep recursion, whose frames are new objects, lost its
 * samples when the look gave up there: test_stress's raise_deep got 1
 * sample where it asks 5). (Kept
 * whatever they found from the first, a short frame was sampled only when
 * two reads in a row found it, its share p read as about p*p: a generator
 * resumed in a loop, whose frame the free-threaded builds put at another
 * address each time one is made, got 0.23-0.48 of the loop against
 * perf_event's 0.66-0.70 on 3.13t and 3.14t, where a quarter of the first
 * tries were torn, most of them a generator frame read after it
 * yielded.) When no try holds, SPP_ETORN: the poller tries again at its
 * next look, that sample weighing both looks' time. */
static __attribute__((noinline)) int walk_running(const spp_pyoffsets *o, spp_slot *s,
                                                  uint64_t tstate, int flags, spp_rawframe *py,
                                                  uint8_t *entries, int *truncated)
{
    spp_nb_memory *m = &s->nb;
    if (m->tid != s->tid) {
        memset(m, 0, sizeof(*m));
        m->tid = s->tid;
        m->rng = (uint32_t)s->tid * 2654435761u | 1;
    }
    if (!snap.nfields)
        snapshot_plan(o);
    int empty = 0, agreed = 0, n = SPP_ETORN, wanted = 0, want_since = 0;
    uint64_t learned = 0, want = 0, found;
    uint64_t root = 0;
    int root_truncated = 0;
    for (int tries = 0; tries < RUNNING_TRIES; tries++) {
        if (want && tries - want_since > WANT_TRIES)
            want = 0; /* (gone: whatever the thread runs now) */
        if (tries && !learned) {
            struct timespec a, b;
            uint64_t pause = 300 + spp_random_below(&m->rng, 1500);
            clock_gettime(CLOCK_MONOTONIC, &a);
            do
                clock_gettime(CLOCK_MONOTONIC, &b);
            while ((uint64_t)(b.tv_sec - a.tv_sec) * 1000000000u + (uint64_t)b.tv_nsec -
                       (uint64_t)a.tv_nsec <
                   pause);
        }
        n = walk_running_once(o, tstate, m, &learned, want, &found, flags, py, entries, truncated);
        if ((n == SPP_ETORN || n == LEARNED) && found && !wanted) {
            want = found;
            wanted = 1;
            want_since = tries;
            if (n == SPP_ETORN)
                remember_frame(m, want); /* (read first from now on) */
        } else if (n < 0 && n != SPP_ETORN && n != LEARNED) {
            want = 0; /* (the remembered frames were forgotten) */
        }
        if (n == 0 && ++empty == 3) {
            /* No Python frame at three reads in a row: C code run by a
             * thread that has a state, sampled as such (as the handler
             * would), unless the state read is not the thread's now (a
             * thread of C code calling Python gets a new one each time). */
            uint64_t now = spp_find_tstate(spp_g.cfg.interp, s->ident);
            if (!now || now == tstate)
                break;
            tstate = now;
            empty = 0;
            want = 0;
            continue;
        }
        if (n != LEARNED && n != 0)
            empty = 0;
        if (n <= 0)
            continue;
        uint64_t outer = py[n - 1].code;
        if ((m->root && outer == m->root && *truncated == m->root_truncated) ||
            (agreed && outer == root && *truncated == root_truncated)) {
            /* The thread state used is checked now, after the read: a
             * thread of C code that calls Python (PyGILState_Ensure) gets a
             * new one each time, and the one freed still says whose it
             * was. */
            if (spp_find_tstate(spp_g.cfg.interp, s->ident) != tstate) {
                m->tstate = 0;
                return SPP_ETORN;
            }
            m->tstate = tstate;
            m->root = outer;
            m->root_truncated = *truncated;
            return n;
        }
        agreed = 1;
        root = outer;
        root_truncated = *truncated;
    }
    /* Nothing kept (or no frame): the thread state is looked up again at
     * the next look. */
    m->tstate = 0;
    return empty == 3 ? 0 : SPP_ETORN;
}

/* A reader of this process's memory for the drain thread's reads of code
 * objects: the nonblocking clock can record the address of a code object
 * freed since (read from a frame popped while it was read), and a read of
 * an arena returned to the system would fault. A fault reads as an
 * unreadable address. */
static int guarded_read(void *ctx, uint64_t addr, void *buf, size_t n)
{
    sigjmp_buf jb;
    sigjmp_buf *volatile outer = probe;
    if (sigsetjmp(jb, 0)) {
        unblock_fault_signals();
        probe = outer;
        return SPP_EINVAL;
    }
    probe = &jb;
    int rc = spp_read(&spp_local_reader, addr, buf, n);
    probe = outer;
    (void)ctx;
    return rc;
}

const spp_reader spp_guarded_local_reader = {guarded_read, NULL};

/* The thread state whose thread_id is ident in the interpreter at interp,
 * 0 if none: the list is read while threads come and go, under the guard. */
uint64_t spp_find_tstate(uint64_t interp, uint64_t ident)
{
    const spp_pyoffsets *o = spp_g.cfg.offsets;
    const spp_reader *r = &spp_guarded_local_reader;
    uint64_t ts = 0;
    if (!interp || !ident || spp_read(r, interp + (uint64_t)o->interp_threads_head, &ts, 8) < 0)
        return 0;
    for (int i = 0; ts && i < 4 * SPP_MAX_THREADS; i++) {
        uint64_t id = 0, next = 0;
        if (spp_read(r, ts + (uint64_t)o->tstate_thread_id, &id, 8) < 0)
            return 0;
        if (id == ident)
            return ts;
        if (spp_read(r, ts + (uint64_t)o->tstate_next, &next, 8) < 0 || next == ts)
            return 0;
        ts = next;
    }
    return 0;
}

/* Whether the signal is being delivered as a system call returns (or is
 * restarted): the instruction before the interrupted one, or that one, is
 * `syscall`. A signal from another thread is delivered at the first return
 * to user mode after it is sent: the interrupt that announces it, or the
 * exit of a system call made sooner. In code that makes system calls more
 * often than that interrupt takes to come (tens of microseconds on a
 * virtual machine) nearly every sample would land at a call's site. */
static __attribute__((noinline)) int at_syscall_exit(const void *ucv)
{
#if defined(__x86_64__)
    const ucontext_t *uc = (const ucontext_t *)ucv;
    uintptr_t rip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    uintptr_t off = rip & 4095;
    /* Within the page of the interrupted instruction, which is mapped,
     * but may be execute-only (protection keys): read under the guard. */
    const volatile unsigned char *p = (const volatile unsigned char *)rip;
    sigjmp_buf jb;
    if (sigsetjmp(jb, 0)) {
        unblock_fault_signals();
        return 0;
    }
    probe = &jb;
    int yes = (off >= 2 && p[-2] == 0x0f && p[-1] == 0x05) ||
              (off <= 4094 && p[0] == 0x0f && p[1] == 0x05);
    probe = NULL;
    return yes;
#else
    (void)ucv;
    return 0;
#endif
}

/* The vDSO's text, [lo, hi), found before any clock is armed. A clock
 * read its code cannot answer (a CPU-time clock) makes its system call
 * from there, and that call brings the thread's CPU time up to date, which
 * is where the scheduler finds a spent slice. (The vDSO's other system
 * calls match too: getcpu, getrandom, any clock read when the clock source
 * cannot be read from user mode. They do not update the CPU time; a sample
 * handed on from their exits moves a little of their time to what follows
 * them.) */
static uintptr_t vdso_lo, vdso_hi;

void spp_find_vdso(void)
{
    uintptr_t base = (uintptr_t)getauxval(AT_SYSINFO_EHDR);
    if (!base || vdso_hi)
        return;
    const ElfW(Ehdr) *eh = (const ElfW(Ehdr) *)base;
    const ElfW(Phdr) *ph = (const ElfW(Phdr) *)(base + eh->e_phoff);
    uintptr_t lo = UINTPTR_MAX, hi = 0, bias = 0;
    int first = 1;
    for (int i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD)
            continue;
        if (first) /* the first segment is mapped at base */
            bias = base - (uintptr_t)(ph[i].p_vaddr & ~(ElfW(Addr))4095);
        first = 0;
        uintptr_t a = bias + (uintptr_t)ph[i].p_vaddr, b = a + (uintptr_t)ph[i].p_memsz;
        lo = a < lo ? a : lo;
        hi = b > hi ? b : hi;
    }
    if (hi > lo) {
        vdso_lo = lo;
        vdso_hi = hi;
    }
}

/* Whether the thread was interrupted in the vDSO (at a system call's exit:
 * mostly a clock read that had to ask the kernel). */
static int in_vdso(const void *ucv)
{
#if defined(__x86_64__)
    const ucontext_t *uc = (const ucontext_t *)ucv;
    uintptr_t rip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    return rip >= vdso_lo && rip < vdso_hi;
#else
    (void)ucv;
    return 0;
#endif
}

/* spp_sampler_poll_counts()'s counts (sampler.h), cleared by start(). */
_Atomic uint64_t spp_poll_counts[SPP_POLL_NCOUNTS];

static void poll_count(int what)
{
    atomic_fetch_add_explicit(&spp_poll_counts[what], 1, memory_order_relaxed);
}

/* How long the poller's signals take to reach a thread that is running
 * user code, in the thread's own CPU time (the interrupt that carries
 * them; a thread waiting for a CPU meanwhile adds none): a moving average,
 * in ns, of the signals that did not come at a system call's exit. It
 * moves with the machine (5-30 us here on a quiet day, 25-100 us on a
 * busy one). */
static _Atomic uint64_t signal_flight_ns = 20000;

/* The thread's CPU time since the poller read it and sent the signal
 * (sent: the slot's poll_sent_cpu). */
static uint64_t ran_since_sent(uint64_t sent, uint64_t cpu_now)
{
    if (sent == SPP_SENT_UNKNOWN)
        return 0;
    sent &= ~SPP_SENT_FLAGS;
    return cpu_now > sent ? cpu_now - sent : 0;
}

/* Whether a poller's signal that came at a system call's exit found the
 * thread inside that call when it was sent: the thread ran twice as long
 * as signals usually take to come. The sample is then true where it lands:
 * the CPU time was the call's (a large read, say), which a deferred sample
 * would hand to whatever code runs next. The bound trades two errors: a
 * signal sent in the last stretch of a long call is handed on (taking
 * time from the call), one sent just before the call began is kept (giving
 * it time). One flight time balances the two on a quiet machine, but
 * lets the slower signals of a busy one pile up at short calls' exits;
 * two keep those apart. Measured with test_sampling's targets (a 4 MiB
 * read, a loop calling every 3 us): at one flight time the read's share
 * came within 4 points of its measured share, and the loop's calling
 * line got 0.36 of the loop's samples in one run of four (perf_event:
 * 0.18); at two, 0-6 points under and 0.18-0.19; at three, 7-9 points
 * under. */
static int in_kernel_when_sent(uint64_t sent, uint64_t cpu_now)
{
    uint64_t flight = atomic_load_explicit(&signal_flight_ns, memory_order_relaxed);
    return ran_since_sent(sent, cpu_now) >
           2 * (flight > SPP_POLL_MIN_FLIGHT_NS ? flight : SPP_POLL_MIN_FLIGHT_NS);
}

static void learn_flight(uint64_t sent, uint64_t cpu_now)
{
    uint64_t ran = ran_since_sent(sent, cpu_now);
    if (ran > 1000000)
        return; /* not a flight (a signal merged with an older one) */
    uint64_t old = atomic_load_explicit(&signal_flight_ns, memory_order_relaxed);
    atomic_store_explicit(&signal_flight_ns, old - old / 16 + ran / 16, memory_order_relaxed);
}

/* The next value of a xorshift32 state: the random delays of deferred
 * samples. */
static uint32_t spp_random(uint32_t *state)
{
    uint32_t x = *state ? *state : 2463534242u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

uint64_t spp_random_below(uint32_t *state, uint64_t n)
{
    if (!n)
        return 0;
    uint64_t r = spp_random(state);
    if (n > UINT32_MAX)
        r = r << 32 | spp_random(state);
    return r % n;
}

/* A random delay between the 10 us perf allows and half an interval. */
uint64_t spp_defer_delay(uint32_t *rng)
{
    uint64_t span = spp_g.cfg.interval_ns / 2 > 10000 ? spp_g.cfg.interval_ns / 2 - 10000 : 1;
    return 10000 + spp_random_below(rng, span);
}

int spp_defer_sample(spp_slot *s, uint64_t after_ns)
{
    /* One deferred sample at a time: arming the clock again would ask it
     * for two (PERF_EVENT_IOC_REFRESH adds to the count left). */
    if (atomic_exchange_explicit(&s->deferred, 1, memory_order_acq_rel))
        return 1;
    if (s->fd >= 0) {
        uint64_t period = after_ns;
        if (ioctl(s->fd, PERF_EVENT_IOC_PERIOD, &period) == 0 &&
            ioctl(s->fd, PERF_EVENT_IOC_REFRESH, 1) == 0)
            return 1;
    } else if (s->has_timer) {
        struct itimerspec its;
        memset(&its, 0, sizeof(its));
        its.it_value.tv_sec = (time_t)(after_ns / 1000000000ull);
        its.it_value.tv_nsec = (long)(after_ns % 1000000000ull);
        if (timer_settime(s->timer, 0, &its, NULL) == 0)
            return 1;
    }
    atomic_store_explicit(&s->deferred, 0, memory_order_release);
    return 0;
}

/* The slot's weight clock now (its thread's CPU time, or the time). */
static uint64_t weight_clock_now(const spp_slot *s, int *ok)
{
    struct timespec ts;
    *ok = clock_gettime(s->weight_clock, &ts) == 0;
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* What a sample stands for. A POSIX timer counts its expiries: the
 * interval times 1 + its overruns, exact (not the clock's advance since the
 * previous sample, which would credit a signal's wait to where it lands:
 * one that expires in a system call comes as the call returns). Other
 * clocks: the thread's CPU time since its previous sample. A perf_event
 * signals once per expiry, or once for several, and its count cannot say
 * which expiries a signal answers: the event's timer drifts from the
 * count's interval multiples (0.2 ms a second here), and the advance in
 * intervals, rounded, at least one, overstated the CPU time (416 ms for
 * 350 in a CI run); so under it a wait in a system call goes to the call
 * (4 MiB page-cache reads of 0.3 ms at 1 ms: 1.3-3.8 points over their
 * measured share). */
static uint64_t slot_weight(spp_slot *s, const siginfo_t *si, int clock_ok, uint64_t clock_now)
{
    uint64_t interval = spp_g.cfg.interval_ns;
    if ((s->mech == SPP_MECH_CPUTIMER || s->mech == SPP_MECH_WALL) && si->si_code == SI_TIMER)
        return interval * (1 + (uint64_t)(si->si_overrun > 0 ? si->si_overrun : 0));
    if (!clock_ok)
        clock_now = weight_clock_now(s, &clock_ok);
    if (!clock_ok)
        return interval;
    uint64_t w = clock_now > s->last_clock ? clock_now - s->last_clock : 0;
    s->last_clock = clock_now;
    return w;
}

#ifndef TRAP_PERF
#define TRAP_PERF 6
#endif

/* A SPP_TRAP_SIGNAL's si_perf_data, which glibc's siginfo_t does not name:
 * the kernel's _sigfault holds it, a long, right after si_addr. */
static uint64_t trap_sig_data(const siginfo_t *si)
{
    unsigned long data;
    memcpy(&data, (const char *)&si->si_addr + sizeof(void *), sizeof(data));
    return data;
}

int spp_record_sample(spp_slot *s, uint64_t tstate, uint64_t weight, int walk_flags, void *uc)
{
    spp_rec *rec = s->ring.buf ? spp_ring_reserve(&s->ring, SPP_REC_MAX) : NULL;
    if (!rec) {
        atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
        return -1;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    rec->flags = 0;
    rec->time_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    rec->weight_ns = weight;

    const spp_pyoffsets *o = spp_g.cfg.offsets;
    spp_rawframe *py = (spp_rawframe *)(rec + 1);
    uint8_t entries[SPP_MAX_PY_FRAMES];
    int truncated = 0;
    int npy = (walk_flags & SPP_WALK_RUNNING)
                  ? walk_running(o, s, tstate, walk_flags, py, entries, &truncated)
                  : walk_guarded(o, tstate, walk_flags, py, entries, &truncated);
    if (npy < 0) {
        /* The chain led into unmapped memory, or was caught while the
         * interpreter was linking a frame: nothing consistent to record.
         * (The poller tries again at its next look: not a drop.) */
        if (!(walk_flags & SPP_WALK_RUNNING))
            atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
        return SPP_ETORN;
    }
    if (truncated)
        rec->flags |= SPP_REC_TRUNCATED;
    uint64_t *native = (uint64_t *)(py + npy);
    int nnative = 0;
    if (uc && spp_g.cfg.native && atomic_load_explicit(&unw_ready, memory_order_relaxed)) {
        nnative = native_stack(uc, native, SPP_MAX_NATIVE);
        rec->flags |= SPP_REC_NATIVE;
    }
    memcpy(native + nnative, entries, (size_t)npy);
    rec->npy = (uint16_t)npy;
    rec->nnative = (uint16_t)nnative;
    size_t size = sizeof(spp_rec) + (size_t)npy * sizeof(spp_rawframe) +
                  (size_t)nnative * sizeof(uint64_t) + (size_t)npy;
    rec->size = (uint32_t)((size + 7) & ~(size_t)7);
    spp_ring_commit(&s->ring, rec);
    /* Half full: ask the drain thread to come now rather than at its next
     * period (one kick until it has drained). */
    if (atomic_load_explicit(&s->ring.tail, memory_order_relaxed) -
                atomic_load_explicit(&s->ring.head, memory_order_relaxed) >
            s->ring.cap / 2 &&
        !atomic_exchange_explicit(&spp_g.kicked, 1, memory_order_relaxed)) {
        uint64_t one = 1;
        ssize_t w = write(spp_g.kick_fd, &one, sizeof(one));
        (void)w;
    }
    return 0;
}

void spp_handler(int sig, siginfo_t *si, void *uc)
{
    int saved_errno = errno;
    int trap_idx = -1;
    if (sig == SPP_TRAP_SIGNAL) {
        uint64_t data = trap_sig_data(si);
        if (si->si_code != TRAP_PERF || (data & ~(uint64_t)0xffff) != SPP_TRAP_COOKIE) {
            chain_signal(sig, &spp_g.old_trap, si, uc, 0); /* a breakpoint, a kill */
            errno = saved_errno;
            return;
        }
        trap_idx = (int)(data & 0xffff);
    }
    atomic_fetch_add(&spp_g.in_handler, 1);
    if (!atomic_load(&spp_g.active))
        goto out;

    int idx = -1, polled = 0, deferred = 0;
    if (sig == SPP_TRAP_SIGNAL) {
        idx = trap_idx;
    } else if (si->si_code == SI_TIMER) {
        idx = si->si_value.sival_int & ~SPP_DEFERRED_SAMPLE;
        deferred = (si->si_value.sival_int & SPP_DEFERRED_SAMPLE) != 0;
    } else if (si->si_code == SI_QUEUE && si->si_pid == spp_g.pid) {
        idx = si->si_value.sival_int; /* the poller's */
        polled = 1;
    } else if (si->si_code > 0 && si->si_fd >= 0 && si->si_fd < SPP_MAX_FD) {
        idx = atomic_load_explicit(&spp_g.fd_slot[si->si_fd], memory_order_acquire) - 1;
        deferred = idx >= 0 && idx < SPP_MAX_THREADS && spp_g.slots[idx].mech == SPP_MECH_POLL;
    }
    if (idx < 0 || idx >= SPP_MAX_THREADS)
        goto out; /* not one of ours (or a clock already disarmed) */
    spp_slot *s = &spp_g.slots[idx];
    if (atomic_load_explicit(&s->state, memory_order_acquire) != SLOT_ACTIVE ||
        s->tid != (pid_t)syscall(SYS_gettid))
        goto out;
    if (sigismember(&((const ucontext_t *)uc)->uc_sigmask, SIGSEGV) == 1 ||
        sigismember(&((const ucontext_t *)uc)->uc_sigmask, SIGBUS) == 1) {
        /* Interrupted where a fault would not reach spprof's guard (in a
         * fault handler, or a mask that blocks faults): a read that faulted,
         * of a frame or of the code at the interrupted instruction, would
         * end the program. The time goes to the next sample (but for the
         * timers, whose samples weigh their own expiries: it is lost). */
        if (deferred)
            atomic_store_explicit(&s->deferred, 0, memory_order_release);
        if (polled)
            atomic_store_explicit(&s->signal_out, 0, memory_order_release);
        atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
        goto out;
    }
    /* (The thread's CPU time, for the polling clock's judgement; read for
     * the weight by slot_weight where it needs it.) */
    int clock_ok = 0;
    uint64_t clock_now = s->mech == SPP_MECH_POLL ? weight_clock_now(s, &clock_ok) : 0;
    if (deferred) {
        atomic_store_explicit(&s->deferred, 0, memory_order_release);
        if (s->mech == SPP_MECH_POLL)
            poll_count(!at_syscall_exit(uc) ? SPP_POLL_DEFERRED
                       : in_vdso(uc)        ? SPP_POLL_DEFERRED_VDSO
                                            : SPP_POLL_DEFERRED_EXIT);
    } else if (polled && s->mech == SPP_MECH_POLL) {
        atomic_store_explicit(&s->signal_out, 0, memory_order_release);
        uint64_t sent = atomic_load_explicit(&s->poll_sent_cpu, memory_order_relaxed);
        int stopped = sent != SPP_SENT_UNKNOWN && (sent & SPP_SENT_STOPPED);
        int at_exit = at_syscall_exit(uc);
        /* A call made from the vDSO (a clock read it could not answer,
         * getcpu, getrandom) takes a microsecond or two: a signal that
         * comes at its exit found the thread in it only as often as the
         * call had the CPU, whatever the thread's clock says (a virtual CPU
         * its host stopped may count as running), and little is lost by
         * handing it on; a thread stopped there was stopped at a random
         * moment only if the poller stopped it. */
        int vdso = at_exit && in_vdso(uc);
        if (stopped && (sent & SPP_SENT_BY_POLLER)) {
            /* taken where the poller stopped it: a random moment, at a
             * call's exit as often as the call had the CPU */
            poll_count(at_exit ? SPP_POLL_BY_POLLER_EXIT : SPP_POLL_BY_POLLER);
        } else if (stopped) {
            /* Taken where another task took its CPU: where a tick or a
             * wake-up found its slice spent, a random moment too, but for
             * a thread that reads its own CPU clock. That read brings its
             * CPU time up to date and so finds a spent slice itself, the
             * moment it is spent, and the thread stops at the read's exit:
             * there the sample is handed on. */
            if (vdso && spp_defer_sample(s, spp_defer_delay(&s->rng))) {
                poll_count(SPP_POLL_STOPPED_VDSO);
                goto out;
            }
            poll_count(at_exit ? SPP_POLL_STOPPED_EXIT : SPP_POLL_STOPPED);
        } else if (!at_exit) {
            learn_flight(sent, clock_now);
            poll_count(SPP_POLL_RUNNING);
        } else if ((vdso || !in_kernel_when_sent(sent, clock_now)) &&
                   spp_defer_sample(s, spp_defer_delay(&s->rng))) {
            poll_count(SPP_POLL_RUNNING_HANDED);
            goto out;
        } else {
            poll_count(SPP_POLL_RUNNING_KEPT);
        }
    }
    if (spp_g.cfg.empty)
        goto out; /* measuring the cost of the clock and signal alone */
    uint64_t weight = slot_weight(s, si, clock_ok, clock_now);

    uint64_t tstate;
    if (spp_g.cfg.tss_key >= 0) {
        tstate = (uint64_t)(uintptr_t)pthread_getspecific((pthread_key_t)spp_g.cfg.tss_key);
    } else {
        /* A static thread-local variable of the interpreter: same offset
         * from the thread pointer in every thread. */
        uintptr_t tp = (uintptr_t)__builtin_thread_pointer();
        memcpy(&tstate, (const void *)(tp + (uintptr_t)spp_g.cfg.tls_offset), sizeof(tstate));
    }
    if (!tstate)
        goto out; /* a thread with no Python thread state (yet, or any more) */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t began = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    if (spp_record_sample(s, tstate, weight, 0, uc) == 0) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        atomic_fetch_add_explicit(&spp_g.handler_ns,
                                  (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec - began,
                                  memory_order_relaxed);
    }
out:
    atomic_fetch_sub(&spp_g.in_handler, 1);
    errno = saved_errno;
}

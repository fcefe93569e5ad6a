/* unwind_ptrace.c - remote unwinding with libunwind-ptrace. libunwind
 * finds each function's unwind rules (.eh_frame) itself; memory is read
 * through spprof's page cache (process_vm_readv, a page per system call)
 * rather than libunwind's word-per-call PTRACE_PEEKDATA, and registers
 * with ptrace. */
#include "unwind.h"

#include <libunwind-ptrace.h>
#include <stdlib.h>
#include <string.h>

#include "../core/profile.h"

#define MAX_THREADS 256  /* per-thread libunwind state kept; more are recreated */

typedef struct uthread {
    pid_t tid;
    void *upt;           /* libunwind-ptrace's state for tid, owned */
} uthread;

struct spp_unwinder {
    pid_t pid;
    spp_reader mem;
    unw_addr_space_t as;
    unw_accessors_t acc;
    uthread threads[MAX_THREADS];
    int nthreads;
};

int spp_unwind_supported(void) { return 1; }

/* The accessors libunwind calls, with arg the uthread being unwound: all
 * but memory reads are libunwind-ptrace's own, given its state. */
static int find_proc_info(unw_addr_space_t as, unw_word_t ip, unw_proc_info_t *pi, int need,
                          void *arg)
{
    return _UPT_find_proc_info(as, ip, pi, need, ((uthread *)arg)->upt);
}

static void put_unwind_info(unw_addr_space_t as, unw_proc_info_t *pi, void *arg)
{
    _UPT_put_unwind_info(as, pi, ((uthread *)arg)->upt);
}

static int get_dyn_info_list_addr(unw_addr_space_t as, unw_word_t *addr, void *arg)
{
    return _UPT_get_dyn_info_list_addr(as, addr, ((uthread *)arg)->upt);
}

/* The unwinder inside spp_unwind. Memory reads cannot go by their
 * argument: libunwind-ptrace's table search (inside find_proc_info) calls
 * them with its own state as the argument, not the cursor's. */
static spp_unwinder *unwinding;

static int access_mem(unw_addr_space_t as, unw_word_t addr, unw_word_t *val, int write, void *arg)
{
    (void)as;
    (void)arg;
    if (write || !unwinding)
        return -UNW_EINVAL; /* spprof never changes the target */
    return spp_read(&unwinding->mem, addr, val, sizeof(*val)) == 0 ? 0 : -UNW_EINVAL;
}

static int access_reg(unw_addr_space_t as, unw_regnum_t reg, unw_word_t *val, int write, void *arg)
{
    if (write)
        return -UNW_EINVAL;
    return _UPT_access_reg(as, reg, val, 0, ((uthread *)arg)->upt);
}

static int access_fpreg(unw_addr_space_t as, unw_regnum_t reg, unw_fpreg_t *val, int write,
                        void *arg)
{
    if (write)
        return -UNW_EINVAL;
    return _UPT_access_fpreg(as, reg, val, 0, ((uthread *)arg)->upt);
}

static int resume(unw_addr_space_t as, unw_cursor_t *c, void *arg)
{
    (void)as;
    (void)c;
    (void)arg;
    return -UNW_EINVAL; /* never: spprof only reads stacks */
}

int spp_unwinder_new(pid_t pid, spp_remote *mem, spp_unwinder **out)
{
    *out = NULL;
    spp_unwinder *u = calloc(1, sizeof(*u));
    if (!u)
        return SPP_ENOMEM;
    u->pid = pid;
    u->mem = spp_remote_reader(mem);
    u->acc = (unw_accessors_t){find_proc_info, put_unwind_info, get_dyn_info_list_addr, access_mem,
                               access_reg, access_fpreg, resume, NULL};
    u->as = unw_create_addr_space(&u->acc, 0);
    if (!u->as) {
        free(u);
        return SPP_ENOMEM;
    }
    /* Unwind rules are cached by address across threads and samples (the
     * target's code does not change while it is profiled), in a cache
     * large enough for a program's hot return addresses (the default holds
     * 128). Per-thread caching, as spprof unwinds from one thread: the
     * global cache blocks signals around every lookup. */
    unw_set_caching_policy(u->as, UNW_CACHE_PER_THREAD);
    unw_set_cache_size(u->as, 4096, 0);
    *out = u;
    return SPP_OK;
}

void spp_unwinder_free(spp_unwinder *u)
{
    if (!u)
        return;
    for (int i = 0; i < u->nthreads; i++)
        _UPT_destroy(u->threads[i].upt);
    unw_destroy_addr_space(u->as);
    free(u);
}

void spp_unwinder_forget(spp_unwinder *u, pid_t tid)
{
    for (int i = 0; u && i < u->nthreads; i++)
        if (u->threads[i].tid == tid) {
            _UPT_destroy(u->threads[i].upt);
            u->threads[i] = u->threads[--u->nthreads];
            return;
        }
}

static uthread *thread_for(spp_unwinder *u, pid_t tid)
{
    for (int i = 0; i < u->nthreads; i++)
        if (u->threads[i].tid == tid)
            return &u->threads[i];
    if (u->nthreads == MAX_THREADS) {
        /* Threads that ended without being forgotten make room. */
        for (int i = 0; i < u->nthreads; i++)
            _UPT_destroy(u->threads[i].upt);
        u->nthreads = 0;
    }
    void *upt = _UPT_create(tid);
    if (!upt)
        return NULL;
    uthread *t = &u->threads[u->nthreads++];
    *t = (uthread){tid, upt};
    return t;
}

int spp_unwind(spp_unwinder *u, pid_t tid, uint64_t *ips, int cap)
{
    uthread *t = thread_for(u, tid);
    if (!t)
        return SPP_ENOMEM;
    unw_cursor_t cursor;
    unwinding = u;
    int n = 0;
    if (unw_init_remote(&cursor, u->as, t) < 0) {
        n = SPP_EINVAL;
        goto out;
    }
    /* cap bounds the walk: a corrupt stack may loop. */
    while (n < cap) {
        unw_word_t ip;
        if (unw_get_reg(&cursor, UNW_REG_IP, &ip) < 0 || ip == 0)
            break;
        ips[n++] = ip;
        if (unw_step(&cursor) <= 0)
            break;
    }
out:
    unwinding = NULL;
    return n;
}

/* unwind_none.c - the unwinder of builds without libunwind-ptrace: none. */
#include "unwind.h"

#include "../core/profile.h"

int spp_unwind_supported(void) { return 0; }

int spp_unwinder_new(pid_t pid, spp_remote *mem, spp_unwinder **out)
{
    (void)pid;
    (void)mem;
    *out = NULL;
    return SPP_ENOSYS;
}

void spp_unwinder_free(spp_unwinder *u) { (void)u; }

int spp_unwind(spp_unwinder *u, pid_t tid, uint64_t *ips, int cap)
{
    (void)u;
    (void)tid;
    (void)ips;
    (void)cap;
    return SPP_ENOSYS;
}

void spp_unwinder_forget(spp_unwinder *u, pid_t tid)
{
    (void)u;
    (void)tid;
}

/* unwind.h - the native (C) stacks of another process's threads, unwound
 * remotely while they are stopped by ptrace (libunwind-ptrace, x86_64
 * Linux). Builds without libunwind-ptrace get unwind_none.c, whose
 * spp_unwinder_new says SPP_ENOSYS. Not thread-safe; not
 * async-signal-safe. */
#ifndef SPP_UNWIND_H
#define SPP_UNWIND_H

#include <stdint.h>
#include <sys/types.h>

#include "remote.h"

typedef struct spp_unwinder spp_unwinder;

/* Whether this build can unwind other processes at all. */
int spp_unwind_supported(void);

/* An unwinder for process pid that reads its memory through mem (borrowed,
 * must outlive the unwinder; its page cache must be emptied whenever the
 * target has run). Returns 0 and *out, SPP_ENOSYS (built without
 * libunwind-ptrace) or SPP_ENOMEM. */
int spp_unwinder_new(pid_t pid, spp_remote *mem, spp_unwinder **out);
void spp_unwinder_free(spp_unwinder *u);   /* NULL is a no-op */

/* Stores the instruction pointers of thread tid's native stack into ips,
 * innermost first (the first is the instruction running, the others are
 * return addresses), at most cap. The thread must be in a ptrace stop.
 * Returns how many (a stack that cannot be unwound all the way gives what
 * was found), or < 0 when the thread cannot be read at all. */
int spp_unwind(spp_unwinder *u, pid_t tid, uint64_t *ips, int cap);

/* Forgets what is kept for a thread that has ended. */
void spp_unwinder_forget(spp_unwinder *u, pid_t tid);

#endif

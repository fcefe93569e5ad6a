/* reader_local.c - reading this process's own memory (in-process mode). */
#include <string.h>

#include "../core/profile.h"
#include "reader.h"

static int local_read(void *ctx, uint64_t addr, void *buf, size_t n)
{
    (void)ctx;
    /* Reject what cannot be a user-space object: NULL and the first page,
     * non-canonical or kernel addresses, and wrap-around. A torn pointer
     * that passes this may still fault; the callers only follow pointers
     * that the interrupted thread itself keeps alive. */
    if (addr < 4096 || addr >= 0x800000000000ull || n > 0x800000000000ull - addr)
        return SPP_EINVAL;
    memcpy(buf, (const void *)(uintptr_t)addr, n);
    return SPP_OK;
}

const spp_reader spp_local_reader = {local_read, NULL};

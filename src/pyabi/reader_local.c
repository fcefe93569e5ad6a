/* reader_local.c - reading this process's own memory (in-process mode). */
#include "../core/profile.h"
#include "reader.h"

/* (Reading memory that may be stale is this function's job: SPP_UNCHECKED.) */
static SPP_UNCHECKED int local_read(void *ctx, uint64_t addr, void *buf, size_t n)
{
    (void)ctx;
    /* Reject what cannot be a user-space object: NULL and the first page,
     * non-canonical or kernel addresses, and wrap-around. A torn pointer
     * that passes this may still fault; the callers only follow pointers
     * that the interrupted thread itself keeps alive. */
    if (!spp_user_range(addr, 0, n))
        return SPP_EINVAL;
    const volatile unsigned char *src = (const volatile unsigned char *)(uintptr_t)addr;
    unsigned char *dst = buf;
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i];
    return SPP_OK;
}

const spp_reader spp_local_reader = {local_read, NULL};

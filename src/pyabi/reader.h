/* reader.h - the one way the frame walker reads memory: local memory inside
 * a signal handler, or another process. Memory read through it is hostile:
 * every pointer may be garbage. */
#ifndef SPP_READER_H
#define SPP_READER_H

#include <stddef.h>
#include <stdint.h>

/* For the functions that read memory that may be stale, freed or being
 * written: under ASan it must not be checked (nor copied with the
 * intercepted memcpy), or a torn frame caught by the SIGSEGV guard would be
 * reported as a use-after-free. */
#if defined(__GNUC__)
#define SPP_UNCHECKED __attribute__((no_sanitize("address", "undefined")))
#else
#define SPP_UNCHECKED
#endif

/* Whether the bytes from addr - below to addr + above can be user-space
 * memory: not NULL or the first page, not a non-canonical or kernel
 * address, no wrap-around. (Memory that passes may still be unmapped.) */
static inline int spp_user_range(uint64_t addr, uint64_t below, uint64_t above)
{
    const uint64_t end = 0x800000000000ull;
    return addr >= 4096 + below && addr < end && above <= end - addr;
}

typedef struct spp_reader {
    /* Copies n bytes at addr into buf; returns 0 or a negative SPP_E* code.
     * The local reader is async-signal-safe. */
    int (*read)(void *ctx, uint64_t addr, void *buf, size_t n);
    void *ctx;
} spp_reader;

/* A reader of this process's own memory: checks the address is plausible
 * (not NULL, not in the first page, canonical user space) and copies. It
 * cannot tell a freed object from a live one: callers read only memory kept
 * alive by other means. Async-signal-safe. */
extern const spp_reader spp_local_reader;

static inline int spp_read(const spp_reader *r, uint64_t addr, void *buf, size_t n)
{
    return r->read(r->ctx, addr, buf, n);
}

#endif

/* ring.h - a single-producer single-consumer byte ring of variable-size
 * sample records, one per sampled thread.
 *
 * The producer is the thread's own signal handler (async-signal-safe: no
 * locks, no allocation); the consumer is whoever drains under the sampler's
 * mutex. Because a thread's handler cannot interleave with itself, a record
 * being written never blocks records of other threads.
 */
#ifndef SPP_RING_H
#define SPP_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define SPP_REC_WRAP 0x1u       /* padding to the end of the buffer */
#define SPP_REC_TRUNCATED 0x2u  /* the Python stack was deeper than recorded */
#define SPP_REC_NATIVE 0x4u     /* native instruction pointers follow */

/* A sample as the handler writes it. The header is followed by npy
 * spp_rawframe, then nnative uint64_t instruction pointers, then npy entry
 * flags (uint8_t), padded to 8 bytes. */
typedef struct spp_rec {
    uint32_t size;    /* bytes including this header, a multiple of 8 */
    uint32_t flags;
    uint16_t npy;
    uint16_t nnative;
    uint32_t pad;
    uint64_t time_ns; /* CLOCK_MONOTONIC */
    uint64_t weight_ns;
} spp_rec;

typedef struct spp_ring {
    unsigned char *buf;       /* owned, cap bytes */
    uint64_t cap;             /* power of two */
    _Atomic uint64_t head;    /* consumer position (bytes, never wraps) */
    _Atomic uint64_t tail;    /* producer position */
} spp_ring;

/* Returns where a record of at most max bytes can be written, or NULL when
 * the ring is full. Async-signal-safe; producer only. */
static inline spp_rec *spp_ring_reserve(spp_ring *r, uint32_t max)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    uint64_t pos = tail & (r->cap - 1), contig = r->cap - pos;
    if (contig < max) {
        /* Pad to the end of the buffer so the record is contiguous. */
        if (tail + contig + max - head > r->cap)
            return NULL;
        spp_rec *pad = (spp_rec *)(r->buf + pos);
        pad->size = (uint32_t)contig;
        pad->flags = SPP_REC_WRAP;
        atomic_store_explicit(&r->tail, tail + contig, memory_order_release);
        tail += contig;
        pos = 0;
    }
    if (tail + max - head > r->cap)
        return NULL;
    return (spp_rec *)(r->buf + pos);
}

/* Publishes the record returned by spp_ring_reserve. Async-signal-safe. */
static inline void spp_ring_commit(spp_ring *r, spp_rec *rec)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    atomic_store_explicit(&r->tail, tail + rec->size, memory_order_release);
}

#endif

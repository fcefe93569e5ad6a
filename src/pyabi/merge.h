/* merge.h - one stack from a thread's Python frames and its native (C)
 * frames, as both front doors show it: each run of the evaluation loop in
 * the native stack is replaced by the Python frames it was running, and
 * the interpreter's calling glue between Python frames is left out, so a C
 * function appears exactly between the Python frame that called it and the
 * Python frame it called back. Used by the in-process drain thread and by
 * the spprof command. Not async-signal-safe (it is never run in a handler).
 */
#ifndef SPP_MERGE_H
#define SPP_MERGE_H

#include <stdint.h>

#include "walker.h"

/* What a native frame stands for in the profile. */
typedef struct spp_native_sym {
    uint64_t ip;      /* the address named (a return address less one) */
    uint32_t frame;   /* profile frame id */
    int glue;         /* the interpreter's own calling machinery */
} spp_native_sym;

typedef struct spp_merge_ops {
    /* The profile frame of a Python frame in *frame (SPP_NONE when out of
     * memory); returns > 0 to leave the frame out. */
    int (*python)(void *ctx, const spp_rawframe *raw, uint32_t *frame);
    /* What the native frame at ip is; leaf: ip is the instruction running,
     * else a return address. NULL leaves the frame out. */
    const spp_native_sym *(*native)(void *ctx, uint64_t ip, int leaf);
    void *ctx;
    uint64_t eval_start, eval_end;  /* the evaluation loop's code */
} spp_merge_ops;

/* A thread's sample: Python frames innermost first with spp_walk's entries
 * (1 on the outermost frame of each evaluation-loop call), and native
 * instruction pointers innermost first (none: Python frames only). */
typedef struct spp_merge_in {
    const spp_rawframe *py;
    const uint8_t *entries;
    uint32_t npy;
    const uint64_t *native;
    uint32_t nnative;
} spp_merge_in;

/* Stores the merged stack's frame ids into out, innermost first, at most
 * cap (npy + nnative always fits); returns how many. */
uint32_t spp_merge(const spp_merge_ops *ops, const spp_merge_in *in, uint32_t *out, uint32_t cap);

/* Whether a function of the interpreter named name is calling machinery
 * (between two Python frames it says nothing they do not), as opposed to a
 * C function like sorted() that calls back into Python. */
int spp_merge_is_glue(const char *name);

#endif
